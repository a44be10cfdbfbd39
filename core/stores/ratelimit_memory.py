"""Token buckets in this process's memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from core.stores.ratelimit import Bucket, RateLimiter, take_tokens

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

    def take_now(self, group: str, buckets: Sequence[Bucket]) -> float:
        now = self._clock()
        keys = [f"{group}:{b.name}" for b in buckets]
        held = self._buckets
        levels = [
            held.get(k, (float(b.burst), now, now))[:2] for k, b in zip(keys, buckets, strict=True)
        ]
        left, retry_after = take_tokens(levels, now, buckets)
        for key, bucket, tokens in zip(keys, buckets, left, strict=True):
            held[key] = (tokens, now, now + (bucket.burst - tokens) / bucket.rate)
        if len(held) >= self._sweep_at:
            self._sweep(now)
        return retry_after

    async def take(self, group: str, buckets: Sequence[Bucket]) -> float:
        return self.take_now(group, buckets)

    def _sweep(self, now: float) -> None:
        self._buckets = {k: b for k, b in self._buckets.items() if b[2] > now}
        self._sweep_at = max(SWEEP_AT, 2 * len(self._buckets))
