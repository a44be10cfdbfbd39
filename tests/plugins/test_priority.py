"""Message prioritization: queued frames go out by priority while a client is behind."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.metrics import sample
from tests.support.raw_ws import RawWebSocket
from tests.support.waiting import until
from tests.support.ws_client import WsClient

# Frames big enough to fill socket buffers quickly.
BIG = "x" * 16000


async def slow_reader(server) -> tuple[RawWebSocket, object]:
    """A client that does not read, on a connection whose buffers are tiny."""
    raw = await RawWebSocket.connect(server.port, rcvbuf=4096)
    welcome = await raw.read_json()
    (conn,) = [c for c in server.hub.connections() if c.client_id == welcome["client_id"]]
    conn.transport.limit_send_buffer(4096)
    return raw, conn


async def fill_outbox(sender: WsClient, conn, backlog: int) -> int:
    """Send big status messages until `backlog` frames wait in the slow reader's outbox;
    how many were sent."""
    sent = 0
    while conn.backlog() < backlog:
        await sender.send("status", f"{sent}:{BIG}")
        sent += 1
        await sender.recv_type("message")
    return sent


async def drain(raw: RawWebSocket, count: int) -> list[dict]:
    out = []
    while len(out) < count:
        frame = await raw.read_json(timeout=5)
        if frame["type"] == "message":
            out.append(frame)
    return out


@pytest.mark.gen_test(timeout=20)
async def test_a_critical_message_overtakes_queued_status_messages(servers):
    server = await servers()
    sender = await WsClient.connect(server.port)
    raw, conn = await slow_reader(server)
    sent = await fill_outbox(sender, conn, 5)
    await sender.send("critical", "urgent")
    await sender.recv_type("message")
    await until(lambda: conn.backlog() >= 6)
    frames = await drain(raw, sent + 1)
    order = [f["class"] for f in frames]
    position = order.index("critical")
    assert "status" in order[position + 1 :], order  # status frames sent earlier came after
    statuses = [int(f["content"].split(":")[0]) for f in frames if f["class"] == "status"]
    assert statuses == sorted(statuses)  # equal priorities keep their order


@pytest.mark.gen_test(timeout=20)
async def test_without_the_plugin_the_queue_keeps_arrival_order(servers):
    server = await servers({"plugins": {"priority": {"enabled": False}}})
    sender = await WsClient.connect(server.port)
    raw, conn = await slow_reader(server)
    sent = await fill_outbox(sender, conn, 5)
    await sender.send("critical", "urgent")
    await sender.recv_type("message")
    frames = await drain(raw, sent + 1)
    assert [f["class"] for f in frames][-1] == "critical"


@pytest.mark.gen_test(timeout=20)
async def test_over_the_queue_limit_the_lowest_priority_is_dropped_and_counted(servers):
    server = await servers({"plugins": {"priority": {"queue_limit": 4}}})
    sender = await WsClient.connect(server.port)
    raw, conn = await slow_reader(server)
    await fill_outbox(sender, conn, 4)
    for i in range(3):
        await sender.send("critical", f"c{i}")
        await sender.recv_type("message")
    await until(lambda: conn.dropped >= 3)
    assert conn.backlog() == 4
    assert sample(server, "ws_queue_dropped_total") >= 3
    frames = await drain_until_quiet(raw)
    criticals = [f["content"] for f in frames if f["class"] == "critical"]
    assert criticals == ["c0", "c1", "c2"]  # the criticals were kept


async def drain_until_quiet(raw: RawWebSocket) -> list[dict]:
    out = []
    try:
        while True:
            frame = await raw.read_json(timeout=0.5)
            if frame["type"] == "message":
                out.append(frame)
    except TimeoutError:
        return out


@pytest.mark.gen_test(timeout=20)
async def test_a_client_that_cannot_keep_up_is_closed_as_a_slow_consumer(servers):
    server = await servers({"plugins": {"priority": {"queue_limit": 3}}})
    sender = await WsClient.connect(server.port)
    raw, conn = await slow_reader(server)
    for i in range(40):
        if conn.closing:
            break
        await sender.send("status", f"{i}:{BIG}")
        await sender.recv_type("message")
    assert conn.closing
    assert sample(server, "ws_slow_consumer_closes_total") == 1
    # The client is told why before the close: the error frame, then 1013.
    frames, code = [], None
    try:
        while True:
            opcode, payload = await raw.read_frame(timeout=5)
            if opcode == 0x8:
                code = int.from_bytes(payload[:2], "big")
                break
            if opcode == 0x1:
                frames.append(payload)
    except asyncio.IncompleteReadError:
        pass
    assert code == 1013
    assert b'"code":"slow_consumer"' in frames[-1]
    # Everyone else carries on.
    await sender.send("normal", "after")
    assert (await sender.recv_type("message"))["content"] == "after"
