"""Python's cyclic garbage collector, tuned for a server that holds many connections.

CPython runs a young collection every 700 new container objects, and now and then an
older one that walks every object it tracks. A server with thousands of clients holds
hundreds of thousands of long-lived objects (handlers, streams, channel and session
state), and a burst of work (a reconnect storm: each handshake allocates a few hundred
objects) sets off collections that walk them again and again: about a fifth of the
server's CPU in bench `reconnect-storm`. So, once the instance has started:

- `gc.freeze()`: what start-up built (modules, configuration, plugins, scripts) is
  never walked again;
- a young collection every `YOUNG` new objects instead of 700, the older generations
  as often relative to it as before.

Garbage in reference cycles is still collected, only later (bounded by `YOUNG`
objects); everything else is freed at once by reference counting, as always.
"""

from __future__ import annotations

import gc

YOUNG = 10_000
THRESHOLDS = (YOUNG, 10, 10)


def tune() -> tuple[int, int, int]:
    """Freeze every object that exists now and set `THRESHOLDS`; returns the
    thresholds that were in force."""
    previous = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    return previous
