"""A private redis-server on a free port, which tests may kill and restart."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.support.ports import free_port
from tests.support.timing import scaled


def redis_binary() -> str:
    found = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if not found:
        raise RuntimeError(
            "redis-server not found: run the tests with ./dev test (it installs one) "
            "or set REDIS_SERVER"
        )
    return found


class RedisServer:
    """One redis-server process; `kill()` (SIGKILL) and `start()` keep the same port."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        extra: tuple[str, ...] = (),
        password: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.password = password  # given to `client()`: with --requirepass in `extra`
        self.port = port or free_port()
        self.extra = extra  # more redis-server arguments (cluster or sentinel mode)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                redis_binary(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
                "--loglevel", "warning",
                "--logfile", str(self.workdir / "redis.log"),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + scaled(10)
        while True:
            try:
                self.client().ping()
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log_file = self.workdir / "redis.log"
                    log = log_file.read_text() if log_file.exists() else ""
                    raise RuntimeError(
                        f"redis-server did not start on {self.port}: {log}"
                    ) from None
                time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: Redis hangs without closing its sockets."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=scaled(5)
        )
