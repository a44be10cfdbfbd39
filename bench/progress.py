"""The live progress line: where the run is, and a figure while it measures.

On a terminal one line is rewritten in place; otherwise (CI logs, pipes) only the
finished-run lines are printed, one per scenario/server/repeat.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.where = ""
        self.started = time.monotonic()
        self._last = 0.0
        self._shown = False

    def elapsed(self) -> str:
        s = int(time.monotonic() - self.started)
        return f"{s // 60:d}:{s % 60:02d}"

    def at(self, where: str) -> None:
        """Name the current step (scenario, server, repeat)."""
        self.where = where
        self.status("starting", force=True)

    def status(self, text: str, force: bool = False) -> None:
        """Replace the live line (at most 10 times a second)."""
        if not self.tty:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        line = f"[{self.elapsed()}] {self.where} · {text}"
        self.stream.write("\r\033[K" + line[:160])
        self.stream.flush()
        self._shown = True

    def line(self, text: str) -> None:
        """A permanent line (a finished run, a heading)."""
        if self._shown:
            self.stream.write("\r\033[K")
            self._shown = False
        self.stream.write(f"[{self.elapsed()}] {text}\n")
        self.stream.flush()
