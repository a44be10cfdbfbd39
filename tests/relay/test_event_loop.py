"""The event loop: uvloop by default where installed, asyncio's own on request or where
it is missing."""

from __future__ import annotations

import sys

import pytest

from relay import event_loop


def test_auto_is_uvloop_where_it_is_installed_and_asyncio_is_asyncio():
    assert event_loop.resolve("auto") == "uvloop"
    assert event_loop.resolve("uvloop") == "uvloop"
    assert event_loop.resolve("asyncio") == "asyncio"


def test_without_uvloop_auto_falls_back_and_asking_for_it_is_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed
    assert event_loop.resolve("auto") == "asyncio"
    with pytest.raises(event_loop.LoopUnavailable, match="uvloop is not installed"):
        event_loop.resolve("uvloop")


@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_run_runs_on_the_loop_asked_for(kind):
    async def which() -> str:
        return event_loop.loop_name()

    assert event_loop.run(which(), kind) == kind
