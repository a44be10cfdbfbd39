"""config.yaml -> typed, validated `Settings`.

The plugin blocks are validated by the Settings class each plugin declares; the loader
receives the plugin registry rather than importing it, so the core does not depend on
the plugins.
"""

from __future__ import annotations

import ipaddress
import socket
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from core.schema import ConfigError, build, describe, join, setting, unknown_key


@dataclass(frozen=True)
class ServerSettings:
    """The `server:` block: where to listen and how to treat clients and proxies."""

    host: str = "127.0.0.1"
    port: int = setting(8200, ge=0, le=65535)
    instance_id: str | None = setting(None, non_empty=True)
    max_message_size: int = setting(65536, ge=128)
    allowed_origins: tuple[str, ...] = setting([])
    trusted_proxies: tuple[str, ...] = setting([])
    shutdown_timeout: float = setting(5.0, gt=0)

    def check(self, path: str) -> None:
        for i, proxy in enumerate(self.trusted_proxies):
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(
                    join(join(path, "trusted_proxies"), i),
                    f"expected an IP address or network, got {describe(proxy)}",
                ) from None
        for i, origin in enumerate(self.allowed_origins):
            if origin != "*" and "://" not in origin:
                raise ConfigError(
                    join(join(path, "allowed_origins"), i),
                    f"expected an origin like 'https://example.com' or '*', got {describe(origin)}",
                )

    def resolved_instance_id(self) -> str:
        return self.instance_id or f"{socket.gethostname()}:{self.port}"


@dataclass(frozen=True)
class StoreSettings:
    """The `store:` block: where shared state lives."""

    backend: Literal["memory", "redis", "auto"] = "auto"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "ws:"

    def check(self, path: str) -> None:
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                join(path, "redis_url"),
                f"expected a redis://, rediss:// or unix:// URL, got {describe(self.redis_url)}",
            )


@dataclass(frozen=True)
class LoggingSettings:
    """The `logging:` block: one line per event, as plain text or JSON."""

    format: Literal["plain", "json"] = "plain"
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class Settings:
    """The whole validated configuration of one server instance."""

    server: ServerSettings
    store: StoreSettings
    logging: LoggingSettings
    # Every configured plugin block in file order, enabled or not.
    plugins: Mapping[str, Any]
    source: str = "config.yaml"

    def enabled_plugins(self) -> list[tuple[str, Any]]:
        return [(name, s) for name, s in self.plugins.items() if s.enabled]

    def plugin(self, name: str) -> Any | None:
        """The settings of plugin `name` if it is enabled, else None."""
        block = self.plugins.get(name)
        return block if block is not None and block.enabled else None

    def plugin_block(self, name: str, default: Any) -> Any:
        """The plugin's settings whether enabled or not (some define shared vocabulary)."""
        return self.plugins.get(name, default)

    @property
    def instance_id(self) -> str:
        return self.server.resolved_instance_id()


_SECTIONS = {"server": ServerSettings, "store": StoreSettings, "logging": LoggingSettings}


def parse_settings(
    data: object, registry: Mapping[str, type], source: str = "config.yaml"
) -> Settings:
    """Validate already-parsed YAML data. Raises ConfigError naming `source`."""
    try:
        return _parse(data, registry, source)
    except ConfigError as error:
        raise error.in_file(source) from None


def _parse(data: object, registry: Mapping[str, type], source: str) -> Settings:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("", f"expected a mapping at the top level, got {describe(data)}")
    known = [*_SECTIONS, "plugins"]
    for key in data:
        if key not in known:
            raise unknown_key("", key, known)
    sections = {name: build(cls, data.get(name), name) for name, cls in _SECTIONS.items()}
    plugins_data = data.get("plugins") or {}
    if not isinstance(plugins_data, dict):
        raise ConfigError("plugins", f"expected a mapping, got {describe(plugins_data)}")
    plugins: dict[str, Any] = {}
    for name, block in plugins_data.items():
        path = join("plugins", name)
        plugin_cls = registry.get(name)
        if plugin_cls is None:
            raise ConfigError(path, f"unknown plugin (known: {', '.join(registry)})")
        plugins[name] = build(plugin_cls.Settings, block, path)
    return Settings(plugins=types.MappingProxyType(plugins), source=source, **sections)


def load_settings(
    path: str, registry: Mapping[str, type], overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Read, parse and validate `path`. `overrides` maps "section.key" to a value."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as error:
        raise ConfigError("", f"cannot read the file: {error.strerror}", path) from None
    data = parse_yaml(text, path)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        if data is None:
            data = {}
        if not isinstance(data, dict):
            break  # parse_settings reports the shape problem
        section, key = dotted.split(".")
        block = data.get(section)
        if block is None:
            block = data[section] = {}
        if isinstance(block, dict):
            block[key] = value
    return parse_settings(data, registry, path)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise ConfigError("", f"line {mark.line + 1}: duplicate key {describe(key)}")
            try:
                seen.add(key)
            except TypeError:
                pass  # unhashable keys are reported by the schema
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> object:
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except ConfigError as error:
        raise error.in_file(source) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError("", f"invalid YAML: {where}{problem}", source) from None
