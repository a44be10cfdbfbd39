"""Dynamic heartbeats: the interval follows the client count; silent clients are closed."""

from __future__ import annotations

import asyncio

import pytest

from plugins.heartbeat import DEFAULT_TIERS, Tier, choose_interval, tick_now_on_change
from tests.support.metrics import sample
from tests.support.raw_ws import RawWebSocket
from tests.support.ws_client import WsClient

FAST_TIERS = {
    "plugins": {
        "heartbeat": {
            "timeout": 0.4,
            "tiers": [{"max_clients": 1, "interval": 0.2}, {"interval": 0.6}],
        }
    }
}


def test_the_first_tier_holding_the_count_wins():
    assert choose_interval(DEFAULT_TIERS, 0) == 5
    assert choose_interval(DEFAULT_TIERS, 1) == 5
    assert choose_interval(DEFAULT_TIERS, 2) == 15
    assert choose_interval(DEFAULT_TIERS, 3) == 30
    assert choose_interval(DEFAULT_TIERS, 10_000) == 30


def test_past_a_bounded_last_tier_its_interval_still_applies():
    tiers = (Tier(1.0, 10), Tier(2.0, 20))
    assert choose_interval(tiers, 21) == 2.0


def test_a_tier_change_ticks_at_once_only_when_the_new_interval_has_passed():
    assert tick_now_on_change(last_tick=100.0, now=106.0, new_interval=5.0)
    assert not tick_now_on_change(last_tick=100.0, now=103.0, new_interval=5.0)


@pytest.mark.gen_test(timeout=10)
async def test_heartbeats_carry_the_interval_of_the_current_tier(servers):
    server = await servers(FAST_TIERS)
    first = await WsClient.connect(server.port)
    assert first.welcome["heartbeat"] == {"interval": 0.2}
    beat = await first.recv_type("heartbeat", timeout=2)
    assert beat["interval"] == 0.2 and beat["clients"] == 1
    assert isinstance(beat["ts"], float)
    second = await WsClient.connect(server.port)
    assert second.welcome["heartbeat"] == {"interval": 0.6}
    # The first client is told the new interval at once, not at its next tick.
    announced = await first.recv_type("heartbeat", timeout=0.15, interval=0.6)
    assert announced["clients"] == 2
    # The next frames carry the new interval.
    beat = await second.recv_type("heartbeat", timeout=2)
    assert beat == {**beat, "interval": 0.6, "clients": 2}
    second.close()
    beat = await first.recv_type("heartbeat", timeout=2, interval=0.2)
    assert beat["clients"] == 1


@pytest.mark.gen_test(timeout=10)
async def test_the_interval_between_heartbeats_follows_the_tier(servers):
    server = await servers(FAST_TIERS)
    client = await WsClient.connect(server.port)
    loop = asyncio.get_running_loop()
    await client.recv_type("heartbeat", timeout=2)
    start = loop.time()
    for _ in range(3):
        await client.recv_type("heartbeat", timeout=2)
    assert 0.45 <= loop.time() - start <= 1.2  # three 0.2 s intervals, with slack


@pytest.mark.gen_test(timeout=10)
async def test_a_client_that_answers_no_ping_is_closed_after_the_timeout(servers):
    server = await servers(FAST_TIERS)
    silent = await RawWebSocket.connect(server.port)
    assert (await silent.read_json())["type"] == "welcome"
    loop = asyncio.get_running_loop()
    start = loop.time()
    # Read (so the socket is not merely full) but never answer a ping.
    assert await silent.close_code(timeout=3) == 1011
    assert 0.4 <= loop.time() - start <= 2.0
    assert sample(server, "ws_heartbeat_timeouts_total") == 1


@pytest.mark.gen_test(timeout=10)
async def test_a_client_that_answers_pings_stays_open_past_the_timeout(servers):
    server = await servers(FAST_TIERS)
    client = await WsClient.connect(server.port)  # tornado answers pings itself
    # Time is counted in beats (one every 0.2 s, each with a ping), not slept: by the
    # fifth, the first two pings' timeouts (0.4 s) have passed and been checked, and a
    # client that had not answered them would be closed, as in the test above.
    for _ in range(5):
        await client.recv_type("heartbeat", timeout=2)
    await client.send("normal", "still alive")
    assert (await client.recv_type("message"))["content"] == "still alive"
    assert sample(server, "ws_heartbeat_timeouts_total") == 0


@pytest.mark.gen_test(timeout=10)
async def test_without_the_plugin_there_are_no_heartbeats(servers):
    # The fast tiers (a beat every 0.2 s), turned off: on, they would beat twice in 0.5 s.
    fast_but_off = {**FAST_TIERS["plugins"]["heartbeat"], "enabled": False}
    server = await servers({"plugins": {"heartbeat": fast_but_off}})
    client = await WsClient.connect(server.port)
    assert client.welcome["heartbeat"] == {"interval": None}
    await client.nothing_for(0.5, kind="heartbeat")
