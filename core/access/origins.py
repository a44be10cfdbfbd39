"""Which other browser origins may open a WebSocket (`server.allowed_origins`).

Tornado already lets same-origin requests and clients without an Origin header (not
browsers) through; this policy decides the cross-origin ones: the configured origins,
or every origin with '*'.
"""

from __future__ import annotations

from collections.abc import Iterable


class OriginPolicy:
    """The configured cross-origin allow-list."""

    def __init__(self, allowed: Iterable[str]) -> None:
        allowed = [a.rstrip("/").lower() for a in allowed]
        self.any = "*" in allowed
        self.allowed = frozenset(allowed)

    def allows(self, origin: str) -> bool:
        return self.any or origin.rstrip("/").lower() in self.allowed
