"""
Ignore rules: JSON paths left out of the cache key (``user``,
``metadata.user_id``, ``messages[*].id``).

Some fields change on every run and never change the answer: a per-run
``user``, a session id in ``metadata``, the ids an SDK puts on messages.
Left in, they make every call a miss. A rule names such a field by path;
the key is derived from the body without it.

The grammar is small on purpose: member names joined by ``.``, array
positions as ``[N]``, every element or member as ``[*]`` (or ``.*``), and a
name that is not a plain identifier quoted: ``["x.y"]`` (a member named
``*`` is ``["*"]``). The paths a replay miss names (``messages[2].content``)
are rules of this grammar, so one can be pasted into ``--ignore``.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable
from typing import Any, Final

from attrs import frozen

__all__ = [
    "EVERY",
    "MAX_IGNORE_PATHS",
    "IgnorePath",
    "Step",
    "combined",
    "dropped",
    "parse_ignore",
    "parse_ignore_list",
    "usable",
]

#: More rules than this in one request is a mistake, not a policy.
MAX_IGNORE_PATHS = 64


class _Every(enum.Enum):
    EVERY = "*"

    def __repr__(self) -> str:
        return "EVERY"


#: The step that matches every member of an object or element of an array: a
#: value of its own, so that a member literally named ``*`` (``["*"]``) is not it.
EVERY: Final = _Every.EVERY

#: One step of a path: a member name, an array position, or :data:`EVERY`.
Step = str | int | _Every

_NAME = re.compile(r"[A-Za-z0-9_$@-]+")
_INDEX = re.compile(r"\[(\d+|\*)\]")
_QUOTED = re.compile(r'\[("(?:[^"\\]|\\.)*")\]')


@frozen
class IgnorePath:
    """One rule: where it was written, and its steps (names, indexes, or :data:`EVERY`)."""

    text: str
    steps: tuple[Step, ...]

    def __str__(self) -> str:
        return self.text


def _quoted_name(text: str, quoted: str, at: int) -> str:
    try:
        name: str = json.loads(quoted)
    except ValueError:
        raise ValueError(f"{text!r}: {quoted} at position {at} is not a JSON string") from None
    return name


def parse_ignore(text: str) -> IgnorePath:
    """An ignore rule from its text; ``ValueError`` saying what is wrong."""
    source = text.strip()
    steps: list[Step] = []
    at = 0
    while at < len(source):
        if source[at] == "[":
            index = _INDEX.match(source, at)
            if index:
                step = index.group(1)
                steps.append(EVERY if step == "*" else int(step))
                at = index.end()
                continue
            quoted = _QUOTED.match(source, at)
            if quoted:
                steps.append(_quoted_name(text, quoted.group(1), at))
                at = quoted.end()
                continue
            raise ValueError(f'{text!r}: expected [N], [*] or ["name"] at position {at}')
        if steps or at:
            if source[at] != ".":
                raise ValueError(f"{text!r}: expected '.' or '[' at position {at}")
            at += 1
        if source[at : at + 1] == "*":
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


def usable(rule: IgnorePath) -> IgnorePath:
    """
    ``rule``, unless it would leave out the whole body (``*``, ``[*]``): every
    request to a path would then share one answer, which is never what was
    meant. ``ValueError`` for those.
    """
    if rule.steps == (EVERY,):
        raise ValueError(f"{rule.text!r} would leave nothing of the body in the key")
    return rule


def _split(value: str) -> list[str]:
    """``value`` cut at its commas, except those inside a quoted name (``["a,b"]``)."""
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for at, character in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            escaped = character == "\\"
            quoted = character != '"'
        elif character == '"':
            quoted = True
        elif character == ",":
            parts.append(value[start:at])
            start = at + 1
    parts.append(value[start:])
    return parts


def parse_ignore_list(value: str) -> tuple[IgnorePath, ...]:
    """Rules separated by commas (``X-Stasis-Ignore: user, metadata.session_id``)."""
    rules = tuple(usable(parse_ignore(part)) for part in _split(value) if part.strip())
    if len(rules) > MAX_IGNORE_PATHS:
        raise ValueError(f"at most {MAX_IGNORE_PATHS} ignore rules")
    return rules


def combined(*groups: Iterable[IgnorePath]) -> tuple[IgnorePath, ...]:
    """
    The rules of ``groups`` in order, each text once: the daemon's ``--ignore``
    first, then a request's own, so an entry lists its rules in a stable order.
    """
    found: dict[str, IgnorePath] = {}
    for group in groups:
        for rule in group:
            found.setdefault(rule.text, rule)
    return tuple(found.values())


def _drop(value: Any, steps: tuple[Step, ...]) -> Any:
    """
    ``value`` without what ``steps`` lead to. The input is left untouched,
    and comes back itself when ``steps`` lead to nothing in it.
    """
    step, rest = steps[0], steps[1:]
    if isinstance(value, dict):
        if step is EVERY:
            names = list(value)
        elif isinstance(step, str) and step in value:
            names = [step]
        else:
            return value
        if not names:
            return value
        if not rest:
            return {name: item for name, item in value.items() if name not in names}
        changed = {}
        for name in names:
            item = _drop(value[name], rest)
            if item is not value[name]:
                changed[name] = item
        return {**value, **changed} if changed else value
    if isinstance(value, list):
        if step is EVERY:
            indexes = range(len(value))
        elif isinstance(step, int) and step < len(value):
            indexes = range(step, step + 1)
        else:
            return value
        if not indexes:
            return value
        if not rest:
            # An element dropped would renumber the rest: it becomes null instead.
            return [None if i in indexes else item for i, item in enumerate(value)]
        copy: list[Any] | None = None
        for i in indexes:
            item = _drop(value[i], rest)
            if item is not value[i]:
                copy = list(value) if copy is None else copy
                copy[i] = item
        return value if copy is None else copy
    return value


def dropped(document: Any, rules: Iterable[IgnorePath]) -> Any:
    """
    ``document`` (parsed JSON) without the fields ``rules`` name: a new value,
    or ``document`` itself when they name nothing in it. A dropped member
    is gone; a dropped array element becomes null, so that the others keep
    their positions (and a later rule's ``[N]`` means what it meant). The
    result does not depend on the order of the rules.
    """
    for rule in rules:
        document = _drop(document, rule.steps)
    return document
