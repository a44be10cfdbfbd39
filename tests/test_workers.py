"""`server.workers: N` / `--workers N`: N instances sharing one port (SO_REUSEPORT) under
a supervisor, on a private redis-server: ids, limits, broadcast, metrics, signals,
restarts, and what happens when the supervisor itself is killed.

Which worker takes a connection is the kernel's choice (a hash of the client's port),
so tests that need a client on each worker connect until they have one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import redis_changes
from tests.support import config as test_config
from tests.support.metrics import scrape
from tests.support.raw_ws import RawWebSocket
from tests.support.timing import scaled
from tests.support.waiting import until, until_async
from tests.support.workers import WorkersProcess, process_state
from tests.support.ws_client import WsClient

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def supervisors(
    tmp_path: Path, redis_server, key_prefix: str
) -> Iterator[Callable[..., WorkersProcess]]:
    """Start `server.py --workers N` on the test Redis: `supervisors({...changes...})`."""
    started: list[WorkersProcess] = []

    def start(
        changes: dict | None = None,
        *,
        workers: int = 2,
        instance_id: str | None = "relay",
        pick_port: bool = False,
    ) -> WorkersProcess:
        config = test_config.merge(
            test_config.baseline(), redis_changes(redis_server.url, key_prefix)
        )
        config = test_config.merge(config, {"logging": {"level": "info"}, **(changes or {})})
        server = WorkersProcess(
            config, tmp_path, workers=workers, instance_id=instance_id, pick_port=pick_port
        )
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()


async def attempt(port: int) -> WsClient | None:
    """A WebSocket that was admitted, or None if it was refused for the per-IP limit."""
    client = await WsClient.connect(port, wait_welcome=False)
    frame = await client.recv()
    if frame["type"] == "welcome":
        client.welcome = frame
        return client
    assert frame["code"] == "too_many_connections", frame
    assert await client.closed() == 1008
    return None


async def one_client_per_worker(server: WorkersProcess) -> dict[str, WsClient]:
    """Instance id -> an open client on it, for every worker."""
    clients: dict[str, WsClient] = {}

    async def connect_one() -> bool:
        client = await WsClient.connect(server.port)
        if client.welcome["instance"] in clients:
            client.close()
        else:
            clients[client.welcome["instance"]] = client
        return set(clients) == server.worker_ids()

    await until_async(connect_one, timeout=10)
    return clients


async def stubborn_client_per_worker(server: WorkersProcess) -> dict[str, RawWebSocket]:
    """Like `one_client_per_worker`, with clients that never answer a close frame."""
    clients: dict[str, RawWebSocket] = {}

    async def connect_one() -> bool:
        client = await RawWebSocket.connect(server.port)
        instance = (await client.read_json())["instance"]
        if instance in clients:
            client.close()
        else:
            clients[instance] = client
        return set(clients) == server.worker_ids()

    await until_async(connect_one, timeout=10)
    return clients


def refused(port: int) -> bool:
    """True if nothing accepts a TCP connection on the port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=scaled(1)).close()
    except ConnectionRefusedError:
        return True
    return False


def rss_series(samples: dict) -> set[str]:
    """The pids of the workers whose process_resident_memory_bytes a scrape reports."""
    return {
        dict(labels)["pid"] for name, labels in samples if name == "process_resident_memory_bytes"
    }


@pytest.mark.gen_test(timeout=60)
async def test_every_worker_is_an_instance_named_after_its_number(supervisors):
    server = supervisors(instance_id="relay")
    seen: set[str] = set()

    def answered() -> bool:
        seen.add(server.health()[1]["instance"])
        return len(seen) >= 2

    await until(answered)
    assert seen == {"relay/1", "relay/2"}
    clients = await one_client_per_worker(server)  # the welcome names the same ids
    assert set(clients) == {"relay/1", "relay/2"}
    assert sorted(server.worker_pids()) == [1, 2]


@pytest.mark.gen_test(timeout=60)
async def test_port_0_becomes_one_port_for_every_worker_and_names_the_default_ids(
    supervisors,
):
    server = supervisors({"server": {"port": 0}}, instance_id=None, pick_port=True)
    assert server.port != 0
    # wait_ready has seen /healthz answered by hostname:port/1 and hostname:port/2.
    assert server.worker_ids() == {
        f"{socket.gethostname()}:{server.port}/1",
        f"{socket.gethostname()}:{server.port}/2",
    }


@pytest.mark.gen_test(timeout=60)
async def test_the_per_ip_limit_holds_across_workers(supervisors):
    server = supervisors({"plugins": {"throttle": {"max_connections_per_ip": 2}}})
    # 12 attempts from one address: whatever the kernel's spread, both workers get a
    # few (all 12 on one worker: 1 chance in 2048), so limits counted per worker would
    # let up to 4 in.
    outcomes = [await attempt(server.port) for _ in range(12)]
    admitted = [c for c in outcomes if c is not None]
    assert len(admitted) == 2
    # The slots are given back when the clients leave, whichever worker had them.
    for client in admitted:
        client.close()
    assert await until_async(lambda: attempt(server.port))


@pytest.mark.gen_test(timeout=60)
async def test_a_broadcast_reaches_every_workers_clients_once(supervisors):
    server = supervisors()
    clients = await one_client_per_worker(server)
    sender = clients["relay/1"]
    await sender.send("normal", "one")
    await sender.send("normal", "two")
    for instance, client in clients.items():
        got = []
        while not got or got[-1] != "two":
            got.append((await client.recv_type("message"))["content"])
        assert got == ["one", "two"], instance


@pytest.mark.gen_test(timeout=60)
async def test_metrics_on_any_worker_cover_every_worker(supervisors):
    server = supervisors()
    clients = await one_client_per_worker(server)
    pids = {str(pid) for pid in server.worker_pids().values()}
    # Each scrape is a new connection, answered by either worker; every one counts
    # both workers' clients.
    for _ in range(8):
        samples = await scrape(server.port)
        assert samples[("ws_connections", ())] == len(clients)
        assert samples[("ws_connections_opened_total", ())] >= len(clients)
    # What one process reads at scrape time (process_*: one series per worker; a
    # function's value: channels with a subscriber, one per worker) each worker writes
    # when it starts and every second.
    await until_async(lambda: _rss_pids_are(server.port, pids), timeout=5)
    await until_async(lambda: _scraped_equals(server.port, "ws_channels", len(clients)), timeout=5)


async def _scraped_equals(port: int, name: str, expected: float) -> bool:
    return (await scrape(port)).get((name, ())) == expected


@pytest.mark.gen_test(timeout=60)
async def test_sighup_reloads_every_worker(supervisors):
    server = supervisors()
    config = yaml.safe_load(server.config_path.read_text())
    config["plugins"]["heartbeat"]["tiers"] = [{"interval": 1234}]
    server.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    server.signal(signal.SIGHUP)
    reloaded: set[str] = set()

    async def every_worker_reloaded() -> bool:
        client = await WsClient.connect(server.port)
        if client.welcome["heartbeat"]["interval"] == 1234:
            reloaded.add(client.welcome["instance"])
        client.close()
        return reloaded == server.worker_ids()

    await until_async(every_worker_reloaded, timeout=10)
    assert server.process.poll() is None


@pytest.mark.gen_test(timeout=60)
async def test_sigterm_drains_every_worker_listener_first(supervisors, redis_server, key_prefix):
    # Without the listener closed first, it would close shortly before the deadline.
    server = supervisors({"server": {"shutdown_timeout": scaled(4)}})
    clients = await stubborn_client_per_worker(server)  # they keep each drain going
    r = redis_server.client()
    assert set(r.zrange(f"{key_prefix}instances", 0, -1)) == {b"relay/1", b"relay/2"}
    server.signal(signal.SIGTERM)
    # Every worker stops listening at once, long before its clients are gone (they
    # will not answer the close frame, so each drain lasts until its deadline).
    await until(lambda: refused(server.port), timeout=2)
    codes = await asyncio.gather(*(c.close_code(timeout=8) for c in clients.values()))
    assert codes == [1001, 1001]
    assert server.wait() == 0
    assert server.worker_pids() == {}
    assert r.zrange(f"{key_prefix}instances", 0, -1) == []


@pytest.mark.gen_test(timeout=60)
async def test_a_killed_worker_is_restarted_with_its_id_and_its_counts_released(
    supervisors,
):
    # instance_ttl 60: the dead worker's count would otherwise hold the address for a
    # minute, so admitting again within seconds is the restarted worker's doing.
    server = supervisors(
        {
            "store": {"instance_ttl": 60},
            "plugins": {"throttle": {"max_connections_per_ip": 1}},
        }
    )
    client = await attempt(server.port)
    assert client is not None
    assert await attempt(server.port) is None  # the address is at its limit
    victim = int(client.welcome["instance"].rsplit("/", 1)[1])
    before = server.worker_pids()
    os.kill(before[victim], signal.SIGKILL)
    await until(lambda: server.worker_pids().get(victim) not in (None, before[victim]))
    again = await until_async(lambda: attempt(server.port), timeout=15)
    after = server.worker_pids()
    assert after[victim] != before[victim] and after[3 - victim] == before[3 - victim]
    await until(lambda: server.health()[1]["instance"] == f"relay/{victim}")
    # The dead worker's gauges are gone from /metrics: one client, two live workers.
    samples = await scrape(server.port)
    assert samples[("ws_connections", ())] == 1
    await until_async(
        lambda: _rss_pids_are(server.port, {str(p) for p in after.values()}), timeout=5
    )
    again.close()


async def _rss_pids_are(port: int, pids: set[str]) -> bool:
    return rss_series(await scrape(port)) == pids


@pytest.mark.gen_test(timeout=60)
async def test_killing_the_supervisor_leaves_no_worker_behind(supervisors):
    server = supervisors()
    workers = server.worker_pids()
    assert len(workers) == 2
    server.process.send_signal(signal.SIGKILL)
    server.wait()
    await until(lambda: all(process_state(pid) is None for pid in workers.values()), timeout=10)
    assert refused(server.port)


@pytest.mark.gen_test(timeout=60)
async def test_a_worker_exiting_2_waits_for_sighup(supervisors):
    server = supervisors()
    good = server.config_path.read_text()
    server.config_path.write_text("plugins: {ratelimit: {max_messages_per_second: lots}}\n")
    os.kill(server.worker_pids()[2], signal.SIGKILL)
    await until(lambda: "not restarted until SIGHUP" in server.log(), timeout=10)
    assert list(server.worker_pids()) == [1]
    assert server.process.poll() is None  # worker 1 still serves
    server.config_path.write_text(good)
    server.signal(signal.SIGHUP)
    await until(lambda: server.health()[1]["instance"] == "relay/2", timeout=15)


@pytest.mark.parametrize(
    ("backend", "given"),
    [("memory", ["--workers", "2"]), ("auto", [])],
)
def test_workers_without_redis_is_a_configuration_mistake(tmp_path, backend, given):
    path = tmp_path / "config.yaml"
    workers = "" if given else "server: {workers: 2}\n"
    path.write_text(f"{workers}store: {{backend: {backend}}}\nplugins: {{}}\n")
    result = subprocess.run(
        [sys.executable, "server.py", "--config", str(path), *given],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(20),
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {path}: server.workers: 2 workers need store.backend: redis (or a cluster "
        f"or sentinels) to share connections and limits; backend is {backend}"
        + (" (given on the command line)" if given else "")
    ]
