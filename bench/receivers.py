"""The receiver process of the delivery benchmark: holds one WebSocket per user and
records, for each `notification` frame, when it arrived.

A lean client (asyncio Protocol, hand-parsed RFC 6455 frames, msgspec decoding only the
fields it needs) so that the receiving side costs little CPU next to the server.

Commands (JSON lines on stdin, see benchlib):
  connect  {host, port, tokens_file, concurrency}  open and authenticate every socket
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
import os
import time
from collections import Counter

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


decode_frame = msgspec.json.Decoder(Frame).decode


class Records:
    """Columns of what arrived, in arrival order."""

    def __init__(self) -> None:
        self.n = array.array("q")
        self.user = array.array("q")
        self.seq = array.array("q")
        self.sent = array.array("q")
        self.received = array.array("q")
        self.out_of_order = 0  # a seq not above the previous one on the same socket
        self.wrong_user = 0  # a frame stamped for another user
        self.bad_frames = 0  # undecodable or unexpected frames

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

    def __init__(self, index: int, token: str, host: str, port: int, records: Records) -> None:
        self.index = index
        self.token = token
        self.host = host
        self.port = port
        self.records = records
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.fragments = bytearray()
        self.last_seq = 0
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
            self.send(OP_TEXT, json.dumps({"type": "auth", "token": self.token}).encode())
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
            if frame.seq <= self.last_seq:
                records.out_of_order += 1
            self.last_seq = frame.seq
        elif frame.type == "welcome":
            if not self.welcome.done():
                self.welcome.set_result(None)
        else:
            records.bad_frames += 1

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
        self.sockets: list[Receiver] = []

    async def handle(self, command: Command) -> Command:
        match command["cmd"]:
            case "connect":
                return await self.connect(command)
            case "count":
                return {"frames": len(self.records.n)}
            case "dump":
                return self.dump(command["path"])
            case "quit":
                for socket in self.sockets:
                    socket.close()
                await asyncio.sleep(0.2)  # let the close frames go out
                return {"closed": len(self.sockets)}
        raise ValueError(f"unknown command {command['cmd']!r}")

    async def connect(self, command: Command) -> Command:
        host, port = command["host"], int(command["port"])
        tokens: list[str] = read_json(command["tokens_file"])
        gate = asyncio.Semaphore(int(command["concurrency"]))
        loop = asyncio.get_running_loop()
        errors: Counter[str] = Counter()
        started = time.monotonic()

        async def open_one(index: int, token: str) -> Receiver | None:
            async with gate:
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        _, socket = await loop.create_connection(
                            lambda: Receiver(index, token, host, port, self.records), host, port
                        )
                        await socket.welcome
                except (OSError, TimeoutError) as exc:
                    errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
                    return None
                return socket

        opened = await asyncio.gather(*(open_one(i, t) for i, t in enumerate(tokens)))
        self.sockets.extend(s for s in opened if s is not None)
        return {
            "connected": sum(s is not None for s in opened),
            "failed": sum(s is None for s in opened),
            "errors": dict(errors.most_common(5)),
            "seconds": time.monotonic() - started,
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
