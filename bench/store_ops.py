"""Store operations against a private redis-server: rate-limit checks and connection
slots per second, as the server issues them (`python -m bench.store_ops`).

Redis is pinned to the server core, this process to the load core. Two shapes:
one check at a time (the latency of a round trip), and many in flight from many
sessions (what a busy instance does: the link pipelines them into one round trip).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from bench.servers import LOAD_CPU, Redis, can_pin
from core.ops.metrics import Metrics
from core.stores.connections_redis import RedisConnectionCounter
from core.stores.factory import SCRIPTS
from core.stores.keys import Keys
from core.stores.ratelimit import Bucket
from core.stores.ratelimit_memory import MemoryRateLimiter
from core.stores.ratelimit_redis import RedisRateLimiter
from core.stores.redis_link import RedisLink


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def sequential(limiter: RedisRateLimiter, seconds: float) -> dict:
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        await limiter.take("one-session", [Bucket("", 1e9, 10**9)])
        latencies.append(time.perf_counter() - start)
    latencies.sort()
    return {
        "checks_per_s": len(latencies) / seconds,
        "p50_us": 1e6 * statistics.median(latencies),
        "p99_us": 1e6 * latencies[int(0.99 * (len(latencies) - 1))],
    }


async def concurrent(op, in_flight: int, seconds: float) -> dict:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await op(i)
            done += 1

    cpu0 = cpu_seconds()
    await asyncio.gather(*(worker(i) for i in range(in_flight)))
    cpu = cpu_seconds() - cpu0
    return {"per_s": done / seconds, "client_cpu_us_per_op": 1e6 * cpu / max(done, 1)}


async def main(seconds: float) -> None:
    if can_pin():
        os.sched_setaffinity(0, {LOAD_CPU})
    with tempfile.TemporaryDirectory() as tmp:
        redis = Redis(Path(tmp)).start()
        try:
            link = RedisLink(redis.url, Metrics(), SCRIPTS)
            assert await link.connect()
            keys = Keys("bench:")
            limiter = RedisRateLimiter(link, keys, MemoryRateLimiter())
            counter = RedisConnectionCounter(link, keys, "bench-instance")
            await counter.start()
            await sequential(limiter, 0.5)  # warm up
            one = await sequential(limiter, seconds)
            many = await concurrent(
                lambda i: limiter.take(f"s{i}", [Bucket("", 1e9, 10**9)]), 100, seconds
            )

            async def slot(i: int) -> None:
                if await counter.acquire(f"10.0.{i // 250}.{i % 250}", 10**6):
                    counter.release(f"10.0.{i // 250}.{i % 250}")

            slots = await concurrent(slot, 100, seconds)
            print(
                f"rate-limit checks, one at a time: {one['checks_per_s']:,.0f}/s "
                f"(round trip p50 {one['p50_us']:.0f} us, p99 {one['p99_us']:.0f} us)"
            )
            print(
                f"rate-limit checks, 100 sessions in flight: {many['per_s']:,.0f}/s "
                f"({many['client_cpu_us_per_op']:.1f} us of our CPU per check)"
            )
            print(f"connection slots (acquire + release), 100 in flight: {slots['per_s']:,.0f}/s")
            await counter.close()
            await link.close()
        finally:
            redis.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    asyncio.run(main(parser.parse_args().seconds))
