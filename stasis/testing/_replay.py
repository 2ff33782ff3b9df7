"""
Telling a replay-mode failure apart: which of a test's calls had no recording.

The daemon answers a replay miss with a 504 whose JSON says why (type
``stasis_replay_miss``, a message naming the nearest recorded request and
the fields that differ). The SDK raises an error that carries that answer,
but a test or the code under test may wrap, retry or swallow it, so the
failure report gets a section of its own, built from what can be found: the
answers carried by the exception chain, the daemon's count of replay misses
during the test, and the daemon's log lines for them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from attrs import frozen

__all__ = ["ERROR_TYPE", "ReplayMiss", "find_replay_misses", "is_miss_line", "report"]

ERROR_TYPE = "stasis_replay_miss"
#: How far into chained and grouped exceptions to look.
_MAX_EXCEPTIONS = 50
#: A request line the daemon logs for a replay miss (``POST /v1/... 504 MISS 0.8ms``).
_MISS_LINE = re.compile(r" 504 MISS\b|replay.miss", re.IGNORECASE)


@frozen
class ReplayMiss:
    message: str
    key: str | None = None


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, its causes and contexts, and the members of exception groups."""
    seen: set[int] = set()
    pending = [error]
    while pending and len(seen) < _MAX_EXCEPTIONS:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
        pending += list(getattr(current, "exceptions", None) or ())


def _from_document(document: Any) -> ReplayMiss | None:
    """A stasis error document, or the ``error`` object inside one."""
    if not isinstance(document, Mapping):
        return None
    inner = document.get("error")
    if isinstance(inner, Mapping):
        document = inner
    if document.get("type") != ERROR_TYPE:
        return None
    key = document.get("key")
    return ReplayMiss(str(document.get("message", "")), key if isinstance(key, str) else None)


def _from_error(error: BaseException) -> ReplayMiss | None:
    # openai / anthropic: .body (the parsed JSON, or its "error" object), and
    # .response, an httpx response with .json().
    found = _from_document(getattr(error, "body", None))
    if found is not None:
        return found
    response = getattr(error, "response", None)
    if isinstance(response, Mapping):
        # botocore's ClientError: the daemon's x-amzn-errortype is the code.
        fault = response.get("Error")
        if isinstance(fault, Mapping) and fault.get("Code") == ERROR_TYPE:
            return ReplayMiss(str(fault.get("Message", "")))
        return None
    reader = getattr(response, "json", None)
    if callable(reader):
        try:
            return _from_document(reader())
        except Exception:  # not JSON, or a body already consumed: nothing to say
            return None
    text = str(error)
    if ERROR_TYPE in text:
        return _from_text(text)
    return None


def _from_text(text: str) -> ReplayMiss:
    start = text.find("{")
    if start >= 0:
        try:
            found = _from_document(json.loads(text[start:]))
        except ValueError:
            found = None
        if found is not None:
            return found
    return ReplayMiss(text)


def find_replay_misses(error: BaseException) -> list[ReplayMiss]:
    """The replay misses an exception (or one it was raised from) carries, without repeats."""
    found: list[ReplayMiss] = []
    for current in _chain(error):
        miss = _from_error(current)
        if miss is not None and miss not in found:
            found.append(miss)
    return found


def is_miss_line(line: str) -> bool:
    """Whether a line of the daemon's log is about a replay miss."""
    return bool(_MISS_LINE.search(line))


def report(misses: list[ReplayMiss], counted: int | None, log_lines: list[str]) -> str:
    """
    The failure report's section: the daemon's messages, how many calls missed
    (``counted``, None when unknown) and its log lines for them.
    """
    number = max(len(misses), counted or 0)
    calls = "a call" if number <= 1 else f"{number} calls"
    lines = [
        f"This test made {calls} that the recording does not have; replay mode "
        "answers those with an error and never calls the provider."
    ]
    for miss in misses:
        named = not miss.key or miss.key in miss.message
        lines.append(f"  - {miss.message}" + ("" if named else f" (key {miss.key})"))
    if log_lines:
        lines.append("The daemon logged:")
        lines += [f"  {line.strip()}" for line in log_lines]
    lines.append(
        "Record it with --stasis-mode cache (and a real API key), then commit the cassette; "
        "or, if the request changed on purpose, record again with --stasis-mode fresh."
    )
    return "\n".join(lines)
