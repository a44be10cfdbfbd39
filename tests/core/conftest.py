"""A bare endpoint on the real transport, for engine tests below the dispatcher's
caller: each test gets the server side of real WebSocket connections to drive."""

from __future__ import annotations

import pytest
import tornado.netutil
import tornado.web

from core.transport import TornadoTransport, WebServer, WebSocketEndpoint, missing_internals
from tests.support.raw_ws import RawWebSocket
from tests.support.waiting import until


class Endpoint(WebSocketEndpoint):
    """Records each open connection's transport and what Tornado lacks."""

    def initialize(self, opened: list, server: list) -> None:
        self.opened = opened
        self.http_server = server[0]

    def open(self) -> None:
        self.opened.append((self.transport(), missing_internals(self, self.http_server)))


@pytest.fixture
def endpoint(io_loop):
    opened: list[tuple[TornadoTransport, list[str]]] = []
    holder: list[WebServer] = []
    app = tornado.web.Application([(r"/ws", Endpoint, {"opened": opened, "server": holder})])
    server = WebServer(app)
    holder.append(server)
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    yield sockets[0].getsockname()[1], opened
    server.stop()


async def connect(endpoint, **options) -> tuple[RawWebSocket, TornadoTransport]:
    """A raw client connected to `endpoint`, and the server side's transport."""
    port, opened = endpoint
    before = len(opened)
    client = await RawWebSocket.connect(port, **options)
    await until(lambda: len(opened) > before)
    return client, opened[-1][0]
