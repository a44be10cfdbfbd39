"""Relay on a Redis Cluster (3 masters, 3 replicas, started by the tests): sharded
pub/sub, keys of one slot per script, limits across instances, failover."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.crc import key_slot

from tests.channels.test_subscribing import CHANNELS
from tests.scaleout.conftest import cluster_changes
from tests.scaleout.traffic import flowing, resumes_once_in_order
from tests.support.config import merge
from tests.support.timing import scaled
from tests.support.waiting import until
from tests.support.ws_client import WsClient

UNLIMITED = {
    "plugins": {"ratelimit": {"enabled": False}},
    "channels": {"max_per_connection": 16},
}


async def pair(servers, cluster, key_prefix, changes: dict | None = None):
    config = merge(merge(cluster_changes(cluster, key_prefix), CHANNELS), changes or {})
    return (
        await servers(config, instance_id="left"),
        await servers(config, instance_id="right"),
    )


def spread(prefix: str, names: list[str], cluster) -> set[int]:
    """The ports of the masters serving the names' pub/sub channels."""
    return {cluster.master_of(f"{prefix}{{{name}}}").port for name in names}


@pytest.mark.gen_test(timeout=30)
async def test_messages_cross_instances_once_in_order_on_every_shard(
    servers, redis_cluster, key_prefix
):
    left, right = await pair(servers, redis_cluster, key_prefix, UNLIMITED)
    rooms = [f"room:{i}" for i in range(6)]
    assert len(spread(key_prefix, rooms, redis_cluster)) == 3  # every shard has some
    a, b = await WsClient.connect(left.port), await WsClient.connect(right.port)
    for room in rooms:
        await a.subscribe(room)
        await b.subscribe(room)
    for i in range(5):
        for room in rooms:
            await a.publish(room, f"{room} {i}")
    for client in (a, b):
        got = [await client.recv_type("message") for _ in range(5 * len(rooms))]
        for room in rooms:
            assert [m["content"] for m in got if m["channel"] == room] == [
                f"{room} {i}" for i in range(5)
            ]
        await client.nothing_for(0.3)
    # Sharded pub/sub: each room is heard on its own shard (by both instances), and no
    # classic channel exists anywhere (a PUBLISH would have gone to every node).
    for room in rooms:
        name = f"{key_prefix}{{{room}}}"
        heard = 0
        for node in redis_cluster.nodes:
            reply = node.client().execute_command("PUBSUB", "SHARDNUMSUB", name)
            heard += int(reply[1])
        assert heard == 2, room
    for node in redis_cluster.nodes:
        assert node.client().execute_command("PUBSUB", "CHANNELS") == []


@pytest.mark.gen_test(timeout=30)
async def test_per_ip_limits_hold_across_instances_on_every_shard(
    servers, redis_cluster, key_prefix
):
    limit = {"plugins": {"throttle": {"max_connections_per_ip": 2}}}
    left, right = await pair(servers, redis_cluster, key_prefix, limit)
    addresses = [f"127.0.0.{i}" for i in range(2, 10)]
    hashes = [f"{key_prefix}connections:{{{a}}}" for a in addresses]
    owners = {redis_cluster.master_of(h).port for h in hashes}
    assert len(owners) >= 2  # the addresses' counts live on different shards
    for address in addresses:
        await WsClient.connect(left.port, source=address)
        await WsClient.connect(right.port, source=address)
        for server in (left, right):
            third = await WsClient.connect(server.port, source=address, wait_welcome=False)
            refused = await third.recv()
            assert refused["code"] == "too_many_connections", address
            assert await third.closed() == 1008


@pytest.mark.gen_test(timeout=60)
async def test_a_killed_master_fails_over_without_duplicates_or_gaps(
    servers, own_cluster, key_prefix
):
    left, right = await pair(servers, own_cluster, key_prefix, UNLIMITED)
    stream, receivers = await flowing(left, right, "room:fail")
    name = f"{key_prefix}{{room:fail}}"
    master = own_cluster.master_of(name)
    master.kill()
    killed = time.monotonic()
    new = await asyncio.get_running_loop().run_in_executor(
        None, own_cluster.wait_master_of, name, master
    )
    promoted = time.monotonic()
    resumed = await resumes_once_in_order(stream, receivers)
    assert resumed - promoted < scaled(10)
    assert new.port != master.port
    print(f"promotion {promoted - killed:.1f}s after the kill, delivery {resumed - promoted:.1f}s")


@pytest.mark.gen_test(timeout=90)
async def test_a_frozen_master_stalls_nobody_and_its_waking_drops_nothing(
    servers, own_cluster, key_prefix
):
    left, right = await pair(servers, own_cluster, key_prefix, UNLIMITED)
    stream, receivers = await flowing(left, right, "room:ice")
    name = f"{key_prefix}{{room:ice}}"
    master = own_cluster.master_of(name)
    master.pause()
    frozen = time.monotonic()
    # Frozen: no error, only silence. The sender's instance keeps delivering to its own
    # clients (at most a command timeout late), and keeps answering.
    while time.monotonic() - frozen < 15:
        mark = stream.sent
        await until(lambda m=mark: receivers[0].seen(f"m{m}"), timeout=5)
        assert left.health()["status"] in ("ok", "degraded")
    master.resume()
    await asyncio.get_running_loop().run_in_executor(None, own_cluster.wait_master_of, name, master)
    await resumes_once_in_order(stream, receivers)
    owner = own_cluster.master_of(name)
    kept = [i.decode() for i, _ in owner.client().xrange(f"{key_prefix}history:{{room:ice}}")]
    for receiver in receivers:
        # Everything the surviving stream holds from the receiver's first message on
        # reached it: none was skipped as "older than what was delivered".
        ids = [m["id"] for m in receiver.messages("room:ice")]
        missing = [i for i in kept if i >= ids[0] and i not in ids]
        assert not missing, missing


def test_every_name_of_a_channel_shares_its_slot():
    from core.stores.keys import Keys

    keys = Keys("ws:")
    for channel in ("broadcast", "room:lobby", "user:8f2a", "a.b@c-d_e"):
        slots = {key_slot(k.encode()) for k in (keys.channel(channel), keys.history(channel))}
        slots.add(key_slot(keys.presence(channel).encode()))
        assert len(slots) == 1, channel
    rate = {key_slot(keys.ratelimit("10.0.0.1", b).encode()) for b in ("", "c1", "new-sessions")}
    assert len(rate) == 1


def test_every_node_is_reached_with_the_scheme_and_credentials_of_redis_url():
    from core.stores.cluster_link import node_url

    assert node_url("10.0.0.5:7001") == "redis://10.0.0.5:7001/0"
    assert node_url("10.0.0.5:7001", "redis://127.0.0.1:6379/0") == "redis://10.0.0.5:7001/0"
    assert (
        node_url("10.0.0.5:7001", "rediss://app:s%40cret@cache.internal:6380/2")
        == "rediss://app:s%40cret@10.0.0.5:7001/0"
    )


@pytest.mark.gen_test(timeout=90)
async def test_stopping_while_no_node_answers_leaves_no_listener_running(
    servers, own_cluster, key_prefix
):
    config = merge(cluster_changes(own_cluster, key_prefix), CHANNELS)
    server = await servers(config)
    client = await WsClient.connect(server.port)
    await client.subscribe("room:hang")
    broker = server.hub.broker
    for node in own_cluster.nodes:
        node.pause()
    # Each listener's read stalls, it gives its node up and, while nothing answers,
    # waits to place its channels again: out of the broker's list of listeners.
    await until(lambda: broker._replacing, timeout=15)
    await server.stop(timeout=1)
    running = [
        t
        for t in asyncio.all_tasks()
        if not t.done() and t.get_coro().__qualname__ == "ShardListener._run"
    ]
    assert running == [], running
