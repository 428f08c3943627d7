"""The actor runtime: ordering, isolation, backpressure, supervision, passivation, stop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from actors.runtime import Actor, ActorStartError, ActorSystem, ActorSystemStoppedError
from tests.actors.doubles import eventually

IDLE = 0.05


@dataclass(eq=False)
class Wait:
    """A message the actor is stuck on until `release` is set."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class Flaky:
    """A message whose handling raises `failures` times, then succeeds."""

    failures: int


Message = int | Wait | Flaky


@dataclass
class Script:
    """What the test actors do in their hooks, and the journal of what they did."""

    journal: list[tuple[str, str, object]] = field(default_factory=list)
    start_error: Exception | None = None
    idle_answer: bool = True
    idle_gate: asyncio.Event | None = None
    stop_gate: asyncio.Event | None = None
    idle_entered: asyncio.Event = field(default_factory=asyncio.Event)
    stop_entered: asyncio.Event = field(default_factory=asyncio.Event)

    def of(self, key: str) -> list[tuple[str, object]]:
        """The journal of one key: (hook, detail) in call order."""
        return [(hook, detail) for k, hook, detail in self.journal if k == key]

    def received(self, key: str) -> list[object]:
        """What one key's actors handled successfully, in order."""
        return [detail for hook, detail in self.of(key) if hook == "receive"]


class JournalingActor(Actor[Message]):
    """Records every hook call into the script's journal."""

    def __init__(self, key: str, script: Script) -> None:
        self.key = key
        self.script = script
        self.restarts = 0

    def _record(self, hook: str, detail: object = None) -> None:
        self.script.journal.append((self.key, hook, detail))

    async def on_start(self) -> None:
        self._record("start")
        if self.script.start_error is not None:
            raise self.script.start_error

    async def on_receive(self, message: Message) -> None:
        match message:
            case Wait(release=release, entered=entered):
                entered.set()
                await release.wait()
            case Flaky() if message.failures > 0:
                message.failures -= 1
                raise ValueError("flaky")
            case int() if message % 3 == 0:
                await asyncio.sleep(0)  # let other actors interleave
        self._record("receive", message)

    async def on_failure(self, exc: Exception, message: Message) -> None:
        self._record("failure", type(exc).__name__)

    async def on_restart(self) -> None:
        self.restarts += 1
        self._record("restart", self.restarts)

    async def on_idle(self) -> bool:
        self._record("idle")
        self.script.idle_entered.set()
        if self.script.idle_gate is not None:
            await self.script.idle_gate.wait()
        return self.script.idle_answer

    async def on_stop(self) -> None:
        self._record("stop")
        self.script.stop_entered.set()
        if self.script.stop_gate is not None:
            await self.script.stop_gate.wait()


def make_system(
    script: Script, *, mailbox_size: int = 16, idle_timeout: float = IDLE
) -> ActorSystem[str, Message]:
    return ActorSystem(
        lambda key: JournalingActor(key, script),
        mailbox_size=mailbox_size,
        idle_timeout=idle_timeout,
        max_attempts=3,
        name="test",
    )


async def get_stuck(system: ActorSystem[str, Message], key: str) -> Wait:
    """Tell `key` a `Wait` and return it once the actor is stuck on it."""
    blocker = Wait()
    await system.tell(key, blocker)
    await blocker.entered.wait()
    return blocker


async def jam_mailbox(
    system: ActorSystem[str, Message], key: str, *, fill: int
) -> tuple[Wait, asyncio.Task[None]]:
    """Get `key`'s actor stuck on a message, its mailbox holding 1..`fill` (full), and
    tell `fill + 1` waiting for space. Returns the stuck message and that waiting tell."""
    blocker = await get_stuck(system, key)
    for n in range(1, fill + 1):
        await system.tell(key, n)
    waiting = asyncio.create_task(system.tell(key, fill + 1))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    return blocker, waiting


async def test_each_key_handles_its_messages_in_order_while_many_keys_run_at_once() -> None:
    script = Script()
    # A long idle timeout: passivation between two messages of a key is tested elsewhere.
    system = make_system(script, mailbox_size=4, idle_timeout=10)
    keys = [f"k{i}" for i in range(100)]
    per_key = 30

    async def producer(my_keys: list[str]) -> None:
        for n in range(per_key):
            for key in my_keys:
                await system.tell(key, n)

    async with asyncio.TaskGroup() as group:
        for start in range(4):
            group.create_task(producer(keys[start::4]))
    await system.stop(timeout=2)

    for key in keys:
        assert script.received(key) == list(range(per_key)), key
    assert system.messages_processed == len(keys) * per_key
    assert system.actors_started == len(keys)


async def test_a_stuck_actor_does_not_delay_another_key() -> None:
    script = Script()
    system = make_system(script)
    stuck = await get_stuck(system, "stuck")

    await system.tell("free", 1)
    await eventually(lambda: script.received("free") == [1])
    assert script.received("stuck") == []

    stuck.release.set()
    await system.stop(timeout=1)


async def test_tell_waits_for_space_when_the_mailbox_is_full() -> None:
    script = Script()
    system = make_system(script, mailbox_size=2)
    blocker, third = await jam_mailbox(system, "a", fill=2)
    assert system.queued_messages == 2

    blocker.release.set()
    await third
    await system.stop(timeout=1)
    assert script.received("a") == [blocker, 1, 2, 3]


async def test_a_message_that_fails_once_is_handled_on_retry_by_the_same_instance() -> None:
    """Guards against losing the failing message, or restarting with a new instance."""
    script = Script()
    system = make_system(script)
    flaky = Flaky(failures=1)
    await system.tell("a", 1)
    await system.tell("a", flaky)
    await system.tell("a", 2)
    await system.stop(timeout=1)

    assert script.of("a") == [
        ("start", None),
        ("receive", 1),
        ("failure", "ValueError"),
        ("restart", 1),
        ("receive", flaky),
        ("receive", 2),
        ("stop", None),
    ]
    assert (system.restarts, system.dead_letters, system.actors_started) == (1, 0, 1)


async def test_a_message_that_always_fails_is_dead_lettered_and_the_next_is_handled() -> None:
    script = Script()
    system = make_system(script)
    await system.tell("a", Flaky(failures=1000))
    await system.tell("a", 2)
    await system.stop(timeout=1)

    assert [hook for hook, _ in script.of("a")].count("failure") == 3
    assert script.received("a") == [2]
    assert (system.restarts, system.dead_letters, system.messages_processed) == (3, 1, 1)


async def test_an_idle_actor_is_passivated_and_a_later_tell_starts_a_fresh_one() -> None:
    script = Script()
    system = make_system(script)
    await system.tell("a", 1)
    assert system.get("a")
    assert len(system) == 1

    await eventually(lambda: not system.get("a"))
    assert len(system) == 0
    assert script.of("a")[-2:] == [("idle", None), ("stop", None)]
    assert system.actors_passivated == 1

    await system.tell("a", 2)
    await system.stop(timeout=1)
    assert [hook for hook, _ in script.of("a")].count("start") == 2
    assert script.received("a") == [1, 2]


async def test_an_actor_whose_on_idle_says_no_stays_live() -> None:
    script = Script(idle_answer=False)
    system = make_system(script)
    await system.tell("a", 1)
    await eventually(lambda: [hook for hook, _ in script.of("a")].count("idle") >= 2)
    assert system.get("a")
    await system.stop(timeout=1)


async def test_a_tell_that_arrives_during_on_idle_keeps_the_actor() -> None:
    """Guards the passivation race: on_idle said yes, but a message arrived meanwhile;
    stopping then would strand it in a mailbox nobody reads."""
    gate = asyncio.Event()
    script = Script(idle_gate=gate)
    system = make_system(script)
    await system.tell("a", 1)
    await script.idle_entered.wait()
    await system.tell("a", 2)
    gate.set()

    await eventually(lambda: script.received("a") == [1, 2])
    assert script.of("a")[:4] == [("start", None), ("receive", 1), ("idle", None), ("receive", 2)]
    await system.stop(timeout=1)


async def test_a_tell_during_on_stop_waits_and_goes_to_a_fresh_actor() -> None:
    """Guards the passivation race: a tell reaching a stopping actor must be neither lost
    nor handled by a second actor of the same key while the first is still stopping."""
    gate = asyncio.Event()
    script = Script(stop_gate=gate)
    system = make_system(script)
    await system.tell("a", 1)
    await script.stop_entered.wait()
    assert not system.get("a")

    late = asyncio.create_task(system.tell("a", 2))
    await asyncio.sleep(0.01)
    assert not late.done()  # waits for the old actor's on_stop
    gate.set()
    await late

    await eventually(lambda: script.received("a") == [1, 2])
    assert [hook for hook, _ in script.of("a")][:6] == [
        "start",
        "receive",
        "idle",
        "stop",
        "start",
        "receive",
    ]
    await system.stop(timeout=1)


async def test_stop_drains_every_mailbox_then_calls_on_stop() -> None:
    script = Script()
    system = make_system(script)
    blocker = await get_stuck(system, "a")
    for n in (1, 2, 3):
        await system.tell("a", n)
        await system.tell("b", n)

    stopping = asyncio.create_task(system.stop(timeout=1))
    await asyncio.sleep(0.01)
    with pytest.raises(ActorSystemStoppedError):
        await system.tell("c", 1)
    assert not stopping.done()
    blocker.release.set()
    await stopping

    assert script.of("a")[1:] == [
        ("receive", blocker),
        ("receive", 1),
        ("receive", 2),
        ("receive", 3),
        ("stop", None),
    ]
    assert script.of("b")[-1] == ("stop", None)
    assert script.received("b") == [1, 2, 3]
    assert len(system) == 0


async def test_stop_delivers_a_tell_that_was_waiting_for_space() -> None:
    """Guards against an actor stopping on an empty mailbox while an accepted tell is
    still waiting to put its message in."""
    script = Script()
    system = make_system(script, mailbox_size=1)
    blocker, waiting = await jam_mailbox(system, "a", fill=1)

    stopping = asyncio.create_task(system.stop(timeout=1))
    await asyncio.sleep(0.01)
    blocker.release.set()
    await waiting
    await stopping
    assert script.received("a") == [blocker, 1, 2]
    assert script.of("a")[-1] == ("stop", None)


async def test_stop_cancels_actors_still_running_at_the_timeout() -> None:
    script = Script()
    system = make_system(script)
    await get_stuck(system, "stuck")
    await system.tell("fine", 1)
    await eventually(lambda: script.received("fine") == [1])

    await system.stop(timeout=0.05)

    assert len(system) == 0
    assert script.of("fine")[-1] == ("stop", None)
    assert ("stop", None) not in script.of("stuck")
    with pytest.raises(ActorSystemStoppedError):
        await system.tell("fine", 2)


async def test_an_actor_whose_on_start_fails_is_not_registered() -> None:
    script = Script(start_error=RuntimeError("database unreachable"))
    system = make_system(script)
    with pytest.raises(ActorStartError) as raised:
        await system.tell("a", 1)
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert not system.get("a")
    assert len(system) == 0

    script.start_error = None
    await system.tell("a", 2)
    await system.stop(timeout=1)
    assert script.received("a") == [2]


async def test_a_failing_factory_raises_actor_start_error() -> None:
    def factory(key: str) -> Actor[Message]:
        raise LookupError(key)

    system: ActorSystem[str, Message] = ActorSystem(
        factory, mailbox_size=1, idle_timeout=IDLE, name="broken"
    )
    with pytest.raises(ActorStartError):
        await system.tell("a", 1)
    assert len(system) == 0
    await system.stop(timeout=1)


async def test_no_message_is_lost_or_reordered_while_actors_keep_passivating() -> None:
    """Guards the passivation race under churn: with an idle timeout shorter than the
    gaps between tells, actors stop and restart all the time; every message must still
    be handled once, in order."""
    script = Script()
    system = make_system(script, idle_timeout=0.002)
    keys = [f"k{i}" for i in range(10)]
    per_key = 20

    async def producer(key: str) -> None:
        for n in range(per_key):
            await system.tell(key, n)
            await asyncio.sleep(0.001 * (n % 4))

    async with asyncio.TaskGroup() as group:
        for key in keys:
            group.create_task(producer(key))
    await system.stop(timeout=1)

    for key in keys:
        assert script.received(key) == list(range(per_key)), key
    assert system.actors_passivated > 0


async def test_a_tell_waiting_on_an_actor_cancelled_at_the_stop_timeout_raises() -> None:
    """Guards against a tell blocked on a full mailbox hanging for ever once the actor
    that would have made room was cancelled."""
    script = Script()
    system = make_system(script, mailbox_size=1)
    _, blocked = await jam_mailbox(system, "stuck", fill=1)

    await system.stop(timeout=0.05)

    async with asyncio.timeout(1):
        with pytest.raises(ActorSystemStoppedError):
            await blocked


async def test_an_actor_waiting_for_each_next_message_does_not_look_the_loop_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # asyncio.Queue looks the running loop up whenever a get has to wait, and in CPython
    # 3.11 that is a getpid() system call: once per message for an actor whose mailbox
    # runs dry between messages. The mailbox is bound to its loop once instead.
    script = Script()
    system = make_system(script, idle_timeout=10)
    await system.tell("k", 0)
    await eventually(lambda: script.received("k") == [0])
    lookups = 0
    look_up = asyncio.events._get_running_loop

    def counting_look_up() -> asyncio.AbstractEventLoop | None:
        nonlocal lookups
        lookups += 1
        return look_up()

    monkeypatch.setattr(asyncio.events, "_get_running_loop", counting_look_up)
    for n in range(1, 51):
        await system.tell("k", n)
        for _ in range(3):
            await asyncio.sleep(0)  # the actor takes n, then waits for the next
    monkeypatch.undo()
    assert script.received("k") == list(range(51))
    assert lookups == 0
    await system.stop(timeout=2)
