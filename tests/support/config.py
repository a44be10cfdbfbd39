"""Settings for test servers: a quiet baseline that each test adjusts."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from core.config.loader import parse_settings
from core.config.settings import Settings
from plugins import REGISTRY


def baseline() -> dict[str, Any]:
    """Every plugin on, memory store, any free port; limits and timers out of the way."""
    return {
        "server": {"host": "127.0.0.1", "port": 0, "shutdown_timeout": 2},
        "store": {"backend": "memory"},
        "logging": {"level": "warning"},
        "plugins": {
            # Off, but first as in the shipped file: a test that turns it on gets it first.
            "auth": {"enabled": False},
            "throttle": {"enabled": True, "max_connections_per_ip": 1000},
            "ratelimit": {
                "enabled": True,
                "max_messages_per_second": 1000,
                "burst": 1000,
                "per_ip": {"max_messages_per_second": 100_000, "burst": 100_000},
            },
            "sessions": {"enabled": True, "ttl": 3600, "max_new_per_ip_per_minute": 100_000},
            "pubsub": {"enabled": True, "channel": "broadcast"},
            "history": {"enabled": True, "size": 100, "ttl": 300, "replay": 0},
            "heartbeat": {"enabled": True, "timeout": 60, "tiers": [{"interval": 3600}]},
            "priority": {
                "enabled": True,
                "classes": {"critical": 10, "normal": 5, "status": 1},
                "queue_limit": 1000,
            },
        },
    }


def merge(base: dict, changes: dict) -> dict:
    """Deep-merge `changes` into a copy of `base`; a None value deletes the key."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def settings(changes: dict | None = None, registry: Mapping[str, type] = REGISTRY) -> Settings:
    return parse_settings(merge(baseline(), changes or {}), registry, "test.yaml")
