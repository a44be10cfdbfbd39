"""Graceful drain on SIGTERM: 503 at once, queued frames flushed, 1001, state released."""

from __future__ import annotations

import signal

import pytest
from tornado.httpclient import HTTPClientError

from tests.conftest import redis_changes
from tests.support.config import merge
from tests.support.raw_ws import RawWebSocket
from tests.support.redis_counts import address_counts
from tests.support.server_process import ServerProcess
from tests.support.waiting import until
from tests.support.ws_client import WsClient


def draining(server: ServerProcess) -> tuple[int, dict] | None:
    """/healthz's answer once it says the server is draining, else None."""
    status, health = server.health()
    return (status, health) if health["status"] == "draining" else None


@pytest.mark.gen_test(timeout=30)
async def test_drain_flushes_queued_frames_then_says_goodbye(processes):
    server = processes(
        {"server": {"shutdown_timeout": 6}, "plugins": {"history": {"enabled": False}}}
    )
    reader = await RawWebSocket.connect(server.port, rcvbuf=4096)
    await reader.read_json()  # welcome; then it stops reading for a while
    sender = await WsClient.connect(server.port)
    for i in range(40):
        await sender.send("normal", f"{i}:" + "x" * 8000)
        await sender.recv_type("message")
    server.signal(signal.SIGTERM)
    # The reader starts reading only once the drain has begun, with its frames queued.
    await until(lambda: draining(server))
    got, code = [], None
    while code is None:
        opcode, payload = await reader.read_frame(timeout=5)
        if opcode == 0x1 and b'"type":"message"' in payload:
            got.append(int(payload.split(b'"content":"')[1].split(b":")[0]))
        elif opcode == 0x8:
            code = int.from_bytes(payload[:2], "big")
    assert got == list(range(40))  # everything queued reached the client, in order
    assert code == 1001
    assert server.wait() == 0


@pytest.mark.gen_test(timeout=30)
async def test_while_draining_health_says_503_and_new_clients_are_turned_away(
    processes, redis_server, key_prefix
):
    config = merge(redis_changes(redis_server.url, key_prefix), {"server": {"shutdown_timeout": 4}})
    server = processes(config, "drainer")
    stubborn = await RawWebSocket.connect(server.port)  # will not answer the close frame
    await stubborn.read_json()
    r = redis_server.client()
    assert address_counts(r, key_prefix, "127.0.0.1") == {"drainer": 1}
    server.signal(signal.SIGTERM)
    status, health = await until(lambda: draining(server), timeout=1)
    assert (status, health["status"]) == (503, "draining")
    with pytest.raises(HTTPClientError) as refused:
        await WsClient.connect(server.port)
    assert refused.value.code == 503
    assert await stubborn.close_code() == 1001
    assert server.wait() == 0
    # The instance's share of the per-IP counts is gone with it.
    assert address_counts(r, key_prefix, "127.0.0.1") == {}
    assert b"drainer" not in r.zrange(f"{key_prefix}instances", 0, -1)
    with pytest.raises(OSError):
        server.health()  # nobody listens any more
