"""Public routes that prove their caller in their own way instead of an API key: an
email's signed unsubscribe link, a provider's request signature. A caller whose proof
fails is treated like one without a valid key: it spends its source's budget of failed
authentications (`limits.unauthenticated_rate`), so that guessing links or signatures
is as slow as guessing keys."""

from __future__ import annotations

from aiohttp import web

from pushd.access.rate_limits import RateLimitedError, client_network
from pushd.appkeys import LIMITS


async def spend_failed_proof(request: web.Request, what: str) -> None:
    """Count one refused proof (`what`: "unsubscribe links", "signatures") of the
    request's source; raise `RateLimitedError` (429) once its budget is spent."""
    try:
        await request.app[LIMITS].unauthenticated.check(client_network(request.remote))
    except RateLimitedError as exc:
        raise RateLimitedError(
            f"too many invalid {what} from this address; retry after Retry-After seconds",
            retry_after=exc.retry_after,
        ) from None
