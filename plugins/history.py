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
from core.stores.broker import LogPolicy


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

    async def on_startup(self) -> None:
        """Ask the broker to keep `size` messages for `ttl` seconds."""
        self.services.log_policy.provide(LogPolicy(self.settings.size, self.settings.ttl), self)

    def on_reload(self, settings: HistorySettings) -> None:
        """A new size or ttl reaches the broker at once."""
        self.settings = settings
        self.services.log_policy.provide(LogPolicy(settings.size, settings.ttl), self)

    async def on_welcome(self, conn: Connection) -> str | None:
        """Send what the client missed (resumed) or the latest messages (new); return
        the id the client has now seen up to."""
        broker = self.services.broker.value
        s = self.settings
        cursor = conn.resume_from if conn.resumed else None
        if cursor is not None:
            entries = await broker.since(cursor, s.size, s.ttl)
        else:
            entries = await broker.recent(s.replay, s.ttl)
        frames = newest_within([e.history_frame() for e in entries], conn.policy.max_bytes // 2)
        for frame in frames:
            conn.send(frame)
        entries = entries[len(entries) - len(frames) :]
        # Live messages held while we read must skip what the replay (or the client,
        # for a resumed session) has already seen.
        return entries[-1].id if entries else cursor


def newest_within(frames: list[bytes], budget: int) -> list[bytes]:
    """The newest of `frames` whose sizes add up to at most `budget`: a replay never
    takes more than half of what a connection may hold unsent."""
    total = 0
    for start in range(len(frames) - 1, -1, -1):
        total += len(frames[start])
        if total > budget:
            return frames[start + 1 :]
    return frames
