"""The in-process broker: ids from the local clock, delivery by a direct call."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from core.stores.broker import Broker, LogPolicy, Recovery
from core.stores.ratelimit import Spend
from core.wire.entry import Entry
from core.wire.ids import IdClock, parse_id


class MemoryBroker(Broker):
    """Orders messages in this process and keeps the last ones of each channel."""

    def __init__(self, policy: LogPolicy | None, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._clock = clock
        self._ids = IdClock(clock)
        self._logs: dict[str, deque[Entry]] = {}
        self._size = 0
        self.set_log(policy)

    def set_log(self, policy: LogPolicy | None) -> None:
        # Nobody recovers from a local log, so without history it keeps nothing.
        size = policy.size if policy is not None else 0
        if size != self._size:
            self._size = size
            self._logs = {
                channel: deque(log, maxlen=size) for channel, log in self._logs.items() if size
            }

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
        entry = Entry.from_tail(self._ids.next(), priority, tail, ts, kind=cls, channel=channel)
        published = asyncio.get_running_loop().create_future()
        published.set_result(entry.id)
        if self._size:
            log = self._logs.get(channel)
            if log is None:
                log = self._logs[channel] = deque(maxlen=self._size)
            log.append(entry)
        if self._deliver is not None:
            self._deliver(entry)
        return published

    def publish_event(self, channel: str, origin: str, frame_json: bytes) -> None:
        if self._deliver is not None:
            self._deliver(Entry.event(channel, origin, frame_json))

    async def recent(self, channel: str, count: int, max_age: float) -> list[Entry]:
        if count <= 0:
            return []
        oldest = self._clock() - max_age
        fresh = [e for e in self._logs.get(channel, ()) if e.ts >= oldest]
        return fresh[-count:]

    async def since(self, channel: str, cursor: str, limit: int, max_age: float) -> Recovery:
        key = parse_id(cursor)
        if key is None or limit <= 0:
            return Recovery([], False)
        oldest = self._clock() - max_age
        log = self._logs.get(channel)
        kept = [e for e in log or () if e.ts >= oldest]
        missed = [e for e in kept if e.key > key]
        # Complete when what is kept starts at or before the cursor, or nothing was kept.
        complete = kept[0].key <= key if kept else not log
        if len(missed) > limit:
            missed, complete = missed[-limit:], False
        return Recovery(missed, complete)
