"""Rate limiting: a token bucket per session, checked atomically in the store.

`max_messages_per_second` is the refill rate, `burst` the bucket size. An over-limit
message is dropped with a `rate_limited` error carrying `retry_after` (seconds); the
connection stays open. The bucket belongs to the session, so reconnecting does not
refill it.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config.schema import setting
from core.engine.connection import Connection
from core.engine.hooks import Plugin, Veto
from core.engine.message import Message
from core.wire import frames


@dataclass(frozen=True)
class RateLimitSettings:
    """`plugins.ratelimit`."""

    enabled: bool = True
    max_messages_per_second: float = setting(5.0, gt=0)
    burst: int = setting(5, ge=1)


class RateLimitPlugin(Plugin):
    """Drops messages over the session's token bucket with `rate_limited`."""

    name = "ratelimit"
    Settings = RateLimitSettings

    async def on_message(self, conn: Connection, message: Message) -> Veto | None:
        """Spend one token of the sender's bucket, or veto the message."""
        s = self.settings
        retry_after = await self.services.stores.rate_limiter.take(
            conn.client_id, s.max_messages_per_second, s.burst
        )
        if retry_after <= 0:
            return None
        return Veto(
            frames.RATE_LIMITED,
            f"too many messages (at most {s.max_messages_per_second:g} per second)",
            extra={"retry_after": round(retry_after, 3)},
        )
