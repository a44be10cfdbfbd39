"""Sessions: a client's identity and counters, resumable with a secret token."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field


@dataclass(slots=True)
class Session:
    """What the server keeps about one client between its connections."""

    token: str  # the secret that resumes it; never logged
    client_id: str  # public: it appears in `from`
    message_count: int = 0
    last_message_ts: int = 0  # epoch milliseconds of the last accepted message
    created_at: float = 0.0  # epoch seconds
    last_seen: float = 0.0  # epoch seconds
    # The channels it was in when it left, each with the last message id it was sent.
    channels: dict[str, str | None] = field(default_factory=dict)
    user: str = ""  # the authenticated user it belongs to ("" for a guest)


class SessionStore(abc.ABC):
    """Where sessions live; every call refreshes the session's TTL."""

    @abc.abstractmethod
    async def create(self, token: str, client_id: str, ttl: float, user: str = "") -> Session:
        """Store a new session."""

    @abc.abstractmethod
    async def resume(self, token: str, ttl: float) -> Session | None:
        """The live session for `token`, or None if unknown or expired."""

    @abc.abstractmethod
    def record_message(self, token: str, ts_ms: int, ttl: float) -> None:
        """Count one accepted message. Fire-and-forget: never blocks the sender."""

    @abc.abstractmethod
    async def leave(self, token: str, channels: dict[str, str | None], ttl: float) -> None:
        """The client disconnected: note when, and the last message it was sent."""

    async def refresh(self, tokens: list[str], ttl: float) -> None:
        """Keep the sessions of connected clients alive."""
