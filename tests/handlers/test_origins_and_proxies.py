"""Origins (403 at the handshake) and proxies (X-Forwarded-For only from trusted ones)."""

from __future__ import annotations

import pytest
from tornado.httpclient import HTTPClientError

from core.access.client_ip import ClientAddress
from tests.support.ws_client import WsClient


@pytest.mark.gen_test(timeout=10)
async def test_a_browser_from_another_origin_is_refused_with_403(servers):
    server = await servers()
    with pytest.raises(HTTPClientError) as refused:
        await WsClient.connect(server.port, headers={"Origin": "https://evil.example"})
    assert refused.value.code == 403
    same = await WsClient.connect(
        server.port, headers={"Origin": f"http://127.0.0.1:{server.port}"}
    )
    assert same.welcome["type"] == "welcome"
    no_origin = await WsClient.connect(server.port)  # not a browser
    assert no_origin.welcome["type"] == "welcome"


@pytest.mark.gen_test(timeout=10)
async def test_allowed_origins_let_those_browsers_in(servers):
    server = await servers({"server": {"allowed_origins": ["https://app.example.com"]}})
    ok = await WsClient.connect(server.port, headers={"Origin": "https://app.example.com"})
    assert ok.welcome["type"] == "welcome"
    with pytest.raises(HTTPClientError):
        await WsClient.connect(server.port, headers={"Origin": "https://other.example.com"})
    anyone = await servers({"server": {"allowed_origins": ["*"]}})
    assert (await WsClient.connect(anyone.port, headers={"Origin": "https://x.example"})).welcome[
        "type"
    ] == "welcome"


@pytest.mark.gen_test(timeout=10)
async def test_a_forged_forwarded_for_does_not_dodge_the_per_ip_limit(servers):
    server = await servers({"plugins": {"throttle": {"max_connections_per_ip": 2}}})
    for i in range(2):
        await WsClient.connect(server.port, headers={"X-Forwarded-For": f"10.0.0.{i}"})
    refused = await WsClient.connect(
        server.port, headers={"X-Forwarded-For": "10.0.0.99"}, wait_welcome=False
    )
    assert (await refused.recv())["code"] == "too_many_connections"


@pytest.mark.gen_test(timeout=10)
async def test_behind_a_trusted_proxy_each_client_has_its_own_limit(servers):
    server = await servers(
        {
            "server": {"trusted_proxies": ["127.0.0.1"]},
            "plugins": {"throttle": {"max_connections_per_ip": 1}},
        }
    )
    a = await WsClient.connect(server.port, headers={"X-Forwarded-For": "203.0.113.5"})
    b = await WsClient.connect(server.port, headers={"X-Forwarded-For": "203.0.113.6"})
    assert a.welcome["type"] == b.welcome["type"] == "welcome"
    again = await WsClient.connect(
        server.port, headers={"X-Forwarded-For": "203.0.113.5"}, wait_welcome=False
    )
    assert (await again.recv())["code"] == "too_many_connections"
    assert sorted(c.ip for c in server.hub.connections()) == ["203.0.113.5", "203.0.113.6"]


def test_forwarded_for_is_read_from_the_right_through_trusted_hops_only():
    resolve = ClientAddress(["10.0.0.0/8", "192.168.1.1"]).resolve
    assert resolve("10.1.1.1", "198.51.100.7") == "198.51.100.7"
    # A client-supplied (forged) left part is not believed past the first untrusted hop.
    assert resolve("10.1.1.1", "1.2.3.4, 198.51.100.7, 192.168.1.1") == "198.51.100.7"
    assert resolve("203.0.113.9", "1.2.3.4") == "203.0.113.9"  # untrusted peer
    assert resolve("10.1.1.1", None) == "10.1.1.1"
    assert resolve("10.1.1.1", "garbage") == "10.1.1.1"
    assert resolve("10.1.1.1", "10.2.2.2") == "10.2.2.2"  # only proxies: the farthest
    assert ClientAddress([]).resolve("10.1.1.1", "1.2.3.4") == "10.1.1.1"
    assert ClientAddress(["::1"]).resolve("::1", "2001:db8::1") == "2001:db8::1"
