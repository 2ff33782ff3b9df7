"""
``stasis rm KEY``: remove one entry.

The delete is committed through the store, whose change log tells a daemon
running on the same database: it stops serving the entry within a second.
"""

from __future__ import annotations

from twisted.python import usage

from stasis.commands._command import Command, CommandError, Console
from stasis.commands._keys import resolve_key
from stasis.commands._options import CommandOptions, check_key
from stasis.store import Store
from stasis.times import iso8601

__all__ = ["RM"]


class RmOptions(CommandOptions):
    synopsis = "[options] KEY"
    longdesc = (
        "Remove one entry, so that the next identical request is fetched again (a running "
        "daemon forgets it within a second). KEY is a whole key or its first digits (at "
        "least 6), as ls shows them."
    )
    examples = ("stasis rm 3f2a9c81d0b4",)
    key = ""

    def parseArgs(self, *keys: str) -> None:
        if len(keys) != 1:
            raise usage.UsageError("give one KEY (or the first digits of one)")
        self.key = check_key(keys[0])


async def run(store: Store, options: RmOptions, console: Console) -> None:
    key = await resolve_key(store, options.key)
    entry = await store.get(key)
    if entry is None or not await store.delete(key):
        raise CommandError(f"no entry with key {key}")
    what = " ".join(part for part in (entry.provider, entry.model) if part)
    console.out(
        f"removed {key} ({what}: {entry.method} {entry.path}, stored {iso8601(entry.created_at)})"
    )


RM = Command("rm", "Remove one entry.", RmOptions, run)
