"""Relay through Redis Sentinel (a master, its replica and a sentinel, started by the
tests): the master is found through the sentinels, and a failover is an outage that
ends on the promoted replica."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.channels.test_subscribing import CHANNELS
from tests.scaleout.test_redis_cluster import UNLIMITED
from tests.scaleout.traffic import flowing, resumes_once_in_order
from tests.support.config import merge
from tests.support.ports import free_port
from tests.support.redis_sentinel import MASTER_NAME, RedisSentinel
from tests.support.timing import scaled
from tests.support.waiting import until
from tests.support.ws_client import WsClient


@pytest.fixture
def own_sentinel(tmp_path: Path) -> Iterator[RedisSentinel]:
    group = RedisSentinel(tmp_path / "sentinel").start()
    yield group
    group.stop()


async def pair(servers, group: RedisSentinel, key_prefix: str):
    # A sentinel that is not there comes first: the next one is asked.
    store = {
        "backend": "redis",
        "redis_sentinels": [f"127.0.0.1:{free_port()}", *group.addresses],
        "redis_sentinel_master": MASTER_NAME,
        "key_prefix": key_prefix,
        # Ignored with sentinels: nothing listens there.
        "redis_url": f"redis://127.0.0.1:{free_port()}/0",
    }
    config = merge(merge({"store": store}, CHANNELS), UNLIMITED)
    return (
        await servers(config, instance_id="left"),
        await servers(config, instance_id="right"),
    )


@pytest.mark.gen_test(timeout=30)
async def test_instances_find_the_master_through_the_sentinels(servers, own_sentinel, key_prefix):
    left, right = await pair(servers, own_sentinel, key_prefix)
    for server in (left, right):
        assert server.health()["redis"] == "up"
    a, b = await WsClient.connect(left.port), await WsClient.connect(right.port)
    for client in (a, b):
        await client.subscribe("room:s")
    for i in range(5):
        await a.publish("room:s", f"s{i}")
    for client in (a, b):
        got = [(await client.recv_type("message"))["content"] for _ in range(5)]
        assert got == [f"s{i}" for i in range(5)]
        await client.nothing_for(0.3)
    master = own_sentinel.master.client()
    assert master.xlen(f"{key_prefix}history:{{room:s}}") == 5
    assert master.zrange(f"{key_prefix}instances", 0, -1) == [b"left", b"right"]


@pytest.mark.gen_test(timeout=90)
async def test_a_killed_master_fails_over_to_the_replica_without_duplicates_or_gaps(
    servers, own_sentinel, key_prefix
):
    left, right = await pair(servers, own_sentinel, key_prefix)
    stream, receivers = await flowing(left, right, "room:fail")
    own_sentinel.master.kill()
    killed = time.monotonic()
    await asyncio.get_running_loop().run_in_executor(None, own_sentinel.wait_promotion)
    promoted = time.monotonic()
    resumed = await resumes_once_in_order(stream, receivers)
    assert resumed - promoted < scaled(10)
    # Both instances run on the new master: its scripts were loaded there, and the
    # instances' liveness is written there.
    for server in (left, right):
        await until(lambda s=server: s.health()["redis"] == "up", timeout=10)
    new = own_sentinel.replica.client()
    assert sorted(new.zrange(f"{key_prefix}instances", 0, -1)) == [b"left", b"right"]
    print(f"promotion {promoted - killed:.1f}s after the kill, delivery {resumed - promoted:.1f}s")


@pytest.mark.gen_test(timeout=30)
async def test_the_password_of_redis_url_is_used_for_the_master(servers, tmp_path, key_prefix):
    group = RedisSentinel(tmp_path / "locked", password="s3cret@pass").start()
    try:
        store = {
            "backend": "redis",
            "redis_sentinels": group.addresses,
            "redis_sentinel_master": MASTER_NAME,
            "key_prefix": key_prefix,
            # Its host and port are not used; its credentials are.
            "redis_url": "redis://:s3cret%40pass@192.0.2.1:1/0",
        }
        server = await servers(merge({"store": store}, CHANNELS), instance_id="locked")
        assert server.health()["redis"] == "up"
        client = await WsClient.connect(server.port)
        await client.subscribe("room:locked")
        await client.publish("room:locked", "through the password")
        assert (await client.recv_type("message"))["content"] == "through the password"
        assert group.master.client().xlen(f"{key_prefix}history:{{room:locked}}") == 1
    finally:
        group.stop()
