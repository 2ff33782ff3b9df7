"""
Ignore rules: JSON paths left out of the cache key (``user``,
``metadata.user_id``, ``messages[*].id``).

Some fields change on every run and never change the answer: a per-run
``user``, a session id in ``metadata``, the ids an SDK puts on messages.
Left in, they make every call a miss. A rule names such a field by path;
the key is derived from the body without it.

The grammar is small on purpose: member names joined by ``.``, array
positions as ``[N]``, every element or member as ``[*]`` (or ``.*``), and a
name that is not a plain identifier quoted: ``["x.y"]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from attrs import frozen

__all__ = ["MAX_IGNORE_PATHS", "IgnorePath", "dropped", "parse_ignore", "parse_ignore_list"]

#: More rules than this in one request is a mistake, not a policy.
MAX_IGNORE_PATHS = 64

#: Matches every member of an object or element of an array.
EVERY = "*"

_NAME = re.compile(r"[A-Za-z0-9_$@-]+")
_INDEX = re.compile(r"\[(\d+|\*)\]")
_QUOTED = re.compile(r'\[("(?:[^"\\]|\\.)*")\]')


@frozen
class IgnorePath:
    """One rule: where it was written, and its steps (names, indexes, or :data:`EVERY`)."""

    text: str
    steps: tuple[str | int, ...]

    def __str__(self) -> str:
        return self.text


def parse_ignore(text: str) -> IgnorePath:
    """An ignore rule from its text; ``ValueError`` saying what is wrong."""
    source = text.strip()
    steps: list[str | int] = []
    at = 0
    while at < len(source):
        if source[at] == "[":
            index = _INDEX.match(source, at)
            if index:
                step = index.group(1)
                steps.append(EVERY if step == EVERY else int(step))
                at = index.end()
                continue
            quoted = _QUOTED.match(source, at)
            if quoted:
                steps.append(json.loads(quoted.group(1)))
                at = quoted.end()
                continue
            raise ValueError(f'{text!r}: expected [N], [*] or ["name"] at position {at}')
        if steps or at:
            if source[at] != ".":
                raise ValueError(f"{text!r}: expected '.' or '[' at position {at}")
            at += 1
        if source[at : at + 1] == EVERY:
            steps.append(EVERY)
            at += 1
            continue
        name = _NAME.match(source, at)
        if name is None:
            raise ValueError(f"{text!r}: expected a member name at position {at}")
        steps.append(name.group())
        at = name.end()
    if not steps:
        raise ValueError("an ignore rule must name a field, e.g. metadata.user_id")
    return IgnorePath(source, tuple(steps))


def parse_ignore_list(value: str) -> tuple[IgnorePath, ...]:
    """Rules separated by commas (``X-Stasis-Ignore: user, metadata.session_id``)."""
    rules = tuple(parse_ignore(part) for part in value.split(",") if part.strip())
    if len(rules) > MAX_IGNORE_PATHS:
        raise ValueError(f"at most {MAX_IGNORE_PATHS} ignore rules")
    return rules


def _drop(value: Any, steps: tuple[str | int, ...]) -> Any:
    """``value`` without what ``steps`` lead to; the input is left untouched."""
    step, rest = steps[0], steps[1:]
    if isinstance(value, dict):
        names = list(value) if step == EVERY else [step] if isinstance(step, str) else []
        if not any(name in value for name in names):
            return value
        copy = dict(value)
        for name in names:
            if name in copy:
                if rest:
                    copy[name] = _drop(copy[name], rest)
                else:
                    del copy[name]
        return copy
    if isinstance(value, list):
        if step == EVERY:
            indexes = range(len(value))
        elif isinstance(step, int) and step < len(value):
            indexes = range(step, step + 1)
        else:
            return value
        if not rest:
            # An element dropped would renumber the rest: it becomes null instead.
            return [None if i in indexes else item for i, item in enumerate(value)]
        return [_drop(item, rest) if i in indexes else item for i, item in enumerate(value)]
    return value


def dropped(document: Any, rules: Iterable[IgnorePath]) -> Any:
    """``document`` (parsed JSON) without the fields ``rules`` name; a new value, or the same."""
    for rule in rules:
        document = _drop(document, rule.steps)
    return document
