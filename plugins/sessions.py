"""Session management: a session per client, resumable with its secret token.

`?session=TOKEN` on the WebSocket URL resumes the session: same client_id, same
counters, and the connection's `resume_from` (where a replay starts) is the last message
the session was sent before it left, or `&since=ID` if the client says so itself. An
unknown or expired token silently starts a new session. The TTL is refreshed on
connect, on every message, on close, and periodically while connected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tornado.ioloop import PeriodicCallback

from core.config.schema import setting
from core.engine.connection import Connection
from core.engine.hooks import Plugin
from core.engine.message import Message
from core.stores.sessions import Session
from core.wire.ids import parse_id

# How often connected sessions' TTLs are refreshed, at most.
REFRESH_EVERY = 60.0
# What a session token can look like (ours are 43 characters of URL-safe base64).
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


@dataclass(frozen=True)
class SessionSettings:
    """`plugins.sessions`."""

    enabled: bool = True
    ttl: float = setting(3600.0, gt=0)


class SessionsPlugin(Plugin):
    """Gives each connection a stored session, new or resumed."""

    name = "sessions"
    Settings = SessionSettings

    def __init__(self, settings: SessionSettings, services) -> None:
        super().__init__(settings, services)
        self._sessions: dict[Connection, Session] = {}  # the session of each admitted one
        self._refresher: PeriodicCallback | None = None

    async def on_startup(self) -> None:
        """Start refreshing the TTLs of connected sessions."""
        every = min(REFRESH_EVERY, self.settings.ttl / 3)
        self._refresher = PeriodicCallback(self._refresh, every * 1000)
        self._refresher.start()

    async def on_connect(self, conn: Connection) -> None:
        """Resume the session named by `?session=`, or create one."""
        store = self.services.stores.sessions
        ttl = self.settings.ttl
        session = None
        token = conn.query.get("session")
        if token and not TOKEN.fullmatch(token):
            self.log.debug("ignored a malformed session token from %s", conn.ip)
            token = None
        if token:
            session = await store.resume(token, ttl)
        if session is not None:
            conn.client_id = session.client_id
            conn.session = session.token
            conn.resumed = True
            since = conn.query.get("since")
            if since is not None and parse_id(since) is None:
                self.log.debug("ignored a malformed since from %s", conn.ip)
                since = None
            conn.resume_from = since if since is not None else session.last_message_id
        else:
            session = await store.create(conn.session, conn.client_id, ttl)
        conn.welcome["messages"] = session.message_count
        self._sessions[conn] = session

    def on_message(self, conn: Connection, message: Message) -> None:
        """Count the message in the session (without waiting for the store)."""
        self.services.stores.sessions.record_message(
            conn.session, int(message.ts * 1000), self.settings.ttl
        )

    async def on_close(self, conn: Connection) -> None:
        """Remember when the client left and the last message it was sent."""
        if self._sessions.pop(conn, None) is not None:
            await self.services.stores.sessions.leave(
                conn.session, self.services.hub.last_id, self.settings.ttl
            )

    async def on_shutdown(self) -> None:
        """Stop the TTL refresher."""
        if self._refresher is not None:
            self._refresher.stop()

    async def _refresh(self) -> None:
        tokens = [conn.session for conn in self._sessions]
        if tokens:
            await self.services.stores.sessions.refresh(tokens, self.settings.ttl)
