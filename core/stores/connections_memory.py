"""Per-IP connection counts in this process's memory."""

from __future__ import annotations

from core.stores.connections import ConnectionCounter


class MemoryConnectionCounter(ConnectionCounter):
    """Counts per IP; an IP with no connections left is removed, so nothing accumulates."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def take(self, ip: str, limit: int) -> bool:
        held = self.counts.get(ip, 0)
        if held >= limit:
            return False
        self.counts[ip] = held + 1
        return True

    async def acquire(self, ip: str, limit: int) -> bool:
        return self.take(ip, limit)

    def release(self, ip: str) -> None:
        held = self.counts.get(ip, 0)
        if held <= 1:
            self.counts.pop(ip, None)
        else:
            self.counts[ip] = held - 1

    def local_count(self, ip: str) -> int:
        return self.counts.get(ip, 0)
