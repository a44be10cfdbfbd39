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
from collections.abc import Callable, Mapping

import tornado.netutil
import tornado.web
from tornado.httpserver import HTTPServer

from core.access.client_ip import ClientAddress
from core.access.origins import OriginPolicy
from core.config.settings import Settings
from core.engine.dispatcher import Dispatcher
from core.engine.hookrunner import PluginChain
from core.engine.hub import Hub
from core.engine.services import Services
from core.ops.metrics import Metrics
from core.stores.broker import LogPolicy
from core.stores.factory import Stores, open_stores
from core.wire import frames
from handlers.http import (
    HealthHandler,
    IndexHandler,
    MetricsHandler,
    StaticHandler,
    log_request,
)
from handlers.websocket import WebSocketHandler

log = logging.getLogger("server")

STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")


def log_policy(settings: Settings) -> LogPolicy | None:
    """What the history plugin asks the broker to keep; None without it."""
    history = settings.plugin("history")
    if history is None:
        return None
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
        self.app: tornado.web.Application | None = None
        self.services: Services | None = None
        self.port: int | None = None
        self.stopped = asyncio.Event()

    # -- start ----------------------------------------------------------------------

    async def start(self) -> None:
        """Build everything, run on_startup hooks, then listen."""
        s = self.settings
        self.stores = await open_stores(s.store, log_policy(s), self.instance_id, self.metrics)
        self.hub = Hub(self.stores.local_broker())
        services = self.services = Services(
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
            self.app = self.application()
            self.http = HTTPServer(self.app, xheaders=False)
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
            log_function=log_request,
        )

    # -- reload ---------------------------------------------------------------------

    async def reload(self, settings: Settings) -> list[str]:
        """Apply new, validated settings without dropping a connection.

        Returns the changed keys that only take effect after a restart (they keep their
        running values): where to listen, the instance id, the store.
        """
        old = self.settings
        needs_restart = [
            key
            for key, before, after in (
                ("server.host", old.server.host, settings.server.host),
                ("server.port", old.server.port, settings.server.port),
                ("server.instance_id", old.instance_id, settings.instance_id),
                ("store", old.store, settings.store),
            )
            if before != after
        ]
        kept = {p.name: p for p in self.chain.plugins}
        plugins, added = [], []
        for name, block in settings.enabled_plugins():
            plugin = kept.pop(name, None)
            if plugin is None:
                plugin = self.registry[name](block, self.services)
                added.append(plugin)
            plugins.append(plugin)
        retired = list(kept.values())
        chain = PluginChain(plugins, self.metrics)
        chain.adopt([p for p in plugins if p not in added])
        try:
            await chain.start_some(added)
        except Exception:
            log.exception("reload: a plugin failed to start; the running configuration stays")
            return needs_restart
        self.settings = self.services.settings = settings
        for plugin in plugins:
            if plugin not in added:
                await chain.reload(plugin, settings.plugins[plugin.name])
        self.chain = self.dispatcher.chain = chain
        await chain.retire(retired, list(self.hub.connections()))
        self.dispatcher.classes = message_classes(settings)
        self.stores.log_policy = log_policy(settings)
        self.hub.broker.set_log(self.stores.log_policy)
        self.origins = OriginPolicy(settings.server.allowed_origins)
        self.client_address = ClientAddress(settings.server.trusted_proxies)
        self.app.settings["websocket_max_message_size"] = settings.server.max_message_size
        log.info(
            "configuration reloaded from %s (plugins: %s)",
            settings.source,
            ", ".join(p.name for p in plugins) or "none",
        )
        return needs_restart

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
        """Drain: /healthz answers 503 at once (and new WebSockets get 503) so a load
        balancer sends nobody more; queued frames are flushed; every client is closed
        with 1001; then the listener closes and this instance's state in the store is
        released.

        Everything happens within `timeout` (server.shutdown_timeout): what is not done
        by then is cut short.
        """
        if self.draining:
            await self.stopped.wait()
            return
        self.draining = True
        timeout = self.settings.server.shutdown_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        connections = list(self.hub.connections()) if self.hub is not None else []
        log.info("draining: %d clients", len(connections))
        # Let queued frames go out (a third of the budget), then say goodbye.
        await self._until(
            lambda: all(c.flushed() or c.closing for c in connections), loop.time() + timeout / 3
        )
        for conn in connections:
            conn.close(frames.CLOSE_GOING_AWAY, "server shutting down")
        # Give clients until shortly before the deadline to answer the close handshake.
        await self._until(lambda: len(self.hub) == 0, deadline - min(0.5, timeout / 4))
        if self.http is not None:
            self.http.stop()
        for conn in list(self.hub.connections()):
            conn.stream.close()
        try:
            await asyncio.wait_for(self.dispatcher.closed(), max(0.05, deadline - loop.time()))
        except TimeoutError:
            log.warning("close hooks still running at the shutdown deadline")
        await self._release()
        if self.http is not None:
            await self.http.close_all_connections()
        log.info("instance %s stopped", self.instance_id)
        self.stopped.set()

    @staticmethod
    async def _until(condition: Callable[[], bool], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while not condition() and loop.time() < deadline:  # noqa: ASYNC110 - a poll over many sockets
            await asyncio.sleep(0.01)

    async def abandon(self) -> None:
        """Release what a start-up cut short had taken."""
        await self._release()

    async def _release(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.refusals.close()
        if self.chain is not None:
            await self.chain.shutdown()
        if self.stores is not None:
            await self.stores.close()
