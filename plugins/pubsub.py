"""State sharing: broadcasts reach the clients of every instance through Redis pub/sub.

With the redis backend this plugin replaces the hub's local broker with the Redis one:
one subscription per instance, messages ordered by Redis, each delivered exactly once
to every client everywhere. With the memory backend there is nobody to share with and
broadcasts stay on this instance.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config.schema import setting
from core.engine.hooks import Plugin
from core.stores.broker import Broker


@dataclass(frozen=True)
class PubSubSettings:
    """`plugins.pubsub`."""

    enabled: bool = True
    channel: str = setting("broadcast", non_empty=True)


class PubSubPlugin(Plugin):
    """Connects the hub to the other instances through the store's broker."""

    name = "pubsub"
    Settings = PubSubSettings

    def __init__(self, settings: PubSubSettings, services) -> None:
        super().__init__(settings, services)
        self._broker: Broker | None = None
        self._local: Broker | None = None

    async def on_startup(self) -> None:
        """Subscribe, and route the hub's publishing through the shared broker."""
        broker = self.services.stores.shared_broker(self.settings.channel)
        if broker is None:
            self.log.info("memory store: broadcasts stay on this instance")
            return
        self._local = self.services.hub.broker
        self._broker = broker
        self.services.hub.use_broker(broker)
        await broker.start()

    async def on_reload(self, settings: PubSubSettings) -> None:
        """A new channel: subscribe to it instead."""
        changed = settings.channel != self.settings.channel
        self.settings = settings
        if changed and self._broker is not None:
            await self.on_shutdown()
            await self.on_startup()

    async def on_shutdown(self) -> None:
        """Unsubscribe; broadcasts stay on this instance from now on."""
        if self._broker is not None:
            if self._local is not None and self.services.hub.broker is self._broker:
                self.services.hub.use_broker(self._local)
            await self._broker.stop()
            self._broker = None
