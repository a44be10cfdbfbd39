"""The WebSocket endpoint: Tornado's events in, hook calls out, no feature logic."""

from __future__ import annotations

import logging
from typing import Any

import tornado.web
import tornado.websocket
from tornado.iostream import StreamClosedError

from core.engine.connection import Connection
from core.wire import frames

log = logging.getLogger("server")


class _TooBigAwareProtocol(tornado.websocket.WebSocketProtocol13):
    """Tornado's protocol, telling the client why before it closes with 1009."""

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        stream = self.stream
        if code == frames.CLOSE_TOO_BIG and not self.server_terminated and stream is not None:
            try:
                stream.write(
                    frames.json_frame(
                        frames.error_payload(
                            frames.INVALID_MESSAGE,
                            "the frame is larger than the server's max_message_size",
                            max_message_size=self.params.max_message_size,
                        )
                    )
                )
            except StreamClosedError:
                pass
        super().close(code, reason)


class WebSocketHandler(tornado.websocket.WebSocketHandler):
    """`/ws`: hands open / message / pong / close to the instance's dispatcher."""

    def initialize(self, server: Any) -> None:
        self.server = server
        self.conn: Connection | None = None

    def check_origin(self, origin: str) -> bool:
        """Cross-origin browsers are refused (403) unless in `allowed_origins`."""
        return self.server.origins.allows(origin)

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        if isinstance(protocol, tornado.websocket.WebSocketProtocol13):
            return _TooBigAwareProtocol(self, False, protocol.params)
        return protocol

    def get_compression_options(self) -> None:
        # No permessage-deflate: it costs ~200 KB per connection and would make
        # every recipient's copy of a broadcast different.
        return None

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if self.server.draining:
            self.set_status(503)
            self.finish("draining")
            return
        await super().get(*args, **kwargs)

    async def open(self) -> None:
        """A client connected: admit it (or not) through the on_connect hooks."""
        ip = self.server.client_address.resolve(
            self.request.remote_ip, self.request.headers.get("X-Forwarded-For")
        )
        self.set_nodelay(True)
        self.conn = await self.server.dispatcher.open(
            self,
            ip,
            self.get_query_argument("session", None) or None,
            self.get_query_argument("since", None) or None,
        )

    async def on_message(self, message: str | bytes) -> None:
        """A frame from the client: the on_message hooks decide its fate."""
        await self.server.dispatcher.message(self.conn, message)

    def on_pong(self, data: bytes) -> None:
        """The client answered a heartbeat ping."""
        self.server.dispatcher.pong(self.conn)

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
