"""Subscriptions: a connection joining and leaving channels, with no gap and no duplicate.

Joining a channel, whether from the welcome (the default channel, the personal ones, a
resumed session's) or by a `subscribe` frame, goes the same way:

1. the hub holds the channel's live messages for the connection (and the broker starts
   listening to the channel on this instance if it is the first subscriber here);
2. on a presence channel, the connection joins the presence (the others get `join`);
3. the history service reads what the connection should see first (the channel's
   latest messages, or what came after `since`);
4. `subscribed` (for a `subscribe` frame), then those messages as `history` frames;
5. the hub hands over the live messages held meanwhile, without those the replay
   already covered, and from then on the connection gets them as they come.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from core.wire import frames
from core.wire.ids import parse_id

if TYPE_CHECKING:
    from core.engine.channels import ChannelRules
    from core.engine.connection import Connection
    from core.engine.hookrunner import HookRunner
    from core.engine.hub import Hub
    from core.engine.presence import Presence
    from core.engine.services import History

log = logging.getLogger("server")


class Subscriptions:
    """Joins and leaves channels for connections, as the channel rules allow."""

    def __init__(
        self,
        hub: Hub,
        presence: Presence,
        rules: ChannelRules,
        history: Callable[[], History | None],
        hooks: Callable[[], HookRunner],
    ) -> None:
        self.hub = hub
        self.presence = presence
        self.rules = rules
        self.history = history
        self.hooks = hooks

    async def initial(
        self, conn: Connection, resume: Mapping[str, str | None]
    ) -> dict[str, str | None]:
        """The channels `conn` is in from its welcome, each with the id to recover from:
        the default channel, its personal ones, and what a resumed session was in (as
        far as the rules and the on_authorize hooks still allow)."""
        channels: dict[str, str | None] = {}
        if self.rules.default is not None:
            # `?since=` (v1): a resumed session says itself where it stopped reading.
            since = conn.query.get("since") if conn.resumed else None
            if since is not None and parse_id(since) is None:
                log.debug("ignored a malformed since from %s", conn.ip)
                since = None
            channels[self.rules.default] = since or resume.get(self.rules.default)
        for channel in self.rules.personal(conn.user):
            channels[channel] = resume.get(channel)
        room = self.rules.max_per_connection - sum(1 for c in channels if self.rules.counted(c))
        for channel, cursor in resume.items():
            if channel in channels or self.rules.may_subscribe(channel, conn.user) is not None:
                continue
            if await self.hooks().authorize(conn, channel) is not None:
                continue
            if self.rules.counted(channel):
                if room <= 0:
                    continue
                room -= 1
            channels[channel] = cursor
        return channels

    async def hold(self, conn: Connection, channels: Mapping[str, str | None]) -> None:
        """Step 1 for the welcome's channels, before the welcome is sent (together: the
        broker's subscriptions for new channels share one round trip, and one wait)."""
        await self.hub.join_all(conn, channels)

    async def catch_up(
        self, conn: Connection, channel: str, since: str | None, announce: bool
    ) -> None:
        """Steps 2 to 5 for a channel the hub already holds messages of for `conn`."""
        options = self.rules.namespace(channel)
        if options is None:
            return
        if since is not None and parse_id(since) is None:
            since = None  # not an id: as if absent
        members = await self.presence.join(conn, channel) if options.presence else None
        replay = None
        history = self.history()
        if options.history and history is not None:
            replay = await history.replay(channel, since, conn.policy.max_bytes // 2)
        if conn.closing or channel not in conn.channels:
            return  # gone, or unsubscribed, while this was read
        if announce:
            frame: dict = {"type": "subscribed", "channel": channel}
            if members is not None:
                frame["presence"] = [m.public() for m in members]
            if since is not None:
                frame["recovered"] = bool(replay is not None and replay.recovered)
            conn.send_json(frame)
        cutoff = since
        if replay is not None and replay.entries:
            for entry in replay.entries:
                conn.send(entry.history_frame())
            cutoff = replay.entries[-1].id
        through = replay.through if replay is not None else None
        self.hub.go_live(conn, channel, cutoff, cursor=through or since)

    # -- client requests ------------------------------------------------------------

    async def subscribe(self, conn: Connection, channel: str, since: str | None) -> None:
        """A `subscribe` frame."""
        refusal = self.rules.may_subscribe(channel, conn.user)
        if refusal is not None:
            conn.send_json(frames.error_payload(*refusal, channel=channel))
            return
        options = self.rules.namespace(channel)
        if channel in conn.channels:
            frame: dict = {"type": "subscribed", "channel": channel}
            if options is not None and options.presence:
                members = await self.presence.members(channel)
                frame["presence"] = [m.public() for m in members]
            conn.send_json(frame)
            return
        if self.rules.counted(channel):
            held = sum(1 for c in conn.channels if self.rules.counted(c))
            if held >= self.rules.max_per_connection:
                conn.send_json(
                    frames.error_payload(
                        frames.TOO_MANY_CHANNELS,
                        f"at most {self.rules.max_per_connection} channels per connection",
                        channel=channel,
                        limit=self.rules.max_per_connection,
                    )
                )
                return
        veto = await self.hooks().subscribe(conn, channel)
        if veto is not None:
            error = veto.error_frame()
            if error is not None:
                conn.send_json({**error, "channel": channel})
            return
        if conn.closing:
            return
        if since is not None and parse_id(since) is None:
            since = None  # not an id: as if absent
        await self.hub.join(conn, channel, since)
        await self.catch_up(conn, channel, since, announce=True)

    async def unsubscribe(self, conn: Connection, channel: str) -> None:
        """An `unsubscribe` frame: answered `unsubscribed` whether it was in or not."""
        if self.rules.namespace(channel) is None:
            conn.send_json(frames.error_payload(*self.rules.invalid(channel), channel=channel))
            return
        if self.hub.leave(conn, channel):
            await self._leave_presence(conn, channel)
        conn.send_json({"type": "unsubscribed", "channel": channel})

    async def list_presence(self, conn: Connection, channel: str) -> None:
        """A `presence` frame."""
        refusal = self.rules.may_see_presence(channel, conn.user)
        if refusal is not None:
            conn.send_json(frames.error_payload(*refusal, channel=channel))
            return
        members = await self.presence.members(channel)
        conn.send_json(
            {"type": "presence", "channel": channel, "clients": [m.public() for m in members]}
        )

    # -- closing --------------------------------------------------------------------

    async def closed(self, conn: Connection, channels: list[str]) -> None:
        """`conn` closed while in `channels`: it leaves their presence."""
        for channel in channels:
            await self._leave_presence(conn, channel)

    async def _leave_presence(self, conn: Connection, channel: str) -> None:
        options = self.rules.namespace(channel)
        if options is not None and options.presence:
            await self.presence.leave(conn, channel)
