"""The receiver process of the delivery benchmark: holds one WebSocket per user and
records, for each `notification` frame, when it arrived.

A lean client (asyncio Protocol, hand-parsed RFC 6455 frames, msgspec decoding only the
fields it needs) so that the receiving side costs little CPU next to the server.

Every socket checks the stream guarantee of protocol 1.1 (docs/protocol.md): after
`welcome {since}`, sequenced frames cover since + 1, since + 2, ... in order; a frame that
breaks it counts as out of order, a `gap` frame is counted.

Commands (JSON lines on stdin, see benchlib):
  connect  {host, port, tokens_file, concurrency}  open and authenticate every socket
  acks     {on}                                    ack every notification frame or not
  storm    {concurrency}                           drop every socket at once (abort), then
                                                   reconnect each with `since` = the
                                                   highest seq its user holds
  catchup  {storm_ns}                              per-user catch-up after the last storm
  highest  {path}                                  write each user's highest seq held
  count    {}                                      frames recorded since the last dump
  dump     {path}                                  write the records, then forget them
  quit     {}                                      close the sockets and exit
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import json
import math
import os
import time
from collections import Counter
from typing import Any

import msgspec
from benchlib import Command, raise_nofile_limit, read_json, serve_commands, write_columns

CONNECT_TIMEOUT = 30.0

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class Stamp(msgspec.Struct):
    """The `data` the load generator puts into each notification."""

    n: int  # unique number of the notification within the bench
    u: int  # index of the recipient user
    t: int  # time.time_ns() when the POST was written


class Frame(msgspec.Struct):
    type: str
    seq: int = 0
    data: Stamp | None = None
    since: int | None = None  # welcome
    last_seq: int = 0  # welcome
    from_seq: int = 0  # gap
    to_seq: int = 0  # gap


class Settings:
    """What every socket of the process does (changed by commands)."""

    def __init__(self) -> None:
        self.acks = False


ACK = b'{"type":"ack","seq":%d}'


decode_frame = msgspec.json.Decoder(Frame).decode


class Records:
    """Columns of what arrived, in arrival order."""

    def __init__(self) -> None:
        self.n = array.array("q")
        self.user = array.array("q")
        self.seq = array.array("q")
        self.sent = array.array("q")
        self.received = array.array("q")
        self.out_of_order = 0  # a sequenced frame that is not since + 1, + 2, ...
        self.wrong_user = 0  # a frame stamped for another user
        self.bad_frames = 0  # undecodable or unexpected frames
        self.gaps = 0  # `gap` frames

    def columns(self) -> list[array.array[int]]:
        return [self.n, self.user, self.seq, self.sent, self.received]


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked (client to server) frame."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = bytes([0x80 | opcode, 0x80 | size])
    else:
        header = bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    keystream = (mask * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(
        size, "big"
    )
    return header + mask + masked


class Receiver(asyncio.Protocol):
    """One user's WebSocket."""

    def __init__(
        self,
        index: int,
        token: str,
        host: str,
        port: int,
        records: Records,
        *,
        settings: Settings,
        since: int | None = None,
    ) -> None:
        self.index = index
        self.token = token
        self.host = host
        self.port = port
        self.records = records
        self.settings = settings
        self.since = since  # sent in `auth` when set
        self.expected = 0  # the next seq this socket must get (0: not welcomed yet)
        self.catchup_seq = 0  # the user's last seq when this socket was welcomed
        self.welcomed_ns = 0
        self.caught_up_ns = 0  # when this socket held catchup_seq (0: not yet)
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.fragments = bytearray()
        self.last_seq = since or 0  # the highest seq this socket's user holds
        self.welcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None  # set when the server closed the socket
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.welcome.done():
            self.welcome.set_exception(ConnectionError(f"closed before welcome: {exc}"))

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buffer[:end]).split(b"\r\n", 1)[0]
            del self.buffer[: end + 4]
            if not status.startswith(b"HTTP/1.1 101"):
                self._fail(f"upgrade refused: {status.decode(errors='replace')}")
                return
            self.upgraded = True
            auth: dict[str, object] = {"type": "auth", "token": self.token}
            if self.since is not None:
                auth["since"] = self.since
            self.send(OP_TEXT, json.dumps(auth).encode())
        self._parse_frames(now)

    def _parse_frames(self, now: int) -> None:
        buffer = self.buffer
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            size, start = second & 0x7F, 2
            if size == 126:
                if len(buffer) < 4:
                    return
                size, start = int.from_bytes(buffer[2:4], "big"), 4
            elif size == 127:
                if len(buffer) < 10:
                    return
                size, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + size:
                return
            payload = bytes(buffer[start : start + size])
            del buffer[: start + size]
            self._on_frame(first & 0x0F, bool(first & 0x80), payload, now)

    def _on_frame(self, opcode: int, final: bool, payload: bytes, now: int) -> None:
        if opcode in (OP_TEXT, OP_CONTINUATION):
            self.fragments += payload
            if final:
                message, self.fragments = bytes(self.fragments), bytearray()
                self._on_message(message, now)
        elif opcode == OP_PING:
            self.send(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.send(OP_CLOSE, payload[:2])
            if self.transport is not None:
                self.transport.close()
            if not self.welcome.done():
                self.welcome.set_exception(ConnectionError(f"closed with {self.close_code}"))
        elif opcode != OP_PONG:
            self.records.bad_frames += 1

    def _on_message(self, message: bytes, now: int) -> None:
        records = self.records
        try:
            frame = decode_frame(message)
        except msgspec.DecodeError:
            records.bad_frames += 1
            return
        if frame.type == "notification" and frame.data is not None:
            stamp = frame.data
            records.n.append(stamp.n)
            records.user.append(self.index)
            records.seq.append(frame.seq)
            records.sent.append(stamp.t)
            records.received.append(now)
            if stamp.u != self.index:
                records.wrong_user += 1
            self._sequenced(frame.seq, frame.seq, now)
            if self.settings.acks:
                self.send(OP_TEXT, ACK % frame.seq)
        elif frame.type == "gap":
            records.gaps += 1
            self._sequenced(frame.from_seq, frame.to_seq, now)
        elif frame.type == "welcome":
            self.welcomed_ns = now
            # A v1 server sends no `since`: then only "increasing" can be checked.
            self.expected = frame.since + 1 if frame.since is not None else -1
            self.catchup_seq = frame.last_seq
            if frame.since is not None and frame.since >= frame.last_seq:
                self.caught_up_ns = now
            if not self.welcome.done():
                self.welcome.set_result(None)
        else:
            records.bad_frames += 1

    def _sequenced(self, first: int, last: int, now: int) -> None:
        """Check and note a frame covering seqs first..last."""
        if self.expected < 0:
            if first <= self.last_seq:
                self.records.out_of_order += 1
        elif first != self.expected:
            self.records.out_of_order += 1
        self.expected = last + 1 if self.expected >= 0 else -1
        self.last_seq = max(self.last_seq, last)
        if not self.caught_up_ns and self.last_seq >= self.catchup_seq:
            self.caught_up_ns = now

    def send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(opcode, payload))

    def _fail(self, reason: str) -> None:
        if not self.welcome.done():
            self.welcome.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        self.send(OP_CLOSE, (1000).to_bytes(2, "big"))
        if self.transport is not None:
            self.transport.close()


class ReceiverProcess:
    def __init__(self) -> None:
        self.records = Records()
        self.settings = Settings()
        self.sockets: list[Receiver] = []
        self.address: tuple[str, int] = ("127.0.0.1", 0)

    async def handle(self, command: Command) -> Command:
        match command["cmd"]:
            case "connect":
                answer = await self.connect(command)
            case "acks":
                self.settings.acks = bool(command["on"])
                answer = {"acks": self.settings.acks}
            case "storm":
                answer = await self.storm(int(command["concurrency"]))
            case "catchup":
                answer = self.catchup(int(command["storm_ns"]))
            case "highest":
                write_columns(command["path"], [array.array("q", self.highest_seqs())])
                answer = {"users": len(self.sockets)}
            case "count":
                answer = {"frames": len(self.records.n)}
            case "dump":
                answer = self.dump(command["path"])
            case "quit":
                for socket in self.sockets:
                    socket.close()
                await asyncio.sleep(0.2)  # let the close frames go out
                answer = {"closed": len(self.sockets)}
            case other:
                raise ValueError(f"unknown command {other!r}")
        return answer

    async def connect(self, command: Command) -> Command:
        self.address = (command["host"], int(command["port"]))
        tokens: list[str] = read_json(command["tokens_file"])
        opened = await self._open_all(
            [(i, t, None) for i, t in enumerate(tokens)], int(command["concurrency"])
        )
        self.sockets.extend(s for s in opened["sockets"] if s is not None)
        del opened["sockets"]
        return opened

    async def _open_all(
        self, wanted: list[tuple[int, str, int | None]], concurrency: int
    ) -> dict[str, Any]:
        """Open and authenticate (index, token, since) sockets, `concurrency` at a time."""
        host, port = self.address
        gate = asyncio.Semaphore(concurrency)
        loop = asyncio.get_running_loop()
        errors: Counter[str] = Counter()
        started = time.monotonic()

        async def open_one(index: int, token: str, since: int | None) -> Receiver | None:
            async with gate:
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        _, socket = await loop.create_connection(
                            lambda: Receiver(
                                index,
                                token,
                                host,
                                port,
                                self.records,
                                settings=self.settings,
                                since=since,
                            ),
                            host,
                            port,
                        )
                        await socket.welcome
                except (OSError, TimeoutError) as exc:
                    errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
                    return None
                return socket

        opened = await asyncio.gather(*(open_one(*w) for w in wanted))
        return {
            "sockets": opened,
            "connected": sum(s is not None for s in opened),
            "failed": sum(s is None for s in opened),
            "errors": dict(errors.most_common(5)),
            "seconds": time.monotonic() - started,
        }

    def highest_seqs(self) -> list[int]:
        """Per user index, the highest seq held (every socket of the process is one user)."""
        return [s.last_seq for s in sorted(self.sockets, key=lambda s: s.index)]

    async def storm(self, concurrency: int) -> Command:
        """Drop every socket at once, then reconnect them all with `since`."""
        old = self.sockets
        for socket in old:
            if socket.transport is not None:
                socket.transport.abort()
        opened = await self._open_all([(s.index, s.token, s.last_seq) for s in old], concurrency)
        # A socket that could not reconnect keeps its old (dead) entry, so that its
        # user still counts as not caught up.
        self.sockets = [
            new if new is not None else previous
            for previous, new in zip(old, opened["sockets"], strict=True)
        ]
        for new, previous in zip(self.sockets, old, strict=True):
            new.last_seq = max(new.last_seq, previous.last_seq)
        del opened["sockets"]
        return opened

    def catchup(self, storm_ns: int) -> Command:
        """Seconds from the storm until each socket was welcomed and held the seq its
        user had reached when it was welcomed; the slowest ones and percentiles."""
        welcomed = sorted((s.welcomed_ns - storm_ns) / 1e9 for s in self.sockets)
        caught = sorted((s.caught_up_ns - storm_ns) / 1e9 for s in self.sockets if s.caught_up_ns)
        return {
            "welcomed_max_s": welcomed[-1] if welcomed else None,
            "welcomed_p50_s": welcomed[len(welcomed) // 2] if welcomed else None,
            "caught_up": len(caught),
            "not_caught_up": len(self.sockets) - len(caught),
            "caught_up_p50_s": caught[len(caught) // 2] if caught else None,
            "caught_up_p99_s": caught[max(0, math.ceil(0.99 * len(caught)) - 1)]
            if caught
            else None,
            "caught_up_max_s": caught[-1] if caught else None,
        }

    def dump(self, path: str) -> Command:
        records, self.records = self.records, Records()
        for socket in self.sockets:
            socket.records = self.records
        write_columns(path, records.columns())
        closes = Counter(str(s.close_code) for s in self.sockets if s.close_code is not None)
        return {
            "frames": len(records.n),
            "out_of_order": records.out_of_order,
            "wrong_user": records.wrong_user,
            "bad_frames": records.bad_frames,
            "gaps": records.gaps,
            "open": sum(not s.lost for s in self.sockets),
            "closed_by_server": dict(closes),
        }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    raise_nofile_limit()
    await serve_commands(ReceiverProcess().handle, args.max_seconds)


if __name__ == "__main__":
    asyncio.run(main())
