"""
A key as a person gives it: the whole 64 hex digits, or enough of the start
to name one entry (as ``ls`` shows them, 12 digits; at least 6).
"""

from __future__ import annotations

from stasis.commands._command import CommandError
from stasis.store import Store

__all__ = ["resolve_key"]

#: Candidates named when a prefix is ambiguous.
_SHOWN = 3


async def resolve_key(store: Store, key: str) -> str:
    """The one stored key starting with ``key`` (checked hex), or a CommandError."""
    found = await store.match_keys(key, limit=_SHOWN + 1)
    if not found:
        if len(key) == 64:
            raise CommandError(f"no entry with key {key}")
        raise CommandError(f"no entry has a key starting with {key}")
    if len(found) > 1:
        listed = ", ".join(candidate[:16] + "…" for candidate in found[:_SHOWN])
        more = " and more" if len(found) > _SHOWN else ""
        raise CommandError(
            f"{key} is the start of several keys ({listed}{more}): give more of the key"
        )
    return found[0]
