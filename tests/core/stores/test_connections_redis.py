"""Per-IP connection counts summed over live instances, in Redis."""

from __future__ import annotations

import asyncio

import pytest

from core.stores.connections_redis import RedisConnectionCounter
from tests.core.stores.redis_helpers import keys, link_to
from tests.support.redis_counts import address_counts
from tests.support.timing import scaled
from tests.support.waiting import until, until_async


async def counter(url: str, prefix: str, instance: str, liveness: float = 30.0):
    link = await link_to(url)
    c = RedisConnectionCounter(link, keys(prefix), instance, liveness)
    await c.start()
    return c


@pytest.mark.gen_test(timeout=10)
async def test_the_limit_holds_across_instances_and_slots_come_back(redis_server, key_prefix):
    a = await counter(redis_server.url, key_prefix, "a")
    b = await counter(redis_server.url, key_prefix, "b")
    assert await a.acquire("1.2.3.4", 3)
    assert await a.acquire("1.2.3.4", 3)
    assert await b.acquire("1.2.3.4", 3)
    assert not await b.acquire("1.2.3.4", 3)
    assert not await a.acquire("1.2.3.4", 3)
    assert await a.acquire("5.6.7.8", 3)  # another IP is not affected
    b.release("1.2.3.4")
    assert await a.acquire("1.2.3.4", 3)
    r = redis_server.client()
    assert address_counts(r, key_prefix, "1.2.3.4") == {"a": 3}
    assert address_counts(r, key_prefix, "5.6.7.8") == {"a": 1}
    assert r.zrange(f"{key_prefix}instances", 0, -1) == [b"a", b"b"]
    await a.close()
    await b.close()
    assert r.exists(f"{key_prefix}connections:{{1.2.3.4}}") == 0
    assert r.zrange(f"{key_prefix}instances", 0, -1) == []


@pytest.mark.gen_test(timeout=10)
async def test_a_release_while_an_acquire_is_in_flight_is_counted_right(redis_server, key_prefix):
    a = await counter(redis_server.url, key_prefix, "a")
    assert await a.acquire("4.4.4.4", 5)
    pending = asyncio.ensure_future(a.acquire("4.4.4.4", 5))
    await asyncio.sleep(0)  # the acquire is queued, its reply not back
    a.release("4.4.4.4")
    assert await pending
    r = redis_server.client()
    await until(lambda: address_counts(r, key_prefix, "4.4.4.4") == {"a": 1})
    await a.close()


@pytest.mark.gen_test(timeout=10)
async def test_concurrent_acquires_from_two_instances_never_exceed_the_limit(
    redis_server, key_prefix
):
    a = await counter(redis_server.url, key_prefix, "a")
    b = await counter(redis_server.url, key_prefix, "b")
    results = await asyncio.gather(*[c.acquire("9.9.9.9", 5) for c in (a, b) for _ in range(10)])
    assert sum(results) == 5
    await a.close()
    await b.close()


@pytest.mark.gen_test(timeout=15)
async def test_an_instance_that_dies_without_cleaning_up_stops_counting(redis_server, key_prefix):
    a = await counter(redis_server.url, key_prefix, "a", liveness=1.0)
    dead = await counter(redis_server.url, key_prefix, "dead", liveness=1.0)
    assert await dead.acquire("1.1.1.1", 2)
    assert await dead.acquire("1.1.1.1", 2)
    # "dead" stops refreshing, as a SIGKILLed process would (no close, no release).
    dead._alive.cancel()
    await dead.link.close()
    assert not await a.acquire("1.1.1.1", 2)
    loop = asyncio.get_running_loop()
    died = loop.time()
    # Ask until a slot is given (a refused acquire takes nothing): within the liveness.
    assert await until_async(lambda: a.acquire("1.1.1.1", 2), timeout=3, step=0.05)
    assert loop.time() - died < scaled(1.5)
    assert await a.acquire("1.1.1.1", 2)
    assert not await a.acquire("1.1.1.1", 2)
    await a.close()


@pytest.mark.gen_test(timeout=20)
async def test_counts_fall_back_to_the_instance_and_are_written_back(own_redis, key_prefix):
    a = await counter(own_redis.url, key_prefix, "a")
    assert await a.acquire("2.2.2.2", 3)
    own_redis.kill()
    assert await a.acquire("2.2.2.2", 3)  # local counting while Redis is down
    assert await a.acquire("2.2.2.2", 3)
    assert not await a.acquire("2.2.2.2", 3)
    assert not a.link.up
    own_redis.start()  # a new, empty Redis on the same port
    await until(lambda: a.link.up, timeout=10)
    r = own_redis.client()
    await until(lambda: address_counts(r, key_prefix, "2.2.2.2") == {"a": 3})
    await a.close()
