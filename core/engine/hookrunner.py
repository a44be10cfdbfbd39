"""Runs the enabled plugins' hooks in order, as `core.engine.hooks` specifies.

The chain is built once (and again on reload) from the plugins in `plugins:` order. For
each hook it keeps only the plugins that override it, and whether the override is a
coroutine, so a message costs one call per plugin that cares about messages.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from core.engine.hooks import Plugin, Veto
from core.wire import frames

if TYPE_CHECKING:
    from core.engine.connection import Connection
    from core.engine.message import Message
    from core.ops.metrics import Metrics

log = logging.getLogger("plugins")

CONNECT_FAILED = Veto(
    frames.INTERNAL_ERROR, "the server could not accept the connection", frames.CLOSE_INTERNAL
)
MESSAGE_FAILED = Veto(frames.INTERNAL_ERROR, "the server could not handle the message")

Hook = tuple[Plugin, Callable[..., Any], bool]


class PluginChain:
    """The ordered, frozen list of enabled plugins and their hooks."""

    def __init__(self, plugins: Sequence[Plugin], metrics: Metrics | None = None) -> None:
        self.plugins = list(plugins)
        self._metrics = metrics
        self._startup = self._hooks("on_startup")
        self._connect = self._hooks("on_connect")
        self._welcome = self._hooks("on_welcome")
        self._message = self._hooks("on_message")
        self._close = self._hooks("on_close")[::-1]
        self._shutdown = self._hooks("on_shutdown")[::-1]
        self._position = {p: i for i, p in enumerate(self.plugins)}
        self._started: list[Plugin] = []

    def _hooks(self, name: str) -> list[Hook]:
        hooks = []
        for plugin in self.plugins:
            method = getattr(plugin, name)
            if getattr(type(plugin), name) is getattr(Plugin, name):
                continue
            hooks.append((plugin, method, inspect.iscoroutinefunction(method)))
        return hooks

    def get(self, name: str) -> Plugin | None:
        for plugin in self.plugins:
            if plugin.name == name:
                return plugin
        return None

    def _failed(self, plugin: Plugin, hook: str, conn: Connection | None = None) -> None:
        who = f" for {conn.client_id}" if conn is not None else ""
        log.exception("plugin %s: %s failed%s", plugin.name, hook, who)
        if self._metrics is not None:
            self._metrics.hook_errors.labels(plugin.name, hook).inc()

    async def startup(self) -> None:
        """Run every on_startup in order; the first failure propagates (start-up stops).

        Only plugins whose on_startup ran (the failing one included: it may have
        half-started) get on_shutdown afterwards.
        """
        starting = {p for p, _, _ in self._startup}
        self._started = [p for p in self.plugins if p not in starting]
        for plugin, hook, is_async in self._startup:
            self._started.append(plugin)
            result = hook()
            if is_async:
                await result

    async def connect(self, conn: Connection) -> Veto | None:
        for plugin, hook, is_async in self._connect:
            try:
                veto = hook(conn)
                if is_async:
                    veto = await veto
            except Exception:
                self._failed(plugin, "on_connect", conn)
                veto = CONNECT_FAILED
            if veto is not None:
                if veto.close_code is None:
                    veto = Veto(veto.code, veto.message, frames.CLOSE_POLICY, veto.extra)
                await self._close_before(conn, plugin)
                return veto
        return None

    async def welcome(self, conn: Connection) -> None:
        for plugin, hook, is_async in self._welcome:
            try:
                result = hook(conn)
                if is_async:
                    await result
            except Exception:
                self._failed(plugin, "on_welcome", conn)

    async def message(self, conn: Connection, message: Message) -> Veto | None:
        for plugin, hook, is_async in self._message:
            try:
                veto = hook(conn, message)
                if is_async:
                    veto = await veto
            except Exception:
                self._failed(plugin, "on_message", conn)
                return MESSAGE_FAILED
            if veto is not None:
                return veto
        return None

    async def close(self, conn: Connection) -> None:
        await self._run_close(conn, self._close)

    async def _close_before(self, conn: Connection, refuser: Plugin) -> None:
        """on_close for the plugins ahead of `refuser`, which admitted the connection."""
        limit = self._position[refuser]
        await self._run_close(conn, [h for h in self._close if self._position[h[0]] < limit])

    async def _run_close(self, conn: Connection, hooks: list[Hook]) -> None:
        for plugin, hook, is_async in hooks:
            try:
                result = hook(conn)
                if is_async:
                    await result
            except Exception:
                self._failed(plugin, "on_close", conn)

    def adopt(self, running: Sequence[Plugin]) -> None:
        """Count `running` plugins (carried over by a reload) as started."""
        self._started.extend(p for p in running if p not in self._started)

    async def start_some(self, plugins: Sequence[Plugin]) -> None:
        """on_startup for plugins added by a reload, in chain order. If one raises, those
        that started (it included) are shut down again and the error propagates."""
        wanted = set(plugins)
        started: list[Plugin] = []
        try:
            for plugin, hook, is_async in self._startup:
                if plugin in wanted:
                    started.append(plugin)
                    result = hook()
                    if is_async:
                        await result
        except BaseException:
            await self.retire(started, [])
            raise
        self._started.extend(p for p in plugins if p not in self._started)

    async def retire(self, plugins: Sequence[Plugin], connections: Sequence[Connection]) -> None:
        """Plugins removed by a reload: on_close for every live connection, then on_shutdown.

        So a plugin gives back everything it holds (a throttle slot per connection) before
        it stops, exactly as if each connection had closed.
        """
        for plugin in reversed(plugins):
            if type(plugin).on_close is not Plugin.on_close:
                for conn in connections:
                    try:
                        result = plugin.on_close(conn)
                        if inspect.isawaitable(result):
                            await result
                    except Exception:
                        self._failed(plugin, "on_close", conn)
            try:
                result = plugin.on_shutdown()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                self._failed(plugin, "on_shutdown")

    async def reload(self, plugin: Plugin, settings: object) -> None:
        """Give a plugin carried over by a reload its new settings."""
        try:
            result = plugin.on_reload(settings)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self._failed(plugin, "on_reload")

    async def shutdown(self) -> None:
        started = set(self._started)
        for plugin, hook, is_async in self._shutdown:
            if plugin not in started:
                continue
            try:
                result = hook()
                if is_async:
                    await result
            except Exception:
                self._failed(plugin, "on_shutdown")
