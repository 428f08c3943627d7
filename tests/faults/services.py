"""Private PostgreSQL and RabbitMQ servers that a fault test may stop and start.

The machine's shared PostgreSQL (:5432) and RabbitMQ (:5672) serve other test runs at
the same time, so a test that takes a service down gets its own: a PostgreSQL cluster
made by `initdb` in a temporary directory, and a RabbitMQ node with its own name, ports,
Erlang cookie and Mnesia directory. Both listen on loopback only, on free ports.

Each is an async context manager that always cleans up: it stops the server it started
(by that process's PID, or its own process group for RabbitMQ, whose start script runs
the Erlang VM as a child), escalating to SIGKILL, and removes its directory. Nothing
here ever signals a process it did not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiormq
import asyncpg

PG_BIN = Path(os.environ.get("PUSHD_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
# The scripts themselves, not /usr/sbin's wrappers: those switch to the `rabbitmq` user
# and write the shared node's /var/log/rabbitmq/startup_log.
RABBITMQ_BIN = Path(os.environ.get("PUSHD_TEST_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class ServiceError(RuntimeError):
    """A private service could not be started; the message says what was tried."""


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _run(*argv: str, user: str | None = None, env: dict[str, str] | None = None) -> str:
    """Run a short command to completion; its output, or ServiceError naming it."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        user=user,
        env=env,
    )
    try:
        async with asyncio.timeout(START_TIMEOUT):
            output, _ = await process.communicate()
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise ServiceError(f"{' '.join(argv)} exited with {process.returncode}:\n{text}")
    return text


class _LogFollower:
    """Reads a child's output into memory and tells when a line containing `marker`
    was seen (the child must never block on a full pipe)."""

    def __init__(self, stream: asyncio.StreamReader, marker: str) -> None:
        self.lines: list[str] = []
        self.marker = marker
        self.seen = asyncio.Event()
        self.ended = asyncio.Event()
        self._task = asyncio.create_task(self._follow(stream))

    async def _follow(self, stream: asyncio.StreamReader) -> None:
        try:
            while line := await stream.readline():
                text = line.decode(errors="replace")
                self.lines.append(text)
                if self.marker in text:
                    self.seen.set()
        finally:
            self.ended.set()

    async def wait_ready(self, what: str, timeout: float) -> None:  # noqa: ASYNC109
        """Return once the marker line appeared; ServiceError if the child ended first."""
        seen = asyncio.create_task(self.seen.wait())
        ended = asyncio.create_task(self.ended.wait())
        try:
            await asyncio.wait({seen, ended}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            for task in (seen, ended):
                task.cancel()
            await asyncio.gather(seen, ended, return_exceptions=True)
        if not self.seen.is_set():
            state = "exited" if self.ended.is_set() else f"not ready after {timeout:.0f} s"
            raise ServiceError(f"{what} {state}:\n{self.tail()}")

    def tail(self, count: int = 30) -> str:
        return "".join(self.lines[-count:])

    async def close(self) -> None:
        """After the child exited: let the reader see the end of its output (briefly: a
        grandchild could hold the pipe open), then stop it."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.shield(self._task)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


# PostgreSQL -------------------------------------------------------------------------


class _ChildService:
    """What both private services share: the child process and its followed log."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self._log: _LogFollower | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def _forget(self) -> None:
        if self._log is not None:
            await self._log.close()
        self.process, self._log = None, None

    def log_tail(self) -> str:
        return self._log.tail() if self._log is not None else ""


class PrivatePostgres(_ChildService):
    """One `postgres` server in a temporary directory, trust auth, fsync off.

    `stop()` is a fast shutdown (SIGINT to the postmaster: sessions are cut, like a
    crashed or restarted database); `start()` brings the same cluster back on the same
    port, with its data.
    """

    DATABASE = "pushd"

    def __init__(self, root: Path, port: int, user: str | None) -> None:
        self.root = root
        self.port = port
        super().__init__()
        self.user = user  # the OS user that runs it (PostgreSQL refuses to run as root)
        self.starts = 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.DATABASE}"

    async def init(self) -> None:
        await _run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.root / "data"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            user=self.user,
        )

    async def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        if self.running:
            raise ServiceError("private PostgreSQL is already running")
        self.process = await asyncio.create_subprocess_exec(
            str(PG_BIN / "postgres"),
            "-D",
            str(self.root / "data"),
            "-p",
            str(self.port),
            "-k",
            str(self.root),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=100",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            user=self.user,
        )
        assert self.process.stderr is not None
        self._log = _LogFollower(self.process.stderr, "ready to accept connections")
        try:
            await self._log.wait_ready("private PostgreSQL", START_TIMEOUT)
        except BaseException:
            await self.kill()
            raise
        self.starts += 1
        if self.starts == 1:
            conn = await asyncpg.connect(
                f"postgresql://postgres@127.0.0.1:{self.port}/postgres", timeout=10
            )
            try:
                await conn.execute(f'CREATE DATABASE "{self.DATABASE}"')
            finally:
                await conn.close()

    async def stop(self) -> None:
        """Fast shutdown (SIGINT by PID), SIGKILL if it does not go in time."""
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        await self._forget()

    async def kill(self) -> None:
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            process.kill()
            await process.wait()
        await self._forget()


def _postgres_user() -> str | None:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ServiceError("running as root but there is no `postgres` OS user") from exc
    return "postgres"


@contextlib.asynccontextmanager
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    """A started private PostgreSQL with an empty database `pushd`; always removed."""
    if not (PG_BIN / "postgres").exists():
        raise ServiceError(f"no PostgreSQL binaries in {PG_BIN} (set PUSHD_TEST_PG_BIN)")
    user = _postgres_user()
    # Not under pytest's tmp_path: its parents are private to root, and the server runs
    # as `postgres`.
    root = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="pushd-fault-pg-"))
    try:
        if user is not None:
            shutil.chown(root, user)
        server = PrivatePostgres(root, free_port(), user)
        await server.init()
        try:
            await server.start()
            yield server
        finally:
            await server.stop()
    finally:
        await asyncio.to_thread(shutil.rmtree, root, ignore_errors=True)


# RabbitMQ ---------------------------------------------------------------------------


class PrivateRabbitMQ(_ChildService):
    """One RabbitMQ node (`pushd-fault-<random>@localhost`) in a temporary directory.

    It has its own AMQP and distribution ports, Erlang cookie (HOME), config file and
    Mnesia directory, no plugins, and the default `guest` user allowed from loopback.
    `stop()` is `rabbitmqctl stop` (a clean broker stop: clients see their connections
    closed); `start()` brings the same node back, with its durable queues and persistent
    messages, on the same port.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.node = f"pushd-fault-{secrets.token_hex(4)}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        super().__init__()
        home = root / "home"
        for directory in (home, root / "mnesia", root / "log"):
            directory.mkdir(parents=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)
        (root / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (root / "enabled_plugins").write_text("[].\n")
        (root / "rabbitmq-env.conf").write_text("")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))},
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq"),
            "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(root / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(root / "plugins"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(root / "feature_flags"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    async def start(self) -> None:
        """Start the node and wait until the broker is up and AMQP answers."""
        if self.running:
            raise ServiceError(f"{self.node} is already running")
        self.process = await asyncio.create_subprocess_exec(
            str(RABBITMQ_BIN / "rabbitmq-server"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            cwd=self.root,
            # The script runs the Erlang VM as its child: a group of our own lets the
            # cleanup reach the VM too, and only it.
            start_new_session=True,
        )
        assert self.process.stdout is not None
        self._log = _LogFollower(self.process.stdout, "Starting broker... completed")
        try:
            await self._log.wait_ready(f"private RabbitMQ {self.node}", START_TIMEOUT)
            connection = await aiormq.connect(self.url)
            await connection.close()
        except BaseException:
            await self.kill()
            raise

    async def stop(self) -> None:
        """`rabbitmqctl stop`, then wait for our process; SIGKILL its group if needed."""
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ServiceError, TimeoutError):
                await _run(str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, "stop", env=self.env)
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await process.wait()
            except TimeoutError:
                await self.kill()
                return
        await self._forget()

    async def kill(self) -> None:
        """SIGKILL the process group this object started (the script and its VM)."""
        process = self.process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        await self._forget()


@contextlib.asynccontextmanager
async def private_rabbitmq() -> AsyncIterator[PrivateRabbitMQ]:
    """A started private RabbitMQ node; always stopped and removed."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        raise ServiceError(f"no RabbitMQ scripts in {RABBITMQ_BIN} (set PUSHD_TEST_RABBITMQ_BIN)")
    root = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="pushd-fault-mq-"))
    try:
        node = PrivateRabbitMQ(root)
        try:
            await node.start()
            yield node
        finally:
            await node.stop()
    finally:
        await asyncio.to_thread(shutil.rmtree, root, ignore_errors=True)
