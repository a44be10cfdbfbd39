"""Presence: who is in a channel, one entry per connection, on every instance.

An entry lasts `ttl` seconds unless its instance refreshes it: an instance that dies
without cleaning up drops out of every channel's presence within `store.instance_ttl`
(whoever finds its entries expired removes them and tells the channel they left).
Adding or removing one entry costs O(log n) in Redis (a sorted set), whatever the size
of the channel; listing costs O(n).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Member:
    """One connection present in a channel."""

    conn: str  # the connection's key, unique among all instances
    client_id: str
    user: str
    instance: str

    def encode(self) -> str:
        return json.dumps([self.conn, self.client_id, self.user, self.instance])

    @classmethod
    def decode(cls, text: str | bytes) -> Member | None:
        try:
            conn, client_id, user, instance = json.loads(text)
        except (ValueError, TypeError):
            return None
        return cls(str(conn), str(client_id), str(user), str(instance))

    def public(self) -> dict:
        """What clients are told: the connection's client_id and user."""
        return {"client_id": self.client_id, "user": self.user}


class PresenceStore(abc.ABC):
    """Present connections per channel."""

    @abc.abstractmethod
    async def add(self, channel: str, member: Member, ttl: float) -> list[Member]:
        """Add `member` (for `ttl` seconds); the channel's members now, it included."""

    @abc.abstractmethod
    async def remove(self, channel: str, member: Member) -> bool:
        """Remove `member`; False if it was not there (expired, or never added)."""

    @abc.abstractmethod
    async def members(self, channel: str) -> list[Member]:
        """The channel's members now."""

    @abc.abstractmethod
    async def refresh(self, channel: str, members: Sequence[Member], ttl: float) -> list[Member]:
        """Keep `members` (this instance's) present for `ttl` more seconds; returns those
        that were gone (swept while this instance was late) and are back now."""

    @abc.abstractmethod
    async def expire(self, channel: str) -> list[Member]:
        """Remove the channel's expired members and return them: each to exactly one
        caller, even when instances race, so that each leave is announced once."""
