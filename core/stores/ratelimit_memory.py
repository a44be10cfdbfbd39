"""Token buckets in this process's memory."""

from __future__ import annotations

import time
from collections.abc import Callable

from core.stores.ratelimit import RateLimiter, take_token

# A full bucket is the same as none: buckets are swept once the table holds this many,
# or twice as many as the last sweep kept, so it stays within twice the live set.
SWEEP_AT = 256


class MemoryRateLimiter(RateLimiter):
    """Per-key token buckets; buckets that have refilled completely are forgotten."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float, float]] = {}  # tokens, last, full_at
        self._sweep_at = SWEEP_AT

    def __len__(self) -> int:
        return len(self._buckets)

    def take_now(self, key: str, rate: float, burst: int) -> float:
        now = self._clock()
        tokens, last, _ = self._buckets.get(key, (float(burst), now, now))
        tokens, retry_after = take_token(tokens, last, now, rate, burst)
        self._buckets[key] = (tokens, now, now + (burst - tokens) / rate)
        if len(self._buckets) >= self._sweep_at:
            self._sweep(now)
        return retry_after

    async def take(self, key: str, rate: float, burst: int) -> float:
        return self.take_now(key, rate, burst)

    def _sweep(self, now: float) -> None:
        self._buckets = {k: b for k, b in self._buckets.items() if b[2] > now}
        self._sweep_at = max(SWEEP_AT, 2 * len(self._buckets))
