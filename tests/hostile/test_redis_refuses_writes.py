"""Finding 5 of the hostile review: a Redis that answers but refuses writes looked healthy.

With maxmemory reached (noeviction), every new connection was refused and every message
dropped with `internal_error`, `/healthz` said "ok", a traceback was logged per event,
and clients that left meanwhile leaked their per-IP slots for good. READONLY (a replica)
and MISCONF took the same path. Now a write refusal is an outage like Redis being down:
degraded, local delivery, one log line, and the counts written back when it is over.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import redis_changes
from tests.support.config import merge
from tests.support.ports import free_port
from tests.support.redis_counts import address_counts
from tests.support.waiting import until
from tests.support.ws_client import WsClient


def refuse_writes(client, how: str) -> None:
    if how == "OOM":
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)  # below what it already uses: no write fits
    else:
        client.execute_command("REPLICAOF", "127.0.0.1", free_port())  # a master never met


def take_writes(client, how: str) -> None:
    if how == "OOM":
        client.config_set("maxmemory", 0)
    else:
        client.execute_command("REPLICAOF", "NO", "ONE")


@pytest.mark.parametrize("how", ["OOM", "READONLY"])
@pytest.mark.gen_test(timeout=60)
async def test_a_redis_refusing_writes_is_an_outage_and_leaks_no_slot(
    processes, own_redis, key_prefix, how
):
    config = merge(
        redis_changes(own_redis.url, key_prefix),
        {"logging": {"level": "info"}, "plugins": {"throttle": {"max_connections_per_ip": 5}}},
    )
    server = processes(config, "refused")
    r = own_redis.client()
    a1, a2 = await WsClient.connect(server.port), await WsClient.connect(server.port)
    leaving = [await WsClient.connect(server.port) for _ in range(3)]
    assert address_counts(r, key_prefix, "127.0.0.1") == {"refused": 5}

    refuse_writes(r, how)
    started = time.monotonic()
    status, health = await until(lambda: (h := server.health())[1]["status"] == "degraded" and h)
    to_degraded = time.monotonic() - started
    assert status == 200 and health["redis"] == "down"
    # Local delivery goes on, nothing refused.
    for i in range(20):
        await a1.send("normal", f"local {i}")
    assert [f["content"] for f in await a2.messages(20)] == [f"local {i}" for i in range(20)]
    for client in leaving:  # these leave while Redis cannot be told
        client.close()
    await until(lambda: server.health()[1]["connections"] == 2)
    newcomer = await WsClient.connect(server.port)
    assert newcomer.welcome["type"] == "welcome"
    log = server.log()
    lines = [x for x in log.splitlines() if "refuses writes" in x]
    assert len(lines) == 1 and "Traceback" not in log and "internal_error" not in log

    take_writes(r, how)
    await until(lambda: server.health()[1]["status"] == "ok", timeout=10)
    # The counts were written back from the instance's own: the three that left
    # during the outage hold nothing.
    await until(lambda: address_counts(r, key_prefix, "127.0.0.1") == {"refused": 3})
    four = await WsClient.connect(server.port)
    five = await WsClient.connect(server.port)
    sixth = await WsClient.connect(server.port, wait_welcome=False)
    assert (await sixth.recv())["code"] == "too_many_connections"
    assert four.welcome and five.welcome and four.close_code is None
    print(
        f"Redis {how}: degraded after {to_degraded:.1f} s, 20/20 delivered locally, "
        f"{len(lines)} log line, 0 tracebacks; after recovery the per-IP count is 3 "
        "(the 3 that left meanwhile released)"
    )


def test_every_kind_of_write_refusal_is_recognised():
    from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

    from core.stores.redis_link import is_write_refusal

    assert is_write_refusal(OutOfMemoryError("command not allowed when used memory > ..."))
    assert is_write_refusal(ReadOnlyError("You can't write against a read only replica."))
    assert is_write_refusal(ResponseError("MISCONF Redis is configured to save RDB snapshots"))
    assert not is_write_refusal(ResponseError("WRONGTYPE Operation against a key"))
    assert not is_write_refusal(ResponseError("NOSCRIPT No matching script"))
