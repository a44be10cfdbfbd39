"""The backend API over real HTTP, with two instances sharing a real redis-server: what
one instance is asked reaches every instance's clients."""

from __future__ import annotations

import json

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from tests.channels.test_subscribing import CHANNELS
from tests.conftest import redis_changes
from tests.support.config import merge
from tests.support.ws_client import WsClient

KEY = "a-backend-key-of-some-length"
API = merge(CHANNELS, {"api": {"enabled": True, "keys": ["another-key-0123456789", KEY]}})


async def call(
    server, method: str, path: str, body=None, key: str | None = KEY
) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    if body is not None and not isinstance(body, (str, bytes)):
        body = json.dumps(body)
    try:
        response = await AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{server.port}{path}",
            method=method,
            headers=headers,
            body=body,
            allow_nonstandard_methods=True,
        )
    except HTTPClientError as error:
        response = error.response
    return response.code, json.loads(response.body)


async def pair(servers, redis_server, key_prefix, changes: dict | None = None):
    config = merge(merge(redis_changes(redis_server.url, key_prefix), API), changes or {})
    return (
        await servers(config, instance_id="left"),
        await servers(config, instance_id="right"),
    )


@pytest.mark.gen_test(timeout=20)
async def test_publish_reaches_the_channels_subscribers_on_every_instance(
    servers, redis_server, key_prefix
):
    left, right = await pair(servers, redis_server, key_prefix)
    a, b = await WsClient.connect(left.port), await WsClient.connect(right.port)
    await a.subscribe("room:ops")
    await b.subscribe("room:ops")
    outsider = await WsClient.connect(right.port)
    status, answer = await call(
        left, "POST", "/api/publish", {"channel": "room:ops", "class": "critical", "content": "x"}
    )
    assert status == 200
    for client in (a, b):
        frame = await client.recv_type("message")
        assert (frame["id"], frame["from"], frame["user"]) == (answer["id"], None, None)
        assert (frame["channel"], frame["class"], frame["content"]) == ("room:ops", "critical", "x")
    await outsider.nothing_for(0.2)
    # Where clients may not publish, the backend may.
    status, _ = await call(
        right, "POST", "/api/publish", {"channel": "news:today", "class": "normal", "content": "y"}
    )
    await a.send_json({"type": "subscribe", "channel": "news:today"})
    await a.recv_type("subscribed")
    replayed = await a.recv_type("message")
    assert status == 200 and (replayed["content"], replayed["history"]) == ("y", True)


@pytest.mark.gen_test(timeout=20)
async def test_presence_and_history_of_a_channel_from_any_instance(
    servers, redis_server, key_prefix
):
    left, right = await pair(servers, redis_server, key_prefix)
    a, b = await WsClient.connect(left.port), await WsClient.connect(right.port)
    await a.subscribe("room:lobby")
    await b.subscribe("room:lobby")
    status, present = await call(left, "GET", "/api/presence?channel=room:lobby")
    assert status == 200 and present["channel"] == "room:lobby"
    assert sorted((c["client_id"], c["instance"]) for c in present["clients"]) == sorted(
        [(a.client_id, "left"), (b.client_id, "right")]
    )
    assert all(c["user"] for c in present["clients"])
    for i in range(5):
        await a.publish("room:lobby", f"m{i}")
    await b.messages(5)
    status, history = await call(right, "GET", "/api/history?channel=room:lobby&limit=3")
    assert status == 200
    assert [m["content"] for m in history["messages"]] == ["m2", "m3", "m4"]
    assert all(m["type"] == "message" and "history" not in m for m in history["messages"])


@pytest.mark.gen_test(timeout=20)
async def test_disconnect_closes_a_users_connections_on_every_instance(
    servers, redis_server, key_prefix
):
    left, right = await pair(servers, redis_server, key_prefix)
    here = await WsClient.connect(left.port)
    user = here.user
    there = await WsClient.connect(right.port, session=here.session)  # the same user
    assert there.user == user
    other = await WsClient.connect(right.port)
    status, answer = await call(left, "POST", "/api/disconnect", {"user": user})
    assert (status, answer) == (200, {"disconnected": 1})  # the one on this instance
    for client in (here, there):
        assert (await client.recv_type("error"))["code"] == "forbidden"
        assert await client.closed() == 1008
    await other.send("normal", "still here")
    assert (await other.recv_type("message"))["content"] == "still here"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", "body"),
        ([1, 2], "body"),
        ({"class": "normal", "content": "x"}, "channel"),
        ({"channel": "bad name", "class": "normal", "content": "x"}, "channel"),
        ({"channel": "nowhere:x", "class": "normal", "content": "x"}, "channel"),
        ({"channel": "room:a", "class": "shout", "content": "x"}, "class"),
        ({"channel": "room:a", "class": "normal"}, "content"),
        ({"channel": "room:a", "class": "normal", "content": 5}, "content"),
        ({"channel": "room:a", "class": "normal", "content": "x" * 70_000}, "content"),
    ],
)
@pytest.mark.gen_test(timeout=10)
async def test_a_bad_publish_body_names_its_field(servers, body, field):
    server = await servers(API)
    status, answer = await call(server, "POST", "/api/publish", body)
    assert status == 400 and answer["field"] == field and answer["error"]


@pytest.mark.gen_test(timeout=10)
async def test_other_bad_requests(servers):
    server = await servers(API)
    assert (await call(server, "GET", "/api/presence?channel=broadcast"))[1]["field"] == "channel"
    assert (await call(server, "GET", "/api/presence"))[0] == 400
    assert (await call(server, "GET", "/api/history?channel=room:a&limit=lots"))[1] == {
        "error": "'limit' must be a number from 1 to 10000",
        "field": "limit",
    }
    assert (await call(server, "POST", "/api/disconnect", {"user": ""}))[1]["field"] == "user"
    assert (await call(server, "GET", "/api/publish"))[0] == 405
    assert await call(server, "GET", "/api/nothing") == (404, {"error": "not found"})


@pytest.mark.parametrize("key", [None, "wrong-key-of-16-chars", ""])
@pytest.mark.gen_test(timeout=10)
async def test_no_or_a_wrong_key_is_401(servers, key):
    server = await servers(API)
    for method, path in [("POST", "/api/publish"), ("GET", "/api/presence?channel=room:a")]:
        body = (
            {"channel": "room:a", "class": "normal", "content": "x"} if method == "POST" else None
        )
        assert await call(server, method, path, body, key=key) == (
            401,
            {"error": "unauthorized"},
        )


@pytest.mark.gen_test(timeout=10)
async def test_with_the_api_off_every_api_path_is_404(servers):
    server = await servers(merge(API, {"api": {"enabled": False}}))
    for path in ("/api/publish", "/api/presence?channel=room:a", "/api/x"):
        assert await call(server, "GET", path) == (404, {"error": "not found"})


@pytest.mark.gen_test(timeout=30)
async def test_the_documented_python_example_publishes(processes, tmp_path):
    write_example(tmp_path)
    server = processes(API)
    listener = await WsClient.connect(server.port)
    await listener.subscribe("room:ops")
    output = run_example(tmp_path, server.port)
    message = await listener.recv_type("message")
    assert output.splitlines() == [message["id"], "1 present"]
    assert message["content"] == "hi"


def write_example(directory) -> None:
    """docs/api.md's Python example, as publish.py in `directory`."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    start = doc.index("```python\n", doc.index("<!-- example: publish.py ")) + len("```python\n")
    (directory / "publish.py").write_text(doc[start : doc.index("```", start)])


def run_example(directory, port: int) -> str:
    import os
    import subprocess
    import sys

    env = {**os.environ, "RELAY_URL": f"http://127.0.0.1:{port}", "RELAY_API_KEY": KEY}
    done = subprocess.run(
        [sys.executable, "publish.py"], cwd=directory, env=env, capture_output=True,
        text=True, check=True, timeout=20,
    )  # fmt: skip
    return done.stdout
