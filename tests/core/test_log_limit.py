"""Repeating failures are logged once per kind per window, with a count of the rest."""

from __future__ import annotations

from core.ops.log_limit import LogLimit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_kind_per_window_then_the_count_of_what_was_held_back():
    clock = Clock()
    limit = LogLimit(every=10, clock=clock)
    assert limit.allow("down") == ""
    assert [limit.allow("down") for _ in range(5)] == [None] * 5
    assert limit.allow("back") == ""  # another kind has its own window
    clock.now += 10
    assert limit.allow("down") == " (and 5 more like it in the last 10s)"
    assert limit.allow("down") is None
    clock.now += 30
    assert limit.allow("down") == " (and 1 more like it in the last 10s)"
