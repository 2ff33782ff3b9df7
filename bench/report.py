"""
What a section hands back, and how the run is printed and saved.

A section returns a :class:`Section`: a small table for people, a ``data``
dict for ``results.json``, and the :class:`Target` checks it can decide. The
printing is kept apart from the measuring so that every section reads alike.
"""

from __future__ import annotations

import math
from typing import Any

from attrs import Factory, define, frozen

__all__ = ["Section", "Target", "format_run", "ms", "ratio"]


@frozen
class Target:
    """
    A performance target: ``value`` (a ratio, ms or MiB) against ``limit``.

    ``value`` None means it could not be measured in this run (say why in ``note``).
    """

    name: str
    value: float | None
    limit: float
    unit: str
    at_most: bool = True
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None or math.isnan(self.value):
            return None
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": None if self.met is None else self.value,
            "limit": self.limit,
            "unit": self.unit,
            "comparison": "<=" if self.at_most else ">=",
            "met": self.met,
            "note": self.note,
        }


@define
class Section:
    key: str
    title: str
    header: list[str] = Factory(list)
    rows: list[list[str]] = Factory(list)
    notes: list[str] = Factory(list)
    data: dict[str, Any] = Factory(dict)
    targets: list[Target] = Factory(list)


def ms(microseconds: float) -> str:
    return f"{microseconds / 1000:.3f}"


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first, *rest = cells
        return "  " + "  ".join(
            [first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
        )

    return [line(header), *(line(row) for row in rows)]


def _target_line(target: Target) -> list[str]:
    value = "n/a" if target.met is None else f"{target.value:.3g} {target.unit}"
    verdict = {True: "met", False: "NOT MET", None: "n/a"}[target.met]
    sign = "<=" if target.at_most else ">="
    return [target.name, value, f"{sign} {target.limit:.3g} {target.unit}", verdict, target.note]


def format_run(banner: str, sections: list[Section]) -> str:
    lines = [banner, ""]
    for section in sections:
        lines.append(f"({section.key}) {section.title}")
        if section.header:
            lines += _table(section.header, section.rows)
        lines += [f"  {note}" for note in section.notes]
        lines.append("")
    targets = [t for s in sections for t in s.targets]
    if targets:
        lines.append("targets")
        lines += _table(
            ["target", "measured", "limit", "verdict", "note"],
            [_target_line(t) for t in targets],
        )
    return "\n".join(line.rstrip() for line in lines)
