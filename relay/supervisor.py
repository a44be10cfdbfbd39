"""The supervisor of `server.workers: N`: N worker processes sharing one port.

`server.py` with `workers` above 1 runs this instead of an instance. It serves nothing
itself: it starts N copies of `server.py`, each an instance of its own (worker k's id is
`{instance_id}/{k}`) listening on the same port with SO_REUSEPORT, so the kernel spreads
new connections over them, and it looks after them:

- SIGTERM / SIGINT go to every worker; each drains; the supervisor exits 0 once every
  worker has stopped cleanly (1 if one did not, or had to be killed at the deadline).
- SIGHUP goes to every worker: each re-reads the configuration file.
- A worker that exits without being asked to is started again with the same number and
  id, after a pause that doubles while it keeps dying young. Exit status 2 (a
  configuration mistake, or its instance id held by another live instance) is not
  restarted, since it would fail the same way; the next SIGHUP tries again. When no
  worker is left running or due to restart, the supervisor exits 2.
- On Linux the workers get SIGTERM when the supervisor dies, even by SIGKILL, so none
  outlives it (PR_SET_PDEATHSIG).
- Metrics: the workers share one prometheus_client multiprocess directory that the
  supervisor makes and removes, so /metrics on any worker covers them all.

Why not Tornado's `fork_processes`: it forwards no signal and leaves its children behind
when it is killed.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from core.ops.metrics import SHARED_DIR_VARIABLE, forget_process

log = logging.getLogger("supervisor")

FIRST_PAUSE = 0.5  # seconds before restarting a worker that died
MAX_PAUSE = 30.0
# A worker that ran this long before dying is restarted after FIRST_PAUSE again.
STABLE_AFTER = 60.0
# Beyond server.shutdown_timeout, for a worker to exit after its drain.
STOP_GRACE = 5.0
PR_SET_PDEATHSIG = 1
CONFIG_MISTAKE = 2


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) `host:port` with SO_REUSEPORT and return the socket.

    Held by the supervisor for its whole life: a port in use is an error before any
    worker starts, port 0 becomes one port that every worker is given, and nobody else
    can take the port while the workers restart. A socket that does not listen gets
    none of the connections.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def describe_exit(code: int) -> str:
    """'exit status 1', 'killed by SIGKILL'."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that has the child sent SIGTERM when this process dies (Linux);
    None where there is no such thing."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not after the fork
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the supervisor died before the request took effect
            os._exit(1)

    return preexec


@dataclass
class Worker:
    """One of the N places: its number, its process while one runs, its restart."""

    number: int
    process: subprocess.Popen | None = None
    started: float = 0.0
    pause: float = FIRST_PAUSE
    restart: asyncio.TimerHandle | None = None
    given_up: bool = False  # exited with status 2: waits for a SIGHUP


class Supervisor:
    """Runs `workers` processes, `command(k)` for k in 1..workers: `await run()`."""

    def __init__(
        self, command: Callable[[int], list[str]], workers: int, stop_timeout: float
    ) -> None:
        self.command = command
        self.workers = [Worker(k) for k in range(1, workers + 1)]
        self.stop_timeout = stop_timeout
        self.stopping = False
        self.failed = False  # a worker did not stop cleanly
        self.shared_dir = ""
        self.env: dict[str, str] = {}
        self._preexec = _die_with_parent()
        self._done: asyncio.Future[int] | None = None
        self._deadline: asyncio.TimerHandle | None = None

    async def run(self) -> int:
        """Start the workers and look after them until they have all stopped; the exit
        status."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        handlers = {
            signal.SIGTERM: self.stop,
            signal.SIGINT: self.stop,
            signal.SIGHUP: self.reload,
            signal.SIGCHLD: self.reap,
        }
        with tempfile.TemporaryDirectory(prefix="relay-metrics-") as shared_dir:
            self.shared_dir = shared_dir
            self.env = {**os.environ, SHARED_DIR_VARIABLE: shared_dir}
            # Before the first child: an exit is never missed.
            for signum, handler in handlers.items():
                loop.add_signal_handler(signum, handler, signum)
            try:
                for worker in self.workers:
                    self._start(worker)
                log.info("supervising %d workers (pid %d)", len(self.workers), os.getpid())
                return await self._done
            finally:
                for signum in handlers:
                    loop.remove_signal_handler(signum)
                for worker in self.workers:
                    if worker.restart is not None:
                        worker.restart.cancel()
                    if worker.process is not None and worker.process.poll() is None:
                        worker.process.kill()
                        worker.process.wait()

    # -- workers ----------------------------------------------------------------------

    def _start(self, worker: Worker) -> None:
        worker.restart = None
        worker.given_up = False
        worker.started = asyncio.get_running_loop().time()
        try:
            # preexec_fn is unsafe only with threads, and the supervisor runs none.
            worker.process = subprocess.Popen(
                self.command(worker.number),
                env=self.env,
                preexec_fn=self._preexec,  # noqa: PLW1509
            )
        except OSError as error:
            log.error("cannot start worker %d: %s", worker.number, error)
            self._restart_later(worker)
            return
        log.info("worker %d started: pid %d", worker.number, worker.process.pid)

    def _restart_later(self, worker: Worker) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - worker.started >= STABLE_AFTER:
            worker.pause = FIRST_PAUSE
        log.info("restarting worker %d in %gs", worker.number, worker.pause)
        worker.restart = loop.call_later(worker.pause, self._start, worker)
        worker.pause = min(MAX_PAUSE, worker.pause * 2)

    def reap(self, signum: int = signal.SIGCHLD) -> None:
        """SIGCHLD: deal with every worker that has exited (signals of several exits
        may arrive as one)."""
        for worker in self.workers:
            process = worker.process
            if process is None or process.poll() is None:
                continue
            worker.process = None
            forget_process(self.shared_dir, process.pid)
            self._exited(worker, process.pid, process.returncode)
        self._finish_if_done()

    def _exited(self, worker: Worker, pid: int, code: int) -> None:
        how = describe_exit(code)
        if self.stopping:
            if code != 0:
                self.failed = True
                log.error("worker %d (pid %d) stopped with %s", worker.number, pid, how)
            return
        if code == CONFIG_MISTAKE:
            worker.given_up = True
            log.error(
                "worker %d (pid %d) exited with status 2 (a configuration mistake, or its "
                "instance id in use): not restarted until SIGHUP",
                worker.number,
                pid,
            )
            return
        log.error("worker %d (pid %d) died: %s", worker.number, pid, how)
        self._restart_later(worker)

    def _finish_if_done(self) -> None:
        if self._done is None or self._done.done():
            return
        if any(w.process is not None for w in self.workers):
            return
        if self.stopping:
            if self._deadline is not None:
                self._deadline.cancel()
            log.info("every worker has stopped")
            self._done.set_result(1 if self.failed else 0)
        elif all(w.given_up for w in self.workers):
            log.error("no worker left running: stopping")
            self._done.set_result(CONFIG_MISTAKE)

    # -- signals ----------------------------------------------------------------------

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """SIGTERM / SIGINT: every worker drains; no more restarts."""
        if not self.stopping:
            self.stopping = True
            log.info("%s: stopping every worker", signal.Signals(signum).name)
            for worker in self.workers:
                if worker.restart is not None:
                    worker.restart.cancel()
                    worker.restart = None
            self._deadline = asyncio.get_running_loop().call_later(
                self.stop_timeout + STOP_GRACE, self._kill_stragglers
            )
        self._send(signum)
        self._finish_if_done()

    def reload(self, signum: int = signal.SIGHUP) -> None:
        """SIGHUP: every worker re-reads the file; one that gave up (status 2) is
        started again, since the file may have been fixed."""
        if self.stopping:
            return
        log.info("SIGHUP: every worker reloads")
        self._send(signal.SIGHUP)
        for worker in self.workers:
            if worker.given_up:
                self._start(worker)

    def _send(self, signum: int) -> None:
        for worker in self.workers:
            if worker.process is not None:
                try:
                    worker.process.send_signal(signum)
                except ProcessLookupError:
                    pass  # exited; its SIGCHLD is on the way

    def _kill_stragglers(self) -> None:
        for worker in self.workers:
            if worker.process is not None:
                log.error(
                    "worker %d (pid %d) still running %gs after the stop: killed",
                    worker.number,
                    worker.process.pid,
                    self.stop_timeout + STOP_GRACE,
                )
                self.failed = True
                worker.process.kill()
