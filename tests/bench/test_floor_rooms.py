"""The floor's rooms mode (bench many-rooms' bound) routes as our server does: a
message reaches its room's members, the sender included, and nobody else."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from bench.servers import ROOT
from tests.support.ports import free_port
from tests.support.raw_ws import RawWebSocket
from tests.support.waiting import until


@pytest.fixture
def floor_rooms():
    port = free_port()
    script = ROOT / "bench" / "reference" / "floor_server.py"
    process = subprocess.Popen([sys.executable, str(script), "--port", str(port), "--rooms"])
    yield port
    process.terminate()
    process.wait(10)


def connected(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as reply:
            return json.load(reply)["connections"]
    except OSError:
        return None


@pytest.mark.gen_test(timeout=30)
async def test_a_message_reaches_its_rooms_members_only(floor_rooms):
    port = floor_rooms
    await until(lambda: connected(port) is not None, timeout=15)
    alice, bob, carol = [await RawWebSocket.connect(port) for _ in range(3)]
    for client in (alice, bob, carol):
        assert (await client.read_json())["type"] == "welcome"
    for client, room in ((alice, "room:a"), (bob, "room:a"), (carol, "room:b")):
        client.send_json({"type": "subscribe", "channel": room})
        assert await client.read_json() == {"type": "subscribed", "channel": room}
    assert connected(port) == 3
    alice.send_json({"type": "normal", "channel": "room:a", "content": "hi"})
    for client in (alice, bob):
        got = await client.read_json()
        assert (got["type"], got["channel"], got["content"]) == ("message", "room:a", "hi")
    carol.send_json({"type": "normal", "channel": "room:b", "content": "only me"})
    assert (await carol.read_json())["content"] == "only me"  # not alice's "hi"
