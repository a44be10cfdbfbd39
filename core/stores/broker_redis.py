"""The Redis broker: ordering by XADD, delivery by pub/sub, recovery from the stream.

Each channel has a stream (`{prefix}history:{<channel>}`, its recent messages) and a
pub/sub channel (`{prefix}{<channel>}`); the braces are a hash tag, so both live in one
slot of a Redis Cluster. Publishing is one Lua call (`publish.lua`): XADD to the stream
(which gives the message its id and keeps it for replay), then PUBLISH of the complete
frame JSON. An instance subscribes (on one connection) only to the channels it has
subscribers in: on the first one's arrival, and unsubscribes after the last one's
departure. Every instance, the publisher included, delivers what its subscription
receives, so all instances see one order per channel and nothing is delivered twice.
For each channel the subscriber remembers the last id it delivered; after any reconnect
it reads what it missed from the stream (XRANGE) and skips live messages the recovery
already covered.

While Redis is unreachable, messages are delivered to this instance's clients at once,
with ids of the form ``L<ms>-<seq>`` that take no part in ordering or history. A message
Redis accepted but whose echo the subscription lost (Redis died in between) is delivered
locally too, so this instance's clients lose nothing; if it turns up after all, it is
not delivered twice.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import time
from collections.abc import Callable, Iterable

from hiredis import pack_command
from redis.exceptions import RedisError, ResponseError

from core.stores.broker import Broker, LogPolicy, Recovery, Unpaid
from core.stores.keys import Keys
from core.stores.ratelimit import RateLimiter, Spend
from core.stores.ratelimit_redis import RedisRateLimiter
from core.stores.redis_link import COMMAND_TIMEOUT, DEADLINE, LinkDown, RedisLink, redact
from core.wire.entry import Entry
from core.wire.frames import MESSAGE_HEAD, event_payload, read_message_frame, split_event
from core.wire.ids import IdClock, parse_id

log = logging.getLogger("pubsub")

# Without the history plugin the stream still keeps a short log: the subscriber recovers
# from it what it missed while reconnecting.
RECOVERY_LOG = LogPolicy(size=1000, ttl=60.0)
RESUBSCRIBE_FIRST = 0.05
UNECHOED_MAX = 10_000  # own messages awaiting their echo, per channel; older are given up
RESUBSCRIBE_MAX = 2.0


def _fields(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class _Channel:
    """What the broker keeps for one channel this instance has subscribers in."""

    __slots__ = (
        "confirmed",
        "doubtful",
        "early",
        "held",
        "history_key",
        "last_key",
        "listener",
        "name",
        "pubsub",
        "recent",
        "trail",
        "unechoed",
    )

    def __init__(self, name: str, keys: Keys) -> None:
        self.name = name
        self.history_key = keys.history(name)
        self.pubsub = keys.channel(name)
        self.last_key: tuple[int, int] | None = None  # the newest id delivered
        # The latest messages delivered, by id, oldest first: replays are served from them.
        self.recent: dict[str, Entry] = {}
        # Own messages Redis accepted whose echo has not come back yet, in publish order.
        self.unechoed: dict[str, Entry] = {}
        # Ids delivered locally because their echo was lost: skipped if they turn up.
        self.early: dict[str, tuple[int, int] | None] = {}
        # Tails (the frame after its id) of own messages delivered locally when their
        # publish got no reply: Redis may have run it (a node frozen, or killed with the
        # command read), and then they turn up with an id nobody knew: skipped then.
        self.doubtful: dict[bytes, None] = {}
        self.confirmed: asyncio.Future | None = None  # the SUBSCRIBE's reply
        # Sharded pub/sub only: the shard connection it is heard on; live messages held
        # back while a recovery runs; the ids delivered last (to find the cursor again
        # after a failover).
        self.listener = None
        self.held: list[bytes] | None = None
        self.trail: collections.deque[tuple[int, int]] | None = None


class RedisBroker(Broker):
    """Orders messages in Redis streams and fans them out through one subscription
    connection, subscribed to the channels that have local subscribers."""

    # PUBLISH / SUBSCRIBE; a Redis Cluster's broker uses the sharded commands.
    PUBLISH = "PUBLISH"
    # Whether a publish can spend rate-limit tokens in its own script: not on a Redis
    # Cluster, where the buckets (the sender's slot) and the channel's keys are in
    # different slots, which one script cannot reach.
    CHARGES = True

    def __init__(
        self,
        link: RedisLink,
        keys: Keys,
        policy: LogPolicy | None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.link = link
        self.keys = keys
        self._channels: dict[str, _Channel] = {}
        self._by_pubsub: dict[bytes, _Channel] = {}
        # Every instance listens to this one, whatever its clients are in.
        self._control_channel = keys.control()
        self.set_log(policy)
        self.wall = wall
        self._local_ids = IdClock(wall)
        self._runner: asyncio.Task | None = None
        self._subscription: asyncio.Task | None = None
        self._conn = None  # the subscriber connection, while it is subscribed
        # (UN)SUBSCRIBE commands of this loop turn, each [verb, channel, ...], in order.
        self._commands: list[list[str]] = []
        self._stopped = False
        link.on_down(self._on_link_down)

    def set_log(self, policy: LogPolicy | None) -> None:
        # Replays are served from what is held; without history nothing is replayed.
        self._hold = policy.size if policy is not None else 0
        policy = policy or RECOVERY_LOG
        self.size = policy.size
        self.ttl_ms = int(policy.ttl * 1000)
        for state in self._channels.values():
            while len(state.recent) > self._hold:
                del state.recent[next(iter(state.recent))]

    @property
    def distributed(self) -> bool:
        return True

    def takes_charges(self, limiter: RateLimiter) -> bool:
        # The script reaches the buckets by the limiter's key names: only the Redis
        # limiter of this link and prefix keeps its buckets there.
        return (
            self.CHARGES
            and self.link.up
            and isinstance(limiter, RedisRateLimiter)
            and limiter.link is self.link
            and limiter.keys.prefix == self.keys.prefix
        )

    @property
    def subscribed(self) -> bool:
        return self._conn is not None

    def subscriptions(self) -> list[str]:
        """The channels this instance listens to in Redis."""
        return list(self._channels)

    # -- publishing -----------------------------------------------------------------

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
        published = asyncio.get_running_loop().create_future()
        if not self.link.up:
            published.set_result(self._deliver_locally(channel, priority, tail, ts, cls))
            return published
        keys = [self.keys.history(channel), self.keys.channel(channel)]
        args = [
            tail,
            priority,
            cls,
            self.size,
            self.ttl_ms,
            int(self.PUBLISH == "SPUBLISH"),
        ]
        if spend is not None:
            for bucket in spend.buckets:
                keys.append(self.keys.ratelimit(spend.group, bucket.name))
                args += [bucket.rate, bucket.burst]
        args.append(DEADLINE)
        future = self.link.script("publish", keys, args)
        message = (channel, priority, tail, ts, cls)
        future.add_done_callback(lambda f: self._published(f, message, published))
        return published

    def _published(self, future: asyncio.Future, message: tuple, published: asyncio.Future) -> None:
        channel, priority, tail, ts, cls = message
        error = future.exception()
        if error is not None:
            if not isinstance(error, LinkDown):
                said = self.link.log_limit.allow("publish")
                if said is not None:
                    log.error("publishing to Redis failed: %s%s", error, said)
            state = self._channels.get(channel)
            if state is not None and not isinstance(error, ResponseError):
                # No reply: whether Redis ran the script is unknown.
                state.doubtful[tail] = None
                if len(state.doubtful) > UNECHOED_MAX:
                    del state.doubtful[next(iter(state.doubtful))]
            published.set_result(self._deliver_locally(channel, priority, tail, ts, cls))
            return
        reply = future.result()
        if reply is None:
            # Redis ran it after this instance had stopped waiting (it was frozen or
            # failing over): it did nothing; the outage rule applies.
            said = self.link.log_limit.allow("late")
            if said is not None:
                log.warning("a publish reached Redis too late and was dropped there%s", said)
            published.set_result(self._deliver_locally(channel, priority, tail, ts, cls))
            return
        message_id = reply.decode()
        if message_id.startswith("!"):
            published.set_exception(Unpaid(float(message_id[1:])))
            return
        published.set_result(message_id)
        state = self._channels.get(channel)
        if state is None:
            return  # nobody here listens: its echo is not awaited
        key = parse_id(message_id)
        if key is not None and state.last_key is not None and key <= state.last_key:
            return  # its echo came back before the reply did
        # It comes back through the subscription; until then, remember it.
        entry = Entry.from_tail(message_id, priority, tail, ts, kind=cls, channel=channel)
        state.unechoed[message_id] = entry
        if len(state.unechoed) > UNECHOED_MAX:
            del state.unechoed[next(iter(state.unechoed))]
        if not self._listening(state):
            self._release_unechoed(state)

    def _listening(self, state: _Channel) -> bool:
        """Whether the channel's messages reach this instance now."""
        return self.subscribed

    def _release_unechoed(self, state: _Channel) -> None:
        """The subscription is gone: deliver own messages whose echo it took with it."""
        if not state.unechoed:
            return
        pending, state.unechoed = state.unechoed, {}
        for message_id, entry in pending.items():
            state.early[message_id] = entry.key
            if self._deliver is not None:
                self._deliver(entry)
        while len(state.early) > UNECHOED_MAX:
            del state.early[next(iter(state.early))]

    def _deliver_locally(
        self, channel: str, priority: int, tail: bytes, ts: float, cls: str
    ) -> str:
        local_id = "L" + self._local_ids.next()
        if self._deliver is not None and channel in self._channels:
            entry = Entry.from_tail(local_id, priority, tail, ts, kind=cls, channel=channel)
            self._deliver(entry)
        return local_id

    def publish_control(self, payload: bytes) -> None:
        if not self.link.up:
            super().publish_control(payload)  # this instance, at least
            return
        self.link.call(self.PUBLISH, self._control_channel, payload).add_done_callback(_ignore)

    def publish_event(self, channel: str, origin: str, frame_json: bytes) -> None:
        if self.link.up:
            payload = event_payload(origin, frame_json)
            future = self.link.call(self.PUBLISH, self.keys.channel(channel), payload)
            future.add_done_callback(
                lambda f: self._event_published(f, channel, origin, frame_json)
            )
        else:
            self._deliver_event(channel, origin, frame_json)

    def _event_published(
        self, future: asyncio.Future, channel: str, origin: str, frame_json: bytes
    ) -> None:
        if future.cancelled() or future.exception() is not None:
            self._deliver_event(channel, origin, frame_json)

    def _deliver_event(self, channel: str, origin: str, frame_json: bytes) -> None:
        if self._deliver is not None and channel in self._channels:
            self._deliver(Entry.event(channel, origin, frame_json))

    # -- subscribing ----------------------------------------------------------------

    async def start(self) -> None:
        self._runner = asyncio.ensure_future(self._run())

    def want(self, channel: str) -> _Channel:
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel(channel, self.keys)
            self._by_pubsub[state.pubsub.encode()] = state
            state.confirmed = asyncio.get_running_loop().create_future()
            self._listen(state)
        return state

    def _listen(self, state: _Channel) -> None:
        """Start hearing a channel that has its first local subscriber."""
        if self._conn is not None:
            self._command("SUBSCRIBE", state.pubsub)

    async def subscribe_all(self, channels: Iterable[str]) -> None:
        states = [self.want(channel) for channel in channels]
        if not self.link.up:
            return
        waiting = [
            s.confirmed for s in states if s.confirmed is not None and not s.confirmed.done()
        ]
        if not waiting:
            return
        # Messages published once this returns must reach here: wait for the replies.
        if not await all_done(waiting, COMMAND_TIMEOUT):
            names = [s.pubsub for s in states if s.confirmed is not None and not s.confirmed.done()]
            log.warning("subscribing to %s is taking long; continuing", ", ".join(names))

    def unsubscribe(self, channel: str) -> None:
        state = self._channels.pop(channel, None)
        if state is None:
            return
        del self._by_pubsub[state.pubsub.encode()]
        if state.confirmed is not None and not state.confirmed.done():
            state.confirmed.cancel()
        self._stop_listening(state)

    def _stop_listening(self, state: _Channel) -> None:
        """Stop hearing a channel whose last local subscriber left."""
        if self._conn is not None:
            self._command("UNSUBSCRIBE", state.pubsub)

    def _command(self, verb: str, name: str) -> None:
        """SUBSCRIBE or UNSUBSCRIBE `name` on the subscriber connection. The channels of
        one loop turn go out together, one command per run of the same verb (in order:
        a channel left and joined again in one turn ends subscribed): a burst of clients
        arriving with their personal channels costs one write, not one per client."""
        commands = self._commands
        if commands and commands[-1][0] == verb:
            commands[-1].append(name)
        else:
            commands.append([verb, name])
        if len(commands) == 1 and len(commands[0]) == 2:
            asyncio.get_running_loop().call_soon(self._send_commands)

    def _send_commands(self) -> None:
        commands, self._commands = self._commands, []
        if commands and self._conn is not None:
            packed = b"".join(pack_command(tuple(command)) for command in commands)
            task = asyncio.ensure_future(self._send_packed(self._conn, packed, commands))
            task.add_done_callback(_ignore)

    async def _send_packed(self, conn, packed: bytes, commands: list[list[str]]) -> None:
        try:
            await conn.send_packed_command(packed, check_health=False)
        except (RedisError, OSError) as error:
            # The read loop sees the same connection fail, and resubscribes everything.
            log.debug("%s on the subscriber failed: %s", commands[0][0], error)

    async def _run(self) -> None:
        delay = RESUBSCRIBE_FIRST
        while not self._stopped:
            await self.link.wait_up()
            self._subscription = asyncio.ensure_future(self._subscribe())
            await asyncio.wait([self._subscription])
            if self._conn is not None:
                delay = RESUBSCRIBE_FIRST  # it worked for a while: retry quickly
            self._conn = None
            for state in list(self._channels.values()):
                self._release_unechoed(state)
            if self._stopped:
                return
            if self._subscription.cancelled():
                continue  # the link went down; wait for it to come back
            error = self._subscription.exception()
            said = self.link.log_limit.allow("subscription")
            if said is not None:
                log.warning(
                    "subscription at %s lost (%s); resubscribing%s",
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
        for state in list(self._channels.values()):
            self._release_unechoed(state)

    async def _subscribe(self) -> None:
        conn = self.link.new_connection()
        try:
            await conn.connect()
            wanted = list(self._channels.values())
            for state in wanted:
                if state.confirmed is None or state.confirmed.done():
                    state.confirmed = asyncio.get_running_loop().create_future()
            early: list = []  # live messages that came with the replies: after recovery
            names = [self._control_channel, *(state.pubsub for state in wanted)]
            await conn.send_packed_command(pack_command(("SUBSCRIBE", *names)))
            confirmed = 0
            while confirmed < len(names):
                reply = await conn.read_response(timeout=COMMAND_TIMEOUT)
                if reply is None:
                    raise LinkDown("no reply to SUBSCRIBE")
                if reply[0] == b"subscribe":
                    confirmed += 1
                    self._on_reply(reply)
                else:
                    early.append(reply)
            self._conn = conn
            gone = [s.pubsub for s in wanted if self._channels.get(s.name) is not s]
            if gone:  # unsubscribed while this connection was being set up
                await conn.send_packed_command(pack_command(("UNSUBSCRIBE", *gone)))
            await self._recover(wanted)
            for reply in early:
                self._on_reply(reply)
            read = conn.read_response
            on_reply = self._on_reply
            while True:
                on_reply(await read(timeout=math.inf))
        except (RedisError, OSError) as error:
            raise LinkDown(str(error)) from error
        finally:
            self._conn = None
            await conn.disconnect(nowait=True)

    def _on_reply(self, reply: list) -> None:
        kind = reply[0]
        if kind == b"message":
            state = self._by_pubsub.get(reply[1])
            if state is not None:
                self._on_message(state, reply[2])
            elif reply[1] == self._control_channel.encode() and self._control is not None:
                self._control(reply[2])
        elif kind == b"subscribe":
            state = self._by_pubsub.get(reply[1])
            if state is not None and state.confirmed is not None and not state.confirmed.done():
                state.confirmed.set_result(None)

    async def _recover(self, channels: list[_Channel]) -> None:
        """Deliver what was published while this instance was not subscribed."""
        behind = [s for s in channels if s.last_key is not None]
        if not behind:
            return
        calls = []
        for s in behind:
            after = f"({s.last_key[0]}-{s.last_key[1]}"
            calls.append(self.link.call("XRANGE", s.history_key, after, "+", "COUNT", self.size))
        try:
            replies = await asyncio.gather(*calls)
        except LinkDown:
            return
        recovered = 0
        for state, reply in zip(behind, replies, strict=True):
            if self._channels.get(state.name) is not state:
                continue  # unsubscribed meanwhile
            for raw_id, flat in reply:
                self._accept(state, self._entry(state.name, raw_id, flat))
                recovered += 1
            # What was delivered early and is now behind the cursor cannot come back.
            last = state.last_key
            if last is not None:
                state.early = {i: k for i, k in state.early.items() if k is None or k > last}
        if recovered:
            log.info("recovered %d messages published while unsubscribed", recovered)

    def _accept(self, state: _Channel, entry: Entry) -> None:
        """Deliver an ordered entry from the subscription or a recovery, once."""
        key = entry.key
        if key is not None:
            if state.last_key is not None and key <= state.last_key:
                return  # already delivered by a recovery
            state.last_key = key
            if state.trail is not None:
                state.trail.append(key)
            self._remember(state, entry)
        state.unechoed.pop(entry.id, None)
        if entry.id in state.early:
            del state.early[entry.id]
            return  # delivered locally when its echo was lost
        if state.doubtful:
            tail = entry.payload[len(MESSAGE_HEAD) + len(entry.id) + 2 :]
            if tail in state.doubtful:
                del state.doubtful[tail]
                return  # delivered locally when its publish got no reply
        if self._deliver is not None:
            self._deliver(entry)

    def _on_message(self, state: _Channel, data: bytes) -> None:
        event = split_event(data)
        if event is not None:
            if self._deliver is not None:
                self._deliver(Entry.event(state.name, event[0], event[1]))
            return
        fields = read_message_frame(data)
        if fields is not None:
            message_id, priority, cls, ts = fields
            entry = Entry(
                message_id, priority, data, ts, cls, key=parse_id(message_id), channel=state.name
            )
            self._accept(state, entry)
            return
        try:
            obj = json.loads(data)
        except ValueError:
            if (said := self.link.log_limit.allow("junk")) is not None:
                log.warning("ignored a message on %s that is not JSON%s", state.pubsub, said)
            return
        if not isinstance(obj, dict) or obj.get("type") != "message":
            if (said := self.link.log_limit.allow("junk")) is not None:
                log.warning(
                    "ignored a message on %s that is not a message frame%s", state.pubsub, said
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
            channel=state.name,
        )
        self._accept(state, entry)

    # -- history --------------------------------------------------------------------

    def _entry(self, channel: str, raw_id: bytes, flat: list[bytes]) -> Entry:
        message_id = raw_id.decode()
        state = self._channels.get(channel)
        known = state.recent.get(message_id) if state is not None else None
        if known is not None:
            return known  # one copy of a message, however many replays include it
        fields = _fields(flat)
        ms = int(message_id.partition("-")[0])
        return Entry.from_tail(
            message_id,
            int(fields.get(b"p", 0)),
            fields.get(b"t", b"}"),
            ms / 1000,
            kind=fields.get(b"c", b"").decode(),
            channel=channel,
        )

    def _remember(self, state: _Channel, entry: Entry) -> None:
        """Hold the latest entries delivered, in order and without a gap (the
        subscription and its recoveries deliver every message once, in order), so that
        replays are served from them: one copy of a message for every replay."""
        recent = state.recent
        recent[entry.id] = entry
        while len(recent) > self._hold:
            del recent[next(iter(recent))]

    def _oldest_ms(self, max_age: float) -> int:
        return max(0, int((self.wall() - max_age) * 1000))

    async def recent(self, channel: str, count: int, max_age: float) -> list[Entry]:
        if count <= 0:
            return []
        oldest_ms = self._oldest_ms(max_age)
        state = self._channels.get(channel)
        if state is not None and len(state.recent) >= count:
            # The latest `count` are all here: no round trip, no copy.
            return [e for e in list(state.recent.values())[-count:] if e.key[0] >= oldest_ms]
        if not self.link.up:
            return []
        try:
            reply = await self.link.call(
                "XREVRANGE", self.keys.history(channel), "+", f"{oldest_ms}-0", "COUNT", count
            )
        except LinkDown:
            return []
        return [self._entry(channel, raw_id, flat) for raw_id, flat in reversed(reply)]

    async def since(self, channel: str, cursor: str, limit: int, max_age: float) -> Recovery:
        key = parse_id(cursor)
        if key is None or limit <= 0:
            return Recovery([], False)
        oldest = (self._oldest_ms(max_age), 0)
        state = self._channels.get(channel)
        held = state.recent if state is not None else {}
        if held:
            first = next(iter(held.values())).key
            if key >= first or len(held) >= self.size:
                # What is held is every message from its first on, and when it holds
                # `size` it is all the stream keeps: no round trip, no copy.
                after = [e for e in held.values() if e.key > key and e.key >= oldest]
                return Recovery(after[-limit:], first <= key and len(after) <= limit)
        if not self.link.up:
            return Recovery([], False)
        start = f"({key[0]}-{key[1]}" if key >= oldest else f"{oldest[0]}-0"
        stream = self.keys.history(channel)
        try:
            reply, first = await asyncio.gather(
                self.link.call("XRANGE", stream, start, "+", "COUNT", limit + 1),
                self.link.call("XRANGE", stream, "-", "+", "COUNT", 1),
            )
        except LinkDown:
            return Recovery([], False)
        entries = [self._entry(channel, raw_id, flat) for raw_id, flat in reply]
        reaches = bool(first) and parse_id(first[0][0].decode()) <= key and key >= oldest
        return Recovery(entries[-limit:], reaches and len(entries) <= limit)

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


async def all_done(futures: list[asyncio.Future], timeout: float) -> bool:
    """Wait until every one of `futures` is done (or cancelled), at most `timeout`
    seconds; True if they all were. Cancels none of them.

    Not `asyncio.wait`: it takes its callback off every future when it returns, and a
    future's callbacks are a list, so when thousands of connections wait on one
    channel's SUBSCRIBE reply (a reconnect storm), those removals cost O(waiters) each,
    O(waiters^2) in all (15% of a storm's samples). Here a callback stays on the
    future until the future is done, which then drops them all at once."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    remaining = len(futures)

    def one_done(_: asyncio.Future) -> None:
        nonlocal remaining
        remaining -= 1
        if not remaining and not waiter.done():
            waiter.set_result(True)

    def too_late() -> None:
        if not waiter.done():
            waiter.set_result(False)

    for future in futures:
        future.add_done_callback(one_done)
    timer = loop.call_later(timeout, too_late)
    try:
        return await waiter
    finally:
        timer.cancel()


def _ignore(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()
