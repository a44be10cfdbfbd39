"""A client's message on its way through the on_message hooks to the broker."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.engine.hooks import Veto
    from core.stores.ratelimit import RateLimiter, Spend


@dataclass(frozen=True, slots=True)
class Charge:
    """What a message costs, paid when it is published: `spend` taken from `limiter`, or
    the message is refused with `refusal(retry_after)`.

    An on_message hook adds one (`message.charged(...)`) instead of taking the tokens
    itself: where the broker can (a single Redis), the tokens are taken in the same
    Redis call that publishes the message, so an accepted message costs one round trip
    and a refused one is never published; elsewhere they are taken just before.
    """

    spend: Spend
    limiter: RateLimiter
    refusal: Callable[[float], Veto]


@dataclass(frozen=True, slots=True)
class Message:
    """A valid client message: its class, the class's priority, text, channel, sender
    and time."""

    cls: str
    priority: int
    content: str
    sender: str  # the sender's public client_id
    ts: float  # wall-clock seconds when this instance received it
    channel: str = "broadcast"  # where it is published
    charges: tuple[Charge, ...] = ()  # paid when it is published

    def charged(self, charge: Charge) -> Message:
        """A copy that costs `charge` too: what a rate limit's on_message returns."""
        # Not dataclasses.replace: it is per message, and this is several times cheaper.
        return Message(
            self.cls,
            self.priority,
            self.content,
            self.sender,
            self.ts,
            self.channel,
            (*self.charges, charge),
        )

    def replace(self, **changes: Any) -> Message:
        """A copy with `changes` (`content=...`): what an on_message hook returns to
        broadcast something else."""
        return dataclasses.replace(self, **changes)
