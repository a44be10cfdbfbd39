"""Message ids: ``<milliseconds>-<sequence>``, the shape of a Redis stream id.

Ids from either backend sort the same way, so a cursor ("the last message this client
saw") works everywhere. Ids that are not of this shape (``L...`` for messages delivered
locally while Redis is down) take no part in ordering.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def parse_id(message_id: str) -> tuple[int, int] | None:
    """The sortable key of a broker id, or None for ids that are not ordered."""
    ms, sep, seq = message_id.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        return None
    return int(ms), int(seq)


class IdClock:
    """Hands out strictly increasing ``ms-seq`` ids, even if the wall clock steps back."""

    __slots__ = ("_clock", "_ms", "_seq")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._ms = 0
        self._seq = 0

    def next(self) -> str:
        ms = int(self._clock() * 1000)
        if ms > self._ms:
            self._ms, self._seq = ms, 0
        else:
            self._seq += 1
        return f"{self._ms}-{self._seq}"
