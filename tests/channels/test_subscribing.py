"""Channels on one instance, over real sockets: subscribe, history then live, routing,
the namespace rules, the limits, presence, personal channels."""

from __future__ import annotations

import pytest

from tests.conftest import redis_changes
from tests.support.config import merge
from tests.support.metrics import sample
from tests.support.waiting import connections_settle, until
from tests.support.ws_client import WsClient

CHANNELS = {
    "channels": {
        "default": "broadcast",
        "max_per_connection": 4,
        "namespaces": {
            "default": {},
            "room": {"presence": True, "publish": "subscribers"},
            "user": {"personal": True, "history": False},
            "news": {"publish": "none"},
            "quiet": {"history": False},
        },
    },
    "plugins": {"history": {"size": 10, "replay": 3, "ttl": 300}},
}


async def start(servers, changes: dict | None = None):
    return await servers(merge(CHANNELS, changes or {}))


@pytest.mark.gen_test(timeout=10)
async def test_the_welcome_names_the_user_and_the_channels_it_is_in(servers):
    server = await start(servers)
    client = await WsClient.connect(server.port)
    user = client.welcome["user"]
    assert user == client.client_id  # no authentication: the client_id
    assert client.welcome["channels"] == ["broadcast", f"user:{user}"]


@pytest.mark.gen_test(timeout=10)
async def test_subscribed_then_that_channels_history_then_live(servers):
    server = await start(servers)
    sender = await WsClient.connect(server.port)
    assert (await sender.subscribe("room:lobby"))["type"] == "subscribed"
    for i in range(5):
        await sender.publish("room:lobby", f"old {i}")
    await sender.messages(5)
    late = await WsClient.connect(server.port)
    await late.send_json({"type": "subscribe", "channel": "room:lobby"})
    await sender.publish("room:lobby", "new")
    subscribed = await late.recv_type("subscribed")
    assert subscribed["channel"] == "room:lobby" and "recovered" not in subscribed
    frames = await late.messages(4)
    assert [(f["content"], f.get("history", False)) for f in frames] == [
        ("old 2", True),
        ("old 3", True),
        ("old 4", True),
        ("new", False),
    ]
    assert {f["channel"] for f in frames} == {"room:lobby"}
    assert {f["user"] for f in frames} == {sender.client_id}
    await late.nothing_for(0.2)  # no duplicate


@pytest.mark.gen_test(timeout=10)
async def test_only_subscribers_get_a_channels_messages(servers):
    server = await start(servers)
    inside, outside = await WsClient.connect(server.port), await WsClient.connect(server.port)
    await inside.subscribe("room:a")
    await inside.publish("room:a", "for the room")
    await inside.send("normal", "for everyone")  # no channel: the default one
    got = await inside.messages(2)
    assert [(f["channel"], f["content"]) for f in got] == [
        ("room:a", "for the room"),
        ("broadcast", "for everyone"),
    ]
    only = await outside.recv_type("message")
    assert (only["channel"], only["content"]) == ("broadcast", "for everyone")
    await outside.nothing_for(0.2)


@pytest.mark.gen_test(timeout=10)
async def test_unsubscribed_and_a_second_subscribe_is_answered_without_history(servers):
    server = await start(servers)
    client = await WsClient.connect(server.port)
    other = await WsClient.connect(server.port)
    await client.subscribe("room:a")
    await other.subscribe("room:a")
    await other.publish("room:a", "one")
    await client.recv_type("message")
    again = await client.subscribe("room:a")
    assert again["type"] == "subscribed"
    await client.nothing_for(0.2)  # no replay the second time
    await client.send_json({"type": "unsubscribe", "channel": "room:a"})
    assert (await client.answer("room:a", "unsubscribed"))["type"] == "unsubscribed"
    await other.publish("room:a", "two")
    await other.recv_type("message")
    await client.nothing_for(0.2)


@pytest.mark.parametrize(
    ("channel", "code"),
    [
        ("room:", "invalid_channel"),
        ("has space", "invalid_channel"),
        ("x" * 129, "invalid_channel"),
        (42, "invalid_channel"),
        ("nowhere:x", "invalid_channel"),  # an unlisted namespace
        ("user:someone-else", "forbidden"),  # somebody's personal channel
    ],
)
@pytest.mark.gen_test(timeout=10)
async def test_bad_channels_are_refused_and_nothing_leaks(servers, channel, code):
    server = await start(servers)
    client = await WsClient.connect(server.port)
    await client.send_json({"type": "subscribe", "channel": channel})
    error = await client.recv_type("error")
    assert error["code"] == code
    assert server.hub.channels() == ["broadcast", f"user:{client.client_id}"]
    await client.send("normal", "still here")
    assert (await client.recv_type("message"))["content"] == "still here"


@pytest.mark.gen_test(timeout=10)
async def test_at_most_max_per_connection_channels_personal_ones_not_counted(servers):
    server = await start(servers)
    client = await WsClient.connect(server.port)
    for name in ("room:1", "room:2", "room:3"):  # + broadcast = 4
        assert (await client.subscribe(name))["type"] == "subscribed"
    refused = await client.subscribe("room:4")
    assert (refused["code"], refused["limit"]) == ("too_many_channels", 4)
    await client.send_json({"type": "unsubscribe", "channel": "room:1"})
    await client.answer("room:1", "unsubscribed")
    assert (await client.subscribe("room:4"))["type"] == "subscribed"


@pytest.mark.gen_test(timeout=10)
async def test_who_may_publish_is_the_namespaces_rule(servers):
    server = await start(servers)
    client = await WsClient.connect(server.port)
    await client.publish("room:closed", "not in it")
    assert (await client.recv_type("error"))["code"] == "not_subscribed"
    await client.publish("news:today", "backend only")
    assert (await client.recv_type("error"))["code"] == "forbidden"
    await client.publish("open", "anyone may")  # namespace default: publish any
    await client.nothing_for(0.2, kind="error")
    assert sample(server, "ws_messages_published_total", namespace="default") == 1


@pytest.mark.gen_test(timeout=10)
async def test_a_direct_message_reaches_its_user_alone(servers):
    server = await start(servers)
    alice, bob, eve = [await WsClient.connect(server.port) for _ in range(3)]
    await alice.publish(f"user:{bob.client_id}", "hello bob")
    dm = await bob.recv_type("message")
    assert (dm["channel"], dm["user"], dm["content"]) == (
        f"user:{bob.client_id}",
        alice.client_id,
        "hello bob",
    )
    await eve.nothing_for(0.2)
    await alice.nothing_for(0.1)  # the sender is not in bob's channel either
    refused = await eve.subscribe(f"user:{bob.client_id}")
    assert refused["code"] == "forbidden"


@pytest.mark.gen_test(timeout=10)
async def test_presence_lists_joins_and_leaves(servers):
    server = await start(servers)
    alice = await WsClient.connect(server.port)
    subscribed = await alice.subscribe("room:lobby")
    assert subscribed["presence"] == [{"client_id": alice.client_id, "user": alice.user}]
    bob = await WsClient.connect(server.port)
    joined = await bob.subscribe("room:lobby")
    assert sorted(c["client_id"] for c in joined["presence"]) == sorted(
        [alice.client_id, bob.client_id]
    )
    join = await alice.recv_type("join")
    assert (join["channel"], join["client_id"]) == ("room:lobby", bob.client_id)
    await bob.nothing_for(0.2, kind="join")  # not told about itself
    await alice.send_json({"type": "presence", "channel": "room:lobby"})
    listed = await alice.answer("room:lobby", "presence")
    assert len(listed["clients"]) == 2
    bob.close()
    leave = await alice.recv_type("leave")
    assert (leave["channel"], leave["client_id"]) == ("room:lobby", bob.client_id)
    await alice.send_json({"type": "presence", "channel": "broadcast"})
    assert (await alice.recv_type("error"))["code"] == "forbidden"  # no presence there


@pytest.mark.gen_test(timeout=10)
async def test_recovering_from_an_id_says_whether_the_history_reaches_it(servers):
    server = await start(servers)
    sender = await WsClient.connect(server.port)
    await sender.subscribe("room:r")
    for i in range(12):  # history.size is 10: the first two fall out
        await sender.publish("room:r", f"m{i}")
    got = await sender.messages(12)
    reader = await WsClient.connect(server.port)
    recent = await reader.subscribe("room:r", since=got[5]["id"])
    assert recent["recovered"] is True
    assert [f["content"] for f in await reader.messages(6)] == [f"m{i}" for i in range(6, 12)]
    other = await WsClient.connect(server.port)
    old = await other.subscribe("room:r", since=got[0]["id"])
    assert old["recovered"] is False  # m1 is gone from the history
    assert [f["content"] for f in await other.messages(10)] == [f"m{i}" for i in range(2, 12)]


@pytest.mark.gen_test(timeout=10)
async def test_a_resumed_session_is_back_in_its_channels_with_what_it_missed(servers):
    server = await start(servers)
    sender = await WsClient.connect(server.port)
    await sender.subscribe("room:a")
    reader = await WsClient.connect(server.port)
    await reader.subscribe("room:a")
    await sender.publish("room:a", "seen")
    await reader.recv_type("message")
    reader.close()
    await connections_settle(server, 1)
    await sender.publish("room:a", "missed 1")
    await sender.send("normal", "missed on broadcast")
    await sender.publish("room:a", "missed 2")
    back = await WsClient.connect(server.port, session=reader.session)
    assert back.welcome["resumed"] is True
    assert "room:a" in back.welcome["channels"]
    got = await back.messages(3)
    by_channel = sorted((f["channel"], f["content"]) for f in got)
    assert by_channel == [
        ("broadcast", "missed on broadcast"),
        ("room:a", "missed 1"),
        ("room:a", "missed 2"),
    ]
    assert all(f["history"] for f in got)
    await sender.publish("room:a", "live")
    assert (await back.recv_type("message"))["content"] == "live"


@pytest.mark.parametrize("store", ["memory", "redis"])
@pytest.mark.parametrize("replay", [0, 3])
@pytest.mark.gen_test(timeout=15)
async def test_a_resumed_session_gets_what_it_missed_where_nothing_had_reached_it(
    servers, request, store, replay
):
    """A channel in which the connection was delivered nothing live (only the history of
    its subscribe, or not even that) still has its place kept: what was published there
    while the client was away comes back once on resume, and nothing from before."""
    changes: dict = {"plugins": {"history": {"replay": replay}}}
    if store == "redis":
        url = request.getfixturevalue("redis_server").url
        changes = merge(changes, redis_changes(url, request.getfixturevalue("key_prefix")))
    server = await start(servers, changes)
    sender = await WsClient.connect(server.port)
    # Published where nobody here listens, so nothing is ever fanned out in "lounge".
    for i in range(4):
        await sender.publish("lounge", f"before {i}")
    await sender.subscribe("room:sync")  # answered once the messages before it are in
    reader = await WsClient.connect(server.port)
    await reader.subscribe("lounge")
    assert [f["content"] for f in await reader.messages(replay)] == [
        f"before {i}" for i in range(4 - replay, 4)
    ]
    reader.close()
    await connections_settle(server, 1)
    await sender.publish("lounge", "missed in the lounge")
    await sender.send("normal", "missed on broadcast")
    await sender.recv_type("message")  # its own, after the lounge one was published

    back = await WsClient.connect(server.port, session=reader.session)
    assert back.welcome["resumed"] is True and "lounge" in back.welcome["channels"]
    got = await back.messages(2)
    assert sorted((f["channel"], f["content"], f["history"]) for f in got) == [
        ("broadcast", "missed on broadcast", True),
        ("lounge", "missed in the lounge", True),
    ]
    await back.nothing_for(0.2)  # nothing from before it left


@pytest.mark.parametrize(
    ("frame", "echoed"),
    [
        ({"type": "subscribe", "channel": "room:"}, "room:"),
        ({"type": "unsubscribe", "channel": "has space"}, "has space"),
        ({"type": "presence", "channel": "x" * 129}, "x" * 129),
        ({"type": "normal", "content": "hi", "channel": "bad/name"}, "bad/name"),
        ({"type": "subscribe", "channel": 42}, 42),
        ({"type": "subscribe"}, None),  # no channel in the frame: none in the answer
        ({"type": "subscribe", "channel": ["room:a"]}, None),  # not a value to send back
    ],
)
@pytest.mark.gen_test(timeout=10)
async def test_invalid_channel_names_the_channel_of_the_frame(servers, frame, echoed):
    server = await start(servers)
    client = await WsClient.connect(server.port)
    await client.send_json(frame)
    error = await client.recv_type("error")
    assert error["code"] == "invalid_channel"
    if echoed is None:
        assert "channel" not in error
    else:
        assert error["channel"] == echoed


@pytest.mark.gen_test(timeout=10)
async def test_invalid_channel_leaves_out_a_name_that_cannot_be_sent_back(servers):
    server = await start(servers)
    client = await WsClient.connect(server.port)
    # JSON can spell a lone surrogate, which no text frame can carry back.
    await client.send_raw('{"type": "subscribe", "channel": "room:\\ud800"}')
    error = await client.recv_type("error")
    assert error["code"] == "invalid_channel" and "channel" not in error
    await client.send("normal", "still open")
    assert (await client.recv_type("message"))["content"] == "still open"


@pytest.mark.gen_test(timeout=10)
async def test_subscribing_spends_the_rate_limit(servers):
    server = await start(
        servers, {"plugins": {"ratelimit": {"max_messages_per_second": 0.01, "burst": 2}}}
    )
    client = await WsClient.connect(server.port)
    assert (await client.subscribe("room:1"))["type"] == "subscribed"
    assert (await client.subscribe("room:2"))["type"] == "subscribed"
    refused = await client.subscribe("room:3")
    assert refused["code"] == "rate_limited" and refused["retry_after"] > 0


@pytest.mark.gen_test(timeout=10)
async def test_a_v1_config_has_one_default_channel_and_every_name_in_default(servers):
    server = await servers({"plugins": {"pubsub": {"channel": "everyone"}}})
    client = await WsClient.connect(server.port)
    assert client.welcome["channels"] == ["everyone"]  # no personal namespace listed
    assert (await client.subscribe("room:x"))["type"] == "subscribed"  # namespace default
    await client.send("normal", "hi")
    assert (await client.recv_type("message"))["channel"] == "everyone"


@pytest.mark.gen_test(timeout=10)
async def test_metrics_count_channels_subscriptions_and_presence(servers):
    server = await start(servers)
    a, b = await WsClient.connect(server.port), await WsClient.connect(server.port)
    await a.subscribe("room:x")
    await b.subscribe("room:x")
    # broadcast, user:a, user:b, room:x; subscriptions: 2 + 2 + 2
    await until(lambda: sample(server, "ws_channels") == 4)
    assert sample(server, "ws_subscriptions") == 6
    assert sample(server, "ws_presence_members") == 2
    b.close()
    await until(lambda: sample(server, "ws_subscriptions") == 3)
    assert sample(server, "ws_channels") == 3 and sample(server, "ws_presence_members") == 1
