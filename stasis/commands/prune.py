"""
``stasis prune``: remove the entries whose TTL has run out.

A daemon never answers with an expired entry as a hit; it stays in the
database until it is replaced or pruned, so pruning gives the space back.
"""

from __future__ import annotations

from stasis.commands._command import Command, Console
from stasis.commands._human import count_of
from stasis.commands._options import CommandOptions
from stasis.store import Store

__all__ = ["PRUNE"]


class PruneOptions(CommandOptions):
    synopsis = "[options]"
    longdesc = "Remove the entries whose time to live (--ttl, X-Stasis-TTL) has run out."
    examples = ("stasis prune", "stasis prune -d ~/.stasis/cache.db")


async def run(store: Store, options: PruneOptions, console: Console) -> None:
    removed = await store.prune(console.now())
    console.out(f"removed {count_of(removed, 'expired entry', 'expired entries')}")


PRUNE = Command("prune", "Remove the entries whose TTL has run out.", PruneOptions, run)
