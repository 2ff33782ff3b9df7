"""
Counters of what the proxy did since it started; ``/stats`` reports them.
"""

from __future__ import annotations

from attrs import define

__all__ = ["Counters"]


@define
class Counters:
    hits: int = 0
    misses: int = 0
    bypasses: int = 0

    @property
    def hit_rate(self) -> float:
        """Hits among the requests that consulted the cache; 0.0 before the first."""
        looked_up = self.hits + self.misses
        return round(self.hits / looked_up, 4) if looked_up else 0.0
