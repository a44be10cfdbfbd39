"""/metrics: what an operator watches, in Prometheus text format."""

from __future__ import annotations

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.conftest import redis_changes
from tests.support.config import merge
from tests.support.metrics import Samples, parse, sample
from tests.support.waiting import until
from tests.support.ws_client import WsClient


async def scrape(port: int) -> Samples:
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/metrics")
    assert response.headers["Content-Type"].startswith("text/plain")
    return parse(response.body.decode())


@pytest.mark.gen_test(timeout=20)
async def test_metrics_count_what_happens(servers, redis_server, key_prefix):
    server = await servers(
        merge(
            redis_changes(redis_server.url, key_prefix),
            {
                "plugins": {
                    "throttle": {"max_connections_per_ip": 2},
                    "ratelimit": {"max_messages_per_second": 0.01, "burst": 2},
                    "heartbeat": {"tiers": [{"interval": 7}]},
                }
            },
        )
    )
    a = await WsClient.connect(server.port)
    b = await WsClient.connect(server.port)
    refused = await WsClient.connect(server.port, wait_welcome=False)
    await refused.recv()
    await a.send("critical", "1")
    await a.send("status", "2")
    await a.send("normal", "3")  # over the burst: rate limited
    await a.send_raw("not json")
    await b.messages(2)
    # The last of what is counted: the two rejections, answered to the sender.
    errors = {(await a.recv_type("error"))["code"] for _ in range(2)}
    assert errors == {"rate_limited", "invalid_json"}
    await until(
        lambda: all(sample(server, "ws_messages_rejected_total", code=code) == 1 for code in errors)
    )
    m = await scrape(server.port)
    assert m[("ws_connections", ())] == 2
    assert m[("ws_connections_opened_total", ())] == 2
    assert m[("ws_connections_refused_total", (("reason", "too_many_connections"),))] == 1
    assert m[("ws_messages_received_total", (("cls", "critical"),))] == 1
    assert m[("ws_messages_delivered_total", (("cls", "critical"),))] == 2  # two recipients
    assert m[("ws_messages_delivered_total", (("cls", "status"),))] == 2
    assert m[("ws_messages_rejected_total", (("code", "rate_limited"),))] == 1
    assert m[("ws_messages_rejected_total", (("code", "invalid_json"),))] == 1
    assert m[("ws_heartbeat_interval_seconds", ())] == 7
    assert m[("ws_redis_up", ())] == 1
    assert m[("ws_delivery_latency_seconds_count", ())] == 2
    assert ("ws_queue_dropped_total", ()) in m
    assert ("ws_slow_consumer_closes_total", ()) in m
    assert ("ws_redis_reconnects_total", ()) in m
