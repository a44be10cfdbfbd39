"""Rate limiting: a token bucket per key (a session's client_id).

The bucket holds at most `burst` tokens and refills at `rate` tokens per second; a
message spends one. `take_token` is the arithmetic, shared by the memory limiter and
mirrored by the Redis Lua script, and tested with an injected clock.
"""

from __future__ import annotations

import abc


def take_token(
    tokens: float, last: float, now: float, rate: float, burst: float
) -> tuple[float, float]:
    """Refill a bucket to `now` and try to spend one token.

    Returns (tokens left, retry_after): retry_after is 0.0 when the token was spent,
    otherwise the seconds until one will be available (nothing is spent).
    """
    elapsed = max(0.0, now - last)
    tokens = min(float(burst), tokens + elapsed * rate)
    if tokens >= 1.0:
        return tokens - 1.0, 0.0
    return tokens, (1.0 - tokens) / rate


class RateLimiter(abc.ABC):
    """Token buckets keyed by session."""

    @abc.abstractmethod
    async def take(self, key: str, rate: float, burst: int) -> float:
        """Spend a token of `key`'s bucket: 0.0 if allowed, else seconds to wait."""
