"""One client connection: identity, per-plugin state, and its outbound path.

Writing is the hot path of the server. While a client keeps up, a frame goes straight to
its socket (one `send` call, no Future, no Task); the IOStream only takes the unsent rest
of a partial write. While the stream still holds unsent bytes, frames wait in the
connection's `Outbox` instead, ordered by priority, and are written in chunks as the
stream drains, so a critical frame can overtake queued status frames. A client that
falls so far behind that the outbox overflows by a whole queue's worth is closed with
`slow_consumer` / 1013: nothing a client does can make the server's memory grow.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tornado.iostream import IOStream, StreamClosedError

from core.engine.outbox import Outbox, OutboxPolicy
from core.wire import frames

if TYPE_CHECKING:
    from tornado.websocket import WebSocketHandler

    from core.stores.sessions import Session
    from core.wire.entry import Entry

# Frames of the server itself (welcome, history, heartbeats) go ahead of every class.
SYSTEM_PRIORITY = 1 << 30
# How much of the outbox is handed to the stream at once: small enough that a frame
# arriving later with a higher priority can still overtake the rest.
PUMP_CHUNK = 64 * 1024

DEFAULT_POLICY = OutboxPolicy()


class Connection:
    """A connected client: its identity, what plugins keep for it, and its writer."""

    __slots__ = (
        "__weakref__",
        "_drops_since_flush",
        "_flush_pending",
        "_sock",
        "admitted",
        "client_id",
        "closing",
        "data",
        "dropped",
        "handler",
        "ip",
        "last_pong",
        "on_drop",
        "opened_at",
        "outbox",
        "policy",
        "record",
        "replayed_through",
        "requested_session",
        "resumed",
        "session",
        "since",
        "stream",
        "welcome",
    )

    def __init__(
        self,
        handler: WebSocketHandler,
        ip: str,
        requested_session: str | None = None,
        since: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.handler = handler
        ws = handler.ws_connection
        self.stream: IOStream = ws.stream  # type: ignore[union-attr]
        # Direct socket writes only on plain TCP; TLS must go through the stream.
        self._sock: socket.socket | None = (
            self.stream.socket if type(self.stream) is IOStream else None
        )
        self.ip = ip
        self.client_id = secrets.token_hex(8)
        self.session = secrets.token_urlsafe(32)
        self.resumed = False
        self.record: Session | None = None
        self.requested_session = requested_session
        self.since = since
        # Fields plugins add to the welcome frame during on_connect.
        self.welcome: dict[str, Any] = {}
        # Per-plugin state, keyed by plugin name.
        self.data: dict[str, Any] = {}
        self.opened_at = self.last_pong = clock()
        self.policy = DEFAULT_POLICY
        self.outbox: Outbox[bytes] | None = None  # created on first backlog
        self.dropped = 0
        self._drops_since_flush = 0
        self._flush_pending = False
        self.closing = False
        self.admitted = False
        self.replayed_through: str | None = None
        self.on_drop: Callable[[Connection, int], None] | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.client_id} from {self.ip}>"

    # -- writing --------------------------------------------------------------------

    def send(self, frame: bytes, priority: int = SYSTEM_PRIORITY) -> None:
        """Send one complete WebSocket frame."""
        if self.closing:
            return
        if not self.outbox and not self.stream.writing():
            self._write(frame)
        else:
            self._enqueue(priority, frame)

    def send_json(self, obj: dict, priority: int = SYSTEM_PRIORITY) -> None:
        self.send(frames.json_frame(obj), priority)

    def send_batch(self, data: bytes, entries: list[Entry]) -> None:
        """Send the hub's batch: `data` is the frames of `entries`, joined."""
        if self.closing:
            return
        if not self.outbox and not self.stream.writing():
            self._write(data)
        else:
            for entry in entries:
                self._enqueue(entry.priority, entry.frame)

    def backlog(self) -> int:
        """Frames waiting in the outbox."""
        return len(self.outbox) if self.outbox is not None else 0

    def _write(self, data: bytes | memoryview) -> None:
        sock = self._sock
        if sock is not None:
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                # The peer is gone; closing the stream ends the read loop and on_close runs.
                self.stream.close()
                return
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        try:
            self.stream.write(data)
        except StreamClosedError:
            pass

    def _enqueue(self, priority: int, frame: bytes) -> None:
        outbox = self.outbox
        if outbox is None:
            outbox = self.outbox = Outbox(self.policy)
        dropped = outbox.push(priority, frame)
        if dropped:
            self._dropped(dropped)
        if not self._flush_pending and not self.closing:
            self._wait_for_flush()

    def _wait_for_flush(self) -> None:
        try:
            # An empty write resolves once everything written before it has been sent.
            future = self.stream.write(b"")
        except StreamClosedError:
            return
        self._flush_pending = True
        future.add_done_callback(self._on_flushed)

    def _on_flushed(self, future: Any) -> None:
        self._flush_pending = False
        if future.exception() is not None or self.closing:
            return
        self._drops_since_flush = 0
        self._pump()

    def _pump(self) -> None:
        outbox = self.outbox
        while outbox and not self.stream.writing():
            chunk = [outbox.pop()]
            size = len(chunk[0])
            while outbox and size < PUMP_CHUNK:
                frame = outbox.pop()
                chunk.append(frame)
                size += len(frame)
            self._write(b"".join(chunk) if len(chunk) > 1 else chunk[0])
        if outbox:
            self._wait_for_flush()
        elif outbox is not None and not self._flush_pending:
            # Caught up: drop the outbox so an idle connection holds no queue.
            self.outbox = None

    def _dropped(self, count: int) -> None:
        self.dropped += count
        self._drops_since_flush += count
        if self._drops_since_flush > self.policy.limit:
            # A whole queue's worth dropped without the socket draining once.
            self.fail(
                frames.SLOW_CONSUMER,
                "the connection cannot keep up with its messages",
                frames.CLOSE_TRY_AGAIN,
                dropped=self.dropped,
            )
        if self.on_drop is not None:
            self.on_drop(self, count)

    def flushed(self) -> bool:
        return not self.outbox and not self.stream.writing()

    # -- closing --------------------------------------------------------------------

    def close(self, code: int, reason: str = "", error: dict | None = None) -> None:
        """Close with `code`, sending `error` first so the client can show why."""
        if self.closing:
            return
        self.closing = True
        if self.outbox is not None:
            self.outbox.clear()
        if error is not None and not self.stream.closed():
            try:
                # Straight to the stream: behind what is in flight, before the close frame.
                self.stream.write(frames.json_frame(error))
            except StreamClosedError:
                pass
        self.handler.close(code, reason[:120])

    def fail(self, code: str, message: str, close_code: int, **extra: Any) -> None:
        self.close(close_code, message, frames.error_payload(code, message, **extra))
