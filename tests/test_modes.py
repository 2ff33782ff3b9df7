"""
The per-request directives: mode, TTL, namespace and replay pace from request headers.

Header values arrive as twisted.web gives them, bytes decoded as latin-1, so
that is what these tests hand :func:`parse_directives`.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stasis.modes import MAX_NAMESPACE_LENGTH, BadDirective, Mode, parse_directives


def wire(text: str) -> str:
    """A header value as stasis sees it: sent as UTF-8, read back as latin-1."""
    return text.encode("utf-8").decode("latin-1")


@pytest.mark.parametrize("namespace", ["ünï", "suite-à", "分支/功能", "emoji 🚀 ok", "plain"])
def test_a_namespace_is_utf8_text(namespace: str) -> None:
    directives = parse_directives({"x-stasis-namespace": wire(namespace)}, Mode.CACHE)
    assert directives.namespace == namespace


def test_a_namespace_is_trimmed_of_http_whitespace_only_after_decoding() -> None:
    # "à" is C3 A0: stripped as latin-1 text, its A0 (a no-break space) would go.
    assert parse_directives({"x-stasis-namespace": wire(" \tà\t ")}, Mode.CACHE).namespace == "à"


@pytest.mark.parametrize("raw", [b"\xfcn\xef", b"ok\xc3", b"\xed\xa0\x80", b"\xc0\xaf"])
def test_a_namespace_that_is_not_utf8_is_refused_naming_the_header(raw: bytes) -> None:
    with pytest.raises(BadDirective) as caught:
        parse_directives({"x-stasis-namespace": raw.decode("latin-1")}, Mode.CACHE)
    assert caught.value.header == "X-Stasis-Namespace"
    assert "X-Stasis-Namespace" in caught.value.message
    assert "UTF-8" in caught.value.message


def test_the_namespace_limit_counts_characters_not_bytes() -> None:
    at_limit = "ü" * MAX_NAMESPACE_LENGTH  # twice as many bytes
    assert parse_directives({"x-stasis-namespace": wire(at_limit)}, Mode.CACHE).namespace == (
        at_limit
    )
    with pytest.raises(BadDirective):
        parse_directives({"x-stasis-namespace": wire(at_limit + "ü")}, Mode.CACHE)


@pytest.mark.parametrize("namespace", ["a\x00b", "a\u2028b", "a\u00a0b", "\x85"])
def test_a_namespace_must_be_printable(namespace: str) -> None:
    with pytest.raises(BadDirective) as caught:
        parse_directives({"x-stasis-namespace": wire(namespace)}, Mode.CACHE)
    assert caught.value.header == "X-Stasis-Namespace"


@given(st.text(st.characters(codec="utf-8"), max_size=MAX_NAMESPACE_LENGTH))
def test_any_printable_namespace_comes_back_as_sent(namespace: str) -> None:
    namespace = namespace.strip(" \t")
    if not namespace.isprintable():
        return
    assert parse_directives({"x-stasis-namespace": wire(namespace)}, Mode.CACHE).namespace == (
        namespace
    )


def test_no_namespace_is_the_empty_one() -> None:
    assert parse_directives({}, Mode.CACHE).namespace == ""


def test_the_mode_header_wins_over_cache_control_and_the_default() -> None:
    headers = {"x-stasis-mode": "Bypass", "cache-control": "no-cache"}
    assert parse_directives(headers, Mode.REPLAY).mode is Mode.BYPASS
    assert parse_directives({"cache-control": "no-cache"}, Mode.REPLAY).mode is Mode.FRESH
    assert parse_directives({}, Mode.REPLAY).mode is Mode.REPLAY
