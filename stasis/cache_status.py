"""
The response headers that tell a client what the cache did.

``X-Stasis-Status`` is the original tool's header; ``Cache-Status`` (RFC 9211)
says the same in the standard vocabulary that HTTP tooling understands.
"""

from __future__ import annotations

import enum
import functools
from typing import Any

from attrs import frozen

__all__ = [
    "HIT",
    "PASSED",
    "CacheOutcome",
    "Status",
    "note_outcome",
    "note_status",
    "noted_outcome",
    "noted_status",
]

CACHE_NAME = b"stasis"


class Status(enum.Enum):
    HIT = b"HIT"
    MISS = b"MISS"
    BYPASS = b"BYPASS"
    STALE = b"STALE"


@frozen
class CacheOutcome:
    """What happened to one request, and how to say so in its headers."""

    status: Status
    #: RFC 9211 ``fwd`` reason, when the request went upstream.
    forward: bytes | None = None
    stored: bool = False
    detail: bytes | None = None
    forward_status: int | None = None
    #: Answered by waiting for an identical request's fetch (RFC 9211 ``collapsed``).
    collapsed: bool = False

    @functools.cache  # noqa: B019 - a handful of distinct frozen values, kept for the process
    def cache_status(self) -> bytes:
        parts = [CACHE_NAME]
        # A collapsed request was answered by another's forward, not from the
        # cache (RFC 9211 §2.5): ``fwd`` and ``collapsed`` say so, never ``hit``.
        if self.status is Status.HIT and not self.collapsed:
            parts.append(b"hit")
        if self.forward is not None:
            parts.append(b"fwd=" + self.forward)
        if self.forward_status is not None:
            parts.append(b"fwd-status=%d" % self.forward_status)
        if self.stored:
            parts.append(b"stored")
        if self.collapsed:
            parts.append(b"collapsed")
        if self.detail is not None:
            parts.append(b"detail=" + self.detail)
        return b"; ".join(parts)

    @functools.cache  # noqa: B019 - as above
    def summary(self) -> str | None:
        """The one word that says most about it, for a list of recent requests."""
        if self.stored:
            return "stored"
        if self.detail is not None:
            return self.detail.decode("ascii", "replace")
        if self.collapsed:
            return "collapsed"
        return None


HIT = CacheOutcome(Status.HIT)
#: Passed through without the cache's involvement (before the request was judged).
PASSED = CacheOutcome(Status.BYPASS)


#: Where a request carries its status for the access log, beside its headers
#: (a prepared hit writes its headers without putting them on the request).
_STATUS_ATTRIBUTE = "stasis_status"
#: The whole outcome, where the proxy knows more than the status.
_OUTCOME_ATTRIBUTE = "stasis_outcome"


def note_status(request: Any, status: Status) -> None:
    setattr(request, _STATUS_ATTRIBUTE, status)


def note_outcome(request: Any, outcome: CacheOutcome) -> None:
    setattr(request, _STATUS_ATTRIBUTE, outcome.status)
    setattr(request, _OUTCOME_ATTRIBUTE, outcome)


def noted_status(request: Any) -> Status | None:
    """The status noted on ``request``, or None before the proxy decided one."""
    status: Status | None = getattr(request, _STATUS_ATTRIBUTE, None)
    return status


def noted_outcome(request: Any) -> CacheOutcome | None:
    """The outcome noted on ``request`` (None for a prepared hit, which is a plain HIT)."""
    outcome: CacheOutcome | None = getattr(request, _OUTCOME_ATTRIBUTE, None)
    return outcome
