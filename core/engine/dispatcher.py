"""What happens to a connection between Tornado's events, in the core's own terms.

open:    Connection -> on_connect hooks (may refuse) -> the hub holds the welcome's
         channels -> welcome frame -> on_welcome hooks -> each channel catches up
         (presence, history) and goes live
message: parse + check the frame -> a command (subscribe, unsubscribe, presence) goes to
         the subscriptions; a message -> channel rules -> on_message hooks (may veto,
         replace, or charge it) -> published on its channel through the hub, its
         charges paid in the same Redis call where possible -> on_published hooks
close:   out of the hub and every channel -> presence leaves -> on_close hooks, in reverse

The WebSocket handler calls these and nothing else; the features are in the plugins.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from core.engine.connection import Connection
from core.engine.hooks import Veto
from core.engine.message import Message
from core.engine.outbox import OutboxPolicy
from core.ops.refusals import RefusalLog
from core.stores.broker import Unpaid
from core.wire import frames

if TYPE_CHECKING:
    from core.engine.channels import ChannelRules
    from core.engine.hookrunner import HookRunner
    from core.engine.hub import Hub
    from core.engine.subscriptions import Subscriptions
    from core.ops.metrics import Metrics
    from core.transport import Transport

log = logging.getLogger("server")


class Dispatcher:
    """Turns one instance's WebSocket events into hook calls and hub operations."""

    def __init__(
        self,
        *,
        hub: Hub,
        hooks: HookRunner,
        subscriptions: Subscriptions,
        classes: Mapping[str, int],
        instance_id: str,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.hub = hub
        self.hooks = hooks
        self.subscriptions = subscriptions
        self.classes = classes
        self.instance_id = instance_id
        self.metrics = metrics
        self.clock = clock
        self.wall = wall
        # One policy object for every connection: a change reaches all of them at once.
        self.policy = OutboxPolicy(ordered=False)
        self._hook_tasks: set[asyncio.Task] = set()
        self._serial = itertools.count(1)
        self.refusals = RefusalLog(log)
        hub.on_fanout = self._count_fanout

    @property
    def rules(self) -> ChannelRules:
        return self.subscriptions.rules

    def use_rules(self, rules: ChannelRules) -> None:
        """New channel rules (a reload); connections keep the channels they are in."""
        self.subscriptions.rules = rules

    def use_policy(self, policy: OutboxPolicy) -> None:
        """Queue every connection's frames by `policy` from now on (its ordering and
        frame limit: the byte bound is the server's, `use_max_bytes`)."""
        self.policy.limit = policy.limit
        self.policy.ordered = policy.ordered

    def use_max_bytes(self, max_bytes: int) -> None:
        """Close a connection as a slow consumer past `max_bytes` unsent bytes."""
        self.policy.max_bytes = max_bytes

    # -- open -----------------------------------------------------------------------

    async def open(
        self, transport: Transport, ip: str, query: Mapping[str, str], ip_key: str | None = None
    ) -> Connection | None:
        """Admit a new WebSocket, or refuse it; returns the admitted connection."""
        key = f"{self.instance_id}/{next(self._serial)}"
        conn = Connection(transport, ip, query, self.policy, ip_key=ip_key, key=key)
        conn.on_drop = self._count_drop
        veto = await self.hooks.connect(conn)
        if veto is not None:
            self.metrics.connections_refused.labels(veto.code or "refused").inc()
            self.refusals.note(veto.code or "refused", ip)
            conn.close(veto.close_code or frames.CLOSE_POLICY, veto.message, veto.error_frame())
            return None
        if conn.closing:  # a plugin closed it while admitting
            await self.hooks.close(conn)
            return None
        conn.admitted = True
        self.metrics.connections_opened.inc()
        self.metrics.connections.inc()
        self.hub.add(conn)
        channels = await self.subscriptions.initial(conn, conn.resume)
        await self.subscriptions.hold(conn, channels)
        conn.send_json(self._welcome(conn))
        await self.hooks.welcome(conn)
        for channel, since in channels.items():
            await self.subscriptions.catch_up(conn, channel, since, announce=False)
        return conn

    def _welcome(self, conn: Connection) -> dict:
        return {
            "type": "welcome",
            "client_id": conn.client_id,
            "session": conn.session,
            "resumed": conn.resumed,
            "instance": self.instance_id,
            "user": conn.user,
            "channels": list(conn.channels),
            "heartbeat": {"interval": None},
            "classes": dict(self.classes),
            **conn.welcome,
        }

    # -- frames ---------------------------------------------------------------------

    async def message(self, conn: Connection | None, data: str | bytes) -> None:
        """One frame from the client: a request, or a message to publish."""
        if conn is None or conn.closing:
            return
        try:
            parsed = frames.parse_client_frame(data, self.classes)
        except frames.FrameError as error:
            self.metrics.messages_rejected.labels(error.code).inc()
            conn.send_json(frames.error_payload(error.code, error.message, **error.extra))
            return
        if isinstance(parsed, frames.ClientCommand):
            await self._command(conn, parsed)
            return
        channel = parsed.channel or self.rules.default
        if channel is None:
            self._reject(
                conn, frames.INVALID_CHANNEL, "there is no default channel: name one", None
            )
            return
        refusal = self.rules.may_publish(channel, channel in conn.channels)
        if refusal is not None:
            self._reject(conn, *refusal, channel)
            return
        message = Message(
            parsed.cls,
            self.classes[parsed.cls],
            parsed.content,
            conn.client_id,
            self.wall(),
            channel,
        )
        outcome = await self.hooks.message(conn, message)
        if isinstance(outcome, Veto):
            self._refuse_message(conn, outcome)
            return
        if outcome.channel != channel:  # a plugin redirected it: the rules apply there too
            refusal = self.rules.may_publish(outcome.channel, outcome.channel in conn.channels)
            if refusal is not None:
                self._reject(conn, *refusal, outcome.channel)
                return
        # The charges (a rate limit): paid in the publish's own call where the broker
        # can take one, else here, first.
        fused = None
        for charge in outcome.charges:
            if fused is None and self.hub.broker.takes_charges(charge.limiter):
                fused = charge
                continue
            retry_after = await charge.limiter.take(charge.spend.group, charge.spend.buckets)
            if retry_after > 0:
                self._refuse_message(conn, charge.refusal(retry_after))
                return
        priority = self.classes.get(outcome.cls, outcome.priority)
        tail = frames.message_tail(
            outcome.sender,
            outcome.cls,
            priority,
            outcome.content,
            outcome.ts,
            channel=outcome.channel,
            user=conn.user,
        )
        published = self.hub.publish(
            outcome.channel,
            priority,
            tail,
            outcome.ts,
            outcome.cls,
            spend=fused.spend if fused is not None else None,
        )
        if fused is not None:
            # Wait for the verdict: the sender's next frame is read after it, so its
            # messages stay in order and a refusal reaches it before what follows.
            try:
                await published
            except Unpaid as unpaid:
                self._refuse_message(conn, fused.refusal(unpaid.retry_after))
                return
        self.metrics.received(outcome.cls).inc()
        self.metrics.published(self.rules.namespace_name(outcome.channel)).inc()
        await self.hooks.published(conn, outcome)

    async def _command(self, conn: Connection, command: frames.ClientCommand) -> None:
        subscriptions = self.subscriptions
        if command.kind == frames.SUBSCRIBE:
            await subscriptions.subscribe(conn, command.channel, command.since)
        elif command.kind == frames.UNSUBSCRIBE:
            await subscriptions.unsubscribe(conn, command.channel)
        elif command.kind == frames.PRESENCE:
            await subscriptions.list_presence(conn, command.channel)
        else:
            veto = await self.hooks.refresh(conn, command.token)
            if veto is None:
                conn.send_json({"type": "refreshed"})
            else:
                self._refuse_message(conn, veto)

    def _reject(self, conn: Connection, code: str, message: str, channel: str | None) -> None:
        self.metrics.messages_rejected.labels(code).inc()
        extra = {"channel": channel} if channel is not None else {}
        conn.send_json(frames.error_payload(code, message, **extra))

    def _refuse_message(self, conn: Connection, veto: Veto) -> None:
        if veto.code is not None:
            self.metrics.messages_rejected.labels(veto.code).inc()
        if veto.close_code is not None:
            conn.close(veto.close_code, veto.message, veto.error_frame())
        elif veto.code is not None:
            conn.send_json(veto.error_frame())

    def pong(self, conn: Connection | None, data: bytes) -> None:
        """The client answered a ping: the on_pong hooks (the heartbeat) take note."""
        if conn is not None and conn.admitted and self.hooks.wants_pongs():
            self._background(self.hooks.pong(conn, data))

    def disconnect(self, user: str, reason: str) -> int:
        """Close every connection of `user` here (forbidden, 1008); how many."""
        mine = [c for c in self.hub.connections() if c.user == user and not c.closing]
        for conn in mine:
            conn.fail(frames.FORBIDDEN, reason, frames.CLOSE_POLICY)
        return len(mine)

    # -- close ----------------------------------------------------------------------

    def close(self, conn: Connection | None) -> None:
        """The connection ended: leave the hub now, the rest in the background."""
        if conn is None or not conn.admitted:
            return
        conn.admitted = False
        channels = self.hub.remove(conn)
        self.metrics.connections.dec()
        self._background(self._closed(conn, channels))

    async def _closed(self, conn: Connection, channels: list[str]) -> None:
        await self.subscriptions.closed(conn, channels)
        await self.hooks.close(conn)

    def _background(self, hooks: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(hooks)
        self._hook_tasks.add(task)
        task.add_done_callback(self._hook_tasks.discard)

    async def closed(self) -> None:
        """Wait for the close (and pong) hooks still running (before shutdown hooks
        release stores)."""
        while self._hook_tasks:
            await asyncio.gather(*list(self._hook_tasks), return_exceptions=True)

    # -- accounting -----------------------------------------------------------------

    def _count_fanout(self, batch: list, recipients: int) -> None:
        if not recipients:
            return
        now = self.wall()
        metrics = self.metrics
        metrics.fanout_batches.inc()
        for entry in batch:
            if entry.origin is not None:
                continue  # a presence event
            metrics.delivered(entry.cls or "unknown").inc(recipients)
            if entry.ts:
                metrics.delivery_latency.observe(max(0.0, now - entry.ts))

    def _count_drop(self, conn: Connection, count: int) -> None:
        self.metrics.queue_dropped.inc(count)
        if conn.closing:
            self.metrics.slow_consumers.inc()
            log.warning(
                "closed slow consumer %s from %s (%d frames dropped)",
                conn.client_id,
                conn.ip,
                conn.dropped,
            )
