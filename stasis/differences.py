"""
Where two JSON documents differ, as JSON paths a person can act on.

A replay miss in CI is a test whose request changed since it was recorded;
"no cached answer" alone leaves its author to guess what changed. Naming the
paths (``temperature: 0.2 → 0.3``, ``messages[2].content``) points at the
line of the test to look at. Values compare as the cache key compares them
(``1`` and ``1.0`` are the same number, object members in any order), so a
difference shown is one that changed the key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from attrs import frozen

__all__ = ["ABSENT", "Difference", "differences", "json_path"]

#: Shown for a member one side does not have.
ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "(absent)"})()

#: A member name that can follow a dot in a path as it is.
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")

#: Values longer than this are cut when shown.
SHOWN_CHARACTERS = 60


@frozen
class Difference:
    """One place where the recorded request and the one asked for differ."""

    path: str
    recorded: Any
    requested: Any

    def describe(self) -> str:
        """``path: recorded → requested``, the values as short JSON."""
        return f"{self.path or '(the body)'}: {_shown(self.recorded)} → {_shown(self.requested)}"


def json_path(parts: tuple[str | int, ...]) -> str:
    """``("messages", 2, "content")`` as ``messages[2].content``."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _PLAIN_NAME.match(part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{json.dumps(part, ensure_ascii=False)}]")
    return "".join(out)


def differences(recorded: Any, requested: Any, limit: int = 10) -> list[Difference]:
    """
    The first ``limit`` places where ``requested`` differs from ``recorded``,
    in document order; empty when they mean the same.
    """
    found: list[Difference] = []
    for difference in _walk(recorded, requested, ()):
        found.append(difference)
        if len(found) >= limit:
            break
    return found


def _walk(recorded: Any, requested: Any, at: tuple[str | int, ...]) -> Iterator[Difference]:
    if isinstance(recorded, dict) and isinstance(requested, dict):
        for name in sorted(recorded.keys() | requested.keys()):
            yield from _walk(recorded.get(name, ABSENT), requested.get(name, ABSENT), (*at, name))
    elif isinstance(recorded, list) and isinstance(requested, list):
        for index in range(max(len(recorded), len(requested))):
            yield from _walk(
                recorded[index] if index < len(recorded) else ABSENT,
                requested[index] if index < len(requested) else ABSENT,
                (*at, index),
            )
    elif not _same(recorded, requested):
        yield Difference(json_path(at), recorded, requested)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    numbers = (int, float, Decimal)
    if isinstance(a, numbers) and isinstance(b, numbers):
        try:
            return Decimal(str(a)) == Decimal(str(b))
        except ArithmeticError:
            return False
    return type(a) is type(b) and a == b


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value) if value != value.to_integral_value() else int(value)
    return str(value)


def _shown(value: Any) -> str:
    if value is ABSENT:
        return "(absent)"
    text = json.dumps(value, ensure_ascii=False, default=_default, separators=(", ", ": "))
    if len(text) > SHOWN_CHARACTERS:
        text = text[: SHOWN_CHARACTERS - 1] + "…"
    return text
