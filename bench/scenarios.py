"""The scenarios: what load each one puts on a server, and what it measures.

Runs of a scenario are interleaved: repeat 1 runs every server once, then repeat 2 in a
rotated order, and so on, so that a noisy minute on the shared machine does not land
on one server's runs only. The servers of a scenario are started together (idle while
another one is measured) and stopped at its end; the memory scenarios (idle, slow
consumer) start fresh servers instead, since they measure RSS.

Every run: connect, `sync` (every receiver provably subscribed), warm up, measure for
a fixed time with the server's CPU read from /proc before and after, stop the load,
check that every receiver got every message, close.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import math
import multiprocessing
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench import metrics
from bench.clients import (
    DIALECTS,
    Conn,
    Dialect,
    MessageMaker,
    ProtocolError,
    close_all,
    connect,
    connect_many,
    hold_idle,
    quiet,
    seq_of,
    subscribe_many,
    tag,
)
from bench.load import (
    Broadcast,
    RateSender,
    Rooms,
    RoomSender,
    RunFailed,
    WindowSender,
    assign_rooms,
    check_connections,
    room_name,
    sync,
    track_upto,
    wait_until,
)
from bench.progress import Progress
from bench.servers import (
    HOST,
    KINDS,
    SERVER_CPU,
    Kind,
    Redis,
    RedisCluster,
    Server,
    ServerFailed,
    tail,
)

perf = time.perf_counter
DRAIN_TIMEOUT = 20.0
RUN_TIMEOUT = 180.0


# -- what a run is configured with ---------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Durations and sizes; `--quick` shrinks them."""

    warmup: float = 1.0
    measure: float = 3.0
    repeats: int = 3
    message_size: int = 64  # characters of `content`
    in_flight: int = 3200  # fan-out: deliveries in flight (window = in_flight / receivers)
    fanout: tuple[int, ...] = (100, 1000)
    echo: tuple[int, ...] = (16, 100)
    handshake_concurrency: int = 16
    idle_connections: int = 5000
    idle_window: float = 60.0
    cross_receivers: int = 1000
    cross_rate: float = 10.0  # messages per second, into all the receivers
    # A loaded run of ours alone (the reference cannot keep up): 100k deliveries/s,
    # two instances and Redis on one core.
    cross_loaded_rate: float = 100.0
    cross_measure: float = 5.0
    slow_receivers: int = 20
    slow_healthy: int = 4
    slow_rate: float = 500.0
    slow_size: int = 4096
    slow_duration: float = 8.0
    slow_rcvbuf: int = 16384
    # many-rooms: connections in the default channel and `rooms_per_connection` rooms of
    # `room_size` each; messages from `rooms_publishers` of them into their own rooms.
    rooms_connections: int = 10_000
    rooms_per_connection: int = 5
    room_size: int = 25
    rooms_publishers: int = 200
    rooms_emptied: int = 20  # rooms whose members all unsubscribe after the load
    # reconnect-storm: clients with sessions, each in the default channel and
    # `storm_rooms` rooms of `room_size`; `storm_seeded` messages in every channel before
    # they join, `storm_missed` more while they are away.
    storm_clients: int = 5000
    storm_rooms: int = 2
    storm_seeded: int = 2
    storm_missed: int = 3

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            warmup=0.5,
            measure=1.5,
            repeats=1,
            idle_connections=1000,
            rooms_connections=2000,
            storm_clients=1000,
            idle_window=8.0,
            cross_measure=2.0,
            slow_duration=4.0,
        )


@dataclass
class Context:
    plan: Plan
    progress: Progress
    workdir: Path


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    fmt: str = "{:,.0f}"
    better: str | None = None  # "higher" | "lower" | None


@dataclass
class ScenarioResult:
    runs: dict[str, list[dict]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    params: dict = field(default_factory=dict)


# -- servers of one kind: one or two instances and maybe a Redis -------------------------


class Setup:
    """The processes one run talks to: `instances` servers of `kind` (on one Redis)."""

    def __init__(self, kind: Kind, workdir: Path, instances: int = 1) -> None:
        self.kind = kind
        self.workdir = workdir
        self.instances = instances
        self.redis: Redis | RedisCluster | None = None
        self.servers: list[Server] = []

    def start(self) -> Setup:
        try:
            if self.kind.key == "ours-cluster":
                self.redis = RedisCluster(self.workdir).start()
            elif self.kind.redis:
                self.redis = Redis(self.workdir).start()
            for _ in range(self.instances):
                self.servers.append(Server(self.kind, self.workdir, self.redis).start())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        if self.redis is not None:
            self.redis.stop()

    @property
    def server_pids(self) -> list[int]:
        return [pid for s in self.servers for pid in s.pids]

    @property
    def redis_pids(self) -> list[int]:
        return self.redis.pids if self.redis is not None else []

    def check(self) -> None:
        for server in self.servers:
            server.check()
        if self.redis is not None and not self.redis.alive():
            raise ServerFailed("redis-server exited during the run")


# -- measuring a window -------------------------------------------------------------------


def _cpu_busy(cpu: int) -> float:
    """Busy seconds of one CPU (all processes) from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:9]]
                return (sum(v) - v[3] - v[4]) / metrics.CLOCK_TICKS
    return 0.0


@dataclass
class Reading:
    at: float
    server: float
    redis: float
    load: float
    cpu0: float

    @classmethod
    def take(cls, setup: Setup) -> Reading:
        return cls(
            perf(),
            sum(metrics.cpu_of(setup.server_pids).values()),
            sum(metrics.cpu_of(setup.redis_pids).values()),
            metrics.own_cpu_seconds(),
            _cpu_busy(SERVER_CPU),
        )


def usage(a: Reading, b: Reading) -> dict:
    """CPU use between two readings; percentages are of one core."""
    wall = b.at - a.at
    server = b.server - a.server
    redis = b.redis - a.redis
    other = max(0.0, (b.cpu0 - a.cpu0) - server - redis)
    return {
        "wall_s": round(wall, 3),
        "server_cpu_s": round(server, 3),
        "server_cpu_pct": round(server / wall * 100, 1),
        "redis_cpu_pct": round(redis / wall * 100, 1),
        "load_cpu_pct": round((b.load - a.load) / wall * 100, 1),
        "other_cpu0_pct": round(other / wall * 100, 1),
    }


async def tick(
    ctx: Context,
    seconds: float,
    text: Callable[[float], str],
    check: Callable[[], None] | None = None,
) -> None:
    """Sleep `seconds`, updating the progress line and running `check` as it goes."""
    end = perf() + seconds
    while (left := end - perf()) > 0:
        await asyncio.sleep(min(0.1, left))
        if check is not None:
            check()
        ctx.progress.status(text(seconds - max(0.0, end - perf())))


# -- fan-out ------------------------------------------------------------------------------


def _checker(setup: Setup, stream: Broadcast | None, conns: list[Conn]) -> Callable[[], None]:
    def check() -> None:
        setup.check()
        if stream is not None:
            stream.check()
        check_connections(conns)

    return check


def fanout_window(plan: Plan, receivers: int) -> int:
    """Messages in flight: about `in_flight` deliveries, whatever the receivers."""
    return max(2, math.ceil(plan.in_flight / (receivers + 1)))


async def fanout_run(ctx: Context, setup: Setup, receivers: int) -> dict:
    """One sender, `receivers` receivers; a window of messages in flight."""
    plan = ctx.plan
    server = setup.servers[0]
    dialect = DIALECTS[setup.kind.dialect]
    stream = Broadcast(receivers + 1)  # the sender receives its own messages too
    conns: list[Conn] = []
    try:
        conns += await connect_many(
            receivers,
            dialect,
            HOST,
            server.port,
            stream.sink,
            on_progress=lambda k: ctx.progress.status(f"connecting {k}/{receivers}"),
        )
        sender = await connect(dialect, HOST, server.port, stream.sink)
        conns.append(sender)
        maker = MessageMaker(dialect, 0, plan.message_size)
        ctx.progress.status("sync")
        await sync(sender, maker, conns, stream)
        check = _checker(setup, stream, conns)
        load = WindowSender(sender, maker, stream, fanout_window(plan, receivers))
        load.start()
        await tick(ctx, plan.warmup, lambda t: "warming up", check)
        d0, c0 = stream.delivered, stream.completed
        r0 = Reading.take(setup)
        stream.measuring(True)
        await tick(
            ctx,
            plan.measure,
            lambda t: (
                f"measuring {t:.1f}/{plan.measure:.0f} s · "
                f"{(stream.delivered - d0) / max(t, 1e-3):,.0f} deliveries/s"
            ),
            check,
        )
        stream.measuring(False)
        r1 = Reading.take(setup)
        d1, c1 = stream.delivered, stream.completed
        load.stop()
        ctx.progress.status("draining")
        await wait_until(
            stream.all_complete,
            DRAIN_TIMEOUT,
            lambda: _missing(stream, conns),
            check,
        )
        check()
        use = usage(r0, r1)
        lat = metrics.latency_summary(stream.completions)
        return {
            **use,
            "messages_per_s": round((c1 - c0) / use["wall_s"], 1),
            "deliveries_per_s": round((d1 - d0) / use["wall_s"]),
            "deliveries_per_cpu_s": round((d1 - d0) / max(use["server_cpu_s"], 1e-6)),
            "complete_p50_ms": lat["p50_ms"],
            "complete_p99_ms": lat["p99_ms"],
            "messages_measured": lat["count"],
            "messages_total": stream.next_seq,
        }
    finally:
        await close_all(conns)


def _missing(stream: Broadcast, conns: Sequence[Conn]) -> str:
    last = stream.next_seq - 1
    behind = [c for c in conns if c.upto < last]
    worst = min((c.upto for c in behind), default=last)
    return (
        f"{len(behind)} of {len(conns)} receivers did not get every message within "
        f"{DRAIN_TIMEOUT:.0f} s (last sent #{last}, slowest receiver at #{worst})"
    )


# -- echo ---------------------------------------------------------------------------------


class Echo:
    """Every connection sends a message and waits for it to come back before the next.
    Each message is a broadcast, so every connection also receives everyone else's."""

    def __init__(self, conns: list[Conn], dialect_name: str, size: int) -> None:
        dialect = DIALECTS[dialect_name]
        self.conns = conns
        for i, conn in enumerate(conns):
            conn.group = i
        self.makers = [MessageMaker(dialect, i, size) for i in range(len(conns))]
        self.tags = [tag(i) for i in range(len(conns))]
        self.seq = [0] * len(conns)
        self.sent_at = [0.0] * len(conns)
        self.waiting = [False] * len(conns)
        self.syncing = True
        self.running = False
        self.measuring = False
        self.sent = 0
        self.roundtrips = 0
        self.delivered = 0
        self.rtts: list[float] = []
        self.base: list[int] = []

    def sink(self, conn: Conn, buf: bytes, first: int, last: int, end: int) -> None:
        if self.syncing:
            conn.upto = seq_of(buf, last, end)
            return
        self.delivered += conn.batch
        i = conn.group
        if self.waiting[i] and buf.find(self.tags[i], first, end) >= 0:
            now = perf()
            self.waiting[i] = False
            self.roundtrips += 1
            if self.measuring:
                self.rtts.append(now - self.sent_at[i])
            if self.running:
                self._send(i)

    def start(self) -> None:
        self.syncing = False
        self.base = [conn.count for conn in self.conns]
        self.running = True
        for i in range(len(self.conns)):
            self._send(i)

    def _send(self, i: int) -> None:
        seq = self.seq[i]
        self.seq[i] = seq + 1
        self.sent += 1
        self.waiting[i] = True
        self.sent_at[i] = perf()
        self.conns[i].send(self.makers[i].frame(seq))

    def drained(self) -> bool:
        return not any(self.waiting) and all(
            c.count - b == self.sent for c, b in zip(self.conns, self.base, strict=True)
        )

    def missing(self) -> str:
        short = [
            (self.sent - (c.count - b))
            for c, b in zip(self.conns, self.base, strict=True)
            if c.count - b != self.sent
        ]
        return (
            f"{len(short)} of {len(self.conns)} connections did not get every message "
            f"within {DRAIN_TIMEOUT:.0f} s ({self.sent} sent, up to {max(short, default=0)} "
            f"missing, {sum(self.waiting)} still waiting for their own)"
        )


async def echo_run(ctx: Context, setup: Setup, n: int) -> dict:
    plan = ctx.plan
    server = setup.servers[0]
    dialect = DIALECTS[setup.kind.dialect]
    conns: list[Conn] = []
    echo: Echo | None = None

    def sink(*args) -> None:
        if echo is not None:
            echo.sink(*args)

    try:
        conns += await connect_many(n, dialect, HOST, server.port, sink)
        echo = Echo(conns, setup.kind.dialect, plan.message_size)
        probes = Broadcast(0)
        ctx.progress.status("sync")
        await sync(conns[0], echo.makers[0], conns, probes)
        check = _checker(setup, None, conns)
        echo.start()
        await tick(ctx, plan.warmup, lambda t: "warming up", check)
        rt0, d0 = echo.roundtrips, echo.delivered
        r0 = Reading.take(setup)
        echo.measuring = True
        await tick(
            ctx,
            plan.measure,
            lambda t: (
                f"measuring {t:.1f}/{plan.measure:.0f} s · "
                f"{(echo.roundtrips - rt0) / max(t, 1e-3):,.0f} round trips/s"
            ),
            check,
        )
        echo.measuring = False
        r1 = Reading.take(setup)
        rt1, d1 = echo.roundtrips, echo.delivered
        echo.running = False
        ctx.progress.status("draining")
        await wait_until(echo.drained, DRAIN_TIMEOUT, echo.missing, check)
        check()
        use = usage(r0, r1)
        lat = metrics.latency_summary(echo.rtts)
        return {
            **use,
            "roundtrips_per_s": round((rt1 - rt0) / use["wall_s"], 1),
            "deliveries_per_s": round((d1 - d0) / use["wall_s"]),
            "deliveries_per_cpu_s": round((d1 - d0) / max(use["server_cpu_s"], 1e-6)),
            "rtt_p50_ms": lat["p50_ms"],
            "rtt_p99_ms": lat["p99_ms"],
        }
    finally:
        await close_all(conns)


# -- handshakes ---------------------------------------------------------------------------


async def handshake_run(ctx: Context, setup: Setup) -> dict:
    """Connect, wait until ready (our welcome, the 101, socket.io's `40`), close; with
    `handshake_concurrency` such cycles in parallel."""
    plan = ctx.plan
    server = setup.servers[0]
    dialect = DIALECTS[setup.kind.dialect]
    state = {"running": True, "measuring": False, "cycles": 0, "failure": None}
    latencies: list[float] = []

    async def worker() -> None:
        while state["running"]:
            started = perf()
            try:
                conn = await connect(dialect, HOST, server.port)
            except (OSError, TimeoutError, ConnectionError) as error:
                state["failure"] = f"a connection failed: {type(error).__name__}: {error}"
                return
            ready = perf()
            conn.close()
            try:
                await asyncio.wait_for(asyncio.shield(conn.done), 5)
            except TimeoutError:
                conn.abort()
                state["failure"] = "the server did not close a connection within 5 s of close"
                return
            if conn.errors:
                state["failure"] = f"a client got: {conn.errors[0]}"
                return
            state["cycles"] += 1
            if state["measuring"]:
                latencies.append(ready - started)

    def check() -> None:
        setup.check()
        if state["failure"]:
            raise RunFailed(state["failure"])

    workers = [asyncio.ensure_future(worker()) for _ in range(plan.handshake_concurrency)]
    try:
        await tick(ctx, plan.warmup, lambda t: "warming up", check)
        n0 = state["cycles"]
        r0 = Reading.take(setup)
        state["measuring"] = True
        await tick(
            ctx,
            plan.measure,
            lambda t: (
                f"measuring {t:.1f}/{plan.measure:.0f} s · "
                f"{(state['cycles'] - n0) / max(t, 1e-3):,.0f} handshakes/s"
            ),
            check,
        )
        state["measuring"] = False
        r1 = Reading.take(setup)
        n1 = state["cycles"]
        state["running"] = False
        await asyncio.wait_for(asyncio.gather(*workers), 15)
        check()
    finally:
        state["running"] = False
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    use = usage(r0, r1)
    lat = metrics.latency_summary(latencies)
    return {
        **use,
        "handshakes_per_s": round((n1 - n0) / use["wall_s"], 1),
        "handshakes_per_cpu_s": round((n1 - n0) / max(use["server_cpu_s"], 1e-6), 1),
        "handshake_p50_ms": lat["p50_ms"],
        "handshake_p99_ms": lat["p99_ms"],
    }


# -- cross-instance -----------------------------------------------------------------------


async def cross_run(ctx: Context, setup: Setup, rate: float | None = None) -> dict:
    """Two instances on one Redis; receivers split between them, the sender on the
    first; a fixed publishing rate; latency of every delivery, local and remote."""
    plan = ctx.plan
    rate = plan.cross_rate if rate is None else rate
    a, b = setup.servers
    dialect = DIALECTS[setup.kind.dialect]
    half = plan.cross_receivers // 2
    stream = Broadcast(2 * half + 1, groups=2)
    conns: list[Conn] = []
    try:
        for group, server in enumerate((a, b)):
            opened = await connect_many(
                half,
                dialect,
                HOST,
                server.port,
                stream.sink,
                on_progress=lambda k, g=group: ctx.progress.status(
                    f"connecting {g * half + k}/{2 * half}"
                ),
            )
            for conn in opened:
                conn.group = group
            conns += opened
        sender = await connect(dialect, HOST, a.port, stream.sink)
        conns.append(sender)
        maker = MessageMaker(dialect, 0, plan.message_size)
        ctx.progress.status("sync")
        await sync(sender, maker, conns, stream)
        check = _checker(setup, stream, conns)
        load = RateSender(sender, maker, stream, rate)
        load.start()
        try:
            await tick(ctx, plan.warmup, lambda t: "warming up", check)
            r0 = Reading.take(setup)
            d0 = stream.delivered
            stream.measuring(True)
            await tick(
                ctx,
                plan.cross_measure,
                lambda t: f"measuring {t:.1f}/{plan.cross_measure:.0f} s",
                check,
            )
            stream.measuring(False)
            r1 = Reading.take(setup)
            d1 = stream.delivered
        finally:
            await load.stop()
        ctx.progress.status("draining")
        await wait_until(stream.all_complete, DRAIN_TIMEOUT, lambda: _missing(stream, conns), check)
        check()
        use = usage(r0, r1)
        local, remote = stream.latencies
        every = metrics.latency_summary(local + remote)
        near = metrics.latency_summary(local)
        far = metrics.latency_summary(remote)
        return {
            **use,
            "deliveries_per_s": round((d1 - d0) / use["wall_s"]),
            "p50_ms": every["p50_ms"],
            "p99_ms": every["p99_ms"],
            "local_p99_ms": near["p99_ms"],
            "remote_p50_ms": far["p50_ms"],
            "remote_p99_ms": far["p99_ms"],
            "deliveries_measured": every["count"],
        }
    finally:
        await close_all(conns)


# -- slow consumers -----------------------------------------------------------------------


async def slow_run(ctx: Context, setup: Setup) -> dict:
    """Healthy receivers and receivers that stop reading, a sender at a fixed rate;
    the server's RSS is sampled as it goes."""
    plan = ctx.plan
    server = setup.servers[0]
    dialect = DIALECTS[setup.kind.dialect]
    stream = Broadcast(plan.slow_healthy + 1, groups=1)
    conns: list[Conn] = []
    series: list[tuple[float, float]] = []
    try:
        baseline = metrics.rss_bytes(server.pid)
        healthy = await connect_many(plan.slow_healthy, dialect, HOST, server.port, stream.sink)
        slow = await connect_many(
            plan.slow_receivers,
            dialect,
            HOST,
            server.port,
            track_upto,
            rcvbuf=plan.slow_rcvbuf,
        )
        sender = await connect(dialect, HOST, server.port, stream.sink)
        conns += [*healthy, *slow, sender]
        maker = MessageMaker(dialect, 0, plan.slow_size)
        ctx.progress.status("sync")
        await sync(sender, maker, conns, stream)
        for conn in slow:
            conn.transport.pause_reading()

        def check() -> None:
            setup.check()
            stream.check()
            check_connections([*healthy, sender])

        load = RateSender(sender, maker, stream, plan.slow_rate)
        started = perf()
        stream.measuring(True)
        load.start()
        try:
            end = started + plan.slow_duration
            while perf() < end:
                await asyncio.sleep(0.25)
                check()
                rss = metrics.rss_bytes(server.pid)
                series.append((round(perf() - started, 2), round(rss / 2**20, 1)))
                ctx.progress.status(
                    f"slow consumers {perf() - started:.1f}/{plan.slow_duration:.0f} s · "
                    f"RSS {rss / 2**20:,.0f} MB"
                )
        finally:
            await load.stop()
        stream.measuring(False)
        ctx.progress.status("draining the healthy receivers")
        await wait_until(
            stream.all_complete, DRAIN_TIMEOUT, lambda: _missing(stream, [*healthy, sender]), check
        )
        check()
        end_rss = metrics.rss_bytes(server.pid)
        # Let the slow ones read again: those the server has closed see the close.
        for conn in slow:
            if not conn.lost:
                conn.transport.resume_reading()
        await tick(ctx, 2.0, lambda t: "reading what the slow receivers were sent")
        closed = sum(1 for c in slow if c.close_code is not None or c.lost)
        peak = max(mb for _, mb in series) if series else 0.0
        lat = metrics.latency_summary(stream.latencies[0])
        return {
            "baseline_mb": round(baseline / 2**20, 1),
            "peak_mb": peak,
            "end_mb": round(end_rss / 2**20, 1),
            "growth_mb": round(peak - baseline / 2**20, 1),
            "growth_per_slow_kb": round((peak - baseline / 2**20) * 1024 / plan.slow_receivers),
            "slow_closed": closed,
            "slow_close_codes": sorted({c.close_code for c in slow if c.close_code}),
            "healthy_p99_ms": lat["p99_ms"],
            "messages_sent": stream.next_seq,
            "rss_series": series,
        }
    finally:
        await close_all(conns, timeout=3)


# -- many rooms ---------------------------------------------------------------------------

ROOMS_TIMEOUT = 900.0  # one server's part of many-rooms: connecting, subscribing, runs
SETTLE_TIMEOUT = 60.0


def rooms_window(plan: Plan) -> int:
    """Messages in flight: about `in_flight` deliveries, as in fan-out."""
    return max(2, math.ceil(plan.in_flight / plan.room_size))


async def many_rooms_all(ctx: Context, kinds: Sequence[Kind], result: ScenarioResult) -> None:
    """Each server in turn: connect and subscribe once, then the plan's repeats of a
    measured window on the same connections (subscribing 50,000 times costs the server
    far more than a window: it is done once, and not measured), then the checks of its
    Redis subscriptions while rooms empty."""
    for kind in kinds:
        where = f"many-rooms · {kind.label}"
        ctx.progress.at(where)
        setup: Setup | None = None
        runs = result.runs.setdefault(kind.key, [])
        try:
            setup = Setup(kind, ctx.workdir).start()
            await asyncio.wait_for(many_rooms(ctx, setup, where, runs), ROOMS_TIMEOUT)
        except RUN_ERRORS as error:
            why = _failure(error, setup)
            result.errors[kind.key] = why
            ctx.progress.line(f"{where}: FAILED: {why}")
        finally:
            if not runs:
                del result.runs[kind.key]
            if setup is not None:
                setup.stop()
            gc.collect()


# What the server counted that explains a client's loss (heartbeat timeouts...).
EXPLAINING = (
    "ws_heartbeat_timeouts_total",
    "ws_slow_consumer_closes_total",
    "ws_connections_refused_total",
    "ws_messages_rejected_total",
    "ws_queue_dropped_total",
    "ws_hook_errors_total",
)


def _server_side(setup: Setup) -> str:
    """What the (live) server says about a failure: its counters that explain lost
    clients or messages, and its log's last lines."""
    if not setup.servers:
        return ""
    server = setup.servers[0]
    said = ""
    try:
        counted = server.counters()
        shown = [f"{k} {counted[k]:g}" for k in EXPLAINING if counted.get(k)]
        said += f"; the server counted: {', '.join(shown) or 'none of ' + ', '.join(EXPLAINING)}"
    except OSError as error:
        said += f"; /metrics did not answer ({error})"
    log = tail(server.log_path, 5)
    if log not in ("(no log)", "(empty log)"):
        said += f"; its log ends: {log}"
    return said


async def many_rooms(ctx: Context, setup: Setup, where: str, runs: list[dict]) -> None:
    """`rooms_connections` connections, each in the default channel and
    `rooms_per_connection` rooms of `room_size` members; in each run a window of
    messages in flight, each from a random publisher into one of its rooms; every
    delivery checked (its room's members get it once, nobody else does). Ours: the
    Redis pub/sub channels the server listens to are counted after subscribing, after
    some rooms are emptied, and after everyone has left."""
    plan = ctx.plan
    server = setup.servers[0]
    dialect = DIALECTS[setup.kind.dialect]
    n = plan.rooms_connections
    rooms_of = assign_rooms(n, plan.rooms_per_connection, plan.room_size)
    rooms = Rooms(rooms_of, "bench")
    redis = setup.redis
    pattern = f"{server.key_prefix}{{room:*" if redis is not None else ""
    conns: list[Conn] = []
    figures: dict = {"connections": n, "rooms": len(rooms.names)}

    def room_channels() -> set[str]:
        """The rooms' pub/sub channels the server listens to in Redis."""
        assert redis is not None
        return set(redis.pubsub_channels(pattern))

    async def expect_channels(count: int, why: str) -> set[str]:
        """Poll until the server listens to `count` rooms' channels (its UNSUBSCRIBE
        may reach Redis a moment after the client is answered)."""
        deadline = perf() + 5.0
        while len(listed := room_channels()) != count:
            if perf() > deadline:
                raise RunFailed(
                    f"{why}: the server listens to {len(listed)} room channels in Redis, "
                    f"expected {count}"
                )
            await asyncio.sleep(0.1)
        return listed

    try:
        started = perf()
        conns += await connect_many(
            n,
            dialect,
            HOST,
            server.port,
            rooms.sink,
            on_progress=lambda k: ctx.progress.status(f"connecting {k}/{n}"),
        )
        figures["connect_s"] = round(perf() - started, 2)
        for i, conn in enumerate(conns):
            conn.group = i
        check = _checker(setup, rooms, conns)
        if redis is not None:
            figures["redis_room_channels_before"] = len(await expect_channels(0, "connected"))
        r0 = Reading.take(setup)
        await subscribe_many(
            conns,
            [[rooms.names[r] for r in mine] for mine in rooms_of],
            on_progress=lambda k: ctx.progress.status(f"subscribing {k}/{n}"),
        )
        figures["join_frames"] = await quiet(conns)
        sub = usage(r0, Reading.take(setup))
        check()
        figures["subscribe_s"] = sub["wall_s"]
        figures["subscribes_per_cpu_s"] = round(
            n * plan.rooms_per_connection / max(sub["server_cpu_s"], 1e-6)
        )
        if redis is not None:
            figures["redis_channels"] = len(redis.pubsub_channels("*"))
            figures["redis_room_channels"] = len(
                await expect_channels(len(rooms.names), "after subscribing")
            )
        ctx.progress.line(
            f"{where}: {n} connected in {figures['connect_s']:.0f} s, "
            f"{n * plan.rooms_per_connection} subscribes in {figures['subscribe_s']:.0f} s"
            + (
                f"; the server listens to {figures['redis_room_channels']} room channels in Redis"
                if redis is not None
                else ""
            )
        )

        step = max(1, n // plan.rooms_publishers)
        publishers = [
            (conns[i], MessageMaker(dialect, i, plan.message_size)) for i in range(0, n, step)
        ][: plan.rooms_publishers]
        figures["publishers"] = len(publishers)
        repeats = ctx.plan.repeats
        for r in range(repeats):
            ctx.progress.at(f"{where} · run {r + 1}/{repeats}")
            run = await _rooms_window(ctx, setup, rooms, publishers, check)
            runs.append({**figures, **run})
            ctx.progress.line(
                f"{where} · run {r + 1}/{repeats}: deliveries / CPU-s "
                f"{run['deliveries_per_cpu_s']:,.0f}"
            )
            gc.collect()

        # Rooms that everyone leaves are no longer listened to; a room with one local
        # subscriber left still is.
        ctx.progress.at(f"{where} · emptying rooms")
        emptied = list(range(min(plan.rooms_emptied, len(rooms.names) - 1)))
        kept = len(emptied)
        leaving: dict[int, list[str]] = {}
        for r in emptied:
            for i in rooms.members[r]:
                leaving.setdefault(i, []).append(rooms.names[r])
        for i in sorted(rooms.members[kept])[1:]:
            leaving.setdefault(i, []).append(rooms.names[kept])
        await subscribe_many(
            [conns[i] for i in leaving], list(leaving.values()), kind="unsubscribe"
        )
        check()
        after: dict = {}
        if redis is not None:
            listed = await expect_channels(
                len(rooms.names) - len(emptied),
                f"after every member of {len(emptied)} rooms unsubscribed",
            )
            still = f"{server.key_prefix}{{{rooms.names[kept]}}}"
            if still not in listed:
                raise RunFailed(
                    f"the server stopped listening to {rooms.names[kept]} in Redis while "
                    "one of its members was still subscribed"
                )
            after["rooms_emptied"] = len(emptied)
            after["redis_room_channels_emptied"] = len(listed)

        ctx.progress.status("closing")
        started = perf()
        after["close_aborted"] = await close_all(conns, timeout=10)
        await _settle(setup, room_channels if redis is not None else None)
        after["close_s"] = round(perf() - started, 2)
        if redis is not None:
            after["redis_room_channels_closed"] = len(room_channels())
            ctx.progress.line(
                f"{where}: the server listens to {after['redis_room_channels_emptied']} room "
                f"channels after {len(emptied)} rooms emptied, "
                f"{after['redis_room_channels_closed']} after every client closed"
            )
        for run in runs:
            run.update(after)
    finally:
        await close_all(conns)


async def _rooms_window(
    ctx: Context,
    setup: Setup,
    rooms: Rooms,
    publishers: list[tuple[Conn, MessageMaker]],
    check: Callable[[], None],
) -> dict:
    """One measured run of many-rooms: warm up, measure, drain."""
    plan = ctx.plan
    rooms.completions = []
    load = RoomSender(rooms, publishers, rooms_window(plan), seed=rooms.next_seq)
    load.start()
    await tick(ctx, plan.warmup, lambda t: "warming up", check)
    d0, c0 = rooms.delivered, rooms.completed
    r0 = Reading.take(setup)
    rooms.measuring = True
    await tick(
        ctx,
        plan.measure,
        lambda t: (
            f"measuring {t:.1f}/{plan.measure:.0f} s · "
            f"{(rooms.delivered - d0) / max(t, 1e-3):,.0f} deliveries/s"
        ),
        check,
    )
    rooms.measuring = False
    r1 = Reading.take(setup)
    d1, c1 = rooms.delivered, rooms.completed
    load.stop()
    ctx.progress.status("draining")
    await wait_until(rooms.all_complete, DRAIN_TIMEOUT, rooms.missing, check)
    check()
    use = usage(r0, r1)
    lat = metrics.latency_summary(rooms.completions)
    return {
        **use,
        "messages_per_s": round((c1 - c0) / use["wall_s"], 1),
        "deliveries_per_s": round((d1 - d0) / use["wall_s"]),
        "deliveries_per_cpu_s": round((d1 - d0) / max(use["server_cpu_s"], 1e-6)),
        "complete_p50_ms": lat["p50_ms"],
        "complete_p99_ms": lat["p99_ms"],
        "messages_measured": lat["count"],
    }


async def _settle(
    setup: Setup, room_channels: Callable[[], set[str]] | None, keep: int = 0
) -> None:
    """Wait until the server has let every connection go but `keep` (and, with
    `room_channels`, stopped listening to the rooms)."""
    server = setup.servers[0]
    deadline = perf() + SETTLE_TIMEOUT
    while True:
        setup.check()
        left = (await asyncio.to_thread(server.healthz))["connections"]
        listening = len(room_channels()) if room_channels is not None else 0
        if left == keep and not listening:
            return
        if perf() > deadline:
            raise RunFailed(
                f"{SETTLE_TIMEOUT:.0f} s after the clients closed, the server still has "
                f"{left} connections and listens to {listening} room channels in Redis"
            )
        await asyncio.sleep(0.2)


# -- reconnect storm ----------------------------------------------------------------------

STORM_TIMEOUT = 600.0  # one server's part of reconnect-storm: setting up, away, back
# How long a client of the storm waits for its TCP connection, then for its welcome:
# longer than the kernel keeps retrying a connection attempt that a full accept queue
# dropped (tcp_syn_retries 6: about 127 s), so that the run fails only if the server
# never let a client in.
STORM_CONNECT_TIMEOUT = 150.0
# Rooms a publisher joins: channels.max_per_connection (64 in config.yaml) counts its
# default and personal channels too.
PUBLISHER_ROOMS = 60
QUIET_CPU = 0.05  # share of a core below which a server (and its Redis) counts as idle
QUIET_WINDOW = 0.5  # seconds over which that is measured (CPU time comes in 10 ms ticks)


async def storm_all(ctx: Context, kinds: Sequence[Kind], result: ScenarioResult) -> None:
    """Each server in turn, one run each: its clients come, go, and come back all at
    once (ours: sessions in rooms, replayed what they missed; a reference: plain
    connections)."""
    for kind in kinds:
        where = f"reconnect-storm · {kind.label}"
        ctx.progress.at(where)
        setup: Setup | None = None
        try:
            setup = Setup(kind, ctx.workdir).start()
            run = storm_sessions if kind.dialect == "relay" else storm_plain
            figures = await asyncio.wait_for(run(ctx, setup, where), STORM_TIMEOUT)
            result.runs[kind.key] = [figures]
            ctx.progress.line(
                f"{where}: {figures['clients']} back in {figures['storm_s']:.2f} s, "
                f"{figures['handshakes_per_cpu_s']:,.0f} handshakes / CPU-s, "
                f"{figures['replayed']} messages replayed, "
                f"{figures['listen_overflows']} listen overflows"
            )
        except RUN_ERRORS as error:
            why = _failure(error, setup, ours=kind.dialect == "relay")
            result.errors[kind.key] = why
            ctx.progress.line(f"{where}: FAILED: {why}")
        finally:
            if setup is not None:
                setup.stop()
            gc.collect()


class Publishers:
    """Connections that publish into the storm's rooms (a room takes messages from its
    subscribers only), each in up to `PUBLISHER_ROOMS` of them; the first also
    publishes into the default channel, which they are all in."""

    def __init__(self, conns: list[Conn], rooms: list[list[str]], maker: MessageMaker) -> None:
        self.conns = conns
        self.rooms = rooms  # by connection
        self.maker = maker
        self.seq = 0

    async def publish(self, count: int, check: Callable[[], None]) -> None:
        """`count` messages into every room and the default channel; returns once each
        publisher has been sent them all back (so they are in the channels' history)."""
        wanted = []
        for i, (conn, rooms) in enumerate(zip(self.conns, self.rooms, strict=True)):
            channels: list[str | None] = [*rooms, None] if i == 0 else list(rooms)
            for channel in channels:
                for _ in range(count):
                    conn.send(self.maker.frame(self.seq, channel))
                    self.seq += 1
            wanted.append(conn.count + count * (len(rooms) + 1))
        await wait_until(
            lambda: all(c.count >= w for c, w in zip(self.conns, wanted, strict=True)),
            DRAIN_TIMEOUT,
            lambda: f"the publishers did not get their {count} message(s) per channel back",
            check,
        )


async def storm_sessions(ctx: Context, setup: Setup, where: str) -> dict:
    """Ours: `storm_clients` clients with sessions, each in the default channel and
    `storm_rooms` rooms; `storm_seeded` messages per channel are there before they
    join. All leave; `storm_missed` messages go into every channel; all come back at
    once with their session tokens, and each must be resumed and replayed exactly the
    messages it missed."""
    plan = ctx.plan
    server = setup.servers[0]
    dialect = DIALECTS[setup.kind.dialect]
    n = plan.storm_clients
    rooms_of = assign_rooms(n, plan.storm_rooms, plan.room_size)
    names = [room_name("storm", r) for r in range(1 + max(max(mine) for mine in rooms_of))]
    channels = 1 + plan.storm_rooms  # with history: the default one and the rooms
    publishers: list[Conn] = []
    conns: list[Conn] = []
    back: list[Conn] = []
    figures: dict = {"clients": n, "rooms": len(names)}

    def check() -> None:
        setup.check()
        check_connections([*publishers, *conns, *back])

    try:
        slices = [names[i : i + PUBLISHER_ROOMS] for i in range(0, len(names), PUBLISHER_ROOMS)]
        publishers += await connect_many(len(slices), dialect, HOST, server.port)
        await subscribe_many(publishers, slices)
        publishing = Publishers(publishers, slices, MessageMaker(dialect, 0, plan.message_size))
        await publishing.publish(plan.storm_seeded, check)

        ctx.progress.status("connecting")
        started = perf()
        conns += await connect_many(
            n,
            dialect,
            HOST,
            server.port,
            on_progress=lambda k: ctx.progress.status(f"connecting {k}/{n}"),
        )
        figures["connect_s"] = round(perf() - started, 2)
        started = perf()
        await subscribe_many(
            conns,
            [[names[r] for r in mine] for mine in rooms_of],
            on_progress=lambda k: ctx.progress.status(f"subscribing {k}/{n}"),
        )
        # Each new session is replayed what its channels hold, then the join frames stop.
        await _replayed(conns, plan.storm_seeded * channels, "joining", check)
        figures["subscribe_s"] = round(perf() - started, 2)
        await quiet(conns)
        tokens = [conn.welcome["session"] for conn in conns]
        clients = {conn.welcome["client_id"] for conn in conns}
        ctx.progress.line(
            f"{where}: {n} sessions in {len(names)} rooms, connected in "
            f"{figures['connect_s']:.0f} s, subscribed in {figures['subscribe_s']:.0f} s"
        )

        ctx.progress.status("leaving")
        await close_all(conns, timeout=10)
        await _settle(setup, None, keep=len(publishers))
        await _quiet_server(setup)  # the close hooks have recorded where each client was
        conns.clear()
        ctx.progress.status("publishing while they are away")
        await publishing.publish(plan.storm_missed, check)
        await _quiet_server(setup)

        ctx.progress.line(f"{where}: {n} coming back at once")
        paths = [f"{dialect.path}?session={token}" for token in tokens]
        missed = plan.storm_missed * channels
        figures |= await _storm(setup, dialect, n, back, paths=paths, replayed=missed)
        check()
        resumed = [c for c in back if c.welcome["resumed"]]
        if len(resumed) != n or {c.welcome["client_id"] for c in back} != clients:
            raise RunFailed(
                f"{n - len(resumed)} of {n} sessions were not resumed (a new session "
                "instead: unknown or expired token)"
            )
        rooms = set(names)
        short = [
            c for c in back if len(rooms.intersection(c.welcome["channels"])) != plan.storm_rooms
        ]
        if short:
            raise RunFailed(
                f"{len(short)} of {n} resumed sessions are not back in their "
                f"{plan.storm_rooms} rooms (the first is in {short[0].welcome['channels']})"
            )
        return figures
    finally:
        await close_all([*publishers, *conns, *back])


async def storm_plain(ctx: Context, setup: Setup, where: str) -> dict:
    """A reference: `storm_clients` plain connections come and go (as our clients do
    before they are away), then all connect again at once."""
    server = setup.servers[0]
    dialect = DIALECTS[setup.kind.dialect]
    n = ctx.plan.storm_clients
    conns: list[Conn] = []
    try:
        started = perf()
        conns += await connect_many(
            n,
            dialect,
            HOST,
            server.port,
            on_progress=lambda k: ctx.progress.status(f"connecting {k}/{n}"),
        )
        connect_s = round(perf() - started, 2)
        ctx.progress.status("leaving")
        await close_all(conns, timeout=10)
        await _quiet_server(setup)
        conns.clear()
        ctx.progress.line(f"{where}: {n} coming back at once")
        figures = await _storm(setup, dialect, n, conns)
        return {"clients": n, "connect_s": connect_s, **figures}
    finally:
        await close_all(conns)


async def _storm(
    setup: Setup,
    dialect: Dialect,
    n: int,
    conns: list[Conn],
    *,
    paths: Sequence[str] | None = None,
    replayed: int = 0,
) -> dict:
    """`n` clients connect at once (into `conns`). A client is live once it is ready
    (our welcome, the 101) and has been replayed `replayed` messages; the storm lasts
    from the first attempt until the last client is live. The server's CPU is read
    until it is idle again (what the returns set off, such as join frames, counts)."""
    server = setup.servers[0]
    ready_at: list[float] = []

    def check() -> None:
        setup.check()
        check_connections(conns)

    overflows = metrics.listen_overflows()
    r0 = Reading.take(setup)
    try:
        conns += await connect_many(
            n,
            dialect,
            HOST,
            server.port,
            concurrency=n,
            paths=paths,
            on_progress=lambda k: ready_at.append(perf()),
            timeout=STORM_CONNECT_TIMEOUT,
        )
    except TimeoutError:
        raise RunFailed(
            f"a client was not ready {STORM_CONNECT_TIMEOUT:.0f} s after it connected or "
            f"tried to ({len(ready_at)} of {n} were, "
            f"{metrics.listen_overflows() - overflows} listen overflows)"
        ) from None
    if replayed:
        await wait_until(
            lambda: all(c.history >= replayed for c in conns),
            DRAIN_TIMEOUT,
            lambda: _unreplayed(conns, replayed),
            check,
        )
    r1 = Reading.take(setup)
    await _quiet_server(setup)
    r2 = Reading.take(setup)
    await quiet(conns)  # a last join frame, or a replay too many, would be seen by now
    check()
    wrong = [c.history for c in conns if c.history != replayed]
    if wrong:
        raise RunFailed(
            f"{len(wrong)} of {n} clients were replayed a wrong number of messages "
            f"(each missed {replayed}; got {sorted(set(wrong))[:5]})"
        )
    use = usage(r0, r1)
    cpu = r2.server - r0.server
    return {
        **use,
        "storm_s": use["wall_s"],
        "ready_p50_s": round(ready_at[(n - 1) // 2] - r0.at, 3),
        "ready_s": round(ready_at[-1] - r0.at, 3),
        # Until the server is idle again, not just until the last client is live.
        "server_cpu_s": round(cpu, 3),
        "handshakes_per_cpu_s": round(n / max(cpu, 1e-6), 1),
        "replayed": sum(c.history for c in conns),
        "presence_frames": sum(c.presence_events for c in conns),
        "listen_overflows": metrics.listen_overflows() - overflows,
    }


async def _replayed(
    conns: Sequence[Conn], count: int, what: str, check: Callable[[], None]
) -> None:
    """Wait until every connection has been replayed `count` messages (no more)."""
    await wait_until(
        lambda: all(c.history >= count for c in conns),
        DRAIN_TIMEOUT,
        lambda: f"{what}: " + _unreplayed(conns, count),
        check,
    )
    over = [c.history for c in conns if c.history > count]
    if over:
        raise RunFailed(f"{what}: {len(over)} clients were replayed more than {count} messages")


def _unreplayed(conns: Sequence[Conn], count: int) -> str:
    short = [c.history for c in conns if c.history < count]
    return (
        f"{len(short)} of {len(conns)} clients were not replayed their {count} messages "
        f"within {DRAIN_TIMEOUT:.0f} s (the furthest behind had {min(short, default=count)})"
    )


async def _quiet_server(setup: Setup) -> None:
    """Wait until the server and its Redis use less than `QUIET_CPU` of a core: what
    the clients set off (close hooks, presence, session records) is done."""
    deadline = perf() + SETTLE_TIMEOUT
    before = Reading.take(setup)
    while True:
        await asyncio.sleep(QUIET_WINDOW)
        setup.check()
        now = Reading.take(setup)
        busy = (now.server + now.redis - before.server - before.redis) / (now.at - before.at)
        if busy < QUIET_CPU:
            return
        if perf() > deadline:
            raise RunFailed(
                f"the server was still busy ({busy:.0%} of a core) after {SETTLE_TIMEOUT:.0f} s"
            )
        before = now


# -- idle connections ---------------------------------------------------------------------


async def idle_all(
    ctx: Context,
    kinds: Sequence[Kind],
    result: ScenarioResult,
    rooms: tuple[int, int] | None = None,
    name: str = "idle",
) -> None:
    """`idle_connections` idle clients per server, held by a process of their own; RSS
    per connection, then the CPU of all the servers idling side by side. With `rooms` =
    (per connection, room size), each client also subscribes to that many rooms."""
    plan = ctx.plan
    n = plan.idle_connections
    spawn = multiprocessing.get_context("spawn")
    setups: dict[str, Setup] = {}
    holders: dict[str, tuple] = {}
    figures: dict[str, dict] = {}
    try:
        for kind in kinds:
            ctx.progress.at(f"{name} · {kind.label}")
            try:
                setup = setups[kind.key] = Setup(kind, ctx.workdir).start()
                await asyncio.sleep(1.0)
                baseline = sum(metrics.rss_bytes(pid) for pid in setup.servers[0].pids)
                redis_baseline = sum(metrics.rss_bytes(pid) for pid in setup.redis_pids)
                mine, theirs = spawn.Pipe()
                process = spawn.Process(
                    target=hold_idle,
                    args=(kind.dialect, HOST, setup.servers[0].port, n, theirs),
                    kwargs={"rooms": rooms},
                    daemon=True,
                )
                process.start()
                holders[kind.key] = (process, mine)
                timing = await _await_holder(ctx, mine, process, n, setup)
                await tick(ctx, 2.0, lambda t: "settling", setup.check)
                after = sum(metrics.rss_bytes(pid) for pid in setup.servers[0].pids)
                redis_after = sum(metrics.rss_bytes(pid) for pid in setup.redis_pids)
                figures[kind.key] = {
                    "connections": n,
                    "connect_s": round(timing["connect_s"], 2),
                    "baseline_mb": round(baseline / 2**20, 1),
                    "rss_mb": round(after / 2**20, 1),
                    "rss_per_conn_kb": round((after - baseline) / n / 1024, 2),
                }
                if setup.redis is not None:
                    figures[kind.key]["redis_rss_per_conn_kb"] = round(
                        (redis_after - redis_baseline) / n / 1024, 2
                    )
                if rooms is not None:
                    figures[kind.key].update(
                        subscriptions_per_conn=rooms[0] + 1,
                        subscribe_s=round(timing["subscribe_s"], 2),
                        join_frames=timing["join_frames"],
                    )
                    if setup.redis is not None:
                        prefix = setup.servers[0].key_prefix
                        figures[kind.key]["redis_room_channels"] = len(
                            setup.redis.pubsub_channels(f"{prefix}{{room:*")
                        )
                subscribed = (
                    f", subscribed to {rooms[0]} rooms each in {timing['subscribe_s']:.1f} s"
                    if rooms is not None
                    else ""
                )
                ctx.progress.line(
                    f"{name} · {kind.label}: {n} connected in {timing['connect_s']:.1f} s"
                    f"{subscribed}, {figures[kind.key]['rss_per_conn_kb']:.1f} KB each"
                )
            except RUN_ERRORS as error:
                setup = setups.get(kind.key)
                started = rooms is not None and setup is not None and setup.servers
                why = _failure(error, setup if started else None)
                result.errors[kind.key] = why
                ctx.progress.line(f"{name} · {kind.label}: FAILED: {why}")
        live = [k for k in figures if k not in result.errors]
        if not live:
            return
        ctx.progress.at(f"{name} · {len(live)} servers side by side")
        before = {k: Reading.take(setups[k]) for k in live}

        def check() -> None:
            for k in live:
                setups[k].check()

        await tick(
            ctx,
            plan.idle_window,
            lambda t: f"idle CPU window {t:.0f}/{plan.idle_window:.0f} s",
            check,
        )
        for k in live:
            use = usage(before[k], Reading.take(setups[k]))
            figures[k]["idle_cpu_pct"] = round(use["server_cpu_s"] / use["wall_s"] * 100, 2)
            figures[k]["idle_redis_cpu_pct"] = use["redis_cpu_pct"]
            figures[k]["window_s"] = use["wall_s"]
            process, pipe = holders[k]
            pipe.send("stop")
            stats = await _receive(pipe, process, 30)
            if stats[0] != "done":
                raise RunFailed(f"idle holder answered {stats!r}")
            stats = stats[1]
            figures[k]["pings_answered"] = stats["pings"]
            figures[k]["heartbeat_frames"] = stats["heartbeats"]
            if stats["open"] != n or stats["errors"]:
                result.errors[k] = (
                    f"{n - stats['open']} of {n} idle connections were closed by the server "
                    f"(close codes {stats['close_codes']}); errors: {stats['errors']}"
                ) + (_server_side(setups[k]) if rooms is not None else "")
                continue
            result.runs[k] = [figures[k]]
            ctx.progress.line(
                f"{name} · {KINDS[k].label}: {figures[k]['idle_cpu_pct']:.2f}% of a core over "
                f"{use['wall_s']:.0f} s"
            )
    finally:
        for process, pipe in holders.values():
            process.join(15)
            if process.is_alive():
                process.kill()
                process.join()
            pipe.close()
        for setup in setups.values():
            setup.stop()


async def _receive(pipe, process, timeout: float):
    """The holder process's next message; fails if it dies or goes silent."""
    deadline = perf() + timeout
    while not pipe.poll():
        if not process.is_alive() and not pipe.poll():
            raise RunFailed(f"the idle connection holder died (exit status {process.exitcode})")
        if perf() > deadline:
            raise RunFailed("the idle connection holder stopped answering")
        await asyncio.sleep(0.05)
    return pipe.recv()


async def _await_holder(ctx: Context, pipe, process, n: int, setup: Setup) -> dict:
    while True:
        setup.check()
        message = await _receive(pipe, process, 120)
        if message[0] == "progress":
            ctx.progress.status(f"{message[1]} {message[2]}/{n}")
        elif message[0] == "ready":
            return message[1]
        else:
            raise RunFailed(f"opening {n} idle connections failed: {message[1]}")


# -- the scenarios ------------------------------------------------------------------------


RunOnce = Callable[[Context, Setup], Awaitable[dict]]
# A scenario that runs its servers side by side itself (idle): all its runs at once.
RunAll = Callable[[Context, Sequence[Kind], ScenarioResult], Awaitable[None]]

USAGE_METRICS = (
    Metric("server_cpu_pct", "server CPU %", "{:.0f}"),
    Metric("load_cpu_pct", "load CPU %", "{:.0f}"),
    Metric("other_cpu0_pct", "other CPU0 %", "{:.0f}"),
)


@dataclass(frozen=True)
class Target:
    """What a figure of a scenario should reach: `value` itself; or, with `of`, `value`
    times the same server's headline in scenario `of` of the same run; or, with
    `against`, `value` times reference `against`'s figure in this scenario (a target
    for our servers: the report checks it for them only). The figure is the headline
    unless `metric` names another. "Reach" is at least for a higher-is-better figure,
    at most for a lower-is-better one."""

    value: float
    of: str | None = None
    against: str | None = None
    metric: str | None = None


# Variants of ours, measured only where they answer a question: on a cluster against one
# Redis (fan-out), with auth against without and 2 workers against 1 (handshakes, idle),
# on asyncio's loop against uvloop (fan-out, echo, handshakes, the storm).
VARIANTS = ("ours-cluster", "ours-auth", "ours-2w", "ours-asyncio")
# The floor bounds what a broadcast can cost: it runs where messages are broadcast
# (fan-out, echo; in its rooms mode, many-rooms); its handshakes and idle connections
# would be bare Tornado's.
BOUNDS = ("floor", "floor-rooms")
DEFAULT_KINDS = tuple(k for k in KINDS if k not in VARIANTS + BOUNDS)
REFERENCES = ("tornado", "websockets")


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    about: str  # what it measures, for the report
    metrics: tuple[Metric, ...]
    headline: str  # the metric the ratios are taken of
    run_once: RunOnce | None = None
    kinds: tuple[str, ...] = DEFAULT_KINDS
    instances: int = 1
    fresh: bool = False  # a new server for every run (memory figures)
    repeats: int | None = None  # None: the plan's
    params: dict = field(default_factory=dict)
    references: tuple[str, ...] = REFERENCES  # ratios are taken against these
    run_all: RunAll | None = None  # instead of run_once
    targets: tuple[Target, ...] = ()  # what its figures should reach (the report says if)


def scenarios(plan: Plan) -> list[Scenario]:
    out: list[Scenario] = []
    for n in plan.fanout:
        window = fanout_window(plan, n)
        out.append(
            Scenario(
                f"fanout-{n}",
                f"Fan-out to {n} receivers",
                f"One sender, {n} receivers (the sender receives its own messages too); "
                f"{window} messages in flight (about {plan.in_flight} deliveries): message "
                f"i + {window} is sent once every receiver has message i. Deliveries per "
                "server CPU-second; fan-out complete = from send until the last receiver "
                "has the message.",
                (
                    Metric("deliveries_per_cpu_s", "deliveries / CPU-s", better="higher"),
                    Metric("deliveries_per_s", "deliveries / s"),
                    Metric("complete_p50_ms", "complete p50 ms", "{:.1f}", "lower"),
                    Metric("complete_p99_ms", "complete p99 ms", "{:.1f}", "lower"),
                    Metric("redis_cpu_pct", "redis CPU %", "{:.0f}"),
                    *USAGE_METRICS,
                ),
                "deliveries_per_cpu_s",
                lambda ctx, setup, n=n: fanout_run(ctx, setup, n),
                # The cluster's figure is read against ours on one Redis.
                kinds=(*DEFAULT_KINDS, "ours-cluster", "ours-asyncio", "floor"),
                references=(*REFERENCES, "floor"),
                params={"receivers": n, "window": window, "content": plan.message_size},
                # With 1000 receivers the per-message work is spread thin: what is left
                # is the per-delivery cost, which the floor keeps at one send.
                targets=(Target(0.9, against="floor"),) if n == 1000 else (),
            )
        )
    for n in plan.echo:
        out.append(
            Scenario(
                f"echo-{n}",
                f"Echo round trips, {n} connections",
                f"{n} connections each send a message and wait for it to come back before "
                "sending the next; every message is broadcast, so each connection also "
                "receives everyone else's.",
                (
                    Metric("deliveries_per_cpu_s", "deliveries / CPU-s", better="higher"),
                    Metric("roundtrips_per_s", "round trips / s"),
                    Metric("rtt_p50_ms", "RTT p50 ms", "{:.2f}", "lower"),
                    Metric("rtt_p99_ms", "RTT p99 ms", "{:.2f}", "lower"),
                    Metric("redis_cpu_pct", "redis CPU %", "{:.0f}"),
                    *USAGE_METRICS,
                ),
                "deliveries_per_cpu_s",
                lambda ctx, setup, n=n: echo_run(ctx, setup, n),
                kinds=(*DEFAULT_KINDS, "ours-asyncio", "floor"),
                references=(*REFERENCES, "floor"),
                params={"connections": n, "content": plan.message_size},
            )
        )
    out.append(
        Scenario(
            "handshakes",
            "Handshakes",
            f"{plan.handshake_concurrency} clients in parallel, each in a loop: connect, wait "
            "until ready (our welcome frame; socket.io's namespace `40`; the 101 for the "
            "others), close and wait for the server to close.",
            (
                Metric("handshakes_per_cpu_s", "handshakes / CPU-s", better="higher"),
                Metric("handshakes_per_s", "handshakes / s"),
                Metric("handshake_p50_ms", "p50 ms", "{:.1f}", "lower"),
                Metric("handshake_p99_ms", "p99 ms", "{:.1f}", "lower"),
                Metric("redis_cpu_pct", "redis CPU %", "{:.0f}"),
                *USAGE_METRICS,
            ),
            "handshakes_per_cpu_s",
            handshake_run,
            kinds=(*DEFAULT_KINDS, "ours-auth", "ours-2w", "ours-asyncio"),
            params={"concurrency": plan.handshake_concurrency},
        )
    )
    storm, size = plan.storm_clients, plan.room_size
    storm_rooms = storm * plan.storm_rooms // size
    missed = plan.storm_missed * (1 + plan.storm_rooms)
    out.append(
        Scenario(
            "reconnect-storm",
            f"Reconnect storm, {storm} sessions",
            f"{storm} clients with sessions, each in the default channel and "
            f"{plan.storm_rooms} of {storm_rooms} rooms of {size} (namespace `room`: history "
            f"and presence), every channel with {plan.storm_seeded} messages of history; all "
            f"leave, {plan.storm_missed} messages go into every room and the default "
            "channel, and all come back at once with `?session=<token>`. Storm = from the "
            "first attempt until the last client is live: resumed (its welcome) and "
            f"replayed the {missed} messages it missed (each client's replay is counted: "
            f"{missed}, or the run fails). Handshakes / CPU-s = {storm} ÷ the server's CPU "
            "from the first attempt until it is idle again. Bare Tornado: "
            f"{storm} plain connections come and go, then all connect again at once "
            "(live = the 101). One run per server. Listen overflows = connection attempts "
            "the kernel dropped for a full accept queue (every server listens with a "
            "backlog of 4096; with Tornado's default, 128, a storm's time is mostly the "
            "clients' retries 1, 2, 4... s later); where there are any, handshakes / CPU-s "
            "is the figure of the server's work.",
            (
                Metric("storm_s", "storm s", "{:.2f}", "lower"),
                Metric("handshakes_per_cpu_s", "handshakes / CPU-s", better="higher"),
                Metric("ready_p50_s", "half ready s", "{:.2f}"),
                Metric("ready_s", "all ready s", "{:.2f}"),
                Metric("replayed", "replayed"),
                Metric("server_cpu_s", "server CPU s", "{:.2f}"),
                Metric("listen_overflows", "listen overflows"),
                Metric("redis_cpu_pct", "redis CPU %", "{:.0f}"),
                *USAGE_METRICS,
            ),
            "storm_s",
            kinds=("ours", "ours-asyncio", "tornado"),
            repeats=1,
            references=("tornado",),
            run_all=storm_all,
            params={
                "clients": storm,
                "rooms": storm_rooms,
                "rooms_per_client": plan.storm_rooms,
                "room_size": size,
                "seeded": plan.storm_seeded,
                "missed": plan.storm_missed,
            },
            targets=(
                Target(1.5, against="tornado"),
                Target(1.0, against="tornado", metric="handshakes_per_cpu_s"),
            ),
        )
    )
    out.append(
        Scenario(
            "idle",
            f"{plan.idle_connections} idle connections",
            f"{plan.idle_connections} connections that send nothing, held by a separate "
            "process per server. RSS per connection = (VmRSS after connecting - VmRSS "
            "before) / connections. Idle CPU: all servers then idle side by side for "
            f"{plan.idle_window:.0f} s (pings and heartbeats answered), CPU as % of a core.",
            (
                Metric("rss_per_conn_kb", "RSS / conn KB", "{:.1f}", "lower"),
                Metric("idle_cpu_pct", "idle CPU %", "{:.2f}", "lower"),
                Metric("idle_redis_cpu_pct", "redis CPU %", "{:.2f}"),
                Metric("rss_mb", "RSS MB", "{:.0f}"),
                Metric("connect_s", "connect s", "{:.1f}"),
                Metric("pings_answered", "pings"),
                Metric("heartbeat_frames", "heartbeat frames"),
            ),
            "rss_per_conn_kb",
            kinds=(*DEFAULT_KINDS, "ours-2w"),
            repeats=1,
            params={"connections": plan.idle_connections, "window_s": plan.idle_window},
            run_all=idle_all,
        )
    )
    per_conn, size = plan.rooms_per_connection, plan.room_size
    out.append(
        Scenario(
            "idle-rooms",
            f"{plan.idle_connections} idle connections in {per_conn} rooms each",
            f"As idle, but each connection also subscribes to {per_conn} rooms (namespace "
            f"`room`: history and presence) of {size} members, "
            f"{plan.idle_connections * per_conn // size} rooms in all: {per_conn + 1} "
            "subscriptions with the default channel (the personal channel `user:<id>` "
            "is automatic and not counted). RSS per connection is measured once the join "
            "frames have stopped. Ours only: the references have no rooms.",
            (
                Metric("rss_per_conn_kb", "RSS / conn KB", "{:.1f}", "lower"),
                Metric("redis_rss_per_conn_kb", "redis RSS / conn KB", "{:.1f}"),
                Metric("idle_cpu_pct", "idle CPU %", "{:.2f}", "lower"),
                Metric("idle_redis_cpu_pct", "redis CPU %", "{:.2f}"),
                Metric("rss_mb", "RSS MB", "{:.0f}"),
                Metric("redis_room_channels", "redis room channels"),
                Metric("connect_s", "connect s", "{:.1f}"),
                Metric("subscribe_s", "subscribe s", "{:.1f}"),
                Metric("join_frames", "join frames"),
                Metric("heartbeat_frames", "heartbeat frames"),
            ),
            "rss_per_conn_kb",
            kinds=("ours", "ours-bare"),
            repeats=1,
            references=(),
            params={
                "connections": plan.idle_connections,
                "rooms_per_connection": per_conn,
                "room_size": size,
                "window_s": plan.idle_window,
            },
            run_all=functools.partial(idle_all, rooms=(per_conn, size), name="idle-rooms"),
            targets=(Target(20.0),),
        )
    )
    rooms = plan.rooms_connections * per_conn // size
    out.append(
        Scenario(
            "many-rooms",
            f"{plan.rooms_connections} connections in {rooms} rooms",
            f"{plan.rooms_connections} connections, each in the default channel and "
            f"{per_conn} of {rooms} rooms of {size} members (connected and subscribed once "
            f"per server; the runs share them); {plan.rooms_publishers} of them publish, "
            "each message into a random room of a random publisher (a member: rooms take "
            f"messages from their subscribers only); {rooms_window(plan)} messages in flight "
            f"(about {plan.in_flight} deliveries), the next sent when one has reached its "
            "whole room. Every delivery is checked: each member of the room gets each of "
            "its messages once, nobody else gets it. Redis room channels = the rooms' "
            "pub/sub channels the server listens to: after subscribing (one per room), "
            f"after every member of {plan.rooms_emptied} rooms unsubscribed (and all but "
            "one of another's), and after every client closed (none). The floor runs in "
            "its rooms mode (bench/reference/floor_server.py --rooms); the other "
            "references have no rooms.",
            (
                Metric("deliveries_per_cpu_s", "deliveries / CPU-s", better="higher"),
                Metric("deliveries_per_s", "deliveries / s"),
                Metric("complete_p50_ms", "complete p50 ms", "{:.1f}", "lower"),
                Metric("complete_p99_ms", "complete p99 ms", "{:.1f}", "lower"),
                Metric("redis_room_channels", "redis room channels"),
                Metric("redis_room_channels_emptied", "after emptying"),
                Metric("redis_room_channels_closed", "after closing"),
                Metric("connect_s", "connect s", "{:.1f}"),
                Metric("subscribe_s", "subscribe s", "{:.1f}"),
                Metric("subscribes_per_cpu_s", "subscribes / CPU-s"),
                Metric("redis_cpu_pct", "redis CPU %", "{:.0f}"),
                *USAGE_METRICS,
            ),
            "deliveries_per_cpu_s",
            kinds=("ours", "ours-bare", "floor-rooms"),
            references=("floor-rooms",),
            targets=(Target(0.6, of="fanout-100"),),
            run_all=many_rooms_all,
            params={
                "connections": plan.rooms_connections,
                "rooms": rooms,
                "rooms_per_connection": per_conn,
                "room_size": size,
                "publishers": plan.rooms_publishers,
                "window": rooms_window(plan),
                "content": plan.message_size,
            },
        )
    )
    out.append(
        Scenario(
            "cross-instance",
            "Cross-instance delivery through Redis",
            f"Two instances on one Redis, {plan.cross_receivers} receivers split between them, "
            f"the sender on the first, {plan.cross_rate:.0f} messages/s. Latency of every "
            "delivery from the moment the message was due to be sent.",
            (
                Metric("p99_ms", "p99 ms", "{:.1f}", "lower"),
                Metric("p50_ms", "p50 ms", "{:.1f}"),
                Metric("remote_p50_ms", "remote p50 ms", "{:.1f}"),
                Metric("remote_p99_ms", "remote p99 ms", "{:.1f}"),
                Metric("local_p99_ms", "local p99 ms", "{:.1f}"),
                Metric("server_cpu_pct", "servers CPU %", "{:.0f}"),
                Metric("redis_cpu_pct", "redis CPU %", "{:.0f}"),
                Metric("other_cpu0_pct", "other CPU0 %", "{:.0f}"),
            ),
            "p99_ms",
            cross_run,
            kinds=("ours", "socketio"),
            instances=2,
            references=("socketio",),
            params={"receivers": plan.cross_receivers, "rate": plan.cross_rate},
        )
    )
    out.append(
        Scenario(
            "cross-instance-loaded",
            "Cross-instance delivery through Redis, loaded",
            f"As cross-instance, at {plan.cross_loaded_rate:.0f} messages/s into "
            f"{plan.cross_receivers} receivers "
            f"({plan.cross_loaded_rate * plan.cross_receivers:,.0f} deliveries/s), ours only: "
            "two instances and their Redis share the server core.",
            (
                Metric("p99_ms", "p99 ms", "{:.1f}", "lower"),
                Metric("p50_ms", "p50 ms", "{:.1f}"),
                Metric("remote_p99_ms", "remote p99 ms", "{:.1f}"),
                Metric("local_p99_ms", "local p99 ms", "{:.1f}"),
                Metric("deliveries_per_s", "deliveries / s"),
                Metric("server_cpu_pct", "servers CPU %", "{:.0f}"),
                Metric("redis_cpu_pct", "redis CPU %", "{:.0f}"),
                Metric("other_cpu0_pct", "other CPU0 %", "{:.0f}"),
            ),
            "p99_ms",
            functools.partial(cross_run, rate=plan.cross_loaded_rate),
            kinds=("ours",),
            instances=2,
            references=(),
            params={"receivers": plan.cross_receivers, "rate": plan.cross_loaded_rate},
        )
    )
    out.append(
        Scenario(
            "slow-consumer",
            "Slow consumers",
            f"{plan.slow_receivers} receivers stop reading (16 KB receive buffer) while "
            f"{plan.slow_healthy} healthy ones keep up and a sender sends {plan.slow_rate:.0f} "
            f"messages/s of {plan.slow_size} characters for {plan.slow_duration:.0f} s. "
            "Server RSS sampled every 0.25 s; growth = peak - RSS before connecting.",
            (
                Metric("growth_mb", "RSS growth MB", "{:.1f}", "lower"),
                Metric("peak_mb", "peak RSS MB", "{:.1f}"),
                Metric("end_mb", "RSS at end MB", "{:.1f}"),
                Metric("slow_closed", "slow closed by server"),
                Metric("healthy_p99_ms", "healthy p99 ms", "{:.1f}"),
            ),
            "growth_mb",
            slow_run,
            fresh=True,
            repeats=1,
            params={
                "slow": plan.slow_receivers,
                "healthy": plan.slow_healthy,
                "rate": plan.slow_rate,
                "content": plan.slow_size,
                "seconds": plan.slow_duration,
            },
        )
    )
    return out


# What a run may fail with: reported as that server's error in the results, not raised.
RUN_ERRORS = (RunFailed, ServerFailed, ProtocolError, OSError, ConnectionError, TimeoutError)


def _failure(error: BaseException, setup: Setup | None, *, ours: bool = True) -> str:
    """What went wrong in a run: the error, and what the server says of it if it is
    still running (our server's log; `ours=False` for a reference)."""
    why = _describe(error)
    if setup is not None and not isinstance(error, ServerFailed):
        try:
            setup.check()
        except ServerFailed as died:
            why += f"; {died}"
        else:
            why += _server_side(setup) if ours else ""
    return why


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    if isinstance(error, TimeoutError):
        text = "timed out"
    return text


async def run_scenario(
    ctx: Context, scenario: Scenario, kinds: Sequence[Kind], index: str
) -> ScenarioResult:
    """All runs of one scenario for `kinds` (interleaved repeats)."""
    result = ScenarioResult(params=scenario.params)
    kinds = [k for k in kinds if k.key in scenario.kinds]
    if scenario.run_all is not None:
        await scenario.run_all(ctx, kinds, result)
        return result
    repeats = scenario.repeats or ctx.plan.repeats
    setups: dict[str, Setup] = {}
    try:
        if not scenario.fresh:
            for kind in kinds:
                ctx.progress.at(f"{index} {scenario.name} · starting {kind.label}")
                try:
                    setups[kind.key] = Setup(kind, ctx.workdir, scenario.instances).start()
                except ServerFailed as error:
                    result.errors[kind.key] = _describe(error)
        for r in range(repeats):
            order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
            for kind in order:
                if kind.key in result.errors:
                    continue
                where = f"{index} {scenario.name} · {kind.label} · run {r + 1}/{repeats}"
                ctx.progress.at(where)
                setup = setups.get(kind.key)
                try:
                    if setup is None:
                        setup = Setup(kind, ctx.workdir, scenario.instances).start()
                    try:
                        figures = await asyncio.wait_for(scenario.run_once(ctx, setup), RUN_TIMEOUT)
                    finally:
                        if scenario.fresh:
                            setup.stop()
                except RUN_ERRORS as error:
                    result.errors[kind.key] = _describe(error)
                    ctx.progress.line(f"{where}: FAILED: {result.errors[kind.key]}")
                    continue
                gc.collect()
                result.runs.setdefault(kind.key, []).append(figures)
                metric = next(m for m in scenario.metrics if m.key == scenario.headline)
                value = figures.get(metric.key)
                shown = metric.fmt.format(value) if value is not None else "-"
                ctx.progress.line(f"{where}: {metric.label} {shown}")
    finally:
        for setup in setups.values():
            setup.stop()
    return result


def with_overrides(plan: Plan, **changes) -> Plan:
    return replace(plan, **{k: v for k, v in changes.items() if v is not None})
