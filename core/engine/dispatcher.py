"""What happens to a connection between Tornado's events, in the core's own terms.

open:    Connection -> on_connect hooks (may refuse) -> join the hub (live messages held)
         -> welcome frame -> on_welcome hooks (history) -> go live
message: parse + check the frame -> on_message hooks (may veto) -> publish through the hub
close:   leave the hub -> on_close hooks, in reverse

The WebSocket handler calls these and nothing else; the features are in the plugins.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from core.engine.connection import Connection
from core.engine.message import Message
from core.engine.outbox import OutboxPolicy
from core.ops.refusals import RefusalLog
from core.wire import frames

if TYPE_CHECKING:
    from tornado.websocket import WebSocketHandler

    from core.engine.hookrunner import PluginChain
    from core.engine.hooks import Veto
    from core.engine.hub import Hub
    from core.ops.metrics import Metrics

log = logging.getLogger("server")


class Dispatcher:
    """Turns one instance's WebSocket events into hook calls and hub operations."""

    def __init__(
        self,
        *,
        hub: Hub,
        chain: PluginChain,
        classes: Mapping[str, int],
        instance_id: str,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.hub = hub
        self.chain = chain
        self.classes = classes
        self.instance_id = instance_id
        self.metrics = metrics
        self.clock = clock
        self.wall = wall
        # Without the priority plugin, queues are plain FIFOs of the same bound.
        self.default_policy = OutboxPolicy(ordered=False)
        self._closing: set[asyncio.Task] = set()
        self.refusals = RefusalLog(log)
        hub.on_fanout = self._count_fanout

    # -- open -----------------------------------------------------------------------

    async def open(
        self, handler: WebSocketHandler, ip: str, session: str | None, since: str | None
    ) -> Connection | None:
        """Admit a new WebSocket, or refuse it; returns the admitted connection."""
        conn = Connection(handler, ip, session, since, self.clock)
        conn.policy = self.default_policy
        conn.on_drop = self._count_drop
        veto = await self.chain.connect(conn)
        if veto is not None:
            self.metrics.connections_refused.labels(veto.code or "refused").inc()
            self.refusals.note(veto.code or "refused", ip)
            conn.close(veto.close_code or frames.CLOSE_POLICY, veto.message, veto.error_frame())
            return None
        if conn.closing:  # a plugin closed it while admitting
            await self.chain.close(conn)
            return None
        conn.admitted = True
        self.metrics.connections_opened.inc()
        self.metrics.connections.inc()
        self.hub.join(conn)
        conn.send_json(self._welcome(conn))
        await self.chain.welcome(conn)
        self.hub.go_live(conn, conn.replayed_through)
        return conn

    def _welcome(self, conn: Connection) -> dict:
        return {
            "type": "welcome",
            "client_id": conn.client_id,
            "session": conn.session,
            "resumed": conn.resumed,
            "instance": self.instance_id,
            "heartbeat": {"interval": None},
            "classes": dict(self.classes),
            **conn.welcome,
        }

    # -- messages -------------------------------------------------------------------

    async def message(self, conn: Connection | None, data: str | bytes) -> None:
        """One frame from the client: check it, run the hooks, broadcast it."""
        if conn is None or conn.closing:
            return
        try:
            parsed = frames.parse_client_frame(data, self.classes)
        except frames.FrameError as error:
            self.metrics.messages_rejected.labels(error.code).inc()
            conn.send_json(frames.error_payload(error.code, error.message))
            return
        priority = self.classes[parsed.cls]
        message = Message(parsed.cls, priority, parsed.content, conn.client_id, self.wall())
        veto = await self.chain.message(conn, message)
        if veto is not None:
            self._refuse_message(conn, veto)
            return
        self.metrics.messages_in.labels(parsed.cls).inc()
        tail = frames.message_tail(conn.client_id, parsed.cls, priority, parsed.content, message.ts)
        self.hub.publish(priority, tail, message.ts, parsed.cls)

    def _refuse_message(self, conn: Connection, veto: Veto) -> None:
        if veto.code is not None:
            self.metrics.messages_rejected.labels(veto.code).inc()
        if veto.close_code is not None:
            conn.close(veto.close_code, veto.message, veto.error_frame())
        elif veto.code is not None:
            conn.send_json(veto.error_frame())

    def pong(self, conn: Connection | None) -> None:
        if conn is not None:
            conn.last_pong = self.clock()

    # -- close ----------------------------------------------------------------------

    def close(self, conn: Connection | None) -> None:
        """The connection ended: leave the hub now, run the close hooks in the background."""
        if conn is None or not conn.admitted:
            return
        conn.admitted = False
        self.hub.leave(conn)
        self.metrics.connections.dec()
        task = asyncio.ensure_future(self.chain.close(conn))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def closed(self) -> None:
        """Wait for the close hooks still running (before shutdown hooks release stores)."""
        while self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)

    # -- accounting -----------------------------------------------------------------

    def _count_fanout(self, batch: list, recipients: int) -> None:
        if not recipients:
            return
        now = self.wall()
        metrics = self.metrics
        metrics.fanout_batches.inc()
        for entry in batch:
            metrics.messages_out.labels(entry.cls or "unknown").inc(recipients)
            if entry.ts:
                metrics.delivery_latency.observe(max(0.0, now - entry.ts))

    def _count_drop(self, conn: Connection, count: int) -> None:
        self.metrics.queue_dropped.inc(count)
        if conn.closing:
            self.metrics.slow_consumers.inc()
            log.warning(
                "closed slow consumer %s from %s after %d dropped frames",
                conn.client_id,
                conn.ip,
                conn.dropped,
            )
