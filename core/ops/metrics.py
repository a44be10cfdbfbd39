"""Prometheus metrics of one server instance, in a registry of its own.

Counters on the hot path are bumped once per batch or per message, never per
recipient socket write.
"""

from __future__ import annotations

import asyncio

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Every metric of ours is named ws_<name> (process_* come from the process collector).
NAMESPACE = "ws"


class Metrics:
    """Every metric the server exports at /metrics."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.connections = Gauge(
            "connections",
            "WebSocket connections open on this instance",
            namespace=NAMESPACE,
            registry=r,
        )
        self.connections_opened = Counter(
            "connections_opened", "WebSocket connections accepted", namespace=NAMESPACE, registry=r
        )
        self.connections_refused = Counter(
            "connections_refused",
            "WebSocket connections refused, by reason",
            ["reason"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.messages_in = Counter(
            "messages_received",
            "Valid messages received from clients",
            ["cls"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.messages_out = Counter(
            "messages_delivered",
            "Messages handed to client sockets (one per recipient)",
            ["cls"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.messages_published = Counter(
            "messages_published",
            "Messages accepted and published, by channel namespace",
            ["namespace"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.channels = Gauge(
            "channels",
            "Channels with a subscriber on this instance (each one Redis subscription)",
            namespace=NAMESPACE,
            registry=r,
        )
        self.subscriptions = Gauge(
            "subscriptions",
            "Subscriptions of this instance's connections, over all channels",
            namespace=NAMESPACE,
            registry=r,
        )
        self.presence = Gauge(
            "presence_members",
            "This instance's connections present in presence channels, over all channels",
            namespace=NAMESPACE,
            registry=r,
        )
        self.messages_rejected = Counter(
            "messages_rejected",
            "Client frames answered with an error",
            ["code"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.fanout_batches = Counter(
            "fanout_batches",
            "Fan-outs: each writes every message delivered in one loop turn with one send "
            "per client (delivered / batches / clients = messages per send)",
            namespace=NAMESPACE,
            registry=r,
        )
        self.queue_dropped = Counter(
            "queue_dropped",
            "Frames dropped from full outbound queues",
            namespace=NAMESPACE,
            registry=r,
        )
        self.slow_consumers = Counter(
            "slow_consumer_closes",
            "Connections closed for not keeping up",
            namespace=NAMESPACE,
            registry=r,
        )
        self.heartbeat_interval = Gauge(
            "heartbeat_interval_seconds",
            "Current heartbeat interval",
            namespace=NAMESPACE,
            registry=r,
        )
        self.heartbeat_timeouts = Counter(
            "heartbeat_timeouts",
            "Connections closed for not answering pings",
            namespace=NAMESPACE,
            registry=r,
        )
        self.redis_up = Gauge(
            "redis_up", "1 while Redis answers, else 0", namespace=NAMESPACE, registry=r
        )
        self.redis_reconnects = Counter(
            "redis_reconnects",
            "Times the Redis link came back after an outage",
            namespace=NAMESPACE,
            registry=r,
        )
        self.delivery_latency = Histogram(
            "delivery_latency_seconds",
            "From a message's arrival at its sender's instance to its fan-out here",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            namespace=NAMESPACE,
            registry=r,
        )
        self.hook_errors = Counter(
            "hook_errors",
            "Plugin hooks that raised",
            ["plugin", "hook"],
            namespace=NAMESPACE,
            registry=r,
        )
        # Resources, so a leak shows on a dashboard before it shows in an outage.
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_open_fds, ...
        tasks = Gauge(
            "asyncio_tasks", "asyncio tasks alive in this process", namespace=NAMESPACE, registry=r
        )
        tasks.set_function(_task_count)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _task_count() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # scraped outside the loop
        return 0
