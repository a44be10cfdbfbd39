"""Log lines about failures that can repeat, at most once per kind per window.

A Redis that flaps, or refuses every write, or a stream of bad data would otherwise
write a line (or a traceback) per event. The first line of a kind goes out at once;
repeats within `every` seconds are counted, and the next line of that kind says how
many were held back.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class LogLimit:
    """Which log lines of which kind may be written now."""

    def __init__(self, every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, kind: str) -> str | None:
        """None to hold the line back; else a suffix for it ("" or " (and 12 more like
        it in the last 10s)")."""
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.every:
            self._held[kind] = self._held.get(kind, 0) + 1
            return None
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        return f" (and {held} more like it in the last {self.every:g}s)" if held else ""
