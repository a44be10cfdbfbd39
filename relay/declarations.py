"""What the configured plugin blocks declare for the engine, enabled or not.

Two pieces of protocol vocabulary live in plugin blocks because the contract put them
there: the message classes (`plugins.priority.classes`) and the broadcast channel
(`plugins.pubsub.channel`). Each plugin class says what its block declares
(`Plugin.declare`); the engine asks all of them rather than reading a plugin by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from core.config.settings import Settings
from core.wire.frames import DEFAULT_CLASSES

DEFAULT_CHANNEL = "broadcast"


@dataclass(frozen=True)
class Declared:
    """The engine's vocabulary for one configuration."""

    classes: Mapping[str, int]
    default_channel: str


def declarations(settings: Settings) -> Declared:
    """Merge what every configured block declares (configuration validation refuses
    two blocks declaring the same thing)."""
    classes: Mapping[str, int] | None = None
    channel: str | None = None
    for name, block in settings.plugins.items():
        declared = settings.plugin_classes[name].declare(block)
        if declared is None:
            continue
        if classes is None and declared.classes is not None:
            classes = MappingProxyType(dict(declared.classes))
        if channel is None and declared.default_channel is not None:
            channel = declared.default_channel
    return Declared(classes or DEFAULT_CLASSES, channel or DEFAULT_CHANNEL)
