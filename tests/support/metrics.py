"""Reading metrics the way Prometheus does: by sample name and labels, through the
public API (a registry's samples, or /metrics over HTTP), never a metric's private state.

A Counter named `ws_x` is read as its `ws_x_total` sample, a Histogram's count as
`<name>_count`, a labelled metric with its labels: `sample(server, "ws_messages_rejected_total",
code="invalid_json")`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# The samples a metric family exports besides its own name.
_SUFFIXES = ("", "_total", "_created", "_count", "_sum", "_bucket")


def sample(server: Any, name: str, **labels: str) -> float:
    """The value of sample `name` with `labels` in an in-process server's registry.

    0.0 for a labelled sample not yet created (a labelled counter appears at its first
    increment); LookupError for a name no metric of the registry exports, so that a typo
    cannot pass for a zero.
    """
    registry = server.metrics.registry
    value = registry.get_sample_value(name, labels)
    if value is not None:
        return value
    if labels and any(name == f.name + s for f in registry.collect() for s in _SUFFIXES):
        return 0.0
    raise LookupError(f"no sample {name}{labels or ''} in the registry")


def parse(text: str) -> Samples:
    """Prometheus text format -> {(sample name, sorted labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(port: int) -> Samples:
    """Every sample of `GET /metrics` on `port` (a server process or an in-process one)."""
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/metrics")
    return parse(response.body.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample of a scrape; KeyError if it is not there."""
    return samples[(name, tuple(sorted(labels.items())))]
