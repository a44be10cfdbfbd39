"""Token buckets in Redis: one atomic Lua call per check, shared by all instances."""

from __future__ import annotations

from collections.abc import Sequence

from core.stores.keys import Keys
from core.stores.ratelimit import Bucket, RateLimiter
from core.stores.ratelimit_memory import MemoryRateLimiter
from core.stores.redis_link import LinkDown, RedisLink


class RedisRateLimiter(RateLimiter):
    """Buckets shared across instances; per-instance buckets while Redis is down."""

    def __init__(self, link: RedisLink, keys: Keys, fallback: MemoryRateLimiter) -> None:
        self.link = link
        self.keys = keys
        self.fallback = fallback

    async def take(self, group: str, buckets: Sequence[Bucket]) -> float:
        if self.link.up:
            args: list[float | int] = []
            for bucket in buckets:
                args += [bucket.rate, bucket.burst]
            try:
                reply = await self.link.script(
                    "ratelimit", [self.keys.ratelimit(group, b.name) for b in buckets], args
                )
                return float(reply)
            except LinkDown:
                pass
        return self.fallback.take_now(group, buckets)
