"""Where a server's time goes under one scenario's load: a py-spy flame graph.

    python -m bench.profile echo-16                       # ours, 15 s of samples
    python -m bench.profile handshakes --server ours-bare --seconds 20
    python -m bench.profile many-rooms --busy 30
    python -m bench.profile reconnect-storm --when "coming back" --seconds 5

It runs the harness for that one scenario and server (one run, measured long enough),
waits until the server is busy with the load (its CPU above `--busy` % over a second,
after any set-up such as many-rooms' 10,000 connections), records the server process
with py-spy for `--seconds`, and writes bench/results/profiles/<scenario>-<server>.svg
(a flame graph: open it in a browser) and a .txt beside it with the functions that
took the most samples, inclusive and on their own. py-spy samples the running process
from outside (it must be allowed to ptrace it: as root, or with
kernel.yama.ptrace_scope 0); the server runs unchanged.

The samples are wall-clock samples of a thread that is not idle in the event loop, so
a system call that wakes the Redis server on the same CPU also counts the time that
Redis then runs before the server continues: read the Redis writes' share as an upper
bound of their cost.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.servers import ROOT

PROFILES = ROOT / "bench" / "results" / "profiles"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("scenario", help="a scenario name (python -m bench --list)")
    parser.add_argument("--server", default="ours", help="a server kind (default: ours)")
    parser.add_argument("--seconds", type=int, default=15, help="seconds of samples")
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    parser.add_argument(
        "--busy", type=float, default=50.0, help="server CPU %% that means the load is on"
    )
    parser.add_argument(
        "--when",
        help="wait for the harness to print this first (reconnect-storm: 'coming back')",
    )
    return parser.parse_args(argv)


def children(pid: int) -> list[int]:
    """Every descendant of `pid`."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            found += [int(k) for k in kids]
            todo += [int(k) for k in kids]
    return found


def server_pid(harness: int) -> int | None:
    """The harness's server process (server.py, or a reference server's script)."""
    for pid in children(harness):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [w.decode(errors="replace") for w in cmdline]
        if any(w.endswith(("server.py", "bare_tornado.py", "websockets_server.py")) for w in words):
            return pid
    return None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def watch(harness: subprocess.Popen, text: str | None) -> threading.Event:
    """Pass the harness's output through; the event is set once `text` was in it (at
    once without `text`)."""
    seen = threading.Event()
    if text is None:
        seen.set()
    wanted = text.encode() if text else b""

    def pump() -> None:
        tail = b""
        while chunk := harness.stdout.read1(4096):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            tail = (tail + chunk)[-(len(wanted) + 4096) :]
            if wanted and wanted in tail:
                seen.set()

    threading.Thread(target=pump, daemon=True).start()
    return seen


def wait_busy(
    harness: subprocess.Popen, busy: float, seen: threading.Event, timeout: float = 900.0
) -> int:
    """The server's pid, once `seen` is set and the server has been busier than `busy` %
    for a second."""
    deadline = time.monotonic() + timeout
    while not seen.wait(0.2):
        if harness.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the harness never printed what --when waits for")
    while time.monotonic() < deadline:
        if harness.poll() is not None:
            raise SystemExit("the harness ended before the server got busy")
        pid = server_pid(harness.pid)
        if pid is not None:
            try:
                before = cpu_seconds(pid)
                time.sleep(1.0)
                if (cpu_seconds(pid) - before) * 100 >= busy:
                    return pid
            except OSError:
                continue  # that server ended (a scenario may start several)
        else:
            time.sleep(0.2)
    raise SystemExit(f"the server did not get busy ({busy:.0f}% CPU) in {timeout:.0f} s")


def summary(collapsed: Path, top: int = 40) -> str:
    """The functions with the most samples, from py-spy's collapsed stacks."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    lines = [f"{total} samples", "", "inclusive %:"]
    lines += [f"{100 * n / total:5.1f}  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "own %:"]
    lines += [f"{100 * n / total:5.1f}  {f}" for f, n in own.most_common(top // 2)]
    return "\n".join(lines) + "\n"


def _short(frame: str) -> str:
    """`function (path/to/file.py:12)` as `function (file.py)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.rstrip(')').rpartition(':')[0]).name})" if where else name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is missing: pip install -r bench/requirements.txt")
    PROFILES.mkdir(parents=True, exist_ok=True)
    stem = PROFILES / f"{args.scenario}-{args.server}"
    measure = args.seconds + 15  # the run outlasts the samples
    harness = subprocess.Popen(
        [sys.executable, "-m", "bench", "--scenario", args.scenario, "--servers", args.server,
         "--repeats", "1", "--measure", str(measure)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # its progress lines are on stderr
    )  # fmt: skip
    seen = watch(harness, args.when)
    try:
        pid = wait_busy(harness, args.busy, seen)
        collapsed = stem.with_suffix(".collapsed")
        common = ["--pid", str(pid), "--duration", str(args.seconds), "--rate", str(args.rate)]
        # py-spy writes one format per recording: two at once, over the same seconds.
        recorders = [
            subprocess.Popen([spy, "record", *common, "--format", fmt, "-o", out])
            for fmt, out in (("raw", collapsed), ("flamegraph", stem.with_suffix(".svg")))
        ]
        if any(r.wait() != 0 for r in recorders):
            raise SystemExit("py-spy failed (see above; it needs to be allowed to ptrace)")
        stem.with_suffix(".txt").write_text(summary(collapsed))
        collapsed.unlink()
    finally:
        harness.terminate()
        harness.wait()
    print(f"{stem}.svg\n{stem}.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
