"""`server.py --workers N` as its own process: the supervisor and the workers it starts.

Workers are found the way an operator would: the supervisor's children in /proc, each
named by its `--worker K` argument.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.support.server_process import ROOT, ServerProcess
from tests.support.timing import scaled


def process_state(pid: int) -> tuple[int, str, list[str]] | None:
    """(parent pid, state letter, command line) of a process; None once it is gone (a
    zombie counts as gone: it runs nothing and holds no socket)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None
    # The command name in parentheses may itself hold spaces or parentheses.
    state, parent = stat.rsplit(")", 1)[1].split()[:2]
    if state == "Z":
        return None
    return int(parent), state, cmdline.split("\0")


class WorkersProcess(ServerProcess):
    """A supervisor of `workers` workers on a free port (or port 0: `port=None` after
    start until `find_port`)."""

    def __init__(
        self,
        config: dict,
        workdir: Path,
        *,
        workers: int = 2,
        instance_id: str | None = None,
        pick_port: bool = False,
    ) -> None:
        super().__init__(config, workdir, instance_id=instance_id)
        self.workers = workers
        self.pick_port = pick_port
        self.explicit_id = instance_id is not None or not pick_port
        if pick_port:
            # The file says port 0 and no flag overrides it: the supervisor picks one.
            self.log_path = workdir / f"workers-{self.port}.log"
            self.port = None

    def command(self) -> list[str]:
        command = [sys.executable, str(ROOT / "server.py"), "--config", str(self.config_path)]
        command += ["--workers", str(self.workers)]
        if not self.pick_port:
            command += ["--port", str(self.port)]
        if self.explicit_id:
            command += ["--instance-id", self.instance_id]
        return command

    def start(self, wait: bool = True) -> WorkersProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        if wait:
            self.wait_ready()
        return self

    def find_port(self) -> int:
        """The port the supervisor picked (from its first log line)."""
        deadline = time.monotonic() + scaled(15)
        while self.port is None:
            found = re.search(r"workers on [^ ]+:(\d+),", self.log())
            if found:
                self.port = int(found.group(1))
                if not self.explicit_id:
                    # The documented default: host name and port, then /k.
                    self.instance_id = f"{socket.gethostname()}:{self.port}"
            elif time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"no port in the supervisor's log: {self.log()}")
            else:
                time.sleep(0.02)
        return self.port

    def worker_ids(self, base: str | None = None) -> set[str]:
        base = base or self.instance_id
        return {f"{base}/{k}" for k in range(1, self.workers + 1)}

    def wait_ready(self, ids: set[str] | None = None) -> None:
        """Until /healthz has been answered by every worker (each request is a new
        connection, so the kernel picks a worker for each)."""
        self.find_port()
        ids = ids or self.worker_ids()
        seen: set[str] = set()
        deadline = time.monotonic() + scaled(20)
        while not ids <= seen:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"supervisor exited with {self.process.returncode}: {self.log()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers {sorted(ids - seen)} not ready: {self.log()}")
            try:
                seen.add(self.health()[1]["instance"])
            except OSError:
                time.sleep(0.05)

    def worker_pids(self) -> dict[int, int]:
        """Worker number -> pid, of the supervisor's live children."""
        found = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            state = process_state(int(entry))
            if state is None or state[0] != self.process.pid or "--worker" not in state[2]:
                continue
            args = state[2]
            found[int(args[args.index("--worker") + 1])] = int(entry)
        return found

    def kill(self) -> None:
        """SIGKILL the supervisor and its workers (the supervisor first, so that it
        restarts none)."""
        if self.process is None or self.process.poll() is not None:
            return
        workers = self.worker_pids()
        self.process.send_signal(signal.SIGKILL)
        for pid in workers.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.wait()


def write_config(server: ServerProcess, config: dict) -> None:
    """Replace the server's configuration file (to be read on SIGHUP or a restart)."""
    server.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
