"""Two instances on one Redis behave as one service."""

from __future__ import annotations

import pytest

from tests.conftest import redis_changes
from tests.support.config import merge
from tests.support.waiting import connections_settle
from tests.support.ws_client import WsClient


async def pair(servers, redis_server, key_prefix, changes: dict | None = None):
    config = merge(redis_changes(redis_server.url, key_prefix), changes or {})
    a = await servers(config, instance_id="A")
    b = await servers(config, instance_id="B")
    return a, b


@pytest.mark.gen_test(timeout=15)
async def test_a_message_reaches_every_client_on_both_instances_exactly_once(
    servers, redis_server, key_prefix
):
    a, b = await pair(servers, redis_server, key_prefix)
    on_a = [await WsClient.connect(a.port) for _ in range(2)]
    on_b = [await WsClient.connect(b.port) for _ in range(2)]
    assert on_a[0].welcome["instance"] == "A" and on_b[0].welcome["instance"] == "B"
    await on_a[0].send("critical", "across")
    for client in on_a + on_b:
        frame = await client.recv_type("message")
        assert frame["content"] == "across" and frame["priority"] == 10
        await client.nothing_for(0.3)  # no echo delivered twice


@pytest.mark.gen_test(timeout=20)
async def test_messages_of_one_sender_arrive_in_order_everywhere(servers, redis_server, key_prefix):
    a, b = await pair(servers, redis_server, key_prefix)
    sender = await WsClient.connect(a.port)
    receiver = await WsClient.connect(b.port)
    for i in range(100):
        await sender.send("normal", str(i))
    got = [int(f["content"]) for f in await receiver.messages(100)]
    assert got == list(range(100))
    mine = [int(f["content"]) for f in await sender.messages(100)]
    assert mine == list(range(100))


@pytest.mark.gen_test(timeout=15)
async def test_a_session_resumes_on_the_other_instance_with_what_it_missed(
    servers, redis_server, key_prefix
):
    a, b = await pair(servers, redis_server, key_prefix, {"plugins": {"history": {"replay": 0}}})
    talker = await WsClient.connect(a.port)
    mover = await WsClient.connect(a.port)
    await mover.send("normal", "before")
    await talker.recv_type("message")
    await mover.recv_type("message")
    mover.close()
    await connections_settle(a, 1)
    await talker.send("normal", "while away 1")
    await talker.send("normal", "while away 2")
    await talker.messages(2)
    back = await WsClient.connect(b.port, session=mover.session)
    assert back.welcome["resumed"] is True
    assert back.client_id == mover.client_id
    assert back.welcome["messages"] == 1  # the same counters
    assert back.welcome["instance"] == "B"
    await talker.send("normal", "new")
    frames = await back.messages(3)
    assert [f["content"] for f in frames] == ["while away 1", "while away 2", "new"]
    assert [f.get("history", False) for f in frames] == [True, True, False]
    await back.nothing_for(0.3)


@pytest.mark.gen_test(timeout=15)
async def test_the_per_ip_limit_counts_connections_on_every_instance(
    servers, redis_server, key_prefix
):
    a, b = await pair(
        servers, redis_server, key_prefix, {"plugins": {"throttle": {"max_connections_per_ip": 3}}}
    )
    held = [await WsClient.connect(a.port), await WsClient.connect(a.port)]
    held.append(await WsClient.connect(b.port))
    for port in (a.port, b.port):
        refused = await WsClient.connect(port, wait_welcome=False)
        assert (await refused.recv())["code"] == "too_many_connections"
        assert await refused.closed() == 1008
    held[0].close()
    await connections_settle(a, 1)
    assert (await WsClient.connect(b.port)).welcome["type"] == "welcome"


@pytest.mark.gen_test(timeout=15)
async def test_one_session_on_two_instances_shares_one_bucket(servers, redis_server, key_prefix):
    a, b = await pair(
        servers,
        redis_server,
        key_prefix,
        {"plugins": {"ratelimit": {"max_messages_per_second": 0.01, "burst": 6}}},
    )
    first = await WsClient.connect(a.port)
    second = await WsClient.connect(b.port, session=first.session)
    assert second.client_id == first.client_id
    for i in range(6):  # both at once, as fast as they can
        await first.send("normal", f"a{i}")
        await second.send("normal", f"b{i}")
    frames = await drain(first) + await drain(second)
    rejected = [f for f in frames if f["type"] == "error" and f["code"] == "rate_limited"]
    accepted = {f["content"] for f in frames if f["type"] == "message"}
    assert len(accepted) == 6 and len(rejected) == 6


async def drain(client: WsClient, quiet: float = 0.5) -> list[dict]:
    frames = []
    try:
        while True:
            frames.append(await client.recv(quiet))
    except TimeoutError:
        return frames
