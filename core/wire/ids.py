"""Message ids: ``<milliseconds>-<sequence>``, the shape of a Redis stream id.

Ids from either backend sort the same way, so a cursor ("the last message this client
saw") works everywhere. Ids that are not of this shape (``L...`` for messages delivered
locally while Redis is down) take no part in ordering.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Each part of an id is below this: Redis stream ids are two 64-bit numbers, and a
# cursor must still have a successor for an exclusive range.
PART_LIMIT = 2**63


def parse_id(message_id: str) -> tuple[int, int] | None:
    """The sortable key of a broker id, or None for ids that are not ordered (or not
    well formed: anything but two ASCII numbers below PART_LIMIT)."""
    ms, sep, seq = message_id.partition("-")
    if not sep or not _is_part(ms) or not _is_part(seq):
        return None
    return int(ms), int(seq)


def _is_part(text: str) -> bool:
    # isdigit() alone accepts "²" and other digits int() refuses.
    return 0 < len(text) <= 19 and text.isascii() and text.isdigit() and int(text) < PART_LIMIT


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
