"""A client's message on its way through the on_message hooks to the broker."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    """A valid client message: its class, the class's priority, text, sender and time."""

    cls: str
    priority: int
    content: str
    sender: str  # the sender's public client_id
    ts: float  # wall-clock seconds when this instance received it
