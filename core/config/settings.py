"""The typed, validated configuration: one frozen dataclass per block of config.yaml."""

from __future__ import annotations

import ipaddress
import socket
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from core.config.schema import ConfigError, describe, join, join_key, setting
from core.wire.channels import DEFAULT_NAMESPACE, is_channel_name, namespace_of


@dataclass(frozen=True)
class ServerSettings:
    """The `server:` block: where to listen and how to treat clients and proxies."""

    host: str = setting("127.0.0.1", non_empty=True)  # "" would mean every interface
    port: int = setting(8200, ge=0, le=65535)
    instance_id: str | None = setting(None, non_empty=True)
    max_message_size: int = setting(65536, ge=128)
    # Unsent bytes one connection may hold (queue + socket buffer) before it is closed.
    max_queued_bytes: int = setting(1 << 20, ge=1024)
    allowed_origins: tuple[str, ...] = setting([])
    trusted_proxies: tuple[str, ...] = setting([])
    # Per-IP limits count an IPv6 client by its network of this many bits.
    ipv6_prefix: int = setting(64, ge=1, le=128)
    shutdown_timeout: float = setting(5.0, gt=0)
    # Seconds a TCP connection has to complete its HTTP request or WebSocket upgrade.
    handshake_timeout: float = setting(10.0, gt=0)
    # Processes sharing the port (SO_REUSEPORT), each an instance `{instance_id}/{k}`.
    workers: int = setting(1, ge=1, le=256)
    # auto: uvloop where it is installed, else asyncio's own loop.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"

    def check(self, path: str) -> None:
        if self.max_queued_bytes < 2 * self.max_message_size:
            raise ConfigError(
                join(path, "max_queued_bytes"),
                f"must be at least twice max_message_size ({2 * self.max_message_size}), "
                f"got {self.max_queued_bytes}",
            )
        for i, proxy in enumerate(self.trusted_proxies):
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(
                    join(join(path, "trusted_proxies"), i),
                    f"expected an IP address or network, got {describe(proxy)}",
                ) from None
        for i, origin in enumerate(self.allowed_origins):
            if not _is_origin(origin):
                raise ConfigError(
                    join(join(path, "allowed_origins"), i),
                    f"expected an origin like 'https://example.com' or '*', got {describe(origin)}",
                )

    def resolved_instance_id(self) -> str:
        return self.instance_id or f"{socket.gethostname()}:{self.port}"


def _is_origin(text: str) -> bool:
    """'*', or scheme://host[:port] as a browser sends it in its Origin header (a path,
    query or user name would never match one)."""
    if text == "*":
        return True
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    return (
        bool(parts.scheme and parts.hostname)
        and parts.path in ("", "/")
        and not parts.query
        and not parts.fragment
        and "@" not in parts.netloc
    )


@dataclass(frozen=True)
class StoreSettings:
    """The `store:` block: where shared state lives."""

    backend: Literal["memory", "redis", "auto"] = "auto"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "ws:"
    # Seconds an instance's connection counts outlive it if it dies without cleaning up.
    instance_ttl: float = setting(30.0, ge=1, le=60)
    # Seed nodes of a Redis Cluster ("host:port"): sharded pub/sub; redis_url is ignored.
    redis_cluster: tuple[str, ...] = setting([])
    # Sentinels ("host:port") that know the master named redis_sentinel_master.
    redis_sentinels: tuple[str, ...] = setting([])
    redis_sentinel_master: str | None = setting(None, non_empty=True)

    @property
    def topology(self) -> Literal["single", "cluster", "sentinel"]:
        """Which kind of Redis the redis backend talks to."""
        if self.redis_cluster:
            return "cluster"
        return "sentinel" if self.redis_sentinels else "single"

    @property
    def uses_redis(self) -> bool:
        """The redis backend for certain: `redis`, or a cluster or sentinels given."""
        return self.backend == "redis" or self.topology != "single"

    def check(self, path: str) -> None:
        for name in ("redis_cluster", "redis_sentinels"):
            for i, node in enumerate(getattr(self, name)):
                if _address_problem(node):
                    raise ConfigError(
                        join(join(path, name), i),
                        f"expected host:port, got {describe(node)} ({_address_problem(node)})",
                    )
        if self.redis_cluster and self.redis_sentinels:
            raise ConfigError(
                join(path, "redis_sentinels"),
                "set redis_cluster or redis_sentinels, not both",
            )
        if self.topology != "single" and self.backend == "memory":
            raise ConfigError(
                join(path, "backend"),
                f"memory, but {'redis_cluster' if self.redis_cluster else 'redis_sentinels'} "
                "is set (it needs backend: redis)",
            )
        if self.redis_sentinels and not self.redis_sentinel_master:
            raise ConfigError(
                join(path, "redis_sentinel_master"),
                "required with redis_sentinels: the name the sentinels monitor",
            )
        where = join(path, "redis_url")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                where,
                f"expected a redis://, rediss:// or unix:// URL, got {describe(self.redis_url)}",
            )
        problem = _redis_url_problem(self.redis_url)
        if problem:
            # The URL is not shown: it may hold a password.
            raise ConfigError(where, f"not a usable Redis URL: {problem}")


def _address_problem(node: object) -> str | None:
    """What is wrong with a "host:port" entry, or None."""
    if not isinstance(node, str):
        return "not a string"
    host, sep, port = node.rpartition(":")
    if not sep or not host:
        return "no host"
    if not port.isdigit() or not 0 < int(port) < 65536:
        return "the port must be a number from 1 to 65535"
    return None


def _redis_url_problem(url: str) -> str | None:
    """What the store would trip over in `url`, found by the same parser it uses."""
    from redis.connection import parse_url

    try:
        parse_url(url)
        parts = urlsplit(url)
    except ValueError as error:
        return str(error).rstrip(".")
    if parts.scheme == "unix":
        return (
            None if parts.path else "a unix:// URL needs a socket path (unix:///path/to/redis.sock)"
        )
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        return f"the database number must be a number, got {describe(db)}"
    return None


@dataclass(frozen=True)
class LoggingSettings:
    """The `logging:` block: one line per event, as plain text or JSON."""

    format: Literal["plain", "json"] = "plain"
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class ApiSettings:
    """The `api:` block: the backend API under /api/ (404 everywhere when off)."""

    enabled: bool = False
    keys: tuple[str, ...] = setting([])  # accepted as `Authorization: Bearer KEY`

    def check(self, path: str) -> None:
        if not self.enabled:
            return
        if not self.keys:
            raise ConfigError(join(path, "keys"), "at least one key when the API is on")
        for i, key in enumerate(self.keys):
            if len(key) < 16:
                raise ConfigError(
                    join(join(path, "keys"), i), "a key must be at least 16 characters"
                )


@dataclass(frozen=True)
class NamespaceSettings:
    """One namespace under `channels.namespaces`: what its channels do."""

    history: bool = True  # subscribers get recent messages, and recovery on resume
    presence: bool = False  # join/leave events and presence requests
    publish: Literal["any", "subscribers", "none"] = "any"  # none: the backend API only
    personal: bool = False  # NAME:<user> may be subscribed by <user> alone


@dataclass(frozen=True)
class ChannelsSettings:
    """The `channels:` block: the default channel, the cap, the namespaces."""

    default: str | None = "broadcast"  # every client is in it from its welcome; null: none
    max_per_connection: int = setting(64, ge=1)
    namespaces: Mapping[str, NamespaceSettings] = setting(
        {"default": NamespaceSettings()}, non_empty=True
    )

    def check(self, path: str) -> None:
        for name, options in self.namespaces.items():
            where = join_key(join(path, "namespaces"), name)
            if not is_channel_name(name) or ":" in name:
                raise ConfigError(
                    where, "a namespace is a channel name without ':' (letters, digits, _.@-)"
                )
            if options.personal and name == DEFAULT_NAMESPACE:
                raise ConfigError(
                    join(where, "personal"), "the default namespace cannot be personal"
                )
        if self.default is not None:
            where = join(path, "default")
            if not is_channel_name(self.default):
                raise ConfigError(
                    where, f"not a channel name ([A-Za-z0-9_.:@-], 1-128): {describe(self.default)}"
                )
            namespace = namespace_of(self.default)
            if namespace not in self.namespaces:
                raise ConfigError(where, f"its namespace '{namespace}' is not listed in namespaces")
            if self.namespaces[namespace].personal:
                raise ConfigError(where, f"its namespace '{namespace}' is personal")


@dataclass(frozen=True)
class Settings:
    """The whole validated configuration of one server instance."""

    server: ServerSettings
    store: StoreSettings
    logging: LoggingSettings
    # Every configured plugin block in file order, enabled or not.
    plugins: Mapping[str, Any]
    # The plugin class of each block, by the same keys.
    plugin_classes: Mapping[str, type]
    # The `channels:` block; None without one (a v1 file: one default channel).
    channels: ChannelsSettings | None = None
    api: ApiSettings = ApiSettings()
    source: str = "config.yaml"

    def enabled_plugins(self) -> list[tuple[str, Any]]:
        return [(name, s) for name, s in self.plugins.items() if s.enabled]

    def plugin(self, name: str) -> Any | None:
        """The settings of plugin `name` if it is enabled, else None."""
        block = self.plugins.get(name)
        return block if block is not None and block.enabled else None

    @property
    def instance_id(self) -> str:
        return self.server.resolved_instance_id()


SECTIONS = types.MappingProxyType(
    {"server": ServerSettings, "store": StoreSettings, "logging": LoggingSettings}
)
