"""Presence in this process's memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from core.stores.presence import Member, PresenceStore


class MemoryPresence(PresenceStore):
    """Members per channel with their expiry; an empty channel is forgotten."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._channels: dict[str, dict[Member, float]] = {}

    def __len__(self) -> int:
        return len(self._channels)

    async def add(self, channel: str, member: Member, ttl: float) -> list[Member]:
        members = self._channels.setdefault(channel, {})
        members[member] = self._clock() + ttl
        return await self.members(channel)

    async def remove(self, channel: str, member: Member) -> bool:
        members = self._channels.get(channel)
        if members is None or members.pop(member, None) is None:
            return False
        if not members:
            del self._channels[channel]
        return True

    async def members(self, channel: str) -> list[Member]:
        now = self._clock()
        return [m for m, until in self._channels.get(channel, {}).items() if until > now]

    async def refresh(self, channel: str, members: Sequence[Member], ttl: float) -> list[Member]:
        held = self._channels.setdefault(channel, {})
        until = self._clock() + ttl
        back = [m for m in members if m not in held]
        for member in members:
            held[member] = until
        return back

    async def expire(self, channel: str) -> list[Member]:
        held = self._channels.get(channel)
        if held is None:
            return []
        now = self._clock()
        gone = [m for m, until in held.items() if until <= now]
        for member in gone:
            del held[member]
        if not held:
            del self._channels[channel]
        return gone
