"""Chooses and builds the stores for `store.backend`."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from core.config.settings import StoreSettings
from core.ops.metrics import Metrics
from core.stores.broker import Broker
from core.stores.broker_memory import MemoryBroker
from core.stores.broker_redis import RedisBroker
from core.stores.broker_sharded import ShardedRedisBroker
from core.stores.cluster_link import ClusterLink
from core.stores.connections import ConnectionCounter
from core.stores.connections_memory import MemoryConnectionCounter
from core.stores.connections_redis import RedisConnectionCounter
from core.stores.instance_claim import InstanceClaim, InstanceIdInUse
from core.stores.keys import Keys
from core.stores.presence import PresenceStore
from core.stores.presence_memory import MemoryPresence
from core.stores.presence_redis import RedisPresence
from core.stores.ratelimit import RateLimiter
from core.stores.ratelimit_memory import MemoryRateLimiter
from core.stores.ratelimit_redis import RedisRateLimiter
from core.stores.redis_link import RedisLink, redact
from core.stores.sentinel_link import SentinelLink
from core.stores.sessions import SessionStore
from core.stores.sessions_memory import MemorySessionStore
from core.stores.sessions_redis import RedisSessionStore

log = logging.getLogger("store")

# `backend: auto` on memory: how often Redis is tried again (seconds, doubling).
AUTO_PROBE_FIRST = 0.5
AUTO_PROBE_MAX = 10.0

SCRIPTS = (
    "publish",
    "ratelimit",
    "connection_acquire",
    "connection_set",
    "instance_alive",
    "session_resume",
    "session_message",
    "session_leave",
    "presence_add",
    "presence_members",
    "presence_expire",
)


@dataclass
class Stores:
    """The instance's stores, all of one backend."""

    backend: str  # "memory" or "redis"
    sessions: SessionStore
    rate_limiter: RateLimiter
    connections: ConnectionCounter
    presence: PresenceStore

    def local_broker(self) -> Broker:
        """The broker for this instance alone (it keeps what the log policy asks)."""
        return MemoryBroker(None)

    def shared_broker(self) -> Broker | None:
        """A broker reaching every instance; None with the memory backend."""
        return None

    @property
    def redis_state(self) -> str | None:
        """ "up" / "down" with the redis backend, None with memory."""
        return None

    @property
    def split(self) -> bool:
        """True when this instance runs on its own memory although the Redis it was
        meant to share answers now: its clients and limits are cut off from the rest."""
        return False

    async def close(self) -> None:
        """Release what this instance holds in the store."""


class AutoMemoryStores(Stores):
    """`backend: auto` when Redis did not answer at start-up: the memory store, and a
    probe that keeps trying Redis, so that an instance that started too early does not
    stay silently apart from the others (it reports "degraded" once Redis answers)."""

    def __init__(self, link: RedisLink, where: str) -> None:
        memory = memory_stores()
        super().__init__(
            backend="memory",
            sessions=memory.sessions,
            rate_limiter=memory.rate_limiter,
            connections=memory.connections,
            presence=memory.presence,
        )
        self._link = link
        self._where = where
        self._found = False
        self._probe = asyncio.ensure_future(self._keep_trying())

    @property
    def split(self) -> bool:
        return self._found

    async def _keep_trying(self) -> None:
        delay = AUTO_PROBE_FIRST
        while not await self._link.connect():
            await asyncio.sleep(delay)
            delay = min(AUTO_PROBE_MAX, delay * 2)
        self._found = True
        await self._link.close()
        log.warning(
            "Redis at %s answers now, but this instance started on the memory store: its "
            "clients and limits are not shared with other instances. Restart it to use "
            "Redis (or set store.backend: redis, which waits for Redis instead).",
            self._where,
        )

    async def close(self) -> None:
        self._probe.cancel()
        await self._link.close()


def memory_stores() -> Stores:
    return Stores(
        backend="memory",
        sessions=MemorySessionStore(time.time),
        rate_limiter=MemoryRateLimiter(time.monotonic),
        connections=MemoryConnectionCounter(),
        presence=MemoryPresence(time.monotonic),
    )


class RedisStores(Stores):
    """The redis backend: shared state, with per-instance fallbacks while Redis is down."""

    def __init__(
        self,
        link: RedisLink,
        keys: Keys,
        instance_id: str,
        instance_ttl: float,
    ) -> None:
        self.link = link
        self.keys = keys
        self.claim = InstanceClaim(link, keys, instance_id)
        self.connection_counter = RedisConnectionCounter(link, keys, instance_id, instance_ttl)
        super().__init__(
            backend="redis",
            sessions=RedisSessionStore(link, keys, MemorySessionStore(time.time), time.time),
            rate_limiter=RedisRateLimiter(link, keys, MemoryRateLimiter(time.monotonic)),
            connections=self.connection_counter,
            presence=RedisPresence(link, keys, MemoryPresence(time.monotonic)),
        )

    def shared_broker(self) -> Broker | None:
        if isinstance(self.link, ClusterLink):
            return ShardedRedisBroker(self.link, self.keys, None)
        return RedisBroker(self.link, self.keys, None)

    @property
    def redis_state(self) -> str | None:
        return self.link.state

    async def close(self) -> None:
        await self.connection_counter.close()
        await self.claim.release()
        await self.link.close()


async def open_stores(settings: StoreSettings, instance_id: str, metrics: Metrics) -> Stores:
    """The stores for `settings.backend`; `auto` picks redis if it answers now."""
    if settings.backend == "memory":
        return memory_stores()
    keys = Keys(settings.key_prefix)
    link: RedisLink | ClusterLink
    if settings.topology == "cluster":
        link = ClusterLink(
            settings.redis_cluster, metrics, SCRIPTS, keys.probe(), like=settings.redis_url
        )
        where = link.url
    elif settings.topology == "sentinel":
        assert settings.redis_sentinel_master is not None  # checked with the settings
        link = SentinelLink(
            settings.redis_sentinels,
            settings.redis_sentinel_master,
            metrics,
            scripts=SCRIPTS,
            probe_key=keys.probe(),
            like=settings.redis_url,
        )
        where = link.url
    else:
        link = RedisLink(settings.redis_url, metrics, SCRIPTS, keys.probe())
        where = redact(settings.redis_url)
    if await link.connect():
        log.info("using Redis at %s", where)
    elif settings.backend == "auto" and not settings.uses_redis:
        log.warning(
            "Redis at %s does not answer: using the memory store (limits per instance, "
            "no sharing between instances); still trying Redis",
            where,
        )
        return AutoMemoryStores(link, where)
    else:
        log.warning("Redis at %s does not answer: starting degraded, reconnecting", where)
    stores = RedisStores(link, keys, instance_id, settings.instance_ttl)
    link.start()
    try:
        await stores.claim.claim()
    except InstanceIdInUse:
        await link.close()
        raise
    await stores.connection_counter.start()
    return stores
