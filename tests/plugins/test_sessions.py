"""Sessions: a secret token per client; resuming keeps the client_id and counters."""

from __future__ import annotations

import asyncio

import pytest

from core.stores.sessions_memory import MemorySessionStore
from tests.support.waiting import connections_settle
from tests.support.ws_client import WsClient


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.gen_test(timeout=10)
async def test_each_client_gets_a_public_id_and_a_secret_token(servers):
    server = await servers()
    a = await WsClient.connect(server.port)
    b = await WsClient.connect(server.port)
    assert a.welcome["resumed"] is False
    assert a.client_id != b.client_id and a.session != b.session
    assert a.session != a.client_id
    assert len(a.session) >= 22  # at least 128 random bits, url-safe base64
    await a.send("normal", "hi")
    frame = await b.recv_type("message")
    assert frame["from"] == a.client_id
    assert a.session not in str(frame)  # the token is never broadcast


@pytest.mark.gen_test(timeout=10)
async def test_resuming_keeps_the_client_id_and_the_counters(servers):
    server = await servers()
    first = await WsClient.connect(server.port)
    for i in range(3):
        await first.send("normal", str(i))
    await first.messages(3)
    first.close()
    await connections_settle(server)
    again = await WsClient.connect(server.port, session=first.session)
    assert again.welcome["resumed"] is True
    assert again.client_id == first.client_id
    assert again.session == first.session
    assert again.welcome["messages"] == 3


@pytest.mark.gen_test(timeout=10)
async def test_an_unknown_token_silently_starts_a_new_session(servers):
    server = await servers()
    client = await WsClient.connect(server.port, session="not-a-real-token")
    assert client.welcome["resumed"] is False
    assert client.session != "not-a-real-token"
    assert client.welcome["messages"] == 0


@pytest.mark.gen_test(timeout=10)
async def test_an_expired_session_starts_a_new_one(servers):
    server = await servers({"plugins": {"sessions": {"ttl": 0.3}}})
    first = await WsClient.connect(server.port)
    await first.send("normal", "active")  # so ttl applies, not idle_ttl
    await first.recv_type("message")
    first.close()
    await connections_settle(server)
    await asyncio.sleep(0.5)  # the point: time passes beyond the 0.3 s ttl
    again = await WsClient.connect(server.port, session=first.session)
    assert again.welcome["resumed"] is False
    assert again.client_id != first.client_id


@pytest.mark.gen_test(timeout=10)
async def test_without_the_plugin_nothing_is_resumable(servers):
    server = await servers({"plugins": {"sessions": {"enabled": False}}})
    first = await WsClient.connect(server.port)
    first.close()
    await connections_settle(server)
    again = await WsClient.connect(server.port, session=first.session)
    assert again.welcome["resumed"] is False


@pytest.mark.gen_test
async def test_memory_sessions_expire_after_their_ttl_from_the_last_activity():
    clock = FakeClock()
    store = MemorySessionStore(clock)
    await store.create("tok", "cid", ttl=10)
    clock.now += 8
    assert (await store.resume("tok", ttl=10)).client_id == "cid"  # refreshes the TTL
    clock.now += 8
    store.record_message("tok", int(clock.now * 1000), ttl=10)
    clock.now += 8
    session = await store.resume("tok", ttl=10)
    assert session.message_count == 1
    clock.now += 11
    assert await store.resume("tok", ttl=10) is None
    assert len(store) == 0


@pytest.mark.gen_test
async def test_memory_sessions_are_bounded_in_number():
    store = MemorySessionStore(FakeClock(), capacity=100)
    for i in range(250):
        await store.create(f"t{i}", f"c{i}", ttl=3600)
    assert len(store) == 100
    assert await store.resume("t0", ttl=3600) is None  # the least recently used went first
    assert await store.resume("t249", ttl=3600) is not None


@pytest.mark.gen_test(timeout=10)
async def test_a_session_that_did_nothing_is_kept_only_idle_ttl(servers):
    server = await servers({"plugins": {"sessions": {"ttl": 30, "idle_ttl": 0.3}}})
    idle = await WsClient.connect(server.port)
    active = await WsClient.connect(server.port)
    await active.send("normal", "hello")
    await active.recv_type("message")
    idle.close()
    active.close()
    await connections_settle(server)
    await asyncio.sleep(0.5)  # the point: past idle_ttl, well within ttl
    assert (await WsClient.connect(server.port, session=idle.session)).welcome["resumed"] is False
    again = await WsClient.connect(server.port, session=active.session)
    assert again.welcome["resumed"] is True


@pytest.mark.gen_test(timeout=10)
async def test_an_address_may_open_only_so_many_new_sessions_a_minute(servers):
    server = await servers({"plugins": {"sessions": {"max_new_per_ip_per_minute": 3}}})
    opened = [await WsClient.connect(server.port) for _ in range(3)]
    refused = await WsClient.connect(server.port, wait_welcome=False)
    error = await refused.recv()
    assert error["code"] == "too_many_connections" and "new sessions" in error["message"]
    assert 15 < error["retry_after"] <= 20  # one more in a twentieth of a minute
    assert await refused.closed() == 1008
    # Resuming is not a new session: it is never refused by this limit.
    opened[0].close()
    await connections_settle(server, 2)
    back = await WsClient.connect(server.port, session=opened[0].session)
    assert back.welcome["resumed"] is True
