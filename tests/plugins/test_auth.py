"""Identity: the app's JWT on connect, its claims, guests, expiry and refresh, over real
sockets."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from core.config.schema import ConfigError
from tests.channels.test_subscribing import CHANNELS
from tests.support import config as test_config
from tests.support.config import merge
from tests.support.ws_client import WsClient

ROOT = Path(__file__).resolve().parents[2]
SECRET = "a-test-secret-of-at-least-thirty-two-bytes"
AUTH = merge(CHANNELS, {"plugins": {"auth": {"enabled": True, "secret": SECRET, "leeway": 0}}})


def mint(sub: str = "alice", ttl: float = 600, key=SECRET, algorithm="HS256", **claims) -> str:
    payload = {"sub": sub, "exp": int(time.time() + ttl), **claims}
    return jwt.encode(payload, key, algorithm=algorithm)


async def connect(server, token: str | None = None, **options) -> WsClient:
    client = await WsClient.connect(server.port, token=token, wait_welcome=False, **options)
    first = await client.recv()
    client.welcome = first if first["type"] == "welcome" else None
    client.first = first
    return client


async def refused(client: WsClient) -> str:
    assert client.first["type"] == "error", client.first
    assert client.first["code"] == "unauthorized"
    assert await client.closed() == 1008
    return client.first["message"]


async def start(servers, changes: dict | None = None):
    server = await servers(merge(AUTH, changes or {}))
    assert next(iter(server.plugins)) == "auth"  # first: checked before anything else
    return server


@pytest.mark.gen_test(timeout=10)
async def test_a_valid_token_makes_its_sub_the_user(servers):
    server = await start(servers)
    alice = await connect(server, mint("alice"))
    assert alice.welcome["user"] == "alice"
    assert alice.welcome["channels"] == ["broadcast", "user:alice"]
    bob = await connect(server, mint("bob"))
    await bob.subscribe("room:lobby")
    joined = await alice.subscribe("room:lobby")
    assert {c["user"] for c in joined["presence"]} == {"alice", "bob"}
    await alice.publish("room:lobby", "hello")
    message = await bob.recv_type("message")
    assert (message["user"], message["from"]) == ("alice", alice.welcome["client_id"])
    await bob.publish("user:alice", "a direct message")
    assert (await alice.recv_type("message", channel="user:alice"))["user"] == "bob"


@pytest.mark.parametrize(
    "token",
    [
        None,
        "not.a.jwt",
        mint(key="another-secret-that-is-also-long-enough-!"),
        mint(ttl=-60),  # expired
        jwt.encode({"exp": int(time.time() + 60)}, SECRET, algorithm="HS256"),  # no sub
        mint(algorithm="HS512"),  # an algorithm not configured
    ],
    ids=["none", "garbage", "bad signature", "expired", "no sub", "other algorithm"],
)
@pytest.mark.gen_test(timeout=10)
async def test_no_bad_or_expired_token_is_unauthorized_before_any_welcome(servers, token):
    server = await start(servers)
    await refused(await connect(server, token))
    assert len(server.hub) == 0


@pytest.mark.gen_test(timeout=10)
async def test_guests_when_anonymous_but_never_with_a_bad_token(servers):
    server = await start(servers, {"plugins": {"auth": {"anonymous": True}}})
    guest = await connect(server)
    assert guest.welcome["user"] == guest.welcome["client_id"]
    await guest.send("critical", "the sky is falling")
    assert (await guest.recv_type("error"))["code"] == "forbidden"  # restricted class
    await guest.send("normal", "hi")
    assert (await guest.recv_type("message"))["content"] == "hi"
    await refused(await connect(server, "not.a.jwt"))


@pytest.mark.gen_test(timeout=10)
async def test_the_classes_claim_allows_restricted_classes(servers):
    server = await start(servers)
    ops = await connect(server, mint("ops", classes=["critical"]))
    user = await connect(server, mint("user"))
    await ops.send("critical", "rolling back")
    assert (await user.recv_type("message"))["class"] == "critical"
    await user.send("critical", "me too")
    error = await user.recv_type("error")
    assert error["code"] == "forbidden" and "critical" in error["message"]


@pytest.mark.gen_test(timeout=10)
async def test_the_channels_claim_limits_subscriptions(servers):
    server = await start(servers)
    client = await connect(server, mint("carol", channels=["room:team-*", "room:all"]))
    assert (await client.subscribe("room:team-red"))["type"] == "subscribed"
    assert (await client.subscribe("room:all"))["type"] == "subscribed"
    assert (await client.subscribe("room:allx"))["code"] == "forbidden"
    assert (await client.subscribe("room:other"))["code"] == "forbidden"
    # The default channel and its own personal channel need no claim.
    assert client.welcome["channels"] == ["broadcast", "user:carol"]


@pytest.mark.gen_test(timeout=15)
async def test_an_expiring_token_closes_the_connection_unless_refreshed(servers):
    server = await start(servers)
    lapsing = await connect(server, mint("dave", ttl=1))
    kept = await connect(server, mint("erin", ttl=1))
    await kept.send_json({"type": "refresh", "token": mint("mallory")})
    assert (await kept.recv_type("error"))["code"] == "unauthorized"  # another user's
    await kept.send_json({"type": "refresh", "token": mint("erin", ttl=60)})
    assert (await kept.recv_type("refreshed"))["type"] == "refreshed"
    error = await lapsing.recv_type("error", timeout=4)
    assert (error["code"], await lapsing.closed()) == ("unauthorized", 1008)
    await kept.send("normal", "still here")
    assert (await kept.recv_type("message"))["content"] == "still here"


@pytest.mark.gen_test(timeout=10)
async def test_public_key_tokens(servers, tmp_path):
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "issuer.pem").write_bytes(pem)
    block = {
        "algorithms": ["ES256"],
        "secret": None,
        "public_key_file": str(tmp_path / "issuer.pem"),
        "audience": "chat",
        "issuer": "https://app.example.com",
    }
    server = await start(servers, {"plugins": {"auth": block}})
    claims = {"aud": "chat", "iss": "https://app.example.com"}
    good = await connect(server, mint("frank", key=private, algorithm="ES256", **claims))
    assert good.welcome["user"] == "frank"
    wrong_audience = mint("frank", key=private, algorithm="ES256", aud="x", iss=claims["iss"])
    await refused(await connect(server, wrong_audience))
    await refused(await connect(server, mint("frank")))  # HS256 is not accepted here


@pytest.mark.gen_test(timeout=10)
async def test_a_users_session_resumes_for_that_user_only(servers):
    server = await start(servers)
    alice = await connect(server, mint("alice"))
    session = alice.welcome["session"]
    alice.close()
    stolen = await connect(server, mint("mallory"), session=session)
    assert stolen.welcome["resumed"] is False  # another user: a session of its own
    back = await connect(server, mint("alice"), session=session)
    assert back.welcome["resumed"] is True and back.welcome["user"] == "alice"


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ({"secret": ""}, "plugins.auth.secret: required for HS* algorithms"),
        ({"secret": "short"}, "plugins.auth.secret: must be at least 32 bytes (256 bits) for HS*"),
        ({"algorithms": ["HS257"]}, "plugins.auth.algorithms[0]: unknown algorithm"),
        (
            {"algorithms": ["HS256", "RS256"]},
            "plugins.auth.algorithms: mix of HS* and public-key algorithms",
        ),
        (
            {"algorithms": ["RS256"], "public_key_file": "/nonexistent.pem"},
            "plugins.auth.public_key_file: cannot read it: No such file or directory",
        ),
    ],
)
def test_auth_settings_mistakes(block, expected):
    with pytest.raises(ConfigError) as caught:
        test_config.settings({"plugins": {"auth": {"enabled": True, **block}}})
    assert expected in str(caught.value)


@pytest.mark.gen_test(timeout=30)
async def test_tokens_are_never_logged(processes):
    server = processes(merge(AUTH, {"logging": {"level": "debug"}}))
    good, bad = mint("grace"), mint("grace", key="x" * 40)
    client = await connect(server, good)
    assert client.welcome["user"] == "grace"
    await refused(await connect(server, bad))
    await client.send_json({"type": "refresh", "token": bad})
    await client.recv_type("error")
    client.close()
    log = server.log()
    assert "/ws" in log  # the requests were logged (at debug), without their query
    for secret in (good, bad, good.split(".")[2], bad.split(".")[2]):
        assert secret not in log


def python_output(args: list[str], cwd: Path) -> str:
    """What `python ARGS` prints, with the test secret in RELAY_JWT_SECRET."""
    env = {**os.environ, "RELAY_JWT_SECRET": SECRET}
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def doc_example(name: str) -> str:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "identity.md").read_text()
    start = doc.index("```python\n", doc.index(f"<!-- example: {name} ")) + len("```python\n")
    return doc[start : doc.index("```", start)]


@pytest.mark.gen_test(timeout=30)
async def test_the_documented_backend_example_and_the_mint_command_make_tokens_that_work(
    servers, tmp_path
):
    server = await start(servers)
    (tmp_path / "mint_token.py").write_text(doc_example("mint_token.py"))
    documented = python_output(["mint_token.py"], tmp_path)
    client = await connect(server, documented)
    assert client.welcome["user"] == "alice"
    assert (await client.subscribe("room:team-red"))["type"] == "subscribed"  # team-*
    assert (await client.subscribe("room:other"))["code"] == "forbidden"
    minted = python_output(["-m", "relay.mint", "henry", "--class", "critical"], ROOT)
    henry = await connect(server, minted)
    await henry.send("critical", "allowed")
    assert (await henry.recv_type("message"))["class"] == "critical"
