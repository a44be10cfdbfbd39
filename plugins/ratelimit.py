"""Rate limiting: a token bucket per session, checked atomically in the store.

`max_messages_per_second` is the refill rate, `burst` the bucket size. An over-limit
message is dropped with a `rate_limited` error carrying `retry_after` (seconds); the
connection stays open. The bucket belongs to the session, so reconnecting does not
refill it; and every session of one address also shares the address's bucket
(`per_ip`), so opening new sessions does not buy more messages. A `subscribe` spends a
token like a message. A message spends a token
from both or from neither, atomically (one Lua call; both keys in the address's slot).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.config.schema import setting
from core.engine.connection import Connection
from core.engine.hooks import Plugin, Veto
from core.engine.message import Message
from core.stores.ratelimit import Bucket
from core.wire import frames


@dataclass(frozen=True)
class AddressLimit:
    """`plugins.ratelimit.per_ip`: one bucket shared by every session of an address."""

    max_messages_per_second: float = setting(20.0, gt=0)
    burst: int = setting(20, ge=1)


@dataclass(frozen=True)
class RateLimitSettings:
    """`plugins.ratelimit`."""

    enabled: bool = True
    max_messages_per_second: float = setting(5.0, gt=0)
    burst: int = setting(5, ge=1)
    per_ip: AddressLimit | None = field(default_factory=AddressLimit)  # null: sessions only


class RateLimitPlugin(Plugin):
    """Drops messages over the session's or its address's bucket with `rate_limited`."""

    name = "ratelimit"
    Settings = RateLimitSettings

    async def on_message(self, conn: Connection, message: Message) -> Veto | None:
        """Spend one token of the sender's bucket and of its address's, or veto."""
        return await self._spend(conn)

    async def on_subscribe(self, conn: Connection, channel: str) -> Veto | None:
        """A subscription costs a token too: subscribing cannot be used to flood."""
        return await self._spend(conn)

    async def _spend(self, conn: Connection) -> Veto | None:
        s = self.settings
        session = Bucket(conn.client_id, s.max_messages_per_second, s.burst)
        if s.per_ip is None:
            group, buckets = conn.client_id, (Bucket("", session.rate, session.burst),)
        else:
            address = Bucket("", s.per_ip.max_messages_per_second, s.per_ip.burst)
            group, buckets = conn.ip_key, (address, session)
        retry_after = await self.services.stores.rate_limiter.take(group, buckets)
        if retry_after <= 0:
            return None
        return Veto(
            frames.RATE_LIMITED,
            self._limits(),
            extra={"retry_after": round(retry_after, 3)},
        )

    def _limits(self) -> str:
        s = self.settings
        text = f"too many messages (at most {s.max_messages_per_second:g} per second"
        if s.per_ip is not None:
            text += f", {s.per_ip.max_messages_per_second:g} from your address"
        return text + ")"
