"""Finding 1 of the hostile review: a few hundred bytes pinned ~5 MB each.

The attack: fill the history with big messages; open raw sockets that resume their own
session with `since=0-0` (the whole history) and never read; keep them alive with pongs
nobody asked for. Now a replay shares the history's frames instead of copying them, what
a connection may hold unsent is bounded (`server.max_queued_bytes`), and only a pong that
echoes the latest ping counts, so these sockets are dropped at the heartbeat timeout.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import redis_changes
from tests.support.config import merge
from tests.support.metrics import scrape, value
from tests.support.raw_ws import RawWebSocket
from tests.support.timing import scaled
from tests.support.waiting import until_async
from tests.support.ws_client import WsClient

ATTACKERS = 40
MESSAGES = 100
SIZE = 30_000  # 100 x 30 KB: a 3 MB replay for each attacker


async def rss(port: int) -> float:
    return value(await scrape(port), "process_resident_memory_bytes")


async def open_count(port: int) -> float:
    return value(await scrape(port), "ws_connections")


@pytest.mark.gen_test(timeout=90)
async def test_never_reading_resumers_pin_no_replay_and_are_dropped(
    processes, redis_server, key_prefix
):
    config = merge(
        redis_changes(redis_server.url, key_prefix),
        {
            "plugins": {
                "history": {"size": MESSAGES, "replay": 0, "ttl": 300},
                "heartbeat": {"timeout": 2, "tiers": [{"interval": 1}]},
            }
        },
    )
    server = processes(config)
    sender = await WsClient.connect(server.port)
    for i in range(MESSAGES):
        await sender.send("normal", f"{i:03}" + "x" * SIZE)
        await sender.recv_type("message")
    tokens = []
    for _ in range(ATTACKERS):  # each attacker has a session of its own to resume
        client = await WsClient.connect(server.port)
        tokens.append(client.session)
        client.close()
    await until_async(lambda: _equals(open_count(server.port), 1))
    before = await rss(server.port)

    attackers = []
    for token in tokens:
        raw = await RawWebSocket.connect(server.port, f"/ws?session={token}&since=0-0", rcvbuf=4096)
        attackers.append(raw)
    await until_async(lambda: _equals(open_count(server.port), 1 + ATTACKERS))
    opened = time.monotonic()
    pinned = before

    async def pong_forever(raw: RawWebSocket) -> None:
        while True:  # pongs nobody asked for, as the attack sent
            raw.send_frame(0xA, b"alive")
            await asyncio.sleep(0.5)

    pongs = [asyncio.ensure_future(pong_forever(raw)) for raw in attackers]

    async def gone() -> bool:
        nonlocal pinned
        pinned = max(pinned, await rss(server.port))  # the peak while they are open
        return await open_count(server.port) == 1

    try:
        # Dropped within timeout + interval + 1 s, pongs or not.
        await until_async(gone, timeout=6, step=0.1)
    finally:
        for task in pongs:
            task.cancel()
    dropped_after = time.monotonic() - opened
    after = await rss(server.port)
    growth = (pinned - before) / 2**20
    print(
        f"{ATTACKERS} never-reading resumers of a {MESSAGES * SIZE / 2**20:.1f} MiB history: "
        f"RSS +{growth:.1f} MiB while open ({growth * 1024 / ATTACKERS:.0f} KiB each), "
        f"{(after - before) / 2**20:+.1f} MiB after; dropped after {dropped_after:.1f} s"
    )
    assert growth < 12, f"pinned {growth:.0f} MiB"  # copying the replays: 26 to 120 MiB
    assert dropped_after < scaled(4.5)
    assert value(await scrape(server.port), "ws_heartbeat_timeouts_total") == ATTACKERS
    await sender.send("normal", "still serving")
    assert (await sender.recv_type("message"))["content"] == "still serving"


async def _equals(reading, expected: float) -> bool:
    return await reading == expected


@pytest.mark.gen_test(timeout=30)
async def test_unsent_bytes_over_max_queued_bytes_close_a_slow_consumer(servers):
    limit = 256 * 1024
    server = await servers(
        {
            "server": {"max_queued_bytes": limit},
            # A queue long enough that only the byte bound can end it.
            "plugins": {"priority": {"queue_limit": 100_000}, "history": {"enabled": False}},
        }
    )
    silent = await RawWebSocket.connect(server.port, rcvbuf=4096)
    welcome = await silent.read_json()
    (conn,) = [c for c in server.hub.connections() if c.client_id == welcome["client_id"]]
    conn.transport.limit_send_buffer(4096)
    sender = await WsClient.connect(server.port)
    for i in range(200):  # 6 MB toward a client that reads nothing
        if conn.closing:
            break
        await sender.send("normal", f"{i}" + "x" * 30_000)
        await sender.recv_type("message")
    assert conn.closing, "never closed"
    frame = None
    while True:
        frame = await silent.read_json()
        if frame["type"] == "error":
            break
    assert frame["code"] == "slow_consumer" and frame["unsent_bytes"] > limit
    assert await silent.close_code() == 1013
    print(f"closed as a slow consumer with {frame['unsent_bytes']} bytes unsent (bound {limit})")
