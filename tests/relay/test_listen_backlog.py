"""The listening socket takes a reconnect storm's connections without the kernel
dropping them (Tornado's default backlog of 128 would)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from relay.instance import LISTEN_BACKLOG


def backlog_of(port: int) -> int:
    """Send-Q of a listening socket, as `ss` shows it: its backlog."""
    out = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], check=True, capture_output=True, text=True
    ).stdout
    return int(out.split()[2])


def somaxconn() -> int:
    """The kernel's cap on any listen backlog."""
    return int(Path("/proc/sys/net/core/somaxconn").read_text())


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
@pytest.mark.gen_test(timeout=10)
async def test_the_server_listens_with_a_backlog_for_a_reconnect_storm(servers):
    server = await servers()
    assert backlog_of(server.port) == min(LISTEN_BACKLOG, somaxconn()) > 128
