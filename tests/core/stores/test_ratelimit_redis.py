"""Token buckets in Redis: atomic across instances, per-instance while Redis is down."""

from __future__ import annotations

import asyncio

import pytest

from core.stores.ratelimit import Bucket
from core.stores.ratelimit_memory import MemoryRateLimiter
from core.stores.ratelimit_redis import RedisRateLimiter
from tests.core.stores.redis_helpers import keys, link_to


@pytest.mark.gen_test(timeout=10)
async def test_a_burst_then_refusal_with_the_wait(redis_server, key_prefix):
    link = await link_to(redis_server.url)
    limiter = RedisRateLimiter(link, keys(key_prefix), MemoryRateLimiter())
    results = [await limiter.take("s1", [Bucket("", 5, 5)]) for _ in range(6)]
    assert results[:5] == [0.0] * 5
    assert 0.15 < results[5] <= 0.2
    bucket = redis_server.client().hgetall(f"{key_prefix}ratelimit:{{s1}}")
    assert set(bucket) == {b"tokens", b"ts"}
    assert 0 < redis_server.client().pttl(f"{key_prefix}ratelimit:{{s1}}") <= 2000
    await link.close()


@pytest.mark.gen_test(timeout=10)
async def test_two_instances_cannot_both_spend_the_last_token(redis_server, key_prefix):
    one, two = await link_to(redis_server.url), await link_to(redis_server.url)
    a = RedisRateLimiter(one, keys(key_prefix), MemoryRateLimiter())
    b = RedisRateLimiter(two, keys(key_prefix), MemoryRateLimiter())
    # 40 concurrent checks of one bucket (burst 10, slow refill) from two instances.
    checks = [
        limiter.take("shared", [Bucket("", 0.01, 10)]) for limiter in (a, b) for _ in range(20)
    ]
    results = await asyncio.gather(*checks)
    assert sum(1 for r in results if r == 0.0) == 10
    await one.close()
    await two.close()


@pytest.mark.gen_test(timeout=15)
async def test_while_redis_is_down_each_instance_limits_on_its_own(own_redis, key_prefix):
    link = await link_to(own_redis.url)
    limiter = RedisRateLimiter(link, keys(key_prefix), MemoryRateLimiter())
    own_redis.kill()
    loop = asyncio.get_running_loop()
    start = loop.time()
    results = [await limiter.take("s", [Bucket("", 5, 5)]) for _ in range(6)]
    assert loop.time() - start < 3  # no blocking on a dead Redis
    assert results[:5] == [0.0] * 5 and results[5] > 0
    assert not link.up
    await link.close()


@pytest.mark.gen_test(timeout=10)
async def test_a_group_and_its_member_are_spent_together_in_one_slot(redis_server, key_prefix):
    link = await link_to(redis_server.url)
    limiter = RedisRateLimiter(link, keys(key_prefix), MemoryRateLimiter())
    address = Bucket("", 0.01, 2)
    first = await limiter.take("10.0.0.1", [address, Bucket("s1", 100, 100)])
    second = await limiter.take("10.0.0.1", [address, Bucket("s2", 100, 100)])
    third = await limiter.take("10.0.0.1", [address, Bucket("s3", 100, 100)])
    assert (first, second) == (0.0, 0.0) and third > 50  # the address is spent
    r = redis_server.client()
    # Refused: s3's bucket was not spent (its key holds a full bucket).
    assert float(r.hget(f"{key_prefix}ratelimit:{{10.0.0.1}}:s3", "tokens")) == 100.0
    names = {k.decode() for k in r.scan_iter(f"{key_prefix}ratelimit:*")}
    assert names == {
        f"{key_prefix}ratelimit:{{10.0.0.1}}",
        *(f"{key_prefix}ratelimit:{{10.0.0.1}}:s{i}" for i in (1, 2, 3)),
    }
    await link.close()
