"""The Redis broker: one order for all, exactly once, recovery after a lost subscription."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from core.stores.broker import LogPolicy, Unpaid
from core.stores.broker_redis import RedisBroker, all_done
from core.stores.ratelimit import Bucket, Spend
from core.stores.ratelimit_memory import MemoryRateLimiter
from core.stores.ratelimit_redis import RedisRateLimiter
from core.wire.entry import Entry
from tests.core.stores.redis_helpers import keys, link_to
from tests.support.blackhole import BlackholeProxy
from tests.support.waiting import until


async def broker(url: str, prefix: str, size: int = 100) -> tuple[RedisBroker, list[Entry]]:
    link = await link_to(url)
    b = RedisBroker(link, keys(prefix), LogPolicy(size, 300))
    got: list[Entry] = []
    b.attach(got.append)
    await b.start()
    await b.subscribe("broadcast")
    return b, got


@contextlib.asynccontextmanager
async def listener_and_sender(url: str, prefix: str):
    """Two brokers on one Redis, stopped however the test ends: (listener, what it
    got, sender)."""
    listener, got = await broker(url, prefix)
    sender, _ = await broker(url, prefix)
    try:
        yield listener, got, sender
    finally:
        await listener.stop()
        await sender.stop()


def tail(n: int) -> bytes:
    return f'"from":"x","class":"normal","priority":5,"content":"{n}","ts":1.0}}'.encode()


def contents(got: list[Entry]) -> list[bytes]:
    return [e.payload.split(b'"content":"')[1].split(b'"')[0] for e in got]


def has(got: list[Entry], n: int) -> bool:
    return str(n).encode() in contents(got)


@pytest.mark.gen_test(timeout=10)
async def test_every_instance_gets_every_message_once_in_one_order(redis_server, key_prefix):
    (a, got_a), (b, got_b) = (
        await broker(redis_server.url, key_prefix),
        await broker(redis_server.url, key_prefix),
    )
    for i in range(50):
        (a if i % 2 else b).publish("broadcast", 5, tail(i), 1.0, "normal")
    await until(lambda: len(got_a) >= 50 and len(got_b) >= 50)
    # A last message marks the end: once it is in, so is any extra copy of the fifty.
    a.publish("broadcast", 5, tail(50), 1.0, "normal")
    await until(lambda: has(got_a, 50) and has(got_b, 50))
    assert len(got_a) == 51 and len(got_b) == 51
    assert [e.id for e in got_a] == [e.id for e in got_b]
    assert [e.key for e in got_a] == sorted(e.key for e in got_a)
    assert got_a[0].payload.startswith(b'{"type":"message","id":"')
    r = redis_server.client()
    assert r.xlen(f"{key_prefix}history:{{broadcast}}") == 51
    await a.stop()
    await b.stop()


@pytest.mark.gen_test(timeout=10)
async def test_a_dropped_subscription_recovers_what_it_missed(redis_server, key_prefix):
    a, got = await broker(redis_server.url, key_prefix)
    other, _ = await broker(redis_server.url, key_prefix)
    a.publish("broadcast", 5, tail(0), 1.0, "normal")
    await until(lambda: len(got) == 1)
    # Redis drops subscribers (as it does a slow one past its output buffer limit).
    redis_server.client().client_kill_filter(_type="pubsub")
    for i in range(1, 6):
        other.publish("broadcast", 5, tail(i), 1.0, "normal")
    await until(lambda: has(got, 5), timeout=8)
    # Once recovered, a last message marks the end: any extra copy would be in before it.
    other.publish("broadcast", 5, tail(6), 1.0, "normal")
    await until(lambda: has(got, 6))
    assert contents(got) == [str(i).encode() for i in range(7)]  # in order, no duplicates
    await a.stop()
    await other.stop()


@pytest.mark.gen_test(timeout=10)
async def test_history_reads_recent_and_since_from_the_stream(redis_server, key_prefix):
    b, got = await broker(redis_server.url, key_prefix, size=5)
    for i in range(8):
        b.publish("broadcast", 5, tail(i), 1.0, "normal")
    await until(lambda: len(got) == 8)
    recent = await b.recent("broadcast", 3, max_age=300)
    assert [e.id for e in recent] == [e.id for e in got[-3:]]
    assert recent[0].payload == got[-3].payload  # composed the same way as the live frame
    since = await b.since("broadcast", got[4].id, 10, max_age=300)
    assert [e.id for e in since.entries] == [e.id for e in got[5:]] and since.complete
    capped = await b.since("broadcast", got[0].id, 10, max_age=300)
    assert [e.id for e in capped.entries] == [e.id for e in got[3:]]  # the stream's size
    assert not capped.complete  # 1 and 2 are no longer in the stream: it says so
    await b.stop()


@pytest.mark.gen_test(timeout=15)
async def test_while_redis_is_down_messages_are_delivered_locally(own_redis, key_prefix):
    b, got = await broker(own_redis.url, key_prefix)
    own_redis.kill()

    def noticed_down() -> bool:
        if not b.link.up:
            return True
        b.publish(
            "broadcast", 5, tail(0), 1.0, "normal"
        )  # a command, for the link to find Redis gone
        return False

    await until(noticed_down, timeout=2.5, step=0.05)
    b.publish("broadcast", 5, tail(99), 1.0, "normal")
    await until(lambda: any(b"99" in e.payload for e in got))
    local = next(e for e in got if b"99" in e.payload)
    assert local.id.startswith("L") and local.key is None
    await b.stop()


@pytest.mark.gen_test(timeout=15)
async def test_an_echo_lost_with_its_stream_is_still_delivered_here_once(redis_server, key_prefix):
    b, got = await broker(redis_server.url, key_prefix)
    r = redis_server.client()
    stream = f"{key_prefix}history:{{broadcast}}"
    # Redis drops the subscription, accepts a message nobody receives, and forgets it
    # (as when it restarts right after): no echo, nothing to recover.
    r.client_kill_filter(_type="pubsub")
    b.publish("broadcast", 5, tail(1), 1.0, "normal")
    await until(lambda: r.xlen(stream) == 1)
    r.delete(stream)
    await until(lambda: len(got) == 1)
    await until(lambda: b.subscribed)
    b.publish("broadcast", 5, tail(2), 1.0, "normal")
    # A last message marks the end: any extra copy of "1" would be in before it.
    b.publish("broadcast", 5, tail(3), 1.0, "normal")
    await until(lambda: has(got, 3))
    assert contents(got) == [b"1", b"2", b"3"]
    await b.stop()


@pytest.mark.gen_test(timeout=10)
async def test_an_instance_listens_only_to_channels_it_has_subscribers_in(redis_server, key_prefix):
    link = await link_to(redis_server.url)
    b = RedisBroker(link, keys(key_prefix), LogPolicy(10, 300))
    got: list[Entry] = []
    b.attach(got.append)
    await b.start()
    r = redis_server.client()

    def listened() -> set[str]:
        return {c.decode() for c in r.pubsub_channels(f"{key_prefix}{{*")}

    await b.subscribe("room:a")
    await b.subscribe("room:b")
    assert listened() == {f"{key_prefix}{{room:a}}", f"{key_prefix}{{room:b}}"}
    b.publish("room:c", 5, tail(1), 1.0, "normal")  # nobody here listens to room:c
    b.publish("room:a", 5, tail(2), 1.0, "normal")
    await until(lambda: has(got, 2))
    assert [e.channel for e in got] == ["room:a"]
    assert r.xlen(f"{key_prefix}history:{{room:c}}") == 1  # kept for its subscribers
    b.unsubscribe("room:a")
    await until(lambda: listened() == {f"{key_prefix}{{room:b}}"})
    await b.stop()
    await link.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_publish_held_up_past_its_deadline_takes_no_effect(own_redis, key_prefix):
    # A Redis frozen (SIGSTOP) with a publish in its socket: the publisher stops waiting
    # and delivers it to its own subscribers; when Redis wakes and runs it, the script
    # refuses (too late), so nobody else gets it and the stream does not keep it.
    b, got = await broker(own_redis.url, key_prefix)
    other, heard = await broker(own_redis.url, key_prefix)
    r = own_redis.client()
    stream = f"{key_prefix}history:{{broadcast}}"
    b.publish("broadcast", 5, tail(1), 1.0, "normal")
    await until(lambda: has(heard, 1) and has(got, 1))
    own_redis.pause()
    try:
        late = b.publish("broadcast", 5, tail(2), 1.0, "normal")
        await until(late.done, timeout=5)
        assert late.result().startswith("L")
    finally:
        own_redis.resume()
    await until(lambda: b.link.up and b.subscribed and other.link.up, timeout=10)
    b.publish("broadcast", 5, tail(3), 1.0, "normal")
    await until(lambda: has(heard, 3) and has(got, 3), timeout=10)
    assert contents(got) == [b"1", b"2", b"3"]
    assert contents(heard) == [b"1", b"3"]
    kept = [fields[b"t"] for _, fields in r.xrange(stream)]
    assert [t for t in kept if b'"content":"2"' in t] == []
    await b.stop()
    await other.stop()


@pytest.mark.gen_test(timeout=30)
async def test_a_publish_whose_reply_was_lost_is_delivered_here_once(redis_server, key_prefix):
    # Redis carries out the publish but its reply never arrives: the instance delivers
    # the message to its own subscribers (outage rule); when it reconnects, the message
    # is in the stream with an id, and the recovery must not deliver it again.
    proxy = await BlackholeProxy(redis_server.port).start()
    try:
        b, got = await broker(f"redis://127.0.0.1:{proxy.port}/0", key_prefix)
        b.publish("broadcast", 5, tail(1), 1.0, "normal")
        await until(lambda: has(got, 1))
        proxy.swallow_replies()
        lost = b.publish("broadcast", 5, tail(2), 1.0, "normal")
        stream = f"{key_prefix}history:{{broadcast}}"
        r = redis_server.client()
        await until(lambda: r.xlen(stream) == 2)  # carried out in Redis
        await until(lost.done, timeout=5)
        assert lost.result().startswith("L")
        await proxy.cut()
        await until(lambda: b.link.up and b.subscribed, timeout=10)
        b.publish("broadcast", 5, tail(3), 1.0, "normal")
        await until(lambda: has(got, 3), timeout=10)
        assert contents(got) == [b"1", b"2", b"3"]
        await b.stop()
    finally:
        await proxy.close()


@pytest.mark.gen_test(timeout=10)
async def test_a_publish_with_a_spend_is_refused_when_its_bucket_is_empty(redis_server, key_prefix):
    b, got = await broker(redis_server.url, key_prefix)
    spend = Spend("10.0.0.1", (Bucket("", rate=0.01, burst=2),))
    limiter = RedisRateLimiter(b.link, keys(key_prefix), MemoryRateLimiter())
    assert b.takes_charges(limiter)
    # Another store's buckets (a limiter of its own, in memory) are not the broker's.
    assert not b.takes_charges(MemoryRateLimiter())
    ids = [await b.publish("broadcast", 5, tail(i), 1.0, "normal", spend=spend) for i in range(2)]
    with pytest.raises(Unpaid) as refused:
        await b.publish("broadcast", 5, tail(2), 1.0, "normal", spend=spend)
    assert refused.value.retry_after > 1  # a token every 100 s
    await until(lambda: len(got) == 2)
    assert [e.id for e in got] == ids
    assert redis_server.client().xlen(f"{key_prefix}history:{{broadcast}}") == 2
    # The same buckets as the rate limiter's own calls: it finds them empty too.
    assert await limiter.take(spend.group, spend.buckets) > 1
    await b.stop()


@pytest.mark.gen_test(timeout=10)
async def test_channels_joined_in_one_loop_turn_share_one_subscribe(redis_server, key_prefix):
    # A burst of clients arriving, each with its personal channel: one write, one command.
    b, _ = await broker(redis_server.url, key_prefix)
    r = redis_server.client()

    def calls(command: str) -> int:
        stats = r.info("commandstats").get(f"cmdstat_{command}", {})
        return int(stats.get("calls", 0))

    def listened() -> int:
        return len(r.pubsub_channels(f"{key_prefix}{{user:*"))

    subscribes = calls("subscribe")
    await asyncio.gather(*(b.subscribe(f"user:u{i}") for i in range(100)))
    assert listened() == 100
    assert calls("subscribe") - subscribes == 1
    unsubscribes = calls("unsubscribe")
    for i in range(100):
        b.unsubscribe(f"user:u{i}")
    b.want("user:u7")  # left and joined again in the same turn: it stays subscribed
    await until(lambda: listened() == 1)
    assert calls("unsubscribe") - unsubscribes == 1
    assert r.pubsub_channels(f"{key_prefix}{{user:*") == [f"{key_prefix}{{user:u7}}".encode()]
    await b.stop()


@pytest.mark.gen_test(timeout=10)
async def test_once_subscribe_all_returns_every_channel_gets_what_is_published(
    redis_server, key_prefix
):
    async with listener_and_sender(redis_server.url, key_prefix) as (listener, got, sender):
        names = [f"room:r{i}" for i in range(50)]
        await listener.subscribe_all(names)
        for i, name in enumerate(names):
            sender.publish(name, 5, tail(i), 1.0, "normal")
        await until(lambda: len(got) == 50)
        assert sorted(e.channel for e in got) == sorted(names)


@pytest.mark.gen_test(timeout=10)
async def test_many_connections_joining_one_channel_wait_for_its_one_reply(
    redis_server, key_prefix, caplog
):
    async with listener_and_sender(redis_server.url, key_prefix) as (listener, got, sender):
        # A reconnect storm: 500 clients join the same room in one loop turn.
        await asyncio.gather(*(listener.subscribe_all(["room:storm"]) for _ in range(500)))
        sender.publish("room:storm", 5, tail(1), 1.0, "normal")
        await until(lambda: len(got) == 1)
    # Each returned on the reply, none on the timeout (which would have said so).
    assert "taking long" not in caplog.text


class CountingFuture(asyncio.Future):
    """A future that counts the callbacks taken off it."""

    removals = 0

    def remove_done_callback(self, fn):
        CountingFuture.removals += 1
        return super().remove_done_callback(fn)


@pytest.mark.gen_test(timeout=10)
async def test_waiting_on_a_shared_reply_takes_no_callback_off_it():
    shared = CountingFuture()
    CountingFuture.removals = 0
    waits = [asyncio.ensure_future(all_done([shared], 5.0)) for _ in range(1000)]
    await asyncio.sleep(0)
    shared.set_result(None)
    assert await asyncio.gather(*waits) == [True] * 1000
    # asyncio.wait would take its callback off each time: O(waiters) each, O(n^2) in all.
    assert CountingFuture.removals == 0


@pytest.mark.gen_test(timeout=10)
async def test_all_done_counts_a_cancelled_future_and_cancels_none_when_late():
    loop = asyncio.get_running_loop()
    cancelled, done, pending = loop.create_future(), loop.create_future(), loop.create_future()
    cancelled.cancel()
    done.set_result(None)
    assert await all_done([cancelled, done], 5.0) is True
    assert await all_done([done, pending], 0.05) is False
    assert not pending.done()  # others may still be waiting for it
    pending.set_result(None)
