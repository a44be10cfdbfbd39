"""The plugin API and the hook contract: every hook a plugin may implement, in one place.

A plugin is a subclass of `Plugin` that overrides some of the hooks below. Hooks may be
plain methods or coroutines; only overridden hooks are ever called, so a plugin pays
for nothing it does not use. Each hook is declared once, in `HOOKS`, with its arguments,
its order, what its result means and what a raise costs; the runner
(`core.engine.hookrunner.HookRunner`) follows the declaration, and a plugin's hooks are
checked against it when the class is defined (a misspelt hook or a wrong signature is a
TypeError naming the plugin, the hook and the expected arguments).

=====================  ===========================================  ===================
hook                   fires                                        order
=====================  ===========================================  ===================
on_startup()           once, before the server listens              file order
on_connect(conn)       a WebSocket was accepted; before the welcome file order
on_welcome(conn)       the welcome was sent; before live messages   file order
on_message(c, m)       a valid client message, before broadcast     file order
on_published(c, m)     a client message was accepted and published  file order
on_authorize(c, ch)    may the connection be in this channel?       file order
on_subscribe(c, ch)    a client asks to subscribe to a channel      file order
on_refresh(c, token)   the client sends a new token                 file order
on_pong(conn, data)    the client answered a WebSocket ping         file order
on_close(conn)         the connection ended (or was refused later)  reverse file order
on_shutdown()          once, while the server stops                 reverse file order
on_reload(settings)    SIGHUP brought new, valid settings           file order
=====================  ===========================================  ===================

Results:

- ``on_connect`` returns a `Veto` to refuse the connection (the first veto wins). The
  client gets the veto's error frame and is closed with its ``close_code`` (1008 unless
  set). The remaining on_connect hooks do not run, and ``on_close`` runs, in reverse
  order, for exactly the plugins before the refusing one, so what they took they give
  back.
- ``on_authorize`` returns a `Veto` if the connection may not be in the channel (an
  access rule: it is asked for every channel a connection would join but its default
  and personal ones, whether by a `subscribe` frame or as a resumed session's); a
  resumed session's channel it may not be in is silently left out.
- ``on_subscribe`` returns a `Veto` to refuse a `subscribe` frame (the first veto wins):
  the client gets the veto's error frame; the connection stays. It runs after
  on_authorize, for subscriptions the client asked for only (a rate limit counts them).
- ``on_refresh`` returns a `Veto` to refuse a `refresh` frame's token, None to accept it
  (the first one that does not return None decides); without a plugin implementing it,
  a refresh is refused.
- ``on_message`` returns a `Veto` to stop the message: it is not broadcast, the sender
  gets the veto's error frame (none if ``code`` is None: a silent drop) and stays
  connected unless ``close_code`` is set; later on_message hooks do not run. It may
  instead return a `Message` (``message.replace(content=...)``): the later hooks see it,
  and it is what is broadcast. Or it may return ``message.charged(Charge(...))``: the
  message costs the charge's tokens, taken when it is published (in the same Redis
  call, on a single Redis); if they cannot be taken, the sender gets the charge's
  refusal and nothing is published. A rate limit charges rather than vetoes so that
  an accepted message costs one round trip.
- ``on_published`` learns that a message passed every on_message hook and its charges
  and was published (what to count as the sender's activity).
- Any other hook's return value is ignored.

A hook that raises is logged with its plugin's name, counted in
``ws_hook_errors_total{plugin,hook}``, and costs only what it was handling:

- on_connect: that connection is refused (``internal_error``, 1011), as by a veto.
- on_welcome: the other on_welcome hooks still run and the connection goes live.
- on_authorize, on_subscribe: that subscription is refused (``internal_error``,
  connection kept).
- on_refresh: that token is refused (``internal_error``, connection kept).
- on_message: that message is dropped (``internal_error`` to the sender, who stays).
- on_published: the hooks after it still run (the message is out already).
- on_pong, on_close, on_shutdown, on_reload: the hooks after it still run.
- on_startup: start-up stops (the plugins that had started are shut down again).

Lifecycle across a reload (SIGHUP): plugins that stay enabled get ``on_reload``; plugins
it enables get ``on_startup`` (connections already open never pass through their
``on_connect``, so their ``on_close`` must ignore connections they did not admit); the
ones it disables are retired: ``on_close`` for every open connection, then
``on_shutdown``, then every service they provided is withdrawn (`Services`), so nothing
a retired plugin took or provided is kept.

Per-connection state belongs to the plugin that keeps it: a dict on the plugin keyed by
the connection, filled in on_connect and emptied in on_close.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from core.engine.message import Message
from core.wire import frames

if TYPE_CHECKING:
    from core.engine.connection import Connection
    from core.engine.services import Services


@dataclass(frozen=True)
class Veto:
    """A plugin's refusal of a connection or a message, with what the client is told."""

    code: str | None  # the error frame's code; None drops a message silently
    message: str = ""
    close_code: int | None = None  # close the connection with this code
    extra: Mapping[str, Any] = field(default_factory=dict)  # more error-frame fields

    def error_frame(self) -> dict | None:
        if self.code is None:
            return None
        return frames.error_payload(self.code, self.message, **self.extra)


CONNECT_FAILED = Veto(
    frames.INTERNAL_ERROR, "the server could not accept the connection", frames.CLOSE_INTERNAL
)
MESSAGE_FAILED = Veto(frames.INTERNAL_ERROR, "the server could not handle the message")
SUBSCRIBE_FAILED = Veto(frames.INTERNAL_ERROR, "the server could not handle the subscription")
REFRESH_FAILED = Veto(frames.INTERNAL_ERROR, "the server could not check the token")

# What a raising implementation means: RAISE propagates; CONTINUE logs and runs the
# next one; a Veto logs and ends the call with that veto as its result.
RAISE = "raise"
CONTINUE = "continue"


@dataclass(frozen=True)
class HookSpec:
    """One hook's declaration: its arguments, order, result and failure semantics."""

    name: str
    params: tuple[str, ...]  # after self; implementations are called positionally
    reverse: bool = False  # run in reverse file order
    firstresult: bool = False  # the first non-None result ends the call
    # A result of this type replaces argument `replaces` for later hooks (on_message).
    replaces: int | None = None
    replacement: type | None = None
    on_error: Veto | str = CONTINUE


HOOKS: Mapping[str, HookSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            HookSpec("on_startup", (), on_error=RAISE),
            HookSpec("on_connect", ("conn",), firstresult=True, on_error=CONNECT_FAILED),
            HookSpec("on_welcome", ("conn",)),
            HookSpec(
                "on_message",
                ("conn", "message"),
                firstresult=True,
                replaces=1,
                replacement=Message,
                on_error=MESSAGE_FAILED,
            ),
            HookSpec("on_published", ("conn", "message")),
            HookSpec(
                "on_authorize", ("conn", "channel"), firstresult=True, on_error=SUBSCRIBE_FAILED
            ),
            HookSpec(
                "on_subscribe", ("conn", "channel"), firstresult=True, on_error=SUBSCRIBE_FAILED
            ),
            HookSpec("on_refresh", ("conn", "token"), firstresult=True, on_error=REFRESH_FAILED),
            HookSpec("on_pong", ("conn", "data")),
            HookSpec("on_close", ("conn",), reverse=True),
            HookSpec("on_shutdown", (), reverse=True),
            HookSpec("on_reload", ("settings",)),
        )
    }
)


@dataclass(frozen=True)
class PluginSettings:
    """The settings of a plugin that declares none: only `enabled`."""

    enabled: bool = True


@dataclass(frozen=True)
class Declaration:
    """What a plugin's block of config.yaml tells the engine whether or not the plugin is
    enabled: protocol vocabulary that the contract places in a plugin block."""

    classes: Mapping[str, int] | None = None  # message class -> priority
    default_channel: str | None = None  # the channel every client is in


def verify_hooks(cls: type) -> None:
    """Check `cls`'s hooks against `HOOKS`: names, and arguments the runner can pass."""
    for attr, value in vars(cls).items():
        if not attr.startswith("on_"):
            continue
        spec = HOOKS.get(attr)
        if spec is None:
            raise TypeError(f"{cls.__qualname__}.{attr} is not a hook (hooks: {', '.join(HOOKS)})")
        function = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
        if not callable(function):
            raise TypeError(f"{cls.__qualname__}.{attr} must be a method")
        expected = f"{attr}(self{''.join(', ' + p for p in spec.params)})"
        try:
            inspect.signature(function).bind(None, *spec.params)
        except TypeError:
            raise TypeError(
                f"{cls.__qualname__}.{attr}{inspect.signature(function)} does not take the "
                f"hook's arguments: expected {expected}"
            ) from None


class Plugin:
    """Base class of every feature plugin.

    Subclasses set `Settings` (a frozen dataclass with at least `enabled: bool`; the keys
    of the plugin's block in config.yaml, validated like the built-ins'), override the
    hooks they need, and may set `requires` (plugins that must be enabled and listed
    before this one). Built-in plugins set `name`; a plugin from outside the tree is
    named by its key in config.yaml, ``package.module:ClassName``.
    """

    name: ClassVar[str]
    Settings: ClassVar[type] = PluginSettings
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: Any, services: Services) -> None:
        self.settings = settings
        self.services = services
        self.log = logging.getLogger(f"plugins.{self.name}")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Catch a misspelt hook (on_conect) or a wrong signature when the plugin is
        # defined, not in production.
        verify_hooks(cls)
        if "name" not in vars(cls):
            cls.name = f"{cls.__module__}:{cls.__qualname__}"

    @classmethod
    def declare(cls, settings: Any) -> Declaration | None:
        """What this plugin's block declares for the engine, enabled or not (the message
        classes under `priority`, the channel under `pubsub`). Most plugins: nothing."""
        return None

    async def on_startup(self) -> None:
        """Once, before the server listens. Start timers, connect, subscribe, and
        provide services (`self.services.provide(...)`)."""

    async def on_connect(self, conn: Connection) -> Veto | None:
        """A WebSocket was accepted. Return a Veto to refuse it.

        May set the connection's identity (client_id, session, resumed, resume,
        user) and its `welcome` fields.
        """

    async def on_welcome(self, conn: Connection) -> None:
        """The welcome frame was sent; live messages are held until this returns, so
        frames sent here reach the client before any live message."""

    async def on_authorize(self, conn: Connection, channel: str) -> Veto | None:
        """May `conn` be in `channel` (a valid name its namespace would let it join)?
        Return a Veto if not. Asked for `subscribe` frames and for a resumed session's
        channels; not for the default channel or the connection's personal ones."""

    async def on_refresh(self, conn: Connection, token: str) -> Veto | None:
        """The client sent `{"type": "refresh", "token": ...}`. Return None to accept the
        token, a Veto to refuse it."""

    async def on_subscribe(self, conn: Connection, channel: str) -> Veto | None:
        """`conn` asks to subscribe to `channel` (a valid name it may subscribe to). Return
        a Veto to refuse. Not called for the channels a connection is in from its
        welcome (the default one, its personal ones, a resumed session's)."""

    async def on_message(self, conn: Connection, message: Message) -> Veto | Message | None:
        """A valid message from `conn`, before it is broadcast. Return a Veto to stop it,
        a changed Message to broadcast instead, or the message with a charge
        (`message.charged(...)`) to make it cost tokens when it is published."""

    def on_published(self, conn: Connection, message: Message) -> None:
        """`message` from `conn` passed every on_message hook, its charges were paid, and
        it was published (the message as broadcast)."""

    def on_pong(self, conn: Connection, data: bytes) -> None:
        """The client answered a WebSocket ping with `data`."""

    async def on_close(self, conn: Connection) -> None:
        """The connection is gone (or was refused by a later plugin). Give back what
        on_connect took."""

    async def on_shutdown(self) -> None:
        """Once, while the server stops (after clients were closed), or when a reload
        retires the plugin. Release resources."""

    def on_reload(self, settings: Any) -> None:
        """New, already validated settings for this plugin (SIGHUP). Apply them in place;
        may be a coroutine. A raising on_reload is logged and the reload goes on."""
        self.settings = settings
