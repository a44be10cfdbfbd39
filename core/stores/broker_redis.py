"""The Redis broker: ordering by XADD, delivery by pub/sub, recovery from the stream.

Publishing is one Lua call (`publish.lua`): XADD to the history stream (which gives the
message its id and keeps it for replay), then PUBLISH of the complete frame JSON on the
channel. Every instance, the publisher included, delivers what its single subscription
receives, so all instances see one order and nothing is delivered twice. The subscriber
remembers the last id it delivered; after any reconnect it reads what it missed from
the stream (XRANGE) and then skips live messages the recovery already covered.

While Redis is unreachable, messages are delivered to this instance's clients at once,
with ids of the form ``L<ms>-<seq>`` that take no part in ordering or history. A message
Redis accepted but whose echo the subscription lost (Redis died in between) is delivered
locally too, so this instance's clients lose nothing; if it turns up after all, it is
not delivered twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from core.stores.broker import Broker, LogPolicy
from core.stores.keys import Keys
from core.stores.redis_link import COMMAND_TIMEOUT, LinkDown, RedisLink, redact
from core.wire.entry import Entry
from core.wire.ids import IdClock, parse_id

log = logging.getLogger("pubsub")

# Without the history plugin the stream still keeps a short log: the subscriber recovers
# from it what it missed while reconnecting.
RECOVERY_LOG = LogPolicy(size=1000, ttl=60.0)
RESUBSCRIBE_FIRST = 0.05
UNECHOED_MAX = 10_000  # own messages awaiting their echo; older ones are given up
RESUBSCRIBE_MAX = 2.0


def _fields(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class RedisBroker(Broker):
    """Orders messages in a Redis stream and fans them out through one subscription."""

    def __init__(
        self,
        link: RedisLink,
        keys: Keys,
        channel: str,
        policy: LogPolicy | None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.link = link
        self.history_key = keys.history(channel)
        self.channel = keys.channel(channel)
        # The latest messages delivered, by id, oldest first: replays are served from them.
        self._recent: dict[str, Entry] = {}
        self.set_log(policy)
        self.wall = wall
        self._local_ids = IdClock(wall)
        self._last_key: tuple[int, int] | None = None
        self._runner: asyncio.Task | None = None
        self._subscription: asyncio.Task | None = None
        self._subscribed = asyncio.Event()
        self._stopped = False
        # Own messages Redis accepted whose echo has not come back yet, in publish order.
        self._unechoed: dict[str, Entry] = {}
        # Ids delivered locally because their echo was lost: skipped if they turn up.
        self._early: dict[str, tuple[int, int] | None] = {}

        link.on_down(self._on_link_down)

    def set_log(self, policy: LogPolicy | None) -> None:
        # Replays are served from what is held; without history nothing is replayed.
        self._hold = policy.size if policy is not None else 0
        policy = policy or RECOVERY_LOG
        self.size = policy.size
        self.ttl_ms = int(policy.ttl * 1000)
        recent = self._recent
        while len(recent) > self._hold:
            del recent[next(iter(recent))]

    @property
    def distributed(self) -> bool:
        return True

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    # -- publishing -----------------------------------------------------------------

    def publish(self, priority: int, tail: bytes, ts: float, cls: str) -> None:
        if not self.link.up:
            self._deliver_locally(priority, tail, ts, cls)
            return
        future = self.link.script(
            "publish",
            [self.history_key, self.channel],
            [tail, priority, cls, self.size, self.ttl_ms],
        )
        future.add_done_callback(lambda f: self._published(f, priority, tail, ts, cls))

    def _published(
        self, future: asyncio.Future, priority: int, tail: bytes, ts: float, cls: str
    ) -> None:
        error = future.exception()
        if error is not None:
            if not isinstance(error, LinkDown):
                said = self.link.log_limit.allow("publish")
                if said is not None:
                    log.error("publishing to Redis failed: %s%s", error, said)
            self._deliver_locally(priority, tail, ts, cls)
            return
        message_id = future.result().decode()
        key = parse_id(message_id)
        if key is not None and self._last_key is not None and key <= self._last_key:
            return  # its echo came back before the reply did
        # It comes back through the subscription; until then, remember it.
        self._unechoed[message_id] = Entry.from_tail(message_id, priority, tail, ts, cls)
        if len(self._unechoed) > UNECHOED_MAX:
            del self._unechoed[next(iter(self._unechoed))]
        if not self.subscribed:
            self._release_unechoed()

    def _release_unechoed(self) -> None:
        """The subscription is gone: deliver own messages whose echo it took with it."""
        if not self._unechoed:
            return
        pending, self._unechoed = self._unechoed, {}
        for message_id, entry in pending.items():
            self._early[message_id] = entry.key
            if self._deliver is not None:
                self._deliver(entry)
        while len(self._early) > UNECHOED_MAX:
            del self._early[next(iter(self._early))]

    def _deliver_locally(self, priority: int, tail: bytes, ts: float, cls: str) -> None:
        if self._deliver is not None:
            local_id = "L" + self._local_ids.next()
            self._deliver(Entry.from_tail(local_id, priority, tail, ts, cls))

    # -- subscribing ----------------------------------------------------------------

    async def start(self) -> None:
        self._runner = asyncio.ensure_future(self._run())
        if self.link.up:
            # Messages published right after start-up must not be missed here.
            try:
                await asyncio.wait_for(self._subscribed.wait(), COMMAND_TIMEOUT)
            except TimeoutError:
                log.warning("subscribing to %s is taking long; continuing", self.channel)

    async def _run(self) -> None:
        delay = RESUBSCRIBE_FIRST
        while not self._stopped:
            await self.link.wait_up()
            self._subscription = asyncio.ensure_future(self._subscribe())
            await asyncio.wait([self._subscription])
            if self._subscribed.is_set():
                delay = RESUBSCRIBE_FIRST  # it worked for a while: retry quickly
            self._subscribed.clear()
            self._release_unechoed()
            if self._stopped:
                return
            if self._subscription.cancelled():
                continue  # the link went down; wait for it to come back
            error = self._subscription.exception()
            said = self.link.log_limit.allow("subscription")
            if said is not None:
                log.warning(
                    "subscription to %s at %s lost (%s); resubscribing%s",
                    self.channel,
                    redact(self.link.url),
                    error,
                    said,
                )
            await asyncio.sleep(delay)
            delay = min(RESUBSCRIBE_MAX, delay * 2)

    def _on_link_down(self) -> None:
        # A hung Redis would leave the subscriber blocked on its read forever.
        if self._subscription is not None and not self._subscription.done():
            self._subscription.cancel()
        self._release_unechoed()

    async def _subscribe(self) -> None:
        conn = self.link.new_connection()
        try:
            await conn.connect()
            await conn.send_command("SUBSCRIBE", self.channel, check_health=False)
            reply = await conn.read_response(timeout=COMMAND_TIMEOUT)
            if reply is None:
                raise LinkDown("no reply to SUBSCRIBE")
            self._subscribed.set()
            await self._recover()
            read = conn.read_response
            on_message = self._on_message
            while True:
                reply = await read(timeout=math.inf)
                if reply[0] == b"message":
                    on_message(reply[2])
        except (RedisError, OSError) as error:
            raise LinkDown(str(error)) from error
        finally:
            await conn.disconnect(nowait=True)

    async def _recover(self) -> None:
        """Deliver what was published while this instance was not subscribed."""
        if self._last_key is None:
            return
        ms, seq = self._last_key
        try:
            reply = await self.link.call(
                "XRANGE", self.history_key, f"({ms}-{seq}", "+", "COUNT", self.size
            )
        except LinkDown:
            return
        if reply:
            log.info("recovered %d messages published while unsubscribed", len(reply))
        for raw_id, flat in reply:
            self._accept(self._entry(raw_id, flat))
        # What was delivered early and is now behind the cursor cannot come back.
        last = self._last_key
        if last is not None:
            self._early = {i: k for i, k in self._early.items() if k is None or k > last}

    def _accept(self, entry: Entry) -> None:
        """Deliver an ordered entry from the subscription or a recovery, once."""
        key = entry.key
        if key is not None:
            if self._last_key is not None and key <= self._last_key:
                return  # already delivered by a recovery
            self._last_key = key
        self._unechoed.pop(entry.id, None)
        if key is not None:
            self._remember(entry)
        if entry.id in self._early:
            del self._early[entry.id]
            return  # delivered locally when its echo was lost
        if self._deliver is not None:
            self._deliver(entry)

    def _on_message(self, data: bytes) -> None:
        try:
            obj = json.loads(data)
        except ValueError:
            if (said := self.link.log_limit.allow("junk")) is not None:
                log.warning("ignored a message on %s that is not JSON%s", self.channel, said)
            return
        if not isinstance(obj, dict) or obj.get("type") != "message":
            if (said := self.link.log_limit.allow("junk")) is not None:
                log.warning(
                    "ignored a message on %s that is not a message frame%s", self.channel, said
                )
            return
        message_id = obj.get("id")
        key = parse_id(message_id) if isinstance(message_id, str) else None
        priority = obj.get("priority")
        if not isinstance(priority, int) or isinstance(priority, bool):
            priority = 0
        ts = obj.get("ts")
        entry = Entry(
            message_id if isinstance(message_id, str) else "",
            priority,
            data,
            ts if isinstance(ts, (int, float)) else 0.0,
            str(obj.get("class", "")),
            key=key,
        )
        self._accept(entry)

    # -- history --------------------------------------------------------------------

    def _entry(self, raw_id: bytes, flat: list[bytes]) -> Entry:
        message_id = raw_id.decode()
        known = self._recent.get(message_id)
        if known is not None:
            return known  # one copy of a message, however many replays include it
        fields = _fields(flat)
        ms = int(message_id.partition("-")[0])
        return Entry.from_tail(
            message_id,
            int(fields.get(b"p", 0)),
            fields.get(b"t", b"}"),
            ms / 1000,
            fields.get(b"c", b"").decode(),
        )

    def _remember(self, entry: Entry) -> None:
        """Hold the latest entries delivered, in order and without a gap (the
        subscription and its recoveries deliver every message once, in order), so that
        replays are served from them: one copy of a message for every replay."""
        recent = self._recent
        recent[entry.id] = entry
        while len(recent) > self._hold:
            del recent[next(iter(recent))]

    def _oldest_ms(self, max_age: float) -> int:
        return max(0, int((self.wall() - max_age) * 1000))

    async def recent(self, count: int, max_age: float) -> list[Entry]:
        if count <= 0:
            return []
        oldest_ms = self._oldest_ms(max_age)
        held = self._recent
        if len(held) >= count:  # the latest `count` are all here: no round trip, no copy
            return [e for e in list(held.values())[-count:] if e.key[0] >= oldest_ms]
        if not self.link.up:
            return []
        try:
            reply = await self.link.call(
                "XREVRANGE", self.history_key, "+", f"{oldest_ms}-0", "COUNT", count
            )
        except LinkDown:
            return []
        return [self._entry(raw_id, flat) for raw_id, flat in reversed(reply)]

    async def since(self, cursor: str, limit: int, max_age: float) -> list[Entry]:
        key = parse_id(cursor)
        if key is None or limit <= 0:
            return []
        oldest = (self._oldest_ms(max_age), 0)
        held = self._recent
        if held and (len(held) >= self.size or key >= next(iter(held.values())).key):
            # What is held is every message from its first on, and when it holds `size`
            # it is all the stream keeps: no round trip, no copy.
            return [e for e in held.values() if e.key > key and e.key >= oldest][-limit:]
        if not self.link.up:
            return []
        start = f"({key[0]}-{key[1]}" if key >= oldest else f"{oldest[0]}-0"
        try:
            reply = await self.link.call("XRANGE", self.history_key, start, "+", "COUNT", limit)
        except LinkDown:
            return []
        return [self._entry(raw_id, flat) for raw_id, flat in reply]

    async def stop(self) -> None:
        self._stopped = True
        for task in (self._subscription, self._runner):
            if task is not None and not task.done():
                task.cancel()
        for task in (self._subscription, self._runner):
            if task is not None:
                try:
                    await task
                except (asyncio.CancelledError, LinkDown):
                    pass
