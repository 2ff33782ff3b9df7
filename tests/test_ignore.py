"""
Ignore rules (:mod:`stasis.ignore`): the grammar, and what :func:`dropped` leaves of a document.

The central property is checked against a model: a field a rule names is gone
(an array element becomes null), and every other value is still there, as it was.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from stasis.config import Config, ConfigError
from stasis.differences import json_path
from stasis.ignore import (
    EVERY,
    MAX_IGNORE_PATHS,
    IgnorePath,
    Step,
    combined,
    dropped,
    parse_ignore,
    parse_ignore_list,
)

# Few names, so that rules often name something; "*" and "x.y" need quoting.
names = st.sampled_from(["a", "b", "id", "user_id", "*", "x.y", "", "é", 'q"t', "a,b"])
documents = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=3),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(names, children, max_size=4),
    max_leaves=16,
)
steps = st.lists(names | st.integers(0, 3) | st.just(EVERY), min_size=1, max_size=4).map(tuple)

_PLAIN = re.compile(r"[A-Za-z0-9_$@-]+\Z")


@st.composite
def texts(draw: st.DrawFn, path: tuple[Step, ...]) -> str:
    """One of the ways ``path`` may be written."""
    out = []
    for step in path:
        if step is EVERY:
            out.append(draw(st.sampled_from(["[*]", ".*"])) if out else "[*]")
        elif isinstance(step, int):
            out.append(f"[{step}]")
        elif _PLAIN.match(step) and draw(st.booleans()):
            out.append(f".{step}" if out else step)
        else:
            out.append(f"[{json.dumps(step, ensure_ascii=draw(st.booleans()))}]")
    return "".join(out)


rules = steps.flatmap(lambda path: texts(path).map(parse_ignore))


# The grammar


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user", ("user",)),
        ("metadata.user_id", ("metadata", "user_id")),
        ("messages[*].id", ("messages", EVERY, "id")),
        ("messages.*.id", ("messages", EVERY, "id")),
        ("messages[2]", ("messages", 2)),
        ('metadata["x.y"]', ("metadata", "x.y")),
        ('["*"]', ("*",)),
        ("*", (EVERY,)),
        ('["a,b"]["\\u00e9"]', ("a,b", "é")),
        ("  user  ", ("user",)),
    ],
)
def test_rules_parse_into_their_steps(text: str, expected: tuple[Step, ...]) -> None:
    rule = parse_ignore(text)
    assert rule.steps == expected
    assert rule.text == str(rule) == text.strip()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "must name a field"),
        ("a..b", "expected a member name at position 2"),
        ("a.", "expected a member name at position 2"),
        (".a", "expected a member name at position 0"),
        ("a b", "expected '.' or '[' at position 1"),
        ("a[x]", 'expected [N], [*] or ["name"] at position 1'),
        ("a[-1]", 'expected [N], [*] or ["name"] at position 1'),
        ('a["b]', 'expected [N], [*] or ["name"] at position 1'),
        ('a["\\x"]', '"\\x" at position 1 is not a JSON string'),
    ],
)
def test_a_bad_rule_says_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_ignore(text)


def test_a_member_named_star_is_not_every_member() -> None:
    document = {"*": 1, "a": 2}
    assert dropped(document, [parse_ignore('["*"]')]) == {"a": 2}
    assert dropped(document, [parse_ignore("*")]) == {}


@given(steps, st.data())
def test_every_spelling_of_a_path_parses_to_it(path: tuple[Step, ...], data: Any) -> None:
    text = data.draw(texts(path))
    rule = parse_ignore(text)
    assert rule.steps == path
    assert parse_ignore(rule.text) == rule


@given(st.lists(st.text(min_size=1, max_size=4) | st.integers(0, 99), min_size=1, max_size=4))
def test_a_path_a_replay_miss_names_is_a_rule_naming_it(parts: list[str | int]) -> None:
    assert parse_ignore(json_path(tuple(parts))).steps == tuple(parts)


@given(st.lists(rules, max_size=5), st.sampled_from([",", ", ", " ,  "]))
def test_a_list_of_rules_parses_to_them(listed: list[IgnorePath], comma: str) -> None:
    assume(all(rule.steps != (EVERY,) for rule in listed))  # refused: see below
    assert parse_ignore_list(comma.join(rule.text for rule in listed)) == tuple(listed)


def test_a_list_skips_empty_parts_and_has_a_limit() -> None:
    assert parse_ignore_list(" user, ,metadata.user_id,") == (
        parse_ignore("user"),
        parse_ignore("metadata.user_id"),
    )
    assert parse_ignore_list("") == ()
    parse_ignore_list(",".join(["a"] * MAX_IGNORE_PATHS))
    with pytest.raises(ValueError, match=f"at most {MAX_IGNORE_PATHS}"):
        parse_ignore_list(",".join(["a"] * (MAX_IGNORE_PATHS + 1)))


def test_combined_keeps_the_first_of_each_text_in_order() -> None:
    server = parse_ignore_list("user, metadata.user_id")
    request = parse_ignore_list("messages[*].id, user")
    assert [rule.text for rule in combined(server, request)] == [
        "user",
        "metadata.user_id",
        "messages[*].id",
    ]
    assert combined((), ()) == ()


# What dropped() leaves


_MISSING = object()


def _nodes(value: Any, at: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], Any]]:
    """Every value in ``value`` with its path, ``value`` itself first."""
    found = [(at, value)]
    if isinstance(value, dict):
        for name, item in value.items():
            found += _nodes(item, (*at, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _nodes(item, (*at, index))
    return found


def _at(value: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        member = isinstance(step, str) and isinstance(value, dict) and step in value
        element = isinstance(step, int) and isinstance(value, list) and step < len(value)
        if not (member or element):
            return _MISSING
        value = value[step]
    return value


def _names(rule: IgnorePath, path: tuple[str | int, ...]) -> bool:
    """Whether ``rule`` names the value at ``path`` (members go by name, elements by int)."""
    return len(path) == len(rule.steps) and all(
        step is EVERY or (type(step) is type(part) and step == part)
        for step, part in zip(rule.steps, path, strict=True)
    )


def _named_prefix(
    listed: list[IgnorePath], path: tuple[str | int, ...]
) -> tuple[str | int, ...] | None:
    """The shortest part of ``path`` that one of the rules names, if any."""
    for length in range(1, len(path) + 1):
        if any(_names(rule, path[:length]) for rule in listed):
            return path[:length]
    return None


def _is_leaf(value: Any) -> bool:
    return not isinstance(value, (dict, list)) or not value


@given(documents, st.lists(rules, max_size=3))
def test_only_the_fields_named_vanish(document: Any, listed: list[IgnorePath]) -> None:
    result = dropped(document, listed)
    for path, value in _nodes(document):
        if not _is_leaf(value):
            continue
        named = _named_prefix(listed, path)
        if named is None:
            assert _at(result, path) == value, path
        elif isinstance(named[-1], int):
            assert _at(result, named) is None, path  # an element: null in its place
        else:
            parent = _at(result, named[:-1])
            assert isinstance(parent, dict) and named[-1] not in parent, path
    # And nothing else: what is left was there, but for the nulls in dropped places.
    for path, value in _nodes(result):
        original = _at(document, path)
        if isinstance(value, dict):
            assert isinstance(original, dict) and value.keys() <= original.keys(), path
        elif isinstance(value, list):
            assert isinstance(original, list) and len(value) == len(original), path
        elif original != value:
            assert value is None and _named_prefix(listed, path) == path, path


@given(documents, st.lists(rules, max_size=3))
def test_dropping_leaves_its_input_untouched(document: Any, listed: list[IgnorePath]) -> None:
    before = copy.deepcopy(document)
    dropped(document, listed)
    assert document == before


@given(documents, st.lists(rules, max_size=3))
def test_dropping_twice_is_dropping_once(document: Any, listed: list[IgnorePath]) -> None:
    once = dropped(document, listed)
    assert dropped(once, listed) == once


@given(documents, st.lists(rules, max_size=4), st.randoms(use_true_random=False))
def test_the_order_of_the_rules_does_not_matter(
    document: Any, listed: list[IgnorePath], rnd: Any
) -> None:
    shuffled = list(listed)
    rnd.shuffle(shuffled)
    assert dropped(document, shuffled) == dropped(document, listed)


@given(documents, st.lists(rules, max_size=3))
def test_rules_that_name_nothing_hand_back_the_document_itself(
    document: Any, listed: list[IgnorePath]
) -> None:
    if all(not any(_names(rule, path) for path, _ in _nodes(document) if path) for rule in listed):
        assert dropped(document, listed) is document


@given(
    st.lists(st.dictionaries(names, documents, max_size=3), max_size=4),
    st.dictionaries(names, st.dictionaries(names, documents, max_size=3), max_size=3),
)
def test_every_reaches_into_each_element_and_each_member(
    elements: list[dict[str, Any]], members: dict[str, dict[str, Any]]
) -> None:
    rule = parse_ignore("[*].id")
    assert dropped(elements, [rule]) == [
        {name: v for name, v in item.items() if name != "id"} for item in elements
    ]
    assert dropped(members, [rule]) == {
        key: {name: v for name, v in item.items() if name != "id"} for key, item in members.items()
    }


@given(st.text(max_size=8), st.dictionaries(st.text(max_size=8), documents, max_size=4), documents)
def test_a_quoted_name_drops_exactly_that_member(
    name: str, others: dict[str, Any], value: Any
) -> None:
    document = {**others, name: value}
    rule = parse_ignore(f"[{json.dumps(name)}]")
    assert dropped(document, [rule]) == {k: v for k, v in others.items() if k != name}


def test_the_documented_examples() -> None:
    body = {
        "model": "gpt-4o-mini",
        "user": "run-81",
        "metadata": {"user_id": "u-1", "suite": "a"},
        "messages": [{"id": "m1", "content": "hi"}, {"id": "m2", "content": "ho"}],
    }
    rules = parse_ignore_list("user, metadata.user_id, messages[*].id")
    assert dropped(body, rules) == {
        "model": "gpt-4o-mini",
        "metadata": {"suite": "a"},
        "messages": [{"content": "hi"}, {"content": "ho"}],
    }
    assert dropped(body, [parse_ignore("messages[0]")])["messages"] == [None, body["messages"][1]]
    # Out of range, through a scalar, or a name into an array: nothing.
    for text in ("messages[5]", "model.x", "messages.id", "metadata[0]"):
        assert dropped(body, [parse_ignore(text)]) is body


@pytest.mark.parametrize("rule", ["*", "[*]"])
def test_a_rule_that_leaves_nothing_of_the_body_is_refused(rule: str) -> None:
    with pytest.raises(ValueError, match="would leave nothing of the body in the key"):
        parse_ignore_list(f"user, {rule}")
    with pytest.raises(ConfigError, match="would leave nothing"):
        Config(ignore=[rule])
    assert parse_ignore_list(rule + ".id")[0].steps[-1] == "id"  # every member's id is fine
