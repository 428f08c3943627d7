"""pushd's Python client: a user's notifications over the WebSocket, kept open.

```python
from pushd.client import Notification, PushdClient

async with PushdClient("https://pushd.example", token=fetch_token) as client:
    async for event in client.events():
        if isinstance(event, Notification):
            print(event.seq, event.title)
```

It stands alone: it imports aiohttp, msgspec, the standard library and two small
modules of `actors` it shares with the server (the backoff and the close-code table),
never the server itself (tests/test_architecture.py). docs/clients.md describes it.
"""

from __future__ import annotations

from pushd.client.client import PROTOCOL, ClientStoppedError, PushdClient, TokenGetter
from pushd.client.events import Event, Gap, Notification, Read, Retracted, State, Updated
from pushd.client.policy import Advice, advice_for

__all__ = [
    "PROTOCOL",
    "Advice",
    "ClientStoppedError",
    "Event",
    "Gap",
    "Notification",
    "PushdClient",
    "Read",
    "Retracted",
    "State",
    "TokenGetter",
    "Updated",
    "advice_for",
]
