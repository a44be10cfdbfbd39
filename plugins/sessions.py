"""Session management: a session per client, resumable with its secret token.

`?session=TOKEN` on the WebSocket URL resumes the session: same client_id, same
counters, and back in the channels it was in, each replayed from the last message it was
sent there (the engine does the rejoining: `conn.resume`). An unknown or expired token
silently starts a new session. The TTL is refreshed on
connect, on every message, on close, and periodically while connected.

Sessions cost Redis memory, so they are not free: an address may open
`max_new_per_ip_per_minute` new ones a minute (a token bucket; beyond it the connection
is refused with `too_many_connections` / 1008), and a session that never sent anything
is kept only `idle_ttl` seconds after it leaves, not `ttl`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tornado.ioloop import PeriodicCallback

from core.config.schema import setting
from core.engine.connection import Connection
from core.engine.hooks import Plugin, Veto
from core.engine.message import Message
from core.stores.ratelimit import Bucket
from core.stores.sessions import Session
from core.wire import frames

# How often connected sessions' TTLs are refreshed, at most.
REFRESH_EVERY = 60.0
# What a session token can look like (ours are 43 characters of URL-safe base64).
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


@dataclass(frozen=True)
class SessionSettings:
    """`plugins.sessions`."""

    enabled: bool = True
    ttl: float = setting(3600.0, gt=0)
    # A session that never sent anything is kept only this long after it leaves.
    idle_ttl: float = setting(60.0, gt=0)
    # New sessions one address may open in a minute; beyond: too_many_connections, 1008.
    max_new_per_ip_per_minute: int = setting(60, ge=1)


class SessionsPlugin(Plugin):
    """Gives each connection a stored session, new or resumed."""

    name = "sessions"
    Settings = SessionSettings

    def __init__(self, settings: SessionSettings, services) -> None:
        super().__init__(settings, services)
        self._sessions: dict[Connection, Session] = {}  # the session of each admitted one
        # Those that sent a message or subscribed to a channel on this connection.
        self._sent: set[Connection] = set()
        self._refresher: PeriodicCallback | None = None

    async def on_startup(self) -> None:
        """Start refreshing the TTLs of connected sessions."""
        s = self.settings
        every = min(REFRESH_EVERY, s.ttl / 3, s.idle_ttl / 3)
        self._refresher = PeriodicCallback(self._refresh, every * 1000)
        self._refresher.start()

    async def on_reload(self, settings: SessionSettings) -> None:
        """New TTLs: the refresher follows them."""
        self.settings = settings
        if self._refresher is not None:
            self._refresher.stop()
            await self.on_startup()

    async def on_connect(self, conn: Connection) -> Veto | None:
        """Resume the session named by `?session=`, or create one (if its address has
        not opened too many lately)."""
        store = self.services.stores.sessions
        ttl = self.settings.ttl
        session = None
        token = conn.query.get("session")
        if token and not TOKEN.fullmatch(token):
            self.log.debug("ignored a malformed session token from %s", conn.ip)
            token = None
        if token:
            session = await store.resume(token, ttl)
        if session is not None and not self._belongs(session, conn):
            self.log.debug("a session of another user was offered by %s: a new one", conn.ip)
            session = None
        if session is not None:
            conn.client_id = session.client_id
            conn.session = session.token
            conn.resumed = True
            conn.resume = dict(session.channels)
        else:
            veto = await self._may_open(conn)
            if veto is not None:
                return veto
            user = conn.user if conn.authenticated else ""
            session = await store.create(conn.session, conn.client_id, self.settings.idle_ttl, user)
        conn.welcome["messages"] = session.message_count
        self._sessions[conn] = session
        return None

    @staticmethod
    def _belongs(session: Session, conn: Connection) -> bool:
        """A user's session resumes for that user only (a guest's for anyone: signing in
        keeps the page's session)."""
        return not session.user or (conn.authenticated and session.user == conn.user)

    async def _may_open(self, conn: Connection) -> Veto | None:
        """A new session spends a token of its address's bucket: `max_new_per_ip_per_minute`
        at once, refilling over a minute."""
        limit = self.settings.max_new_per_ip_per_minute
        bucket = Bucket("new-sessions", limit / 60, limit)
        retry_after = await self.services.stores.rate_limiter.take(conn.ip_key, (bucket,))
        if retry_after <= 0:
            return None
        return Veto(
            frames.TOO_MANY_CONNECTIONS,
            f"too many new sessions from your address (at most {limit} a minute)",
            frames.CLOSE_POLICY,
            {"retry_after": round(retry_after, 3)},
        )

    def on_published(self, conn: Connection, message: Message) -> None:
        """Count the message in the session (without waiting for the store); a message
        refused (a rate limit, say) does not count."""
        self._sent.add(conn)  # active now: kept for the full ttl
        self.services.stores.sessions.record_message(
            conn.session, int(message.ts * 1000), self.settings.ttl
        )

    def on_subscribe(self, conn: Connection, channel: str) -> None:
        """A session that subscribes to something has done something: kept `ttl`."""
        self._sent.add(conn)

    async def on_close(self, conn: Connection) -> None:
        """Remember when the client left, and the channels it was in with the last
        message it was sent in each."""
        if conn in self._sessions:
            ttl = self._ttl(conn)
            del self._sessions[conn]
            self._sent.discard(conn)
            await self.services.stores.sessions.leave(conn.session, dict(conn.channels), ttl)

    def _ttl(self, conn: Connection) -> float:
        """A session that has done something is kept `ttl`; one that never did, `idle_ttl`."""
        active = conn in self._sent or self._sessions[conn].message_count > 0
        return self.settings.ttl if active else self.settings.idle_ttl

    async def on_shutdown(self) -> None:
        """Stop the TTL refresher."""
        if self._refresher is not None:
            self._refresher.stop()

    async def _refresh(self) -> None:
        by_ttl: dict[float, list[str]] = {}
        for conn in self._sessions:
            by_ttl.setdefault(self._ttl(conn), []).append(conn.session)
        for ttl, tokens in by_ttl.items():
            await self.services.stores.sessions.refresh(tokens, ttl)
