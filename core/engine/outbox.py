"""A bounded outbound queue ordered by (priority, arrival).

Frames wait here only while a client's socket is behind. `pop()` takes the oldest frame
of the highest priority, so a critical message overtakes queued status messages while
frames of one priority keep their order. When the queue is full, the oldest frame of the
lowest priority makes room (or the new frame is dropped if it is lower still).

It is a bucket queue (one FIFO per priority level) rather than a heap: the levels are the
few configured message classes, push and pop are O(1), and a full queue must evict from
the *bottom*, which a heap cannot do without a scan.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class OutboxPolicy:
    """How every connection's outbox behaves; shared, so a reload reaches all of them."""

    limit: int = 1000  # frames; over it the lowest priority is dropped
    ordered: bool = True  # False: one FIFO, priorities ignored
    max_bytes: int = 1 << 20  # unsent bytes (queue + transport); over it: slow consumer


class Outbox(Generic[T]):
    """Bounded (priority, arrival)-ordered queue of frames for one connection; it keeps
    the total size of what it holds (`size`), by `sizeof` (len for frames)."""

    __slots__ = ("_buckets", "_len", "_levels", "_sizeof", "policy", "size")

    def __init__(self, policy: OutboxPolicy, sizeof: Callable[[T], int] = len) -> None:  # type: ignore[assignment]
        self.policy = policy
        self._levels: list[int] = []  # priorities with a bucket, ascending
        self._buckets: dict[int, deque[T]] = {}
        self._len = 0
        self._sizeof = sizeof
        self.size = 0

    def __len__(self) -> int:
        return self._len

    def push(self, priority: int, item: T) -> int:
        """Queue `item`; return how many items were dropped to stay within the limit."""
        if not self.policy.ordered:
            priority = 0
        limit = self.policy.limit
        dropped = 0
        while self._len > limit:
            # The limit was lowered by a reload: shed the excess from the bottom.
            self._drop_lowest()
            dropped += 1
        if self._len >= limit:
            lowest = self._lowest_level()
            if lowest is None or priority < lowest:
                return dropped + 1  # the new item is the lowest of all: it is the one dropped
            self._drop_lowest()
            dropped += 1
        bucket = self._buckets.get(priority)
        if bucket is None:
            bucket = self._buckets[priority] = deque()
            bisect.insort(self._levels, priority)
        bucket.append(item)
        self._len += 1
        self.size += self._sizeof(item)
        return dropped

    def pop(self) -> T:
        """Remove and return the oldest item of the highest priority."""
        for level in reversed(self._levels):
            bucket = self._buckets[level]
            if bucket:
                self._len -= 1
                item = bucket.popleft()
                self.size -= self._sizeof(item)
                return item
        raise IndexError("pop from an empty outbox")

    def peek_priority(self) -> int | None:
        for level in reversed(self._levels):
            if self._buckets[level]:
                return level
        return None

    def clear(self) -> int:
        n = self._len
        self._buckets.clear()
        self._levels.clear()
        self._len = 0
        self.size = 0
        return n

    def _drop_lowest(self) -> None:
        """Drop the oldest item of the lowest priority."""
        item = self._buckets[self._lowest_level()].popleft()
        self._len -= 1
        self.size -= self._sizeof(item)

    def _lowest_level(self) -> int | None:
        for level in self._levels:
            if self._buckets[level]:
                return level
        return None
