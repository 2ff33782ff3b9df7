"""
End to end: streamed answers through a real ``twistd -n stasis``, recorded and replayed.

The fake upstream speaks the real wire formats (chunked transfer-encoding, one
event per chunk, flushed at once); the clients are the official SDKs, or raw
``http.client`` where a test must see the bytes, the framing or the timing.
Nothing here sleeps to wait for something: gates and events with deadlines do.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import boto3
import openai
import pytest
from attrs import define
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotocoreConfig
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer

try:  # the transport the SDKs are built on: httpx2 in current releases, httpx before
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

from tests.daemon import Daemon, poll_until
from tests.eventstream import decode_messages, encode_event, encode_message
from tests.fake_upstream import (
    ANTHROPIC_STREAM_INPUT_TOKENS,
    ANTHROPIC_STREAM_OUTPUT_TOKENS,
    BEDROCK_USAGE,
    RESPONSES_USAGE,
    FakeUpstream,
    Received,
    Reply,
    anthropic_stream,
    chat_completion_stream,
    responses_stream,
    stream_reply,
)

OPENAI_KEY = "sk-test-STREAM-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-test-STREAM-abcdef0123456789"
MESSAGES = [{"role": "user", "content": "Tell me a story"}]
CHAT = {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0, "stream": True}
RESPONSES = {"model": "gpt-4o-mini", "input": "Tell me a story", "stream": True}
ANTHROPIC = {"model": "claude-test-1", "max_tokens": 64, "messages": MESSAGES, "stream": True}
OPENAI_HEADERS = {"Authorization": f"Bearer {OPENAI_KEY}"}
ANTHROPIC_HEADERS = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
BEDROCK_MODEL = "anthropic.claude-3-haiku"
BEDROCK_PATH = f"/model/{BEDROCK_MODEL}/converse-stream"
BEDROCK = {"messages": [{"role": "user", "content": [{"text": "Tell me a story"}]}]}
#: AWS's documented example key pair: the daemon verifies and re-signs with it.
AWS_ACCESS_KEY = "AKIDEXAMPLE"
AWS_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#: How long a test waits for something that should happen at once.
DEADLINE = 5.0

Headers = dict[str, str] | Callable[[str, bytes], dict[str, str]]


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Daemons started here hold the example AWS key pair, and no other AWS configuration."""
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET_KEY)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def sigv4(url: str, body: bytes) -> dict[str, str]:
    """Headers of a Bedrock request to ``url`` signed now, as boto3 signs it."""
    request = AWSRequest(
        method="POST", url=url, data=body, headers={"Content-Type": "application/json"}
    )
    credentials = Credentials(AWS_ACCESS_KEY, AWS_SECRET_KEY)
    SigV4Auth(credentials, "bedrock", "us-east-1").add_auth(request)
    return dict(request.headers.items())


# --- clients -----------------------------------------------------------------


def openai_client(daemon: Daemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=daemon.url + "/v1", api_key=OPENAI_KEY, max_retries=0)


def anthropic_client(daemon: Daemon) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=daemon.url, api_key=ANTHROPIC_KEY, max_retries=0)


@define
class Streamed:
    """A streamed answer read whole through ``http.client``, with its chunk arrival times."""

    status: int
    headers: dict[str, str]
    body: bytes
    #: False when the connection ended before the body's framing said it was whole.
    complete: bool
    #: (seconds after the request was sent, bytes) for each read that returned data.
    arrivals: list[tuple[float, bytes]]

    @property
    def duration(self) -> float:
        return self.arrivals[-1][0] if self.arrivals else 0.0


def connect(daemon: Daemon, timeout: float = 30) -> http.client.HTTPConnection:
    host, port = daemon.url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def open_stream(
    daemon: Daemon, path: str, document: Any, headers: Headers, timeout: float = 30
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """POST ``document``; ``headers`` may be a function of the URL and body (a signature)."""
    body = json.dumps(document).encode()
    if callable(headers):
        headers = headers(daemon.url + path, body)
    connection = connect(daemon, timeout)
    connection.request(
        "POST", path, body=body, headers={"Content-Type": "application/json", **headers}
    )
    return connection, connection.getresponse()


Arrivals = list[tuple[float, bytes]]


def read_rest(response: http.client.HTTPResponse, started: float) -> tuple[Arrivals, bool]:
    """Read ``response`` to its end as the data arrives (``read1``), noting when each read did."""
    arrivals: Arrivals = []
    try:
        while data := response.read1(65536):
            arrivals.append((time.monotonic() - started, data))
    except http.client.IncompleteRead as e:
        if e.partial:
            arrivals.append((time.monotonic() - started, e.partial))
        return arrivals, False
    except ConnectionError:
        return arrivals, False
    return arrivals, True


def post_stream(
    daemon: Daemon, path: str, document: Any, headers: Headers | None = None
) -> Streamed:
    """
    POST ``document`` and read the streamed answer to its end.

    A connection that fails before the response head is an incomplete answer
    with status 0 and no headers.
    """
    started = time.monotonic()
    try:
        connection, response = open_stream(daemon, path, document, headers or OPENAI_HEADERS)
    except (ConnectionError, http.client.RemoteDisconnected):
        return Streamed(status=0, headers={}, body=b"", complete=False, arrivals=[])
    try:
        arrivals, complete = read_rest(response, started)
    finally:
        connection.close()
    return Streamed(
        status=response.status,
        headers={k.lower(): v for k, v in response.getheaders()},
        body=b"".join(data for _, data in arrivals),
        complete=complete,
        arrivals=arrivals,
    )


def read_first_sse_event(response: http.client.HTTPResponse) -> bytes:
    """Read until one whole server-sent event has arrived; return what was read."""
    received = b""
    while b"\n\n" not in received:
        data = response.read1(65536)
        if not data:
            raise AssertionError(f"the stream ended before its first event: {received!r}")
        received += data
    return received


def sse_events(body: bytes) -> list[bytes]:
    return [event + b"\n\n" for event in body.split(b"\n\n") if event]


def same_headers(first: dict[str, str], second: dict[str, str]) -> None:
    """The upstream's own headers come back the same on a hit."""
    for name in ("content-type", "x-request-id", "cache-control"):
        assert first.get(name) == second.get(name), name


# --- the cache: miss, then a byte-identical hit --------------------------------


def test_a_stream_is_cached_and_replayed_byte_for_byte(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    first = post_stream(daemon, "/v1/chat/completions", CHAT)
    second = post_stream(daemon, "/v1/chat/completions", CHAT)
    assert (first.status, first.headers["x-stasis-status"]) == (200, "MISS")
    assert (second.status, second.headers["x-stasis-status"]) == (200, "HIT")
    assert first.complete and second.complete
    assert first.headers["content-type"].startswith("text/event-stream")
    same_headers(first.headers, second.headers)
    assert second.body == first.body
    assert first.body.endswith(b"data: [DONE]\n\n")
    assert b"#1" in first.body
    # A stream's head goes before its end, so before its commit: it never says "stored".
    assert first.headers["cache-status"] == "stasis; fwd=uri-miss; fwd-status=200"
    assert second.headers["cache-status"] == "stasis; hit"
    assert second.headers["x-stasis-key"] == first.headers["x-stasis-key"]
    assert len(upstream.calls()) == 1
    assert daemon.get_json("/stats")["totalEntries"] == 1


@pytest.mark.parametrize("include_usage", [False, True])
def test_openai_chat_stream_through_the_sdk(
    daemon: Daemon, upstream: FakeUpstream, include_usage: bool
) -> None:
    c = openai_client(daemon)
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    runs = []
    for _ in range(2):
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, temperature=0, stream=True, **extra
        )
        runs.append((raw.headers["x-stasis-status"], [k.model_dump() for k in raw.parse()]))
    (miss, first), (hit, second) = runs
    assert (miss, hit) == ("MISS", "HIT")
    assert first == second
    text = "".join(k["choices"][0]["delta"]["content"] or "" for k in first if k["choices"])
    assert text == "echo #1: Tell me a story"
    if include_usage:
        assert first[-1]["choices"] == []
        assert first[-1]["usage"]["total_tokens"] == 18
    assert len(upstream.calls()) == 1


def test_openai_responses_stream_through_the_sdk(daemon: Daemon, upstream: FakeUpstream) -> None:
    c = openai_client(daemon)
    runs = []
    for _ in range(2):
        raw = c.responses.with_raw_response.create(
            model="gpt-4o-mini", input="Tell me a story", stream=True
        )
        runs.append((raw.headers["x-stasis-status"], [e.model_dump() for e in raw.parse()]))
    (miss, first), (hit, second) = runs
    assert (miss, hit) == ("MISS", "HIT")
    assert first == second
    assert first[0]["type"] == "response.created"
    assert first[-1]["type"] == "response.completed"
    assert first[-1]["response"]["output"][0]["content"][0]["text"] == "reply #1: Tell me a story"
    assert len(upstream.calls("/v1/responses")) == 1


def test_anthropic_message_stream_through_the_sdk(daemon: Daemon, upstream: FakeUpstream) -> None:
    client = anthropic_client(daemon)
    runs = []
    for _ in range(2):
        with client.messages.stream(
            model="claude-test-1", max_tokens=64, messages=MESSAGES
        ) as stream:
            status = stream.response.headers["x-stasis-status"]
            events = [event.model_dump() for event in stream]
            final = stream.get_final_message().model_dump()
        runs.append((status, events, final))
    (miss, first_events, first_final), (hit, second_events, second_final) = runs
    assert (miss, hit) == ("MISS", "HIT")
    assert first_events == second_events
    assert first_final == second_final
    assert first_final["content"][0]["text"] == "hello #1"
    assert first_final["usage"]["output_tokens"] == ANTHROPIC_STREAM_OUTPUT_TOKENS
    assert [e["type"] for e in first_events][-1] == "message_stop"
    assert len(upstream.calls("/v1/messages")) == 1


def test_bedrock_converse_stream_is_cached_byte_for_byte(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    # Each call is signed afresh (another X-Amz-Date, another signature): same key.
    first = post_stream(daemon, BEDROCK_PATH, BEDROCK, sigv4)
    second = post_stream(daemon, BEDROCK_PATH, BEDROCK, sigv4)
    assert first.status == second.status == 200, first.body
    assert first.complete and second.complete
    assert first.headers["content-type"] == "application/vnd.amazon.eventstream"
    kinds = [headers[":event-type"] for headers, _ in decode_messages(first.body)]
    assert kinds == ["messageStart"] + ["contentBlockDelta"] * 3 + [
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    assert (first.headers["x-stasis-status"], second.headers["x-stasis-status"]) == ("MISS", "HIT")
    assert second.body == first.body
    assert second.headers["content-type"] == first.headers["content-type"]
    assert len(upstream.calls()) == 1


def test_bedrock_converse_stream_through_boto3(daemon: Daemon, upstream: FakeUpstream) -> None:
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=daemon.url,
        aws_access_key_id=AWS_ACCESS_KEY,
        aws_secret_access_key=AWS_SECRET_KEY,
        config=BotocoreConfig(retries={"total_max_attempts": 1}),
    )
    runs = []
    for _ in range(2):
        answer = client.converse_stream(modelId=BEDROCK_MODEL, **BEDROCK)
        status = answer["ResponseMetadata"]["HTTPHeaders"]["x-stasis-status"]
        runs.append((status, list(answer["stream"])))
    (miss, first), (hit, second) = runs
    assert (miss, hit) == ("MISS", "HIT")
    assert first == second
    text = "".join(
        e["contentBlockDelta"]["delta"]["text"] for e in first if "contentBlockDelta" in e
    )
    assert text == "bedrock #1"
    assert first[-1]["metadata"]["usage"] == BEDROCK_USAGE
    assert len(upstream.calls()) == 1


def test_the_eventstream_encoder_round_trips_through_botocore() -> None:
    data = encode_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hé"}})
    data += encode_message([(":event-type", "messageStop"), ("x-other", "✓")], b"")
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    messages = list(buffer)
    assert [m.headers for m in messages] == [
        {
            ":event-type": "contentBlockDelta",
            ":content-type": "application/json",
            ":message-type": "event",
        },
        {":event-type": "messageStop", "x-other": "✓"},
    ]
    assert json.loads(messages[0].payload) == {"contentBlockIndex": 0, "delta": {"text": "hé"}}
    assert messages[1].payload == b""
    assert [(h, p) for h, p in decode_messages(data)] == [(m.headers, m.payload) for m in messages]


# --- what makes a different key --------------------------------------------------


def test_streamed_and_non_streamed_calls_are_different_keys(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    c = openai_client(daemon)
    streamed = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, temperature=0, stream=True
    )
    list(streamed.parse())
    plain = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, temperature=0
    )
    assert plain.headers["x-stasis-status"] == "MISS"
    assert plain.headers["content-type"] == "application/json"
    assert plain.parse().choices[0].message.content == "echo #2: Tell me a story"
    assert plain.headers["x-stasis-key"] != streamed.headers["x-stasis-key"]
    # And the other way round: a stream after the plain answer is its own entry too.
    again = post_stream(daemon, "/v1/chat/completions", {**CHAT, "temperature": 0.5})
    plain_first = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, temperature=0.5
    )
    assert again.headers["x-stasis-status"] == "MISS"
    assert plain_first.headers["x-stasis-status"] == "MISS"
    assert plain_first.headers["content-type"] == "application/json"
    assert len(upstream.calls()) == 4
    assert daemon.get_json("/stats")["totalEntries"] == 4


# --- relaying as it arrives -------------------------------------------------------


def test_a_stream_is_relayed_as_it_arrives_not_buffered(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    # The fake writes one event and then waits for the gate, which only this test
    # opens, and only once that event came through stasis: a proxy that buffered
    # the stream would leave the read below to time out.
    gate = upstream.gate = threading.Event()
    try:
        connection, response = open_stream(
            daemon, "/v1/chat/completions", CHAT, OPENAI_HEADERS, timeout=DEADLINE
        )
        assert response.getheader("x-stasis-status") == "MISS"
        try:
            first = read_first_sse_event(response)
        except TimeoutError:
            pytest.fail("the first event did not come through while the upstream held the rest")
        assert not gate.is_set()
        assert first.startswith(b"data: {") and b'"role":"assistant"' in first
        gate.set()
        arrivals, complete = read_rest(response, time.monotonic())
        connection.close()
    finally:
        gate.set()
    assert complete
    body = first + b"".join(data for _, data in arrivals)
    assert body.endswith(b"data: [DONE]\n\n")
    assert not upstream.gate_timed_out.is_set()
    # The relayed stream was recorded all the same.
    hit = post_stream(daemon, "/v1/chat/completions", CHAT)
    assert hit.headers["x-stasis-status"] == "HIT"
    assert hit.body == body


def test_the_sdk_sees_the_first_chunk_before_the_upstream_finishes(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    gate = upstream.gate = threading.Event()
    try:
        c = openai.OpenAI(
            base_url=daemon.url + "/v1", api_key=OPENAI_KEY, max_retries=0, timeout=DEADLINE
        )
        stream = c.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, temperature=0, stream=True
        )
        first = next(iter(stream))
        assert not gate.is_set()
        assert first.choices[0].delta.role == "assistant"
        gate.set()
        rest = list(stream)
    finally:
        gate.set()
    assert "".join(k.choices[0].delta.content or "" for k in rest) == "echo #1: Tell me a story"
    assert not upstream.gate_timed_out.is_set()


def test_a_client_that_does_not_read_pauses_the_upstream(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    # Far more than the socket buffers on the way hold: a proxy that kept reading
    # for a client that reads nothing would hold it all in memory.
    content = "a" * 32_000
    sent: list[bytes] = []

    def flood(received: Received) -> Reply:
        events = chat_completion_stream(received.json())
        big = events[1].replace(b'"content":"echo "', b'"content":"%s"' % content.encode())
        sent[:] = [events[0], *[big] * 1200, events[-2], events[-1]]
        return stream_reply(sent)

    upstream.handler = flood
    connection, response = open_stream(daemon, "/v1/chat/completions", CHAT, OPENAI_HEADERS)
    try:
        assert response.getheader("x-stasis-status") == "MISS"
        poll_until(
            lambda: upstream.stream_finished.is_set() or upstream.write_blocked_for() > 0.5,
            deadline=20,
        )
        assert not upstream.stream_finished.is_set(), "stasis read on for a client that did not"
        arrivals, complete = read_rest(response, time.monotonic())
    finally:
        connection.close()
    assert complete
    body = b"".join(data for _, data in arrivals)
    assert body == b"".join(sent).replace(b"__SERIAL__", b"1")
    assert upstream.stream_finished.is_set()


def test_identical_streams_in_flight_make_one_upstream_call(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start("-l", "debug")
    gate = upstream.gate = threading.Event()
    results: list[Streamed] = []

    def call() -> None:
        results.append(post_stream(daemon, "/v1/chat/completions", CHAT))

    threads = [threading.Thread(target=call) for _ in range(3)]
    try:
        threads[0].start()
        assert upstream.first_event_sent.wait(DEADLINE)
        for thread in threads[1:]:
            thread.start()
        poll_until(
            lambda: daemon.log.count("waits for the identical request in flight") == 2,
            deadline=DEADLINE,
        )
    finally:
        gate.set()
    for thread in threads:
        thread.join(20)
    assert sorted(r.headers["x-stasis-status"] for r in results) == ["HIT", "HIT", "MISS"]
    assert all(r.complete for r in results)
    assert len({r.body for r in results}) == 1
    assert len(upstream.calls()) == 1


# --- incomplete streams are never stored -------------------------------------------


RESET_CASES = pytest.mark.parametrize(
    ("path", "document", "headers"),
    [
        ("/v1/chat/completions", CHAT, OPENAI_HEADERS),
        ("/v1/messages", ANTHROPIC, ANTHROPIC_HEADERS),
    ],
    ids=["openai", "anthropic"],
)


@RESET_CASES
def test_a_stream_reset_by_the_upstream_is_not_stored(
    daemon: Daemon,
    upstream: FakeUpstream,
    path: str,
    document: Any,
    headers: dict[str, str],
) -> None:
    upstream.reset_after_events = 2
    broken = post_stream(daemon, path, document, headers)
    # The client must learn that the answer is incomplete, never see a clean end.
    assert not broken.complete
    assert broken.headers.get("x-stasis-status", "MISS") == "MISS"
    assert daemon.get_json("/stats")["totalEntries"] == 0
    upstream.reset_after_events = None
    whole = post_stream(daemon, path, document, headers)
    assert (whole.headers["x-stasis-status"], whole.complete) == ("MISS", True)
    assert len(upstream.calls()) == 2
    assert daemon.get_json("/stats")["totalEntries"] == 1


@RESET_CASES
def test_a_stream_reset_by_the_upstream_reaches_the_client_truncated(
    daemon: Daemon,
    upstream: FakeUpstream,
    path: str,
    document: Any,
    headers: dict[str, str],
) -> None:
    # The two events that came before the reset were relayed as they arrived: the
    # client gets them, under a MISS head, and then a body that does not end cleanly
    # (no terminating chunk), not a connection reset that throws them away.
    upstream.reset_after_events = 2
    broken = post_stream(daemon, path, document, headers)
    assert (broken.status, broken.headers.get("x-stasis-status")) == (200, "MISS")
    assert not broken.complete
    relayed = upstream.default_reply(upstream.calls()[0]).events
    assert relayed is not None
    assert broken.body == b"".join(relayed[:2]).replace(b"__SERIAL__", b"1")


def test_a_stream_reset_reaches_the_sdk_as_an_error(daemon: Daemon, upstream: FakeUpstream) -> None:
    upstream.reset_after_events = 2
    # Before the response head the SDK says APIConnectionError; once the stream has
    # begun it lets the transport's error through (it does not wrap stream reads).
    with pytest.raises((anthropic.APIConnectionError, httpx.TransportError)):  # noqa: SIM117
        with anthropic_client(daemon).messages.stream(
            model="claude-test-1", max_tokens=64, messages=MESSAGES
        ) as stream:
            stream.get_final_message()
    assert daemon.get_json("/stats")["totalEntries"] == 0


@pytest.mark.parametrize(
    ("path", "document", "headers", "events", "terminal"),
    [
        ("/v1/chat/completions", CHAT, OPENAI_HEADERS, chat_completion_stream, b"[DONE]"),
        ("/v1/responses", RESPONSES, OPENAI_HEADERS, responses_stream, b"response.completed"),
        ("/v1/messages", ANTHROPIC, ANTHROPIC_HEADERS, anthropic_stream, b"message_stop"),
    ],
    ids=["chat", "responses", "anthropic"],
)
def test_a_stream_that_ends_before_its_terminal_event_is_not_stored(
    daemon: Daemon,
    upstream: FakeUpstream,
    path: str,
    document: Any,
    headers: dict[str, str],
    events: Callable[[Any], list[bytes]],
    terminal: bytes,
) -> None:
    # Cleanly framed (the terminating chunk is sent), but the provider's last event is missing.
    def cut(received: Received) -> Reply:
        whole = events(received.json())
        assert terminal in whole[-1]
        return stream_reply(whole[:-1])

    upstream.handler = cut
    first = post_stream(daemon, path, document, headers)
    assert (first.headers["x-stasis-status"], first.complete) == ("MISS", True)
    assert terminal not in first.body
    second = post_stream(daemon, path, document, headers)
    assert second.headers["x-stasis-status"] == "MISS"
    assert len(upstream.calls()) == 2
    assert daemon.get_json("/stats")["totalEntries"] == 0


def test_a_client_that_leaves_mid_stream_closes_the_upstream(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    gate = upstream.gate = threading.Event()
    # Once the gate opens the fake keeps writing until a write fails, for a while.
    upstream.write_until_gone = DEADLINE
    try:
        connection, response = open_stream(
            daemon, "/v1/chat/completions", CHAT, OPENAI_HEADERS, timeout=DEADLINE
        )
        read_first_sse_event(response)
        response.close()
        connection.close()
    finally:
        gate.set()
    assert upstream.client_went_away.wait(DEADLINE + 2), "stasis kept the upstream stream open"
    assert daemon.get_json("/stats")["totalEntries"] == 0
    # The daemon is fine, and the next identical call goes upstream again.
    upstream.gate = None
    upstream.write_until_gone = None
    again = post_stream(daemon, "/v1/chat/completions", CHAT)
    assert (again.headers["x-stasis-status"], again.complete) == ("MISS", True)
    assert len(upstream.calls()) == 2


def test_an_upstream_silent_mid_stream_is_cut_off_and_not_stored(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    # --upstream-timeout also bounds the silence between two events of a body.
    daemon = start("--upstream-timeout", "1")
    gate = upstream.gate = threading.Event()
    upstream.write_until_gone = DEADLINE
    try:
        started = time.monotonic()
        cut = post_stream(daemon, "/v1/chat/completions", CHAT)
        elapsed = time.monotonic() - started
    finally:
        gate.set()
    assert not upstream.gate_timed_out.is_set(), "stasis waited on the silent upstream"
    assert elapsed < DEADLINE
    assert (cut.headers.get("x-stasis-status"), cut.complete) == ("MISS", False)
    assert cut.body.startswith(b"data: {") and b"[DONE]" not in cut.body
    # stasis closed the upstream connection: the fake's next writes fail.
    assert upstream.client_went_away.wait(DEADLINE)
    assert daemon.get_json("/stats")["totalEntries"] == 0
    # An answer cut short leaves its access log line all the same, saying why.
    daemon.wait_for_log(
        r"POST /v1/chat/completions 200 MISS [0-9.]+ms \(upstream-body-broken; cut short\)$"
    )


# --- replay pace -------------------------------------------------------------------


def four_events(received: Received) -> Reply:
    """A chat stream of exactly four events: role, content, finish, ``[DONE]``."""
    events = chat_completion_stream(received.json())
    return stream_reply([events[0], events[1], events[-2], events[-1]])


def test_realtime_replay_paces_events_as_recorded(daemon: Daemon, upstream: FakeUpstream) -> None:
    upstream.handler = four_events
    upstream.event_delay = 0.15  # three gaps: the recording spans about 0.45 s
    recorded = post_stream(daemon, "/v1/chat/completions", CHAT)
    assert recorded.headers["x-stasis-status"] == "MISS"
    assert len(sse_events(recorded.body)) == 4
    upstream.event_delay = 0.0

    fast = post_stream(daemon, "/v1/chat/completions", CHAT)
    realtime = post_stream(
        daemon, "/v1/chat/completions", CHAT, {**OPENAI_HEADERS, "X-Stasis-Replay": "realtime"}
    )
    assert fast.headers["x-stasis-status"] == realtime.headers["x-stasis-status"] == "HIT"
    assert fast.body == realtime.body == recorded.body
    assert fast.duration < 0.2
    assert realtime.duration >= 0.4
    # Paced event by event, not held back and sent at the end.
    assert realtime.arrivals[-1][0] - realtime.arrivals[0][0] >= 0.3
    assert len(realtime.arrivals) >= 3
    assert len(upstream.calls()) == 1


def test_an_explicit_fast_replay_is_the_default(daemon: Daemon, upstream: FakeUpstream) -> None:
    post_stream(daemon, "/v1/chat/completions", CHAT)
    fast = post_stream(
        daemon, "/v1/chat/completions", CHAT, {**OPENAI_HEADERS, "X-Stasis-Replay": "fast"}
    )
    assert fast.headers["x-stasis-status"] == "HIT"
    assert len(upstream.calls()) == 1


def test_the_replay_header_stays_in_stasis_and_plain_answers_ignore_it(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    realtime = {**OPENAI_HEADERS, "X-Stasis-Replay": "realtime"}
    recorded = post_stream(daemon, "/v1/chat/completions", CHAT, realtime)
    assert (recorded.headers["x-stasis-status"], recorded.complete) == ("MISS", True)
    plain = {k: v for k, v in CHAT.items() if k != "stream"}
    for _ in range(2):
        status, headers, body = daemon.request(
            "POST",
            "/v1/chat/completions",
            json.dumps(plain).encode(),
            {**realtime, "Content-Type": "application/json"},
        )
        assert status == 200
        assert json.loads(body)["object"] == "chat.completion"
    assert headers["x-stasis-status"] == "HIT"
    assert len(upstream.calls()) == 2
    for seen in upstream.calls():
        assert not any(name.startswith("x-stasis-") for name in seen.headers)


def test_a_client_that_leaves_a_realtime_replay_leaves_the_daemon_healthy(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    upstream.handler = four_events
    upstream.event_delay = 0.3
    post_stream(daemon, "/v1/chat/completions", CHAT)
    connection, response = open_stream(
        daemon,
        "/v1/chat/completions",
        CHAT,
        {**OPENAI_HEADERS, "X-Stasis-Replay": "realtime"},
        timeout=DEADLINE,
    )
    assert response.getheader("x-stasis-status") == "HIT"
    read_first_sse_event(response)
    response.close()
    connection.close()
    # A whole realtime replay begun after the abandoned one ends after it would
    # have: by then every timer of the abandoned replay has come round, and none
    # may have written to the closed connection (the fixture fails the test on
    # any traceback in the daemon's log).
    again = post_stream(
        daemon,
        "/v1/chat/completions",
        CHAT,
        {**OPENAI_HEADERS, "X-Stasis-Replay": "realtime"},
    )
    assert (again.headers["x-stasis-status"], again.complete) == ("HIT", True)
    assert again.duration >= 0.6
    assert daemon.get_json("/health")["status"] == "healthy"
    assert len(upstream.calls()) == 1


def test_an_unknown_replay_pace_is_a_400(daemon: Daemon, upstream: FakeUpstream) -> None:
    status, headers, body = daemon.request(
        "POST",
        "/v1/chat/completions",
        json.dumps(CHAT).encode(),
        {**OPENAI_HEADERS, "Content-Type": "application/json", "X-Stasis-Replay": "slowly"},
    )
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert error["type"] == "stasis_bad_request"
    assert error["header"] == "X-Stasis-Replay"
    assert "realtime" in error["message"]
    assert upstream.calls() == []


# --- tokens saved --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "document", "headers", "tokens"),
    [
        (
            "/v1/chat/completions",
            {**CHAT, "stream_options": {"include_usage": True}},
            OPENAI_HEADERS,
            18,
        ),
        ("/v1/responses", RESPONSES, OPENAI_HEADERS, RESPONSES_USAGE["total_tokens"]),
        (
            "/v1/messages",
            ANTHROPIC,
            ANTHROPIC_HEADERS,
            ANTHROPIC_STREAM_INPUT_TOKENS + ANTHROPIC_STREAM_OUTPUT_TOKENS,
        ),
        (BEDROCK_PATH, BEDROCK, sigv4, BEDROCK_USAGE["totalTokens"]),
    ],
    ids=["openai-chat", "openai-responses", "anthropic", "bedrock"],
)
def test_a_hit_on_a_stream_counts_its_tokens_as_saved(
    daemon: Daemon,
    upstream: FakeUpstream,
    path: str,
    document: Any,
    headers: Headers,
    tokens: int,
) -> None:
    statuses = [post_stream(daemon, path, document, headers).headers["x-stasis-status"]]
    statuses.append(post_stream(daemon, path, document, headers).headers["x-stasis-status"])
    assert statuses == ["MISS", "HIT"]
    # Hit counters reach the database in batches, within a second.
    poll_until(lambda: daemon.get_json("/stats")["totalTokensSaved"] == tokens, deadline=3)
    assert daemon.get_json("/stats")["totalEntries"] == 1
