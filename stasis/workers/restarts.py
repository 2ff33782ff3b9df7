"""
When a worker that died is started again: at once, unless it keeps dying.

A worker killed by accident (the OOM killer, an operator's ``kill -9``) after
serving a while is replaced at once: its slot serves nobody meanwhile. One
that dies soon after it started most likely will again (a database it cannot
open, a disk that is full), so each quick death doubles the wait before the
next try, from :data:`FIRST_DELAY` to :data:`LONGEST_DELAY`, rather than
spinning a core on start-ups and filling the log; staying up for
:data:`STABLE_SECONDS` forgives the past.
"""

from __future__ import annotations

from attrs import define

__all__ = ["FIRST_DELAY", "LONGEST_DELAY", "STABLE_SECONDS", "Backoff"]

#: The wait after a first quick death.
FIRST_DELAY = 1.0
#: The longest wait between two tries.
LONGEST_DELAY = 30.0
#: A worker up this long died "after serving a while", not "at start-up".
STABLE_SECONDS = 10.0


@define
class Backoff:
    """One worker slot's restart policy (see the module)."""

    #: The wait after the next quick death.
    _next: float = FIRST_DELAY

    def delay(self, uptime: float) -> float:
        """Seconds to wait before starting again a worker that died after ``uptime`` seconds."""
        if uptime >= STABLE_SECONDS:
            self._next = FIRST_DELAY
            return 0.0
        delay, self._next = self._next, min(self._next * 2, LONGEST_DELAY)
        return delay
