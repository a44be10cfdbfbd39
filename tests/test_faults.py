"""Faults and abuse cost nothing that stays: no growth in memory, tasks or descriptors."""

from __future__ import annotations

import json

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.support.blackhole import BlackholeProxy
from tests.support.metrics import scrape, value
from tests.support.raw_ws import RawWebSocket
from tests.support.waiting import until_async
from tests.support.ws_client import WsClient

Resources = dict[str, float]
COUNTS = ("process_open_fds", "ws_asyncio_tasks")


async def resources(port: int) -> Resources:
    samples = await scrape(port)
    wanted = ("process_resident_memory_bytes", *COUNTS)
    return {name: value(samples, name) for name in wanted}


async def metric(port: int, name: str) -> float:
    return value(await scrape(port), name)


async def connections(port: int) -> int:
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/healthz")
    return json.loads(response.body)["connections"]


async def settle(port: int, count: int = 0, back_to: Resources | None = None) -> Resources:
    """The server's resources once it holds `count` clients and, given `back_to`, once
    its descriptors and asyncio tasks are no more than those (close hooks run as tasks:
    this waits for them to end, not a fixed time). If they stay above, the last reading
    after a few seconds, for the caller's assertions to show."""

    async def holds_count() -> bool:
        return await connections(port) == count

    # A client closed without a close handshake is let go when that times out (5 s).
    await until_async(holds_count, timeout=15, step=0.05)
    readings: list[Resources] = []

    async def back() -> bool:
        readings.append(await resources(port))
        return back_to is None or all(readings[-1][k] <= back_to[k] for k in COUNTS)

    try:
        await until_async(back, timeout=5, step=0.05)
    except TimeoutError:
        pass
    return readings[-1]


async def cycles(port: int, n: int) -> None:
    for _ in range(n):
        client = await WsClient.connect(port)
        await client.send("normal", "hi")
        await client.recv_type("message")
        client.close()
        await client.closed()


@pytest.mark.gen_test(timeout=120)
async def test_connect_disconnect_cycles_leave_nothing_behind(processes):
    server = processes({"plugins": {"throttle": {"max_connections_per_ip": 3}}})
    idle = await resources(server.port)  # before any client
    await cycles(server.port, 200)  # warm up allocator and caches
    before = await settle(server.port, back_to=idle)
    await cycles(server.port, 1000)
    after = await settle(server.port, back_to=before)
    assert after["process_open_fds"] <= before["process_open_fds"]
    assert after["ws_asyncio_tasks"] <= before["ws_asyncio_tasks"]
    growth = after["process_resident_memory_bytes"] - before["process_resident_memory_bytes"]
    # Sessions are kept for their TTL (resumable), by design: 1000 of them are inside this.
    print(f"1000 cycles: RSS {growth / 2**20:+.2f} MiB, {before} -> {after}")
    assert growth < 3 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 1000 cycles"


@pytest.mark.gen_test(timeout=120)
async def test_ten_thousand_rejected_messages_leave_nothing_behind(processes):
    server = processes({"plugins": {"ratelimit": {"max_messages_per_second": 0.001, "burst": 1}}})
    client = await WsClient.connect(server.port)
    await client.send("normal", "spends the only token")
    await client.recv_type("message")

    async def reject(n: int, kind: str) -> None:
        for i in range(n):
            if kind == "json":
                await client.send_raw("{not json")
            elif kind == "class":
                await client.send("nope", "x")
            else:
                await client.send("normal", str(i))
        got = 0
        while got < n:
            if (await client.recv(10))["type"] == "error":
                got += 1

    await reject(500, "json")
    before = await settle(server.port, 1)
    for kind in ("rate", "json", "class"):
        await reject(10_000 // 3 + 1, kind)
    after = await settle(server.port, 1, back_to=before)
    assert after["process_open_fds"] <= before["process_open_fds"]
    assert after["ws_asyncio_tasks"] <= before["ws_asyncio_tasks"]
    growth = after["process_resident_memory_bytes"] - before["process_resident_memory_bytes"]
    print(f"10,000 rejections: RSS {growth / 2**20:+.2f} MiB, {before} -> {after}")
    assert growth < 3 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 10,000 rejections"
    await client.send_raw("still here?")
    assert (await client.recv_type("error"))["code"] == "invalid_json"


@pytest.mark.gen_test(timeout=60)
async def test_a_client_that_never_reads_costs_a_bounded_queue_then_is_closed(processes):
    # No history: it would rightly keep the last messages, which is not what is measured.
    server = processes(
        {"plugins": {"priority": {"queue_limit": 50}, "history": {"enabled": False}}}
    )
    silent = await RawWebSocket.connect(server.port, rcvbuf=4096)
    await silent.read_json()
    sender = await WsClient.connect(server.port)
    big = "x" * 30_000
    before = (await resources(server.port))["process_resident_memory_bytes"]
    for i in range(600):  # 18 MB toward a client that reads nothing
        await sender.send("normal", f"{i}{big}")
        await sender.recv_type("message")
    after = (await settle(server.port, 1))["process_resident_memory_bytes"]
    print(f"18 MB toward a client that never reads: RSS {(after - before) / 2**20:+.2f} MiB")
    assert after - before < 8 * 2**20  # bounded by the queue, not by what was sent
    assert (await metric(server.port, "ws_slow_consumer_closes_total")) == 1


@pytest.mark.gen_test(timeout=60)
async def test_a_half_open_connection_is_detected_and_released(processes):
    server = processes({"plugins": {"heartbeat": {"timeout": 0.5, "tiers": [{"interval": 0.3}]}}})
    proxy = await BlackholeProxy(server.port).start()
    ghost = await WsClient.connect(proxy.port)
    other = await WsClient.connect(server.port)
    proxy.vanish()  # no FIN, no RST: the server's peer just stops answering
    await other.send("normal", "the server is not stuck")
    assert (await other.recv_type("message"))["content"] == "the server is not stuck"
    await settle(server.port, 1)  # the ghost was closed by the heartbeat timeout
    assert (await metric(server.port, "ws_heartbeat_timeouts_total")) == 1
    assert ghost.close_code is None  # it never heard a thing
    await proxy.close()
