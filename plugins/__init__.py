"""The feature plugins, and the API for writing one.

A plugin of your own needs nothing else from the project:

    from plugins import Plugin, Veto

and a key `package.module:ClassName` under `plugins:` in config.yaml (docs/plugins.md).
`REGISTRY` is what config.yaml may name: the built-ins below by name, anything else as
`package.module:ClassName`.
"""

from __future__ import annotations

from types import MappingProxyType

from core.config.schema import ConfigError, setting
from core.engine.catalog import PluginCatalog
from core.engine.connection import Connection
from core.engine.hooks import Declaration, Plugin, PluginSettings, Veto
from core.engine.message import Charge, Message
from core.stores.ratelimit import Bucket, Spend
from plugins.auth import AuthPlugin
from plugins.heartbeat import HeartbeatPlugin
from plugins.history import HistoryPlugin
from plugins.priority import PriorityPlugin
from plugins.pubsub import PubSubPlugin
from plugins.ratelimit import RateLimitPlugin
from plugins.sessions import SessionsPlugin
from plugins.throttle import ThrottlePlugin

__all__ = [
    "BUILTINS",
    "REGISTRY",
    "Bucket",
    "Charge",
    "ConfigError",
    "Connection",
    "Declaration",
    "Message",
    "Plugin",
    "PluginSettings",
    "Spend",
    "Veto",
    "setting",
]

BUILTINS = MappingProxyType(
    {
        plugin.name: plugin
        for plugin in (
            AuthPlugin,
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

REGISTRY = PluginCatalog(BUILTINS)
