"""
``stasis purge``: remove every entry a filter picks (every entry without one).

It cannot be undone, so it asks first: on a terminal it says how many entries
match and waits for a yes; anywhere else (a script, CI) it needs ``--yes``,
and without it refuses before opening anything.
"""

from __future__ import annotations

import sys

from twisted.python import usage

from stasis.commands._command import Command, CommandError, Console
from stasis.commands._human import count_of
from stasis.commands._options import FilterOptions
from stasis.model import EntryFilter
from stasis.store import Store

__all__ = ["PURGE", "count_entries"]

#: Entries counted per query while counting what a purge would remove.
_COUNT_PAGE = 1000


class PurgeOptions(FilterOptions):
    synopsis = "[options]"
    longdesc = (
        "Remove the entries the filters pick; with no filter, every entry. On a terminal it "
        "says how many entries match and asks before removing them; elsewhere --yes is "
        "needed. A running daemon forgets removed entries within a second."
    )
    optFlags = [["yes", "y", "Remove without asking (needed when stdin is not a terminal)."]]
    examples = (
        "stasis purge --provider openai --model gpt-4o-mini",
        "stasis purge --namespace ci --until 30d --yes",
        "stasis purge --search 'test fixture' --yes",
        "stasis purge --yes   # everything",
    )

    def postOptions(self) -> None:
        super().postOptions()
        if not self["yes"] and not sys.stdin.isatty():
            raise usage.UsageError("stdin is not a terminal to ask on: give --yes to purge")


async def count_entries(store: Store, where: EntryFilter) -> int:
    """How many entries ``where`` picks, counted page by page (the store has no count)."""
    if where == EntryFilter():
        return (await store.stats()).entries
    count, cursor = 0, None
    while True:
        page = await store.list_entries(where, _COUNT_PAGE, cursor)
        count += len(page.entries)
        if page.cursor is None:
            return count
        cursor = page.cursor


async def run(store: Store, options: PurgeOptions, console: Console) -> None:
    where = options.where
    if not options["yes"]:
        matching = await count_entries(store, where)
        described = options.describe_filter()
        if not matching:
            console.err("no entries match" if described else "the cache is empty")
            return
        scope = f"matching {described}" if described else "(every entry in the cache)"
        answer = await console.ask(
            f"remove {count_of(matching, 'entry', 'entries')} {scope}? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            raise CommandError("nothing removed")
    removed = await store.purge(where)
    console.out(f"removed {count_of(removed, 'entry', 'entries')}")


PURGE = Command("purge", "Remove the entries a filter picks (asks first).", PurgeOptions, run)
