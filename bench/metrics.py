"""What the harness reads from /proc, and the statistics it reports.

Server CPU is utime + stime of the server's own process (all its threads) from
/proc/PID/stat, so the load generator's CPU never counts. Memory is VmRSS from
/proc/PID/status. Connections refused for a full accept queue: /proc/net/netstat.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Iterable, Sequence

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid`, in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces; fields after it are space-separated.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_of(pids: Iterable[int]) -> dict[int, float]:
    return {pid: cpu_seconds(pid) for pid in pids}


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid`."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def listen_overflows() -> int:
    """Connections the kernel turned away because a listening socket's accept queue was
    full (TcpExt ListenOverflows in /proc/net/netstat: every socket of this network
    namespace). Each such client gets no answer and tries again a second or more later."""
    try:
        with open("/proc/net/netstat") as f:
            lines = [line.split() for line in f if line.startswith("TcpExt:")]
    except OSError:
        return 0
    if len(lines) < 2 or "ListenOverflows" not in lines[0]:
        return 0
    return int(lines[1][lines[0].index("ListenOverflows")])


def own_cpu_seconds() -> float:
    """This (load-generating) process's CPU, to tell when the load itself is the limit."""
    t = os.times()
    return t.user + t.system


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0-100) by nearest rank of sorted `values`."""
    if not values:
        return None
    rank = max(1, math.ceil(p / 100 * len(values)))
    return values[rank - 1]


def latency_summary(samples: list[float]) -> dict:
    """p50 / p99 / max in milliseconds of latencies in seconds."""
    samples = sorted(samples)
    return {
        "count": len(samples),
        "p50_ms": _ms(percentile(samples, 50)),
        "p99_ms": _ms(percentile(samples, 99)),
        "max_ms": _ms(samples[-1] if samples else None),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def machine_info() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
