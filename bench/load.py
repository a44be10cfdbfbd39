"""Load shapes: numbered broadcasts, who received what, and the senders that drive them.

A `Broadcast` follows one sender's numbered messages to a set of receivers. Receivers
report each read's worth of message frames (`sink`); since one sender's messages arrive
in order, a read that ends with message `m` after message `p` must hold exactly `m - p`
messages: anything else is a lost, duplicated or reordered message, and the run fails.

Before any load, `sync` makes sure every receiver is really subscribed: a server may
answer the upgrade a moment before it adds the connection to its broadcast set.

`Rooms` is the many-rooms shape (our server's channels): connections in several rooms
each (`assign_rooms`), numbered messages published into rooms, and every delivery
checked: the right room, a member of it, once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence

from bench.clients import CONTENT_KEY, SENDER_DIGITS, SEQ_DIGITS, Conn, MessageMaker, seq_of

SYNC_SENDER = 999_999  # the sender number of sync probes
SYNC_TIMEOUT = 15.0
SYNC_RESEND = 0.5

perf = time.perf_counter


class RunFailed(Exception):
    """A server did not do what the scenario needs (lost messages, dropped clients...)."""


class Broadcast:
    """One sender's numbered messages and how far each receiver has got."""

    def __init__(self, receivers: int, groups: int = 0) -> None:
        self.receivers = receivers  # connections that must get every message
        self.sent_at: list[float] = []  # by sequence number
        self.remaining: list[int] = []  # receivers still missing each message
        self.strict = False  # after sync: every message to every receiver, in order
        self.delivered = 0  # message frames received, all receivers
        self.completed = 0  # messages every receiver has
        self.measure_from: int | None = None  # sequence numbers whose timing is kept
        self.measure_to: int | None = None
        self.completions: list[float] = []  # send -> last receiver, seconds
        # Per-delivery latencies by receiver group (cross-instance), when wanted.
        self.latencies: list[list[float]] | None = [[] for _ in range(groups)] if groups else None
        self.on_complete: Callable[[int], None] | None = None
        self.failure: str | None = None

    @property
    def next_seq(self) -> int:
        return len(self.sent_at)

    def sent(self, at: float | None = None) -> int:
        """Register the next message as sent `at` (default now); returns its number."""
        self.sent_at.append(perf() if at is None else at)
        self.remaining.append(self.receivers)
        return len(self.sent_at) - 1

    def measuring(self, on: bool) -> None:
        if on:
            self.measure_from = self.next_seq
        else:
            self.measure_to = self.next_seq

    def _measured(self, seq: int) -> bool:
        return (
            self.measure_from is not None
            and seq >= self.measure_from
            and (self.measure_to is None or seq < self.measure_to)
        )

    def sink(self, conn: Conn, buf: bytes, first: int, last: int, end: int) -> None:
        count = conn.batch
        seq = seq_of(buf, last, end)
        previous = conn.upto
        conn.upto = seq
        self.delivered += count
        if not self.strict:
            return
        if seq - previous != count:
            self._fail(
                f"a receiver got {count} message(s) ending with #{seq} right after #{previous}: "
                "messages lost, duplicated or out of order"
            )
            return
        now = perf()
        remaining = self.remaining
        sent_at = self.sent_at
        latencies = self.latencies
        if latencies is not None:
            samples = latencies[conn.group]
            for k in range(previous + 1, seq + 1):
                if self._measured(k):
                    samples.append(now - sent_at[k])
        for k in range(previous + 1, seq + 1):
            left = remaining[k] - 1
            remaining[k] = left
            if not left:
                self.completed += 1
                if self._measured(k):
                    self.completions.append(now - sent_at[k])
                if self.on_complete is not None:
                    self.on_complete(k)

    def _fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why

    def all_complete(self) -> bool:
        return not self.remaining or self.remaining[-1] <= 0

    def check(self) -> None:
        if self.failure is not None:
            raise RunFailed(self.failure)


def track_upto(conn: Conn, buf: bytes, first: int, last: int, end: int) -> None:
    """A sink that only notes the last sequence number (receivers nobody waits for)."""
    conn.upto = seq_of(buf, last, end)


def check_connections(conns: Sequence[Conn], what: str = "client") -> None:
    """Fail if any connection was closed, broke the protocol, or got an error frame."""
    for conn in conns:
        if conn.errors:
            raise RunFailed(f"a {what} got: {conn.errors[0]}")
        if conn.lost and not conn.closing:
            code = f" (close code {conn.close_code})" if conn.close_code else ""
            raise RunFailed(f"the server dropped a {what}{code}")


async def sync(sender: Conn, maker: MessageMaker, receivers: Sequence[Conn], stream) -> None:
    """Send numbered probes until every receiver has received one; afterwards every
    receiver must get every message. `stream` numbers the probes (a `Broadcast`)."""
    probe_maker = MessageMaker(maker.dialect, SYNC_SENDER, maker.size)
    deadline = perf() + SYNC_TIMEOUT
    while True:
        seq = stream.sent()
        sender.send(probe_maker.frame(seq))
        resend_at = perf() + SYNC_RESEND
        while perf() < resend_at:
            await asyncio.sleep(0.01)
            check_connections([*receivers, sender])
            if all(r.upto >= seq for r in receivers):
                stream.strict = True
                return
        if perf() > deadline:
            missing = sum(1 for r in receivers if r.upto < seq)
            raise RunFailed(f"{missing} of {len(receivers)} receivers never got a message")


async def wait_until(
    done: Callable[[], bool], timeout: float, why: Callable[[], str], check=None
) -> None:
    """Poll `done` every 10 ms; fail with `why()` after `timeout` seconds."""
    deadline = perf() + timeout
    while not done():
        if check is not None:
            check()
        if perf() > deadline:
            raise RunFailed(why())
        await asyncio.sleep(0.01)


class WindowSender:
    """Keeps `window` messages in flight: message i + window goes out once every
    receiver has message i. Every server is driven at its own saturation point, and
    nothing queues without bound."""

    def __init__(self, conn: Conn, maker: MessageMaker, stream: Broadcast, window: int) -> None:
        self.conn = conn
        self.maker = maker
        self.stream = stream
        self.window = window
        self.running = False
        stream.on_complete = self._completed

    def start(self) -> None:
        self.running = True
        for _ in range(self.window):
            self._send()

    def stop(self) -> None:
        self.running = False

    def _completed(self, seq: int) -> None:
        if self.running:
            self._send()

    def _send(self) -> None:
        seq = self.stream.sent()
        self.conn.send(self.maker.frame(seq))


class RateSender:
    """Sends at a fixed rate whatever happens (open loop). Latency is measured from the
    time each message was due, so a late sender cannot hide a slow server."""

    def __init__(self, conn: Conn, maker: MessageMaker, stream: Broadcast, rate: float) -> None:
        self.conn = conn
        self.maker = maker
        self.stream = stream
        self.interval = 1.0 / rate
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        due = perf()
        while True:
            now = perf()
            # Behind schedule, catch up, but let the receivers run between sends.
            await asyncio.sleep(due - now if now < due else 0)
            seq = self.stream.sent(due)
            self.conn.send(self.maker.frame(seq))
            due += self.interval


# -- many rooms ---------------------------------------------------------------------------


def assign_rooms(n: int, per_conn: int, size: int, seed: int = 0) -> list[list[int]]:
    """The rooms of each of `n` connections: `per_conn` rooms each, every room with
    `size` members (`size` + 1 for some if `n` is not a multiple). The rooms are dealt
    in `per_conn` layers of n // size rooms: in each layer the connections, shuffled,
    are dealt round the layer's rooms; so a connection's rooms are distinct, and two
    rooms share members only at random."""
    per_layer = max(1, n // size)
    rng = random.Random(seed)
    rooms: list[list[int]] = [[] for _ in range(n)]
    order = list(range(n))
    for layer in range(per_conn):
        rng.shuffle(order)
        for position, i in enumerate(order):
            rooms[i].append(layer * per_layer + position % per_layer)
    return rooms


def room_name(label: str, room: int) -> str:
    return f"room:{label}-{room}"


MESSAGE_HEAD = b'{"type":"message","id"'
CHANNEL_KEY = b'"channel":"'


class Rooms:
    """Numbered messages published into rooms, and every delivery checked.

    Each message is tracked with the set of the room's members still to get it (the
    sender included: it is a member). Each delivery must name a room of the receiver
    (`"channel"`), carry a message published into that room, and be the first of that
    message to that receiver: anything else (a lost, duplicated or misrouted message)
    fails the run."""

    def __init__(self, rooms_of: Sequence[Sequence[int]], label: str) -> None:
        self.rooms_of = rooms_of  # by connection (its `group`)
        count = 1 + max((r for mine in rooms_of for r in mine), default=-1)
        members: list[list[int]] = [[] for _ in range(count)]
        for i, mine in enumerate(rooms_of):
            for r in mine:
                members[r].append(i)
        self.members = [frozenset(m) for m in members]
        self.names = [room_name(label, r) for r in range(count)]
        self.index = {name.encode(): r for r, name in enumerate(self.names)}
        self.room_of: list[int] = []  # by sequence number
        self.sent_at: list[float] = []
        self.remaining: list[set[int]] = []
        self.delivered = 0
        self.completed = 0
        self.measuring = False
        self.completions: list[float] = []
        self.on_complete: Callable[[int], None] | None = None
        self.failure: str | None = None

    @property
    def next_seq(self) -> int:
        return len(self.sent_at)

    def sent(self, room: int) -> int:
        """Register the next message, into `room`, as sent now; returns its number."""
        self.room_of.append(room)
        self.sent_at.append(perf())
        self.remaining.append(set(self.members[room]))
        return len(self.sent_at) - 1

    def sink(self, conn: Conn, buf: bytes, first: int, last: int, end: int) -> None:
        i = conn.group
        room_of = self.room_of
        remaining = self.remaining
        pos = first
        found = 0
        while (at := buf.find(MESSAGE_HEAD, pos, end)) >= 0:
            c = buf.find(CHANNEL_KEY, at, end)
            if c < 0:
                self._fail(f"receiver #{i} got a message without a channel: {buf[at:end][:200]!r}")
                return
            c += len(CHANNEL_KEY)
            c_end = buf.find(b'"', c, end)
            k = buf.find(CONTENT_KEY, c_end, end) + len(CONTENT_KEY) + SENDER_DIGITS
            pos = k + SEQ_DIGITS
            seq = int(buf[k:pos])
            found += 1
            room = self.index.get(buf[c:c_end])
            if seq >= len(room_of) or room != room_of[seq]:
                self._fail(
                    f"receiver #{i} got message #{seq} on channel "
                    f"{buf[c:c_end].decode(errors='replace')!r}, but it was published into "
                    f"{self._room_text(seq)}"
                )
                return
            left = remaining[seq]
            if i not in left:
                why = "a second time" if i in self.members[room] else "but is not in that room"
                self._fail(
                    f"receiver #{i} got message #{seq} of {self.names[room]} {why} "
                    f"(its rooms: {[self.names[r] for r in self.rooms_of[i]]})"
                )
                return
            left.remove(i)
            if not left:
                self.completed += 1
                if self.measuring:
                    self.completions.append(perf() - self.sent_at[seq])
                if self.on_complete is not None:
                    self.on_complete(seq)
        self.delivered += found
        if found != conn.batch:
            self._fail(f"receiver #{i} got {conn.batch} message frames, {found} of them readable")

    def _room_text(self, seq: int) -> str:
        if seq >= len(self.room_of):
            return "no room (never sent)"
        return self.names[self.room_of[seq]]

    def _fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why

    def all_complete(self) -> bool:
        return self.completed == self.next_seq

    def missing(self) -> str:
        short = [seq for seq, left in enumerate(self.remaining) if left]
        if not short:
            return "every message complete"
        seq = short[0]
        return (
            f"{len(short)} of {self.next_seq} messages did not reach every member of their "
            f"room (first: #{seq} into {self.names[self.room_of[seq]]}, missing at receivers "
            f"{sorted(self.remaining[seq])[:5]})"
        )

    def check(self) -> None:
        if self.failure is not None:
            raise RunFailed(self.failure)


class RoomSender:
    """Keeps `window` messages in flight, each into a random room of a random publisher
    (a member of it: a room takes messages from its subscribers only); the next goes
    out once one is complete, as `WindowSender` does for one room."""

    def __init__(
        self,
        rooms: Rooms,
        publishers: Sequence[tuple[Conn, MessageMaker]],
        window: int,
        seed: int = 1,
    ) -> None:
        self.rooms = rooms
        self.publishers = publishers
        self.window = window
        self.rng = random.Random(seed)
        self.running = False
        rooms.on_complete = self._completed

    def start(self) -> None:
        self.running = True
        for _ in range(self.window):
            self._send()

    def stop(self) -> None:
        self.running = False

    def _completed(self, seq: int) -> None:
        if self.running:
            self._send()

    def _send(self) -> None:
        conn, maker = self.publishers[self.rng.randrange(len(self.publishers))]
        room = self.rng.choice(self.rooms.rooms_of[conn.group])
        seq = self.rooms.sent(room)
        conn.send(maker.frame(seq, self.rooms.names[room]))
