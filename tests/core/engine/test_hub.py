"""The hub's fan-out and joining, with stand-in connections that record what they get."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.engine.hub import Hub
from core.stores.broker import LogPolicy
from core.stores.broker_memory import MemoryBroker
from core.wire.entry import Entry


class Recorder:
    """Stands in for a Connection: records batches, may fail on demand."""

    def __init__(self, broken: bool = False, key: str = "") -> None:
        self.batches: list[list[str]] = []
        self.broken = broken
        self.failed = False
        self.channels: dict[str, str | None] = {}
        self.key = key

    def send_batch(self, data: bytes, entries: list[Entry]) -> None:
        if self.broken:
            raise RuntimeError("broken on purpose")
        assert data == b"".join(e.frame for e in entries)
        self.batches.append([e.id for e in entries])

    def fail(self, *args) -> None:
        self.failed = True


def publish(hub: Hub, n: int, channel: str = "broadcast") -> None:
    for i in range(n):
        hub.publish(channel, 5, f'"content":"{i}"}}'.encode(), time.time(), "normal")


async def live(hub: Hub, conn: Recorder, channel: str = "broadcast") -> None:
    hub.add(conn)
    await hub.join(conn, channel)
    hub.go_live(conn, channel)


@pytest.mark.gen_test
async def test_messages_of_one_loop_turn_go_out_as_one_batch():
    hub = Hub(MemoryBroker(LogPolicy(10, 60)))
    a, b = Recorder(), Recorder()
    for conn in (a, b):
        await live(hub, conn)
    publish(hub, 3)
    await asyncio.sleep(0)
    assert len(a.batches) == 1 and len(a.batches[0]) == 3
    assert a.batches == b.batches
    publish(hub, 1)
    await asyncio.sleep(0)
    assert len(a.batches) == 2


@pytest.mark.gen_test
async def test_a_joining_connection_gets_what_arrived_minus_what_its_replay_covered():
    hub = Hub(MemoryBroker(LogPolicy(10, 60)))
    late = Recorder()
    hub.add(late)
    await hub.join(late, "broadcast")
    publish(hub, 4)
    await asyncio.sleep(0)
    assert late.batches == []  # held while joining
    ids = [e.id for e in await hub.broker.recent("broadcast", 10, 60)]
    hub.go_live(late, "broadcast", replayed_through=ids[1])
    assert late.batches == [ids[2:]]


@pytest.mark.gen_test
async def test_one_broken_connection_does_not_starve_the_others():
    hub = Hub(MemoryBroker(LogPolicy(10, 60)))
    first, broken, last = Recorder(), Recorder(broken=True), Recorder()
    for conn in (first, broken, last):
        await live(hub, conn)
    publish(hub, 1)
    await asyncio.sleep(0)
    assert len(first.batches) == 1 and len(last.batches) == 1
    assert broken.failed and len(hub) == 2


@pytest.mark.gen_test
async def test_a_message_reaches_its_channels_subscribers_only():
    hub = Hub(MemoryBroker(LogPolicy(10, 60)))
    lobby, kitchen, both = Recorder(), Recorder(), Recorder()
    await live(hub, lobby, "room:lobby")
    await live(hub, kitchen, "room:kitchen")
    await live(hub, both, "room:lobby")
    await hub.join(both, "room:kitchen")
    hub.go_live(both, "room:kitchen")
    publish(hub, 2, "room:lobby")
    publish(hub, 1, "room:kitchen")
    await asyncio.sleep(0)
    assert [len(b) for b in lobby.batches] == [2] and [len(b) for b in kitchen.batches] == [1]
    assert sorted(len(b) for b in both.batches) == [1, 2]  # one write per channel
    assert hub.channels() == ["room:lobby", "room:kitchen"] and hub.subscriptions() == 4
    hub.leave(kitchen, "room:kitchen")
    hub.leave(both, "room:kitchen")
    assert hub.channels() == ["room:lobby"]  # the last one out: nobody listens there


@pytest.mark.gen_test
async def test_a_presence_event_is_not_sent_to_the_connection_it_is_about():
    hub = Hub(MemoryBroker(LogPolicy(10, 60)))
    joiner, other = Recorder(key="i/1"), Recorder(key="i/2")
    for conn in (joiner, other):
        await live(hub, conn, "room:a")
    hub.broker.publish_event("room:a", "i/1", b'{"type":"join"}')
    publish(hub, 1, "room:a")
    await asyncio.sleep(0)
    assert [len(b) for b in other.batches] == [2]  # the join and the message
    assert [len(b) for b in joiner.batches] == [1]  # the message only


@pytest.mark.gen_test
async def test_connections_in_a_channel_share_one_copy_of_its_name():
    # Each subscribe frame parsed brings its own copy of the name; kept per connection,
    # those copies would cost ~60 bytes per subscription.
    hub = Hub(MemoryBroker(LogPolicy(10, 60)))
    a, b = Recorder(), Recorder()
    await live(hub, a, "".join(["room:", "lobby"]))
    await live(hub, b, "".join(["room:", "lob", "by"]))
    (name_a,), (name_b,) = a.channels, b.channels
    assert name_a == name_b == "room:lobby" and name_a is name_b
