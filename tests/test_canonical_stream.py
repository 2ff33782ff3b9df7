"""
The stream (:mod:`stasis.canonical_stream`) spells a body exactly as the whole document is spelled.

A body over ``WHOLE_BODY_BYTES`` is keyed by the stream, one under it by
parsing it whole (``json.loads``, then ``canonical_into``): for every body the
two must agree byte for byte, or a body's key would move with its size. The
stream is called here directly on small bodies, in several modes: as it runs
(arrays and objects up to 64 KiB read by json's scanner), token by token only
(no scanner), and with every size limit shrunk to a few bytes, so that a small
body takes the paths of a large one (strings cut in slices at escapes and UTF-8
sequences, windows, output pieces, number runs).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from decimal import Decimal, InvalidOperation
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stasis.canonical_stream as stream
from stasis.canonical import canonical_number, number_spelling
from stasis.canonical_stream import Budget, NotCanonical, OverBudget, canonical_parts
from stasis.ignore import IgnorePath, parse_ignore
from stasis.keys import WHOLE_BODY_BYTES, KeyRequest, _parsed_whole, derive_key, parse_body
from tests.test_keys import SECRET, json_values, shuffled

#: Size limits for each mode (module constants of stasis.canonical_stream).
MODES: dict[str, dict[str, int]] = {
    "as it runs": {"_SCAN_MAX": stream._SCAN_MAX},
    "token by token": {"_SCAN_MAX": 0},
    "tiny": {"_PIECE": 3, "_WINDOW": 3, "_SLICE": 8, "_SHORT": 1, "_SCAN_MAX": 0},
    "tiny, scanned": {
        "_PIECE": 5,
        "_WINDOW": 2,
        "_SLICE": 9,
        "_SHORT": 3,
        "_SCAN_MAX": 24,
    },
}
modes = st.sampled_from(sorted(MODES))


@contextmanager
def mode(name: str) -> Iterator[None]:
    with mock.patch.multiple(stream, **MODES[name]):  # type: ignore[arg-type]
        yield


def whole(body: bytes, rules: tuple[IgnorePath, ...] = ()) -> bytes:
    """The body's form in the key as the whole-document code makes it."""
    return _parsed_whole(body, rules).normalized


def streamed(body: bytes, rules: tuple[IgnorePath, ...] = (), name: str | None = None) -> bytes:
    """The body's form in the key as the stream makes it (in mode ``name``, if given)."""
    with mode(name) if name else nullcontext():
        try:
            parts = canonical_parts(body, rules).parts
        except OverBudget:
            raise AssertionError("a small body over budget") from None
        except NotCanonical:
            return b"raw:" + body
    return b"json:" + b"".join(parts)


# --- the same spelling ---------------------------------------------------------------

#: Strings with what quoting changes: escapes, controls, non-ASCII, surrogates.
awkward = st.text(
    st.characters(codec=None) | st.sampled_from(['"', "\\", "/", "\n", "\x00", "\x7f", "é", "😀"]),
    max_size=40,
)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | awkward,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(awkward | st.sampled_from(["a", "b", "model"]), children, max_size=5)
    ),
    max_leaves=40,
)


@settings(max_examples=300)
@given(
    values | json_values,
    st.randoms(use_true_random=False),
    st.sampled_from([None, 0, 2, "\t"]),
    st.booleans(),
    st.sampled_from([None, (",", ":"), (" , ", " : ")]),
    modes,
)
def test_every_spelling_of_a_value_is_spelled_as_the_whole_document_is(
    value: Any,
    rnd: random.Random,
    indent: int | str | None,
    ensure_ascii: bool,
    separators: tuple[str, str] | None,
    name: str,
) -> None:
    text = json.dumps(
        shuffled(value, rnd), indent=indent, ensure_ascii=ensure_ascii, separators=separators
    )
    body = text.encode("utf-8", "surrogatepass")
    assert streamed(body, name=name) == whole(body)


@given(values, st.sampled_from(["utf-16", "utf-16-le", "utf-32-be", "utf-8-sig"]), modes)
def test_bodies_in_utf16_utf32_and_with_a_bom_too(value: Any, encoding: str, name: str) -> None:
    body = json.dumps(value, ensure_ascii=False).encode(encoding, "surrogatepass")
    assert streamed(body, name=name) == whole(body)


@pytest.mark.parametrize("name", sorted(MODES))
def test_every_character_is_quoted_as_json_dumps_quotes_it(name: str) -> None:
    characters = [chr(c) for c in [*range(0x800), *range(0xD7F0, 0xE010), 0xFFFF, 0x10000, 0x1F600]]
    for ensure_ascii in (True, False):
        value = [characters, "".join(characters), {c: c for c in characters}]
        body = json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")
        assert streamed(body, name=name) == whole(body)
        for c in characters:  # each alone: a string of one kind only takes its own path
            body = json.dumps([c, c * 20], ensure_ascii=ensure_ascii).encode(
                "utf-8", "surrogatepass"
            )
            assert streamed(body, name=name) == whole(body), repr(c)


@pytest.mark.parametrize("window", range(1, 48))
def test_a_window_cut_anywhere_reads_the_same(window: int) -> None:
    # A number the scanner's window cuts short must not be read as a shorter one.
    body = (
        '[[], 1.0000000000000002e+16, -10, 0.5E-3, "s", 12345, {"a": [1, 2]}, true, 7,'
        ' "é😀" , null, [ 1.5 ] ,99]'
    ).encode()
    with mock.patch.multiple(stream, _SCAN_MAX=window, _WINDOW=max(2, window // 3)):
        assert streamed(body) == whole(body)


# What breaks JSON: every edit of a valid body must be judged as json.loads judges it.
_significant = st.sampled_from(
    [*'"\\,:[]{} \t0-.eE+1tfnNI', "\x00", "\x1f", "\xff", "\xc3", "\xed\xa0\x80", "\ufeff"]
)


@settings(max_examples=500)
@given(values, st.lists(st.tuples(st.floats(0, 1), st.integers(0, 2), _significant)), modes)
def test_a_damaged_body_is_judged_as_json_loads_judges_it(
    value: Any, edits: list[tuple[float, int, str]], name: str
) -> None:
    body = bytearray(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    for where, how, what in edits:
        at = int(where * len(body))
        piece = what.encode("utf-8", "surrogatepass") if len(what) == 1 else what.encode("latin-1")
        if how == 0:
            body[at:at] = piece  # insert
        elif how == 1:
            del body[at : at + 1]
        else:
            body[at : at + 1] = piece
    if body:  # an empty body is keyed before either is asked
        assert streamed(bytes(body), name=name) == whole(bytes(body))


@settings(max_examples=300)
@given(st.binary(max_size=60) | st.text(max_size=30).map(str.encode), modes)
def test_any_bytes_are_judged_as_json_loads_judges_them(body: bytes, name: str) -> None:
    if body:
        assert streamed(body, name=name) == whole(body)


_steps = st.sampled_from(["a", "b", "model", "*"]) | st.integers(0, 2)
rules = st.lists(
    st.lists(_steps, min_size=1, max_size=3).map(
        lambda steps: parse_ignore(
            "".join(
                "[*]" if s == "*" else f"[{s}]" if isinstance(s, int) else f"[{json.dumps(s)}]"
                for s in steps
            )
        )
    ),
    max_size=3,
)


@settings(max_examples=300)
@given(values | json_values, rules, modes)
def test_ignore_rules_drop_what_they_drop_from_the_whole_document(
    value: Any, listed: list[IgnorePath], name: str
) -> None:
    body = json.dumps(value).encode("utf-8", "surrogatepass")
    assert streamed(body, tuple(listed), name) == whole(body, tuple(listed))


@pytest.mark.parametrize("name", sorted(MODES))
@pytest.mark.parametrize(
    "body",
    [
        b"[" * 128 + b"]" * 128,
        b"[" * 129 + b"]" * 129,
        b'{"a": ' + b"[" * 127 + b"1" + b"]" * 127 + b"}",
        b'{"a": ' + b"[" * 128 + b"1" + b"]" * 128 + b"}",
        b'{"keep": 1, "deep": ' + b"[" * 500 + b"]" * 500 + b"}",
        b'[{"deep": ' + b"{}" * 0 + b"[" * 300 + b"]" * 300 + b"}, 2]",
        b'{"x": 1e9999999999999999999}',
        b'{"deep": [1e9999999999999999999]}',
        b'{"deep": {"a": 1, "a": 2}}',
        b'"\\ud83d\\ude00 \\ud800 \\udc00"',
        b'"' + b"\\\\" * 20 + b"\\u00e9" * 5 + "é😀".encode() * 5 + b'"',
        b"  [1 , 2.50 ,-0.0e1,1E+2 ]  ",
        b"[1,2,3,]",
        b"[1 2]",
        b"[01]",
        b"[-]",
        b"[1.]",
        b"[.5]",
        b"[1e]",
        b"[-Infinity, Infinity, NaN, -NaN]",
        b"[tru]",
        b'{"a" 1}',
        b'{"a": 1,}',
        b'{,"a": 1}',
        b"{1: 2}",
        b'["a\tb"]',
        b'["\\x"]',
        b'["\\u12"]',
        b'["unterminated]',
        b"\xef\xbb\xbf\xef\xbb\xbf[]",
        b"[] []",
        b"[]\x00",
    ],
)
def test_hostile_bodies_are_judged_as_the_whole_document_code_judges_them(
    body: bytes, name: str
) -> None:
    rules = (parse_ignore("deep"),)
    assert streamed(body, name=name) == whole(body)
    assert streamed(body, rules, name) == whole(body, rules)


def _literal(sign: str, whole: int, fraction: str | None, exponent: tuple[str, ...] | None) -> str:
    return sign + str(whole) + ("." + fraction if fraction else "") + "".join(exponent or ())


number_literals = st.builds(
    _literal,
    st.sampled_from(["", "-"]),
    st.integers(0, 10**30) | st.sampled_from([0, 1, 10, 100]),
    st.none() | st.text("0123456789", min_size=1, max_size=25),
    st.none()
    | st.tuples(
        st.sampled_from("eE"),
        st.sampled_from(["", "+", "-"]),
        st.text("0123456789", min_size=1, max_size=22),
    ),
)


@settings(max_examples=2000)
@given(number_literals)
def test_a_number_is_spelled_from_its_text_as_from_its_decimal(text: str) -> None:
    try:
        expected: str | None = canonical_number(Decimal(text))
    except InvalidOperation:  # beyond what Decimal holds: the body is keyed raw
        expected = None
    try:
        spelled: str | None = number_spelling(text)
    except ValueError:
        spelled = None
    assert spelled == expected


# --- the budget --------------------------------------------------------------------


def _ones(count: int) -> bytes:
    return b"[" + b",".join([b"1"] * count) + b"]"


def test_a_body_over_the_structure_budget_is_over_budget() -> None:
    budget = Budget(structure=100, held=10**9)
    assert canonical_parts(_ones(100), budget=budget).parts  # 99 commas and a '['
    with pytest.raises(OverBudget):
        canonical_parts(_ones(101), budget=budget)
    # Commas inside strings count too: the bound is on bytes, read before parsing.
    with pytest.raises(OverBudget):
        canonical_parts(json.dumps("," * 200).encode(), budget=budget)


def test_an_object_holding_too_many_members_is_over_budget() -> None:
    members = {f"name-{i}": i for i in range(400)}
    body = json.dumps(members).encode()
    with pytest.raises(OverBudget):
        canonical_parts(body, budget=Budget(structure=10**6, held=50_000))
    # The same members in small objects one after another hold little at a time.
    spread = json.dumps([{name: i} for name, i in members.items()]).encode()
    with mode("token by token"):
        assert canonical_parts(spread, budget=Budget(structure=10**6, held=50_000)).parts


def test_the_budget_grows_with_the_body() -> None:
    assert Budget.for_size(1000) == Budget(structure=1_000_000, held=16 * 1024 * 1024)
    big = Budget.for_size(60_000_000)
    assert big.structure == 5_000_000 and big.held == 60_000_000


def _key(body: bytes) -> str:
    return derive_key(KeyRequest(method="POST", path="/v1/embeddings", body=body), SECRET)


def test_bodies_either_side_of_the_budget_key_apart_and_always_alike() -> None:
    limit = Budget.STRUCTURE_FLOOR
    under = _ones(limit)  # limit - 1 commas and a '['
    over = _ones(limit + 1)
    assert len(under) > WHOLE_BODY_BYTES
    assert parse_body(under).normalized.startswith(b"json:[1e0,1e0,")
    assert parse_body(over).parts == (b"raw:", over)
    assert _key(under) == _key(under) != _key(over) == _key(over)
    # Over budget, the same value spelled another way is another key: a miss,
    # never a false hit.
    respelled = over.replace(b",", b", ", 10)
    assert parse_body(respelled).parts == (b"raw:", respelled)
    assert _key(respelled) != _key(over)


@given(st.integers(1, 60), st.integers(0, 3))
def test_near_the_budget_only_the_same_bytes_share_a_key(count: int, spaces: int) -> None:
    budget = Budget(structure=30, held=10**9)
    body = b"[" + (b"," + b" " * spaces).join([b"1"] * count) + b"]"
    try:
        form = b"json:" + b"".join(canonical_parts(body, budget=budget).parts)
    except OverBudget:
        form = b"raw:" + body
    assert form.startswith(b"json:") == (count <= 30)
    plain = b"[" + b",".join([b"1"] * count) + b"]"
    try:
        canonical = b"json:" + b"".join(canonical_parts(plain, budget=budget).parts)
    except OverBudget:
        canonical = b"raw:" + plain
    assert (form == canonical) == (count <= 30 or spaces == 0)


# --- what is read of the head ----------------------------------------------------------


def test_the_head_holds_the_top_level_scalars() -> None:
    body = b'{"input": [1, 2], "model": "text-embedding-3-small", "n": 2, "s": true}'
    head = canonical_parts(body).head
    assert head is not None
    assert head["model"] == "text-embedding-3-small"
    assert head["s"] is True and "input" not in head
    assert canonical_parts(b"[1, 2]").head is None
