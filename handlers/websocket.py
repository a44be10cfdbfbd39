"""The WebSocket endpoint: Tornado's events in, dispatcher calls out, no feature logic."""

from __future__ import annotations

import logging
from typing import Any

import tornado.web

from core.engine.connection import Connection
from core.transport import WebSocketEndpoint
from core.wire import frames

log = logging.getLogger("server")


class WebSocketHandler(WebSocketEndpoint):
    """`/ws`: hands open / message / pong / close to the instance's dispatcher."""

    def initialize(self, server: Any) -> None:
        self.server = server
        self.conn: Connection | None = None

    def check_origin(self, origin: str) -> bool:
        """Cross-origin browsers are refused (403) unless in `allowed_origins`."""
        return self.server.origins.allows(origin)

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if self.server.draining:
            self.set_status(503)
            self.finish("draining")
            return
        await super().get(*args, **kwargs)

    async def open(self) -> None:
        """A client connected: admit it (or not) through the on_connect hooks."""
        address = self.server.client_address
        ip = address.resolve(self.request.remote_ip, self.request.headers.get("X-Forwarded-For"))
        self.set_nodelay(True)
        query = {
            name: values[0].decode("utf-8", "replace")
            for name, values in self.request.query_arguments.items()
            if values and values[0]
        }
        self.conn = await self.server.dispatcher.open(
            self.transport(), ip, query, address.limit_key(ip)
        )

    async def on_message(self, message: str | bytes) -> None:
        """A frame from the client: the on_message hooks decide its fate."""
        await self.server.dispatcher.message(self.conn, message)

    def on_pong(self, data: bytes) -> None:
        """The client answered a ping: the on_pong hooks take note."""
        self.server.dispatcher.pong(self.conn, data)

    def last_words(self, code: int, max_message_size: int) -> bytes | None:
        """Before the transport closes on its own (1009: a frame too big; 1002: an
        unmasked frame), tell the client why."""
        if code == frames.CLOSE_TOO_BIG:
            error = frames.error_payload(
                frames.INVALID_MESSAGE,
                "the frame is larger than the server's max_message_size",
                max_message_size=max_message_size,
            )
        elif code == frames.CLOSE_PROTOCOL_ERROR:
            error = frames.error_payload(
                frames.INVALID_MESSAGE, "client frames must be masked (RFC 6455 5.1)"
            )
        else:
            return None
        return frames.json_frame(error)

    def log_exception(self, typ, value, tb) -> None:
        """Log a failure without the request URI: its query may hold a session token."""
        if value is not None and not isinstance(value, tornado.web.HTTPError):
            log.error(
                "error on %s from %s", self.request.path, self.request.remote_ip,
                exc_info=(typ, value, tb),
            )  # fmt: skip

    def on_close(self) -> None:
        """The connection ended: the on_close hooks give back what it held."""
        self.server.dispatcher.close(self.conn)
