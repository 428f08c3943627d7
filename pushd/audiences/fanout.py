"""The broadcast, segment and topic fan-out: a durable send job carried out in the
background.

`POST /api/notifications` with `broadcast`, `segment` or `topic` writes the send (its
content, sealed, and its audience) and answers 202 with the send's id: the 202 means the
send is on disk. `Fanout` then carries it out: it takes the send's lease, walks the
audience in user id order, `audiences.chunk_size` users at a time (keyset pages:
`id > cursor`; for a topic, its subscriptions' `user_id > cursor`, each page read when
its turn comes, so a user subscribing mid-send is reached if their id sorts after the
cursor, and nobody twice),
builds each user's notification exactly as a single send does (rate limit, preferences,
quiet hours and channel plan, a template rendered for the user, webhook rows) and
commits the chunk's notifications in ONE transaction through the group commit, each
tagged with the send's id. Then it records the chunk (cursor, counters, lease renewed)
on the send row and yields to the event loop before the next chunk, so single sends keep
being committed between the chunks.

A send with a template was stored with the version it had when accepted
(pushd/api/sends.py): that version is read once per run and rendered for each user (their
locale, profile and the send's data), so every chunk says the same thing whatever is
saved meanwhile. A user it cannot be rendered for (a variable their profile lacks) is
skipped, not the send: the first such reason is logged once per send.

Exactly once per user: the cursor moves only after a chunk is committed, and before
committing a chunk the fan-out asks which of its users already have a notification of
this send (the chunk a crash interrupted between its commit and its record); storage's
unique (send_id, user_id) index refuses a second one in any case.

Ownership and bounds: every task is owned here (`start`/`close`); at most
`audiences.max_sends_in_flight` sends run on this node, one chunk at a time each; a
send found while all slots are taken waits on disk for the next look
(`audiences.poll_interval`, or the end of a running send). A send whose node stopped is
taken over, from its cursor, once its lease (`audiences.lease_seconds`) has run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass

import msgspec

from actors.channel_dispatch import ChannelDispatcher
from actors.retry import wait_until_set
from pushd.access.rate_limits import Limits, RateLimitedError
from pushd.api.schemas import SendNotification
from pushd.api.templates import render_for
from pushd.audiences.segments import SegmentError, matches, names_attributes, parse
from pushd.channels.webhook_events import WebhookSubscribers, with_accepted_webhooks
from pushd.config.settings import AudiencesConfig
from pushd.ids import new_id, now_ms
from pushd.ingest.eager import gather_eagerly
from pushd.ingest.group_commit import NotificationIngest
from pushd.ops.metrics import Metrics
from pushd.routing.plan import ChannelPlan, ChannelPlanner, PlanError, Recipient
from pushd.routing.plan_reads import PlanReads
from pushd.routing.templates import TemplateProblemError, TemplateRenderer
from storage import Storage, StorageError, UnknownUserError
from storage.records import (
    NewNotification,
    NotificationRecord,
    PlannedDelivery,
    SendChunk,
    SendRecord,
    TemplateRecord,
    UserFilter,
)

log = logging.getLogger("pushd.audiences.fanout")

_content_decoder = msgspec.json.Decoder(SendNotification)
# Recipients of a chunk whose notification is being built at once: each may read storage
# (the plan's user, devices and preferences) and the shared state (the rate limit), and
# on SQLite every read is a job on the one storage thread, which a single send's commit
# then waits behind. A few dozen keep that queue short and the chunk fast.
_BUILDS_AT_ONCE = 32


class SendFailedError(Exception):
    """The send cannot be carried out (its stored content or filter is no longer
    valid on this server, e.g. a channel without a provider): it is marked failed."""


@dataclass(frozen=True)
class Components:
    """What the fan-out builds and commits notifications with: the app's own."""

    storage: Storage
    ingest: NotificationIngest
    planner: ChannelPlanner
    webhooks: WebhookSubscribers
    limits: Limits
    channels: ChannelDispatcher
    metrics: Metrics
    plan_reads: PlanReads
    templates: TemplateRenderer


class _Job:
    """One send being carried out: what every chunk shares."""

    def __init__(
        self,
        send: SendRecord,
        body: SendNotification,
        plan: ChannelPlan,
        template: TemplateRecord | None,
    ) -> None:
        self.send = send
        self.body = body
        self.plan = plan
        self.template = template
        # A template failing for some users fails the same way for many: said once.
        self.render_failure_logged = False
        topic = send.audience.get("topic") if send.audience.get("kind") == "topic" else None
        if topic is not None and not isinstance(topic, str):
            raise SendFailedError(f"its topic is not a slug: {topic!r}")
        self.topic: str | None = topic
        where = send.audience.get("filter")
        self.where: UserFilter | None = None if where is None else _filter_of(where)
        # Without attribute tests, storage's WHERE is the audience itself.
        self.exact = self.where is None or not names_attributes(self.where)
        self.expires_at = _expires_at(body, send.created_at)


def _filter_of(document: object) -> UserFilter:
    try:
        return parse(document)
    except SegmentError as exc:
        raise SendFailedError(f"its filter is not valid: {exc.path}: {exc.message}") from None


def _expires_at(body: SendNotification, created_at: int) -> int | None:
    # Counted from the send's acceptance, not from the chunk that reaches the user.
    if body.ttl is not None:
        return created_at + int(body.ttl) * 1000
    if body.expires_at is not None:
        return int(body.expires_at.timestamp() * 1000)
    return None


class Fanout:
    """Carries out this node's share of the stored sends; owns its tasks."""

    def __init__(self, components: Components, config: AudiencesConfig, *, node_id: str) -> None:
        self._parts = components
        self._config = config
        self._node_id = node_id
        self._running: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self.chunks = 0

    async def start(self) -> None:
        """Start looking for sends to carry out (those left unfinished by a restart
        first); stopped by `close`."""
        self._supervisor = asyncio.create_task(self._supervise(), name="fanout-supervisor")

    async def close(self) -> None:
        """Stop at once: a chunk being committed is committed or not (the group commit
        finishes what it took); the send stays unfinished on disk and resumes from its
        cursor at the next start, here or on another node once the lease runs out."""
        tasks = list(self._running.values())
        if self._supervisor is not None:
            tasks.append(self._supervisor)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()
        self._supervisor = None

    def wake(self) -> None:
        """A send was just accepted: look for work now rather than at the next poll."""
        self._wake.set()

    @property
    def running(self) -> int:
        """Sends this node is fanning out now."""
        return len(self._running)

    async def _supervise(self) -> None:
        while True:
            try:
                await self._take_up_sends()
            except StorageError as exc:
                log.warning("fan-out: cannot read the unfinished sends: %s", exc)
            await wait_until_set(self._wake, self._config.poll_interval)
            self._wake.clear()

    async def _take_up_sends(self) -> None:
        free = self._config.max_sends_in_flight - len(self._running)
        if free <= 0:
            return
        # Ours included (leased by this node): a send running here is skipped below.
        candidates = await self._parts.storage.unfinished_sends(
            node_id=self._node_id, now=now_ms(), limit=free + len(self._running)
        )
        for send_id in candidates:
            if send_id in self._running or len(self._running) >= self._config.max_sends_in_flight:
                continue
            task = asyncio.create_task(self._carry_out(send_id), name=f"fanout-{send_id}")
            self._running[send_id] = task
            task.add_done_callback(functools.partial(self._finished, send_id))

    def _finished(self, send_id: str, _task: asyncio.Task[None]) -> None:
        self._running.pop(send_id, None)
        self._wake.set()  # a slot is free: a waiting send may start

    def _lease_until(self, now: int) -> int:
        return now + int(self._config.lease_seconds * 1000)

    async def _carry_out(self, send_id: str) -> None:
        storage = self._parts.storage
        now = now_ms()
        try:
            send = await storage.lease_send(
                send_id, node_id=self._node_id, now=now, until=self._lease_until(now)
            )
            if send is None:
                return  # finished meanwhile, or another node carries it out
            try:
                job = await self._job_of(send)
                completed = await self._run_chunks(job)
            except SendFailedError as exc:
                log.warning("send %s failed: %s", send_id, exc)
                await storage.finish_send(
                    send_id, node_id=self._node_id, status="failed", error=str(exc), now=now_ms()
                )
                return
            if completed:
                await storage.finish_send(
                    send_id, node_id=self._node_id, status="done", error=None, now=now_ms()
                )
        except StorageError as exc:
            # Left unfinished with its lease: taken up again at the next look (this
            # node's lease) or by another node once the lease runs out.
            log.warning("send %s paused, storage failed: %s", send_id, exc)
        except Exception:
            # A bug, not a condition: retrying would fail the same way at every poll.
            log.exception("send %s failed unexpectedly", send_id)
            with contextlib.suppress(StorageError):
                await storage.finish_send(
                    send_id,
                    node_id=self._node_id,
                    status="failed",
                    error="internal error",
                    now=now_ms(),
                )

    async def _job_of(self, send: SendRecord) -> _Job:
        try:
            body = _content_decoder.decode(send.content)
            plan = self._parts.planner.plan_for(body.channels, body.category)
        except (msgspec.DecodeError, PlanError) as exc:
            raise SendFailedError(f"its content cannot be sent: {exc}") from None
        template = None
        if body.template is not None:
            # The version fixed when the send was accepted (the latest for a send stored
            # without one): the same for every chunk, here or after a takeover.
            version = body.template_version
            template = await self._parts.storage.get_template(body.template, version)
            if template is None:
                which = f"version {version} of template" if version is not None else "template"
                raise SendFailedError(f"its {which} {body.template!r} no longer exists")
        return _Job(send, body, plan, template)

    async def _run_chunks(self, job: _Job) -> bool:
        """Every remaining chunk; False if the lease was lost (another node goes on)."""
        storage = self._parts.storage
        cursor = job.send.cursor_user_id
        size = self._config.chunk_size
        while True:
            read, chosen = await self._page(job, cursor, size)
            if not read:
                return True
            chunk = await self._send_chunk(job, read[-1], chosen)
            now = now_ms()
            if not await storage.record_send_chunk(
                job.send.id, chunk, node_id=self._node_id, now=now, until=self._lease_until(now)
            ):
                return False
            self.chunks += 1
            cursor = chunk.cursor_user_id
            if len(read) < size:
                return True
            # Let the single sends queued meanwhile go first (DESIGN.md §4c).
            await asyncio.sleep(0)

    async def _page(self, job: _Job, cursor: str | None, size: int) -> tuple[list[str], list[str]]:
        """The next page's user ids read, and those of them in the audience. Without
        attribute tests only ids are read: nobody's profile is opened (decrypted)."""
        storage = self._parts.storage
        if job.topic is not None:
            # A deleted topic has no subscriptions left: the send ends at the next page.
            page = await storage.list_subscribers(job.topic, after_user_id=cursor, limit=size)
            ids = [subscription.user_id for subscription in page]
            return ids, ids
        if job.exact:
            ids = await storage.user_ids_matching(job.where, after_id=cursor, limit=size)
            return ids, ids
        users = await storage.users_matching(job.where, after_id=cursor, limit=size)
        where = job.where
        assert where is not None  # not exact: a filter with attribute tests
        return [u.id for u in users], [u.id for u in users if matches(u, where)]

    async def _send_chunk(self, job: _Job, last_read: str, chosen: list[str]) -> SendChunk:
        """Commit the notifications of `chosen` (the audience's users of a page read up
        to `last_read`) in one transaction; what it did."""
        storage = self._parts.storage
        already = await storage.users_sent(job.send.id, chosen)
        todo = [u for u in chosen if u not in already]
        now = now_ms()
        gate = asyncio.Semaphore(_BUILDS_AT_ONCE)

        async def build(user_id: str) -> NewNotification | None:
            async with gate:
                return await self._notification_for(job, user_id, now)

        # Eagerly: without a channel plan or template a user's notification is built
        # without waiting, and then needs no task of its own (pushd/ingest/eager.py).
        built = await gather_eagerly(build(u) for u in todo)
        for outcome in built:
            if isinstance(outcome, Exception):
                raise outcome
        notifications = [n for n in built if isinstance(n, NewNotification)]
        results = await self._parts.ingest.submit_many(notifications)
        committed = 0
        for result in results:
            if isinstance(result, NotificationRecord):
                committed += 1
            elif not isinstance(result, UnknownUserError):  # erased since the page was read
                raise result
        if committed:
            self._parts.metrics.accepted.add({}, committed)
        if any(d.status == "queued" for n in notifications for d in n.deliveries):
            self._parts.channels.nudge()
        return SendChunk(
            cursor_user_id=last_read,
            resolved=len(chosen),
            committed=committed + len(already),
            skipped=len(todo) - committed,
        )

    async def _notification_for(self, job: _Job, user_id: str, now: int) -> NewNotification | None:
        """The user's notification, as a single send builds it; None to skip them (over
        their rate limit, erased since the page was read, or the template cannot be
        rendered for them)."""
        parts, body = self._parts, job.body
        try:
            await parts.limits.recipients.check(user_id, "inapp")
        except RateLimitedError:
            return None
        deliveries: tuple[PlannedDelivery, ...] = ()
        title, text = body.title, body.body
        channel_content = None if body.content is None else body.content.as_stored()
        if job.plan.steps or job.template is not None:
            # The chunk's recipients are built together: one read for all of them.
            context = await parts.plan_reads.read(user_id, devices=job.plan.needs_devices)
            if context is None:
                return None
            found, devices, preferences = context
            if job.template is not None:
                try:
                    rendered = await render_for(
                        parts.templates,
                        parts.limits.config,
                        job.template,
                        found,
                        body.data or {},
                        locale=found.locale,
                    )
                except TemplateProblemError as exc:
                    self._render_failed(job, exc)
                    return None
                title, text = rendered.title, rendered.body
                channel_content = rendered.channel_content()
            if job.plan.steps:
                recipient = Recipient(
                    found.id, email=found.email, phone=found.phone, devices=devices
                )
                routing = parts.planner.routing_for(preferences, body.category, found.timezone)
                deliveries = parts.planner.expand(
                    job.plan,
                    recipient,
                    priority=body.priority,
                    created_at=now,
                    routing=routing,
                    category=body.category,
                )
        notification = NewNotification(
            id=new_id("ntf"),
            user_id=user_id,
            title=title,
            body=text,
            data=body.data,
            category=body.category,
            priority=body.priority,
            created_at=now,
            expires_at=job.expires_at,
            deliveries=deliveries,
            channel_content=channel_content,
            send_id=job.send.id,
        )
        return await with_accepted_webhooks(parts.webhooks, notification)

    def _render_failed(self, job: _Job, problem: TemplateProblemError) -> None:
        if not job.render_failure_logged:
            job.render_failure_logged = True
            log.warning(
                "send %s: skipping users its template cannot be rendered for (counted in "
                "skipped), first: %s: %s",
                job.send.id,
                problem.field,
                problem,
            )
