"""Chooses and builds the stores for `store.backend`."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from core.broker import Broker
from core.config import StoreSettings
from core.metrics import Metrics
from core.stores.broker_memory import MemoryBroker
from core.stores.connections import ConnectionCounter
from core.stores.connections_memory import MemoryConnectionCounter
from core.stores.ratelimit import RateLimiter
from core.stores.ratelimit_memory import MemoryRateLimiter
from core.stores.sessions import SessionStore
from core.stores.sessions_memory import MemorySessionStore

log = logging.getLogger("store")


@dataclass(frozen=True)
class LogPolicy:
    """How many recent messages the broker keeps, and for how long (seconds)."""

    size: int
    ttl: float


@dataclass
class Stores:
    """The instance's stores, all of one backend."""

    backend: str  # "memory" or "redis"
    sessions: SessionStore
    rate_limiter: RateLimiter
    connections: ConnectionCounter
    log_policy: LogPolicy

    def local_broker(self) -> Broker:
        """The broker for this instance alone."""
        return MemoryBroker(self.log_policy.size)

    def shared_broker(self, channel: str) -> Broker | None:
        """A broker reaching every instance on `channel`; None with the memory backend."""
        return None

    @property
    def redis_state(self) -> str | None:
        """ "up" / "down" with the redis backend, None with memory."""
        return None

    async def close(self) -> None:
        """Release what this instance holds in the store."""


def memory_stores(log_policy: LogPolicy) -> Stores:
    return Stores(
        backend="memory",
        sessions=MemorySessionStore(time.time),
        rate_limiter=MemoryRateLimiter(time.monotonic),
        connections=MemoryConnectionCounter(),
        log_policy=log_policy,
    )


async def open_stores(
    settings: StoreSettings, log_policy: LogPolicy, instance_id: str, metrics: Metrics
) -> Stores:
    """The stores for `settings.backend`."""
    if settings.backend == "memory":
        return memory_stores(log_policy)
    raise NotImplementedError("the redis backend is not built yet")
