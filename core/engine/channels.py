"""The channel rules: which channel is in which namespace, and who may do what there.

Built from the `channels:` block of config.yaml, or for a v1 file without one, from the
declared broadcast channel (`plugins.pubsub.channel`) with every name in namespace
`default`. Each refusal is an (error code, message) pair, the error frame's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from core.config.settings import ChannelsSettings, NamespaceSettings
from core.wire import frames
from core.wire.channels import DEFAULT_NAMESPACE, is_channel_name, namespace_of

Refusal = tuple[str, str]

V1_NAMESPACES: Mapping[str, NamespaceSettings] = MappingProxyType(
    {DEFAULT_NAMESPACE: NamespaceSettings()}
)


@dataclass(frozen=True)
class ChannelRules:
    """Namespaces, the default channel, and the per-connection cap."""

    default: str | None
    max_per_connection: int
    namespaces: Mapping[str, NamespaceSettings]
    listed: bool  # False: a v1 file, every name in namespace default

    @classmethod
    def from_settings(cls, channels: ChannelsSettings | None, v1_default: str) -> ChannelRules:
        if channels is None:
            return cls(v1_default, ChannelsSettings().max_per_connection, V1_NAMESPACES, False)
        return cls(channels.default, channels.max_per_connection, channels.namespaces, True)

    def namespace_name(self, channel: str) -> str:
        return namespace_of(channel) if self.listed else DEFAULT_NAMESPACE

    def namespace(self, channel: str) -> NamespaceSettings | None:
        """The options of `channel`'s namespace; None if the name is not valid or its
        namespace is not listed."""
        if not is_channel_name(channel):
            return None
        return self.namespaces.get(self.namespace_name(channel))

    def personal(self, user: str) -> list[str]:
        """The personal channels of `user`, one per personal namespace (none if the user
        is not something a channel name can carry)."""
        if not self.listed:
            return []
        names = [f"{ns}:{user}" for ns, options in self.namespaces.items() if options.personal]
        return [name for name in names if is_channel_name(name)]

    def counted(self, channel: str) -> bool:
        """Whether `channel` counts against max_per_connection (personal ones do not)."""
        options = self.namespace(channel)
        return options is None or not options.personal

    def invalid(self, channel: str) -> Refusal | None:
        if self.namespace(channel) is not None:
            return None
        if not is_channel_name(channel):
            return frames.INVALID_CHANNEL, "not a channel name"
        return frames.INVALID_CHANNEL, f"no such namespace: '{self.namespace_name(channel)}'"

    def may_subscribe(self, channel: str, user: str) -> Refusal | None:
        options = self.namespace(channel)
        if options is None:
            return self.invalid(channel)
        if options.personal and channel != f"{self.namespace_name(channel)}:{user}":
            return frames.FORBIDDEN, "a personal channel is its own user's alone"
        return None

    def may_publish(self, channel: str, subscribed: bool) -> Refusal | None:
        # A channel the connection is in passed the name check when it joined: per
        # message, only its namespace is looked up (the check is a regex).
        if subscribed:
            options = self.namespaces.get(self.namespace_name(channel))
        else:
            options = self.namespace(channel)
        if options is None:
            return self.invalid(channel)
        if options.publish == "none":
            return frames.FORBIDDEN, "only the backend publishes on this channel"
        if options.publish == "subscribers" and not subscribed:
            return frames.NOT_SUBSCRIBED, "subscribe to the channel before publishing on it"
        return None

    def may_see_presence(self, channel: str, user: str) -> Refusal | None:
        refusal = self.may_subscribe(channel, user)
        if refusal is not None:
            return refusal
        if not self.namespace(channel).presence:  # type: ignore[union-attr]
            return frames.FORBIDDEN, "this channel has no presence"
        return None
