"""Finding 10 of the hostile review, the instance-id part: a second instance started with
the id of a live one silently wiped the first one's counts (6 admitted against a limit of
3). Now it refuses to start (exit 2, naming the id); an instance restarted after a crash
takes its id back once the old claim lapses."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import redis_changes
from tests.support import config as test_config
from tests.support.ports import free_port
from tests.support.timing import scaled
from tests.support.ws_client import WsClient

ROOT = Path(__file__).resolve().parents[2]


def run_second(tmp_path: Path, changes: dict, instance_id: str) -> subprocess.CompletedProcess:
    config = test_config.merge(test_config.baseline(), changes)
    path = tmp_path / "second.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [
            sys.executable, str(ROOT / "server.py"), "--config", str(path),
            "--port", str(free_port()), "--instance-id", instance_id,
        ],
        check=False, capture_output=True, text=True, timeout=scaled(20),
    )  # fmt: skip


@pytest.mark.gen_test(timeout=60)
async def test_a_second_instance_with_a_live_ones_id_refuses_to_start(
    processes, redis_server, key_prefix, tmp_path
):
    changes = test_config.merge(
        redis_changes(redis_server.url, key_prefix),
        {"plugins": {"throttle": {"max_connections_per_ip": 3}}},
    )
    first = processes(changes, "twin")
    held = [await WsClient.connect(first.port) for _ in range(3)]
    started = time.monotonic()
    result = run_second(tmp_path, changes, "twin")
    took = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: instance id 'twin' is in use by a live instance sharing this Redis; "
        "give each instance its own (--instance-id)"
    )
    assert "Traceback" not in result.stderr
    # The live one's counts are intact: the limit still holds.
    extra = await WsClient.connect(first.port, wait_welcome=False)
    assert (await extra.recv())["code"] == "too_many_connections"
    assert all(c.close_code is None for c in held)
    print(f"second instance 'twin': exit 2 after {took:.1f} s; the first kept 3/3 slots")

    first.process.send_signal(signal.SIGKILL)  # a crash: the claim is not released
    first.process.wait()
    again = processes(changes, "twin")  # restarted: waits out the lapsed claim
    client = await WsClient.connect(again.port)
    assert client.welcome["instance"] == "twin"
