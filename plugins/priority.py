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
from core.engine.hooks import Declaration, Plugin
from core.engine.outbox import OutboxPolicy
from core.wire.frames import COMMANDS, DEFAULT_CLASSES


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
            if name in COMMANDS:
                raise ConfigError(where, f"'{name}' is a request type of the protocol, not a class")
            if not -1_000_000 <= priority <= 1_000_000:
                raise ConfigError(
                    where, f"must be between -1000000 and 1000000, got {describe(priority)}"
                )


class PriorityPlugin(Plugin):
    """Orders every connection's outbound queue by priority."""

    name = "priority"
    Settings = PrioritySettings

    @classmethod
    def declare(cls, settings: PrioritySettings) -> Declaration:
        """`classes` are the message types clients may send, whether or not the plugin
        is on (without it, queues keep arrival order)."""
        return Declaration(classes=settings.classes)

    async def on_startup(self) -> None:
        """Queue every connection's frames by priority, within queue_limit."""
        self._provide()

    def on_reload(self, settings: PrioritySettings) -> None:
        """A new queue_limit reaches every connection at once."""
        self.settings = settings
        self._provide()

    def _provide(self) -> None:
        policy = OutboxPolicy(limit=self.settings.queue_limit, ordered=True)
        self.services.queue_policy.provide(policy, self)
