"""Sessions as Redis hashes with the contract's fields and a TTL."""

from __future__ import annotations

import hashlib

import pytest
import redis.exceptions

from core.stores.sessions_memory import MemorySessionStore
from core.stores.sessions_redis import RedisSessionStore
from tests.core.stores.redis_helpers import keys, link_to
from tests.support.waiting import until


def session_key(prefix: str, token: str) -> str:
    """The contract's key: the token's SHA-256, never the token itself."""
    return f"{prefix}session:{hashlib.sha256(token.encode()).hexdigest()}"


@pytest.mark.gen_test(timeout=10)
async def test_a_session_hash_has_the_contract_fields_and_ttl(redis_server, key_prefix):
    link = await link_to(redis_server.url)
    store = RedisSessionStore(link, keys(key_prefix), MemorySessionStore())
    await store.create("tok1", "client1", ttl=60)
    store.record_message("tok1", 1_700_000_000_100, ttl=60)
    store.record_message("tok1", 1_700_000_000_123, ttl=60)
    r = redis_server.client()
    key = session_key(key_prefix, "tok1")
    # The link sends its commands in order: once a PING through it is answered, any
    # write made per message has reached Redis.
    await link.call("PING")
    # Counts are gathered and written once a second, not once per message.
    assert r.hget(key, "messageCount") == b"0"
    await until(lambda: r.hget(key, "messageCount") == b"2", timeout=3)
    fields = r.hgetall(key)
    assert fields[b"clientId"] == b"client1"
    assert fields[b"messageCount"] == b"2"
    assert fields[b"lastMessageTimestamp"] == b"1700000000123"
    assert {b"createdAt", b"lastSeen"} <= set(fields)
    assert 55_000 < r.pttl(session_key(key_prefix, "tok1")) <= 60_000
    await link.close()


@pytest.mark.gen_test(timeout=10)
async def test_resume_returns_the_counters_and_refreshes_the_ttl(redis_server, key_prefix):
    link = await link_to(redis_server.url)
    store = RedisSessionStore(link, keys(key_prefix), MemorySessionStore())
    await store.create("tok2", "client2", ttl=5)
    for i in range(3):
        store.record_message("tok2", 1000 + i, ttl=5)
    await store.leave("tok2", {"broadcast": "123-4", "room:a": None}, ttl=5)
    session = await store.resume("tok2", ttl=60)
    assert session.client_id == "client2"
    assert session.message_count == 3
    assert session.last_message_ts == 1002
    assert session.channels == {"broadcast": "123-4", "room:a": None}
    assert redis_server.client().pttl(session_key(key_prefix, "tok2")) > 50_000
    assert await store.resume("unknown", ttl=60) is None
    await link.close()


@pytest.mark.gen_test(timeout=10)
async def test_an_expired_session_is_gone_and_not_resurrected(redis_server, key_prefix):
    link = await link_to(redis_server.url)
    store = RedisSessionStore(link, keys(key_prefix), MemorySessionStore())
    await store.create("tok3", "client3", ttl=0.2)
    await store.create("live", "client4", ttl=60)
    r = redis_server.client()
    await until(lambda: r.exists(session_key(key_prefix, "tok3")) == 0, timeout=2)
    # A message for the expired session, and one for a live session as a witness: the
    # counts are written together, so once the live one's shows, the other was written
    # too (a PING through the link makes sure its reply is in).
    store.record_message("tok3", 1, ttl=60)
    store.record_message("live", 2, ttl=60)
    await until(lambda: r.hget(session_key(key_prefix, "live"), "messageCount") == b"1", timeout=3)
    await link.call("PING")
    assert await store.resume("tok3", ttl=60) is None
    assert r.exists(session_key(key_prefix, "tok3")) == 0
    await link.close()


@pytest.mark.gen_test(timeout=20)
async def test_no_session_token_appears_in_key_names_or_in_redis_commands(
    servers, redis_server, key_prefix
):
    from tests.conftest import redis_changes
    from tests.support.ws_client import WsClient

    monitor = redis_server.client().monitor()
    monitor.connection.send_command("MONITOR")
    monitor.connection.read_response()
    server = await servers(redis_changes(redis_server.url, key_prefix))
    first = await WsClient.connect(server.port)
    await first.send("normal", "hello")
    await first.recv_type("message")
    first.close()
    again = await WsClient.connect(server.port, session=first.session)
    assert again.welcome["resumed"] is True
    r = redis_server.client()
    names = [k.decode() for k in r.scan_iter(f"{key_prefix}*")]
    assert session_key(key_prefix, first.session) in names
    assert not [n for n in names if first.session in n]
    commands = []
    while True:
        try:
            commands.append(monitor.connection.read_response(timeout=0.2))
        except redis.exceptions.TimeoutError:
            break  # nothing more was sent
    seen = b" ".join(c if isinstance(c, bytes) else str(c).encode() for c in commands)
    assert b"session:" in seen  # the session's commands were watched...
    assert first.session.encode() not in seen  # ...and the token is in none of them
    print(f"{len(commands)} Redis commands watched, {len(names)} keys: no session token")
    monitor.connection.disconnect()
