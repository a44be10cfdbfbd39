"""Finding 2 of the hostile review: slowloris and running out of file descriptors.

500 half-sent upgrade requests stayed open for an hour (Tornado's default idle timeout);
under `ulimit -n 256`, EMFILE made the accept loop spin at 88% CPU and write a traceback
per turn. Now a connection that has not completed its request within
`server.handshake_timeout` is closed, and the listener pauses (and says so once) while
descriptors run out.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.support import config as test_config
from tests.support.ports import free_port
from tests.support.timing import scaled
from tests.support.waiting import until
from tests.support.ws_client import WsClient

ROOT = Path(__file__).resolve().parents[2]


async def half_sent(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")  # never ends
    await writer.drain()
    return reader, writer


@pytest.mark.gen_test(timeout=30)
async def test_half_sent_upgrade_requests_are_closed_at_the_handshake_timeout(servers):
    server = await servers({"server": {"handshake_timeout": 1}})
    loris = [await half_sent(server.port) for _ in range(200)]
    started = time.monotonic()
    ends = await asyncio.gather(
        *(asyncio.wait_for(reader.read(), scaled(5)) for reader, _ in loris)
    )
    took = time.monotonic() - started
    print(f"200 half-sent upgrades: all closed by the server after {took:.1f} s (timeout 1 s)")
    assert ends == [b""] * 200  # closed by the server, nothing answered
    assert took < scaled(3)
    client = await WsClient.connect(server.port)  # and it still serves
    assert client.welcome["type"] == "welcome"
    for _, writer in loris:
        writer.close()


def start_with_descriptors(limit: int, config: Path, log_path: Path) -> subprocess.Popen:
    """server.py under `ulimit -n limit`, its output in `log_path`."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [
                "prlimit", f"--nofile={limit}:{limit}", "--",
                sys.executable, str(ROOT / "server.py"), "--config", str(config),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.gen_test(timeout=60)
async def test_out_of_file_descriptors_pauses_the_listener_without_spinning(tmp_path):
    port = free_port()
    config = test_config.merge(
        test_config.baseline(),
        {"server": {"port": port, "handshake_timeout": 2}, "logging": {"level": "info"}},
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / "server.log"
    process = start_with_descriptors(64, path, log_path)
    try:
        held = []
        await until(lambda: _listening(port), timeout=15)
        for _ in range(120):  # more than the server has descriptors for
            sock = socket.create_connection(("127.0.0.1", port))
            held.append(sock)
        await until(lambda: "cannot accept connections" in log_path.read_text(), timeout=5)
        busy = cpu_seconds(process.pid)
        await asyncio.sleep(2)  # the point: two seconds of running out of descriptors
        spent = cpu_seconds(process.pid) - busy
        lines = [x for x in log_path.read_text().splitlines() if "cannot accept" in x]
        traces = log_path.read_text().count("Traceback")
        print(
            f"EMFILE for 2 s: {spent:.2f} CPU-s used, {len(lines)} log line(s), {traces} tracebacks"
        )
        assert spent < 0.5 and len(lines) == 1 and traces == 0
        for sock in held:
            sock.close()
        # Descriptors come back as the handshake timeout frees them: serving again.
        client = await WsClient.connect(port)
        assert client.welcome["type"] == "welcome"
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
