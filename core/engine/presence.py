"""Presence of this instance's connections in the channels whose namespace has it.

Joining a presence channel adds the connection to the channel's presence (in the store:
Redis, shared by every instance) and tells the channel's other subscribers, on every
instance, with a `join` frame; leaving (unsubscribe or close) removes it and sends
`leave`. Each costs O(1) store work, whatever the size of the channel.

Every third of `ttl` (`store.instance_ttl`), the instance refreshes its own members (each
then counts for two thirds of `ttl`) and sweeps each of its presence channels: members
whose instance stopped refreshing them (it died) are removed, and their `leave` is
announced by the instance that removed them. A member lapses at most two thirds of `ttl`
after its instance's last refresh, and is swept at most a third later: so a dead
instance's clients leave within `ttl`. A live instance that was late and finds a member
of its own swept puts it back and announces its `join` again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from core.stores.presence import Member
from core.wire.frames import presence_frame

if TYPE_CHECKING:
    from core.engine.connection import Connection
    from core.engine.hub import Hub
    from core.stores.presence import PresenceStore

log = logging.getLogger("server")


class Presence:
    """Joins, leaves, listings, and the keep-alive of this instance's members."""

    def __init__(self, store: PresenceStore, hub: Hub, instance_id: str, ttl: float) -> None:
        self.store = store
        self.hub = hub
        self.instance_id = instance_id
        self.ttl = ttl
        self.lapse = ttl * 2 / 3  # how long a member counts after each refresh
        self._local: dict[str, dict[Connection, Member]] = {}
        self._keeper: asyncio.Task | None = None

    def __len__(self) -> int:
        """This instance's members, over all channels."""
        return sum(len(members) for members in self._local.values())

    def member(self, conn: Connection) -> Member:
        return Member(conn.key, conn.client_id, conn.user, self.instance_id)

    async def join(self, conn: Connection, channel: str) -> list[Member]:
        """Add `conn` to `channel`'s presence; the members now, it included."""
        member = self.member(conn)
        self._local.setdefault(channel, {})[conn] = member
        members = await self.store.add(channel, member, self.lapse)
        self._announce("join", channel, member)
        return members

    async def leave(self, conn: Connection, channel: str) -> None:
        """Remove `conn` from `channel`'s presence and tell the others."""
        local = self._local.get(channel)
        member = local.pop(conn, None) if local is not None else None
        if local is not None and not local:
            del self._local[channel]
        if member is not None and await self.store.remove(channel, member):
            self._announce("leave", channel, member)

    async def members(self, channel: str) -> list[Member]:
        return await self.store.members(channel)

    def _announce(self, kind: str, channel: str, member: Member) -> None:
        frame = presence_frame(kind, channel, member.client_id, member.user)
        self.hub.broker.publish_event(channel, member.conn, frame)

    # -- keep-alive -------------------------------------------------------------------

    def start(self) -> None:
        self._keeper = asyncio.ensure_future(self._keep())

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.tend()
            except Exception:
                log.exception("presence keep-alive failed; trying again next time")

    async def tend(self) -> None:
        """Refresh this instance's members and announce the expired ones' departure."""
        for channel, local in list(self._local.items()):
            for member in await self.store.refresh(channel, list(local.values()), self.lapse):
                self._announce("join", channel, member)
            for member in await self.store.expire(channel):
                self._announce("leave", channel, member)
