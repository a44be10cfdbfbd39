"""The feature plugins, by the name they have under `plugins:` in config.yaml."""

from __future__ import annotations

from types import MappingProxyType

from plugins.heartbeat import HeartbeatPlugin
from plugins.history import HistoryPlugin
from plugins.priority import PriorityPlugin
from plugins.pubsub import PubSubPlugin
from plugins.ratelimit import RateLimitPlugin
from plugins.sessions import SessionsPlugin
from plugins.throttle import ThrottlePlugin

REGISTRY = MappingProxyType(
    {
        plugin.name: plugin
        for plugin in (
            ThrottlePlugin,
            RateLimitPlugin,
            SessionsPlugin,
            PubSubPlugin,
            HistoryPlugin,
            HeartbeatPlugin,
            PriorityPlugin,
        )
    }
)
