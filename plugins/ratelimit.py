"""Rate limiting: a token bucket per session, checked atomically in the store.

`max_messages_per_second` is the refill rate, `burst` the bucket size. An over-limit
message is dropped with a `rate_limited` error carrying `retry_after` (seconds); the
connection stays open. The bucket belongs to the session, so reconnecting does not
refill it; and every session of one address also shares the address's bucket
(`per_ip`), so opening new sessions does not buy more messages. A `subscribe` spends a
token like a message. A message spends a token
from both or from neither, atomically (one Lua call; both keys in the address's slot);
on a single Redis that call is the one that publishes the message (a `Charge`), so an
accepted message costs one round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.config.schema import setting
from core.engine.connection import Connection
from core.engine.hooks import Plugin, Veto
from core.engine.message import Charge, Message
from core.engine.services import Services
from core.stores.ratelimit import Bucket, Spend
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

    def __init__(self, settings: RateLimitSettings, services: Services) -> None:
        super().__init__(settings, services)
        # Each connection's charge, built at its first message: the same every time.
        self._charges: dict[Connection, Charge] = {}

    def on_message(self, conn: Connection, message: Message) -> Message:
        """The message costs one token of the sender's bucket and of its address's,
        paid when it is published (in the publish's own Redis call, on a single Redis):
        if either bucket is empty, it is refused with `rate_limited` instead."""
        charge = self._charges.get(conn)
        if charge is None:
            limiter = self.services.stores.rate_limiter
            charge = self._charges[conn] = Charge(self._spend(conn), limiter, self._refusal)
        return message.charged(charge)

    def on_close(self, conn: Connection) -> None:
        """Forget the connection's charge."""
        self._charges.pop(conn, None)

    def on_reload(self, settings: RateLimitSettings) -> None:
        """New rates apply from each connection's next message."""
        self.settings = settings
        self._charges.clear()

    async def on_subscribe(self, conn: Connection, channel: str) -> Veto | None:
        """A subscription costs a token too: subscribing cannot be used to flood."""
        spend = self._spend(conn)
        retry_after = await self.services.stores.rate_limiter.take(spend.group, spend.buckets)
        return self._refusal(retry_after) if retry_after > 0 else None

    def _spend(self, conn: Connection) -> Spend:
        s = self.settings
        session = Bucket(conn.client_id, s.max_messages_per_second, s.burst)
        if s.per_ip is None:
            return Spend(conn.client_id, (Bucket("", session.rate, session.burst),))
        address = Bucket("", s.per_ip.max_messages_per_second, s.per_ip.burst)
        return Spend(conn.ip_key, (address, session))

    def _refusal(self, retry_after: float) -> Veto:
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
