"""The servers under test, each started as its own process, and their private Redis.

Every server process (and redis-server) is pinned to CPU 0; the harness and its load
run on CPU 1 (`pin_load`), so a server never shares its core with the clients driving
it. Processes get the highest open-file limit allowed, for the 5000-connection runs.

| key          | what                                                                        |
|--------------|-----------------------------------------------------------------------------|
| `ours`       | server.py, every plugin on, redis backend, ratelimit/throttle raised        |
| `ours-bare`  | server.py, no plugins, memory backend                                       |
| `tornado`    | bench/reference/bare_tornado.py: `write_message` per client                 |
| `websockets` | bench/reference/websockets_server.py: `websockets.broadcast()`              |
| `floor`      | bench/reference/floor_server.py: frame built once, a `send()` per client    |
| `socketio`   | bench/reference/socketio_server.py: python-socketio + AsyncRedisManager     |
"""

from __future__ import annotations

import copy
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
# ours-auth verifies HS256 tokens signed with this; the load presents one.
BENCH_JWT_SECRET = "relay-bench-secret-of-at-least-thirty-two-bytes"
SERVER_CPU = 0
LOAD_CPU = 1
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class ServerFailed(Exception):
    """A server (or its Redis) would not start, or died under load."""


# -- CPU placement and limits -------------------------------------------------------


def can_pin() -> bool:
    """Whether the machine has both CPUs (not this process's affinity, which pin_load
    has narrowed to one)."""
    return hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > max(SERVER_CPU, LOAD_CPU)


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def pin_load() -> None:
    """Pin the calling (load-generating) process to the load CPU."""
    if can_pin():
        os.sched_setaffinity(0, {LOAD_CPU})
        if os.sched_getaffinity(0) != {LOAD_CPU}:
            raise ServerFailed(f"could not pin the load to CPU {LOAD_CPU}")
    raise_nofile()


def place_server(pid: int) -> None:
    """Pin every thread of server process `pid` to the server CPU and give it the highest
    open-file limit. Called right after start and again once it listens, which catches
    threads started in between (new threads inherit the pinning)."""
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (hard, hard))
    if not can_pin():
        return
    try:
        threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return  # it already exited; the caller will find out
    for tid in threads:
        try:
            os.sched_setaffinity(tid, {SERVER_CPU})
        except (ProcessLookupError, FileNotFoundError):
            pass


def check_placement(pid: int) -> None:
    """Fail unless every thread of `pid` is pinned to the server CPU."""
    if not can_pin():
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            cpus = os.sched_getaffinity(int(tid))
        except ProcessLookupError:
            continue
        if cpus != {SERVER_CPU}:
            raise ServerFailed(f"process {pid} runs on CPUs {sorted(cpus)}, not {SERVER_CPU}")


def children_of(pid: int) -> list[int]:
    """The live child processes of `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name in parentheses may hold spaces: the fields after it.
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if int(parent) == pid and state != "Z":
            found.append(int(entry))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait_port(port: int, process: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ServerFailed(f"exited with status {process.returncode}: {tail(log)}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise ServerFailed(f"not listening after {timeout:.0f} s: {tail(log)}") from None
            time.sleep(0.05)


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


def _stop(process: subprocess.Popen | None) -> int | None:
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


# -- Redis --------------------------------------------------------------------------


def redis_binary() -> str:
    found = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if not found:
        raise ServerFailed("redis-server not found: run ./dev bench (it installs one)")
    return found


class Redis:
    """A private redis-server on a free port (never the shared one on 6379)."""

    def __init__(self, workdir: Path, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.workdir = workdir / f"redis-{self.port}"
        self.extra = extra  # more redis-server arguments (a cluster node's)
        self.bus: int | None = None  # a cluster node's bus port
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Redis:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "redis.log"
        self.process = subprocess.Popen(
            [
                redis_binary(),
                "--port", str(self.port),
                "--bind", HOST,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
                "--loglevel", "warning",
                "--logfile", str(log),
                "--maxclients", "10000",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        place_server(self.process.pid)
        _wait_port(self.port, self.process, START_TIMEOUT, log)
        place_server(self.process.pid)
        check_placement(self.process.pid)
        self._ping()
        return self

    def _ping(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with socket.create_connection((HOST, self.port), timeout=2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ServerFailed(f"redis-server on {self.port} does not answer PING")
            time.sleep(0.05)

    def command(self, *args: str):
        """One command on a connection of its own (outside the measured windows)."""
        import redis

        client = redis.Redis(host=HOST, port=self.port, socket_timeout=10)
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    def pubsub_channels(self, pattern: str = "*") -> list[str]:
        """`PUBSUB CHANNELS pattern`: the pub/sub channels someone subscribes to."""
        return [c.decode() for c in self.command("PUBSUB", "CHANNELS", pattern)]

    @property
    def pids(self) -> list[int]:
        return [self.pid]

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        _stop(self.process)
        self.process = None


CLUSTER_SLOTS = 16384


class RedisCluster:
    """`masters` redis-servers in cluster mode sharing the slots (no replicas): the store
    of `ours-cluster`. The same interface as Redis where a run needs one."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        self.nodes: list[Redis] = []
        for _ in range(masters):
            port, bus = _cluster_port(), _cluster_port()
            node_dir = workdir / f"cluster-{port}"
            extra = (
                "--cluster-enabled", "yes",
                "--cluster-port", str(bus),
                "--cluster-config-file", str(node_dir / "nodes.conf"),
            )  # fmt: skip
            node = Redis(workdir, port, extra)
            node.bus = bus
            self.nodes.append(node)

    @property
    def url(self) -> str:
        return self.nodes[0].url  # not used by the server: it is given the seeds

    @property
    def seeds(self) -> list[str]:
        return [f"{HOST}:{n.port}" for n in self.nodes]

    @property
    def pids(self) -> list[int]:
        return [n.pid for n in self.nodes]

    def start(self) -> RedisCluster:
        for node in self.nodes:
            (node.workdir.parent / f"cluster-{node.port}").mkdir(parents=True, exist_ok=True)
            node.start()
        per = CLUSTER_SLOTS // len(self.nodes)
        for i, node in enumerate(self.nodes):
            last = CLUSTER_SLOTS - 1 if i == len(self.nodes) - 1 else (i + 1) * per - 1
            node.command("CLUSTER", "SET-CONFIG-EPOCH", str(i + 1))
            node.command("CLUSTER", "ADDSLOTSRANGE", str(i * per), str(last))
        for node in self.nodes[1:]:
            self.nodes[0].command("CLUSTER", "MEET", HOST, str(node.port), str(node.bus))
        deadline = time.monotonic() + START_TIMEOUT
        while not all(b"cluster_state:ok" in n.command("CLUSTER", "INFO") for n in self.nodes):
            if time.monotonic() > deadline:
                raise ServerFailed("the Redis Cluster did not come up")
            time.sleep(0.1)
        return self

    def command(self, *args: str):
        return self.nodes[0].command(*args)

    def pubsub_channels(self, pattern: str = "*") -> list[str]:
        # Sharded channels: the classic list is empty by design; count the shard ones.
        found: list[str] = []
        for node in self.nodes:
            found += [c.decode() for c in node.command("PUBSUB", "SHARDCHANNELS", pattern)]
        return found

    def alive(self) -> bool:
        return all(n.alive() for n in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_port() -> int:
    """A free port a cluster node accepts (at most 55535)."""
    while (port := free_port()) > 55535:
        pass
    return port


# -- servers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of server under test."""

    key: str
    label: str
    dialect: str  # bench.clients.DIALECTS key
    redis: bool  # needs a Redis
    describe: str
    workers: int = 1  # ours: server.workers

    @property
    def reference(self) -> bool:
        return not self.key.startswith("ours")


KINDS: dict[str, Kind] = {
    k.key: k
    for k in (
        Kind(
            "ours",
            "ours (all plugins, redis)",
            "relay",
            True,
            "server.py with config.yaml's plugins all on, redis backend on a private "
            "redis-server; ratelimit and throttle raised so they never refuse the load",
        ),
        Kind(
            "ours-cluster",
            "ours (all plugins, redis cluster)",
            "relay",
            True,
            "as `ours`, on a Redis Cluster of 3 masters (no replicas), all on the server's "
            "CPU: sharded pub/sub, every channel's keys on its slot's shard",
        ),
        Kind(
            "ours-auth",
            "ours (all plugins + auth, redis)",
            "relay-auth",
            True,
            "as `ours`, with plugins.auth on: every connection presents an HS256 JWT "
            "(`?token=`) that the server verifies",
        ),
        Kind(
            "ours-2w",
            "ours (all plugins, redis, 2 workers)",
            "relay",
            True,
            "as `ours`, with `server.workers: 2`: a supervisor and two worker processes "
            "sharing the port, all pinned to the server's one CPU (their CPU and memory "
            "summed)",
            workers=2,
        ),
        Kind(
            "ours-asyncio",
            "ours (all plugins, redis, asyncio loop)",
            "relay",
            True,
            "as `ours`, with `server.event_loop: asyncio`: asyncio's own event loop instead "
            "of uvloop (the default), on the loop the references run on",
        ),
        Kind(
            "ours-bare",
            "ours (no plugins, memory)",
            "relay",
            False,
            "server.py with `plugins: {}` and the memory backend: the core alone",
        ),
        Kind(
            "tornado",
            "bare Tornado",
            "plain",
            False,
            "bench/reference/bare_tornado.py: a Tornado WebSocketHandler calling "
            "write_message for each client",
        ),
        Kind(
            "websockets",
            "websockets",
            "plain",
            False,
            "bench/reference/websockets_server.py: the websockets library's broadcast()",
        ),
        Kind(
            "floor",
            "floor",
            "plain",
            False,
            "bench/reference/floor_server.py: Tornado accepts and reads; each message's "
            "frame is built once and handed to every client's socket with one send(), "
            "on uvloop as ours: what a Python process can do at best for a broadcast",
        ),
        Kind(
            "floor-rooms",
            "floor (rooms)",
            "relay",
            False,
            "bench/reference/floor_server.py --rooms: our protocol's least for rooms "
            "(welcome, subscribe answered, each message's frame built once and sent to "
            "its room's members with one send() each), on uvloop: the best a Python "
            "process can do for many-rooms",
        ),
        Kind(
            "socketio",
            "python-socketio (redis)",
            "socketio",
            True,
            "bench/reference/socketio_server.py: python-socketio AsyncServer with "
            "AsyncRedisManager on a private redis-server, served by aiohttp",
        ),
    )
}


def our_config(
    kind: Kind, port: int, redis_url: str | None, cluster: list[str] | None = None
) -> dict:
    """config.yaml as shipped, adjusted for a benchmark instance of `kind`."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config = copy.deepcopy(config)
    config["server"].update(host=HOST, port=port, instance_id=f"bench-{port}", shutdown_timeout=3)
    config["logging"] = {"format": "plain", "level": "warning"}
    if kind.key == "ours-bare":
        config["store"] = {"backend": "memory"}
        config["plugins"] = {}
        return config
    config["store"].update(backend="redis", redis_url=redis_url)
    plugins = config["plugins"]
    # config.yaml takes these from the environment: the benchmark's own, whatever it is.
    plugins["auth"].update(enabled=False, dev_tokens=False)
    if cluster:
        config["store"]["redis_cluster"] = cluster
    config["server"]["workers"] = kind.workers
    if kind.key == "ours-asyncio":
        config["server"]["event_loop"] = "asyncio"
    if kind.key == "ours-auth":
        plugins["auth"].update(enabled=True, secret=BENCH_JWT_SECRET, dev_tokens=False)
    # Raised so that the limits never refuse the benchmark's load (all from one IP).
    plugins["throttle"]["max_connections_per_ip"] = 1_000_000
    plugins["ratelimit"]["max_messages_per_second"] = 1_000_000
    plugins["ratelimit"]["burst"] = 1_000_000
    plugins["ratelimit"]["per_ip"] = {"max_messages_per_second": 1_000_000, "burst": 1_000_000}
    plugins["sessions"]["max_new_per_ip_per_minute"] = 1_000_000
    return config


class Server:
    """One server process of `kind` on a free port, pinned to the server CPU."""

    def __init__(
        self, kind: Kind, workdir: Path, redis: Redis | RedisCluster | None = None
    ) -> None:
        if kind.redis and redis is None:
            raise ValueError(f"{kind.key} needs a Redis")
        self.kind = kind
        self.redis = redis
        self.port = free_port()
        self.workdir = workdir
        self.log_path = workdir / f"{kind.key}-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.config: dict | None = None  # ours: the configuration it runs with

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def pids(self) -> list[int]:
        """Its processes: itself and, with workers, the workers it started."""
        return [self.pid, *children_of(self.pid)] if self.kind.workers > 1 else [self.pid]

    def command(self) -> list[str]:
        redis_url = self.redis.url if self.redis is not None else None
        key = self.kind.key
        if key.startswith("ours"):
            config_path = self.workdir / f"config-{self.port}.yaml"
            seeds = self.redis.seeds if isinstance(self.redis, RedisCluster) else None
            config = self.config = our_config(self.kind, self.port, redis_url, seeds)
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
            return [sys.executable, str(ROOT / "server.py"), "--config", str(config_path)]
        script = {
            "tornado": "bare_tornado.py",
            "websockets": "websockets_server.py",
            "floor": "floor_server.py",
            "floor-rooms": "floor_server.py",
            "socketio": "socketio_server.py",
        }[key]
        command = [sys.executable, str(ROOT / "bench" / "reference" / script)]
        command += ["--port", str(self.port)]
        if key == "floor-rooms":
            command.append("--rooms")
        if redis_url is not None:
            command += ["--redis-url", redis_url]
        return command

    @property
    def key_prefix(self) -> str:
        """Ours: what its Redis keys and pub/sub channels start with."""
        assert self.config is not None
        return self.config["store"].get("key_prefix", "ws:")

    def start(self) -> Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        place_server(self.process.pid)
        _wait_port(self.port, self.process, START_TIMEOUT, self.log_path)
        if self.kind.workers > 1:
            self._wait_workers()
        for pid in self.pids:
            place_server(pid)
            check_placement(pid)
        return self

    def _wait_workers(self) -> None:
        """Until every worker has answered /healthz (the port answers once the first
        listens; each request is a new connection, which the kernel gives to either)."""
        deadline = time.monotonic() + START_TIMEOUT
        seen: set[str] = set()
        while len(seen) < self.kind.workers:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise ServerFailed(
                    f"{self.kind.workers} workers did not start: {tail(self.log_path)}"
                )
            try:
                seen.add(self.healthz()["instance"])
            except OSError:
                time.sleep(0.05)

    def healthz(self) -> dict:
        """Ours: `GET /healthz` (instance, connections, store, redis)."""
        import json
        import urllib.request

        with urllib.request.urlopen(f"http://{HOST}:{self.port}/healthz", timeout=5) as reply:
            return json.load(reply)

    def counters(self) -> dict[str, float]:
        """Ours: `GET /metrics`, each sample's value summed over its labels."""
        import urllib.request

        with urllib.request.urlopen(f"http://{HOST}:{self.port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                name = name.split("{", 1)[0]
                try:
                    values[name] = values.get(name, 0.0) + float(value)
                except ValueError:
                    continue
        return values

    def check(self) -> None:
        """Fail if the server process has died."""
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise ServerFailed(
                f"{self.kind.label} exited (status {code}) during the run: {tail(self.log_path)}"
            )

    def stop(self) -> int | None:
        code = _stop(self.process)
        return code
