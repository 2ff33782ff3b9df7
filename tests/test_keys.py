"""
Properties of the cache key (:mod:`stasis.keys`).

Two requests that mean the same thing must share a key; two that could get
different answers must not; the credential takes part only through an HMAC and
never shows in anything derived from it.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from attrs import evolve
from hypothesis import assume, given
from hypothesis import strategies as st

from stasis.keys import (
    DEFAULT_POLICY,
    CredentialScope,
    KeyPolicy,
    KeyRequest,
    canonical_json,
    credential_fingerprint,
    credential_values,
    derive_key,
    normalized_body,
    normalized_query,
    parse_json,
    scoped_keys,
    stored_request,
)
from stasis.providers import PROVIDERS

SECRET = b"0123456789abcdef0123456789abcdef"
OTHER_SECRET = b"fedcba9876543210fedcba9876543210"
TOKEN = "sk-proj-Zq7secretTOKENvalue"
HEX64 = re.compile(r"[0-9a-f]{64}")

CHAT = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hi"},
    ],
    "temperature": 0.2,
    "max_tokens": 16,
}


def chat(**changes: Any) -> bytes:
    """The baseline chat body with top-level ``changes`` applied (``None`` removes a field)."""
    document = {**CHAT, **changes}
    return json.dumps({k: v for k, v in document.items() if v is not None}).encode()


def request(**changes: Any) -> KeyRequest:
    """A baseline OpenAI chat completion request, with fields replaced by ``changes``."""
    fields: dict[str, Any] = {
        "method": "POST",
        "path": "/v1/chat/completions",
        "query": "",
        "headers": {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
        "body": chat(),
        "namespace": "",
    }
    fields.update(changes)
    return KeyRequest(**fields)


def key(req: KeyRequest, secret: bytes = SECRET, policy: KeyPolicy = DEFAULT_POLICY) -> str:
    result = derive_key(req, secret, policy)
    assert HEX64.fullmatch(result)
    return result


def with_headers(**extra: str) -> KeyRequest:
    """The baseline request with ``extra`` headers (``_`` in names becomes ``-``)."""
    base = request()
    headers = dict(base.headers)
    headers.update({name.replace("_", "-"): value for name, value in extra.items()})
    return request(headers=headers)


def canon(value: Any, **dumps: Any) -> str:
    """The canonical text of a Python value sent through ``json.dumps(**dumps)``."""
    return canonical_json(parse_json(json.dumps(value, **dumps).encode("utf-8")))


# --- strategies -------------------------------------------------------------------

texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=12)  # may hold lone surrogates: json escapes them
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=6)
tokens = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1
).map(
    lambda s: "sk-" + s  # "s", "k" and "-" never occur in a hex digest
)


def shuffled(value: Any, rnd: random.Random) -> Any:
    """``value`` with every object's members (at any depth) in a random order."""
    if isinstance(value, dict):
        names = list(value)
        rnd.shuffle(names)
        return {name: shuffled(value[name], rnd) for name in names}
    if isinstance(value, list):
        return [shuffled(item, rnd) for item in value]
    return value


def meaning(value: Any) -> Any:
    """What a JSON value means: numbers by exact decimal value, objects unordered."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, (int, float)):
        # json.dumps spells a float by its repr, which Decimal reads exactly.
        return ("number", Decimal(repr(value)) if isinstance(value, float) else Decimal(value))
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(meaning(item) for item in value))
    return ("object", frozenset((name, meaning(item)) for name, item in value.items()))


# --- JSON canonicalisation: properties ---------------------------------------------


@given(
    json_values,
    st.randoms(use_true_random=False),
    st.sampled_from([None, 0, 1, 2, 4, "\t"]),
    st.booleans(),
    st.booleans(),
    st.sampled_from([None, (",", ":"), (" , ", " : ")]),
)
def test_canonical_ignores_member_order_and_spelling(
    value: Any,
    rnd: random.Random,
    indent: int | str | None,
    ensure_ascii: bool,
    sort_keys: bool,
    separators: tuple[str, str] | None,
) -> None:
    respelled = json.dumps(
        shuffled(value, rnd),
        indent=indent,
        ensure_ascii=ensure_ascii,
        sort_keys=sort_keys,
        separators=separators,
    ).encode("utf-8", "surrogatepass")  # as json.loads decodes bytes
    plain = json.dumps(value).encode()
    assert canonical_json(parse_json(respelled)) == canonical_json(parse_json(plain))
    assert normalized_body(respelled) == normalized_body(plain)
    assert key(request(body=respelled)) == key(request(body=plain))


@given(json_objects, st.randoms(use_true_random=False))
def test_request_body_member_order_never_changes_key(body: Any, rnd: random.Random) -> None:
    original = json.dumps(body).encode()
    reordered = json.dumps(shuffled(body, rnd), indent=2).encode()
    assert key(request(body=reordered)) == key(request(body=original))


@given(json_values, json_values)
def test_canonical_text_is_exactly_json_equality(a: Any, b: Any) -> None:
    assert (canon(a) == canon(b)) == (meaning(a) == meaning(b))


@given(json_values, json_values)
def test_distinct_canonical_values_get_distinct_keys(a: Any, b: Any) -> None:
    assume(canon(a) != canon(b))
    body_a, body_b = json.dumps(a).encode(), json.dumps(b).encode()
    assert normalized_body(body_a) != normalized_body(body_b)
    assert key(request(body=body_a)) != key(request(body=body_b))


@given(json_values)
def test_canonical_text_is_a_fixpoint(value: Any) -> None:
    text = canon(value)
    assert text.isascii()
    assert canonical_json(parse_json(text.encode("ascii"))) == text
    assert normalized_body(text.encode("ascii")) == normalized_body(json.dumps(value).encode())


@given(st.integers(), st.integers(-40, 40))
def test_number_spellings_are_one_number(mantissa: int, exponent: int) -> None:
    spellings = [
        f"{mantissa}e{exponent}",
        f"{mantissa}E{exponent:+d}",
        f"{mantissa}.0e{exponent}",
        f"{mantissa}.000E{exponent:+d}",
        f"{mantissa * 10}e{exponent - 1}",
        f"{mantissa * 1000}e{exponent - 3}",
        format(Decimal(f"{mantissa}e{exponent}"), "f"),  # plain digits, exact
    ]
    bodies = {normalized_body(b'{"temperature": %s}' % s.encode()) for s in spellings}
    assert len(bodies) == 1, spellings


finite_decimals = st.decimals(allow_nan=False, allow_infinity=False)


@given(finite_decimals, finite_decimals)
def test_different_numbers_are_different(a: Decimal, b: Decimal) -> None:
    assume(a != b)
    assert normalized_body(str(a).encode()) != normalized_body(str(b).encode())


# --- JSON canonicalisation: examples -----------------------------------------------


@pytest.mark.parametrize("spelling", ["1", "1.0", "1e0", "10E-1", "1E+0", "0.1e1", "1.000"])
def test_one_is_one(spelling: str) -> None:
    assert normalized_body(b'{"temperature": %s}' % spelling.encode()) == normalized_body(
        b'{"temperature": 1}'
    )
    respelled = chat().replace(b'"temperature": 0.2', b'"temperature": ' + spelling.encode())
    assert key(request(body=respelled)) == key(request(body=chat(temperature=1)))


@pytest.mark.parametrize("spelling", ["0", "-0", "0.0", "-0.0", "0e5", "-0E-3", "0.000"])
def test_zero_and_negative_zero_are_equal(spelling: str) -> None:
    assert normalized_body(b"[%s]" % spelling.encode()) == normalized_body(b"[0]")


def test_large_and_small_numbers_keep_every_digit() -> None:
    assert normalized_body(b"1" + b"0" * 5000) == normalized_body(b"1e5000")
    assert normalized_body(b"12345678901234567890123") != normalized_body(
        b"12345678901234567890124"
    )
    # 0.1 + 0.2 style float rounding must not merge distinct literals.
    assert normalized_body(b"0.30000000000000004") != normalized_body(b"0.3")
    assert normalized_body(b"[1.5]") != normalized_body(b"[15]")
    assert normalized_body(b"[-1]") != normalized_body(b"[1]")


def test_deeply_nested_member_order() -> None:
    a = b"""{"model": "m", "tools": [{"type": "function", "function": {"name": "f",
        "parameters": {"type": "object", "properties": {"x": {"type": "integer", "minimum": 0},
        "y": {"items": {"b": 1, "a": [{"q": 1, "p": 2}]}, "type": "array"}}}}}]}"""
    b = b"""{"tools":[{"function":{"parameters":{"properties":{"y":{"type":"array","items":
        {"a":[{"p":2,"q":1}],"b":1}},"x":{"minimum":0,"type":"integer"}},"type":"object"},
        "name":"f"},"type":"function"}],"model":"m"}"""
    assert normalized_body(a) == normalized_body(b)
    assert key(request(body=a)) == key(request(body=b))
    # ... while the order of array items is meaning.
    c = b.replace(b'[{"p":2,"q":1}]', b'[{"p":2},{"q":1}]')
    d = b.replace(b'[{"p":2,"q":1}]', b'[{"q":1},{"p":2}]')
    assert normalized_body(c) != normalized_body(d)


def test_whitespace_and_indentation() -> None:
    compact = json.dumps(CHAT, separators=(",", ":")).encode()
    for body in (
        json.dumps(CHAT).encode(),
        json.dumps(CHAT, indent=4).encode(),
        json.dumps(CHAT, indent="\t").encode(),
        b"\r\n  " + json.dumps(CHAT, indent=1).encode().replace(b"\n", b"\r\n") + b"\n\n",
    ):
        assert key(request(body=body)) == key(request(body=compact))


@pytest.mark.parametrize(
    ("escaped", "literal"),
    [
        (rb'{"content": "caf\u00e9"}', '{"content": "café"}'.encode()),
        (rb'{"content": "caf\u00E9"}', '{"content": "café"}'.encode()),
        (rb'{"content": "\ud83d\ude00"}', '{"content": "😀"}'.encode()),
        (rb'{"content": "a\/b"}', b'{"content": "a/b"}'),
        (rb'{"content": "\u0041"}', b'{"content": "A"}'),
        (rb'{"\u006dodel": "x"}', b'{"model": "x"}'),
    ],
)
def test_escapes_are_resolved(escaped: bytes, literal: bytes) -> None:
    assert normalized_body(escaped) == normalized_body(literal)
    assert key(request(body=escaped)) == key(request(body=literal))


def test_utf16_and_bom_bodies_mean_the_same_json() -> None:
    text = json.dumps(CHAT, ensure_ascii=False)
    assert normalized_body(text.encode("utf-16")) == normalized_body(text.encode())
    assert normalized_body(b"\xef\xbb\xbf" + text.encode()) == normalized_body(text.encode())


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (b"[NaN]", b'["NaN"]'),
        (b"[Infinity]", b'["Infinity"]'),
        (b"[Infinity]", b"[-Infinity]"),
        (b"[true]", b'["true"]'),
        (b"[true]", b"[1]"),
        (b"[false]", b"[0]"),
        (b"[null]", b"[]"),
        (b'{"a": null}', b"{}"),
        (b"[1]", b'["1"]'),
        (b'{"a": []}', b'{"a": {}}'),
        (b'[""]', b"[]"),
        (b'"\\u0000"', b'""'),
    ],
)
def test_values_of_different_types_differ(a: bytes, b: bytes) -> None:
    assert normalized_body(a) != normalized_body(b)


def test_duplicate_member_names_are_not_merged() -> None:
    # RFC 8259: their meaning is up to the parser (first or last wins), so such a
    # body keys by its bytes rather than sharing an entry with either reading.
    assert normalized_body(b'{"a": 1, "a": 2}') != normalized_body(b'{"a": 2}')
    assert normalized_body(b'{"a": 1, "a": 2}') != normalized_body(b'{"a": 1}')
    assert normalized_body(b'[{"a": 1, "a": 2}]').startswith(b"raw:")
    assert normalized_body(b'{"a": 1, "a": 2}') != normalized_body(b'{"a": 2, "a": 1}')


# --- bodies that are not (sane) JSON ---------------------------------------------


@given(st.binary(), st.binary())
def test_raw_bodies_never_collide(a: bytes, b: bytes) -> None:
    assume(a != b)
    norm_a, norm_b = normalized_body(a), normalized_body(b)
    if norm_a.startswith(b"raw:") or norm_b.startswith(b"raw:"):
        assert norm_a != norm_b
        assert key(request(body=a)) != key(request(body=b))


@given(st.binary())
def test_any_body_normalises_without_raising(body: bytes) -> None:
    norm = normalized_body(body)
    assert norm.startswith((b"empty:", b"json:", b"raw:"))
    if norm.startswith(b"raw:"):
        assert norm == b"raw:" + body


@given(json_values)
def test_raw_body_never_collides_with_a_json_one(value: Any) -> None:
    text = canon(value).encode("ascii")
    body = json.dumps(value).encode()
    for imposter in (b"json:" + text, b"raw:" + text, text + b"}", b"json:" + body):
        assert normalized_body(imposter) != normalized_body(body)
        assert key(request(body=imposter)) != key(request(body=body))


def test_non_json_bodies_are_hashed_raw() -> None:
    a = b"input=hello&model=m"
    b = b"input=hello&model=n"
    assert normalized_body(a) == b"raw:" + a
    assert key(request(body=a)) != key(request(body=b))
    # Raw bodies are exact: no whitespace folding either.
    assert key(request(body=b"not json")) != key(request(body=b"not  json"))
    assert key(request(body=b"\xff\xfe\x00")) != key(request(body=b"\xff\xfe\x01"))


def test_empty_body_is_its_own_thing() -> None:
    keys = {key(request(body=body)) for body in (b"", b" ", b"{}", b"[]", b'""', b"null")}
    assert len(keys) == 6


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b"{" * 100_000,
        b'{"a":' * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"model": "m", "messages": [',
        b'{"model": "m",}',
        b"{'model': 'm'}",
        b'"\\ud800"',
        b'"\\x"',
        b"\xff\xfe\xfd",
        b"\x00",
        b"1e999999999",
        b"1e9999999999999999999",
        b"-1e-9999999999999999999999999",
        b'{"temperature": 1e999999999999999999999999999999999999999}',
        b"NaN",
        b"--1",
        b"01",
    ],
)
def test_hostile_bodies_do_not_raise(body: bytes) -> None:
    started = time.monotonic()
    result = key(request(body=body))
    assert time.monotonic() - started < 5
    assert result == key(request(body=body))


def test_huge_exponents() -> None:
    started = time.monotonic()
    assert normalized_body(b"[1e999999999]") == b"json:[1e999999999]"
    assert normalized_body(b"[10e999999999]") == normalized_body(b"[1e1000000000]")
    # Beyond what Decimal holds: no exception, keyed by the exact bytes.
    huge = [b"[1e9999999999999999999]", b"[2e9999999999999999999]", b"[1e9999999999999999998]"]
    assert len({normalized_body(body) for body in huge}) == 3
    assert len({key(request(body=body)) for body in huge}) == 3
    with pytest.raises(ValueError):  # the documented contract: ValueError, nothing else
        parse_json(b"[1e9999999999999999999]")
    assert time.monotonic() - started < 5


def _at_stack_depth(frames: int, fn: Callable[[], bytes]) -> bytes:
    return fn() if frames == 0 else _at_stack_depth(frames - 1, fn)


@pytest.mark.parametrize("depth", [1, 50, 127, 128, 129, 300, 700, 990, 5000])
def test_nesting_depth_gives_the_same_key_from_any_caller(depth: int) -> None:
    body = b"[" * depth + b"1" + b"]" * depth
    results = {_at_stack_depth(frames, lambda: normalized_body(body)) for frames in (0, 300, 600)}
    assert len(results) == 1
    (result,) = results
    assert result.startswith(b"json:" if depth <= 128 else b"raw:")


# --- SDK noise headers ------------------------------------------------------------

NOISE = {
    "user-agent": "OpenAI/Python 1.51.0",
    "x-stainless-retry-count": "2",
    "x-stainless-timeout": "600",
    "x-stainless-read-timeout": "600",
    "x-stainless-os": "Linux",
    "x-stainless-lang": "python",
    "x-stainless-arch": "x64",
    "x-stainless-runtime": "CPython",
    "x-stainless-runtime-version": "3.12.4",
    "x-stainless-package-version": "1.51.0",
    "x-stainless-async": "async:asyncio",
    "x-stainless-helper-method": "beta.chat.completions.parse",
    "accept-encoding": "gzip, deflate, br, zstd",
    "content-length": "123",
    "connection": "keep-alive",
    "host": "localhost:8080",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "congo=t61rcWkgMzE",
    "idempotency-key": "stainless-python-retry-5b3c1f1e",
    "x-request-id": "req_123",
    "x-forwarded-for": "10.0.0.1",
    "content-type": "application/json; charset=utf-8",
}


@given(
    st.dictionaries(
        st.sampled_from(sorted(NOISE))
        | texts.map(lambda s: "x-stainless-" + s.lower())
        | st.sampled_from(["idempotency-key", "user-agent"]),
        st.text(max_size=40),
    )
)
def test_noise_headers_never_change_key(noise: dict[str, str]) -> None:
    base = request()
    assert key(request(headers={**noise, **base.headers})) == key(base)
    assert key(request(headers=noise)) == key(request(headers={}))


@given(
    st.dictionaries(
        texts.map(str.lower).filter(
            lambda name: (
                name not in DEFAULT_POLICY.varying_headers
                and name not in DEFAULT_POLICY.credential_headers
                and name != "accept"
            )
        ),
        st.text(max_size=40),
        max_size=6,
    )
)
def test_unlisted_headers_never_change_key(extra: dict[str, str]) -> None:
    base = request()
    assert key(request(headers={**extra, **base.headers})) == key(base)


def test_real_sdk_header_set_changes_nothing() -> None:
    plain = request(headers={"authorization": f"Bearer {TOKEN}"})
    noisy = request(headers={**NOISE, "authorization": f"Bearer {TOKEN}"})
    retried = request(
        headers={
            **NOISE,
            "authorization": f"Bearer {TOKEN}",
            "x-stainless-retry-count": "0",
            "idempotency-key": "stainless-python-retry-00000000",
            "user-agent": "AsyncOpenAI/Python 0.1",
        }
    )
    assert key(plain) == key(noisy) == key(retried)


def test_idempotency_key_does_not_vary() -> None:
    assert "idempotency-key" not in DEFAULT_POLICY.varying_headers
    keys = {
        key(with_headers(idempotency_key=value))
        for value in ("a", "stainless-python-retry-1", "stainless-python-retry-2")
    }
    assert keys == {key(request())}


def test_header_map_order_does_not_matter() -> None:
    headers = {**NOISE, "openai-organization": "org-1", "anthropic-beta": "x"}
    reversed_headers = dict(reversed(list(headers.items())))
    assert key(request(headers=headers)) == key(request(headers=reversed_headers))


# --- varying headers and Accept ---------------------------------------------------


@pytest.mark.parametrize("name", sorted(DEFAULT_POLICY.varying_headers))
def test_varying_headers_change_key(name: str) -> None:
    base = key(request())
    a = key(request(headers={**request().headers, name: "value-a"}))
    b = key(request(headers={**request().headers, name: "value-b"}))
    assert len({base, a, b}) == 3
    # Only whitespace runs are folded.
    assert key(request(headers={**request().headers, name: "  value-a "})) == a
    assert key(request(headers={**request().headers, name: "value  a"})) == key(
        request(headers={**request().headers, name: "value a"})
    )


def test_anthropic_versions_and_betas() -> None:
    def anthropic(**extra: str) -> KeyRequest:
        return request(
            path="/v1/messages",
            headers={"x-api-key": TOKEN, **{k.replace("_", "-"): v for k, v in extra.items()}},
        )

    keys = {
        key(anthropic()),
        key(anthropic(anthropic_version="2023-06-01")),
        key(anthropic(anthropic_version="2023-01-01")),
        key(anthropic(anthropic_version="2023-06-01", anthropic_beta="prompt-caching-2024-07-31")),
        key(anthropic(anthropic_version="2023-06-01", anthropic_beta="output-128k-2025-02-19")),
    }
    assert len(keys) == 5


@pytest.mark.parametrize(
    "accept",
    [
        "text/event-stream",
        "TEXT/EVENT-STREAM",
        "application/json, text/event-stream",
        "text/event-stream; charset=utf-8",
        "application/vnd.amazon.eventstream",
    ],
)
def test_accept_stream_changes_key(accept: str) -> None:
    assert key(with_headers(accept=accept)) != key(request())
    assert key(with_headers(accept=accept)) == key(with_headers(accept="text/event-stream"))


@pytest.mark.parametrize("accept", ["application/json", "*/*", "", "application/json; q=1"])
def test_accept_non_stream_does_not_change_key(accept: str) -> None:
    assert key(with_headers(accept=accept)) == key(request())


# --- everything that does change the answer -----------------------------------------

CHANGES: dict[str, dict[str, Any]] = {
    "model": {"body": chat(model="gpt-4o")},
    "model case": {"body": chat(model="GPT-4o-mini")},
    "message content": {
        "body": chat(messages=[CHAT["messages"][0], {"role": "user", "content": "Say hi!"}])
    },
    "message role": {
        "body": chat(messages=[CHAT["messages"][0], {"role": "assistant", "content": "Say hi"}])
    },
    "message order": {"body": chat(messages=list(reversed(CHAT["messages"])))},
    "message dropped": {"body": chat(messages=CHAT["messages"][1:])},
    "trailing space in content": {
        "body": chat(messages=[CHAT["messages"][0], {"role": "user", "content": "Say hi "}])
    },
    "temperature": {"body": chat(temperature=0.3)},
    "temperature dropped": {"body": chat(temperature=None)},
    "max_tokens": {"body": chat(max_tokens=17)},
    "extra parameter": {"body": chat(top_p=0.9)},
    "seed": {"body": chat(seed=1)},
    "stream": {"body": chat(stream=True)},
    "method": {"method": "GET"},
    "path": {"path": "/v1/completions"},
    "path trailing slash": {"path": "/v1/chat/completions/"},
    "query value": {"query": "api-version=2024-02-01"},
    "namespace": {"namespace": "experiment-2"},
    "credential": {"headers": {"authorization": "Bearer sk-proj-another"}},
    "no credential": {"headers": {}},
    "x-api-key credential": {"headers": {"x-api-key": "sk-ant-another"}},
    "api-key credential": {"headers": {"api-key": "azure-another"}},
    "organization": {"headers": {**request().headers, "openai-organization": "org-x"}},
    "project": {"headers": {**request().headers, "openai-project": "proj_x"}},
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_meaningful_changes_change_key(change: str) -> None:
    assert key(request(**CHANGES[change])) != key(request())


def test_all_changes_are_pairwise_distinct() -> None:
    keys = [key(request(**fields)) for fields in CHANGES.values()]
    assert len(set(keys)) == len(keys)


def test_numerically_equal_parameters_do_not_change_key() -> None:
    assert key(request(body=chat(temperature=1))) == key(request(body=chat(temperature=1.0)))
    assert key(request(body=chat(max_tokens=16.0))) == key(request())


def test_method_case_is_folded() -> None:
    assert key(request(method="post")) == key(request(method="POST"))


def test_fields_are_framed() -> None:
    # Concatenating fields without framing would make these collide.
    assert key(request(path="/v1", namespace="ab")) != key(request(path="/v1a", namespace="b"))
    assert key(request(method="POST", path="/x")) != key(request(method="POS", path="T/x"))
    assert key(request(namespace="a", body=b"raw:q")) != key(request(namespace="araw:", body=b"q"))


@given(st.text(max_size=20), st.text(max_size=20))
def test_namespaces_separate_entries(a: str, b: str) -> None:
    assume(a != b)
    assert key(request(namespace=a)) != key(request(namespace=b))


@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=30))
def test_message_content_always_matters(a: str, b: str) -> None:
    assume(a != b)

    def body(content: str) -> bytes:
        return chat(messages=[{"role": "user", "content": content}])

    assert key(request(body=body(a))) != key(request(body=body(b)))


def test_key_is_deterministic() -> None:
    assert key(request()) == key(request())
    assert key(request(headers=dict(request().headers))) == key(request())


# --- credentials ------------------------------------------------------------------


# (pytest-twisted cannot combine @given with @pytest.mark.parametrize: draw the header.)
@given(st.sampled_from(["authorization", "x-api-key", "api-key"]), tokens, tokens)
def test_different_credentials_different_fingerprints(header: str, a: str, b: str) -> None:
    assume(a != b)

    def sent(token: str) -> KeyRequest:
        value = f"Bearer {token}" if header == "authorization" else token
        return request(headers={header: value})

    fp_a, fp_b = credential_fingerprint(sent(a), SECRET), credential_fingerprint(sent(b), SECRET)
    assert HEX64.fullmatch(fp_a)
    assert fp_a != fp_b
    assert key(sent(a)) != key(sent(b))


@pytest.mark.parametrize(
    "header",
    ["authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie"],
)
def test_every_credential_header_is_fingerprinted_whatever_the_provider(header: str) -> None:
    for policy in {provider.key_policy for provider in PROVIDERS}:
        a = request(headers={header: "secret-a"})
        b = request(headers={header: "secret-b"})
        fp_a = credential_fingerprint(a, SECRET, policy)
        assert fp_a and fp_a != credential_fingerprint(b, SECRET, policy)
        assert key(a, policy=policy) != key(b, policy=policy)
        assert "secret-a" not in repr(stored_request(a, policy))


def test_no_credential_no_fingerprint() -> None:
    bare = request(headers={"content-type": "application/json", **NOISE})
    assert credential_values(bare) == ()
    assert credential_fingerprint(bare, SECRET) == ""
    assert credential_fingerprint(request(headers={"authorization": ""}), SECRET) == ""
    assert credential_fingerprint(request(), SECRET) != ""
    # Anonymous requests do not share entries with authenticated ones.
    assert key(bare) != key(request())


@given(tokens)
def test_bearer_and_api_key_headers_are_one_credential(token: str) -> None:
    forms = [
        {"authorization": f"Bearer {token}"},
        {"authorization": f"bearer {token}"},
        {"authorization": f"  Bearer   {token}  "},
        {"x-api-key": token},
        {"api-key": token},
        {"x-api-key": token, "authorization": f"Bearer {token}"},
    ]
    fingerprints = {credential_fingerprint(request(headers=form), SECRET) for form in forms}
    assert len(fingerprints) == 1
    assert len({key(request(headers=form)) for form in forms}) == 1


def test_other_schemes_keep_their_scheme() -> None:
    basic = request(headers={"authorization": "Basic dXNlcjpwYXNz"})
    bare = request(headers={"x-api-key": "dXNlcjpwYXNz"})
    assert credential_fingerprint(basic, SECRET) != credential_fingerprint(bare, SECRET)


def test_two_credentials_differ_from_either() -> None:
    both = request(headers={"authorization": "Bearer sk-one", "x-api-key": "sk-two"})
    one = request(headers={"authorization": "Bearer sk-one"})
    two = request(headers={"x-api-key": "sk-two"})
    assert len({key(both), key(one), key(two)}) == 3


@given(tokens, st.sampled_from(["authorization", "x-api-key", "api-key"]))
def test_credential_never_shows(token: str, header: str) -> None:
    value = f"Bearer {token}" if header == "authorization" else token
    req = request(headers={header: value})
    fingerprint = credential_fingerprint(req, SECRET)
    derived = key(req)
    assert token not in fingerprint
    assert token not in derived


@given(tokens, st.binary(min_size=16, max_size=32), st.binary(min_size=16, max_size=32))
def test_fingerprint_depends_on_the_secret(token: str, s1: bytes, s2: bytes) -> None:
    assume(s1 != s2)
    req = request(headers={"authorization": f"Bearer {token}"})
    assert credential_fingerprint(req, s1) != credential_fingerprint(req, s2)
    assert key(req, s1) != key(req, s2)


def test_fingerprint_is_a_keyed_hmac_not_a_plain_hash() -> None:
    req = request()
    fingerprint = credential_fingerprint(req, SECRET)
    for guess in (TOKEN, f"Bearer {TOKEN}", json.dumps([["token", TOKEN]])):
        assert fingerprint != hashlib.sha256(guess.encode()).hexdigest()
    assert credential_fingerprint(req, SECRET) == fingerprint


# --- the query string -------------------------------------------------------------

pairs = st.lists(st.tuples(texts.filter(bool), texts), max_size=6)


def encode_pair(name: str, value: str, style: int) -> str:
    if style == 0:
        return f"{quote(name, safe='')}={quote(value, safe='')}"
    if style == 1:
        return f"{quote_plus(name)}={quote_plus(value)}"
    # Every byte percent-encoded, %41 for A and all.
    return "=".join("".join(f"%{byte:02X}" for byte in part.encode()) for part in (name, value))


def by_name(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted(items, key=lambda pair: pair[0])  # stable: a name's values keep their order


@given(pairs, st.randoms(use_true_random=False), st.lists(st.integers(0, 2), min_size=12))
def test_query_spelling_and_name_order_do_not_matter(
    items: list[tuple[str, str]], rnd: random.Random, styles: list[int]
) -> None:
    original = "&".join(encode_pair(n, v, 0) for n, v in items)
    # Shuffle the order of names but keep each name's values in their order.
    names = list(dict.fromkeys(name for name, _ in items))
    rnd.shuffle(names)
    regrouped = [pair for name in names for pair in items if pair[0] == name]
    respelled = "&".join(
        encode_pair(n, v, styles[i % len(styles)]) for i, (n, v) in enumerate(regrouped)
    )
    assert normalized_query(respelled) == normalized_query(original)
    assert key(request(query=respelled)) == key(request(query=original))


@given(pairs, pairs)
def test_query_normalisation_is_exact(a: list[tuple[str, str]], b: list[tuple[str, str]]) -> None:
    qa = "&".join(encode_pair(n, v, 0) for n, v in a)
    qb = "&".join(encode_pair(n, v, 0) for n, v in b)
    assert (normalized_query(qa) == normalized_query(qb)) == (by_name(a) == by_name(b))


def test_query_examples() -> None:
    assert normalized_query("a=%41") == normalized_query("a=A")
    assert normalized_query("%61=A") == normalized_query("a=A")
    assert normalized_query("q=a+b") == normalized_query("q=a%20b")
    assert normalized_query("x=1&y=2") == normalized_query("y=2&x=1")
    assert normalized_query("a=1&b=2&a=3") == normalized_query("b=2&a=1&a=3")
    # Repeated values of one name keep their order.
    assert normalized_query("a=1&a=2") != normalized_query("a=2&a=1")
    assert key(request(query="a=1&a=2")) != key(request(query="a=2&a=1"))
    # Values matter, and so does a literal plus.
    assert normalized_query("a=1") != normalized_query("a=2")
    assert normalized_query("q=a+b") != normalized_query("q=a%2Bb")
    assert normalized_query("") != normalized_query("a=")


def test_undecodable_escapes_stay_distinct() -> None:
    # Invalid UTF-8 escapes used to decode to U+FFFD alike and share a key.
    assert normalized_query("x=%FF") != normalized_query("x=%FE")
    assert normalized_query("x=%FF") != normalized_query("x=%EF%BF%BD")
    assert key(request(query="x=%FF")) != key(request(query="x=%FE"))
    assert normalized_query("x=%C3%A9").isascii()
    assert normalized_query("x=%C3%A9") == normalized_query("x=é")


# --- credentials in the query ------------------------------------------------------

GEMINI = KeyPolicy(credential_query_params=frozenset({"key"}))


def gemini(query: str, **changes: Any) -> KeyRequest:
    fields: dict[str, Any] = {
        "path": "/v1beta/models/gemini-1.5-flash:generateContent",
        "headers": {"content-type": "application/json"},
    }
    return request(query=query, **{**fields, **changes})


def test_query_credential_position_does_not_matter() -> None:
    assert key(gemini("key=A&alt=sse"), policy=GEMINI) == key(
        gemini("alt=sse&key=A"), policy=GEMINI
    )


def test_query_credential_changes_key_through_fingerprint() -> None:
    a, b = gemini("key=A&alt=sse"), gemini("key=B&alt=sse")
    assert key(a, policy=GEMINI) != key(b, policy=GEMINI)
    assert credential_fingerprint(a, SECRET, GEMINI) != credential_fingerprint(b, SECRET, GEMINI)
    assert credential_fingerprint(gemini("alt=sse"), SECRET, GEMINI) == ""
    assert key(gemini("alt=sse"), policy=GEMINI) != key(a, policy=GEMINI)
    # Other parameters still count.
    assert key(gemini("key=A&alt=json"), policy=GEMINI) != key(a, policy=GEMINI)


@given(tokens)
def test_query_credential_is_not_part_of_the_query(token: str) -> None:
    query = f"alt=sse&key={quote(token)}"
    normalized = normalized_query(query, GEMINI.credential_query_params)
    assert token not in normalized
    assert normalized == normalized_query("alt=sse")
    req = gemini(query)
    assert token not in key(req, policy=GEMINI)
    assert token not in credential_fingerprint(req, SECRET, GEMINI)
    # Every provider's policy takes key= for a credential; one that says
    # otherwise keeps it as an ordinary parameter, with no fingerprint.
    assert credential_fingerprint(req, SECRET) == credential_fingerprint(req, SECRET, GEMINI)
    plain = KeyPolicy(credential_query_params=frozenset())
    assert token in normalized_query(query)
    assert credential_fingerprint(req, SECRET, plain) == ""


@given(tokens)
def test_query_and_header_credentials_are_one_credential(token: str) -> None:
    in_query = gemini(f"key={quote(token)}")
    in_header = gemini("", headers={"x-api-key": token})
    assert credential_fingerprint(in_query, SECRET, GEMINI) == credential_fingerprint(
        in_header, SECRET, GEMINI
    )
    assert key(in_query, policy=GEMINI) == key(in_header, policy=GEMINI)


def test_query_credential_spelling() -> None:
    assert key(gemini("key=%41"), policy=GEMINI) == key(gemini("key=A"), policy=GEMINI)
    assert key(gemini("%6Bey=A"), policy=GEMINI) == key(gemini("key=A"), policy=GEMINI)
    assert key(gemini("key=%FF"), policy=GEMINI) != key(gemini("key=%FE"), policy=GEMINI)


@given(st.text() | st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)))
def test_strings_are_quoted_exactly_as_json_dumps_quotes_them(text: str) -> None:
    # Keys already in databases were made with json.dumps: the spelling must not move.
    from stasis.canonical import quoted

    assert quoted(text) == json.dumps(text)


def test_a_pinned_body_keeps_its_canonical_spelling() -> None:
    body = '{"b": "\u00e9\\n\\"q\\"", "a": [1.50, "x", true, null], "c": {"z": 0, "y": -0.0}}'
    assert normalized_body(body.encode()) == (
        b'json:{"a":[15e-1,"x",true,null],"b":"\\u00e9\\n\\"q\\"","c":{"y":0,"z":0}}'
    )


def test_the_derivation_is_pinned() -> None:
    """Keys in existing databases must keep matching: a change here is a KEY_VERSION bump."""
    request = KeyRequest(
        method="POST",
        path="/v1/chat/completions",
        query="b=1&a=2",
        headers={
            "authorization": "Bearer x",
            "anthropic-version": "1",
            "accept": "text/event-stream",
        },
        body=b'{"a": 1.0}',
        namespace="n",
    )
    assert derive_key(request, b"s" * 32) == (
        "50291e0ee927d3531a8802f712bdb62ee839b827ff3f85269a4d04d9998ca2d8"
    )
    keys = scoped_keys(request, b"s" * 32)
    assert keys.own == derive_key(request, b"s" * 32)
    assert keys.shared == derive_key(
        evolve(request, headers={**request.headers, "authorization": ""}), b""
    )
    assert keys.tried == (keys.own, keys.shared)
    assert scoped_keys(request, b"s" * 32, scope=CredentialScope.SHARED).tried == (keys.shared,)
