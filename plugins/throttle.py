"""Connection throttling: at most N connections per client IP.

With the redis backend the count is the sum over every live instance; with memory, this
instance's. Closing a connection gives its slot back. An IPv6 client counts by its
network (`server.ipv6_prefix`, a /64 by default).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config.schema import setting
from core.engine.connection import Connection
from core.engine.hooks import Plugin, Veto
from core.wire import frames


@dataclass(frozen=True)
class ThrottleSettings:
    """`plugins.throttle`."""

    enabled: bool = True
    max_connections_per_ip: int = setting(3, ge=1)


class ThrottlePlugin(Plugin):
    """Refuses the N+1th connection of an IP with `too_many_connections` and 1008."""

    name = "throttle"
    Settings = ThrottleSettings

    def __init__(self, settings: ThrottleSettings, services) -> None:
        super().__init__(settings, services)
        self._slots: dict[Connection, str] = {}  # the IP each admitted connection counts for

    async def on_connect(self, conn: Connection) -> Veto | None:
        """Take a slot for the client's IP, or refuse the connection."""
        limit = self.settings.max_connections_per_ip
        if not await self.services.stores.connections.acquire(conn.ip_key, limit):
            return Veto(
                frames.TOO_MANY_CONNECTIONS,
                f"too many connections from your address (at most {limit})",
                frames.CLOSE_POLICY,
                {"limit": limit},
            )
        self._slots[conn] = conn.ip_key
        return None

    def on_close(self, conn: Connection) -> None:
        """Give the slot back (only if this plugin took one)."""
        ip = self._slots.pop(conn, None)
        if ip is not None:
            self.services.stores.connections.release(ip)
