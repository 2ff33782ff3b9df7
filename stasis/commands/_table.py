"""
A plain-text table that fits a terminal's width.

Too wide, it first narrows the columns that may be cut (a model name loses its
end, a path its beginning: the end of ``/v1/chat/completions`` says more),
then leaves out the columns that matter least, in the order given. Without a
width (output to a pipe or a file) nothing is cut.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import IO, Literal

from attrs import frozen

__all__ = ["Column", "render_table", "terminal_width"]

_GAP = "  "
_CUT = "…"


@frozen
class Column:
    header: str
    align: Literal["<", ">"] = "<"
    #: Which end of a value is cut when the column must be narrowed; None: never cut.
    cut: Literal["end", "start"] | None = None
    #: The narrowest the column is cut to.
    minimum: int = 8
    #: Columns are left out of a table that cannot fit, lowest first; None: always shown.
    drop: int | None = None


def terminal_width(stream: IO[str]) -> int | None:
    """``$COLUMNS``, else the width of the terminal ``stream`` writes to; None: not a terminal."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        if stream.isatty():
            return shutil.get_terminal_size().columns
    except (AttributeError, ValueError, OSError):
        pass
    return None


def _cut(text: str, width: int, where: Literal["end", "start"] | None) -> str:
    if len(text) <= width or where is None:
        return text
    if width <= len(_CUT):
        return text[:width]
    if where == "end":
        return text[: width - len(_CUT)] + _CUT
    return _CUT + text[len(text) - width + len(_CUT) :]


def _total(widths: Sequence[int]) -> int:
    return sum(widths) + len(_GAP) * (len(widths) - 1)


def _fit(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None
) -> tuple[list[int], list[int]]:
    """The indexes of the columns shown, and their widths."""
    shown = list(range(len(columns)))
    natural = [
        max([len(columns[i].header), *(len(row[i]) for row in rows)]) for i in range(len(columns))
    ]
    while True:
        widths = [natural[i] for i in shown]
        if width is None:
            return shown, widths
        # Narrow the widest cuttable column, one character at a time.
        while _total(widths) > width:
            cuttable = [
                n
                for n, i in enumerate(shown)
                if columns[i].cut is not None
                and widths[n] > max(columns[i].minimum, len(columns[i].header))
            ]
            if not cuttable:
                break
            widest = max(cuttable, key=lambda n: widths[n])
            widths[widest] -= 1
        droppable = [i for i in shown if columns[i].drop is not None]
        if _total(widths) <= width or not droppable:
            return shown, widths
        shown.remove(min(droppable, key=lambda i: columns[i].drop or 0))


def render_table(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None = None
) -> list[str]:
    """The header line and one line per row, fitted to ``width`` characters where it can be."""
    shown, widths = _fit(columns, rows, width)
    lines = []
    for cells in [[column.header for column in columns], *rows]:
        parts = []
        for i, w in zip(shown, widths, strict=True):
            column = columns[i]
            text = _cut(cells[i], w, column.cut)
            parts.append(text.ljust(w) if column.align == "<" else text.rjust(w))
        lines.append(_GAP.join(parts).rstrip())
    return lines
