"""The broker: orders published messages per channel, keeps the recent ones, and hands
them to the hub.

A broker gives each message an id (`core.wire.ids`), in its channel's order. It delivers
the messages of the channels this instance has subscribers in (`subscribe` on the
first, `unsubscribe` after the last), and presence events published on them. Two
implementations:

- `core.stores.broker_memory.MemoryBroker`: one process; delivery is a local call.
- `core.stores.broker_redis.RedisBroker`: XADD + PUBLISH in one Lua call per message,
  a subscription per channel with local subscribers, gap recovery from the channel's
  stream after a reconnect.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from core.stores.ratelimit import RateLimiter, Spend
from core.wire.entry import Entry


@dataclass(frozen=True)
class LogPolicy:
    """How many recent messages a broker keeps per channel, and for how long (seconds)."""

    size: int
    ttl: float


@dataclass(frozen=True)
class Recovery:
    """What a channel's log still has after a cursor: the messages, and whether it
    reaches back to the cursor (False: some were dropped from the log meanwhile)."""

    entries: list[Entry]
    complete: bool


class Unpaid(Exception):
    """A publish whose `spend` was refused (a bucket was empty): nothing was published.
    `retry_after`: the seconds until it could be paid."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"refused; retry after {retry_after:.3f} s")
        self.retry_after = retry_after


Deliver = Callable[[Entry], None]
Control = Callable[[bytes], None]


class Broker(abc.ABC):
    """Orders and distributes messages; one per instance, shared by all connections."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None
        self._control: Control | None = None

    def attach(self, deliver: Deliver) -> None:
        """Where delivered entries go (the hub)."""
        self._deliver = deliver

    def on_control(self, control: Control) -> None:
        """Where control messages (`publish_control`, from any instance) go."""
        self._control = control

    def publish_control(self, payload: bytes) -> None:
        """Tell every instance, this one included, `payload` (a disconnect, say)."""
        if self._control is not None:
            self._control(payload)

    async def start(self) -> None:
        """Begin delivering. Called once, before any publish."""

    async def stop(self) -> None:
        """Stop delivering and release what the broker holds."""

    def want(self, channel: str) -> None:
        """Start listening to `channel` (without waiting for it to take effect)."""

    async def subscribe(self, channel: str) -> None:
        """Deliver `channel`'s messages from now on (returns once that holds)."""
        await self.subscribe_all((channel,))

    async def subscribe_all(self, channels: Iterable[str]) -> None:
        """`subscribe` to each of `channels`, waiting for all of them at once."""
        for channel in channels:
            self.want(channel)

    def unsubscribe(self, channel: str) -> None:
        """Stop delivering `channel`'s messages (nobody here listens any more)."""

    def takes_charges(self, limiter: RateLimiter) -> bool:
        """Whether `publish` can take a `spend` of `limiter`'s buckets atomically with
        the message, now (they live in the same store as the broker's messages)."""
        return False

    @abc.abstractmethod
    def publish(
        self,
        channel: str,
        priority: int,
        tail: bytes,
        ts: float,
        cls: str,
        *,
        spend: Spend | None = None,
    ) -> asyncio.Future:
        """Order and distribute a message; a future of its id (callers may ignore it
        unless they pass `spend`). With `spend` (only while `takes_charges`: the limiter's
        buckets), the message
        is published only if those tokens could be taken; else the future raises `Unpaid`.
        Never blocks; never raises on store errors."""

    @abc.abstractmethod
    def publish_event(self, channel: str, origin: str, frame_json: bytes) -> None:
        """Distribute a presence event to `channel`'s subscribers everywhere, among its
        messages (not kept). `origin` is the connection it is about."""

    @abc.abstractmethod
    async def recent(self, channel: str, count: int, max_age: float) -> list[Entry]:
        """The last `count` messages of `channel` no older than `max_age` s, oldest first."""

    @abc.abstractmethod
    async def since(self, channel: str, cursor: str, limit: int, max_age: float) -> Recovery:
        """`channel`'s messages after id `cursor` (at most the last `limit`), oldest first."""

    @abc.abstractmethod
    def set_log(self, policy: LogPolicy | None) -> None:
        """Keep `policy.size` recent messages per channel for `policy.ttl` seconds from
        now on (None: no history is wanted; the broker keeps only what it needs)."""

    @property
    def distributed(self) -> bool:
        """True when messages reach other instances through this broker."""
        return False
