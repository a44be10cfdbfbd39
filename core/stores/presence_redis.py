"""Presence in Redis: a sorted set per channel (`{prefix}presence:{<channel>}`), each
member scored by when it stops counting. Join and leave are one call each (ZADD, ZREM);
an instance refreshes its own members' scores every third of `store.instance_ttl`.

While Redis is down, presence is this instance's own (the memory twin), and the local
members are written back when it returns.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.stores.keys import Keys
from core.stores.presence import Member, PresenceStore
from core.stores.presence_memory import MemoryPresence
from core.stores.redis_link import LinkDown, RedisLink


def _members(reply: list[bytes]) -> list[Member]:
    return [m for m in (Member.decode(raw) for raw in reply) if m is not None]


class RedisPresence(PresenceStore):
    """Cluster-wide presence; this instance's own while Redis is down."""

    def __init__(self, link: RedisLink, keys: Keys, fallback: MemoryPresence) -> None:
        self.link = link
        self.keys = keys
        self.fallback = fallback

    async def add(self, channel: str, member: Member, ttl: float) -> list[Member]:
        await self.fallback.add(channel, member, ttl)
        if self.link.up:
            try:
                reply = await self.link.script(
                    "presence_add",
                    [self.keys.presence(channel)],
                    [int(ttl * 1000), 1, member.encode()],
                )
                return _members(reply)
            except LinkDown:
                pass
        return await self.fallback.members(channel)

    async def remove(self, channel: str, member: Member) -> bool:
        here = await self.fallback.remove(channel, member)
        if self.link.up:
            try:
                removed = await self.link.call("ZREM", self.keys.presence(channel), member.encode())
                return bool(removed)
            except LinkDown:
                pass
        return here

    async def members(self, channel: str) -> list[Member]:
        if self.link.up:
            try:
                reply = await self.link.script(
                    "presence_members", [self.keys.presence(channel)], []
                )
                return _members(reply)
            except LinkDown:
                pass
        return await self.fallback.members(channel)

    async def refresh(self, channel: str, members: Sequence[Member], ttl: float) -> list[Member]:
        back = await self.fallback.refresh(channel, members, ttl)
        if self.link.up and members:
            try:
                reply = await self.link.script(
                    "presence_add",
                    [self.keys.presence(channel)],
                    [int(ttl * 1000), 0, *(m.encode() for m in members)],
                )
                return _members(reply)
            except LinkDown:
                pass
        return back

    async def expire(self, channel: str) -> list[Member]:
        if self.link.up:
            try:
                reply = await self.link.script("presence_expire", [self.keys.presence(channel)], [])
                return _members(reply)
            except LinkDown:
                pass
        return await self.fallback.expire(channel)
