"""
``stasis ls``: the entries, newest first, as a table or as JSON.

Pages are read by the store's cursor, one after the other, so ``--all`` on a
large cache streams its JSON instead of holding every entry, and an entry
stored meanwhile neither repeats a row nor hides one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from attrs import evolve

from stasis.commands._command import Command, Console
from stasis.commands._human import size
from stasis.commands._options import FilterOptions, positive_number
from stasis.commands._table import Column, render_table, terminal_width
from stasis.entry_json import info_json
from stasis.model import EntryFilter, EntryInfo
from stasis.store import Store
from stasis.times import short_time

__all__ = ["DEFAULT_LIMIT", "LS", "entries"]

DEFAULT_LIMIT = 50
#: Entries read per query.
PAGE_SIZE = 500
#: How much of a key the table shows: enough to be unique in any real cache, and
#: what ``show`` and ``rm`` take.
SHORT_KEY = 12

COLUMNS: tuple[Column, ...] = (
    Column("KEY"),
    Column("SAMPLE", align=">"),
    Column("STORED (UTC)"),
    Column("PROVIDER", drop=3),
    Column("MODEL", cut="end", minimum=10),
    Column("PATH", cut="start", minimum=12),
    Column("NAMESPACE", cut="end", minimum=9, drop=1),
    Column("STATUS", align=">"),
    Column("TOKENS", align=">", drop=4),
    Column("HITS", align=">", drop=2),
    Column("SIZE", align=">", drop=0),
)
_SAMPLE = 1
_NAMESPACE = 6


class LsOptions(FilterOptions):
    synopsis = "[options]"
    longdesc = (
        "List the cached entries, newest first: a table (keys cut to 12 digits, which show "
        "and rm accept), or JSON with every field. Filters combine."
    )
    optFlags = [
        ["all", "a", "List every matching entry, not only the newest --limit."],
        ["json", None, "Print one JSON array (full keys, ISO-8601 times, camelCase names)."],
    ]
    optParameters = [
        [
            "limit",
            "n",
            DEFAULT_LIMIT,
            "List at most this many entries.",
            positive_number("--limit"),
        ]
    ]
    examples = (
        "stasis ls",
        "stasis ls --provider anthropic --since 2h",
        "stasis ls --namespace ci --all --json > entries.json",
    )

    @property
    def limit(self) -> int | None:
        return None if self["all"] else int(self["limit"])


async def entries(
    store: Store, where: EntryFilter, limit: int | None
) -> AsyncIterator[list[EntryInfo]]:
    """Pages of the entries ``where`` picks, newest first, ``limit`` of them at most."""
    cursor: str | None = None
    listed = 0
    while limit is None or listed < limit:
        wanted = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - listed)
        page = await store.list_entries(where, wanted, cursor)
        listed += len(page.entries)
        if page.entries:
            yield list(page.entries)
        if page.cursor is None:
            return
        cursor = page.cursor
    # There is more than the limit: one empty page says so.
    yield []


def _row(info: EntryInfo) -> list[str]:
    sample = info.sample
    return [
        info.key[:SHORT_KEY],
        str(sample) if sample else "",
        short_time(info.created_at),
        info.provider or "-",
        info.model or "-",
        info.path,
        info.namespace or "-",
        str(info.status),
        f"{info.usage.total:,}",
        f"{info.hit_count:,}",
        size(info.size).replace(" ", ""),
    ]


def _fitted_columns(rows: list[list[str]]) -> tuple[tuple[Column, ...], list[list[str]]]:
    """The columns for these rows: SAMPLE only when one is a sample, NAMESPACE dropped first."""
    columns = COLUMNS
    if all(row[_NAMESPACE] == "-" for row in rows):
        # Every entry in the default namespace: the first column to leave out.
        columns = (
            *COLUMNS[:_NAMESPACE],
            evolve(COLUMNS[_NAMESPACE], drop=-1),
            *COLUMNS[_NAMESPACE + 1 :],
        )
    if not any(row[_SAMPLE] for row in rows):
        # No samples (most caches): the table reads as it did before there were any.
        columns = (*columns[:_SAMPLE], *columns[_SAMPLE + 1 :])
        rows = [[*row[:_SAMPLE], *row[_SAMPLE + 1 :]] for row in rows]
    return columns, rows


async def run(store: Store, options: LsOptions, console: Console) -> None:
    rows: list[list[str]] = []
    first = True
    more = False
    if options["json"]:
        console.stdout.write("[")
    async for page in entries(store, options.where, options.limit):
        more = not page
        if options["json"]:
            for info in page:
                console.stdout.write(("\n" if first else ",\n") + json.dumps(info_json(info)))
                first = False
        else:
            rows.extend(_row(info) for info in page)
    if options["json"]:
        console.out("\n]" if not first else "]")
    elif rows:
        columns, rows = _fitted_columns(rows)
        for line in render_table(columns, rows, terminal_width(console.stdout)):
            console.out(line)
    else:
        console.err("no entries" + (" match" if options.describe_filter() else ""))
    if more:
        console.err(f"(the newest {options.limit:,} shown: --limit N or --all for more)")


LS = Command("ls", "List the cached entries, newest first.", LsOptions, run)
