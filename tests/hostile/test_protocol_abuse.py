"""Finding 10 of the hostile review, the frame-level part: an unmasked client frame was
accepted. RFC 6455 5.1: the server must close the connection; it now does, with 1002,
after an error frame saying why."""

from __future__ import annotations

import json

import pytest

from tests.support.raw_ws import RawWebSocket
from tests.support.waiting import connections_settle
from tests.support.ws_client import WsClient


@pytest.mark.gen_test(timeout=10)
async def test_an_unmasked_client_frame_closes_the_connection_with_1002(servers):
    server = await servers()
    other = await WsClient.connect(server.port)
    raw = await RawWebSocket.connect(server.port)
    await raw.read_json()  # welcome
    raw.send_frame(
        0x1, json.dumps({"type": "normal", "content": "unmasked"}).encode(), masked=False
    )
    error = await raw.read_json()
    assert error["code"] == "invalid_message" and "masked" in error["message"]
    assert await raw.close_code() == 1002
    await connections_settle(server, 1)
    await other.nothing_for(0.2)  # the unmasked message was not broadcast
    raw2 = await RawWebSocket.connect(server.port)
    await raw2.read_json()
    raw2.send_frame(0x1, json.dumps({"type": "normal", "content": "masked"}).encode())
    assert (await other.recv_type("message"))["content"] == "masked"
