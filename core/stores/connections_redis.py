"""Per-IP connection counts summed over every live instance, in Redis.

Each client address has a hash (`{prefix}connections:{<address>}`, the address a hash
tag) with a field per instance holding its count and when that count stops counting.
An instance refreshes its fields every third of `liveness` (`store.instance_ttl`), so
one that dies without cleaning up stops counting within `liveness` seconds. The
check-and-take is one Lua call on one key, so two instances cannot both take the last
slot, and it runs on a single shard of a Redis Cluster.

This instance's own counts are the truth: every write to Redis is "my count is N"
(never an increment), so a lost write or a Redis that restarted is corrected by the
next one. They are also the fallback while Redis is down, and are written back when it
returns.
"""

from __future__ import annotations

import asyncio
import logging

from core.stores.connections import ConnectionCounter
from core.stores.connections_memory import MemoryConnectionCounter
from core.stores.keys import Keys
from core.stores.redis_link import LinkDown, RedisLink

log = logging.getLogger("store")


class RedisConnectionCounter(ConnectionCounter):
    """Cluster-wide per-IP counts; this instance's own counts while Redis is down."""

    def __init__(
        self, link: RedisLink, keys: Keys, instance_id: str, liveness: float = 30.0
    ) -> None:
        self.link = link
        self.liveness_ms = int(liveness * 1000)
        self.keys = keys
        self.instance_id = instance_id
        self.local = MemoryConnectionCounter()
        # Addresses whose count changed while Redis could not be told.
        self._unsaid: set[str] = set()
        self._alive: asyncio.Task | None = None
        link.on_up(self.sync)

    async def start(self) -> None:
        if self.link.up:
            await self.sync()
        self._alive = asyncio.ensure_future(self._keep_alive())

    async def acquire(self, ip: str, limit: int) -> bool:
        if not self.link.up:
            return self._take_locally(ip, limit)
        # Counted before asking, so that a release issued while this is in flight
        # writes a count that includes it (the writes reach Redis in issue order).
        before = self.local.counts.get(ip, 0)
        self.local.counts[ip] = before + 1
        try:
            taken = await self.link.script(
                "connection_acquire",
                [self.keys.connections(ip)],
                [self.instance_id, limit, self.liveness_ms, before],
            )
        except LinkDown:
            self.local.release(ip)
            return self._take_locally(ip, limit)
        if not taken:
            self.local.release(ip)
        return bool(taken)

    def _take_locally(self, ip: str, limit: int) -> bool:
        taken = self.local.take(ip, limit)
        if taken:
            self._unsaid.add(ip)
        return taken

    def release(self, ip: str) -> None:
        self.local.release(ip)
        if self.link.up:
            self._say(ip)
        else:
            self._unsaid.add(ip)

    def local_count(self, ip: str) -> int:
        return self.local.local_count(ip)

    def _say(self, ip: str) -> None:
        self.link.fire_script(
            "connection_set",
            [self.keys.connections(ip)],
            [self.instance_id, self.local.counts.get(ip, 0), self.liveness_ms],
        )

    async def sync(self) -> None:
        """Announce this instance and write every count it holds (Redis may have lost
        them, or missed releases while it was away)."""
        unsaid, self._unsaid = self._unsaid, set()
        try:
            await asyncio.gather(self._announce(), *self._write_all(unsaid))
        except LinkDown:
            self._unsaid |= unsaid

    def _write_all(self, also: set[str] = frozenset()) -> list[asyncio.Future]:
        return [
            self.link.script(
                "connection_set",
                [self.keys.connections(ip)],
                [self.instance_id, self.local.counts.get(ip, 0), self.liveness_ms],
            )
            for ip in {*self.local.counts, *also}
        ]

    def _announce(self) -> asyncio.Future:
        return self.link.script(
            "instance_alive", [self.keys.instances()], [self.instance_id, self.liveness_ms]
        )

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.liveness_ms / 3000)
            if self.link.up:
                await self.sync()

    async def close(self) -> None:
        """Stop counting: remove this instance's fields and its liveness."""
        if self._alive is not None:
            self._alive.cancel()
        if not self.link.up:
            return
        held, self.local.counts = set(self.local.counts), {}
        try:
            await asyncio.gather(
                self.link.call("ZREM", self.keys.instances(), self.instance_id),
                *self._write_all(held),
            )
        except LinkDown:
            log.warning("could not release this instance's connection counts in Redis")
