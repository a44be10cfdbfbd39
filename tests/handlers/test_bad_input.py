"""Bad client input: each gets its error frame, the connection stays open (or, for a
frame over max_message_size, closes with 1009 after the error), and the server goes on
serving everyone else."""

from __future__ import annotations

import itertools
import json

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.support.raw_ws import RawWebSocket
from tests.support.ws_client import WsClient

_counter = itertools.count()


async def pair(servers, changes: dict | None = None) -> tuple[object, WsClient, WsClient]:
    server = await servers(changes)
    sender = await WsClient.connect(server.port)
    witness = await WsClient.connect(server.port)
    return server, sender, witness


async def assert_served(sender: WsClient, *others: WsClient) -> None:
    """`sender` can still talk: its next valid message reaches it and every other."""
    content = f"still here {next(_counter)}"
    await sender.send("normal", content)
    for client in (sender, *others):
        frame = await client.recv_type("message", content=content)
        assert frame["from"] == sender.client_id


async def assert_error(client: WsClient, code: str) -> dict:
    """The next frame is an error frame with `code` (nothing else comes first)."""
    frame = await client.recv()
    assert frame["type"] == "error", frame
    assert frame["code"] == code, frame
    assert isinstance(frame["message"], str)
    assert frame["message"]
    return frame


BAD_TEXT = [
    # not JSON at all
    ("hello", "invalid_json"),
    ("", "invalid_json"),
    ("{", "invalid_json"),
    ("{'type': 'normal', 'content': 'x'}", "invalid_json"),
    ('{"type": "normal", "content": "x"} trailing', "invalid_json"),
    ('{"type": "normal", "content": "x",}', "invalid_json"),
    # JSON, but not an object
    ("[]", "invalid_message"),
    ('[{"type": "normal", "content": "x"}]', "invalid_message"),
    ("42", "invalid_message"),
    ("-1.5e3", "invalid_message"),
    ('"normal"', "invalid_message"),
    ("null", "invalid_message"),
    ("true", "invalid_message"),
    # an object, but not a message of the protocol
    ("{}", "invalid_message"),
    ('{"type": "shout", "content": "x"}', "invalid_message"),
    ('{"type": "NORMAL", "content": "x"}', "invalid_message"),
    ('{"type": "message", "content": "x"}', "invalid_message"),
    ('{"type": "", "content": "x"}', "invalid_message"),
    ('{"content": "x"}', "invalid_message"),
    ('{"type": null, "content": "x"}', "invalid_message"),
    ('{"type": 5, "content": "x"}', "invalid_message"),
    ('{"type": ["normal"], "content": "x"}', "invalid_message"),
    ('{"type": "normal"}', "invalid_message"),
    ('{"type": "normal", "content": 5}', "invalid_message"),
    ('{"type": "normal", "content": null}', "invalid_message"),
    ('{"type": "normal", "content": {"text": "x"}}', "invalid_message"),
    ('{"type": "normal", "content": ["x"]}', "invalid_message"),
    ('{"type": "normal", "content": true}', "invalid_message"),
    ('{"type": "normal", "content": "\\ud800"}', "invalid_message"),
    ('{"type": "\\udfff", "content": "x"}', "invalid_message"),
]


@pytest.mark.gen_test(timeout=10)
@pytest.mark.parametrize(("data", "code"), BAD_TEXT, ids=[repr(d)[:40] for d, _ in BAD_TEXT])
async def test_bad_text_frame_gets_its_error_and_the_connection_stays_open(servers, data, code):
    _, sender, witness = await pair(servers)
    await sender.send_raw(data)
    await assert_error(sender, code)
    assert sender.close_code is None
    await assert_served(sender, witness)
    # It was not broadcast: the witness saw only the valid message.
    seen = [f for f in witness.received if f["type"] != "welcome"]
    assert [f["content"] for f in seen] == [sender.received[-1]["content"]]


@pytest.mark.gen_test(timeout=10)
@pytest.mark.parametrize(
    "data",
    [b"\x00\x01\x02", b'{"type": "normal", "content": "x"}', b"", bytes(range(256)) * 10],
)
async def test_binary_frame_gets_invalid_message(servers, data):
    _, sender, witness = await pair(servers)
    await sender.send_raw(data)
    await assert_error(sender, "invalid_message")
    await assert_served(sender, witness)
    await witness.nothing_for(0.1)


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize(
    "data",
    [
        "[" * 100_000,
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 50_000,
        '{"type": "normal", "content": "x", "extra": ' + "[" * 50_000 + "]" * 50_000 + "}",
        '{"type": ' + "[" * 900 + "]" * 900 + ', "content": "x"}',
    ],
)
async def test_deeply_nested_json_is_an_error_not_a_crash(servers, data):
    _, sender, witness = await pair(servers, {"server": {"max_message_size": 300_000}})
    await sender.send_raw(data)
    frame = await sender.recv()
    assert frame["type"] == "error"
    assert frame["code"] in ("invalid_json", "invalid_message")
    await assert_served(sender, witness)


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("size", [2000, 70_000, 1_000_000])
async def test_oversized_frame_gets_an_error_then_close_1009(servers, binary, size):
    server, sender, witness = await pair(servers, {"server": {"max_message_size": 1024}})
    big = json.dumps({"type": "normal", "content": "x" * size})
    await sender.send_raw(big.encode() if binary else big)
    frame = await assert_error(sender, "invalid_message")
    assert frame["max_message_size"] == 1024
    assert await sender.closed() == 1009
    # Everyone else is still served, and newcomers are welcome.
    await assert_served(witness)
    newcomer = await WsClient.connect(server.port)
    await assert_served(newcomer, witness)
    _, health = await health_of(server)
    assert health["connections"] == 2


@pytest.mark.gen_test(timeout=20)
async def test_a_fragmented_message_over_the_limit_gets_the_error_then_1009(servers):
    server, _, witness = await pair(servers, {"server": {"max_message_size": 1024}})
    raw = await RawWebSocket.connect(server.port)
    assert (await raw.read_json())["type"] == "welcome"
    # Each fragment is under the limit; together they are not.
    raw.send_frame(0x1, b'{"type": "normal", "content": "' + b"x" * 600, fin=False)
    raw.send_frame(0x0, b"y" * 600 + b'"}', fin=True)
    frame = await raw.read_json()
    assert frame["type"] == "error"
    assert frame["code"] == "invalid_message"
    assert await raw.close_code() == 1009
    raw.close()
    await assert_served(witness)


@pytest.mark.gen_test(timeout=20)
async def test_a_fragmented_message_within_the_limit_is_one_message(servers):
    server, _, witness = await pair(servers)
    raw = await RawWebSocket.connect(server.port)
    await raw.read_json()
    raw.send_frame(0x1, b'{"type": "normal", ', fin=False)
    raw.send_frame(0x0, b'"content": "in ', fin=False)
    raw.send_frame(0x0, b'pieces"}', fin=True)
    assert (await witness.recv_type("message"))["content"] == "in pieces"
    raw.close()


@pytest.mark.gen_test(timeout=20)
async def test_a_frame_of_exactly_max_message_size_is_accepted(servers):
    _, sender, witness = await pair(servers, {"server": {"max_message_size": 1024}})
    head = '{"type": "normal", "content": "'
    content = "y" * (1024 - len(head) - 2)
    data = head + content + '"}'
    assert len(data.encode()) == 1024
    await sender.send_raw(data)
    for client in (sender, witness):
        assert (await client.recv_type("message"))["content"] == content


@pytest.mark.gen_test(timeout=20)
async def test_invalid_utf8_in_a_text_frame_does_not_hurt_anyone_else(servers):
    server, sender, witness = await pair(servers)
    # A text frame that is not UTF-8 breaks the WebSocket protocol itself.
    await sender.ws.write_message(b'{"type": "normal", "content": "\xff\xfe"}', binary=False)
    try:
        frame = await sender.recv()
    except Exception:  # the server may just drop the connection
        frame = None
    if frame is not None:
        assert frame["type"] == "error"
    await assert_served(witness)
    newcomer = await WsClient.connect(server.port)
    await assert_served(newcomer, witness)


@pytest.mark.gen_test(timeout=20)
async def test_the_server_keeps_serving_others_while_one_client_misbehaves(servers):
    server, sender, witness = await pair(servers, {"server": {"max_message_size": 4096}})
    bystander = await WsClient.connect(server.port)
    for data, code in BAD_TEXT[::6]:
        await sender.send_raw(data)
        await assert_error(sender, code)
        await assert_served(bystander, witness, sender)
    await sender.send_raw(b"\x01")
    await assert_error(sender, "invalid_message")
    await sender.send_raw("[" * 4000)
    await assert_error(sender, "invalid_json")
    await sender.send_raw("z" * 5000)
    await assert_error(sender, "invalid_message")
    assert await sender.closed() == 1009
    await assert_served(bystander, witness)
    _, health = await health_of(server)
    assert health["status"] == "ok"
    assert health["connections"] == 2


async def health_of(server) -> tuple[int, dict]:
    response = await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{server.port}/healthz", raise_error=False
    )
    return response.code, json.loads(response.body)
