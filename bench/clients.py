"""The load generator's WebSocket client: a lean asyncio protocol, no library.

A Python client library costs more CPU per frame than the servers under test, and the
load runs on one core, so the client speaks just enough RFC 6455 itself: the upgrade
request, unmasked server frames split in place, and masked client frames. Its masking
key is all zeros (XOR with zero leaves the payload as is): still a valid masked frame,
which every server unmasks as usual, so the server's work is unchanged and the client
skips a copy.

Three dialects, one per kind of server (`Dialect`):

- `relay`: our server. The first frame is a JSON welcome; heartbeats and history replays
  (`"history":true` near the start) are told apart from live messages by their first
  bytes; `error` frames are recorded. Channels: `subscribe` frames are answered with
  `subscribed` (the connection keeps the channels confirmed so far, `Conn.subscribe`
  waits for them), and presence `join` / `leave` frames are counted.
- `plain`: the bare Tornado and `websockets` references, which relay whatever a client
  sends. The load sends them frames of the same shape as our server's message frames.
- `socketio`: engine.io v4 / socket.io v5 text packets over a plain WebSocket: `0{...}`
  open, `40` to join the namespace, `40{...}` back, `42["message",{...}]` events, and
  `2` pings answered with `3`.

Received frames are not decoded: a connection counts its message frames and hands each
read's worth to a `sink` (the scenario), which reads the sequence number of the last
message only. Senders number their messages and put the number at a fixed place in
`content`, so a gap or a duplicate shows as a wrong count.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MASK = b"\x00\x00\x00\x00"
CONTENT_KEY = b'"content":"'
# content = 6-digit sender number, 10-digit sequence number, padding.
SENDER_DIGITS = 6
SEQ_DIGITS = 10
CONNECT_TIMEOUT = 15.0


class ProtocolError(Exception):
    """The server broke the WebSocket protocol or its own message format."""


@dataclass(frozen=True)
class Dialect:
    """How one kind of server frames things."""

    name: str
    path: str
    message_prefix: bytes  # a live broadcast's payload starts with this


def bench_token() -> str:
    """A JWT that ours-auth accepts (a week long, for one benchmark user)."""
    import jwt

    from bench.servers import BENCH_JWT_SECRET

    claims = {"sub": "bench", "exp": int(time.time()) + 7 * 86400}
    return jwt.encode(claims, BENCH_JWT_SECRET, algorithm="HS256")


DIALECTS = {
    "relay": Dialect("relay", "/ws", b'{"type":"message","id"'),
    # Our server with a token: the same frames.
    "relay-auth": Dialect("relay", f"/ws?token={bench_token()}", b'{"type":"message","id"'),
    "plain": Dialect("plain", "/ws", b'{"type":"message"'),
    "socketio": Dialect(
        "socketio", "/socket.io/?EIO=4&transport=websocket", b'42["message",{"type":"message"'
    ),
}


# -- frames and payloads ------------------------------------------------------------


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A final, masked client frame (zero masking key)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return header + MASK + payload


CLOSE_FRAME = client_frame(struct.pack("!H", 1000), 0x8)


def content(sender: int, seq: int, size: int) -> str:
    head = f"{sender:0{SENDER_DIGITS}d}{seq:0{SEQ_DIGITS}d}"
    return head + "x" * max(0, size - len(head))


class MessageMaker:
    """Builds one sender's numbered messages as the frames its dialect sends."""

    def __init__(self, dialect: Dialect, sender: int, size: int) -> None:
        self.dialect = dialect
        self.sender = sender
        self.size = size
        self.client_id = f"{sender:016x}"

    def frame(self, seq: int, channel: str | None = None) -> bytes:
        """Message `seq`; `channel` (our server only) names where it goes, else the
        default channel."""
        text = content(self.sender, seq, self.size)
        if self.dialect.name == "relay":
            message = {"type": "normal", "content": text}
            if channel is not None:
                message["channel"] = channel
            payload = json.dumps(message, separators=(",", ":"))
        else:
            # The shape of our server's message frame, so every server moves the same bytes.
            now = time.time()
            message = json.dumps(
                {
                    "type": "message",
                    "id": f"{int(now * 1000)}-{seq}",
                    "from": self.client_id,
                    "class": "normal",
                    "priority": 5,
                    "content": text,
                    "ts": now,
                },
                separators=(",", ":"),
            )
            payload = f'42["message",{message}]' if self.dialect.name == "socketio" else message
        return client_frame(payload.encode())


def tag(sender: int) -> bytes:
    """What a sender's messages have right after `"content":"`."""
    return CONTENT_KEY + f"{sender:0{SENDER_DIGITS}d}".encode()


def seq_of(buf: bytes, start: int, end: int) -> int:
    """The sequence number in the message payload buf[start:end]."""
    at = buf.find(CONTENT_KEY, start, end)
    if at < 0:
        raise ProtocolError(f"message without content: {buf[start:end][:200]!r}")
    at += len(CONTENT_KEY) + SENDER_DIGITS
    return int(buf[at : at + SEQ_DIGITS])


# -- the connection -----------------------------------------------------------------

# sink(conn, buf, first_start, last_start, last_end): `conn.batch` message frames
# arrived in one read, the first starting at buf[first_start], the last at
# buf[last_start:last_end].
Sink = Callable[["Conn", bytes, int, int, int], None]


class Conn(asyncio.Protocol):
    """One client WebSocket connection."""

    def __init__(
        self,
        dialect: Dialect,
        host: str,
        port: int,
        sink: Sink | None = None,
        path: str | None = None,
    ) -> None:
        self.dialect = dialect
        self.path = path or dialect.path  # its own, with a query of its own (a session)
        self.prefix = dialect.message_prefix
        self.host = host
        self.port = port
        self.sink = sink
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self._buf = b""
        self._upgraded = False
        self._key = base64.b64encode(os.urandom(16))
        self.count = 0  # live message frames received
        self.batch = 0  # of which in the latest read
        self.upto = -1  # sequence number of the last message received (kept by sinks)
        self.group = 0  # free for scenarios (which instance, slow or not)
        self.heartbeats = 0
        self.history = 0
        self.pings = 0
        self.errors: list[str] = []
        self.close_code: int | None = None  # from the server's close frame
        self.closing = False  # we sent a close frame
        self.welcome: dict | None = None
        self.channels: set[str] = set()  # confirmed by `subscribed` (our server)
        self.presence_events = 0  # `join` / `leave` frames received
        self._pending: set[str] = set()  # subscribes / unsubscribes not yet answered
        self._answered: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        request = (
            f"GET {self.path} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self._key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        transport.write(request.encode())  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            closed = f"close code {self.close_code}" if self.close_code else None
            why = self.errors[-1] if self.errors else exc or closed or "EOF"
            self.ready.set_exception(ConnectionError(f"closed before it was ready: {why}"))
        if not self.done.done():
            self.done.set_result(None)
        if self._answered is not None and not self._answered.done():
            why = self.errors[-1] if self.errors else exc or "EOF"
            self._answered.set_exception(ConnectionError(f"closed before it answered: {why}"))

    def data_received(self, data: bytes) -> None:
        try:
            self._receive(data)
        except Exception as error:
            # Recorded for the scenario to report; the connection is of no more use.
            self.errors.append(f"{type(error).__name__}: {error}")
            self.abort()

    def _receive(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        if not self._upgraded:
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                self._buf = buf
                return
            self._upgrade(buf[:head_end])
            buf = buf[head_end + 4 :]
        # The hot loop: split server frames (never masked) without copying payloads.
        prefix = self.prefix
        n = len(buf)
        pos = 0
        count = 0
        first = last = last_end = 0
        while n - pos >= 2:
            b0 = buf[pos]
            length = buf[pos + 1]
            if length < 126:
                start = pos + 2
            elif length == 126:
                if n - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            else:
                raise ProtocolError(f"masked or malformed server frame: {buf[pos : pos + 16]!r}")
            end = start + length
            if end > n:
                break
            if b0 == 0x81 and buf.startswith(prefix, start):
                if not count:
                    first = start
                count += 1
                last = start
                last_end = end
            else:
                self._other(b0, buf[start:end])
            pos = end
        self._buf = buf[pos:] if pos < n else b""
        if count:
            self.count += count
            self.batch = count
            if self.sink is not None:
                self.sink(self, buf, first, last, last_end)

    # -- everything but live messages -------------------------------------------------

    def _upgrade(self, head: bytes) -> None:
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ProtocolError(f"upgrade refused: {status.decode(errors='replace')}")
        accept = base64.b64encode(hashlib.sha1(self._key + WS_GUID).digest())
        if accept not in head:
            raise ProtocolError("wrong Sec-WebSocket-Accept")
        self._upgraded = True
        if self.dialect.name == "plain" and not self.ready.done():
            self.ready.set_result(None)

    def _other(self, b0: int, payload: bytes) -> None:
        opcode = b0 & 0x0F
        if not b0 & 0x80:
            raise ProtocolError("fragmented server frame")
        if opcode == 0x9:
            self.pings += 1
            self.send(client_frame(payload, 0xA))
        elif opcode == 0x8:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            if not self.closing:
                self.closing = True
                self.send(client_frame(payload[:2], 0x8))
        elif opcode == 0x1:
            self._text(payload)
        elif opcode != 0xA:
            self.errors.append(f"unexpected frame with opcode {opcode}")

    def _text(self, payload: bytes) -> None:
        dialect = self.dialect.name
        if dialect == "relay":
            if payload.startswith(b'{"type":"heartbeat"'):
                self.heartbeats += 1
            elif b'"history":true' in payload[:48]:
                self.history += 1
            elif payload.startswith((b'{"type":"join"', b'{"type":"leave"')):
                self.presence_events += 1
            elif payload.startswith((b'{"type":"subscribed"', b'{"type":"unsubscribed"')):
                self._answer(json.loads(payload))
            elif payload.startswith(b'{"type":"welcome"'):
                self.welcome = json.loads(payload)
                if not self.ready.done():
                    self.ready.set_result(None)
            else:
                self.errors.append(payload[:300].decode(errors="replace"))
                if self._answered is not None and not self._answered.done():
                    self._answered.set_exception(ProtocolError(self.errors[-1]))
        elif dialect == "socketio":
            if payload == b"2":
                self.pings += 1
                self.send(client_frame(b"3"))
            elif payload.startswith(b"0{"):
                self.send(client_frame(b"40"))
            elif payload.startswith(b"40"):
                if not self.ready.done():
                    self.ready.set_result(None)
            else:
                self.errors.append(payload[:300].decode(errors="replace"))
        else:
            self.errors.append(payload[:300].decode(errors="replace"))

    def _answer(self, frame: dict) -> None:
        channel = frame["channel"]
        if frame["type"] == "subscribed":
            self.channels.add(channel)
        else:
            self.channels.discard(channel)
        self._pending.discard(channel)
        if not self._pending and self._answered is not None and not self._answered.done():
            self._answered.set_result(None)

    # -- channels (our server) ----------------------------------------------------------

    def subscribe(self, channels: Iterable[str], kind: str = "subscribe") -> asyncio.Future:
        """Send a `subscribe` (or `unsubscribe`) frame for each of `channels`; the future
        is done once every one is answered (`subscribed` / `unsubscribed`)."""
        channels = list(channels)
        self._pending.update(channels)
        self._answered = asyncio.get_running_loop().create_future()
        for channel in channels:
            payload = json.dumps({"type": kind, "channel": channel}, separators=(",", ":"))
            self.send(client_frame(payload.encode()))
        if not self._pending:
            self._answered.set_result(None)
        return self._answered

    def unsubscribe(self, channels: Iterable[str]) -> asyncio.Future:
        return self.subscribe(channels, "unsubscribe")

    # -- sending and closing ----------------------------------------------------------

    def send(self, frame: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(frame)

    def close(self) -> None:
        """Start the closing handshake: the server answers and closes the TCP connection."""
        if not self.closing:
            self.closing = True
            self.send(CLOSE_FRAME)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    @property
    def lost(self) -> bool:
        return self.done.done()


# -- opening and closing many -------------------------------------------------------


async def connect(
    dialect: Dialect,
    host: str,
    port: int,
    sink: Sink | None = None,
    *,
    rcvbuf: int | None = None,
    timeout: float = CONNECT_TIMEOUT,
    path: str | None = None,
) -> Conn:
    """Open one connection and wait until it is ready (welcome / 101 / socket.io `40`);
    `path` replaces the dialect's (to present a session token)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            # Before connect, so the TCP window is small from the start.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
    except BaseException:
        sock.close()
        raise
    _, conn = await loop.create_connection(lambda: Conn(dialect, host, port, sink, path), sock=sock)
    try:
        await asyncio.wait_for(asyncio.shield(conn.ready), timeout)
    except BaseException:
        # Nobody waits for it any more: the failure its abort sets need not be reported.
        conn.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        conn.abort()
        raise
    return conn


async def connect_many(
    n: int,
    dialect: Dialect,
    host: str,
    port: int,
    sink: Sink | None = None,
    *,
    concurrency: int = 64,
    rcvbuf: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    paths: Sequence[str] | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> list[Conn]:
    """Open `n` connections, at most `concurrency` handshakes at a time (in the order
    they became ready). With `paths`, connection i asks for `paths[i]` instead of the
    dialect's path."""
    conns: list[Conn] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(path: str | None) -> None:
        async with gate:
            conn = await connect(
                dialect, host, port, sink, rcvbuf=rcvbuf, timeout=timeout, path=path
            )
            conns.append(conn)
        if on_progress is not None:
            on_progress(len(conns))

    tasks = [asyncio.ensure_future(one(paths[i] if paths else None)) for i in range(n)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in conns:
            conn.abort()
        raise
    return conns


async def subscribe_many(
    conns: Sequence[Conn],
    channels: Sequence[Sequence[str]],
    *,
    concurrency: int = 64,
    timeout: float = CONNECT_TIMEOUT,
    on_progress: Callable[[int], None] | None = None,
    kind: str = "subscribe",
) -> None:
    """Subscribe `conns[i]` to `channels[i]` (our server), at most `concurrency`
    connections waiting for their `subscribed` frames at a time; or unsubscribe, with
    `kind="unsubscribe"`."""
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(conn: Conn, names: Sequence[str]) -> None:
        nonlocal done
        async with gate:
            try:
                await asyncio.wait_for(asyncio.shield(conn.subscribe(names, kind)), timeout)
            except TimeoutError:
                missing = sorted(conn._pending)
                raise ProtocolError(
                    f"no answer to `{kind}` within {timeout:.0f} s for {len(missing)} of "
                    f"{len(names)} channels (first: {missing[:1]})"
                ) from None
        done += 1
        if on_progress is not None:
            on_progress(done)

    tasks = [asyncio.ensure_future(one(c, n)) for c, n in zip(conns, channels, strict=True)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def quiet(conns: Sequence[Conn], seconds: float = 0.5, timeout: float = 30.0) -> int:
    """Wait until no presence event has reached `conns` for `seconds` (the join frames
    that subscribing set off have all arrived), at most `timeout`; returns their count."""
    deadline = time.perf_counter() + timeout
    last = -1
    while True:
        count = sum(c.presence_events for c in conns)
        if count == last or time.perf_counter() > deadline:
            return count
        last = count
        await asyncio.sleep(seconds)


async def close_all(conns: Iterable[Conn], timeout: float = 5.0) -> int:
    """Close handshake on every connection; abort those still open after `timeout`.
    Returns how many had to be aborted."""
    conns = list(conns)
    for conn in conns:
        conn.close()
    pending = [conn.done for conn in conns if not conn.lost]
    if pending:
        await asyncio.wait(pending, timeout=timeout)
    aborted = 0
    for conn in conns:
        if not conn.lost:
            aborted += 1
            conn.abort()
    return aborted


# -- a process that holds idle connections ------------------------------------------


def hold_idle(
    dialect_name: str, host: str, port: int, n: int, pipe, *, rooms: tuple[int, int] | None = None
) -> None:
    """Entry point of a process that opens `n` idle connections, answers pings and
    heartbeats, and closes them when told to. With `rooms` = (per connection, room size)
    (our server only), each connection then also subscribes to that many rooms
    (`bench.load.assign_rooms`). It talks over `pipe`: ("progress", what, k) ...
    ("ready", {seconds...}) | ("failed", why), then after "stop": ("done", stats)."""
    import uvloop

    from bench.servers import pin_load

    pin_load()
    uvloop.run(_hold(DIALECTS[dialect_name], host, port, n, pipe, rooms=rooms))


async def _hold(
    dialect: Dialect, host: str, port: int, n: int, pipe, *, rooms: tuple[int, int] | None
) -> None:
    from bench.load import assign_rooms, room_name

    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    step = max(1, n // 20)

    def progress(what: str) -> Callable[[int], None]:
        def report(k: int) -> None:
            if k % step == 0:
                pipe.send(("progress", what, k))

        return report

    timing = {}
    try:
        conns = await connect_many(
            n, dialect, host, port, concurrency=32, on_progress=progress("connecting")
        )
        timing["connect_s"] = time.perf_counter() - started
        if rooms is not None:
            per_conn, size = rooms
            plan = assign_rooms(n, per_conn, size)
            started = time.perf_counter()
            await subscribe_many(
                conns,
                [[room_name("idle", r) for r in mine] for mine in plan],
                concurrency=32,
                on_progress=progress("subscribing"),
            )
            timing["subscribe_s"] = time.perf_counter() - started
            timing["join_frames"] = await quiet(conns)
    except Exception as error:
        pipe.send(("failed", f"{type(error).__name__}: {error}"))
        return
    pipe.send(("ready", timing))
    await loop.run_in_executor(None, pipe.recv)  # "stop"
    errors = [e for conn in conns for e in conn.errors]
    pipe.send(
        (
            "done",
            {
                "open": sum(1 for conn in conns if not conn.lost),
                "close_codes": sorted({c.close_code for c in conns if c.close_code}),
                "errors": errors[:3],
                "pings": sum(conn.pings for conn in conns),
                "heartbeats": sum(conn.heartbeats for conn in conns),
            },
        )
    )
    await close_all(conns, timeout=10)
