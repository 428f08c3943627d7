"""Run `pushd serve` as a real child process for cluster and shutdown tests.

Only processes started here are ever signalled, by their own PID.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LISTENING = re.compile(r"pushd listening on (https?://\S+)")


@dataclass
class ServerProcess:
    """A started `pushd serve`; `url` is where it listens."""

    process: asyncio.subprocess.Process
    url: str
    output: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        data_dir: Path,
        *,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        timeout: float = 30,  # noqa: ASYNC109 - bounds the whole start-up
    ) -> ServerProcess:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PUSHD_")}
        environment.update(env or {})
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pushd",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            *(args or []),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=environment,
        )
        assert process.stdout is not None
        output: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = (await process.stdout.readline()).decode(errors="replace")
                    if not line:
                        raise RuntimeError("pushd exited during start-up:\n" + "".join(output))
                    output.append(line)
                    match = LISTENING.search(line)
                    if match:
                        break
        except BaseException:
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        server = cls(process, match.group(1), output)
        server._reader = asyncio.create_task(server._collect())
        return server

    async def _collect(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.output.append(line.decode(errors="replace"))

    def log(self) -> str:
        return "".join(self.output)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:  # noqa: ASYNC109
        """Signal the process (by its PID), wait for it, return its exit code."""
        if self.process.returncode is None:
            self.process.send_signal(sig)
        try:
            async with asyncio.timeout(timeout):
                code = await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise
        finally:
            if self._reader is not None:
                await self._reader
        return code

    async def __aenter__(self) -> ServerProcess:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.process.returncode is None:
            await self.stop(signal.SIGKILL)
