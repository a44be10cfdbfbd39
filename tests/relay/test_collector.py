"""The garbage collector's tuning: what `tune()` sets, and that a running server
collects rarely through a burst of handshakes (bench reconnect-storm: ~20% of the
server's CPU went to collections that walked every connection's objects)."""

from __future__ import annotations

import gc

import pytest

from relay import collector
from tests.support.metrics import scrape, value
from tests.support.ws_client import WsClient

HANDSHAKES = 400


def test_tune_freezes_what_exists_and_raises_the_thresholds():
    thresholds = gc.get_threshold()
    try:
        previous = collector.tune()
        assert previous == thresholds
        assert gc.get_threshold() == collector.THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.gen_test(timeout=60)
async def test_a_server_collects_rarely_through_a_burst_of_handshakes(processes):
    server = processes({"plugins": {"throttle": {"max_connections_per_ip": HANDSHAKES}}})
    before = value(await scrape(server.port), "python_gc_collections_total", generation="0")
    clients = [await WsClient.connect(server.port) for _ in range(HANDSHAKES)]
    for client in clients:
        client.close()
    after = value(await scrape(server.port), "python_gc_collections_total", generation="0")
    young = after - before
    print(f"{HANDSHAKES} handshakes: {young:.0f} young collections")
    # With CPython's default threshold (700) they set off about 40 (measured).
    assert young <= 12, young
