"""A server running as its own process, as users run it: `python server.py --config`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from tests.support.ports import free_port
from tests.support.timing import scaled

ROOT = Path(__file__).resolve().parents[2]


class ServerProcess:
    """`server.py` in a subprocess, with its own config file and port."""

    def __init__(self, config: dict, workdir: Path, *, instance_id: str | None = None) -> None:
        self.port = free_port()
        self.instance_id = instance_id or f"test-{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"config-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / f"server-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> ServerProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "server.py"),
                "--config", str(self.config_path),
                "--port", str(self.port),
                "--instance-id", self.instance_id,
            ],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + scaled(15)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log()}")
            try:
                self.health()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not become ready: {self.log()}")

    def health(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/healthz", timeout=scaled(2)
            ) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.wait()

    def stop(self) -> int:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait()

    def wait(self, timeout: float = 15) -> int:
        code = self.process.wait(scaled(timeout))
        self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
