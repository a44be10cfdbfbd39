"""The link to a Redis whose master Sentinel names (`store.redis_sentinels`).

Everything RedisLink does (one auto-pipelined command connection, the write probe, the
fallback while down, reconnection with backoff, scripts loaded on every connect), with
connections that ask the sentinels for the current master each time one is made. A
failover is an outage like any other: the old master's connection fails (killed), goes
silent (frozen: the probe times out) or answers READONLY (demoted), the link is down,
and its next connection is made to the master the sentinels promoted; the scripts are
loaded there and what changed meanwhile is written back.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio.connection import ConnectionPool
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.connection import parse_url

from core.ops.metrics import Metrics
from core.stores.redis_link import CONNECTION_OPTIONS, RedisLink

# A sentinel that does not answer within this is skipped for the next one.
SENTINEL_TIMEOUT = 0.5


def parse_address(address: str) -> tuple[str, int]:
    """("host", port) of a validated "host:port" entry."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class SentinelLink(RedisLink):
    """A RedisLink to whichever Redis the sentinels say is master `master`."""

    def __init__(
        self,
        sentinels: Sequence[str],
        master: str,
        metrics: Metrics,
        *,
        scripts: Sequence[str] = (),
        probe_key: str = "relay:probe",
        like: str = "redis://",
    ) -> None:
        self.master = master
        # Credentials and TLS for the master (from store.redis_url; its address unused).
        given = parse_url(like)
        self.credentials = {k: given[k] for k in ("username", "password") if given.get(k)}
        if like.startswith("rediss://"):
            self.credentials["ssl"] = True
        self.sentinel = Sentinel(
            [parse_address(a) for a in sentinels],
            sentinel_kwargs={
                "socket_timeout": SENTINEL_TIMEOUT,
                "socket_connect_timeout": SENTINEL_TIMEOUT,
            },
        )
        # For logs: which master, and whom it is asked of.
        description = f"sentinel master {master} via {','.join(sentinels)}"
        super().__init__(description, metrics, scripts, probe_key)

    def _make_pool(self) -> ConnectionPool:
        return SentinelConnectionPool(
            self.master,
            self.sentinel,
            # No PING on connect: the link's first command is its write probe, which a
            # master just demoted answers with READONLY (the pool turns that into a
            # connection error, and the next connection asks the sentinels again).
            **CONNECTION_OPTIONS,
            **self.credentials,
        )

    async def close(self) -> None:
        await super().close()
        for client in self.sentinel.sentinels:
            await client.aclose()
