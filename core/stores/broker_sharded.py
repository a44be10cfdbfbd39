"""The broker on a Redis Cluster: sharded pub/sub, one listening connection per node.

Publishing is the same Lua call as on one Redis, run on the channel's master, with
SPUBLISH: the message reaches that shard's nodes only, not the whole cluster. Each
channel with local subscribers is SSUBSCRIBEd on a node of its slot's shard, a replica
where there is one (it keeps hearing through a failover of its master), and the
channels of one node share one connection (`ShardListener`). Every listener PINGs its
node each second: a node that stops answering (frozen, cut off) is given up after a
few seconds, as one that closes the connection is at once.

When a listener is lost, or the slot map changes (a replica promoted, slots moved), its
channels are placed again after the map is read anew; each channel that had delivered
something reads what it missed from its stream (XRANGE on the master) while its live
messages wait, then the live ones follow: nothing is lost or delivered twice. The
cursor of that recovery is checked against the stream: a master that was cut off may
have delivered a message the new master never had (its id newer than messages the new
master took meanwhile), so the recovery starts from the newest delivered id the stream
still has, and skips what was delivered, rather than from the newest delivered id.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

from hiredis import pack_command
from redis.exceptions import RedisError

from core.stores.broker import LogPolicy
from core.stores.broker_redis import RedisBroker, _Channel
from core.stores.cluster_link import ClusterLink
from core.stores.keys import Keys
from core.stores.redis_link import COMMAND_TIMEOUT, LinkDown

log = logging.getLogger("pubsub")

PING_EVERY = 1.0  # seconds between PINGs on a listening connection
STALL = 3.0  # seconds without any reply after which a node is given up
RETRY_FIRST = 0.05
RETRY_MAX = 2.0
AVOID_FOR = 5.0  # seconds a node that failed is not chosen again if another will do
TRAIL = 32  # ids remembered per channel to find the cursor again after a failover


class ShardListener:
    """One connection to one node, SSUBSCRIBEd to the channels this instance hears
    there (and the control channel, if its slot is there)."""

    def __init__(self, broker: ShardedRedisBroker, address: str) -> None:
        self.broker = broker
        self.address = address
        self.states: dict[bytes, _Channel] = {}
        self.control = False  # whether the control channel is heard here
        self.conn = None  # while subscribed
        self.task: asyncio.Task | None = None
        self._recoveries: set[asyncio.Task] = set()

    # -- channels -------------------------------------------------------------------

    def add(self, state: _Channel) -> None:
        self.states[state.pubsub.encode()] = state
        state.listener = self
        if state.confirmed is None or state.confirmed.done():
            state.confirmed = asyncio.get_running_loop().create_future()
        # Messages it missed while it had no connection come first: hold the live ones.
        state.held = [] if state.last_key is not None else None
        if self.conn is not None:
            self._send(("SSUBSCRIBE", state.pubsub))

    def remove(self, state: _Channel) -> None:
        if self.states.pop(state.pubsub.encode(), None) is None:
            return
        state.listener = None
        state.held = None
        if self.conn is not None:
            self._send(("SUNSUBSCRIBE", state.pubsub))

    @property
    def idle(self) -> bool:
        return not self.states and not self.control

    def _send(self, command: tuple) -> None:
        conn = self.conn
        task = asyncio.ensure_future(conn.send_packed_command(pack_command(command), False))
        task.add_done_callback(_ignore)

    # -- the connection -------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        broker = self.broker
        while not broker.stopped and not self.idle:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, LinkDown) as error:
                said = broker.link.log_limit.allow("subscription")
                if said is not None:
                    log.warning(
                        "subscription at %s lost (%s); listening elsewhere%s",
                        self.address,
                        error,
                        said,
                    )
            finally:
                self.conn = None
                for task in self._recoveries:
                    task.cancel()
                for state in self.states.values():
                    broker._release_unechoed(state)
            if broker.stopped or self.idle:
                return
            await broker.lost(self)
            return  # the broker places the channels again (perhaps here, anew)

    async def _session(self) -> None:
        conn = self.broker.link.connection_to(self.address)
        try:
            await conn.connect()
            commands = [("READONLY",)]  # answered OK by a master too
            if self.control:
                commands.append(("SSUBSCRIBE", self.broker.control_channel))
            for state in self.states.values():
                state.held = [] if state.last_key is not None else None
                commands.append(("SSUBSCRIBE", state.pubsub))
            # From here on, a channel added sends its own SSUBSCRIBE (after these).
            self.conn = conn
            await conn.send_packed_command(b"".join(pack_command(c) for c in commands), False)
            if (await conn.read_response(timeout=COMMAND_TIMEOUT)) is None:
                raise LinkDown("no reply to READONLY")
            pinger = asyncio.ensure_future(self._ping(conn))
            try:
                await self._read(conn)
            finally:
                pinger.cancel()
        finally:
            self.conn = None
            await conn.disconnect(nowait=True)

    @staticmethod
    async def _ping(conn) -> None:
        ping = pack_command(("PING",))
        while True:
            await asyncio.sleep(PING_EVERY)
            await conn.send_packed_command(ping, False)

    async def _read(self, conn) -> None:
        broker = self.broker
        control = broker.control_channel.encode()
        states = self.states
        while True:
            reply = await conn.read_response(timeout=STALL)
            if reply is None:
                raise LinkDown(f"no answer within {STALL:g}s")
            kind = reply[0]
            if kind == b"smessage":
                state = states.get(reply[1])
                if state is not None:
                    if state.held is not None:
                        state.held.append(reply[2])
                    else:
                        broker._on_message(state, reply[2])
                elif reply[1] == control and broker._control is not None:
                    broker._control(reply[2])
            elif kind == b"ssubscribe":
                state = states.get(reply[1])
                if state is not None:
                    if state.confirmed is not None and not state.confirmed.done():
                        state.confirmed.set_result(None)
                    if state.held is not None:
                        self._recover(state)
            elif kind == b"sunsubscribe" and reply[1] in states:
                # Not asked for: its slot moved to another shard.
                broker.moved(states[reply[1]])

    def _recover(self, state: _Channel) -> None:
        task = asyncio.ensure_future(self.broker.recover(state))
        self._recoveries.add(task)
        task.add_done_callback(self._recoveries.discard)

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, LinkDown):
                pass


class ShardedRedisBroker(RedisBroker):
    """`RedisBroker` on a Redis Cluster: SPUBLISH, and SSUBSCRIBE per shard node."""

    PUBLISH = "SPUBLISH"
    CHARGES = False

    def __init__(
        self,
        link: ClusterLink,
        keys: Keys,
        policy: LogPolicy | None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(link, keys, policy, wall)
        self.link: ClusterLink = link
        self.control_channel = self._control_channel
        self.listeners: dict[str, ShardListener] = {}
        # Listeners whose connection failed, while they place their channels again: no
        # longer in `listeners`, but stopping must still end them.
        self._replacing: set[ShardListener] = set()
        self.stopped = False
        self._avoid: dict[str, float] = {}  # node -> until when it is not chosen
        self._control_listener: ShardListener | None = None
        link.on_topology(self._on_topology)

    @property
    def subscribed(self) -> bool:
        return any(listener.conn is not None for listener in self.listeners.values())

    def _listening(self, state: _Channel) -> bool:
        return state.listener is not None and state.listener.conn is not None

    def _on_link_down(self) -> None:
        """No master answers: each listener finds out for itself (its PINGs)."""

    # -- placing channels on nodes --------------------------------------------------

    def _place(self, name: str, current: str | None = None) -> str | None:
        """The node to hear pub/sub channel `name` on: where it is heard now if that
        node still serves its slot, else a replica of the slot's master that has not
        failed lately, else the master."""
        master = self.link.master_of(name)
        if master is None:
            return current
        serving = (master, *self.link.map.replicas.get(master, ()))
        if current in serving:
            return current
        now = time.monotonic()
        fine = [a for a in serving if self._avoid.get(a, 0) <= now]
        replicas = [a for a in fine if a != master]
        if replicas:
            return replicas[hash(name) % len(replicas)]
        return fine[0] if fine else master

    def _listener(self, address: str) -> ShardListener:
        listener = self.listeners.get(address)
        if listener is None:
            listener = self.listeners[address] = ShardListener(self, address)
        return listener

    def _attach(self, state: _Channel, address: str | None) -> None:
        if address is None:
            return  # no map yet: placed when one comes
        log.debug("channel %s heard on %s", state.name, address)
        listener = self._listener(address)
        listener.add(state)
        if listener.task is None or listener.task.done():
            listener.start()

    def _place_control(self) -> None:
        current = self._control_listener
        address = self._place(self.control_channel, current.address if current else None)
        if address is None or (current is not None and current.address == address):
            return
        if current is not None:
            current.control = False
            self._drop_if_idle(current)
        listener = self._control_listener = self._listener(address)
        listener.control = True
        if listener.task is None or listener.task.done():
            listener.start()
        elif listener.conn is not None:
            listener._send(("SSUBSCRIBE", self.control_channel))

    def _drop_if_idle(self, listener: ShardListener) -> None:
        if listener.idle and self.listeners.get(listener.address) is listener:
            del self.listeners[listener.address]
            task = asyncio.ensure_future(listener.stop())
            task.add_done_callback(_ignore)

    def _on_topology(self) -> None:
        """The slot map changed: move channels whose node no longer serves them."""
        if self.stopped:
            return
        self._place_control()
        for state in list(self._channels.values()):
            current = state.listener.address if state.listener is not None else None
            address = self._place(state.pubsub, current)
            if address != current:
                self._move(state, address)

    def _move(self, state: _Channel, address: str | None) -> None:
        old = state.listener
        if old is not None:
            old.remove(state)
            self._drop_if_idle(old)
        self._attach(state, address)

    def moved(self, state: _Channel) -> None:
        """The node said it no longer serves the channel's slot."""
        self.link.poke()
        if state.listener is not None:
            self._avoid[state.listener.address] = time.monotonic() + AVOID_FOR
        task = asyncio.ensure_future(self._replace([state]))
        task.add_done_callback(_ignore)

    async def lost(self, listener: ShardListener) -> None:
        """A listener's connection failed: read the map again, then place its channels
        (and the control channel) anew, away from that node if another will do."""
        self._avoid[listener.address] = time.monotonic() + AVOID_FOR
        if self.listeners.get(listener.address) is listener:
            del self.listeners[listener.address]
        states = list(listener.states.values())
        for state in states:
            state.listener = None
        if listener.control:
            listener.control = False
            self._control_listener = None
        self._replacing.add(listener)
        try:
            await asyncio.sleep(RETRY_FIRST)
            try:
                await self.link.refresh()
            except Exception:
                log.exception("reading the cluster's slot map failed")
            await self._replace(states)
        finally:
            self._replacing.discard(listener)

    async def _replace(self, states: list[_Channel]) -> None:
        delay = RETRY_FIRST
        while not self.stopped and self.link.map.complete is False and not self.link.map.masters:
            await asyncio.sleep(delay)  # no map at all yet: wait for one
            delay = min(RETRY_MAX, delay * 2)
        if self.stopped:
            return
        self._place_control()
        for state in states:
            if self._channels.get(state.name) is not state:
                continue  # unsubscribed meanwhile
            self._move(state, self._place(state.pubsub))

    # -- subscribing ----------------------------------------------------------------

    async def start(self) -> None:
        self._place_control()

    def _listen(self, state: _Channel) -> None:
        state.trail = collections.deque(maxlen=TRAIL)
        self._attach(state, self._place(state.pubsub))

    def _stop_listening(self, state: _Channel) -> None:
        listener = state.listener
        if listener is not None:
            listener.remove(state)
            self._drop_if_idle(listener)

    async def recover(self, state: _Channel) -> None:
        """Deliver what `state` missed, then the live messages held meanwhile."""
        try:
            await self._recover_one(state)
        except LinkDown:
            pass  # its shard has no master now: the live messages are what there is
        finally:
            held, state.held = state.held, None
            if self._channels.get(state.name) is state:
                for data in held or ():
                    self._on_message(state, data)

    async def _recover_one(self, state: _Channel) -> None:
        last = state.last_key
        if last is None:
            return
        trail = [k for k in state.trail or () if k <= last]
        start = f"{trail[0][0]}-{trail[0][1]}" if trail else f"({last[0]}-{last[1]}"
        reply = await self.link.call(
            "XRANGE", state.history_key, start, "+", "COUNT", self.size + len(trail)
        )
        entries = [self._entry(state.name, raw_id, flat) for raw_id, flat in reply]
        if self._channels.get(state.name) is not state:
            return
        present = {e.key for e in entries}
        delivered = set(trail)
        anchor = max((k for k in trail if k in present), default=None)
        if trail and anchor is not None and anchor < last:
            # The newest ids delivered are not in the stream: they came from a master
            # that lost them. Go on from the newest one the stream has.
            log.warning(
                "channel %s: %d delivered messages are not in its stream after a "
                "failover; recovering from the last one it has",
                state.name,
                sum(1 for k in trail if k > anchor),
            )
            state.last_key = anchor
        recovered = 0
        for entry in entries:
            if entry.key in delivered:
                continue
            if entry.key is not None and state.last_key is not None and entry.key <= state.last_key:
                continue
            self._accept(state, entry)
            recovered += 1
        if recovered:
            log.info("channel %s: recovered %d messages", state.name, recovered)

    async def stop(self) -> None:
        self.stopped = True
        listeners = [*self.listeners.values(), *self._replacing]
        await asyncio.gather(*(listener.stop() for listener in listeners))
        self.listeners.clear()


def _ignore(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()
