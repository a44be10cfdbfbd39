"""`python server.py --config PATH [flags]` as users run it: config mistakes end it with
status 2 and one line, flags override the file, signals drain and exit 0 in time."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support import config as test_config
from tests.support.ports import free_port
from tests.support.raw_ws import RawWebSocket
from tests.support.timing import scaled
from tests.support.ws_client import WsClient

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    """server.py run to its end (for runs that must not get as far as listening)."""
    return subprocess.run(
        [sys.executable, "server.py", *args],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
    )


def assert_one_line_error(result: subprocess.CompletedProcess, status: int = 2) -> str:
    """Exit `status`, nothing on stdout, one line on stderr, no traceback: that line."""
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def write_config(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "config.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# -- configuration mistakes -----------------------------------------------------------

MISTAKES = {
    "wrong type": (
        "plugins:\n  ratelimit: {max_messages_per_second: lots}\n",
        "plugins.ratelimit.max_messages_per_second: expected a number, got 'lots'",
    ),
    "bad yaml": (
        "server:\n  port: [8200\nstore: {}\n",
        "invalid YAML: line 3, column 6: expected ',' or ']', but got ':'",
    ),
    "duplicate key": (
        "server:\n  port: 8200\n  port: 8300\n",
        "server.port: duplicate key (lines 2 and 3)",
    ),
    "unknown top-level key": (
        "sever: {port: 1}\n",
        "sever: unknown key (did you mean 'server'?)",
    ),
    "unknown key": (
        "store: {backnd: memory}\n",
        "store.backnd: unknown key (did you mean 'backend'?)",
    ),
    "unknown plugin": (
        "plugins:\n  ratelimiter: {}\n",
        "plugins.ratelimiter: unknown plugin (did you mean 'ratelimit'?)",
    ),
    "out of range": (
        "plugins:\n  history: {size: 10, replay: 50}\n",
        "plugins.history.replay: must be at most size (10), got 50",
    ),
    "bool for int": (
        "plugins:\n  throttle: {max_connections_per_ip: yes}\n",
        "plugins.throttle.max_connections_per_ip: expected an integer, got true",
    ),
    "list for mapping": (
        "plugins:\n  priority: {classes: [critical, normal]}\n",
        "plugins.priority.classes: expected a mapping, got a list",
    ),
    "tiers out of order": (
        "plugins:\n  heartbeat:\n    tiers: [{max_clients: 5, interval: 1}, "
        "{max_clients: 2, interval: 2}]\n",
        "plugins.heartbeat.tiers[1].max_clients: tiers must be in increasing max_clients "
        "order, got 2 after 5",
    ),
    "bad proxy": (
        "server: {trusted_proxies: [10.0.0.0/40]}\n",
        "server.trusted_proxies[0]: expected an IP address or network, got '10.0.0.0/40'",
    ),
    "bad redis url": (
        "store: {backend: redis, redis_url: 'redis://127.0.0.1:abc/0'}\n",
        "store.redis_url: not a usable Redis URL: Port could not be cast to integer value as 'abc'",
    ),
    "not utf-8": (
        b"server:\n  host: caf\xe9\n",
        "cannot read the file: not UTF-8 text (line 2)",
    ),
    "bad date": (
        "server: {instance_id: 2024-02-30}\n",
        "invalid YAML: line 1, column 23: cannot read this value as timestamp "
        "(day is out of range for month)",
    ),
    "nested too deeply": ("a: " + "[" * 5000, "invalid YAML: nested too deeply"),
    "empty file": (
        "# nothing here\n",
        "the file is empty (a server needs at least a plugins: block; plugins: {} runs none)",
    ),
    "missing environment variable": (
        "server: {instance_id: '${RELAY_TEST_NEVER_SET}'}\nplugins: {}\n",
        "server.instance_id: environment variable RELAY_TEST_NEVER_SET is not set "
        "(write ${RELAY_TEST_NEVER_SET:-default} for one)",
    ),
    "no plugins block": (
        "server: {port: 8300}\n",
        "plugins: required key is missing (write plugins: {} to run with every feature off)",
    ),
}


@pytest.mark.parametrize(("text", "expected"), MISTAKES.values(), ids=MISTAKES.keys())
def test_config_mistake_exits_2_with_one_line_naming_file_and_key(tmp_path, text, expected):
    path = write_config(tmp_path, text)
    line = assert_one_line_error(run("--config", str(path)))
    assert line == f"error: {path}: {expected}"


def test_missing_config_file(tmp_path):
    path = tmp_path / "nowhere.yaml"
    line = assert_one_line_error(run("--config", str(path)))
    assert line == f"error: {path}: cannot read the file: No such file or directory"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--port", "70000"], "server.port: must be at most 65535, got 70000"),
        (["--instance-id", ""], "server.instance_id: must not be empty"),
        (
            ["--redis-url", "http://127.0.0.1:6379"],
            "store.redis_url: expected a redis://, rediss:// or unix:// URL, "
            "got 'http://127.0.0.1:6379'",
        ),
    ],
)
def test_bad_flag_value_is_reported_as_from_the_command_line(tmp_path, flags, expected):
    path = write_config(tmp_path, "store: {backend: memory}\n")
    line = assert_one_line_error(run("--config", str(path), *flags))
    assert line == f"error: {path}: {expected} (given on the command line)"


def test_config_flag_is_required():
    result = run()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--config" in result.stderr


# -- flags override the file ----------------------------------------------------------


class Server:
    """server.py started with exactly the given flags; stopped by the test."""

    def __init__(self, config_path: Path, *flags: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "server.py", "--config", str(config_path), *flags],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def health(self, port: int) -> dict:
        deadline = time.monotonic() + scaled(15)
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/healthz", timeout=scaled(2)
                ) as response:
                    return json.loads(response.read())
            except OSError:
                if self.process.poll() is not None:
                    raise AssertionError(f"server exited: {self.process.stdout.read()}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM, then the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.finish()

    def finish(self) -> int:
        """Wait for the exit; keep what it printed in `output`."""
        self.output, _ = self.process.communicate(timeout=scaled(10))
        return self.process.returncode


@pytest.fixture
def launch():
    started: list[Server] = []

    def start(config_path: Path, *flags: str) -> Server:
        server = Server(config_path, *flags)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
        if server.process.stdout is not None and not server.process.stdout.closed:
            server.process.stdout.close()


def config_file(tmp_path: Path, changes: dict) -> Path:
    data = test_config.merge(test_config.baseline(), changes)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_port_and_instance_id_flags_override_the_file(tmp_path, launch):
    file_port, flag_port = free_port(), free_port()
    path = config_file(tmp_path, {"server": {"port": file_port, "instance_id": "from-file"}})
    server = launch(path, "--port", str(flag_port), "--instance-id", "from-flag")
    health = server.health(flag_port)
    assert health["instance"] == "from-flag"
    assert health["status"] == "ok"
    assert not listening(file_port)
    assert server.stop() == 0


def test_without_flags_the_file_decides(tmp_path, launch):
    file_port = free_port()
    path = config_file(tmp_path, {"server": {"port": file_port, "instance_id": "from-file"}})
    server = launch(path)
    assert server.health(file_port)["instance"] == "from-file"
    assert server.stop() == 0


def test_plugins_empty_runs_every_feature_off_and_says_so(tmp_path, launch):
    port = free_port()
    path = write_config(
        tmp_path, f"server: {{port: {port}}}\nstore: {{backend: memory}}\nplugins: {{}}\n"
    )
    server = launch(path)
    assert server.health(port)["status"] == "ok"
    assert server.stop() == 0
    assert f"plugins: {{}} in {path}: every feature is off" in server.output


@pytest.mark.parametrize(("choice", "expected"), [("auto", "uvloop"), ("asyncio", "asyncio")])
def test_the_server_says_which_loop_it_runs_on(tmp_path, launch, choice, expected):
    port = free_port()
    path = config_file(
        tmp_path, {"server": {"port": port, "event_loop": choice}, "logging": {"level": "info"}}
    )
    server = launch(path)
    assert server.health(port)["status"] == "ok"
    assert server.stop() == 0
    assert f"loop: {expected})" in server.output


def test_an_unknown_loop_is_a_config_error(tmp_path):
    path = config_file(tmp_path, {"server": {"event_loop": "trio"}})
    line = assert_one_line_error(run("--config", str(path)))
    assert "server.event_loop" in line


def test_host_flag_overrides_the_file(tmp_path, launch):
    port = free_port()
    path = config_file(tmp_path, {"server": {"host": "192.0.2.1", "port": port}})
    server = launch(path, "--host", "127.0.0.1")
    assert server.health(port)["status"] == "ok"
    assert server.stop() == 0


def test_redis_url_flag_overrides_the_file(tmp_path, launch, redis_server):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    port = free_port()
    path = config_file(
        tmp_path,
        {"server": {"port": port}, "store": {"backend": "redis", "redis_url": dead}},
    )
    server = launch(path, "--redis-url", redis_server.url)
    health = server.health(port)
    assert health["store"] == "redis"
    assert health["redis"] == "up"
    assert server.stop() == 0


def test_the_files_redis_url_is_used_without_the_flag(tmp_path, launch):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    port = free_port()
    path = config_file(
        tmp_path,
        {"server": {"port": port}, "store": {"backend": "redis", "redis_url": dead}},
    )
    server = launch(path)
    health = server.health(port)
    assert health["store"] == "redis"
    assert health["redis"] == "down"
    assert server.stop() == 0


# -- signals --------------------------------------------------------------------------


async def exit_status(process: subprocess.Popen, within: float) -> int | None:
    """Wait up to `within` seconds for the process to end, without blocking the loop."""
    try:
        return await asyncio.to_thread(process.wait, within)
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_closes_clients_with_1001_and_exits_0_in_time(processes, signum):
    server = processes({"server": {"shutdown_timeout": 2}})
    clients = [await WsClient.connect(server.port) for _ in range(3)]
    await clients[0].send("normal", "before the signal")
    for client in clients:
        await client.recv_type("message")
    started = time.monotonic()
    server.signal(signum)
    codes = await asyncio.gather(*(client.closed(timeout=5) for client in clients))
    assert codes == [1001, 1001, 1001]
    status = await exit_status(server.process, scaled(2))
    elapsed = time.monotonic() - started
    assert status == 0, server.log()
    assert elapsed < scaled(2)
    assert "Traceback" not in server.log()


@pytest.mark.gen_test(timeout=30)
async def test_a_client_that_never_answers_does_not_hold_up_the_exit(processes):
    server = processes({"server": {"shutdown_timeout": 1.5}})
    stuck = await RawWebSocket.connect(server.port)
    polite = await WsClient.connect(server.port)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert await polite.closed(timeout=5) == 1001
    status = await exit_status(server.process, scaled(1.5))
    elapsed = time.monotonic() - started
    assert status == 0, server.log()
    assert elapsed < scaled(1.5)
    stuck.close()


@pytest.mark.gen_test(timeout=30)
async def test_signal_with_no_clients_exits_0_at_once(processes):
    server = processes()
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert await exit_status(server.process, scaled(2)) == 0
    assert time.monotonic() - started < scaled(1)


def catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler for `signum` (Linux: SigCgt in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_while_starting_is_not_fatal(tmp_path, launch, own_redis, signum):
    # A Redis that accepts connections but never answers keeps start-up busy ~2 s.
    own_redis.pause()
    port = free_port()
    path = config_file(
        tmp_path,
        {"server": {"port": port}, "store": {"backend": "redis", "redis_url": own_redis.url}},
    )
    server = launch(path)
    deadline = time.monotonic() + scaled(10)
    while not catches(server.process.pid, signal.SIGTERM):
        assert server.process.poll() is None, server.process.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert not listening(port)  # still starting
    server.process.send_signal(signum)
    signalled = time.monotonic()
    if signum == signal.SIGTERM:
        assert server.finish() == 0
        # Start-up is abandoned at once, not waited for.
        assert time.monotonic() - signalled < scaled(1.5)
    else:
        own_redis.resume()
        assert server.health(port)["status"] in ("ok", "degraded")
        assert server.stop() == 0
    assert "Traceback" not in server.output


# -- the port is taken ----------------------------------------------------------------


def test_port_in_use_is_one_clear_line_and_a_failure(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = config_file(tmp_path, {"logging": {"level": "warning"}})
        result = run("--config", str(path), "--port", str(port))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, result.stderr
    assert f"127.0.0.1:{port}" in errors[0]
    assert "in use" in errors[0]
    assert len(result.stderr.splitlines()) == 1, result.stderr
