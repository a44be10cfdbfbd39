"""Waiting for conditions in tests: poll, never sleep a fixed time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tests.support.timing import scaled

T = TypeVar("T")


async def until(condition: Callable[[], T], timeout: float = 5.0, step: float = 0.01) -> T:
    """The first truthy value of `condition()`, polled every `step` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scaled(timeout)
    while True:
        result = condition()
        if result:
            return result
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)


async def connections_settle(server: Any, count: int = 0, timeout: float = 3.0) -> None:
    """Wait until an in-process instance holds `count` connections and its close hooks
    (which run right after) have finished."""
    await until(lambda: len(server.hub) == count, timeout)
    await asyncio.wait_for(server.dispatcher.closed(), scaled(timeout))


async def until_async(
    condition: Callable[[], Awaitable[T]], timeout: float = 5.0, step: float = 0.01
) -> T:
    """`until` for a condition that must be awaited (a request, a Redis call): the first
    truthy result, awaited every `step` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scaled(timeout)
    while True:
        result = await condition()
        if result:
            return result
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)
