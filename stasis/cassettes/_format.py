"""
What every cassette document shares: its format version and the one error type.

Cassettes are edited by hand and merged by git, so a bad one must be named
precisely, in one line a terminal and a CI log both show whole.
"""

from __future__ import annotations

__all__ = ["FORMAT_VERSION", "CassetteError"]

#: The ``"stasis"`` field of every document this version writes.
FORMAT_VERSION = 1

#: The versions this stasis reads.
READABLE_VERSIONS = (FORMAT_VERSION,)


class CassetteError(Exception):
    """
    A cassette cannot be read or written: ``PATH:LINE: what is wrong``.

    ``where`` is ``PATH:LINE``, or only ``PATH`` when no line applies;
    ``problem`` says what is wrong. The message is always one line.
    """

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = " ".join(problem.split())
        super().__init__(f"{where}: {self.problem}")
