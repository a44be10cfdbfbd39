"""Channels across instances sharing a real redis-server: routing, order, presence,
resume on the other instance, Redis subscriptions only where there are subscribers, and
the members of a SIGKILLed instance leaving."""

from __future__ import annotations

import signal
import time

import pytest

from tests.channels.test_subscribing import CHANNELS
from tests.conftest import redis_changes
from tests.support.config import merge
from tests.support.waiting import connections_settle, until
from tests.support.ws_client import WsClient


def shared(redis_server, key_prefix, changes: dict | None = None) -> dict:
    return merge(merge(redis_changes(redis_server.url, key_prefix), CHANNELS), changes or {})


@pytest.mark.gen_test(timeout=20)
async def test_a_rooms_messages_reach_its_subscribers_on_every_instance_once_in_order(
    servers, redis_server, key_prefix
):
    config = shared(redis_server, key_prefix)
    left = await servers(config, instance_id="left")
    right = await servers(config, instance_id="right")
    alice = await WsClient.connect(left.port)
    bob = await WsClient.connect(right.port)
    carol = await WsClient.connect(right.port)  # not in the room
    await alice.subscribe("room:lobby")
    await bob.subscribe("room:lobby")
    for i in range(20):
        await alice.publish("room:lobby", f"m{i}")
    got = [f["content"] for f in await bob.messages(20)]
    assert got == [f"m{i}" for i in range(20)]
    assert [f["content"] for f in await alice.messages(20)] == got
    await bob.nothing_for(0.3)  # once
    await carol.nothing_for(0.1)


@pytest.mark.gen_test(timeout=20)
async def test_an_instance_listens_in_redis_only_to_channels_with_subscribers_there(
    servers, redis_server, key_prefix
):
    config = shared(redis_server, key_prefix)
    left = await servers(config, instance_id="left")
    right = await servers(config, instance_id="right")
    a = await WsClient.connect(left.port)
    b = await WsClient.connect(right.port)
    await a.subscribe("room:1")
    await b.subscribe("room:2")
    assert "room:1" in left.hub.broker.subscriptions()
    assert "room:2" not in left.hub.broker.subscriptions()
    assert "room:1" not in right.hub.broker.subscriptions()
    r = redis_server.client()
    listed = {c.decode() for c in r.pubsub_channels(f"{key_prefix}{{room:*")}
    assert listed == {f"{key_prefix}{{room:1}}", f"{key_prefix}{{room:2}}"}
    await a.send_json({"type": "unsubscribe", "channel": "room:1"})
    await a.answer("room:1", "unsubscribed")
    await until(lambda: not r.pubsub_numsub(f"{key_prefix}{{room:1}}")[0][1])
    assert "room:1" not in left.hub.broker.subscriptions()


@pytest.mark.gen_test(timeout=20)
async def test_presence_is_cluster_wide(servers, redis_server, key_prefix):
    config = shared(redis_server, key_prefix)
    left = await servers(config, instance_id="left")
    right = await servers(config, instance_id="right")
    alice = await WsClient.connect(left.port)
    await alice.subscribe("room:lobby")
    bob = await WsClient.connect(right.port)
    subscribed = await bob.subscribe("room:lobby")
    assert {c["client_id"] for c in subscribed["presence"]} == {alice.client_id, bob.client_id}
    join = await alice.recv_type("join")
    assert join["client_id"] == bob.client_id
    bob.close()
    leave = await alice.recv_type("leave")
    assert leave["client_id"] == bob.client_id
    await alice.send_json({"type": "presence", "channel": "room:lobby"})
    listed = await alice.answer("room:lobby", "presence")
    assert [c["client_id"] for c in listed["clients"]] == [alice.client_id]


@pytest.mark.gen_test(timeout=20)
async def test_a_session_resumed_on_the_other_instance_is_back_in_its_rooms(
    servers, redis_server, key_prefix
):
    config = shared(redis_server, key_prefix)
    left = await servers(config, instance_id="left")
    right = await servers(config, instance_id="right")
    sender = await WsClient.connect(left.port)
    await sender.subscribe("room:a")
    reader = await WsClient.connect(left.port)
    await reader.subscribe("room:a")
    await sender.publish("room:a", "seen")
    await reader.recv_type("message")
    reader.close()
    await connections_settle(left, 1)
    await sender.publish("room:a", "missed")
    back = await WsClient.connect(right.port, session=reader.session)
    assert back.welcome["resumed"] is True and "room:a" in back.welcome["channels"]
    missed = await back.recv_type("message")
    assert (missed["content"], missed["history"]) == ("missed", True)
    await sender.publish("room:a", "live")
    assert (await back.recv_type("message"))["content"] == "live"
    await back.nothing_for(0.2)


@pytest.mark.gen_test(timeout=40)
async def test_the_members_of_a_killed_instance_leave_within_instance_ttl(
    processes, redis_server, key_prefix
):
    config = shared(redis_server, key_prefix, {"store": {"instance_ttl": 2}})
    doomed = processes(config, "doomed")
    survivor = processes(config, "survivor")
    ghost = await WsClient.connect(doomed.port)
    await ghost.subscribe("room:lobby")
    watcher = await WsClient.connect(survivor.port)
    subscribed = await watcher.subscribe("room:lobby")
    assert ghost.client_id in {c["client_id"] for c in subscribed["presence"]}
    doomed.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    leave = await watcher.recv_type("leave", timeout=6)
    took = time.monotonic() - killed
    assert leave["client_id"] == ghost.client_id
    print(f"a SIGKILLed instance's member left {took:.1f} s after (instance_ttl 2 s)")
    assert took < 2 + 0.5  # within the ttl, and a little slack for the machine
    await watcher.send_json({"type": "presence", "channel": "room:lobby"})
    listed = await watcher.answer("room:lobby", "presence")
    assert [c["client_id"] for c in listed["clients"]] == [watcher.client_id]


def commands(r) -> dict[str, int]:
    """Calls per command so far (commands run by scripts included)."""
    return {
        name.removeprefix("cmdstat_"): stats["calls"]
        for name, stats in r.info("commandstats").items()
    }


def spent(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


@pytest.mark.gen_test(timeout=30)
async def test_a_join_or_leave_costs_the_same_redis_work_in_a_room_of_1000(
    servers, own_redis, key_prefix
):
    from core.stores.presence import Member

    server = await servers(shared(own_redis, key_prefix), instance_id="solo")
    r = own_redis.client()
    costs = {}
    for size in (10, 1000):
        room = f"room:big{size}"
        others = [Member(f"far/{i}", f"c{i}", f"u{i}", "far") for i in range(size)]
        for member in others:  # present on another instance, for the next minute
            await server.stores.presence.add(room, member, ttl=60)
        watcher = await WsClient.connect(server.port)
        await watcher.subscribe(room)
        client = await WsClient.connect(server.port)
        before = commands(r)
        subscribed = await client.subscribe(room)
        await watcher.recv_type("join")
        joined = commands(r)
        await client.send_json({"type": "unsubscribe", "channel": room})
        await watcher.recv_type("leave")
        left = commands(r)
        assert len(subscribed["presence"]) == size + 2
        costs[size] = (spent(before, joined), spent(joined, left))
    print(f"Redis commands for a join and a leave, room of 10 vs 1000: {costs}")
    assert costs[10] == costs[1000]  # O(1): no command per member
    join, leave = costs[1000]
    assert join.get("publish") == 1 and join.get("zadd") == 1
    assert leave.get("publish") == 1 and leave.get("zrem") == 1
