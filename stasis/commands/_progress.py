"""
A progress bar on a terminal, redrawn in place with ``\\r``.

Only for a person watching: the commands make one only when stderr is a
terminal, so a log or a pipe gets the final line and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO

from attrs import define, field

__all__ = ["ProgressBar"]


@define
class ProgressBar:
    """Call it with ``(done, total)`` as work goes; :meth:`clear` it before the last word."""

    out: IO[str]
    label: str
    clock: Callable[[], float] = time.monotonic
    width: int = 30
    #: Redraw at most this often (a cassette of 100,000 entries reports each one).
    interval: float = 0.1
    _drawn_at: float | None = field(default=None, init=False)
    _length: int = field(default=0, init=False)

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        finished = total > 0 and done >= total
        if not finished and self._drawn_at is not None and now - self._drawn_at < self.interval:
            return
        self._drawn_at = now
        fraction = min(done / total, 1.0) if total > 0 else 0.0
        filled = round(fraction * self.width)
        line = (
            f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"{done:,}/{total:,} {fraction:4.0%}"
        )
        self.out.write("\r" + line.ljust(self._length))
        self.out.flush()
        self._length = len(line)

    def clear(self) -> None:
        """Wipe the bar, so that what comes next starts on a clean line."""
        if self._length:
            self.out.write("\r" + " " * self._length + "\r")
            self.out.flush()
            self._length = 0
