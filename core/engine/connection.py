"""One client connection: its identity and its outbound path.

Writing is the hot path of the server. While a client keeps up, a frame goes straight to
its transport (one `send` call on a plain socket, no Future, no Task). While the
transport still holds unsent bytes, frames wait in the connection's `Outbox` instead,
ordered by priority, and are written in chunks as the transport drains, so a critical
frame can overtake queued status frames. A client that falls so far behind that the
outbox overflows by a whole queue's worth is closed with `slow_consumer` / 1013: nothing
a client does can make the server's memory grow.

What features keep about a connection lives in the plugins that own it, keyed by the
connection; the connection itself carries only what the engine and the wire protocol
need (identity, the welcome being built, the writer).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from core.engine.outbox import Outbox, OutboxPolicy
from core.wire import frames
from core.wire.frames import SYSTEM_PRIORITY

if TYPE_CHECKING:
    from core.transport import Transport
    from core.wire.entry import Entry

# How much of the outbox is handed to the transport at once: small enough that a frame
# arriving later with a higher priority can still overtake the rest.
PUMP_CHUNK = 64 * 1024

NO_QUERY: Mapping[str, str] = MappingProxyType({})


class Connection:
    """A connected client: its identity, its welcome, and its writer."""

    __slots__ = (
        "__weakref__",
        "_drops_since_flush",
        "_flush_pending",
        "_room",
        "_user",
        "_write",
        "_writing",
        "admitted",
        "channels",
        "client_id",
        "closing",
        "dropped",
        "ip",
        "ip_key",
        "key",
        "on_drop",
        "outbox",
        "policy",
        "query",
        "resume",
        "resumed",
        "session",
        "transport",
        "welcome",
    )

    def __init__(
        self,
        transport: Transport,
        ip: str,
        query: Mapping[str, str] = NO_QUERY,
        policy: OutboxPolicy | None = None,
        *,
        ip_key: str | None = None,
        key: str = "",
    ) -> None:
        self.transport = transport
        # The two calls of the hot path, bound once (a fan-out makes one per client).
        self._writing = transport.writing
        self._write = transport.write
        self.ip = ip
        # What per-IP limits count this client as (its IPv6 /64, say).
        self.ip_key = ip_key if ip_key is not None else ip
        # Unique among every instance's connections ("<instance>/<n>"): presence entries.
        self.key = key
        # The channels it is in, in the order it joined them (once it has closed, each
        # with the last message id it was sent there).
        self.channels: dict[str, str | None] = {}
        # The WebSocket URL's query arguments (the first value of each).
        self.query = query
        self.client_id = secrets.token_hex(8)
        self.session = secrets.token_urlsafe(32)
        self.resumed = False
        # For a resumed session: the channels it was in, each with the id of the last
        # message it was sent there (each replay starts after it).
        self.resume: dict[str, str | None] = {}
        self._user: str | None = None
        # Fields plugins add to the welcome frame during on_connect.
        self.welcome: dict[str, Any] = {}
        # Shared by every connection of an instance, so a reload reaches all of them.
        self.policy = policy if policy is not None else OutboxPolicy(ordered=False)
        self.outbox: Outbox[bytes] | None = None  # created on first backlog
        self.dropped = 0
        self._drops_since_flush = 0
        self._flush_pending = False
        self._room = 0  # unsent bytes the queue may still take; set when one is made
        self.closing = False
        self.admitted = False
        self.on_drop: Callable[[Connection, int], None] | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.client_id} from {self.ip}>"

    @property
    def user(self) -> str:
        """Who the client is: its authenticated user, or else its client_id."""
        return self._user if self._user is not None else self.client_id

    @user.setter
    def user(self, user: str | None) -> None:
        self._user = user

    @property
    def authenticated(self) -> bool:
        """True when a plugin (auth) set the user."""
        return self._user is not None

    # -- writing --------------------------------------------------------------------

    def send(self, frame: bytes, priority: int = SYSTEM_PRIORITY) -> None:
        """Send one complete WebSocket frame."""
        if self.closing:
            return
        if not self.outbox and not self._writing():
            self._write(frame)
        else:
            self._enqueue(priority, frame)

    def send_json(self, obj: dict, priority: int = SYSTEM_PRIORITY) -> None:
        self.send(frames.json_frame(obj), priority)

    def send_batch(self, data: bytes, entries: list[Entry]) -> None:
        """Send the hub's batch: `data` is the frames of `entries`, joined."""
        if self.closing:
            return
        if not self.outbox and not self._writing():
            self._write(data)
        else:
            for entry in entries:
                self._enqueue(entry.priority, entry.frame)

    def backlog(self) -> int:
        """Frames waiting in the outbox."""
        return len(self.outbox) if self.outbox is not None else 0

    def _enqueue(self, priority: int, frame: bytes) -> None:
        outbox = self.outbox
        if outbox is None:
            outbox = self.outbox = Outbox(self.policy)
            self._room = self.policy.max_bytes - self.transport.buffered()
        dropped = outbox.push(priority, frame)
        if dropped:
            self._dropped(dropped)
        # Cheap on the hot path: the transport is asked only when the queue alone
        # passes the room it had left, which the flushes keep up to date.
        if outbox.size > self._room and self._over_max_bytes():
            return
        if not self._flush_pending and not self.closing:
            self._wait_for_flush()

    def _over_max_bytes(self) -> bool:
        """Close as a slow consumer if the unsent bytes are over the policy's bound."""
        buffered = self.transport.buffered()
        self._room = self.policy.max_bytes - buffered
        unsent = self.outbox.size + buffered if self.outbox is not None else buffered
        if unsent <= self.policy.max_bytes or self.closing:
            return False
        # Frames are shared between connections, but what waits for this one is
        # still memory held for it: past the bound, it is a slow consumer.
        self.fail(
            frames.SLOW_CONSUMER,
            "the connection cannot keep up with its messages",
            frames.CLOSE_TRY_AGAIN,
            unsent_bytes=unsent,
        )
        if self.on_drop is not None:
            self.on_drop(self, 0)
        return True

    def unsent(self) -> int:
        """Bytes waiting for this client: its queue and what the transport holds."""
        return (self.outbox.size if self.outbox is not None else 0) + self.transport.buffered()

    def _wait_for_flush(self) -> None:
        if self.transport.when_flushed(self._on_flushed):
            self._flush_pending = True

    def _on_flushed(self, ok: bool) -> None:
        self._flush_pending = False
        if not ok or self.closing:
            return
        self._drops_since_flush = 0
        self._pump()
        self._room = self.policy.max_bytes - self.transport.buffered()

    def _pump(self) -> None:
        outbox = self.outbox
        transport = self.transport
        while outbox and not transport.writing():
            chunk = [outbox.pop()]
            size = len(chunk[0])
            while outbox and size < PUMP_CHUNK:
                frame = outbox.pop()
                chunk.append(frame)
                size += len(frame)
            transport.write(b"".join(chunk) if len(chunk) > 1 else chunk[0])
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
        return not self.outbox and not self.transport.writing()

    # -- closing --------------------------------------------------------------------

    def close(self, code: int, reason: str = "", error: dict | None = None) -> None:
        """Close with `code`, sending `error` first so the client can show why."""
        if self.closing:
            return
        self.closing = True
        if self.outbox is not None:
            self.outbox.clear()
        # The error goes behind what is in flight, before the close frame.
        last = frames.json_frame(error) if error is not None else None
        self.transport.close(code, reason[:120], last)

    def abort(self, code: int, reason: str = "") -> None:
        """Send a close frame and drop the connection at once, without waiting for the
        client's closing handshake: a dead peer never sends one."""
        self.close(code, reason)
        self.transport.abort()

    def fail(self, code: str, message: str, close_code: int, **extra: Any) -> None:
        self.close(close_code, message, frames.error_payload(code, message, **extra))
