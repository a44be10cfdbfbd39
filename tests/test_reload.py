"""Hot reload: new limits, tiers, classes and plugins without dropping a connection."""

from __future__ import annotations

import signal

import pytest
import yaml

from tests.plugins.test_priority import drain, fill_outbox, slow_reader
from tests.support import config as test_config
from tests.support.waiting import connections_settle, until
from tests.support.ws_client import WsClient


async def reload(server, changes: dict) -> list[str]:
    return await server.reload(test_config.settings(test_config.merge(CURRENT, changes)))


CURRENT: dict = {}


@pytest.mark.gen_test(timeout=10)
async def test_a_new_rate_limit_applies_to_open_connections(servers):
    server = await servers(
        {"plugins": {"ratelimit": {"max_messages_per_second": 0.01, "burst": 2}}}
    )
    client = await WsClient.connect(server.port)
    for i in range(3):
        await client.send("normal", str(i))
    assert (await client.recv_type("error"))["code"] == "rate_limited"
    await reload(server, {"plugins": {"ratelimit": {"enabled": False}}})
    for i in range(5):
        await client.send("normal", f"free {i}")
    contents = [f["content"] for f in await client.messages(5)]
    assert contents[-5:] == [f"free {i}" for i in range(5)]
    assert len(server.hub) == 1


@pytest.mark.gen_test(timeout=10)
async def test_a_lower_rate_limit_reaches_a_connection_that_already_sent(servers):
    generous = {"plugins": {"ratelimit": {"max_messages_per_second": 0.01, "burst": 100}}}
    server = await servers(generous)
    client = await WsClient.connect(server.port)
    await client.send("normal", "before")
    assert (await client.recv_type("message"))["content"] == "before"
    await reload(server, {"plugins": {"ratelimit": {"max_messages_per_second": 0.01, "burst": 1}}})
    # A fresh bucket of the new size (the buckets' keys are the same; their sizes are
    # the reloaded ones): one more, then refused.
    await client.send("normal", "after")
    await client.send("normal", "refused")
    frames_ = [await client.recv() for _ in range(2)]
    assert [f.get("content") or f.get("code") for f in frames_] == ["after", "rate_limited"]


@pytest.mark.gen_test(timeout=10)
async def test_disabling_the_throttle_gives_back_every_slot_and_enabling_it_counts_anew(servers):
    server = await servers({"plugins": {"throttle": {"max_connections_per_ip": 2}}})
    held = [await WsClient.connect(server.port) for _ in range(2)]
    counter = server.stores.connections
    assert counter.local_count("127.0.0.1") == 2
    await reload(server, {"plugins": {"throttle": {"enabled": False}}})
    assert counter.local_count("127.0.0.1") == 0
    more = [await WsClient.connect(server.port) for _ in range(3)]  # no limit now
    await reload(server, {"plugins": {"throttle": {"max_connections_per_ip": 2}}})
    # The five open connections were admitted before: only new ones count.
    counted = [await WsClient.connect(server.port) for _ in range(2)]
    refused = await WsClient.connect(server.port, wait_welcome=False)
    assert (await refused.recv())["code"] == "too_many_connections"
    for client in held + more:
        client.close()
    await connections_settle(server, 2)
    assert counter.local_count("127.0.0.1") == 2  # closing uncounted ones took nothing back
    assert all(c.close_code is None for c in counted)


@pytest.mark.gen_test(timeout=10)
async def test_new_tiers_reach_the_next_heartbeat(servers):
    server = await servers({"plugins": {"heartbeat": {"tiers": [{"interval": 0.2}]}}})
    client = await WsClient.connect(server.port)
    assert (await client.recv_type("heartbeat"))["interval"] == 0.2
    await reload(server, {"plugins": {"heartbeat": {"tiers": [{"interval": 0.3}]}}})
    assert (await client.recv_type("heartbeat", interval=0.3))["clients"] == 1


@pytest.mark.gen_test(timeout=10)
async def test_new_classes_and_queue_limit_apply_at_once(servers):
    server = await servers()
    client = await WsClient.connect(server.port)
    # (None removes a key in the test config merge: only alert and chat remain)
    classes = {"critical": None, "normal": None, "status": None, "alert": 20, "chat": 5}
    await reload(server, {"plugins": {"priority": {"classes": classes, "queue_limit": 7}}})
    await client.send("alert", "new class")
    frame = await client.recv_type("message")
    assert (frame["class"], frame["priority"]) == ("alert", 20)
    await client.send("critical", "old class")
    assert (await client.recv_type("error"))["code"] == "invalid_message"
    (conn,) = server.hub.connections()
    assert conn.policy.limit == 7


@pytest.mark.gen_test(timeout=20)
async def test_turning_priority_off_puts_open_connections_back_on_arrival_order(servers):
    server = await servers()
    sender = await WsClient.connect(server.port)
    raw, conn = await slow_reader(server)
    await reload(server, {"plugins": {"priority": {"enabled": False}}})
    sent = await fill_outbox(sender, conn, 5)
    await sender.send("critical", "urgent")
    await sender.recv_type("message")
    frames = await drain(raw, sent + 1)
    # The retired plugin's ordering is gone: the critical frame waits its turn.
    assert [f["class"] for f in frames][-1] == "critical"
    assert conn.policy.ordered is False and conn.policy.limit == 1000


@pytest.mark.gen_test(timeout=10)
async def test_restart_only_keys_are_reported_and_kept(servers):
    server = await servers()
    port = server.port
    changed = await reload(server, {"server": {"instance_id": "renamed"}})
    assert changed == ["server.instance_id"]
    assert server.instance_id != "renamed"
    assert (await WsClient.connect(port)).welcome["type"] == "welcome"


@pytest.mark.gen_test(timeout=30)
async def test_sighup_applies_a_valid_file_and_refuses_an_invalid_one(processes):
    server = processes(
        {
            "logging": {"level": "info"},  # "configuration reloaded" is an info line
            "plugins": {"ratelimit": {"max_messages_per_second": 0.01, "burst": 1}},
        }
    )
    client = await WsClient.connect(server.port)
    config = yaml.safe_load(server.config_path.read_text())

    server.config_path.write_text("plugins: {ratelimit: {max_messages_per_second: lots}}\n")
    server.signal(signal.SIGHUP)
    await until(lambda: "reload refused" in server.log())
    line = next(x for x in server.log().splitlines() if "reload refused" in x)
    assert "plugins.ratelimit.max_messages_per_second: expected a number, got 'lots'" in line
    server.config_path.write_text("")  # an empty file would turn every feature off
    server.signal(signal.SIGHUP)
    await until(lambda: server.log().count("reload refused") == 2)
    assert "the file is empty" in server.log().splitlines()[-1]
    await client.send("normal", "one")
    await client.send("normal", "two")
    assert (await client.recv_type("error"))["code"] == "rate_limited"  # old limits stay

    config["plugins"]["ratelimit"] = {"enabled": False}
    server.config_path.write_text(yaml.safe_dump(config))
    server.signal(signal.SIGHUP)
    await until(lambda: "configuration reloaded" in server.log())
    for i in range(3):
        await client.send("normal", f"after {i}")
    got = []
    while len(got) < 3:
        frame = await client.recv_type("message")
        if frame["content"].startswith("after"):
            got.append(frame["content"])
    assert client.close_code is None and server.process.poll() is None


@pytest.mark.gen_test(timeout=10)
async def test_a_plugin_that_fails_to_start_keeps_the_running_configuration(servers):
    from types import MappingProxyType

    from plugins import REGISTRY
    from tests.core.engine.test_hooks import recorder

    journal: list = []
    registry = MappingProxyType({**REGISTRY, "broken": recorder("broken", journal)})
    server = await servers(registry=registry)
    before = server.hooks
    changes = {"plugins": {"broken": {"raise_startup": True}}}
    settings = test_config.settings(test_config.merge(CURRENT, changes), registry)
    await server.reload(settings)
    assert server.hooks is before and "broken" not in server.settings.plugins
    assert journal == [("broken", "startup"), ("broken", "shutdown")]  # started, then undone
    client = await WsClient.connect(server.port)
    assert client.welcome["type"] == "welcome"
