"""Dispatcher, driven directly: a real hub and memory broker, the hook runner with small
plugins of the tests' own, and the server side of real WebSocket connections."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from core.engine.channels import ChannelRules
from core.engine.dispatcher import Dispatcher
from core.engine.hookrunner import HookRunner
from core.engine.hooks import Plugin, Veto
from core.engine.hub import Hub
from core.engine.presence import Presence
from core.engine.services import Replay
from core.engine.subscriptions import Subscriptions
from core.ops.metrics import Metrics
from core.stores.broker import LogPolicy
from core.stores.broker_memory import MemoryBroker
from core.stores.presence_memory import MemoryPresence
from core.wire import frames
from core.wire.frames import DEFAULT_CLASSES
from tests.core.conftest import connect
from tests.support.waiting import until


@dataclass(frozen=True)
class Options:
    enabled: bool = True


class Censor(Plugin):
    """Rewrites one word: a filter needs no engine change."""

    Settings = Options

    def on_message(self, conn, message):
        if "darn" in message.content:
            return message.replace(content=message.content.replace("darn", "d**n"))
        if message.content == "forbidden":
            return Veto("invalid_message", "not that")
        return None


class Doorman(Plugin):
    """Refuses clients whose query says so; notes pongs and closes."""

    Settings = Options

    def __init__(self, settings, services) -> None:
        super().__init__(settings, services)
        self.pongs: list[bytes] = []
        self.closed: list[str] = []

    def on_connect(self, conn):
        conn.welcome["doorman"] = True

    def on_pong(self, conn, data):
        self.pongs.append(data)

    def on_close(self, conn):
        self.closed.append(conn.client_id)


class Bouncer(Plugin):
    Settings = Options

    def on_connect(self, conn):
        if conn.query.get("go") == "away":
            return Veto(frames.TOO_MANY_CONNECTIONS, "not tonight")
        return None


def build(*plugin_classes, broker=None, history=None, channels=None):
    broker = broker or MemoryBroker(LogPolicy(100, 300))
    hub = Hub(broker)
    plugins = [cls(Options(), None) for cls in plugin_classes]
    metrics = Metrics()
    hooks = HookRunner(plugins, metrics)
    subscriptions = Subscriptions(
        hub,
        Presence(MemoryPresence(), hub, "unit", 30),
        ChannelRules.from_settings(channels, "broadcast"),
        history=lambda: history,
        hooks=lambda: dispatcher.hooks,
    )
    dispatcher = Dispatcher(
        hub=hub,
        hooks=hooks,
        subscriptions=subscriptions,
        classes=DEFAULT_CLASSES,
        instance_id="unit",
        metrics=metrics,
    )
    return dispatcher, plugins


async def admitted(dispatcher, endpoint, **query):
    client, transport = await connect(endpoint)
    conn = await dispatcher.open(transport, "127.0.0.1", query)
    welcome = await client.read_json()
    return client, conn, welcome


@pytest.mark.gen_test(timeout=10)
async def test_open_admits_welcomes_and_joins_the_hub(endpoint):
    dispatcher, _ = build(Doorman)
    _, conn, welcome = await admitted(dispatcher, endpoint)
    assert welcome["type"] == "welcome" and welcome["client_id"] == conn.client_id
    assert welcome["doorman"] is True and welcome["instance"] == "unit"
    assert welcome["classes"] == dict(DEFAULT_CLASSES)
    assert conn.admitted and len(dispatcher.hub) == 1


@pytest.mark.gen_test(timeout=10)
async def test_a_veto_on_connect_refuses_and_the_plugins_before_it_give_back(endpoint):
    dispatcher, (doorman, _) = build(Doorman, Bouncer)
    client, transport = await connect(endpoint)
    conn = await dispatcher.open(transport, "127.0.0.1", {"go": "away"})
    assert conn is None and len(dispatcher.hub) == 0
    error = await client.read_json()
    assert (error["code"], error["message"]) == (frames.TOO_MANY_CONNECTIONS, "not tonight")
    assert await client.close_code() == frames.CLOSE_POLICY
    assert len(doorman.closed) == 1  # Doorman admitted it first: it gets on_close


@pytest.mark.gen_test(timeout=10)
async def test_a_message_goes_to_every_client_once_as_the_hooks_left_it(endpoint):
    dispatcher, _ = build(Censor)
    alice, alice_conn, _ = await admitted(dispatcher, endpoint)
    bob, _, _ = await admitted(dispatcher, endpoint)
    await dispatcher.message(alice_conn, '{"type": "normal", "content": "darn it"}')
    for client in (alice, bob):
        frame = await client.read_json()
        assert frame["content"] == "d**n it" and frame["from"] == alice_conn.client_id
        assert (frame["class"], frame["priority"]) == ("normal", 5)


@pytest.mark.gen_test(timeout=10)
async def test_a_vetoed_or_malformed_message_answers_only_its_sender(endpoint):
    dispatcher, _ = build(Censor)
    alice, alice_conn, _ = await admitted(dispatcher, endpoint)
    bob, _, _ = await admitted(dispatcher, endpoint)
    await dispatcher.message(alice_conn, '{"type": "normal", "content": "forbidden"}')
    await dispatcher.message(alice_conn, "{not json")
    await dispatcher.message(alice_conn, '{"type": "normal", "content": "fine"}')
    assert (await alice.read_json())["code"] == "invalid_message"
    assert (await alice.read_json())["code"] == "invalid_json"
    assert (await alice.read_json())["content"] == "fine"
    assert (await bob.read_json())["content"] == "fine"  # nothing before it


@pytest.mark.gen_test(timeout=10)
async def test_pongs_reach_the_on_pong_hooks_and_closes_the_on_close_hooks(endpoint):
    dispatcher, (doorman,) = build(Doorman)
    _, conn, _ = await admitted(dispatcher, endpoint)
    dispatcher.pong(conn, b"beat-1")  # as the /ws handler does when Tornado gets a pong
    await until(lambda: doorman.pongs == [b"beat-1"])
    dispatcher.close(conn)
    await dispatcher.closed()
    assert doorman.closed == [conn.client_id] and len(dispatcher.hub) == 0


class RacingHistory:
    """A history whose read of the log comes after a live message arrived for the
    client: the replay and the held live messages overlap."""

    def __init__(self, broker, publish) -> None:
        self.broker = broker
        self.publish = publish

    async def replay(self, channel, since, budget):
        await self.publish('{"type": "normal", "content": "two"}')
        await asyncio.sleep(0)  # the hub's batch goes out: "two" is held for the client
        return Replay(await self.broker.recent(channel, 10, 300))


@pytest.mark.gen_test(timeout=10)
async def test_live_messages_the_replay_covered_are_not_sent_twice(endpoint):
    broker = MemoryBroker(LogPolicy(100, 300))
    dispatcher, _ = build(broker=broker)
    _, sender_conn, _ = await admitted(dispatcher, endpoint)
    await dispatcher.message(sender_conn, '{"type": "normal", "content": "one"}')
    racing = RacingHistory(broker, lambda frame: dispatcher.message(sender_conn, frame))
    dispatcher.subscriptions.history = lambda: racing
    client, transport = await connect(endpoint)
    await dispatcher.open(transport, "127.0.0.1", {})
    await dispatcher.message(sender_conn, '{"type": "normal", "content": "three"}')
    seen = [await client.read_json() for _ in range(4)]
    assert seen[0]["type"] == "welcome"
    assert [(f["content"], f.get("history", False)) for f in seen[1:]] == [
        ("one", True),
        ("two", True),
        ("three", False),
    ]
