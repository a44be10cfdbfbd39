"""What the per-IP connection counts look like in Redis, read as an operator would."""

from __future__ import annotations


def address_counts(client, prefix: str, address: str) -> dict[str, int]:
    """Each live instance's count for one client address: the fields of
    `{prefix}connections:{<address>}`, "<count> <expiry ms>" each."""
    fields = client.hgetall(f"{prefix}connections:{{{address}}}")
    return {k.decode(): int(v.split()[0]) for k, v in fields.items()}
