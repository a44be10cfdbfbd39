"""The in-process broker: ids from the local clock, delivery by a direct call."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from core.stores.broker import Broker, LogPolicy
from core.wire.entry import Entry
from core.wire.ids import IdClock, parse_id


class MemoryBroker(Broker):
    """Orders messages in this process and keeps the last ones for history."""

    def __init__(self, policy: LogPolicy | None, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._clock = clock
        self._ids = IdClock(clock)
        self._log: deque[Entry] = deque(maxlen=0)
        self.set_log(policy)

    def set_log(self, policy: LogPolicy | None) -> None:
        # Nobody recovers from a local log, so without history it keeps nothing.
        size = policy.size if policy is not None else 0
        if size != self._log.maxlen:
            self._log = deque(self._log, maxlen=size)

    def publish(self, priority: int, tail: bytes, ts: float, cls: str) -> None:
        entry = Entry.from_tail(self._ids.next(), priority, tail, ts, cls)
        self._log.append(entry)
        if self._deliver is not None:
            self._deliver(entry)

    async def recent(self, count: int, max_age: float) -> list[Entry]:
        if count <= 0:
            return []
        oldest = self._clock() - max_age
        fresh = [e for e in self._log if e.ts >= oldest]
        return fresh[-count:]

    async def since(self, cursor: str, limit: int, max_age: float) -> list[Entry]:
        key = parse_id(cursor)
        if key is None or limit <= 0:
            return []
        oldest = self._clock() - max_age
        missed = [e for e in self._log if e.key > key and e.ts >= oldest]
        return missed[-limit:]
