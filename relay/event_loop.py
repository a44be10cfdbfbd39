"""Which asyncio event loop the server runs on (`server.event_loop`).

uvloop (libuv underneath) runs Tornado unchanged and measured faster on every figure of
the bench (docs/benchmarks.md, "Event loop"), so `auto` takes it where it is installed.
asyncio's own loop is the fallback: on a platform uvloop does not support, or when the
operator asks for it (`asyncio`), for instance to rule the loop out while debugging.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopUnavailable(Exception):
    """`server.event_loop: uvloop` where uvloop is not installed."""


def resolve(choice: str) -> str:
    """The loop `choice` means here: "uvloop" or "asyncio"."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        installed = False
    else:
        installed = True
    if choice == "uvloop" and not installed:
        raise LoopUnavailable(
            "server.event_loop: uvloop is not installed (pip install uvloop, or use auto)"
        )
    if choice == "asyncio" or not installed:
        return "asyncio"
    return "uvloop"


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A new-loop function for `name` (as `resolve` gives it)."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], name: str) -> T:
    """Run `main` to completion on a new loop of kind `name`."""
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        return runner.run(main)


def loop_name() -> str:
    """The kind of the running loop, for the start-up log: "uvloop" or "asyncio"."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
