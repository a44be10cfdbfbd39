"""Refusals, logged as a summary rather than one line per refused connection.

A client hammering the server would otherwise write a log line per attempt. The first
refusal of a reason is logged at once; later ones within `every` seconds are counted and
logged as one line per reason, with the addresses refused most.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter


class RefusalLog:
    """Counts refusals by reason and address; logs a summary every `every` seconds."""

    def __init__(self, log: logging.Logger, every: float = 10.0) -> None:
        self.log = log
        self.every = every
        self._pending: dict[str, Counter[str]] = {}
        self._quiet: set[str] = set()  # reasons logged recently
        self._flush: asyncio.TimerHandle | None = None

    def note(self, reason: str, ip: str) -> None:
        if reason not in self._quiet:
            self._quiet.add(reason)
            self.log.info(
                "refused a connection from %s: %s (more are summarised every %gs)",
                ip,
                reason,
                self.every,
            )
        else:
            self._pending.setdefault(reason, Counter())[ip] += 1
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.every, self.flush)

    def flush(self) -> None:
        self._flush = None
        pending, self._pending = self._pending, {}
        self._quiet.clear()
        for reason, by_ip in pending.items():
            top = ", ".join(f"{ip} ({n})" for ip, n in by_ip.most_common(3))
            self.log.info(
                "refused %d more connections in %gs: %s, most from %s",
                sum(by_ip.values()),
                self.every,
                reason,
                top,
            )
        if pending:
            # Keep summarising while refusals go on.
            self._quiet.update(pending)
            self._flush = asyncio.get_running_loop().call_later(self.every, self.flush)

    def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
