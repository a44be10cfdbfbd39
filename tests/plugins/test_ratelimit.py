"""Rate limiting: a token bucket per session; over-limit messages get `rate_limited`."""

from __future__ import annotations

import asyncio

import pytest

from core.stores.keys import Keys
from core.stores.ratelimit import Bucket, take_token, take_tokens
from core.stores.ratelimit_memory import MemoryRateLimiter
from tests.conftest import redis_changes
from tests.support import config as test_config
from tests.support.waiting import until
from tests.support.ws_client import WsClient

FIVE_PER_SECOND = {
    "plugins": {"ratelimit": {"max_messages_per_second": 5, "burst": 5}},
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_allows_a_burst_then_refuses_with_the_wait():
    tokens, last = 5.0, 0.0
    for _ in range(5):
        tokens, retry = take_token(tokens, last, 0.0, rate=5, burst=5)
        assert retry == 0.0
    tokens, retry = take_token(tokens, last, 0.0, rate=5, burst=5)
    assert retry == pytest.approx(0.2)  # one token every 1/5 s
    assert tokens == pytest.approx(0.0)


def test_the_bucket_refills_at_the_rate_up_to_the_burst():
    tokens, retry = take_token(0.0, 0.0, 0.1, rate=5, burst=5)
    assert retry == pytest.approx(0.1)  # half a token after 0.1 s: wait the other half
    tokens, retry = take_token(0.0, 0.0, 100.0, rate=5, burst=5)
    assert retry == 0.0 and tokens == pytest.approx(4.0)  # capped at the burst, minus one


def test_a_clock_going_backwards_does_not_mint_tokens():
    tokens, retry = take_token(0.0, 10.0, 5.0, rate=5, burst=5)
    assert retry > 0 and tokens == 0.0


def test_memory_limiter_keeps_one_bucket_per_key_with_an_injected_clock():
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)
    assert [limiter.take_now("a", [Bucket("", 2, 2)]) for _ in range(3)] == [
        0.0,
        0.0,
        pytest.approx(0.5),
    ]
    assert limiter.take_now("b", [Bucket("", 2, 2)]) == 0.0  # another session is not affected
    clock.now += 0.5
    assert limiter.take_now("a", [Bucket("", 2, 2)]) == 0.0


def test_tokens_are_spent_from_every_bucket_or_from_none():
    buckets = [Bucket("", rate=1, burst=2), Bucket("s", rate=10, burst=10)]
    left, retry = take_tokens([(2.0, 0.0), (10.0, 0.0)], 0.0, buckets)
    assert retry == 0.0 and left == [1.0, 9.0]
    left, retry = take_tokens([(0.0, 0.0), (9.0, 0.0)], 0.5, buckets)
    assert retry == pytest.approx(0.5) and left == [0.5, 10.0]  # refilled, nothing spent


def test_memory_limiter_shares_a_group_bucket_between_its_members():
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)
    address = Bucket("", 1, 3)  # the address: 3 at once for all its sessions together

    def message(session: str) -> float:
        return limiter.take_now("10.0.0.1", [address, Bucket(session, 100, 100)])

    assert [message("s1"), message("s2"), message("s3")] == [0.0, 0.0, 0.0]
    assert message("s4") == pytest.approx(1.0)  # a new session buys nothing
    assert limiter.take_now("10.0.0.2", [address, Bucket("s5", 100, 100)]) == 0.0


def test_memory_limiter_forgets_buckets_that_refilled():
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)
    for i in range(5000):
        limiter.take_now(f"k{i}", [Bucket("", 10, 10)])
    clock.now += 10
    limiter.take_now("trigger", [Bucket("", 10, 10)])
    for i in range(5000):  # the sweep runs when the table is large
        limiter.take_now(f"again{i}", [Bucket("", 10, 10)])
    assert len(limiter) < 6000


@pytest.mark.gen_test(timeout=10)
async def test_a_burst_over_the_limit_is_dropped_with_retry_after_and_the_connection_stays(
    servers,
):
    server = await servers(FIVE_PER_SECOND)
    sender = await WsClient.connect(server.port)
    watcher = await WsClient.connect(server.port)
    for i in range(8):
        await sender.send("normal", f"m{i}")
    errors, delivered = [], []
    while len(errors) + len(delivered) < 8:
        frame = await sender.recv()
        if frame["type"] == "error":
            errors.append(frame)
        elif frame["type"] == "message":
            delivered.append(frame["content"])
    assert delivered == ["m0", "m1", "m2", "m3", "m4"]
    assert [e["code"] for e in errors] == ["rate_limited"] * 3
    assert all(0 < e["retry_after"] <= 0.2 + 1e-6 for e in errors)
    assert [m["content"] for m in await watcher.messages(5)] == delivered
    await watcher.nothing_for(0.2)
    # After waiting retry_after, the next message goes through on the same connection.
    await asyncio.sleep(errors[-1]["retry_after"] + 0.05)  # the point: wait as told
    await sender.send("normal", "later")
    assert (await watcher.recv_type("message"))["content"] == "later"


@pytest.mark.gen_test(timeout=10)
async def test_reconnecting_with_the_session_does_not_refill_the_bucket(servers):
    server = await servers(FIVE_PER_SECOND)
    first = await WsClient.connect(server.port)
    for i in range(5):
        await first.send("normal", f"m{i}")
    await first.messages(5)
    first.close()
    again = await WsClient.connect(server.port, session=first.session)
    assert again.welcome["resumed"] is True
    await again.send("normal", "one more")
    assert (await again.recv_type("error"))["code"] == "rate_limited"


@pytest.mark.gen_test(timeout=10)
async def test_without_the_plugin_nothing_is_rate_limited(servers):
    server = await servers({"plugins": {"ratelimit": {"enabled": False}}})
    client = await WsClient.connect(server.port)
    for i in range(50):
        await client.send("normal", str(i))
    assert len(await client.messages(50)) == 50


def evalsha_calls(client) -> int:
    return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


@pytest.mark.gen_test(timeout=15)
async def test_an_accepted_message_costs_one_redis_call_on_a_single_redis(
    servers, redis_server, key_prefix
):
    # The rate limit is paid inside the publish script: one EVALSHA per message, not two.
    server = await servers(
        test_config.merge(
            redis_changes(redis_server.url, key_prefix),
            {"plugins": {"ratelimit": {"max_messages_per_second": 1000, "burst": 1000}}},
        )
    )
    client = await WsClient.connect(server.port)
    r = redis_server.client()
    before = evalsha_calls(r)
    for i in range(100):
        await client.send("normal", str(i))
    assert len(await client.messages(100)) == 100
    # A few periodic scripts (instance liveness, session counts) may run meanwhile.
    assert evalsha_calls(r) - before <= 110
    buckets = {k.decode() for k in r.scan_iter(f"{key_prefix}ratelimit:*")}
    assert buckets  # the tokens were spent, in the limiter's own keys


@pytest.mark.gen_test(timeout=15)
async def test_on_a_single_redis_a_refused_message_is_not_published_nor_counted(
    servers, redis_server, key_prefix
):
    server = await servers(
        test_config.merge(redis_changes(redis_server.url, key_prefix), FIVE_PER_SECOND)
    )
    sender = await WsClient.connect(server.port)
    for i in range(8):
        await sender.send("normal", f"m{i}")
    frames_ = [await sender.recv() for _ in range(8)]
    assert [f["content"] for f in frames_ if f["type"] == "message"] == [f"m{i}" for i in range(5)]
    assert [f["code"] for f in frames_ if f["type"] == "error"] == ["rate_limited"] * 3
    r = redis_server.client()
    assert r.xlen(f"{key_prefix}history:{{broadcast}}") == 5
    # The session counts what was published, not what was refused.
    sender.close()
    session = Keys(key_prefix).session(sender.session)
    await until(lambda: r.hget(session, "messageCount") == b"5")
