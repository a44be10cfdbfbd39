"""The hook contract: every hook a plugin may implement, in one place.

A plugin is a subclass of `Plugin` that overrides some of the hooks below. Hooks may be
plain methods or coroutines; only overridden hooks are ever called, so a plugin pays
for nothing it does not use. The chain (`plugins.chain.PluginChain`) calls them:

=================  ===========================================  =====================
hook               fires                                        order
=================  ===========================================  =====================
on_startup()       once, before the server listens              file order
on_connect(conn)   a WebSocket was accepted; before the welcome file order
on_welcome(conn)   the welcome was sent; before live messages   file order
on_message(c, m)   a valid client message, before broadcast     file order
on_close(conn)     the connection ended (or was refused later)  reverse file order
on_shutdown()      once, while the server stops                 reverse file order
on_reload(s)       SIGHUP brought new, valid settings           file order
=================  ===========================================  =====================

A reload (SIGHUP) keeps the plugins that stay enabled (they get ``on_reload``), starts
the ones it enables (``on_startup``; connections already open never pass through their
``on_connect``, so their ``on_close`` must ignore connections they did not admit), and
retires the ones it disables (``on_close`` for every open connection, then
``on_shutdown``), so nothing a retired plugin took is kept.

Vetoes are typed values, never bare booleans:

- ``on_connect`` returns a `Veto` to refuse the connection. The client gets the veto's
  error frame and is closed with its ``close_code`` (1008 unless set). The remaining
  on_connect hooks do not run, and ``on_close`` runs, in reverse order, for exactly the
  plugins before the refusing one, so what they took they give back.
- ``on_message`` returns a `Veto` to stop the message: it is not broadcast, the sender
  gets the veto's error frame (none if ``code`` is None: a silent drop) and stays
  connected unless ``close_code`` is set. Later on_message hooks do not run.
- Any other hook's return value is ignored.

A hook that raises is logged with its plugin's name and costs only what it was handling:
a raising on_connect refuses that connection (``internal_error``, 1011), a raising
on_message drops that message (``internal_error``, connection kept), a raising on_close
or on_shutdown does not stop the hooks after it. A raising on_startup stops start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from core.wire import frames

if TYPE_CHECKING:
    from core.engine.connection import Connection
    from core.engine.message import Message
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


HOOKS = (
    "on_startup",
    "on_connect",
    "on_welcome",
    "on_message",
    "on_close",
    "on_shutdown",
    "on_reload",
)


class Plugin:
    """Base class of every feature plugin. Subclasses set `name` and `Settings`."""

    name: ClassVar[str]
    Settings: ClassVar[type]  # a frozen dataclass with at least `enabled: bool`

    def __init__(self, settings: Any, services: Services) -> None:
        self.settings = settings
        self.services = services
        self.log = logging.getLogger(f"plugins.{self.name}")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Catch a misspelt hook (on_conect) when the plugin is defined, not in production.
        for attr in vars(cls):
            if attr.startswith("on_") and attr not in HOOKS:
                raise TypeError(f"{cls.__name__}.{attr} is not a hook (hooks: {', '.join(HOOKS)})")

    async def on_startup(self) -> None:
        """Once, before the server listens. Start timers, connect, subscribe."""

    async def on_connect(self, conn: Connection) -> Veto | None:
        """A WebSocket was accepted. Return a Veto to refuse it.

        May set the connection's identity (client_id, session, resumed), its
        `welcome` fields and its `data[self.name]` state.
        """

    async def on_welcome(self, conn: Connection) -> None:
        """The welcome frame was sent; live messages are held until this returns.

        Frames sent here (history replay) reach the client before any live message.
        Set ``conn.replayed_through`` to the last replayed id so that held live
        messages the replay already covered are not sent twice.
        """

    async def on_message(self, conn: Connection, message: Message) -> Veto | None:
        """A valid message from `conn`, before it is broadcast. Return a Veto to stop it."""

    async def on_close(self, conn: Connection) -> None:
        """The connection is gone (or was refused by a later plugin). Give back what
        on_connect took."""

    async def on_shutdown(self) -> None:
        """Once, while the server stops, after clients were closed. Release resources."""

    def on_reload(self, settings: Any) -> None:
        """New, already validated settings for this plugin (SIGHUP). Apply them in place;
        may be a coroutine. A raising on_reload is logged and the reload goes on."""
        self.settings = settings
