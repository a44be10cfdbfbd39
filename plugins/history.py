"""History and recovery: recent messages replayed to late joiners and resumed sessions.

Right after the welcome, a new session gets the last `replay` messages; a resumed
session gets every message it missed while away (up to `size`), oldest first, marked
`"history": true`, without duplicates and before any new message. Messages older than
`ttl` seconds are not replayed.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config.schema import ConfigError, join, setting
from core.engine.connection import Connection
from core.engine.hooks import Plugin
from core.wire.ids import parse_id


@dataclass(frozen=True)
class HistorySettings:
    """`plugins.history`."""

    enabled: bool = True
    size: int = setting(100, ge=1)
    ttl: float = setting(300.0, gt=0)
    replay: int = setting(20, ge=0)

    def check(self, path: str) -> None:
        if self.replay > self.size:
            raise ConfigError(
                join(path, "replay"), f"must be at most size ({self.size}), got {self.replay}"
            )


class HistoryPlugin(Plugin):
    """Replays missed or recent messages between the welcome and live delivery."""

    name = "history"
    Settings = HistorySettings

    async def on_welcome(self, conn: Connection) -> None:
        """Send what the client missed (resumed) or the latest messages (new)."""
        broker = self.services.hub.broker
        s = self.settings
        cursor = self._cursor(conn)
        if cursor is not None:
            entries = await broker.since(cursor, s.size, s.ttl)
        else:
            entries = await broker.recent(s.replay, s.ttl)
        for entry in entries:
            conn.send(entry.history_frame())
        # Live messages held while we read must skip what the replay (or the
        # client, for a resumed session) has already seen.
        conn.replayed_through = entries[-1].id if entries else cursor

    def _cursor(self, conn: Connection) -> str | None:
        """Where a resumed session's replay starts: what the client says it saw last,
        else what the server last sent it."""
        if not conn.resumed:
            return None
        if conn.since is not None and parse_id(conn.since) is not None:
            return conn.since
        record = conn.record
        return record.last_message_id if record is not None else None
