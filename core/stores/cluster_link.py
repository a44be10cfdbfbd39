"""The instance's link to a Redis Cluster: one auto-pipelined link per master, each
command sent to the master of its key's slot.

The slot map comes from CLUSTER SLOTS (asked of any node that answers, the seeds first)
and is asked again every few seconds, at once after a MOVED reply or a master going
down, and every half second while some slot has no reachable master. Each master gets
a `RedisLink` of its own (scripts loaded per node and again on NOSCRIPT, its own up/down
state and reconnection), so a master that fails takes down only the calls for its
slots: they fail with `LinkDown` and their callers fall back as with a single Redis
that is down, while the other shards carry on. When a replica is promoted, the next
map routes to it and the listeners registered with `on_up` run (they write back what
the promoted replica may have missed); `on_topology` listeners (the broker's
subscriptions) hear of every change of the map.

`up` is true while at least one master answers; `state` is "up" only while every
slot's master does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import RedisError, ResponseError

from core.ops.log_limit import LogLimit
from core.ops.metrics import Metrics
from core.stores.redis_link import (
    COMMAND_TIMEOUT,
    CONNECTION_OPTIONS,
    Commands,
    LinkDown,
    RedisLink,
    Script,
)

log = logging.getLogger("redis")

SLOTS = REDIS_CLUSTER_HASH_SLOTS
REFRESH_EVERY = 5.0  # seconds between slot map checks while everything is fine
REFRESH_DEGRADED = 0.5  # ...while some slot has no reachable master
MAX_REDIRECTS = 3
# Replies that mean "not here, not now": the command went nowhere, so it is an outage
# of its shard for the caller (which falls back) and a reason to look at the map.
UNSERVED = ("CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "LOADING")


def node_url(address: str, like: str = "redis://") -> str:
    """The URL of the node at "host:port", with the scheme (TLS or not) and credentials
    of `like` (store.redis_url): a password there applies to every node."""
    parts = urlsplit(like)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return f"{parts.scheme or 'redis'}://{userinfo}{at}{address}/0"


def key_of(args: Sequence[Any]) -> Any:
    """The key a command is routed by: EVALSHA's first key, else its first argument."""
    if args[0] in ("EVALSHA", "EVAL"):
        return args[3] if int(args[2]) > 0 else None
    return args[1] if len(args) > 1 else None


def slot_of(key: Any) -> int:
    return key_slot(key if isinstance(key, bytes) else str(key).encode())


class SlotMap:
    """Which master serves each slot, and the replicas of each master."""

    def __init__(self, ranges: Sequence[tuple[int, int, str, tuple[str, ...]]] = ()) -> None:
        self.ranges = sorted(ranges)
        self.owner: list[str | None] = [None] * SLOTS
        self.replicas: dict[str, tuple[str, ...]] = {}
        for start, end, master, replicas in self.ranges:
            self.owner[start : end + 1] = [master] * (end + 1 - start)
            self.replicas[master] = replicas

    @classmethod
    def from_reply(cls, reply: list) -> SlotMap:
        """From a CLUSTER SLOTS reply: [start, end, [host, port, id], [replica...]...]."""
        ranges = []
        for start, end, master, *replicas in reply:
            ranges.append(
                (
                    int(start),
                    int(end),
                    _address(master),
                    tuple(_address(r) for r in replicas),
                )
            )
        return cls(ranges)

    @property
    def masters(self) -> list[str]:
        return sorted(self.replicas)

    @property
    def complete(self) -> bool:
        return None not in self.owner

    def slots_of(self, master: str) -> list[tuple[int, int]]:
        return [(start, end) for start, end, m, _ in self.ranges if m == master]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlotMap) and self.ranges == other.ranges

    __hash__ = None  # type: ignore[assignment]


def _address(node: list) -> str:
    host = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
    return f"{host}:{int(node[1])}"


def tag_in(ranges: Sequence[tuple[int, int]], prefix: str) -> str:
    """A key `{prefix}{<n>}` whose slot is in `ranges` (a master's probe key)."""
    n = 0
    while True:
        key = f"{prefix}{{{n}}}"
        slot = key_slot(key.encode())
        if any(start <= slot <= end for start, end in ranges):
            return key
        n += 1


class ClusterLink(Commands):
    """Links to every master of a Redis Cluster; commands routed by key slot (a script
    to the master of its keys' slot: they share one)."""

    def __init__(
        self,
        seeds: Sequence[str],
        metrics: Metrics,
        scripts: Sequence[str] = (),
        probe_key: str = "relay:probe",
        like: str = "redis://",
    ) -> None:
        self.seeds = list(seeds)
        # Scheme and credentials for every node (from store.redis_url).
        self.like = like
        self.url = "cluster " + ",".join(self.seeds)  # for logs
        self.metrics = metrics
        self.script_names = tuple(scripts)
        self.scripts = {name: Script.load(name) for name in scripts}
        self.probe_prefix = probe_key
        self.map = SlotMap()
        self.nodes: dict[str, RedisLink] = {}  # master address -> its link
        self.up = False
        self._up_event = asyncio.Event()
        self._on_up: list[Callable[[], Awaitable[None]]] = []
        self._on_down: list[Callable[[], None]] = []
        self._on_topology: list[Callable[[], None]] = []
        self._poke = asyncio.Event()
        self._refresh_lock = asyncio.Lock()
        self._watch_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        self.log_limit = LogLimit()

    # -- state ----------------------------------------------------------------------

    @property
    def state(self) -> str:
        """ "up" while every slot's master answers, else "down" (for /healthz: some
        shards' messages are then delivered by each instance to its own clients)."""
        live, total = self.shards()
        return "up" if total and live == total and self.map.complete else "down"

    def shards(self) -> tuple[int, int]:
        """How many masters answer, of how many."""
        masters = [self.nodes.get(m) for m in self.map.masters]
        return sum(1 for link in masters if link is not None and link.up), len(masters)

    def on_up(self, listener: Callable[[], Awaitable[None]]) -> None:
        """Run `listener` after a shard came back or moved to a promoted replica."""
        self._on_up.append(listener)

    def on_down(self, listener: Callable[[], None]) -> None:
        """Run `listener` when no master answers any more."""
        self._on_down.append(listener)

    def on_topology(self, listener: Callable[[], None]) -> None:
        """Run `listener` after the slot map changed."""
        self._on_topology.append(listener)

    async def wait_up(self) -> None:
        await self._up_event.wait()

    def _recompute(self) -> None:
        was = self.up
        self.up = any(link.up for link in self.nodes.values())
        self.metrics.redis_up.set(1 if self.state == "up" else 0)
        if self.up:
            self._up_event.set()
        else:
            self._up_event.clear()
        if was and not self.up:
            for listener in self._on_down:
                listener()

    # -- the slot map ---------------------------------------------------------------

    def master_of(self, key: Any) -> str | None:
        return self.map.owner[slot_of(key)]

    def reader_of(self, key: Any) -> str | None:
        """Where to listen for `key`'s slot: one of its master's replicas if it has
        any (they keep hearing through a failover of the master), else the master."""
        master = self.master_of(key)
        if master is None:
            return None
        replicas = self.map.replicas.get(master, ())
        return replicas[slot_of(key) % len(replicas)] if replicas else master

    def connection_to(self, address: str) -> AbstractConnection:
        """A new connection to one node, set up like the command links' (a subscriber's)."""
        return ConnectionPool.from_url(
            node_url(address, self.like), **CONNECTION_OPTIONS
        ).make_connection()

    async def connect(self) -> bool:
        """Read the slot map and connect to every master; True if any answered."""
        await self.refresh()
        return self.up

    def start(self) -> None:
        """Keep the map current, and every master's link watched."""
        self._watch_task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while not self._closed:
            every = REFRESH_EVERY if self.state == "up" else REFRESH_DEGRADED
            try:
                await asyncio.wait_for(self._poke.wait(), every)
            except TimeoutError:
                pass
            self._poke.clear()
            try:
                await self.refresh()
            except Exception:
                log.exception("reading the cluster's slot map failed")

    def poke(self) -> None:
        """Read the slot map again soon (a MOVED reply, a master gone)."""
        self._poke.set()

    async def refresh(self) -> None:
        """Read the slot map from a node that answers; follow it."""
        async with self._refresh_lock:
            reply = await self._ask_slots()
            if reply is None:
                self._recompute()
                return
            new = SlotMap.from_reply(reply)
            changed = new != self.map
            self.map = new
            await self._follow(new)
            self._recompute()
        if changed:
            log.info(
                "cluster slot map: %s",
                ", ".join(f"{s}-{e}@{m}" for s, e, m, _ in new.ranges) or "no slots served",
            )
            for listener in self._on_topology:
                listener()
            if self.up:
                await self._run_on_up()

    async def _ask_slots(self) -> list | None:
        live = [a for a, link in self.nodes.items() if link.up]
        known = [a for m in self.map.masters for a in (m, *self.map.replicas.get(m, ()))]
        tried: set[str] = set()
        for address in [*live, *self.seeds, *known]:
            if address in tried:
                continue
            tried.add(address)
            try:
                reply = await self._ask(address, "CLUSTER", "SLOTS")
            except (RedisError, OSError, LinkDown, TimeoutError) as error:
                log.debug("CLUSTER SLOTS from %s failed: %s", address, error)
                continue
            if reply:
                return reply
        return None

    async def _ask(self, address: str, *command: Any) -> Any:
        link = self.nodes.get(address)
        if link is not None and link.up:
            return await link.call(*command)
        conn = self.connection_to(address)
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await conn.connect()
                await conn.send_command(*command)
                return await conn.read_response()
        finally:
            await conn.disconnect(nowait=True)

    async def _follow(self, new: SlotMap) -> None:
        """A link for each master of `new`; links to nodes no longer masters closed."""
        for address in list(self.nodes):
            if address not in new.replicas:
                link = self.nodes.pop(address)
                self._spawn(link.close())
        fresh = []
        for address in new.masters:
            link = self.nodes.get(address)
            if link is None:
                link = self.nodes[address] = self._node_link(address)
                fresh.append(link)
            link.probe_key = tag_in(new.slots_of(address), self.probe_prefix)
        if fresh:
            await asyncio.gather(*(link.connect() for link in fresh))
            for link in fresh:
                link.start()

    def _node_link(self, address: str) -> RedisLink:
        link = RedisLink(
            node_url(address, self.like),
            self.metrics,
            self.script_names,
            self.probe_prefix,
            reports=False,
        )
        link.log_limit = self.log_limit
        link.on_down(self._node_down)
        link.on_up(self._node_up)
        return link

    def _node_down(self) -> None:
        self.poke()
        self._recompute()

    async def _node_up(self) -> None:
        self.metrics.redis_reconnects.inc()
        self._recompute()
        await self._run_on_up()

    async def _run_on_up(self) -> None:
        for listener in self._on_up:
            try:
                await listener()
            except Exception:
                log.exception("re-synchronising after a shard came back failed")

    # -- commands -------------------------------------------------------------------

    def call(self, *args: Any) -> asyncio.Future:
        """Queue one command on its slot's master; a Future of its reply (LinkDown if
        that master is not reachable now)."""
        return self._call(args, 0)

    def _call(self, args: tuple, redirects: int, address: str | None = None) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if address is None:
            key = key_of(args)
            address = self.master_of(key) if key is not None else next(iter(self.nodes), None)
        link = self.nodes.get(address) if address is not None else None
        if link is None or not link.up:
            self.poke()
            future.set_exception(LinkDown("no reachable master for this key"))
            return future
        link.call(*args).add_done_callback(lambda f: self._settle(f, future, args, redirects))
        return future

    def _settle(
        self, inner: asyncio.Future, future: asyncio.Future, args: tuple, redirects: int
    ) -> None:
        if future.done():
            return
        if inner.cancelled():
            future.cancel()
            return
        error = inner.exception()
        if error is None:
            future.set_result(inner.result())
            return
        text = str(error)
        if isinstance(error, ResponseError) and text.startswith(("MOVED ", "ASK ")):
            kind, slot, address = text.split()[:3]
            self.poke()
            if redirects >= MAX_REDIRECTS or address not in self.nodes:
                future.set_exception(LinkDown(f"slot {slot} is moving ({text})"))
                return
            if kind == "MOVED":
                self.map.owner[int(slot)] = address
                again = self._call(args, redirects + 1, address)
            else:
                # ASKING applies to the next command on the same connection: the two
                # are queued together, so they go out together.
                self.nodes[address].call("ASKING").add_done_callback(_ignore)
                again = self._call(args, redirects + 1, address)
            again.add_done_callback(lambda f: _copy(f, future))
            return
        if isinstance(error, ResponseError) and text.startswith(UNSERVED):
            self.poke()
            future.set_exception(LinkDown(text))
            return
        future.set_exception(error)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closed = True
        if self._watch_task is not None:
            self._watch_task.cancel()
        links, self.nodes = list(self.nodes.values()), {}
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)
        self._recompute()


def _copy(source: asyncio.Future, target: asyncio.Future) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())
    else:
        target.set_result(source.result())


def _ignore(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()
