"""The hub: this instance's connections and the fan-out of every message to them.

Messages reach the hub from the broker (locally, or through Redis). The hub gathers the
entries delivered during one IOLoop iteration into a batch and, once per batch, joins
their frames and writes the result to each connection: one `send` per client however
many messages arrived together. A connection that is still catching up on history is
"joining": its live entries are held and handed over, without the ones its replay
already covered, when it goes live.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from core.stores.broker import Broker
from core.wire.entry import Entry
from core.wire.frames import CLOSE_INTERNAL, INTERNAL_ERROR
from core.wire.ids import parse_id

if TYPE_CHECKING:
    from core.engine.connection import Connection


log = logging.getLogger("server")


class Hub:
    """The local registry of connections and the batched fan-out to them."""

    def __init__(self, broker: Broker) -> None:
        self._ready: dict[Connection, None] = {}
        self._joining: dict[Connection, list[Entry]] = {}
        self._batch: list[Entry] = []
        self._flush_scheduled = False
        self.last_id: str | None = None  # the newest ordered id fanned out here
        self.on_fanout: Callable[[list[Entry], int], None] | None = None
        self.broker = broker
        broker.attach(self.deliver)

    def use_broker(self, broker: Broker) -> None:
        """Route publishing through `broker` from now on (the broker slot changed)."""
        self.broker = broker
        broker.attach(self.deliver)

    def __len__(self) -> int:
        return len(self._ready) + len(self._joining)

    def connections(self) -> Iterator[Connection]:
        yield from list(self._ready)
        yield from list(self._joining)

    # -- membership -----------------------------------------------------------------

    def join(self, conn: Connection) -> None:
        """Start collecting live messages for `conn`, held until `go_live`."""
        self._joining[conn] = []

    def go_live(self, conn: Connection, replayed_through: str | None = None) -> None:
        """Hand `conn` what arrived while it joined (minus what its replay covered)."""
        held = self._joining.pop(conn, None)
        if held is None:
            return  # it left while joining
        if replayed_through is not None and (cutoff := parse_id(replayed_through)):
            held = [e for e in held if e.key is None or e.key > cutoff]
        if held:
            conn.send_batch(b"".join(e.frame for e in held), held)
        self._ready[conn] = None

    def leave(self, conn: Connection) -> None:
        self._ready.pop(conn, None)
        self._joining.pop(conn, None)

    # -- messages -------------------------------------------------------------------

    def publish(self, priority: int, tail: bytes, ts: float, cls: str) -> None:
        """Send a message to every client of every instance the broker reaches."""
        self.broker.publish(priority, tail, ts, cls)

    def deliver(self, entry: Entry) -> None:
        """Take one ordered entry from the broker; fan-out happens once per loop turn."""
        self._batch.append(entry)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._batch = self._batch, []
        if not batch:
            return
        data = batch[0].frame if len(batch) == 1 else b"".join(e.frame for e in batch)
        ready = tuple(self._ready)
        for conn in ready:
            try:  # free in the common case (3.11 zero-cost try)
                conn.send_batch(data, batch)
            except Exception:
                # One broken connection must not starve the others of this batch.
                log.exception("fan-out to %r failed; closing it", conn)
                self.leave(conn)
                conn.fail(
                    INTERNAL_ERROR,
                    "the server could not deliver to this connection",
                    CLOSE_INTERNAL,
                )
        for held in self._joining.values():
            held.extend(batch)
        for entry in reversed(batch):
            if entry.key is not None:
                self.last_id = entry.id
                break
        if self.on_fanout is not None:
            self.on_fanout(batch, len(ready))

    def send_to_all(self, frame: bytes, priority: int) -> int:
        """Send one server frame (a heartbeat) to every live connection."""
        ready = tuple(self._ready)
        for conn in ready:
            conn.send(frame, priority)
        return len(ready)
