"""The dev token endpoint: off unless configured; when on, the token it signs is one the
auth plugin accepts (the page signs people in by name with it)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from core.config.loader import load_settings
from core.config.schema import ConfigError
from plugins import REGISTRY
from tests.plugins.test_auth import AUTH, connect
from tests.support import config as test_config
from tests.support.config import merge
from tests.support.ws_client import WsClient

DEV = merge(AUTH, {"plugins": {"auth": {"dev_tokens": True}}})


async def ask(server, body=None, method="POST", origin: str | None = None) -> tuple[int, dict]:
    headers = {"Origin": origin} if origin else {}
    if body is not None and not isinstance(body, (str, bytes)):
        body = json.dumps(body)
    try:
        response = await AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{server.port}/auth/dev-token",
            method=method,
            headers=headers,
            body=body,
        )
    except HTTPClientError as error:
        response = error.response
    return response.code, json.loads(response.body)


@pytest.mark.gen_test(timeout=10)
async def test_off_by_default_and_with_auth_off(servers):
    for changes in (AUTH, {}):
        server = await servers(changes)
        assert await ask(server, {"user": "alice"}) == (404, {"error": "not found"})
        assert (await ask(server, method="GET"))[0] == 404


@pytest.mark.gen_test(timeout=10)
async def test_a_dev_token_signs_a_user_in_by_name(servers, caplog):
    with caplog.at_level(logging.WARNING):
        server = await servers(DEV)
    assert "anyone can sign in as anyone" in caplog.text
    assert await ask(server, method="GET") == (200, {"dev_tokens": True})
    status, issued = await ask(server, {"user": "alice", "classes": ["critical"]})
    assert status == 200 and issued["user"] == "alice"
    alice = await connect(server, issued["token"])
    assert alice.welcome["user"] == "alice"
    _, plain = await ask(server, {"user": "bob", "channels": ["room:one"]})
    bob = await connect(server, plain["token"])
    await alice.send("critical", "allowed")
    assert (await bob.recv_type("message"))["content"] == "allowed"
    await bob.send("critical", "no")
    assert (await bob.recv_type("error"))["code"] == "forbidden"
    await bob.send_json({"type": "subscribe", "channel": "room:two"})
    assert (await bob.recv_type("error"))["code"] == "forbidden"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("[]", "body"),
        ({}, "user"),
        ({"user": ""}, "user"),
        ({"user": "a b"}, "user"),
        ({"user": "x" * 65}, "user"),
        ({"user": "alice", "classes": "critical"}, "classes"),
        ({"user": "alice", "channels": [1]}, "channels"),
    ],
)
@pytest.mark.gen_test(timeout=10)
async def test_bad_requests_name_the_field(servers, body, field):
    server = await servers(DEV)
    status, answer = await ask(server, body)
    assert (status, answer["field"]) == (400, field), answer


@pytest.mark.gen_test(timeout=10)
async def test_other_origins_are_refused_unless_allowed(servers):
    server = await servers(merge(DEV, {"server": {"allowed_origins": ["https://app.test"]}}))
    same = f"http://127.0.0.1:{server.port}"
    assert (await ask(server, {"user": "a"}, origin=same))[0] == 200
    assert (await ask(server, {"user": "a"}, origin="https://app.test"))[0] == 200
    assert await ask(server, {"user": "a"}, origin="https://evil.test") == (
        403,
        {"error": "forbidden"},
    )


def test_dev_tokens_need_a_secret_to_sign_with():
    block = {"enabled": True, "algorithms": ["RS256"], "dev_tokens": True}
    with pytest.raises(ConfigError, match=r"plugins\.auth\.dev_tokens: needs an HS"):
        test_config.settings({"plugins": {"auth": block}})


@pytest.mark.gen_test(timeout=10)
async def test_a_guest_page_still_connects_while_dev_tokens_are_on(servers):
    server = await servers(merge(DEV, {"plugins": {"auth": {"anonymous": True}}}))
    guest = await WsClient.connect(server.port)
    assert guest.welcome["user"] == guest.welcome["client_id"]


def test_the_shipped_config_turns_them_on_only_from_the_environment():
    shipped = str(Path(__file__).resolve().parents[2] / "config.yaml")
    assert load_settings(shipped, REGISTRY, environ={}).plugin("auth") is None
    demo = {"RELAY_AUTH": "true", "RELAY_DEV_TOKENS": "true", "RELAY_JWT_SECRET": "s" * 32}
    assert load_settings(shipped, REGISTRY, environ=demo).plugin("auth").dev_tokens is True
