"""State sharing: broadcasts reach the clients of every instance through Redis pub/sub.

With the redis backend this plugin provides the Redis broker in place of the local one:
messages ordered by Redis per channel, each delivered exactly once to every subscriber
everywhere, an instance listening only to the channels it has subscribers in. With the
memory backend there is nobody to share with and messages stay on this instance.

`channel` names the default channel of a v1 file (one without a `channels:` block).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config.schema import ConfigError, describe, join, setting
from core.engine.hooks import Declaration, Plugin
from core.stores.broker import Broker
from core.wire.channels import is_channel_name


@dataclass(frozen=True)
class PubSubSettings:
    """`plugins.pubsub`."""

    enabled: bool = True
    channel: str = setting("broadcast", non_empty=True)

    def check(self, path: str) -> None:
        if not is_channel_name(self.channel):
            raise ConfigError(
                join(path, "channel"),
                f"not a channel name ([A-Za-z0-9_.:@-], 1-128): {describe(self.channel)}",
            )


class PubSubPlugin(Plugin):
    """Connects the hub to the other instances through the store's broker."""

    name = "pubsub"
    Settings = PubSubSettings

    def __init__(self, settings: PubSubSettings, services) -> None:
        super().__init__(settings, services)
        self._broker: Broker | None = None

    @classmethod
    def declare(cls, settings: PubSubSettings) -> Declaration:
        """`channel` names the broadcast channel, whether or not the plugin is on."""
        return Declaration(default_channel=settings.channel)

    async def on_startup(self) -> None:
        """Subscribe, and provide the shared broker: publishing goes through it."""
        broker = self.services.stores.shared_broker()
        if broker is None:
            self.log.info("memory store: broadcasts stay on this instance")
            return
        self._broker = broker
        self.services.broker.provide(broker, self)
        await broker.start()

    async def on_shutdown(self) -> None:
        """Unsubscribe; broadcasts stay on this instance from now on."""
        if self._broker is not None:
            self.services.broker.withdraw(self)
            await self._broker.stop()
            self._broker = None
