"""Every Redis key and channel name the server uses, in one place.

`{prefix}` is `store.key_prefix` ("ws:" by default).
"""

from __future__ import annotations

import hashlib


class Keys:
    """Key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def session(self, token: str) -> str:
        """Hash of one session: clientId, messageCount, lastMessageTimestamp (ms),
        createdAt (ms), lastSeen (ms), channels (JSON: channel -> last id sent). Named
        by the token's SHA-256, so that listing keys or watching commands (MONITOR,
        SCAN) shows no token."""
        return f"{self.prefix}session:{hashlib.sha256(token.encode()).hexdigest()}"

    def ratelimit(self, group: str, bucket: str = "") -> str:
        """Hash of one token bucket (tokens, ts): the group's own (an address's), or one
        of its members' (a session's). The group is the hash tag: one slot for all."""
        return f"{self.prefix}ratelimit:{{{group}}}" + (f":{bucket}" if bucket else "")

    def instances(self) -> str:
        """Sorted set of live instances, scored by when they stop counting (ms): for
        operators to see who is out there."""
        return f"{self.prefix}instances"

    def instance_claim(self, instance_id: str) -> str:
        """String held by the one live instance with this id (a random token, expiring
        seconds after it stops refreshing it)."""
        return f"{self.prefix}instance:{instance_id}"

    def connections(self, address: str) -> str:
        """Hash of one client address's connections: per instance, "<count> <expiry
        ms>". The address is the hash tag."""
        return f"{self.prefix}connections:{{{address}}}"

    def control(self) -> str:
        """Pub/sub channel every instance listens to: requests for all of them (the
        backend API's disconnect)."""
        return f"{self.prefix}control"

    def probe(self) -> str:
        """A string written with a one-second expiry to check that Redis takes writes."""
        return f"{self.prefix}probe"

    def channel(self, name: str) -> str:
        """Pub/sub channel of channel `name`'s messages and presence events. The braces
        are a hash tag: with its stream and presence, one slot of a Redis Cluster."""
        return f"{self.prefix}{{{name}}}"

    def history(self, name: str) -> str:
        """Stream of channel `name`'s recent messages (history and gap recovery)."""
        return f"{self.prefix}history:{{{name}}}"

    def presence(self, name: str) -> str:
        """Sorted set of channel `name`'s present connections, scored by when each stops
        counting (ms) unless its instance refreshes it."""
        return f"{self.prefix}presence:{{{name}}}"
