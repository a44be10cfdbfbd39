"""History and recovery: recent messages replayed to late joiners and resumed sessions.

Each channel (with history in its namespace) a client joins is replayed before its live
messages: a new subscriber gets the channel's last `replay` messages; one that recovers
(a resumed session, or `subscribe` with `since`) every message after the id it names (up
to `size`), oldest first, marked `"history": true`, without duplicates. Messages older
than `ttl` seconds are not replayed. The plugin provides this as the engine's history
service.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config.schema import ConfigError, join, setting
from core.engine.hooks import Plugin
from core.engine.services import Replay
from core.stores.broker import LogPolicy
from core.wire.entry import Entry

# A cursor before every message: recovering from it replays all that the log still has.
START = "0-0"


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
        """Ask the broker to keep `size` messages for `ttl` seconds, and provide the
        history service the engine replays from."""
        self.services.log_policy.provide(LogPolicy(self.settings.size, self.settings.ttl), self)
        self.services.history.provide(self, self)

    def on_reload(self, settings: HistorySettings) -> None:
        """A new size or ttl reaches the broker at once."""
        self.settings = settings
        self.services.log_policy.provide(LogPolicy(settings.size, settings.ttl), self)

    async def replay(self, channel: str, since: str | None, budget: int) -> Replay:
        """What a subscriber of `channel` gets first: what came after `since`, or the
        latest `replay` messages; the newest of them whose frames fit in `budget`."""
        broker = self.services.broker.value
        s = self.settings
        if since is not None:
            recovery = await broker.since(channel, since, s.size, s.ttl)
            entries, recovered = recovery.entries, recovery.complete
        else:
            entries, recovered = await broker.recent(channel, s.replay, s.ttl), None
        through = await self._through(channel, since, entries)
        frames = newest_within([e.history_frame() for e in entries], budget)
        if len(frames) < len(entries):
            entries = entries[len(entries) - len(frames) :]
            recovered = False if since is not None else None
        return Replay(entries, recovered, through)

    async def _through(self, channel: str, since: str | None, entries: list[Entry]) -> str:
        """Where the subscriber stands once replayed: the newest message it was shown,
        or else the newest the channel has, or else (the log holds nothing recent) the
        start of the channel, so that everything published from now on counts as new."""
        if entries:
            return entries[-1].id
        if since is not None:
            return since
        if self.settings.replay == 0:
            # Nothing was asked for, so nothing tells where the channel stands: ask.
            tip = await self.services.broker.value.recent(channel, 1, self.settings.ttl)
            if tip:
                return tip[-1].id
        return START

    async def latest(self, channel: str, count: int) -> list[Entry]:
        """`channel`'s latest `count` messages, up to `size`, none older than `ttl`."""
        s = self.settings
        return await self.services.broker.value.recent(channel, min(count, s.size), s.ttl)


def newest_within(frames: list[bytes], budget: int) -> list[bytes]:
    """The newest of `frames` whose sizes add up to at most `budget`: a replay never
    takes more than half of what a connection may hold unsent."""
    total = 0
    for start in range(len(frames) - 1, -1, -1):
        total += len(frames[start])
        if total > budget:
            return frames[start + 1 :]
    return frames
