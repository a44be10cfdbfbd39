"""History: late joiners get recent messages, resumed sessions what they missed."""

from __future__ import annotations

import logging

import pytest

from core.stores.broker import LogPolicy
from core.stores.broker_memory import MemoryBroker
from core.wire.entry import Entry
from core.wire.ids import IdClock
from tests.conftest import redis_changes
from tests.support.config import merge
from tests.support.metrics import sample
from tests.support.waiting import connections_settle
from tests.support.ws_client import WsClient

REPLAY_3 = {"plugins": {"history": {"size": 10, "replay": 3, "ttl": 300}}}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def send_all(client: WsClient, contents: list[str]) -> None:
    for c in contents:
        await client.send("normal", c)
    await client.messages(len(contents))


@pytest.mark.gen_test(timeout=10)
async def test_a_new_session_gets_the_last_replay_messages_marked_as_history(servers):
    server = await servers(REPLAY_3)
    sender = await WsClient.connect(server.port)
    await send_all(sender, ["1", "2", "3", "4", "5"])
    late = await WsClient.connect(server.port)
    history = [await late.recv() for _ in range(3)]
    assert [h["content"] for h in history] == ["3", "4", "5"]
    assert all(h["type"] == "message" and h["history"] is True for h in history)
    await sender.send("normal", "live")
    live = await late.recv()
    assert live["content"] == "live" and "history" not in live


@pytest.mark.gen_test(timeout=10)
async def test_a_resumed_session_gets_exactly_what_it_missed_before_new_messages(servers):
    server = await servers(REPLAY_3)
    sender = await WsClient.connect(server.port)
    away = await WsClient.connect(server.port)
    await send_all(sender, ["seen1", "seen2"])
    await away.messages(2)
    away.close()
    await connections_settle(server, 1)
    await send_all(sender, ["missed1", "missed2", "missed3", "missed4"])
    back = await WsClient.connect(server.port, session=away.session)
    assert back.welcome["resumed"] is True
    await sender.send("normal", "new")
    frames = await back.messages(5)
    assert [f["content"] for f in frames] == ["missed1", "missed2", "missed3", "missed4", "new"]
    assert [f.get("history", False) for f in frames] == [True] * 4 + [False]
    # Nothing more (no second copy of any): the next message is the next one sent.
    await sender.send("normal", "next")
    assert (await back.recv_type("message"))["content"] == "next"


@pytest.mark.gen_test(timeout=10)
async def test_the_client_can_say_where_it_stopped_reading(servers):
    server = await servers(REPLAY_3)
    sender = await WsClient.connect(server.port)
    await send_all(sender, ["a", "b", "c"])
    reader = await WsClient.connect(server.port)
    seen = await reader.messages(3)  # replayed as history: a b c
    reader.close()
    await connections_settle(server, 1)
    back = await WsClient.connect(server.port, session=reader.session, since=seen[0]["id"])
    replayed = await back.messages(2)
    assert [f["content"] for f in replayed] == ["b", "c"]


async def first_message_of_a_late_joiner(server) -> dict:
    """Send "x", let a new client join, send "live": the first message the newcomer gets
    (a replay comes between the welcome and live messages, so this tells if there was one).
    """
    sender = await WsClient.connect(server.port)
    await send_all(sender, ["x"])
    late = await WsClient.connect(server.port)
    await sender.send("normal", "live")
    return await late.recv_type("message")


@pytest.mark.gen_test(timeout=10)
async def test_without_the_plugin_nothing_is_replayed(servers):
    # The same settings, which replay (3, where the baseline has 0), on and off: only the
    # plugin's absence stops the replay.
    settings = REPLAY_3["plugins"]["history"]
    on = await servers({"plugins": {"history": {**settings, "enabled": True}}})
    off = await servers({"plugins": {"history": {**settings, "enabled": False}}})
    replayed = await first_message_of_a_late_joiner(on)
    assert (replayed["content"], replayed.get("history")) == ("x", True)  # the control
    first = await first_message_of_a_late_joiner(off)
    assert (first["content"], first.get("history")) == ("live", None)


@pytest.mark.gen_test
async def test_memory_broker_replays_by_count_age_and_cursor_per_channel():
    clock = FakeClock()
    broker = MemoryBroker(LogPolicy(5, 300), clock=clock)
    delivered: list[Entry] = []
    broker.attach(delivered.append)
    for i in range(7):
        broker.publish("room", 5, f'"n":{i}}}'.encode(), clock.now, "normal")
        broker.publish("other", 5, f'"n":{i}}}'.encode(), clock.now, "normal")
        clock.now += 10
    assert len(delivered) == 14
    mine = [e for e in delivered if e.channel == "room"]
    recent = await broker.recent("room", 3, max_age=1000)
    assert [e.id for e in recent] == [e.id for e in mine[4:]]
    assert await broker.recent("room", 10, max_age=25) == mine[-2:]  # older ones aged out
    recovery = await broker.since("room", mine[3].id, 10, max_age=1000)
    assert recovery.entries == mine[4:] and recovery.complete
    recovery = await broker.since("room", mine[0].id, 10, max_age=1000)
    assert recovery.entries == mine[2:] and not recovery.complete  # 1 was dropped: capped
    assert (await broker.since("room", "garbage", 10, max_age=1000)).entries == []
    assert await broker.recent("nowhere", 3, max_age=1000) == []


def test_ids_increase_even_when_the_clock_steps_back():
    clock = FakeClock()
    ids = IdClock(clock)
    first = ids.next()
    clock.now -= 5
    second = ids.next()
    clock.now += 10
    third = ids.next()
    keys = [tuple(map(int, i.split("-"))) for i in (first, second, third)]
    assert keys == sorted(keys) and len(set(keys)) == 3


MALFORMED_SINCE = ["²-0", "99999999999999999999999-0", "18446744073709551615-0", "1-", "-1", "x"]


@pytest.mark.gen_test(timeout=20)
async def test_a_malformed_since_is_ignored_as_if_absent(servers, redis_server, key_prefix, caplog):
    server = await servers(merge(redis_changes(redis_server.url, key_prefix), REPLAY_3))
    sender = await WsClient.connect(server.port)
    reader = await WsClient.connect(server.port)
    await send_all(sender, ["a"])
    await reader.messages(1)
    reader.close()
    await connections_settle(server, 1)
    with caplog.at_level(logging.INFO):
        for i, since in enumerate(MALFORMED_SINCE):
            await send_all(sender, [f"missed {i}"])
            back = await WsClient.connect(server.port, session=reader.session, since=since)
            assert back.welcome["resumed"] is True
            # As without `since`: what the session missed, from where it left.
            assert [f["content"] for f in await back.messages(1)] == [f"missed {i}"]
            back.close()
            await connections_settle(server, 1)
    noisy = [r for r in caplog.records if r.levelno > logging.DEBUG and "since" in r.getMessage()]
    assert noisy == []
    assert sample(server, "ws_hook_errors_total", plugin="history", hook="on_welcome") == 0
    print(f"{len(MALFORMED_SINCE)} malformed since values: 0 errors, 0 tracebacks")


@pytest.mark.gen_test(timeout=10)
async def test_a_malformed_session_token_starts_a_new_session_quietly(servers, caplog):
    server = await servers()
    with caplog.at_level(logging.INFO):
        for token in ["not a token!", "x" * 2000, "²²²²²²²²²²²²²²²²²²²²"]:
            client = await WsClient.connect(server.port, session=token)
            assert client.welcome["resumed"] is False
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG]
