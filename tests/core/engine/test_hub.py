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

    def __init__(self, broken: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.broken = broken
        self.failed = False

    def send_batch(self, data: bytes, entries: list[Entry]) -> None:
        if self.broken:
            raise RuntimeError("broken on purpose")
        assert data == b"".join(e.frame for e in entries)
        self.batches.append([e.id for e in entries])

    def fail(self, *args) -> None:
        self.failed = True


def publish(hub: Hub, n: int) -> None:
    for i in range(n):
        hub.publish(5, f'"content":"{i}"}}'.encode(), time.time(), "normal")


@pytest.mark.gen_test
async def test_messages_of_one_loop_turn_go_out_as_one_batch():
    hub = Hub(MemoryBroker(LogPolicy(10, 60)))
    a, b = Recorder(), Recorder()
    for conn in (a, b):
        hub.join(conn)
        hub.go_live(conn)
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
    hub.join(late)
    publish(hub, 4)
    await asyncio.sleep(0)
    assert late.batches == []  # held while joining
    ids = [e.id for e in await hub.broker.recent(10, 60)]
    hub.go_live(late, replayed_through=ids[1])
    assert late.batches == [ids[2:]]


@pytest.mark.gen_test
async def test_one_broken_connection_does_not_starve_the_others():
    hub = Hub(MemoryBroker(LogPolicy(10, 60)))
    first, broken, last = Recorder(), Recorder(broken=True), Recorder()
    for conn in (first, broken, last):
        hub.join(conn)
        hub.go_live(conn)
    publish(hub, 1)
    await asyncio.sleep(0)
    assert len(first.batches) == 1 and len(last.batches) == 1
    assert broken.failed and len(hub) == 2
