"""
The recorded request nearest to one that missed: what a replay miss explains itself with.

A test run in replay mode fails on the first request that was not recorded.
Most often it was recorded, a little differently: another temperature, one
more message, another namespace. Among the newest entries for the same
provider, path and model (else the same provider and path), the one whose
request differs in the fewest places is named, with those places.

Only entries the caller could have been answered with are candidates: those
in the shared scope, and those its own credential stored (proven by making
their key again with its fingerprint). Another key's prompts are never shown.

Ignore rules count as the key counts them: a difference in a field either
side's rules leave out is not one, and a rule only one side has is named
(``ignored: "user" → (absent)``) when it is why the keys differ: when it
leaves out something the other side's key holds.

Bodies are compared field by field only when parsing them is cheap enough
(:data:`DOCUMENT_BUDGET`); a larger one is compared by its length, and the
candidates are read from the store one at a time: a recorded request may be
tens of megabytes, and a parsed one a hundred times that.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from attrs import evolve, frozen
from twisted.internet.defer import Deferred

from stasis.cache.samples import sample_key
from stasis.differences import ABSENT, Difference, differences
from stasis.ignore import IgnorePath, combined, dropped, parse_ignore
from stasis.keys import KeyPolicy, ScopedKeys, parse_json, stored_key
from stasis.model import Entry, EntryFilter, StoredRequest
from stasis.store import Store

__all__ = ["CANDIDATES", "DOCUMENT_BUDGET", "Asked", "Nearest", "nearest_recorded"]

#: How many of the newest matching entries are compared.
CANDIDATES = 20

#: Differences collected per candidate; more are not shown anyway.
SHOWN = 8

#: A body is parsed to be compared only when that may take at most this many
#: bytes of Python objects, by a generous estimate (:func:`_parse_cost`).
DOCUMENT_BUDGET = 64 * 1024 * 1024


@frozen
class Asked:
    """The request that missed, as far as it is compared."""

    method: str
    path: str
    provider: str
    model: str | None
    namespace: str
    request: StoredRequest
    #: Its body as parsed for its key; None when the body is not JSON, or was
    #: keyed without being parsed whole (a large one: see :func:`_asked_document`).
    document: Any
    keys: ScopedKeys
    policy: KeyPolicy


@frozen
class Nearest:
    entry: Entry
    differences: tuple[Difference, ...]


def _parse_cost(body: bytes) -> int:
    """
    At most the bytes of Python objects ``parse_json(body)`` holds at once:
    ~200 for each value (every value but the first follows a ``,`` ``:``
    ``[`` or ``{``), and 8 for each byte (the decoded text and the strings,
    four bytes a character at worst).
    """
    values = body.count(b",") + body.count(b":") + body.count(b"[") + body.count(b"{") + 1
    return 200 * values + 8 * len(body)


def _document(body: bytes) -> Any:
    """``body`` parsed, or None when it is not JSON or too costly to parse."""
    if not body or _parse_cost(body) > DOCUMENT_BUDGET:
        return None
    try:
        return parse_json(body)
    except (ValueError, RecursionError):
        return None


def _asked_document(asked: Asked) -> Asked:
    """``asked`` with its body's document, if it was keyed without one and may be parsed."""
    if asked.document is not None:
        return asked
    return evolve(asked, document=_document(asked.request.body))


def _header_differences(
    recorded: Sequence[tuple[str, str]], requested: Sequence[tuple[str, str]]
) -> list[Difference]:
    old: Mapping[str, str] = dict(recorded)
    new: Mapping[str, str] = dict(requested)
    return [
        Difference(f"{name} header", old.get(name, ABSENT), new.get(name, ABSENT))
        for name in sorted(old.keys() | new.keys())
        if old.get(name) != new.get(name)
    ]


def _rules(request: StoredRequest) -> tuple[IgnorePath, ...]:
    return tuple(parse_ignore(text) for text in request.ignored)


def _names_something(rule: IgnorePath, document: Any) -> bool:
    remains = dropped(document, [rule])
    return remains is not document and remains != document


def _rule_differences(
    recorded: tuple[IgnorePath, ...],
    recorded_kept: Any,
    requested: tuple[IgnorePath, ...],
    requested_kept: Any,
) -> list[Difference]:
    """
    The rules only one side has that changed the keys: each leaves out of its
    own side's key what the other side's key holds (``*_kept``: each body less
    its own rules).
    """
    found: list[Difference] = []
    recorded_steps = {rule.steps for rule in recorded}
    requested_steps = {rule.steps for rule in requested}
    for rule in recorded:
        if rule.steps not in requested_steps and _names_something(rule, requested_kept):
            found.append(Difference("ignored", rule.text, ABSENT))
    for rule in requested:
        if rule.steps not in recorded_steps and _names_something(rule, recorded_kept):
            found.append(Difference("ignored", ABSENT, rule.text))
    return found


def _body_differences(asked: Asked, request: StoredRequest, recorded: Any) -> list[Difference]:
    """Where two JSON bodies differ as their keys see them: outside every rule of either side."""
    recorded_rules, requested_rules = _rules(request), _rules(asked.request)
    found = _rule_differences(
        recorded_rules,
        dropped(recorded, recorded_rules),
        requested_rules,
        dropped(asked.document, requested_rules),
    )
    both = combined(recorded_rules, requested_rules)
    return found + differences(dropped(recorded, both), dropped(asked.document, both), SHOWN)


def compare(asked: Asked, entry: Entry) -> tuple[Difference, ...]:
    """
    Where ``asked`` differs from the request ``entry`` answers (which must be
    stored); a stored ignore rule that does not parse is a ``ValueError``.
    """
    assert entry.request is not None
    found: list[Difference] = []
    if entry.namespace != asked.namespace:
        found.append(Difference("X-Stasis-Namespace", entry.namespace, asked.namespace))
    if entry.request.query != asked.request.query:
        found.append(Difference("query", entry.request.query, asked.request.query))
    found += _header_differences(entry.request.headers, asked.request.headers)
    recorded = _document(entry.request.body)
    if recorded is not None and asked.document is not None:
        found += _body_differences(asked, entry.request, recorded)
    elif entry.request.body != asked.request.body:
        found.append(
            Difference(
                "(the body)",
                f"{len(entry.request.body)} bytes",
                f"{len(asked.request.body)} bytes",
            )
        )
    return tuple(found[:SHOWN])


def _visible(asked: Asked, entry: Entry) -> bool:
    """Whether the caller may see ``entry``'s request: shared, or stored by its credential."""
    if entry.request is None:
        return False
    if entry.key == entry.shared_key:
        return True
    fingerprint = asked.keys.fingerprint
    if not fingerprint or asked.keys.own == asked.keys.shared:
        return False
    owned = stored_key(
        entry.method, entry.path, entry.namespace, entry.request, fingerprint, asked.policy
    )
    return sample_key(owned, entry.sample) == entry.key


#: How near a candidate is: differences, another namespace, age (lower is nearer).
_Rank = tuple[int, bool, float]


def _ranked(asked: Asked, entries: list[Entry]) -> tuple[_Rank, Nearest] | None:
    best: tuple[_Rank, Nearest] | None = None
    for entry in entries:
        if not _visible(asked, entry):
            continue
        found = compare(asked, entry)
        rank = (len(found), entry.namespace != asked.namespace, -entry.created_at)
        if best is None or rank < best[0]:
            best = (rank, Nearest(entry, found))
    return best


async def nearest_recorded(
    store: Store,
    asked: Asked,
    in_thread: Callable[[Callable[[], Any]], Deferred[Any]],
) -> Nearest | None:
    """The visible recorded request nearest to ``asked``, or None when there is none."""
    filters = [EntryFilter(provider=asked.provider, path=asked.path)]
    if asked.model is not None:
        filters.insert(0, EntryFilter(provider=asked.provider, path=asked.path, model=asked.model))
    # Parsing and comparing big bodies is Python work: off the reactor thread.
    asked = await in_thread(partial(_asked_document, asked))
    for where in filters:
        page = await store.list_entries(where, limit=CANDIDATES)
        best: tuple[_Rank, Nearest] | None = None
        for info in page.entries:  # one at a time: a recorded request may be large
            ranked = await in_thread(partial(_ranked, asked, await store.get_many([info.key])))
            if ranked is not None and (best is None or ranked[0] < best[0]):
                best = ranked
        if best is not None:
            return best[1]
    return None


def explain(key: str, nearest: Nearest | None, now: float) -> tuple[str, dict[str, Any]]:
    """The replay miss's message and the details its JSON error carries."""
    message = f"replay mode: no cached answer for this request (key {key})"
    details: dict[str, Any] = {"key": key}
    if nearest is None:
        message += ", and nothing recorded for the same provider and path"
    else:
        entry = nearest.entry
        described = [difference.describe() for difference in nearest.differences]
        details["nearest"] = {"key": entry.portable_key, "differences": described}
        if described:
            message += (
                f"; the nearest recorded request (key {entry.portable_key}) differs at "
                + "; ".join(described)
            )
        elif not entry.is_fresh(now):
            message += f"; the same request was recorded (key {entry.portable_key}) but expired"
        else:
            message += (
                f"; the nearest recorded request (key {entry.portable_key}) differs only in "
                "what its key is made of beyond the body, query and headers compared"
            )
    message += ". Replay mode never calls the upstream: record it first with mode 'cache'."
    return message, details
