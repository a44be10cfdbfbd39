"""Connection throttling: N connections per IP, the N+1th refused, slots given back."""

from __future__ import annotations

import pytest

from tests.support.waiting import until
from tests.support.ws_client import WsClient

LIMIT_3 = {"plugins": {"throttle": {"max_connections_per_ip": 3}}}


@pytest.mark.gen_test(timeout=10)
async def test_the_fourth_connection_from_one_ip_is_refused_with_1008(servers):
    server = await servers(LIMIT_3)
    clients = [await WsClient.connect(server.port) for _ in range(3)]
    fourth = await WsClient.connect(server.port, wait_welcome=False)
    error = await fourth.recv()
    assert error["type"] == "error"
    assert error["code"] == "too_many_connections"
    assert error["limit"] == 3
    assert await fourth.closed() == 1008
    # The three admitted clients are unaffected.
    await clients[0].send("normal", "still here")
    for client in clients:
        assert (await client.recv_type("message"))["content"] == "still here"


@pytest.mark.gen_test(timeout=10)
async def test_closing_a_connection_frees_its_slot(servers):
    server = await servers(LIMIT_3)
    clients = [await WsClient.connect(server.port) for _ in range(3)]
    clients[0].close()
    await until(lambda: len(server.hub) == 2)
    again = await WsClient.connect(server.port)
    assert again.welcome["type"] == "welcome"


@pytest.mark.gen_test(timeout=20)
async def test_refusals_and_churn_leave_no_count_behind(servers):
    server = await servers(LIMIT_3)
    for _ in range(20):
        batch = [await WsClient.connect(server.port, wait_welcome=False) for _ in range(5)]
        frames = [await c.recv() for c in batch]
        assert [f["type"] for f in frames].count("welcome") == 3
        for c in batch:
            c.close()
        await until(lambda: len(server.hub) == 0)
    counter = server.stores.connections
    await until(lambda: counter.local_count("127.0.0.1") == 0)
    assert counter.counts == {}  # nothing accumulates per IP


@pytest.mark.gen_test(timeout=10)
async def test_without_the_plugin_there_is_no_limit(servers):
    server = await servers({"plugins": {"throttle": {"enabled": False}}})
    clients = [await WsClient.connect(server.port) for _ in range(6)]
    assert all(c.welcome["type"] == "welcome" for c in clients)
