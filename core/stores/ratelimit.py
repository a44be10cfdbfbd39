"""Rate limiting: token buckets, spent together.

A bucket holds at most `burst` tokens and refills at `rate` tokens per second; a message
spends one token from each of its buckets (the session's, and its address's), or from
none if any is empty. `take_token` is the arithmetic for one bucket, `take_tokens` for
several; the memory limiter uses them and the Redis Lua script mirrors them, and both
are tested with an injected clock.

Buckets come in groups: every bucket of a `take` shares its group (the client's address,
or its session), which in Redis is the keys' hash tag, so one atomic script reaches them
all, on a cluster too.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Bucket:
    """One token bucket of a group: `name` ("" for the group's own), rate, burst."""

    name: str
    rate: float
    burst: int


@dataclass(frozen=True)
class Spend:
    """One token from every bucket of `group` named in `buckets`, or from none: a take
    to be made (a message's rate limit, paid when it is published)."""

    group: str
    buckets: tuple[Bucket, ...]


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


def take_tokens(
    levels: Sequence[tuple[float, float]], now: float, buckets: Sequence[Bucket]
) -> tuple[list[float], float]:
    """Refill each bucket (its (tokens, last) in `levels`) to `now`; spend one token from
    every one if each has one, else from none.

    Returns (tokens left per bucket, retry_after): retry_after is 0.0 when the tokens
    were spent, otherwise the seconds until every bucket has one.
    """
    refilled = []
    wait = 0.0
    for (held, last), bucket in zip(levels, buckets, strict=True):
        tokens = min(float(bucket.burst), held + max(0.0, now - last) * bucket.rate)
        if tokens < 1.0:
            wait = max(wait, (1.0 - tokens) / bucket.rate)
        refilled.append(tokens)
    if wait > 0:
        return refilled, wait
    return [tokens - 1.0 for tokens in refilled], 0.0


class RateLimiter(abc.ABC):
    """Token buckets in groups."""

    @abc.abstractmethod
    async def take(self, group: str, buckets: Sequence[Bucket]) -> float:
        """Spend a token from every bucket of `group` named in `buckets`, or from none:
        0.0 if allowed, else the seconds until all of them have one."""
