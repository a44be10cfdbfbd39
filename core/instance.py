"""One running server instance: builds the stores, hub, plugins and HTTP app, and
stops them in the right order.

Everything is built here and passed in; nothing lives at module level, so tests run
several instances in one process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping

import tornado.netutil
import tornado.web
from tornado.httpserver import HTTPServer

from core import frames
from core.client_ip import ClientAddress
from core.config import Settings
from core.dispatcher import Dispatcher
from core.hub import Hub
from core.metrics import Metrics
from core.origins import OriginPolicy
from core.services import Services
from core.stores.factory import LogPolicy, Stores, open_stores
from handlers.http import HealthHandler, IndexHandler, MetricsHandler, StaticHandler
from handlers.websocket import WebSocketHandler
from plugins.chain import PluginChain

log = logging.getLogger("server")

STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")

# Without the history plugin the broker still keeps a short log, which a Redis
# subscriber uses to recover what it missed while reconnecting.
RECOVERY_LOG = LogPolicy(size=1000, ttl=60.0)


def log_policy(settings: Settings) -> LogPolicy:
    history = settings.plugin("history")
    if history is None:
        return RECOVERY_LOG
    return LogPolicy(size=history.size, ttl=history.ttl)


def message_classes(settings: Settings) -> Mapping[str, int]:
    block = settings.plugins.get("priority")
    return block.classes if block is not None else frames.DEFAULT_CLASSES


class Instance:
    """A server instance: `await start()`, then `await stop()`."""

    def __init__(self, settings: Settings, registry: Mapping[str, type]) -> None:
        self.settings = settings
        self.registry = registry
        self.instance_id = settings.instance_id
        self.metrics = Metrics()
        self.origins = OriginPolicy(settings.server.allowed_origins)
        self.client_address = ClientAddress(settings.server.trusted_proxies)
        self.draining = False
        self.stores: Stores | None = None
        self.hub: Hub | None = None
        self.chain: PluginChain | None = None
        self.dispatcher: Dispatcher | None = None
        self.http: HTTPServer | None = None
        self.port: int | None = None
        self.stopped = asyncio.Event()

    # -- start ----------------------------------------------------------------------

    async def start(self) -> None:
        """Build everything, run on_startup hooks, then listen."""
        s = self.settings
        self.stores = await open_stores(s.store, log_policy(s), self.instance_id, self.metrics)
        self.hub = Hub(self.stores.local_broker())
        services = Services(
            settings=s,
            hub=self.hub,
            stores=self.stores,
            metrics=self.metrics,
            instance_id=self.instance_id,
            clock=time.monotonic,
            wall=time.time,
        )
        plugins = [self.registry[name](block, services) for name, block in s.enabled_plugins()]
        self.chain = PluginChain(plugins, self.metrics)
        self.dispatcher = Dispatcher(
            hub=self.hub,
            chain=self.chain,
            classes=message_classes(s),
            instance_id=self.instance_id,
            metrics=self.metrics,
        )
        try:
            await self.chain.startup()
            self.http = HTTPServer(self.application(), xheaders=False)
            sockets = tornado.netutil.bind_sockets(s.server.port, s.server.host)
        except BaseException:
            await self._release()
            raise
        self.http.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        log.info(
            "instance %s listening on %s:%d (store: %s, plugins: %s)",
            self.instance_id,
            s.server.host,
            self.port,
            self.stores.backend,
            ", ".join(p.name for p in plugins) or "none",
        )

    def application(self) -> tornado.web.Application:
        return tornado.web.Application(
            [
                (r"/", IndexHandler, {"path": os.path.join(STATIC_DIR, "index.html")}),
                (r"/static/(.*)", StaticHandler, {"path": STATIC_DIR}),
                (r"/healthz", HealthHandler, {"server": self}),
                (r"/metrics", MetricsHandler, {"server": self}),
                (r"/ws", WebSocketHandler, {"server": self}),
            ],
            websocket_max_message_size=self.settings.server.max_message_size,
            compress_response=False,
        )

    # -- health ---------------------------------------------------------------------

    def health(self) -> dict:
        redis = self.stores.redis_state if self.stores is not None else None
        if self.draining:
            status = "draining"
        elif redis == "down":
            status = "degraded"
        else:
            status = "ok"
        return {
            "status": status,
            "instance": self.instance_id,
            "connections": len(self.hub) if self.hub is not None else 0,
            "store": self.stores.backend if self.stores is not None else None,
            "redis": redis,
        }

    # -- stop -----------------------------------------------------------------------

    async def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, close every client with 1001, release the stores."""
        if self.draining:
            await self.stopped.wait()
            return
        self.draining = True
        timeout = self.settings.server.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        if self.http is not None:
            self.http.stop()
        log.info("instance %s stopping: closing %d clients", self.instance_id, len(self.hub))
        for conn in list(self.hub.connections()):
            conn.close(frames.CLOSE_GOING_AWAY, "server shutting down")
        # Wait for the clients' close handshakes (bounded), then for the close hooks.
        while len(self.hub) and time.monotonic() < deadline - 0.5:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for conn in list(self.hub.connections()):
            conn.stream.close()
        try:
            await asyncio.wait_for(self.dispatcher.closed(), max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            log.warning("close hooks still running at the shutdown deadline")
        await self._release()
        if self.http is not None:
            await self.http.close_all_connections()
        log.info("instance %s stopped", self.instance_id)
        self.stopped.set()

    async def _release(self) -> None:
        if self.chain is not None:
            await self.chain.shutdown()
        if self.stores is not None:
            await self.stores.close()
