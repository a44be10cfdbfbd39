"""Connection, driven directly on the server side of real WebSocket connections: the
direct write, the priority outbox while the client is behind, the slow-consumer bound,
and closing with a reason."""

from __future__ import annotations

import asyncio
import json
import struct

import pytest

from core.engine.connection import SYSTEM_PRIORITY, Connection
from core.engine.outbox import OutboxPolicy
from core.wire import frames
from tests.core.conftest import connect
from tests.support.waiting import until

PADDING = "x" * 4000


def message(n: int, priority: int) -> bytes:
    return frames.json_frame({"n": n, "p": priority, "pad": PADDING})


async def behind(endpoint, policy: OutboxPolicy):
    """A connection whose client does not read yet, with its socket buffers full."""
    client, transport = await connect(endpoint, rcvbuf=4096)
    transport.limit_send_buffer(4096)
    conn = Connection(transport, "127.0.0.1", policy=policy)
    n = 0
    while not transport.writing():  # fill the kernel's buffers: the next write waits
        conn.send(message(n, 0), 0)
        n += 1
    return client, conn, n


async def read_all(client, count: int) -> list[dict]:
    return [await client.read_json() for _ in range(count)]


@pytest.mark.gen_test(timeout=10)
async def test_a_client_that_keeps_up_gets_frames_at_once_without_a_queue(endpoint):
    client, transport = await connect(endpoint)
    conn = Connection(transport, "127.0.0.1")
    conn.send_json({"type": "hello"})
    conn.send_batch(frames.json_frame({"a": 1}) + frames.json_frame({"b": 2}), [])
    assert conn.outbox is None and conn.backlog() == 0
    assert await read_all(client, 3) == [{"type": "hello"}, {"a": 1}, {"b": 2}]
    assert conn.user == conn.client_id  # no authenticated user: the client_id
    conn.user = "alice"
    assert conn.user == "alice"


@pytest.mark.gen_test(timeout=15)
async def test_while_behind_higher_priorities_overtake_and_each_keeps_its_order(endpoint):
    client, conn, in_flight = await behind(endpoint, OutboxPolicy(limit=100, ordered=True))
    for n, priority in enumerate([1, 1, 10, 5, 10, 1]):
        conn.send(message(100 + n, priority), priority)
    assert conn.backlog() == 6
    got = await read_all(client, in_flight + 6)
    queued = [(f["p"], f["n"]) for f in got[in_flight:]]
    assert queued == [(10, 102), (10, 104), (5, 103), (1, 100), (1, 101), (1, 105)]
    await until(lambda: conn.outbox is None)  # caught up: an idle connection holds no queue


@pytest.mark.gen_test(timeout=15)
async def test_without_ordering_the_queue_keeps_arrival_order(endpoint):
    client, conn, in_flight = await behind(endpoint, OutboxPolicy(limit=100, ordered=False))
    for n, priority in enumerate([1, 10, 5]):
        conn.send(message(100 + n, priority), priority)
    got = await read_all(client, in_flight + 3)
    assert [f["n"] for f in got[in_flight:]] == [100, 101, 102]


@pytest.mark.gen_test(timeout=15)
async def test_a_full_queue_drops_the_lowest_and_a_whole_queue_dropped_closes_it(endpoint):
    drops: list[int] = []
    client, conn, _ = await behind(endpoint, OutboxPolicy(limit=3, ordered=True))
    conn.on_drop = lambda c, count: drops.append(count)
    for n in range(3):
        conn.send(message(100 + n, 1), 1)
    conn.send(message(200, 10), 10)  # full: the oldest lowest-priority frame makes room
    assert drops == [1] and conn.backlog() == 3 and not conn.closing
    for n in range(3):
        conn.send(message(300 + n, 0), 0)  # lower than everything queued: dropped
    assert conn.closing  # more than a queue's worth dropped without the socket draining
    assert conn.dropped == 4
    got = []
    while True:
        opcode, payload = await client.read_frame()
        if opcode == 0x8:
            break
        got.append(json.loads(payload))
    assert got[-1]["code"] == frames.SLOW_CONSUMER and got[-1]["dropped"] == 4
    assert struct.unpack("!H", payload[:2])[0] == frames.CLOSE_TRY_AGAIN


@pytest.mark.gen_test(timeout=10)
async def test_close_tells_the_client_why_and_later_sends_are_ignored(endpoint):
    client, transport = await connect(endpoint)
    conn = Connection(transport, "127.0.0.1")
    conn.fail(frames.INTERNAL_ERROR, "broken", frames.CLOSE_INTERNAL)
    conn.send_json({"type": "late"}, SYSTEM_PRIORITY)
    assert (await client.read_json())["code"] == frames.INTERNAL_ERROR
    assert await client.close_code() == frames.CLOSE_INTERNAL
    await asyncio.sleep(0)
    conn.close(frames.CLOSE_GOING_AWAY)  # a second close is a no-op
