"""Prometheus metrics of one server instance, in a registry of its own.

Counters on the hot path are bumped once per batch or per message, never per
recipient socket write.

The workers of `server.workers: N` share their metrics through prometheus_client's
multiprocess mode: the supervisor gives every worker one directory
(`PROMETHEUS_MULTIPROC_DIR`), each worker writes its values there, and /metrics on any
of them reads them all (`MultiProcessCollector`). Counters and histograms are summed
over the workers, dead ones included (so they never go backwards when a worker is
restarted); each gauge says how it combines (`multiprocess_mode`), and a dead worker's
gauges are dropped (`forget_process`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Every metric of ours is named ws_<name> (process_* come from the process collector).
NAMESPACE = "ws"
# prometheus_client reads it when it is imported, to decide where values live: in the
# process, or in files of this directory that every worker of one server writes.
SHARED_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


class Labelled:
    """A labelled metric's children by label value, looked up once each: `labels()`
    takes a lock and builds a key on every call, and the hot path counts per message.
    The values are few (message classes, channel namespaces: both from the config)."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Counter) -> None:
        self._metric = metric
        self._children: dict[str, Counter] = {}

    def __call__(self, value: str) -> Counter:
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = self._metric.labels(value)
        return child


class SampledGauge(Gauge):
    """A Gauge whose `set_function` also works across workers.

    In multiprocess mode prometheus_client only exports what was written to the shared
    files, never a function; there the function is read by `sample()` (which
    `Metrics.refresh` calls) and its value written like `set()`.
    """

    shared = False  # True in multiprocess mode
    _function: Callable[[], float] | None = None

    def set_function(self, f: Callable[[], float]) -> None:
        self._function = f
        if not self.shared:
            super().set_function(f)

    def sample(self) -> None:
        """Write the function's current value (multiprocess mode only)."""
        if self.shared and self._function is not None:
            self.set(self._function())


class Metrics:
    """Every metric the server exports at /metrics."""

    def __init__(self) -> None:
        # The same switch prometheus_client made when it was imported: values live in
        # this process, or in the files of this directory, shared by the workers.
        self.shared_dir = os.environ.get(SHARED_DIR_VARIABLE) or None
        r = self.registry = CollectorRegistry()
        # How each gauge combines over workers: `livesum` adds the live workers' values;
        # `livemin` is 0 if any worker's is; `liveall` keeps one series per worker
        # (label `pid`).
        self.connections = Gauge(
            "connections",
            "WebSocket connections open on this instance",
            namespace=NAMESPACE,
            registry=r,
            multiprocess_mode="livesum",
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
        # The per-message counters' children, by class or namespace.
        self.received = Labelled(self.messages_in)
        self.delivered = Labelled(self.messages_out)
        self.published = Labelled(self.messages_published)
        self.channels = SampledGauge(
            "channels",
            "Channels with a subscriber on this instance (each one Redis subscription)",
            namespace=NAMESPACE,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.subscriptions = SampledGauge(
            "subscriptions",
            "Subscriptions of this instance's connections, over all channels",
            namespace=NAMESPACE,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.presence = SampledGauge(
            "presence_members",
            "This instance's connections present in presence channels, over all channels",
            namespace=NAMESPACE,
            registry=r,
            multiprocess_mode="livesum",
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
            multiprocess_mode="liveall",  # each worker picks its tier by its own clients
        )
        self.heartbeat_timeouts = Counter(
            "heartbeat_timeouts",
            "Connections closed for not answering pings",
            namespace=NAMESPACE,
            registry=r,
        )
        self.redis_up = Gauge(
            "redis_up",
            "1 while Redis answers, else 0",
            namespace=NAMESPACE,
            registry=r,
            multiprocess_mode="livemin",
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
        # Resources, so a leak shows on a dashboard before it shows in an outage:
        # process_resident_memory_bytes, process_open_fds, ...
        self.process = ProcessCollector(registry=None if self.shared_dir else r)
        if self.shared_dir is None:
            # python_gc_collections_total{generation}: how often the collector runs (see
            # relay/collector.py, which makes that rarer). Per process: not with workers.
            GCCollector(registry=r)
        self.process_gauges: dict[str, Gauge] = {}
        self.sampled = [self.channels, self.subscriptions, self.presence]
        tasks = SampledGauge(
            "asyncio_tasks",
            "asyncio tasks alive in this process",
            namespace=NAMESPACE,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.sampled.append(tasks)
        for gauge in self.sampled:
            gauge.shared = self.shared_dir is not None
        tasks.set_function(_task_count)

    def refresh(self) -> None:
        """Write what is read at scrape time in one process (function gauges, process_*)
        to the shared files; a worker calls it every second, and at each scrape."""
        if self.shared_dir is None:
            return
        for gauge in self.sampled:
            gauge.sample()
        # The process collector reads /proc of the process it runs in, so each worker
        # copies its own into gauges of the same names, one series per worker.
        for family in self.process.collect():
            for sample in family.samples:
                gauge = self.process_gauges.get(sample.name)
                if gauge is None:
                    gauge = self.process_gauges[sample.name] = Gauge(
                        sample.name,
                        family.documentation,
                        registry=None,
                        multiprocess_mode="liveall",
                    )
                gauge.set(sample.value)

    def render(self) -> bytes:
        """The Prometheus text of this instance, or of every worker sharing its files."""
        if self.shared_dir is None:
            return generate_latest(self.registry)
        self.refresh()
        workers = CollectorRegistry()
        MultiProcessCollector(workers, path=self.shared_dir)
        return generate_latest(workers)


def forget_process(shared_dir: str, pid: int) -> None:
    """Drop the gauges of a worker that has exited (its counters keep counting in the
    totals)."""
    mark_process_dead(pid, shared_dir)


def _task_count() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # scraped outside the loop
        return 0
