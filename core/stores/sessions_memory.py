"""Sessions in this process's memory: resumable on this instance until they expire."""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable

from core.stores.sessions import Session, SessionStore


class MemorySessionStore(SessionStore):
    """Sessions in an LRU-ordered dict, expired lazily and bounded in number."""

    def __init__(self, wall: Callable[[], float] = time.time, capacity: int = 100_000) -> None:
        self._wall = wall
        self._capacity = capacity
        # token -> (session, expires_at); least recently used first
        self._sessions: OrderedDict[str, tuple[Session, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def _put(self, session: Session, ttl: float) -> None:
        self._sessions[session.token] = (session, self._wall() + ttl)
        self._sessions.move_to_end(session.token)
        self._evict()

    def _evict(self) -> None:
        now = self._wall()
        while self._sessions:
            token, (_, expires) = next(iter(self._sessions.items()))
            if expires > now and len(self._sessions) <= self._capacity:
                break
            del self._sessions[token]

    def _get(self, token: str) -> Session | None:
        found = self._sessions.get(token)
        if found is None:
            return None
        session, expires = found
        if expires <= self._wall():
            del self._sessions[token]
            return None
        return session

    async def create(self, token: str, client_id: str, ttl: float, user: str = "") -> Session:
        now = self._wall()
        session = Session(token, client_id, created_at=now, last_seen=now, user=user)
        self._put(session, ttl)
        return session

    async def resume(self, token: str, ttl: float) -> Session | None:
        session = self._get(token)
        if session is None:
            return None
        session.last_seen = self._wall()
        self._put(session, ttl)
        return dataclasses.replace(session)  # a snapshot, as a remote store would give

    def record_message(self, token: str, ts_ms: int, ttl: float) -> None:
        session = self._get(token)
        if session is not None:
            session.message_count += 1
            session.last_message_ts = ts_ms
            session.last_seen = ts_ms / 1000
            self._put(session, ttl)

    async def leave(self, token: str, channels: dict[str, str | None], ttl: float) -> None:
        session = self._get(token)
        if session is not None:
            session.last_seen = self._wall()
            session.channels = dict(channels)
            self._put(session, ttl)

    async def refresh(self, tokens: list[str], ttl: float) -> None:
        for token in tokens:
            session = self._get(token)
            if session is not None:
                self._put(session, ttl)
