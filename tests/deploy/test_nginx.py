"""deploy/nginx.conf in front of two instances: messages cross, IP limits hold through
the proxy, and a drained instance's clients reconnect through nginx to the other."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import redis_changes
from tests.support.config import merge
from tests.support.ports import free_port
from tests.support.server_process import ROOT
from tests.support.timing import scaled
from tests.support.ws_client import Closed, WsClient

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")


def render(port: int, upstreams: tuple[int, int], workdir: Path) -> Path:
    """The shipped config with test ports and paths; every substitution must apply."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    substitutions = {
        "worker_processes auto;": "worker_processes 1;",  # one least_conn view: predictable
        "listen 80;": f"listen 127.0.0.1:{port};",
        "server 127.0.0.1:8200": f"server 127.0.0.1:{upstreams[0]}",
        "server 127.0.0.1:8300": f"server 127.0.0.1:{upstreams[1]}",
        "pid /run/relay-nginx.pid;": f"pid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;",
        "http {": f"http {{\n    access_log {workdir}/access.log;",
    }
    for old, new in substitutions.items():
        assert old in text, f"deploy/nginx.conf no longer contains {old!r}"
        text = text.replace(old, new, 1)
    path = workdir / "nginx.conf"
    path.write_text(text)
    return path


@pytest.fixture
def nginx(tmp_path):
    def start(upstreams: tuple[int, int]) -> int:
        port = free_port()
        workdir = tmp_path / "nginx"
        workdir.mkdir()
        conf = render(port, upstreams, workdir)
        process = subprocess.Popen(
            [NGINX, "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append(process)
        deadline = time.monotonic() + scaled(10)
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return port
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(process.stderr.read().decode()) from None
                time.sleep(0.05)

    started: list[subprocess.Popen] = []
    yield start
    for process in started:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(scaled(5))
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.mark.gen_test(timeout=60)
async def test_two_instances_behind_nginx(processes, redis_server, key_prefix, nginx):
    config = merge(
        redis_changes(redis_server.url, key_prefix),
        {
            "server": {"trusted_proxies": ["127.0.0.1"]},
            "plugins": {"throttle": {"max_connections_per_ip": 2}},
        },
    )
    a, b = processes(config, "A"), processes(config, "B")
    port = nginx((a.port, b.port))

    # Clients from two addresses land on both instances; a message crosses once.
    x = await WsClient.connect(port, source="127.0.0.2")
    y = await WsClient.connect(port, source="127.0.0.3")
    assert {x.welcome["instance"], y.welcome["instance"]} == {"A", "B"}
    await x.send("normal", "through nginx")
    for client in (x, y):
        assert (await client.recv_type("message"))["content"] == "through nginx"
        await client.nothing_for(0.2)

    # The per-IP limit sees the real client behind the proxy, on both instances together,
    # and a forged X-Forwarded-For does not help.
    same_ip = [await WsClient.connect(port, source="127.0.0.4") for _ in range(2)]
    assert {c.welcome["instance"] for c in same_ip} == {"A", "B"}
    forged = await WsClient.connect(
        port, source="127.0.0.4", headers={"X-Forwarded-For": "198.51.100.1"}, wait_welcome=False
    )
    assert (await forged.recv())["code"] == "too_many_connections"

    # Draining A: its clients are told 1001 and come back through nginx, on B, resumed.
    on_a = x if x.welcome["instance"] == "A" else y
    a.signal(signal.SIGTERM)
    with pytest.raises(Closed):
        while True:
            await on_a.recv(5)
    assert on_a.close_code == 1001
    back = await WsClient.connect(port, source="127.0.0.9", session=on_a.session)
    assert back.welcome["instance"] == "B"
    assert back.welcome["resumed"] is True and back.client_id == on_a.client_id
    assert a.wait() == 0
    await asyncio.sleep(0)
