"""Two clients on one instance: the welcome, a broadcast to both, the sender included."""

from __future__ import annotations

import pytest

from tests.support.ws_client import WsClient


@pytest.mark.gen_test(timeout=10)
async def test_broadcast_reaches_every_client_once_sender_included(servers):
    server = await servers()
    alice = await WsClient.connect(server.port)
    bob = await WsClient.connect(server.port)
    await alice.send("normal", "hello")
    for client in (alice, bob):
        frame = await client.recv_type("message")
        assert frame["content"] == "hello"
        assert frame["from"] == alice.client_id
        assert frame["class"] == "normal"
        assert frame["priority"] == 5
        await client.nothing_for(0.2)
