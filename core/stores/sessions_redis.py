"""Sessions as Redis hashes (`{prefix}session:{token}`), resumable on any instance.

While Redis is down, new sessions live in the memory fallback of this instance (and can
be resumed here); sessions stored in Redis become resumable again when it returns.

Message counts are gathered per session and written at most once per
`COUNT_FLUSH_EVERY` seconds, and when the client leaves: a busy sender costs Redis one
write per second, not one per message.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from core.stores.keys import Keys
from core.stores.redis_link import LinkDown, RedisLink
from core.stores.sessions import Session, SessionStore
from core.stores.sessions_memory import MemorySessionStore

COUNT_FLUSH_EVERY = 1.0


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _channels(raw: bytes | None) -> dict[str, str | None]:
    """The `channels` field: channel -> last message id, JSON (anything else: none)."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {
        str(c): i if isinstance(i, str) else None for c, i in value.items() if isinstance(c, str)
    }


def session_from_hash(token: str, fields: dict[bytes, bytes]) -> Session | None:
    """A Session from the hash's fields; None if it lacks a clientId."""
    get = fields.get
    client_id = get(b"clientId")
    if not client_id:
        return None
    channels = _channels(get(b"channels"))
    return Session(
        token=token,
        client_id=client_id.decode(),
        message_count=int(get(b"messageCount", 0)),
        last_message_ts=int(get(b"lastMessageTimestamp", 0)),
        created_at=int(get(b"createdAt", 0)) / 1000,
        last_seen=int(get(b"lastSeen", 0)) / 1000,
        channels=channels,
        user=get(b"user", b"").decode(),
    )


class RedisSessionStore(SessionStore):
    """Shared sessions; this instance's memory while Redis is down."""

    def __init__(
        self,
        link: RedisLink,
        keys: Keys,
        fallback: MemorySessionStore,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.link = link
        self.keys = keys
        self.fallback = fallback
        self.wall = wall
        # token -> (messages not yet counted in Redis, time of the last, ttl)
        self._uncounted: dict[str, tuple[int, int, float]] = {}
        self._flush: asyncio.TimerHandle | None = None

    async def create(self, token: str, client_id: str, ttl: float, user: str = "") -> Session:
        now = self.wall()
        if self.link.up:
            key = self.keys.session(token)
            try:
                await self.link.call(
                    "HSET", key,
                    "clientId", client_id,
                    "messageCount", 0,
                    "lastMessageTimestamp", 0,
                    "createdAt", _ms(now),
                    "lastSeen", _ms(now),
                    "user", user,
                )  # fmt: skip
                self.link.fire("PEXPIRE", key, _ms(ttl))
                return Session(token, client_id, created_at=now, last_seen=now, user=user)
            except LinkDown:
                pass
        return await self.fallback.create(token, client_id, ttl, user)

    async def resume(self, token: str, ttl: float) -> Session | None:
        if self.link.up:
            try:
                reply = await self.link.script(
                    "session_resume", [self.keys.session(token)], [_ms(ttl), _ms(self.wall())]
                )
            except LinkDown:
                reply = None
            if reply:
                fields = dict(zip(reply[::2], reply[1::2], strict=True))
                session = session_from_hash(token, fields)
                if session is not None:
                    return session
        return await self.fallback.resume(token, ttl)

    def record_message(self, token: str, ts_ms: int, ttl: float) -> None:
        uncounted = self._uncounted.get(token)
        self._uncounted[token] = ((uncounted[0] if uncounted else 0) + 1, ts_ms, ttl)
        if self._flush is None:
            loop = asyncio.get_running_loop()
            self._flush = loop.call_later(COUNT_FLUSH_EVERY, self._write_counts)
        self.fallback.record_message(token, ts_ms, ttl)

    def _write_counts(self) -> None:
        self._flush = None
        if not self.link.up:
            if self._uncounted:  # keep them for when Redis is back
                loop = asyncio.get_running_loop()
                self._flush = loop.call_later(COUNT_FLUSH_EVERY, self._write_counts)
            return
        uncounted, self._uncounted = self._uncounted, {}
        for token, (count, ts_ms, ttl) in uncounted.items():
            self.link.fire_script(
                "session_message", [self.keys.session(token)], [_ms(ttl), ts_ms, count]
            )

    async def leave(self, token: str, channels: dict[str, str | None], ttl: float) -> None:
        count, ts_ms, _ = self._uncounted.pop(token, (0, 0, ttl))
        if self.link.up:
            try:
                await self.link.script(
                    "session_leave",
                    [self.keys.session(token)],
                    [_ms(ttl), _ms(self.wall()), json.dumps(channels), count, ts_ms],
                )
            except LinkDown:
                pass
        await self.fallback.leave(token, channels, ttl)

    async def refresh(self, tokens: list[str], ttl: float) -> None:
        if self.link.up:
            for token in tokens:
                self.link.fire("PEXPIRE", self.keys.session(token), _ms(ttl))
        await self.fallback.refresh(tokens, ttl)
