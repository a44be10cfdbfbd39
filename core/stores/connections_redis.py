"""Per-IP connection counts summed over every live instance, in Redis.

Each instance keeps its counts in its own hash and marks itself live in a sorted set
(refreshed every third of `liveness`, expiring after `liveness` seconds:
`store.instance_ttl`), so an instance that dies without cleaning up stops counting
within `liveness` seconds. The check-and-take is
one Lua call, so two instances cannot both take the last slot. The local counts are kept
too: they are the fallback while Redis is down and are written back when it returns.
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
        self._own = keys.connections(instance_id)
        self._alive: asyncio.Task | None = None
        link.on_up(self.sync)

    async def start(self) -> None:
        if self.link.up:
            await self.sync()
        self._alive = asyncio.ensure_future(self._keep_alive())

    async def acquire(self, ip: str, limit: int) -> bool:
        if self.link.up:
            try:
                taken = await self.link.script(
                    "connection_acquire",
                    [self.keys.instances(), self._own],
                    [ip, limit, self.keys.prefix, self.instance_id, self.liveness_ms],
                )
            except LinkDown:
                return self.local.take(ip, limit)
            if taken:
                self.local.counts[ip] = self.local.counts.get(ip, 0) + 1
            return bool(taken)
        return self.local.take(ip, limit)

    def release(self, ip: str) -> None:
        self.local.release(ip)
        self.link.fire_script("connection_release", [self._own], [ip])

    def local_count(self, ip: str) -> int:
        return self.local.local_count(ip)

    async def sync(self) -> None:
        """Announce this instance and write its counts (Redis may have lost them)."""
        flat: list[str | int] = []
        for ip, count in self.local.counts.items():
            flat += [ip, count]
        try:
            await self.link.script(
                "instance_sync",
                [self.keys.instances(), self._own],
                [self.instance_id, self.liveness_ms, *flat],
            )
        except LinkDown:
            pass

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.liveness_ms / 3000)
            if self.link.up:
                try:
                    await self.link.script(
                        "instance_alive",
                        [self.keys.instances(), self._own],
                        [self.instance_id, self.liveness_ms],
                    )
                except LinkDown:
                    pass

    async def close(self) -> None:
        """Stop counting: remove this instance's hash and liveness."""
        if self._alive is not None:
            self._alive.cancel()
        if self.link.up:
            try:
                await asyncio.gather(
                    self.link.call("DEL", self._own),
                    self.link.call("ZREM", self.keys.instances(), self.instance_id),
                )
            except LinkDown:
                log.warning("could not release this instance's connection counts in Redis")
