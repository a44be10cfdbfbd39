"""Runs the enabled plugins' hooks as `core.engine.hooks.HOOKS` declares them.

The runner is built once (and again on reload) from the plugins in `plugins:` order.
For each hook it keeps only the plugins that override it, in the declared order, and
whether each override is a coroutine (decided once, here), so a message costs one call
per plugin that cares about messages. Every call goes through one loop, `_multicall`
(pluggy's `_multicall` is the model): call, await if needed, apply the declared
failure and result semantics.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from core.engine.hooks import CONTINUE, HOOKS, RAISE, HookSpec, Plugin, Veto, verify_hooks
from core.wire import frames

if TYPE_CHECKING:
    from core.engine.connection import Connection
    from core.engine.message import Message
    from core.ops.metrics import Metrics

log = logging.getLogger("plugins")

NO_REFRESH = Veto(frames.INVALID_MESSAGE, "this server takes no tokens")

Impl = tuple[Plugin, Callable[..., Any], bool]

# The base implementation of these runs for plugins that do not override them.
RUNS_BASE = frozenset({"on_reload"})


def implementations(spec: HookSpec, plugins: Sequence[Plugin]) -> list[Impl]:
    """The plugins' implementations of `spec`, in the order it runs them."""
    impls = []
    base = getattr(Plugin, spec.name)
    for plugin in plugins:
        if getattr(type(plugin), spec.name) is base and spec.name not in RUNS_BASE:
            continue
        method = getattr(plugin, spec.name)
        impls.append((plugin, method, inspect.iscoroutinefunction(method)))
    return impls[::-1] if spec.reverse else impls


class HookRunner:
    """The ordered, frozen list of enabled plugins and their hooks."""

    def __init__(self, plugins: Sequence[Plugin], metrics: Metrics | None = None) -> None:
        self.plugins = list(plugins)
        for plugin in self.plugins:
            verify_hooks(type(plugin))
        self._metrics = metrics
        self._impls = {name: implementations(spec, self.plugins) for name, spec in HOOKS.items()}
        self._position = {p: i for i, p in enumerate(self.plugins)}
        self._started: list[Plugin] = []

    # -- the loop -------------------------------------------------------------------

    async def _multicall(
        self, spec: HookSpec, impls: Sequence[Impl], args: list[Any], conn: Connection | None
    ) -> tuple[Any, Plugin | None]:
        """Run `impls` with `args` as `spec` declares.

        Returns (the first result, the plugin that gave it) for a firstresult hook, and
        (every non-None result, None) for the others. A result of the spec's
        `replacement` type replaces its argument in `args`, in place, for later hooks.
        """
        results: list[Any] = []
        for plugin, hook, is_async in impls:
            try:
                result = hook(*args)
                if is_async:
                    result = await result
                if result is not None and spec.replacement is not None:
                    if isinstance(result, spec.replacement):
                        args[spec.replaces] = result  # type: ignore[index]
                        continue
                    if not isinstance(result, Veto):
                        raise TypeError(
                            f"returned {type(result).__name__}, not a Veto or "
                            f"{spec.replacement.__name__}"
                        )
            except Exception:
                if spec.on_error == RAISE:
                    raise
                self._failed(plugin, spec.name, conn)
                if spec.on_error == CONTINUE:
                    continue
                return spec.on_error, plugin
            if result is None:
                continue
            if spec.firstresult:
                return result, plugin
            results.append(result)
        return (None, None) if spec.firstresult else (results, None)

    def _failed(self, plugin: Plugin, hook: str, conn: Connection | None = None) -> None:
        who = f" for {conn.client_id}" if conn is not None else ""
        log.exception("plugin %s: %s failed%s", plugin.name, hook, who)
        if self._metrics is not None:
            self._metrics.hook_errors.labels(plugin.name, hook).inc()

    async def _run(self, name: str, *args: Any, conn: Connection | None = None) -> Any:
        spec = HOOKS[name]
        result, _ = await self._multicall(spec, self._impls[name], list(args), conn)
        return result

    # -- connection and message hooks --------------------------------------------------

    async def connect(self, conn: Connection) -> Veto | None:
        """on_connect in order; a veto (or a raise) refuses, and the plugins before the
        refusing one get on_close."""
        spec = HOOKS["on_connect"]
        veto, refuser = await self._multicall(spec, self._impls["on_connect"], [conn], conn)
        if veto is None:
            return None
        if not isinstance(veto, Veto):
            self._failed(refuser, "on_connect", conn)
            veto = spec.on_error
        if veto.close_code is None:
            veto = Veto(veto.code, veto.message, frames.CLOSE_POLICY, veto.extra)
        limit = self._position[refuser]
        before = [h for h in self._impls["on_close"] if self._position[h[0]] < limit]
        await self._multicall(HOOKS["on_close"], before, [conn], conn)
        return veto

    async def welcome(self, conn: Connection) -> None:
        """on_welcome in order."""
        await self._run("on_welcome", conn, conn=conn)

    async def _veto(self, name: str, conn: Connection, *args: Any) -> Veto | None:
        """A firstresult hook whose answer is a Veto (or None)."""
        spec = HOOKS[name]
        veto, by = await self._multicall(spec, self._impls[name], [conn, *args], conn)
        if veto is not None and not isinstance(veto, Veto):
            self._failed(by, name, conn)
            return spec.on_error  # type: ignore[return-value]
        return veto

    async def authorize(self, conn: Connection, channel: str) -> Veto | None:
        """on_authorize in order; the first veto (or raise) refuses."""
        return await self._veto("on_authorize", conn, channel)

    async def subscribe(self, conn: Connection, channel: str) -> Veto | None:
        """on_authorize then on_subscribe, in order; the first veto (or raise) refuses."""
        return await self.authorize(conn, channel) or await self._veto(
            "on_subscribe", conn, channel
        )

    async def refresh(self, conn: Connection, token: str) -> Veto | None:
        """on_refresh in order; without one, a refresh is refused."""
        if not self._impls["on_refresh"]:
            return NO_REFRESH
        return await self._veto("on_refresh", conn, token)

    async def message(self, conn: Connection, message: Message) -> Veto | Message:
        """on_message in order: a Veto, or the message to broadcast (maybe replaced)."""
        args = [conn, message]
        veto, _ = await self._multicall(HOOKS["on_message"], self._impls["on_message"], args, conn)
        return veto if veto is not None else args[1]

    async def published(self, conn: Connection, message: Message) -> None:
        """on_published in order (nothing to do, and no coroutine, without one)."""
        impls = self._impls["on_published"]
        if impls:
            await self._multicall(HOOKS["on_published"], impls, [conn, message], conn)

    async def pong(self, conn: Connection, data: bytes) -> None:
        await self._run("on_pong", conn, data, conn=conn)

    def wants_pongs(self) -> bool:
        return bool(self._impls["on_pong"])

    async def close(self, conn: Connection) -> None:
        await self._run("on_close", conn, conn=conn)

    # -- lifecycle ------------------------------------------------------------------

    async def startup(self) -> None:
        """Every on_startup in order; the first failure propagates (start-up stops).

        Only plugins whose on_startup ran (the failing one included: it may have
        half-started), and those with none, get on_shutdown afterwards.
        """
        starting = self._impls["on_startup"]
        self._started = [p for p in self.plugins if p not in {impl[0] for impl in starting}]
        for impl in starting:
            self._started.append(impl[0])
            await self._multicall(HOOKS["on_startup"], [impl], [], None)

    async def start_some(self, plugins: Sequence[Plugin]) -> None:
        """on_startup for plugins added by a reload, in chain order. If one raises, those
        that started (it included) are shut down again and the error propagates."""
        wanted = set(plugins)
        started: list[Plugin] = []
        try:
            for impl in self._impls["on_startup"]:
                if impl[0] in wanted:
                    started.append(impl[0])
                    await self._multicall(HOOKS["on_startup"], [impl], [], None)
        except BaseException:
            await self.retire(started, [])
            raise
        self._started.extend(p for p in plugins if p not in self._started)

    def adopt(self, running: Sequence[Plugin]) -> None:
        """Count `running` plugins (carried over by a reload) as started."""
        self._started.extend(p for p in running if p not in self._started)

    async def retire(self, plugins: Sequence[Plugin], connections: Sequence[Connection]) -> None:
        """Plugins removed by a reload: on_close for every live connection, then on_shutdown.

        So a plugin gives back everything it holds (a throttle slot per connection) before
        it stops, exactly as if each connection had closed.
        """
        for plugin in reversed(plugins):
            closing = implementations(HOOKS["on_close"], [plugin])
            for conn in connections if closing else ():
                await self._multicall(HOOKS["on_close"], closing, [conn], conn)
            stopping = implementations(HOOKS["on_shutdown"], [plugin])
            await self._multicall(HOOKS["on_shutdown"], stopping, [], None)

    async def reload(self, plugin: Plugin, settings: object) -> None:
        """Give a plugin carried over by a reload its new settings."""
        impls = implementations(HOOKS["on_reload"], [plugin])
        await self._multicall(HOOKS["on_reload"], impls, [settings], None)

    async def shutdown(self) -> None:
        """on_shutdown, in reverse order, for the plugins that started."""
        started = set(self._started)
        impls = [h for h in self._impls["on_shutdown"] if h[0] in started]
        await self._multicall(HOOKS["on_shutdown"], impls, [], None)
