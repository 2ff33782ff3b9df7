"""
Several answers per key (``X-Stasis-Samples: N``, ``--samples N``).

A call at temperature 1.0 has many right answers; a test that should see
some variety, and still be free and reproducible, keeps up to N of them. The
first answer is stored under the key itself, answer ``i`` under a key of its
own derived from it, so each sample is an ordinary entry (listed, exported,
evicted like any other) and a cache that never uses samples is unchanged.

Which sample a call gets is a rotation: the daemon counts the calls for each
key since it started, and call ``c`` gets sample ``c mod N``. The first N
calls find nothing and go upstream; after that the stored answers come back
in turn, in the same order in every run (a restarted daemon starts counting
again), which is what makes a test run repeatable.
"""

from __future__ import annotations

import hashlib

from attrs import define, field

__all__ = ["Rotation", "sample_key"]

_SAMPLE = b"stasis-sample\0"


def sample_key(key: str, sample: int) -> str:
    """The key sample ``sample`` of ``key`` is stored under (``key`` itself for 0)."""
    if sample == 0:
        return key
    return hashlib.sha256(_SAMPLE + bytes.fromhex(key) + sample.to_bytes(4, "big")).hexdigest()


@define
class Rotation:
    """Calls per key since start; bounded, forgetting the least recently turned keys."""

    limit: int = 100_000
    _turns: dict[str, int] = field(factory=dict, init=False)

    def next(self, key: str) -> int:
        """How many calls for ``key`` came before this one."""
        turn = self._turns.pop(key, 0)
        self._turns[key] = turn + 1  # re-inserted: the dict's order is recency
        if len(self._turns) > self.limit:
            del self._turns[next(iter(self._turns))]
        return turn
