"""The instance's link to Redis: one command connection, auto-pipelined, and its health.

Every command issued during one IOLoop iteration goes out in a single write and its
replies are read back in order, on one connection: commands of this instance reach
Redis in the order they were issued (a sender's messages stay in order) and a burst
costs one round trip. While Redis is unreachable, or answers but refuses writes (OOM,
READONLY, MISCONF: the link probes with a small write every second), calls fail at once
with `LinkDown` (callers fall back to their memory twin) and a background task
reconnects with jittered exponential backoff, then tells the listeners registered with
`on_up` (which write back what changed meanwhile).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from hiredis import pack_command
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import (
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)

from core.ops.log_limit import LogLimit
from core.ops.metrics import Metrics

log = logging.getLogger("redis")

LUA_DIR = Path(__file__).with_name("lua")
COMMAND_TIMEOUT = 2.0  # seconds before a silent Redis counts as down
MONITOR_EVERY = 1.0  # seconds between health PINGs
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0
INCLUDE = "--#include "


class _Deadline:
    """The placeholder `DEADLINE` (see there)."""

    def __repr__(self) -> str:
        return "DEADLINE"


# Put last in a command's arguments, it is replaced, when the command is sent, by the
# moment (milliseconds, on Redis's clock) this instance stops waiting for the reply. A
# script given it refuses to run later: a command held up in a frozen Redis, or behind a
# failover, and run when nobody waits for it any more, must not take effect (the
# instance has already treated it as refused).
DEADLINE = _Deadline()

# Every connection to a Redis holding data, however it is found.
CONNECTION_OPTIONS: dict[str, Any] = {
    "socket_timeout": COMMAND_TIMEOUT,
    "socket_connect_timeout": COMMAND_TIMEOUT,
    # RESP2: pub/sub messages arrive as plain replies, in order, on our read.
    "protocol": 2,
    # No CLIENT SETINFO on connect: one round trip less, and no handshake read that
    # could outlast a shutdown cut short.
    "driver_info": None,
}


class LinkDown(Exception):
    """Redis is not reachable right now, or refuses writes; use the fallback."""


# Replies meaning "Redis is up but will not take writes": out of memory under
# noeviction, a replica, a failed save with stop-writes-on-bgsave-error. For a server
# that writes on every event they are an outage like Redis being down. (redis-py turns
# the first two into their own classes, without the code; MISCONF keeps its code.)
WRITE_REFUSALS = (OutOfMemoryError, ReadOnlyError)


def is_write_refusal(error: object) -> bool:
    return isinstance(error, WRITE_REFUSALS) or (
        isinstance(error, ResponseError) and str(error).startswith("MISCONF")
    )


@dataclass(frozen=True)
class Script:
    """A Lua script from core/stores/lua, called by its SHA1."""

    name: str
    source: str
    sha: str

    @classmethod
    def load(cls, name: str) -> Script:
        """The script `name`, with each `--#include <part>` line replaced by
        lua/<part>.lua (Redis runs one self-contained source: shared code is pasted in)."""
        source = "".join(
            (LUA_DIR / f"{line[len(INCLUDE) :].strip()}.lua").read_text()
            if line.startswith(INCLUDE)
            else line
            for line in (LUA_DIR / f"{name}.lua").read_text().splitlines(keepends=True)
        )
        return cls(name, source, hashlib.sha1(source.encode()).hexdigest())


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


class Commands:
    """What every link offers on top of its `call`: scripts by name, and commands whose
    reply nobody waits for. A link has `up`, `scripts` (name -> Script), `log_limit`
    and `call(*args) -> Future`."""

    up: bool
    scripts: dict[str, Script]
    log_limit: LogLimit

    def call(self, *args: Any) -> asyncio.Future:
        raise NotImplementedError

    def fire(self, *args: Any) -> None:
        """`call` without waiting for the reply; a failure only marks the link down."""
        if self.up:
            self.call(*args).add_done_callback(self._ignore_result)

    def fire_script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> None:
        if self.up:
            self.script(name, keys, args).add_done_callback(self._ignore_result)

    def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> asyncio.Future:
        """Run a registered Lua script with EVALSHA (reloaded where Redis lost it)."""
        return self.call("EVALSHA", self.scripts[name].sha, len(keys), *keys, *args)

    def _ignore_result(self, future: asyncio.Future) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None and not isinstance(error, LinkDown):
            said = self.log_limit.allow("fire")
            if said is not None:
                log.warning("fire-and-forget Redis command failed: %s%s", error, said)


class RedisLink(Commands):
    """The command connection to Redis, its auto-pipeline, and its up/down state."""

    def __init__(
        self,
        url: str,
        metrics: Metrics,
        scripts: Sequence[str] = (),
        probe_key: str = "relay:probe",
        reports: bool = True,
    ) -> None:
        self.url = url
        # False for one master of a cluster: the cluster link reports the whole.
        self.reports = reports
        # Written (with a one-second expiry) to tell a Redis that takes writes.
        self.probe_key = probe_key
        self.metrics = metrics
        self._pool = self._make_pool()
        self._conn: AbstractConnection | None = None
        # Redis's clock minus ours (ms), measured at each connect.
        self.clock_offset_ms = 0.0
        self.scripts = {name: Script.load(name) for name in scripts}
        self.up = False
        self._up_event = asyncio.Event()
        self._queue: list[tuple[tuple, asyncio.Future]] = []
        self._draining = False
        self._on_up: list[Callable[[], Awaitable[None]]] = []
        self._on_down: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task] = set()
        self._monitor_task: asyncio.Task | None = None
        self._reconnect_task: asyncio.Task | None = None
        self._closed = False
        # Down and back, and failures of commands nobody waits for, can repeat quickly.
        self.log_limit = LogLimit()

    def _make_pool(self) -> ConnectionPool:
        """Where connections come from: here `self.url`; through Sentinel in
        SentinelLink."""
        return ConnectionPool.from_url(self.url, **CONNECTION_OPTIONS)

    @property
    def state(self) -> str:
        return "up" if self.up else "down"

    def new_connection(self) -> AbstractConnection:
        """A separate connection (the subscriber's) with the same settings."""
        return self._pool.make_connection()

    def on_up(self, listener: Callable[[], Awaitable[None]]) -> None:
        """Run `listener` each time the link comes back after an outage."""
        self._on_up.append(listener)

    def on_down(self, listener: Callable[[], None]) -> None:
        self._on_down.append(listener)

    async def wait_up(self) -> None:
        await self._up_event.wait()

    # -- connecting -----------------------------------------------------------------

    async def connect(self) -> bool:
        """Try once to connect; True if Redis answered."""
        conn = self._pool.make_connection()
        try:
            await conn.connect()
            sent = time.time()
            probe, now = await self._roundtrip(conn, [self._probe(), ("TIME",)])
            if isinstance(now, list):
                redis_ms = int(now[0]) * 1000 + int(now[1]) / 1000
                self.clock_offset_ms = redis_ms - (sent + time.time()) * 500
            if isinstance(probe, ResponseError):
                raise probe  # answers, but refuses writes: still down
            await self._load_scripts(conn)
        except (RedisError, OSError, LinkDown) as error:
            log.debug("connect failed: %s", error)
            await conn.disconnect(nowait=True)
            return False
        self._conn = conn
        self._set_up(True)
        return True

    def start(self) -> None:
        """Watch the link: periodic PINGs while up, reconnection while down."""
        self._monitor_task = asyncio.ensure_future(self._monitor())
        if not self.up:
            self._start_reconnecting()

    def _start_reconnecting(self) -> None:
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.ensure_future(self._reconnect())

    async def _load_scripts(self, conn: AbstractConnection) -> None:
        if self.scripts:
            await self._roundtrip(
                conn, [("SCRIPT", "LOAD", s.source) for s in self.scripts.values()]
            )

    @staticmethod
    async def _roundtrip(conn: AbstractConnection, commands: list[tuple]) -> list[Any]:
        """Send `commands` in one write and read their replies (one deadline for all)."""
        replies: list[Any] = []
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                # hiredis packs a command ~7x faster than redis-py's Python encoder.
                packed = b"".join([pack_command(c) for c in commands])
                await conn.send_packed_command(packed, check_health=False)
                for _ in commands:
                    try:
                        replies.append(await conn.read_response(timeout=math.inf))
                    except ResponseError as error:
                        replies.append(error)
        except TimeoutError:
            await conn.disconnect(nowait=True)
            raise LinkDown(f"no reply within {COMMAND_TIMEOUT:g}s") from None
        return replies

    def _set_up(self, up: bool) -> None:
        was = self.up
        self.up = up
        if self.reports:
            self.metrics.redis_up.set(1 if up else 0)
        if up:
            self._up_event.set()
        else:
            self._up_event.clear()
        if was and not up:
            for listener in self._on_down:
                listener()

    def mark_down(self, error: BaseException | str) -> None:
        """Redis failed us: fall back, and reconnect in the background."""
        if not self.up or self._closed:
            return
        said = self.log_limit.allow("down")
        if said is not None:
            log.warning(
                "Redis at %s is down (%s); falling back to this instance%s",
                redact(self.url),
                error,
                said,
            )
        self._set_up(False)
        if self._conn is not None:
            self._spawn(self._conn.disconnect())
            self._conn = None
        self._start_reconnecting()

    async def _reconnect(self) -> None:
        delay = BACKOFF_FIRST
        while not self._closed and not self.up:
            if await self.connect():
                if self.reports:
                    self.metrics.redis_reconnects.inc()
                said = self.log_limit.allow("back")
                if said is not None:
                    log.warning("Redis at %s is back%s", redact(self.url), said)
                for listener in self._on_up:
                    try:
                        await listener()
                    except Exception:
                        log.exception("re-synchronising after Redis came back failed")
                return
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(BACKOFF_MAX, delay * 2)

    def _probe(self) -> tuple:
        return ("SET", self.probe_key, 1, "PX", 1000)

    async def _monitor(self) -> None:
        while not self._closed:
            await asyncio.sleep(MONITOR_EVERY)
            if self.up:
                try:
                    # A write, not a PING: a Redis that answers but refuses writes
                    # (OOM, READONLY, MISCONF) is down for this server.
                    await self.call(*self._probe())
                except LinkDown:
                    pass  # mark_down already ran

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- commands -------------------------------------------------------------------

    def call(self, *args: Any) -> asyncio.Future:
        """Queue one command for this loop turn's pipeline; a Future of its reply.

        The Future fails with LinkDown if Redis is unreachable, or with the Redis
        error for that command alone.
        """
        future = asyncio.get_running_loop().create_future()
        if not self.up:
            future.set_exception(LinkDown("Redis is down"))
            return future
        self._queue.append((args, future))
        if not self._draining:
            self._draining = True
            self._spawn(self._drain())
        return future

    def _deadline_ms(self) -> int:
        """When, on Redis's clock, a command sent now stops being waited for."""
        return int(time.time() * 1000 + self.clock_offset_ms + COMMAND_TIMEOUT * 1000)

    async def _drain(self) -> None:
        try:
            while self._queue and self.up:
                batch, self._queue = self._queue, []
                await self._send(batch)
        finally:
            self._draining = False
            if self._queue:
                for _, future in self._queue:
                    if not future.done():
                        future.set_exception(LinkDown("Redis is down"))
                self._queue = []

    async def _send(self, batch: list[tuple[tuple, asyncio.Future]]) -> None:
        conn = self._conn
        try:
            if conn is None:
                raise LinkDown("no connection")
            commands = [
                args if args[-1] is not DEADLINE else (*args[:-1], self._deadline_ms())
                for args, _ in batch
            ]
            replies = await self._roundtrip(conn, commands)
            refusal = next((r for r in replies if is_write_refusal(r)), None)
            if refusal is not None:
                raise LinkDown(f"it refuses writes: {refusal}")
            missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            if missing:
                # Redis restarted or flushed its scripts: load them and retry those.
                await self._load_scripts(conn)
                again = await self._roundtrip(conn, [commands[i] for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except (RedisError, OSError, LinkDown) as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(LinkDown(str(error)))
            self.mark_down(error)
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    # -- closing --------------------------------------------------------------------

    async def close(self) -> None:
        self._closed = True
        for task in (self._monitor_task, self._reconnect_task):
            if task is not None:
                task.cancel()
        if self._conn is not None:
            await self._conn.disconnect()
            self._conn = None
        self._set_up(False)
        await self._pool.disconnect()
