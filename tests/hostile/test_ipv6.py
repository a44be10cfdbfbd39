"""Finding 10 of the hostile review, the IPv6 part: per-IP limits counted each address,
so one subscriber's /64 (2^64 addresses) had unlimited slots. Now an IPv6 client counts
by its network (`server.ipv6_prefix`, 64 bits by default)."""

from __future__ import annotations

import pytest

from core.access.client_ip import ClientAddress
from tests.support.ws_client import WsClient


def test_an_ipv6_address_counts_by_its_network():
    by64 = ClientAddress([], ipv6_prefix=64)
    assert by64.limit_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert by64.limit_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert by64.limit_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert by64.limit_key("203.0.113.7") == "203.0.113.7"
    assert by64.limit_key("::ffff:203.0.113.7") == "203.0.113.7"  # IPv4, mapped
    assert ClientAddress([], ipv6_prefix=128).limit_key("2001:db8::1") == "2001:db8::1/128"


@pytest.mark.gen_test(timeout=10)
async def test_addresses_of_one_ipv6_network_share_the_connection_limit(servers):
    server = await servers(
        {
            "server": {"trusted_proxies": ["127.0.0.1"]},
            "plugins": {"throttle": {"max_connections_per_ip": 2}},
        }
    )

    def behind_proxy(address: str):
        return WsClient.connect(
            server.port, headers={"X-Forwarded-For": address}, wait_welcome=False
        )

    first = await behind_proxy("2001:db8:1:2::1")
    second = await behind_proxy("2001:db8:1:2::abcd")
    third = await behind_proxy("2001:db8:1:2:ffff::9")  # same /64: over the limit
    other = await behind_proxy("2001:db8:1:3::1")  # another network: its own slots
    assert (await first.recv())["type"] == "welcome"
    assert (await second.recv())["type"] == "welcome"
    assert (await third.recv())["code"] == "too_many_connections"
    assert (await other.recv())["type"] == "welcome"
    print("3 addresses of one /64 against a limit of 2: 2 admitted, 1 refused")
