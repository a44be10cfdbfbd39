"""A client's message on its way through the on_message hooks to the broker."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


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

    def replace(self, **changes: Any) -> Message:
        """A copy with `changes` (`content=...`): what an on_message hook returns to
        broadcast something else."""
        return dataclasses.replace(self, **changes)
