"""The hub: this instance's connections, the channels they are in, and the fan-out of
every message to its channel's subscribers.

Messages reach the hub from the broker (locally, or through Redis). The hub gathers the
entries delivered during one IOLoop iteration into a batch and, once per batch and
channel, joins their frames and writes the result to each subscriber of that channel:
one `send` per client and channel however many messages arrived together. A message
costs work for its channel's subscribers here, not for every connection.

A connection that is still catching up on a channel's history is "joining" it: its live
entries of that channel are held and handed over, without the ones its replay already
covered, when it goes live. The broker listens to a channel in Redis only while the hub
has a subscriber in it (`subscribe` for the first, `unsubscribe` after the last).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from core.stores.broker import Broker
from core.stores.ratelimit import Spend
from core.wire.entry import Entry
from core.wire.frames import CLOSE_INTERNAL, INTERNAL_ERROR
from core.wire.ids import parse_id

if TYPE_CHECKING:
    from core.engine.connection import Connection


log = logging.getLogger("server")


class Room:
    """One channel's subscribers on this instance."""

    __slots__ = ("joining", "last_id", "ready")

    def __init__(self) -> None:
        self.ready: dict[Connection, None] = {}
        self.joining: dict[Connection, list[Entry]] = {}
        self.last_id: str | None = None  # the newest ordered id fanned out here

    def __len__(self) -> int:
        return len(self.ready) + len(self.joining)


class Hub:
    """The local registry of connections and channels, and the batched fan-out."""

    def __init__(self, broker: Broker) -> None:
        self._connections: dict[Connection, None] = {}
        self._rooms: dict[str, Room] = {}
        self._batch: list[Entry] = []
        self._flush_scheduled = False
        self.on_fanout: Callable[[list[Entry], int], None] | None = None
        self.broker = broker
        broker.attach(self.deliver)

    def use_broker(self, broker: Broker) -> None:
        """Route publishing through `broker` from now on (the broker slot changed); it
        listens to the channels that have subscribers here."""
        self.broker = broker
        broker.attach(self.deliver)
        for channel in self._rooms:
            broker.want(channel)

    def __len__(self) -> int:
        return len(self._connections)

    def connections(self) -> Iterator[Connection]:
        yield from list(self._connections)

    def channels(self) -> list[str]:
        """The channels with a subscriber here."""
        return list(self._rooms)

    def subscribers(self, channel: str) -> int:
        room = self._rooms.get(channel)
        return len(room) if room is not None else 0

    def subscriptions(self) -> int:
        return sum(len(room) for room in self._rooms.values())

    def last_id(self, channel: str) -> str | None:
        """The newest ordered id of `channel` fanned out here."""
        room = self._rooms.get(channel)
        return room.last_id if room is not None else None

    # -- membership -----------------------------------------------------------------

    def add(self, conn: Connection) -> None:
        """An admitted connection: it counts, and gets server frames (heartbeats)."""
        self._connections[conn] = None

    def remove(self, conn: Connection) -> list[str]:
        """The connection is gone: out of every channel. Returns the channels it was in;
        `conn.channels` keeps them, each with the cursor a resumed session picks up from:
        the newer of where it was caught up when it went live and the last id fanned
        out in the channel here since."""
        self._connections.pop(conn, None)
        channels = list(conn.channels)
        for channel in channels:
            room = self._rooms.get(channel)
            # One still joining has not been handed what was fanned out meanwhile: it
            # keeps the cursor it was joining from.
            if room is not None and conn in room.ready:
                conn.channels[channel] = newer(conn.channels[channel], room.last_id)
            self._drop(conn, channel)
        return channels

    async def join(self, conn: Connection, channel: str, cursor: str | None = None) -> None:
        """Start collecting `channel`'s live messages for `conn`, held until `go_live`;
        returns once the broker delivers that channel here. `cursor`: the id it recovers
        from, kept as its place in the channel should it leave before going live."""
        await self.join_all(conn, {channel: cursor})

    async def join_all(self, conn: Connection, channels: Mapping[str, str | None]) -> None:
        """`join` each of `channels` (name -> cursor), waiting for the broker once for
        all of them: a connection's welcome joins several, and a reconnect storm
        thousands of connections' at once."""
        for name, cursor in channels.items():
            # One string per channel, however many connections are in it: each
            # `subscribe` frame parsed brings its own copy of the name (about 60 bytes
            # per subscription).
            channel = sys.intern(name)
            room = self._rooms.get(channel)
            if room is None:
                room = self._rooms[channel] = Room()
            room.joining[conn] = []
            conn.channels[channel] = cursor
        await self.broker.subscribe_all(channels)

    def go_live(
        self,
        conn: Connection,
        channel: str,
        replayed_through: str | None = None,
        cursor: str | None = None,
    ) -> None:
        """Hand `conn` what arrived on `channel` while it joined (minus what its replay
        covered); from now on it gets the channel's messages as they come. `cursor`: the
        newest id of the channel it is caught up with (its place, should it leave before
        anything is fanned out here)."""
        room = self._rooms.get(channel)
        held = room.joining.pop(conn, None) if room is not None else None
        if held is None:
            return  # it left while joining
        if cursor is not None:
            conn.channels[channel] = cursor
        if replayed_through is not None and (cutoff := parse_id(replayed_through)):
            held = [e for e in held if e.key is None or e.key > cutoff]
        held = [e for e in held if e.origin is None or e.origin != conn.key]
        if held:
            conn.send_batch(b"".join(e.frame for e in held), held)
        room.ready[conn] = None

    def leave(self, conn: Connection, channel: str) -> bool:
        """`conn` leaves `channel`; False if it was not in it."""
        conn.channels.pop(channel, None)
        return self._drop(conn, channel)

    def _drop(self, conn: Connection, channel: str) -> bool:
        room = self._rooms.get(channel)
        if room is None:
            return False
        was_in = conn in room.ready or conn in room.joining
        room.ready.pop(conn, None)
        room.joining.pop(conn, None)
        if not room:
            del self._rooms[channel]
            self.broker.unsubscribe(channel)
        return was_in

    # -- messages -------------------------------------------------------------------

    def publish(
        self,
        channel: str,
        priority: int,
        tail: bytes,
        ts: float,
        cls: str,
        *,
        spend: Spend | None = None,
    ) -> asyncio.Future:
        """Send a message to `channel`'s subscribers on every instance the broker
        reaches; a future of its id (see `Broker.publish` for `spend`)."""
        return self.broker.publish(channel, priority, tail, ts, cls, spend=spend)

    def deliver(self, entry: Entry) -> None:
        """Take one entry from the broker; fan-out happens once per loop turn."""
        self._batch.append(entry)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._batch = self._batch, []
        if not batch:
            return
        if len(batch) == 1 or all(e.channel == batch[0].channel for e in batch):
            self._fan_out(batch[0].channel, batch)
            return
        by_channel: dict[str, list[Entry]] = {}
        for entry in batch:
            by_channel.setdefault(entry.channel, []).append(entry)
        for channel, entries in by_channel.items():
            self._fan_out(channel, entries)

    def _fan_out(self, channel: str, batch: list[Entry]) -> None:
        room = self._rooms.get(channel)
        if room is None:
            return
        # Presence events are not sent to the connection they are about.
        origins = {e.origin for e in batch if e.origin is not None}
        data = batch[0].frame if len(batch) == 1 else b"".join(e.frame for e in batch)
        ready = tuple(room.ready)
        for conn in ready:
            if origins and conn.key in origins:
                # Not told about itself: the rest of the batch, without that event.
                own = [e for e in batch if e.origin != conn.key]
                if own:
                    self._send(conn, b"".join(e.frame for e in own), own)
                continue
            self._send(conn, data, batch)
        for held in room.joining.values():
            held.extend(batch)
        for entry in reversed(batch):
            if entry.key is not None:
                room.last_id = entry.id
                break
        if self.on_fanout is not None:
            self.on_fanout(batch, len(ready))

    def _send(self, conn: Connection, data: bytes, batch: list[Entry]) -> None:
        try:  # free in the common case (3.11 zero-cost try)
            conn.send_batch(data, batch)
        except Exception:
            # One broken connection must not starve the others of this batch.
            log.exception("fan-out to %r failed; closing it", conn)
            self.remove(conn)
            conn.fail(
                INTERNAL_ERROR, "the server could not deliver to this connection", CLOSE_INTERNAL
            )

    def send_to_all(self, frame: bytes, priority: int) -> int:
        """Send one server frame (a heartbeat) to every connection."""
        everyone = tuple(self._connections)
        for conn in everyone:
            conn.send(frame, priority)
        return len(everyone)


def newer(a: str | None, b: str | None) -> str | None:
    """The later of two ordered ids (either may be None or not ordered: the other wins)."""
    ka = parse_id(a) if a is not None else None
    kb = parse_id(b) if b is not None else None
    if ka is None:
        return b if kb is not None else a
    if kb is None:
        return a
    return a if ka >= kb else b
