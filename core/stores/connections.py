"""Connection counting per client IP, for the throttle."""

from __future__ import annotations

import abc


class ConnectionCounter(abc.ABC):
    """How many connections each IP holds (on this instance, or on all of them)."""

    @abc.abstractmethod
    async def acquire(self, ip: str, limit: int) -> bool:
        """Take a slot for `ip` if it holds fewer than `limit`; atomically."""

    @abc.abstractmethod
    def release(self, ip: str) -> None:
        """Give back a slot taken by `acquire`."""

    @abc.abstractmethod
    def local_count(self, ip: str) -> int:
        """Slots `ip` holds on this instance."""
