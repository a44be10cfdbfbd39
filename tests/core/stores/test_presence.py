"""Presence stores: members per channel, expiry of a dead instance's members (each
returned to one sweeper only), and a late instance's swept members coming back."""

from __future__ import annotations

import asyncio

import pytest

from core.stores.presence import Member
from core.stores.presence_memory import MemoryPresence
from core.stores.presence_redis import RedisPresence
from tests.core.stores.redis_helpers import keys, link_to
from tests.support.waiting import until_async


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


A = Member("left/1", "c1", "alice", "left")
B = Member("right/1", "c2", "bob", "right")


@pytest.mark.gen_test
async def test_memory_presence_adds_lists_removes_and_expires():
    clock = Clock()
    store = MemoryPresence(clock)
    assert await store.add("room", A, ttl=10) == [A]
    assert set(await store.add("room", B, ttl=2)) == {A, B}
    clock.now += 5  # B's instance did not refresh it
    assert await store.members("room") == [A]
    assert await store.expire("room") == [B]
    assert await store.expire("room") == []  # once
    assert await store.refresh("room", [A, B], ttl=10) == [B]  # B's instance was late
    assert await store.remove("room", B) and not await store.remove("room", B)
    assert await store.remove("room", A)
    assert len(store) == 0  # nothing kept for an empty channel


@pytest.mark.gen_test(timeout=10)
async def test_redis_presence_expires_each_member_to_one_sweeper(redis_server, key_prefix):
    one, two = await link_to(redis_server.url), await link_to(redis_server.url)
    left = RedisPresence(one, keys(key_prefix), MemoryPresence())
    right = RedisPresence(two, keys(key_prefix), MemoryPresence())
    dead = [Member(f"dead/{i}", f"c{i}", f"u{i}", "dead") for i in range(50)]
    for member in dead:
        await left.add("room:x", member, ttl=0.2)
    assert set(await right.add("room:x", B, ttl=30)) == {*dead, B}

    async def lapsed() -> bool:
        return await right.members("room:x") == [B]

    await until_async(lapsed, timeout=3)
    swept = await asyncio.gather(left.expire("room:x"), right.expire("room:x"))
    assert sorted(m.conn for m in swept[0] + swept[1]) == sorted(m.conn for m in dead)
    assert not set(swept[0]) & set(swept[1])  # no leave announced twice
    back = await left.refresh("room:x", [dead[0]], ttl=30)
    assert back == [dead[0]]  # was swept, is back: its instance announces it again
    assert await right.remove("room:x", B) and not await right.remove("room:x", B)
    await one.close()
    await two.close()
