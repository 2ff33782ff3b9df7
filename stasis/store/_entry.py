"""
What the cache holds: one recorded upstream answer and the facts kept beside it.
"""

from __future__ import annotations

from attrs import frozen

__all__ = ["Entry", "StoreStats", "TokenUsage"]


@frozen
class TokenUsage:
    """Tokens the upstream billed for the recorded call; every hit saves ``total`` again."""

    input: int = 0
    output: int = 0
    total: int = 0

    @classmethod
    def of(cls, input: int, output: int, total: int = 0) -> TokenUsage:
        """Usage from its parts; ``total`` is input + output unless the API reported one."""
        return cls(input=input, output=output, total=total or input + output)


@frozen
class Entry:
    """
    One cached response, ready to be written back to a client.

    ``headers`` are the upstream's end-to-end headers as raw pairs, already
    stripped of hop-by-hop, framing and per-connection fields, so a hit writes
    them unchanged. ``body`` is the decoded body, byte for byte as the upstream
    meant it.
    """

    key: str
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    created_at: float
    method: str = "POST"
    path: str = ""
    provider: str = ""
    model: str | None = None
    namespace: str = ""
    usage: TokenUsage = TokenUsage()
    expires_at: float | None = None
    last_hit_at: float | None = None
    hit_count: int = 0
    #: For a streamed answer, per event: (byte offset where it ends, ms after the start).
    timeline: tuple[tuple[int, int], ...] | None = None

    def is_fresh(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@frozen
class StoreStats:
    """The figures ``/health`` and ``/stats`` report; times are POSIX seconds."""

    entries: int
    tokens_saved: int
    db_size_bytes: int
    oldest: float | None
    newest: float | None
