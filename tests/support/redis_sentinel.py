"""A Redis master, its replica and a sentinel watching them, started by the tests."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from tests.support.ports import free_port
from tests.support.redis_server import RedisServer, redis_binary
from tests.support.timing import scaled

MASTER_NAME = "relay"
DOWN_AFTER_MS = 2000


class RedisSentinel:
    """`master` (a RedisServer), `replica` (replicating it) and one sentinel that fails
    the master over to the replica `DOWN_AFTER_MS` after it stops answering."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        self.workdir = workdir
        self.password = password
        auth = ("--requirepass", password, "--masterauth", password) if password else ()
        self.master = RedisServer(workdir / "a", extra=auth, password=password)
        self.replica = RedisServer(
            workdir / "b",
            extra=("--replicaof", "127.0.0.1", str(self.master.port), *auth),
            password=password,
        )
        self.sentinel_port = free_port()
        self.sentinel: subprocess.Popen | None = None

    @property
    def addresses(self) -> list[str]:
        """What `store.redis_sentinels` says."""
        return [f"127.0.0.1:{self.sentinel_port}"]

    def start(self) -> RedisSentinel:
        self.master.start()
        self.replica.start()
        until_true(
            lambda: self.replica.client().info("replication")["master_link_status"] == "up",
            "the replica to sync",
        )
        folder = self.workdir / "sentinel"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "sentinel.conf"  # a sentinel rewrites its file: its own
        config.write_text(
            f"port {self.sentinel_port}\n"
            "bind 127.0.0.1\n"
            f"dir {folder}\n"
            f"logfile {folder / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} 10000\n"
            + (f"sentinel auth-pass {MASTER_NAME} {self.password}\n" if self.password else "")
        )
        self.sentinel = subprocess.Popen(
            [redis_binary(), str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        until_true(lambda: self.master_port() == self.master.port, "the sentinel to answer")
        # It has found the replica (through the master): it can fail over to it.
        until_true(lambda: self._replicas_known() >= 1, "the sentinel to see the replica")
        return self

    def _client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.sentinel_port, socket_timeout=scaled(5))

    def master_port(self) -> int | None:
        """The master's port, as the sentinel says now."""
        try:
            reply = self._client().execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME
            )
        except redis.ConnectionError:
            return None
        return int(reply[1]) if reply else None

    def _replicas_known(self) -> int:
        return len(self._client().execute_command("SENTINEL", "REPLICAS", MASTER_NAME))

    def wait_promotion(self, timeout: float = 30) -> RedisServer:
        """Until the sentinel names the replica master; the new master."""
        until_true(lambda: self.master_port() == self.replica.port, "the promotion", timeout)
        return self.replica

    def stop(self) -> None:
        if self.sentinel is not None:
            self.sentinel.kill()
            self.sentinel.wait()
        self.replica.kill()
        self.master.kill()


def until_true(condition, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)
