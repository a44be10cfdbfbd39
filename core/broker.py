"""The broker: orders published messages, keeps the recent ones, hands them to the hub.

A broker gives each message an id of the form ``<milliseconds>-<sequence>`` (the shape of
a Redis stream id), so ids from either backend sort the same way and a cursor ("the last
message this client saw") works everywhere. Two implementations:

- `core.stores.broker_memory.MemoryBroker`: one process; delivery is a local call.
- `core.stores.broker_redis.RedisBroker`: XADD + PUBLISH in one Lua call, one
  subscription per instance, gap recovery from the stream after a reconnect.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

from core.frames import message_payload, text_frame


@dataclass(frozen=True)
class LogPolicy:
    """How many recent messages a broker keeps, and for how long (seconds)."""

    size: int
    ttl: float


def parse_id(message_id: str) -> tuple[int, int] | None:
    """The sortable key of a broker id, or None for ids that are not ordered."""
    ms, sep, seq = message_id.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        return None
    return int(ms), int(seq)


class Entry:
    """One ordered message: its id, priority and WebSocket frame, built once.

    Only the frame is kept (the JSON payload is a view into it), so a message held by
    the history log and by slow clients' queues costs its size once.
    """

    __slots__ = ("_start", "cls", "frame", "id", "key", "priority", "ts")

    def __init__(
        self,
        id: str,
        priority: int,
        payload: bytes,
        ts: float = 0.0,
        cls: str = "",
        *,
        key: tuple[int, int] | None = None,
    ) -> None:
        self.id = id
        self.priority = priority
        self.frame = text_frame(payload)
        self._start = len(self.frame) - len(payload)
        self.ts = ts  # wall-clock seconds when the sender's instance received it
        self.cls = cls  # the message class, for per-class metrics
        self.key = key if key is not None else parse_id(id)

    def __repr__(self) -> str:
        return f"<Entry {self.id} p={self.priority}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Entry) and (self.id, self.frame) == (other.id, other.frame)

    __hash__ = None  # type: ignore[assignment]

    @property
    def payload(self) -> bytes:
        """The frame's JSON (a copy: needed only for replays)."""
        return self.frame[self._start :]

    @classmethod
    def from_tail(
        cls, message_id: str, priority: int, tail: bytes, ts: float, kind: str = ""
    ) -> Entry:
        return cls(message_id, priority, message_payload(message_id, tail), ts, kind)

    def history_frame(self) -> bytes:
        """The same message marked `"history": true`, for a replay."""
        return text_frame(b'{"history":true,' + memoryview(self.frame)[self._start + 1 :])


Deliver = Callable[[Entry], None]


class Broker(abc.ABC):
    """Orders and distributes messages; one per instance, shared by all connections."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    def attach(self, deliver: Deliver) -> None:
        """Where delivered entries go (the hub)."""
        self._deliver = deliver

    async def start(self) -> None:
        """Begin delivering. Called once, before any publish."""

    async def stop(self) -> None:
        """Stop delivering and release what the broker holds."""

    @abc.abstractmethod
    def publish(self, priority: int, tail: bytes, ts: float, cls: str) -> None:
        """Order and distribute a message. Never blocks; never raises on store errors."""

    @abc.abstractmethod
    async def recent(self, count: int, max_age: float) -> list[Entry]:
        """The last `count` messages no older than `max_age` seconds, oldest first."""

    @abc.abstractmethod
    async def since(self, cursor: str, limit: int, max_age: float) -> list[Entry]:
        """Messages after id `cursor` (at most the last `limit`), oldest first."""

    @abc.abstractmethod
    def set_log(self, policy: LogPolicy | None) -> None:
        """Keep `policy.size` recent messages for `policy.ttl` seconds from now on
        (None: no history is wanted; the broker keeps only what it needs itself)."""

    @property
    def distributed(self) -> bool:
        """True when messages reach other instances through this broker."""
        return False
