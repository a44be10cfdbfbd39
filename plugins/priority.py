"""Message prioritization: critical messages overtake queued lower ones on the way out.

`classes` maps each message type a client may send to its priority (higher first).
Every connection has a bounded outbound queue ordered by (priority, arrival); frames
wait there only while the client's socket is behind. Over `queue_limit`, the lowest
priority frames are dropped and counted; a client that lets a whole queue's worth be
dropped is closed with `slow_consumer` / 1013. Without this plugin the same bound holds,
in plain arrival order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.config.schema import ConfigError, describe, join, setting
from core.engine.connection import Connection
from core.engine.hooks import Plugin
from core.engine.outbox import OutboxPolicy
from core.wire.frames import DEFAULT_CLASSES


@dataclass(frozen=True)
class PrioritySettings:
    """`plugins.priority`."""

    enabled: bool = True
    classes: Mapping[str, int] = setting(DEFAULT_CLASSES, non_empty=True)
    queue_limit: int = setting(1000, ge=1)

    def check(self, path: str) -> None:
        for name, priority in self.classes.items():
            where = join(join(path, "classes"), name)
            if not name.strip():
                raise ConfigError(where, "a class name must not be empty")
            if not -1_000_000 <= priority <= 1_000_000:
                raise ConfigError(
                    where, f"must be between -1000000 and 1000000, got {describe(priority)}"
                )


class PriorityPlugin(Plugin):
    """Orders every connection's outbound queue by priority."""

    name = "priority"
    Settings = PrioritySettings

    def __init__(self, settings: PrioritySettings, services) -> None:
        super().__init__(settings, services)
        self.policy = OutboxPolicy(limit=settings.queue_limit, ordered=True)

    def on_connect(self, conn: Connection) -> None:
        """Give the connection the ordered, bounded queue policy."""
        conn.policy = self.policy

    def on_reload(self, settings: PrioritySettings) -> None:
        """A new queue_limit reaches every connection at once (the policy is shared)."""
        self.settings = settings
        self.policy.limit = settings.queue_limit
