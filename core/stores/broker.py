"""The broker: orders published messages, keeps the recent ones, hands them to the hub.

A broker gives each message an id (`core.wire.ids`). Two implementations:

- `core.stores.broker_memory.MemoryBroker`: one process; delivery is a local call.
- `core.stores.broker_redis.RedisBroker`: XADD + PUBLISH in one Lua call, one
  subscription per instance, gap recovery from the stream after a reconnect.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

from core.wire.entry import Entry


@dataclass(frozen=True)
class LogPolicy:
    """How many recent messages a broker keeps, and for how long (seconds)."""

    size: int
    ttl: float


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
