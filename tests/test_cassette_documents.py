"""
Cassette documents, pure: an entry becomes a readable document and comes back byte for byte.

Property tests generate entries the way upstreams answer (JSON in the styles
servers write and in others, text, binary, SSE streams with every line end,
AWS event streams, timelines that fit the events and that do not) and check
that the document, through any JSON library, rebuilds the entry exactly.
"""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
import zlib
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stasis.cassettes import FORMAT_VERSION, CassetteError, entry_document, entry_from_document
from stasis.cassettes._json import exact_json, loose_json, parse_style
from stasis.headers import for_export
from stasis.model import Entry, StoredRequest, TokenUsage
from stasis.streams.eventstream import encode_message
from stasis.times import format_time, parse_time
from tests import eventstream as reference
from tests.store_support import key, make_entry

# Strategies

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def json_bytes(draw: st.DrawFn) -> bytes:
    """JSON as servers write it: in the styles stasis knows, and in others (indent 4, tabs)."""
    value = draw(json_values)
    indent = draw(st.sampled_from([None, None, 2, 4, "\t"]))
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (",", ": ")]))
    text = json.dumps(value, indent=indent, separators=separators, ensure_ascii=draw(st.booleans()))
    return (text + draw(st.sampled_from(["", "", "\n", " "]))).encode("utf-8", "surrogatepass")


bodies = st.one_of(
    json_bytes(),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
    st.sampled_from([b'{"a":1.50}', b'{"a":1e400}', b'{"a":1,"a":2}', b"-0", b" {}", b"[1,]"]),
)

line_text = st.text(alphabet=st.characters(blacklist_characters="\r\n", codec="utf-8"), max_size=20)


@st.composite
def sse_event(draw: st.DrawFn) -> bytes:
    eol = draw(st.sampled_from(["\n", "\n", "\r\n", "\r"]))
    shape = draw(st.sampled_from(["json", "json", "text", "comment", "id"]))
    head = f"event: {draw(line_text)}{eol}" if draw(st.booleans()) else ""
    if shape == "json":
        data = json.dumps(
            draw(json_values), separators=draw(st.sampled_from([(",", ":"), (", ", ": ")]))
        )
        lines = [data]
    elif shape == "text":
        lines = draw(st.lists(line_text, min_size=1, max_size=3))
    elif shape == "comment":
        return f": {draw(line_text)}{eol}{eol}".encode()
    else:
        return f"id: 7{eol}data: {draw(line_text)}{eol}{eol}".encode()
    return (head + "".join(f"data: {line}{eol}" for line in lines) + eol).encode()


@st.composite
def sse_stream(draw: st.DrawFn) -> tuple[bytes, tuple[tuple[int, int], ...] | None]:
    events = draw(st.lists(sse_event(), min_size=1, max_size=6))
    tail = draw(st.sampled_from([b"", b"", b"data: {", b"\xff\xfe"]))
    body = b"".join(events) + tail
    ends, offset = [], 0
    for event in events:
        offset += len(event)
        ends.append(offset)
    timing = draw(st.sampled_from(["per event", "per event", "other", "none", "empty"]))
    timeline: tuple[tuple[int, int], ...] | None
    if timing == "per event":
        times = draw(st.lists(st.integers(0, 10**6), min_size=len(ends), max_size=len(ends)))
        timeline = tuple(zip(ends, sorted(times), strict=True))
    elif timing == "other":
        timeline = tuple(draw(st.lists(st.tuples(st.integers(0, 500), st.integers(0, 10**6)))))
    else:
        timeline = None if timing == "none" else ()
    return body, timeline


hex_keys = st.binary(min_size=32, max_size=32).map(bytes.hex)
header_names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True)
header_values = st.text(
    alphabet=st.characters(max_codepoint=255, blacklist_characters="\r\n\0"), max_size=20
)
raw_headers = st.lists(
    st.tuples(header_names, header_values).map(
        lambda pair: (pair[0].encode("latin-1"), pair[1].encode("latin-1"))
    ),
    max_size=4,
)
millis = st.integers(min_value=0, max_value=4_000_000_000_000)

requests = st.none() | st.builds(
    StoredRequest,
    query=st.text(max_size=20),
    headers=st.lists(st.tuples(header_names.map(str.lower), header_values), max_size=3).map(tuple),
    body=bodies,
)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    kind = draw(st.sampled_from(["plain", "plain", "sse"]))
    timeline = None
    if kind == "sse":
        content_type = draw(st.sampled_from([b"text/event-stream", b"text/event-stream; utf-8"]))
        body, timeline = draw(sse_stream())
    else:
        content_type = draw(st.sampled_from([b"application/json", b"text/plain", b"image/png"]))
        body = draw(bodies)
    headers = [(b"content-type", content_type), *draw(raw_headers)]
    own_key = draw(hex_keys)
    return Entry(
        key=own_key,
        status=draw(st.integers(100, 599)),
        headers=tuple(draw(st.permutations(headers))),
        body=body,
        created_at=draw(millis) / 1000,
        method=draw(st.sampled_from(["POST", "GET"])),
        path=draw(st.text(max_size=20)),
        provider=draw(st.sampled_from(["openai", "anthropic", "bedrock", "gemini", ""])),
        model=draw(st.none() | st.text(max_size=10)),
        namespace=draw(st.text(max_size=8)),
        usage=TokenUsage(*draw(st.tuples(*[st.integers(0, 10**9)] * 3))),
        expires_at=draw(st.none() | millis.map(lambda ms: ms / 1000)),
        last_hit_at=draw(st.none() | st.floats(0, 2e9)),
        hit_count=draw(st.integers(0, 100)),
        timeline=timeline,
        shared_key=draw(st.sampled_from(["", own_key]) | hex_keys),
        request=draw(requests),
    )


def through_json(entry: Entry) -> Entry:
    """The entry as a document, written and read by the standard library, and back."""
    return entry_from_document(json.loads(json.dumps(entry_document(entry))), "test:1")


# Round trips


@given(entries())
def test_an_entry_comes_back_exactly_less_its_hits_and_identifying_headers(entry: Entry) -> None:
    back = through_json(entry)
    assert back.body == entry.body
    assert back.timeline == entry.timeline
    assert back.headers == for_export(entry.headers)
    assert (back.key, back.shared_key) == (entry.portable_key, entry.portable_key)
    assert (back.status, back.method, back.path) == (entry.status, entry.method, entry.path)
    assert (back.provider, back.model, back.namespace) == (
        entry.provider,
        entry.model,
        entry.namespace,
    )
    assert back.usage == entry.usage
    assert (back.created_at, back.expires_at) == (entry.created_at, entry.expires_at)
    assert (back.hit_count, back.last_hit_at) == (0, None)
    assert (back.request is None) == (entry.request is None)
    # Exported again, it is the same document: export, import, export is a fixed point.
    assert entry_document(back) == entry_document(entry)


@given(entries())
def test_a_request_body_keeps_its_bytes_or_at_least_its_json_value(entry: Entry) -> None:
    back = through_json(entry)
    if entry.request is None or back.request is None:
        return
    if back.request.body != entry.request.body:
        # Shown as JSON though no style rebuilt it: the same JSON, numbers included.
        assert exact_json(entry.request.body) is None
        exact = {"parse_float": Decimal}
        assert json.loads(back.request.body, **exact) == json.loads(entry.request.body, **exact)


@given(json_values, st.sampled_from(["compact", "spaced", "indent2"]), st.booleans(), st.booleans())
def test_json_in_any_known_style_is_shown_as_json_and_rebuilt(
    value: Any, layout: str, ascii: bool, newline: bool
) -> None:
    flags = [flag for flag, on in (("ascii", ascii), ("newline", newline)) if on]
    style = parse_style("+".join([layout, *flags]))
    assert style is not None
    try:
        raw = style.render(value)
    except ValueError:  # a lone surrogate, unencodable without escaping
        return
    found = exact_json(raw)
    assert found is not None
    assert found[1].render(found[0]) == raw


def test_json_that_no_style_rebuilds_is_not_shown_as_json() -> None:
    for raw in [b'{"a":1.50}', b'{"a": 1E5}', b'{"a":1,"a":2}', b"-0", b" {}", b'{"a":1e400}']:
        assert exact_json(raw) is None, raw


def test_a_request_body_keeps_numbers_a_float_cannot_hold() -> None:
    found = loose_json(b'{"n": 1e400, "x": 0.10, "y": 1E5}')
    assert found is not None
    value, style = found
    assert style is None
    assert value == {"n": 10**400, "x": 0.1, "y": 100000.0}
    assert loose_json(b'{"x": 0.1000000000000000000001}') is None


@given(millis)
def test_times_are_milliseconds_both_ways(ms: int) -> None:
    text = format_time(ms / 1000)
    assert round(parse_time(text) * 1000) == ms
    assert format_time(parse_time(text)) == text


def test_times_read_like_iso_8601() -> None:
    assert format_time(1_705_314_600.0) == "2024-01-15T10:30:00.000Z"
    assert format_time(1_705_314_600.0006) == "2024-01-15T10:30:00.001Z"
    assert parse_time("2024-01-15T10:30:00.250Z") == 1_705_314_600.25


# What a document looks like


def test_a_json_answer_reads_as_json_with_its_style() -> None:
    entry = make_entry(
        1,
        headers=((b"content-type", b"application/json"), (b"x-request-id", b"req_1")),
        body=b'{\n  "answer": "h\\u00e9",\n  "n": [\n    1\n  ]\n}\n',
        created_at=1_705_314_600.0,
        shared_key=key("shared"),
        request=StoredRequest(headers=(("anthropic-version", "2023-06-01"),), body=b'{"q":1}'),
    )
    assert entry_document(entry) == {
        "stasis": FORMAT_VERSION,
        "key": key("shared"),
        "created_at": "2024-01-15T10:30:00.000Z",
        "expires_at": None,
        "namespace": "",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "method": "POST",
        "path": "/v1/chat/completions",
        "usage": {"input": 10, "output": 5, "total": 15},
        "request": {
            "query": "",
            "headers": [["anthropic-version", "2023-06-01"]],
            "body": {"q": 1},
        },
        "response": {
            "status": 200,
            "headers": [["content-type", "application/json"]],
            "body": {"answer": "hé", "n": [1]},
            "body_style": "indent2+ascii+newline",
        },
    }


def test_an_sse_answer_reads_as_its_events_with_their_times() -> None:
    events = [
        b'event: message_start\ndata: {"type":"message_start"}\n\n',
        b"data: [DONE]\n\n",
        b": keep-alive\n\n",
        b'data: {"candidates": []}\r\n\r\n',
    ]
    ends = [sum(len(e) for e in events[: i + 1]) for i in range(len(events))]
    entry = make_entry(
        2,
        headers=((b"content-type", b"text/event-stream; charset=utf-8"),),
        body=b"".join(events),
        timeline=tuple(zip(ends, [0, 12, 30, 31], strict=True)),
    )
    document = entry_document(entry)
    assert document["response"]["events"] == [
        {"event": "message_start", "data": {"type": "message_start"}, "ms": 0},
        {"text": "[DONE]", "ms": 12},
        {"raw": ": keep-alive\n\n", "ms": 30},
        {"data": {"candidates": []}, "style": "spaced", "eol": "crlf", "ms": 31},
    ]
    assert "timeline" not in document["response"]
    assert through_json(entry).timeline == entry.timeline


def test_a_timeline_off_the_event_boundaries_is_kept_as_it_is() -> None:
    body = b"data: 1\n\ndata: 2\n\n"
    entry = make_entry(3, headers=((b"content-type", b"text/event-stream"),), body=body,
                       timeline=((5, 1), (18, 2)))  # fmt: skip
    response = entry_document(entry)["response"]
    assert response["timeline"] == [[5, 1], [18, 2]]
    assert all("ms" not in event for event in response["events"])
    assert through_json(entry).timeline == ((5, 1), (18, 2))


def test_text_and_binary_answers() -> None:
    text = entry_document(make_entry(4, body=b"plain \xc3\xa9"))["response"]
    assert text["body_text"] == "plain é"
    binary = entry_document(make_entry(5, body=b"\x89PNG\xff"))["response"]
    assert base64.b64decode(binary["body_base64"]) == b"\x89PNG\xff"
    empty = entry_document(make_entry(6, body=b""))["response"]
    assert not {"body", "body_text", "body_base64"} & set(empty)


def test_an_entry_stored_before_shared_keys_goes_under_its_own_key_without_request() -> None:
    document = entry_document(make_entry(7))
    assert document["key"] == key(7)
    assert document["request"] is None


# AWS event streams


def bedrock_chunk(event: dict[str, Any]) -> bytes:
    inner = json.dumps(event, separators=(",", ":")).encode()
    return reference.encode_event("chunk", {"bytes": base64.b64encode(inner).decode(), "p": "ab"})


def frame_with_int_header() -> bytes:
    """A message with an int32 header (type 4), which cassettes keep as raw bytes."""
    headers = b"\x05:code\x04" + struct.pack(">i", 7)
    prelude = struct.pack(">II", 16 + len(headers) + 2, len(headers))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + b"{}"
    return head + struct.pack(">I", zlib.crc32(head))


def test_an_aws_event_stream_reads_as_events_and_comes_back_byte_for_byte() -> None:
    frames = [
        bedrock_chunk({"type": "message_start", "message": {"role": "assistant"}}),
        bedrock_chunk({"type": "content_block_delta", "delta": {"text": "Bonjour"}}),
        reference.encode_event("messageStop", {"stopReason": "end_turn"}),
        reference.encode_message([(":message-type", "event")], b"not json"),
        frame_with_int_header(),
    ]
    broken = bytearray(reference.encode_event("metadata", {"usage": {}}))
    broken[-1] ^= 1  # a message CRC that does not match
    body = b"".join(frames) + bytes(broken) + b"\x00\x00\x00"  # and a cut-off tail
    entry = make_entry(
        8,
        headers=((b"content-type", b"application/vnd.amazon.eventstream"),),
        body=body,
        provider="bedrock",
    )
    events = entry_document(entry)["response"]["events"]
    assert events[0] == {
        "headers": {
            ":event-type": "chunk",
            ":content-type": "application/json",
            ":message-type": "event",
        },
        "payload": {
            "bytes": {"type": "message_start", "message": {"role": "assistant"}},
            "p": "ab",
        },
        "bytes_style": "compact",
    }
    assert events[2]["payload"] == {"stopReason": "end_turn"}
    assert events[3]["payload_text"] == "not json"
    kept_whole = [base64.b64decode(e["frame_base64"]) for e in events if "frame_base64" in e]
    assert kept_whole == [frames[4], bytes(broken), b"\x00\x00\x00"]
    assert through_json(entry).body == body


@given(
    st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=30), max_size=4).map(
        lambda headers: list(headers.items())
    ),
    st.binary(max_size=100),
)
def test_the_event_stream_encoder_writes_what_botocore_reads(
    headers: list[tuple[str, str]], payload: bytes
) -> None:
    from botocore.eventstream import EventStreamBuffer

    written = encode_message(headers, payload)
    assert written == reference.encode_message(headers, payload)
    buffer = EventStreamBuffer()
    buffer.add_data(written)
    message = next(iter(buffer))
    assert message.headers == dict(headers)
    assert message.payload == payload


def test_the_event_stream_encoder_writes_bytes_and_boolean_headers() -> None:
    from botocore.eventstream import EventStreamBuffer

    buffer = EventStreamBuffer()
    buffer.add_data(encode_message([("yes", True), ("no", False), ("raw", b"\x00\x01")], b"x"))
    assert next(iter(buffer)).headers == {"yes": True, "no": False, "raw": b"\x00\x01"}


# Redaction


def test_for_export_keeps_what_a_hit_needs_and_drops_what_identifies() -> None:
    kept = [
        (b"Content-Type", b"application/json"),
        (b"openai-processing-ms", b"120"),
        (b"x-ratelimit-remaining-tokens", b"100"),
        (b"x-amzn-bedrock-input-token-count", b"12"),
        (b"anthropic-version", b"2023-06-01"),
    ]
    dropped = [
        (name, b"secret")
        for name in [
            b"Authorization",
            b"x-api-key",
            b"api-key",
            b"x-goog-api-key",
            b"x-amz-security-token",
            b"Cookie",
            b"Set-Cookie",
            b"x-portkey-api-key",
            b"openai-organization",
            b"OpenAI-Project",
            b"anthropic-organization-id",
            b"x-request-id",
            b"request-id",
            b"x-amzn-RequestId",
            b"x-amz-request-id",
            b"apim-request-id",
            b"x-ms-request-id",
            b"x-ms-client-request-id",
            b"cf-ray",
            b"x-goog-request-id",
            b"x-amzn-trace-id",
        ]
    ]
    assert for_export([*dropped[:10], *kept, *dropped[10:]]) == tuple(kept)


def test_a_document_holds_no_credential_account_or_call_id() -> None:
    secret = "sk-proj-SENTINEL-xyzzy-Credential-QwErTy"
    organization = "org-SENTINEL-Organization-PlUgH"
    entry = make_entry(
        9,
        headers=(
            (b"content-type", b"application/json"),
            (b"openai-organization", organization.encode()),
            (b"set-cookie", f"__cf_bm={secret}".encode()),
            (b"x-request-id", f"req_{organization}".encode()),
        ),
        shared_key=key("shared"),
        request=StoredRequest(
            query=f"alt=sse&key={secret}",
            headers=(
                ("authorization", f"Bearer {secret}"),
                ("x-goog-api-key", secret),
                ("openai-organization", organization),
                ("openai-project", organization),
                ("anthropic-version", "2023-06-01"),
            ),
        ),
    )
    document = entry_document(entry)
    text = json.dumps(document, ensure_ascii=False)
    for sentinel in (secret, organization):
        for start in range(len(sentinel) - 7):
            assert sentinel[start : start + 8] not in text
    assert document["request"]["query"] == "alt=sse"
    assert document["request"]["headers"] == [["anthropic-version", "2023-06-01"]]


# Refused documents


def refusal(document: Any) -> str:
    with pytest.raises(CassetteError) as caught:
        entry_from_document(document, "cassette/x.json:4")
    message = str(caught.value)
    assert "\n" not in message
    return message


def good() -> dict[str, Any]:
    return entry_document(make_entry(10, shared_key=key("shared")))


def test_a_document_of_another_version_is_refused_saying_which_are_read() -> None:
    document = {**good(), "stasis": 2}
    assert refusal(document) == (
        "cassette/x.json:4: stasis: format version 2 is not one this stasis reads (1)"
    )
    assert 'no "stasis" field' in refusal({"hello": "world"})


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"key": "ABC"}, "key: expected 64 lower-case hex digits, got 'ABC'"),
        ({"key": key(1).upper()}, "key: expected 64 lower-case hex digits"),
        ({"created_at": "2024-01-15 10:30"}, "created_at: expected a UTC time"),
        ({"usage": {"input": 1, "output": 2}}, "usage.total: missing"),
        ({"usage": {"input": True, "output": 2, "total": 3}}, "usage.input: expected an integer"),
        ({"model": 3}, "model: expected a string or null, got a number"),
        ({"colour": "red"}, "colour: not a field this stasis knows"),
        ({"response": {"status": 200, "headers": [["a b", "c"]]}}, "response.headers[0]: 'a b'"),
        ({"response": {"status": 200, "headers": [["x", "a\r\nb"]]}}, "holds CR, LF"),
        ({"response": {"status": 42, "headers": []}}, "response.status: expected an integer"),
        ({"response": {"status": 200, "headers": [], "body_base64": "%%"}}, "not base64"),
        ({"response": {"status": 200, "headers": [], "body": 1, "body_text": "1"}}, "only one"),
        ({"response": {"status": 200, "headers": [], "body": 1, "body_style": "wavy"}}, "wavy"),
        ({"response": {"status": 200, "headers": [], "events": []}}, "not a stream"),
        ({"request": {"query": "", "headers": [["Anthropic-Version", "1"]]}}, "lower-case"),
    ],
)
def test_an_ill_formed_document_is_refused_naming_the_field(
    change: dict[str, Any], expected: str
) -> None:
    message = refusal({**good(), **change})
    assert message.startswith("cassette/x.json:4: ")
    assert expected in message


def test_an_ill_formed_event_is_refused_naming_it() -> None:
    document = good()
    document["response"] = {
        "status": 200,
        "headers": [["content-type", "text/event-stream"]],
        "events": [{"data": 1}, {"data": 1, "text": "1"}],
    }
    assert "response.events[1].text: more than one of" in refusal(document)


def test_importing_cassettes_loads_no_database_driver_web_server_or_botocore() -> None:
    script = "import sys, stasis.cassettes; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout.split()
    heavy = ("twisted", "treq", "sqlite3", "botocore")
    assert [name for name in loaded if name.split(".")[0] in heavy] == []


def test_a_hand_written_cassette_brings_no_credential_into_the_database() -> None:
    document = entry_document(
        make_entry(8, request=StoredRequest(query="alt=json", headers=(), body=b"{}"))
    )
    document["request"]["query"] = "alt=json&key=AIzaHANDWRITTEN"
    document["request"]["headers"] = [["authorization", "Bearer sk-HANDWRITTEN"]]
    document["response"]["headers"] += [["Set-Cookie", "session=HANDWRITTEN"]]
    entry = entry_from_document(json.loads(json.dumps(document)), "hand.json:1")
    assert "HANDWRITTEN" not in repr(entry)
    assert entry.request is not None and entry.request.query == "alt=json"
