"""A one-line progress display on stderr (bytes read, rate) for replays; silent when not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressLine:
    """Rewrites one stderr line at most every ``interval`` seconds; does nothing unless stderr is a tty."""

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None, interval: float = 0.5) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label = label
        self.total = total
        self.interval = interval
        self.started = time.monotonic()
        self._next = self.started + interval

    def update(self, done: int, *, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._next and not final:
            return
        self._next = now + self.interval
        elapsed = max(now - self.started, 1e-6)
        mb = done / 1e6
        rate = mb / elapsed
        pct = f" {100.0 * done / self.total:5.1f}%" if self.total > 0 else ""
        self.stream.write(f"\r{self.label}: {mb:,.1f} MB{pct} {rate:,.1f} MB/s ")
        if final:
            self.stream.write("\n")
        self.stream.flush()

    def close(self, done: int) -> None:
        """The final figures, on their own line."""
        if self.enabled:
            self.update(done, final=True)
