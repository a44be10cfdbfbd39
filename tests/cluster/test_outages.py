"""Real server processes around a Redis that dies, returns, or drops subscribers."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import redis_changes
from tests.support.config import merge
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.waiting import until, until_async
from tests.support.ws_client import WsClient


async def crosses(sender: WsClient, receiver: WsClient, text: str, timeout: float) -> bool:
    await sender.send("normal", text)
    try:
        while True:
            frame = await receiver.recv_type("message", timeout)
            if frame["content"] == text:
                return True
    except TimeoutError:
        return False


@pytest.mark.gen_test(timeout=60)
async def test_redis_outage_degrades_then_sync_resumes_within_ten_seconds(
    processes, own_redis, key_prefix
):
    config = redis_changes(own_redis.url, key_prefix)
    a, b = processes(config, "A"), processes(config, "B")
    a1, a2 = await WsClient.connect(a.port), await WsClient.connect(a.port)
    b1 = await WsClient.connect(b.port)
    assert await crosses(a1, b1, "before", 3)
    for client in (a1, a2):
        assert (await client.recv_type("message"))["content"] == "before"
    assert a.health() == (
        200,
        {"status": "ok", "instance": "A", "connections": 2, "store": "redis", "redis": "up"},
    )

    own_redis.kill()
    status, health = await until(lambda: (h := a.health())[1]["redis"] == "down" and h, timeout=5)
    assert status == 200 and health["status"] == "degraded"
    # Clients of one instance keep talking to each other, in order, nothing lost.
    for i in range(5):
        await a1.send("normal", f"local {i}")
    assert [f["content"] for f in await a2.messages(5)] == [f"local {i}" for i in range(5)]
    assert (await a1.recv_type("message"))["content"] == "local 0"
    # Rate limits and throttling still answer, per instance, without blocking.
    extra = await WsClient.connect(b.port)
    assert extra.welcome["type"] == "welcome"

    own_redis.start()
    back = time.monotonic()
    await until(lambda: a.health()[1]["redis"] == "up" and b.health()[1]["redis"] == "up", 10)
    # Cross-instance delivery resumes within 10 s of Redis returning.
    while not await crosses(a1, b1, f"after {time.monotonic():.3f}", 0.5):
        assert time.monotonic() - back < 10
    print(f"cross-instance delivery resumed {time.monotonic() - back:.2f} s after Redis")
    assert a.health()[1]["status"] == "ok"


@pytest.mark.gen_test(timeout=60)
async def test_an_instance_killed_without_cleanup_stops_counting(
    processes, redis_server, key_prefix
):
    config = merge(
        redis_changes(redis_server.url, key_prefix),
        {
            "store": {"instance_ttl": 2},
            "plugins": {"throttle": {"max_connections_per_ip": 2}},
        },
    )
    doomed, survivor = processes(config, "doomed"), processes(config, "survivor")
    held = [await WsClient.connect(doomed.port) for _ in range(2)]
    refused = await WsClient.connect(survivor.port, wait_welcome=False)
    assert (await refused.recv())["code"] == "too_many_connections"
    assert held[0].welcome["instance"] == "doomed"
    doomed.kill()  # SIGKILL: no close hooks, no release

    async def admitted() -> bool:
        client = await WsClient.connect(survivor.port, wait_welcome=False)
        return (await client.recv())["type"] == "welcome"

    # The dead instance's count expires with its liveness (instance_ttl 2 s): admitted
    # within 6 s.
    await until_async(admitted, timeout=6, step=0.25)


@pytest.mark.gen_test(timeout=60)
async def test_a_subscriber_dropped_by_redis_resubscribes_and_recovers(
    processes, redis_server, key_prefix
):
    config = redis_changes(redis_server.url, key_prefix)
    a, b = processes(config, "A"), processes(config, "B")
    sender, receiver = await WsClient.connect(a.port), await WsClient.connect(b.port)
    assert await crosses(sender, receiver, "warm", 3)
    redis_server.client().client_kill_filter(_type="pubsub")
    for i in range(10):
        await sender.send("normal", f"m{i}")
    got = [f["content"] for f in await receiver.messages(10, timeout=10)]
    assert got == [f"m{i}" for i in range(10)]  # nothing lost, in order, once
    await receiver.nothing_for(0.5)


@pytest.mark.gen_test(timeout=30)
async def test_auto_uses_memory_when_redis_does_not_answer(processes):
    dead_url = f"redis://127.0.0.1:{free_port()}/0"
    server = processes({"store": {"backend": "auto", "redis_url": dead_url}})
    status, health = server.health()
    assert status == 200
    assert health["store"] == "memory" and health["redis"] is None
    assert "using the memory store" in server.log()
    client = await WsClient.connect(server.port)
    await client.send("normal", "works")
    assert (await client.recv_type("message"))["content"] == "works"


@pytest.mark.gen_test(timeout=30)
async def test_auto_on_memory_reports_degraded_when_redis_appears_instead_of_splitting(
    processes, tmp_path
):
    redis = RedisServer(tmp_path / "late-redis")
    server = processes({"store": {"backend": "auto", "redis_url": redis.url}})
    assert server.health()[1]["status"] == "ok"  # no Redis yet: alone, and fine
    redis.start()
    try:
        started = time.monotonic()
        status, health = await until(
            lambda: (h := server.health())[1]["status"] == "degraded" and h, timeout=15
        )
        assert status == 200 and health["store"] == "memory"
        assert "answers now, but this instance started on the memory store" in server.log()
        print(f"auto on memory: degraded {time.monotonic() - started:.1f} s after Redis came")
    finally:
        redis.kill()


@pytest.mark.gen_test(timeout=30)
async def test_backend_redis_starts_degraded_and_connects_when_redis_appears(
    processes, tmp_path, key_prefix
):
    from tests.support.redis_server import RedisServer

    later = RedisServer(tmp_path / "later")
    server = processes(redis_changes(later.url, key_prefix))
    status, health = server.health()
    assert (status, health["store"], health["redis"], health["status"]) == (
        200,
        "redis",
        "down",
        "degraded",
    )
    client = await WsClient.connect(server.port)  # it serves meanwhile
    later.start()
    try:
        await until(lambda: server.health()[1]["redis"] == "up", 10)
        await client.send("normal", "through redis")
        assert (await client.recv_type("message"))["id"][0] != "L"
    finally:
        later.kill()


@pytest.mark.gen_test(timeout=90)
async def test_under_load_a_redis_restart_loses_nothing_locally(processes, own_redis, key_prefix):
    config = redis_changes(own_redis.url, key_prefix)
    a, b = processes(config, "A"), processes(config, "B")
    sender, local = await WsClient.connect(a.port), await WsClient.connect(a.port)
    remote = await WsClient.connect(b.port)
    total = 300
    for i in range(total):
        await sender.send("normal", str(i))
        if i == 100:
            own_redis.kill()
        elif i == 200:
            own_redis.start()
        await asyncio.sleep(0.01)  # pacing, not waiting: the load spans the outage
    # Every message reaches the sender's neighbour exactly once, in order.
    got = [int(f["content"]) for f in await local.messages(total, timeout=20)]
    assert got == list(range(total))
    await local.nothing_for(0.5)
    # Across instances, delivery resumes: the last messages reach the other instance.
    await until(lambda: a.health()[1]["redis"] == "up", 10)
    await sender.send("normal", "after")
    seen = []
    while not seen or seen[-1] != "after":
        seen.append((await remote.recv_type("message", timeout=10))["content"])
    numbers = [int(x) for x in seen[:-1]]
    assert numbers == sorted(set(numbers))  # in order, no duplicates
