"""One running server instance: builds the stores, hub, plugins and HTTP app, and
stops them in the right order.

Everything is built here and passed in; nothing lives at module level, so tests run
several instances in one process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

import tornado.netutil

from core.access.client_ip import ClientAddress
from core.access.origins import OriginPolicy
from core.config.settings import Settings
from core.engine.channels import ChannelRules
from core.engine.dispatcher import Dispatcher
from core.engine.hookrunner import HookRunner
from core.engine.hooks import Plugin
from core.engine.hub import Hub
from core.engine.presence import Presence
from core.engine.services import Services
from core.engine.subscriptions import Subscriptions
from core.ops.metrics import Metrics
from core.stores.broker import Broker, LogPolicy
from core.stores.factory import Stores, open_stores
from core.transport import WebServer, warn_if_unsupported
from core.wire import frames
from relay.application import application
from relay.declarations import declarations
from relay.event_loop import loop_name

log = logging.getLogger("server")

DISCONNECTED = "disconnected by the app"
# Connections the kernel completes before they are accepted. Tornado's default (128)
# overflows in a reconnect storm: every client of an instance returning at once after a
# deploy. The kernel then drops the handshakes' last packets and the clients retry after
# 1, 2, 4, 8... seconds, so most of the storm is spent waiting, not working. The kernel
# caps it at net.core.somaxconn.
LISTEN_BACKLOG = 4096


class Instance:
    """A server instance: `await start()`, then `await stop()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instance_id = settings.instance_id
        self.metrics = Metrics()
        self.origins = OriginPolicy(settings.server.allowed_origins)
        self.client_address = ClientAddress(
            settings.server.trusted_proxies, settings.server.ipv6_prefix
        )
        self.draining = False
        # One of `server.workers` processes listening on the same port (SO_REUSEPORT).
        self.shares_port = settings.server.workers > 1
        self.stores: Stores | None = None
        self.hub: Hub | None = None
        self.hooks: HookRunner | None = None
        self.dispatcher: Dispatcher | None = None
        self.http: WebServer | None = None
        self.app = None
        self.services: Services | None = None
        self.presence: Presence | None = None
        self.plugins: dict[str, Plugin] = {}  # the enabled ones, by their key in config.yaml
        self.port: int | None = None
        self.stopped = asyncio.Event()

    # -- start ----------------------------------------------------------------------

    def _plugin(self, settings: Settings, name: str) -> Plugin:
        return settings.plugin_classes[name](settings.plugins[name], self.services)

    async def start(self) -> None:
        """Build everything, run on_startup hooks, then listen."""
        s = self.settings
        warn_if_unsupported()
        self.stores = await open_stores(s.store, self.instance_id, self.metrics)
        self.hub = Hub(self.stores.local_broker())
        self.hub.broker.on_control(self._on_control)
        declared = declarations(s)
        services = self.services = Services(
            settings=s,
            hub=self.hub,
            stores=self.stores,
            metrics=self.metrics,
            instance_id=self.instance_id,
            clock=time.monotonic,
            wall=time.time,
        )
        self.plugins = {name: self._plugin(s, name) for name, _ in s.enabled_plugins()}
        self.hooks = HookRunner(list(self.plugins.values()), self.metrics)
        self.presence = Presence(
            self.stores.presence, self.hub, self.instance_id, s.store.instance_ttl
        )
        subscriptions = Subscriptions(
            self.hub,
            self.presence,
            ChannelRules.from_settings(s.channels, declared.default_channel),
            history=lambda: services.history.value,
            hooks=lambda: self.hooks,
        )
        self.dispatcher = Dispatcher(
            hub=self.hub,
            hooks=self.hooks,
            subscriptions=subscriptions,
            classes=declared.classes,
            instance_id=self.instance_id,
            metrics=self.metrics,
        )
        self.dispatcher.use_max_bytes(s.server.max_queued_bytes)
        self.metrics.channels.set_function(lambda: len(self.hub.channels()))
        self.metrics.subscriptions.set_function(self.hub.subscriptions)
        self.metrics.presence.set_function(lambda: len(self.presence))
        # What features provide reaches the engine through these, and only these.
        services.queue_policy.watch(self.dispatcher.use_policy)
        services.log_policy.watch(self._use_log_policy)
        services.broker.watch(self._use_broker)
        try:
            await self.hooks.startup()
            self.presence.start()
            self.app = application(self)
            self.http = WebServer(
                self.app,
                xheaders=False,
                # A request (or WebSocket upgrade) not complete by then is dropped.
                idle_connection_timeout=s.server.handshake_timeout,
                body_timeout=s.server.handshake_timeout,
            )
            sockets = tornado.netutil.bind_sockets(
                s.server.port, s.server.host, reuse_port=self.shares_port, backlog=LISTEN_BACKLOG
            )
        except BaseException:
            await self._release()
            raise
        self.http.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        if not s.plugins:
            log.warning("plugins: {} in %s: every feature is off", s.source)
        log.info(
            "instance %s listening on %s:%d (store: %s, plugins: %s, loop: %s)",
            self.instance_id,
            s.server.host,
            self.port,
            self.stores.backend,
            ", ".join(self.plugins) or "none",
            loop_name(),
        )

    def _use_log_policy(self, policy: LogPolicy | None) -> None:
        self.services.broker.value.set_log(policy)

    def _use_broker(self, broker: Broker) -> None:
        broker.set_log(self.services.log_policy.value)
        broker.on_control(self._on_control)
        self.hub.use_broker(broker)

    def disconnect(self, user: str) -> int:
        """Close `user`'s connections here, and tell every other instance to close
        theirs (the backend API's disconnect); how many were here."""
        closed = self.dispatcher.disconnect(user, DISCONNECTED)
        request = {"disconnect": user, "from": self.instance_id}
        self.hub.broker.publish_control(json.dumps(request).encode())
        return closed

    def _on_control(self, payload: bytes) -> None:
        try:
            request = json.loads(payload)
        except ValueError:
            return
        if not isinstance(request, dict) or request.get("from") == self.instance_id:
            return  # not one, or ours: done already
        user = request.get("disconnect")
        if isinstance(user, str):
            self.dispatcher.disconnect(user, DISCONNECTED)

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
                ("server.workers", old.server.workers, settings.server.workers),
                ("server.event_loop", old.server.event_loop, settings.server.event_loop),
                ("store", old.store, settings.store),
            )
            if before != after
        ]
        kept = dict(self.plugins)
        plugins: dict[str, Plugin] = {}
        added = []
        for name, _ in settings.enabled_plugins():
            plugin = kept.get(name)
            if plugin is not None and type(plugin) is settings.plugin_classes[name]:
                del kept[name]  # carried over
            else:
                plugin = self._plugin(settings, name)
                added.append(plugin)
            plugins[name] = plugin
        retired = list(kept.values())
        hooks = HookRunner(list(plugins.values()), self.metrics)
        hooks.adopt([p for p in plugins.values() if p not in added])
        try:
            await hooks.start_some(added)
        except Exception:
            log.exception("reload: a plugin failed to start; the running configuration stays")
            for plugin in added:
                self.services.withdraw(plugin)
            return needs_restart
        self.settings = self.services.settings = settings
        for name, plugin in plugins.items():
            if plugin not in added:
                await hooks.reload(plugin, settings.plugins[name])
        self.hooks = self.dispatcher.hooks = hooks
        self.plugins = plugins
        await hooks.retire(retired, list(self.hub.connections()))
        for plugin in retired:
            self.services.withdraw(plugin)
        declared = declarations(settings)
        self.dispatcher.classes = declared.classes
        self.dispatcher.use_rules(
            ChannelRules.from_settings(settings.channels, declared.default_channel)
        )
        self.dispatcher.use_max_bytes(settings.server.max_queued_bytes)
        self.origins = OriginPolicy(settings.server.allowed_origins)
        self.client_address = ClientAddress(
            settings.server.trusted_proxies, settings.server.ipv6_prefix
        )
        self.app.settings["websocket_max_message_size"] = settings.server.max_message_size
        log.info(
            "configuration reloaded from %s (plugins: %s)",
            settings.source,
            ", ".join(plugins) or "none",
        )
        return needs_restart

    # -- health ---------------------------------------------------------------------

    def health(self) -> dict:
        redis = self.stores.redis_state if self.stores is not None else None
        if self.draining:
            status = "draining"
        elif redis == "down" or (self.stores is not None and self.stores.split):
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
        if self.shares_port and self.http is not None:
            # While it listens, the kernel keeps giving this worker its share of new
            # connections, only to be turned away: closed, they go to the workers still
            # serving (or are refused once every worker drains).
            self.http.stop()
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
            conn.transport.abort()
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
        if self.presence is not None:
            await self.presence.stop()
        if self.hooks is not None:
            await self.hooks.shutdown()
        if self.stores is not None:
            await self.stores.close()
