"""
A fake LLM upstream on a real loopback socket, speaking the providers' wire formats.

It runs in its own thread (stdlib ``http.server``), so tests can drive it with
the official, blocking SDKs while a real ``twistd -n stasis`` sits in between.
Every request it receives is recorded, so a test can prove how many calls
reached the upstream and what headers they carried.

Asked for a stream (``"stream": true``, or Bedrock's ``converse-stream``), it
answers the way the real APIs do: HTTP/1.1 chunked transfer-encoding, one chunk
per event, each written to the socket at once, so events really arrive apart.
OpenAI chat completions and Anthropic messages speak server-sent events
(``data: ...`` / ``event: ...``), Bedrock the AWS event stream
(:mod:`tests.eventstream`). Fields on :class:`FakeUpstream` script how a stream
misbehaves: a gate after its first event, a reset after N events, a delay
between events, and a flag for a client that went away.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from attrs import define, field

from tests.eventstream import encode_event

__all__ = ["FakeUpstream", "Received", "Reply", "stream_reply"]

#: How long one write of a stream may block before the fake gives up on it.
STREAM_WRITE_TIMEOUT = 15.0
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
EVENTSTREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
_BEDROCK = re.compile(r"/model/[^/]+/(converse|converse-stream)$")


@define
class Received:
    """One request as the upstream saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    #: The call's serial number (1 for the first request the fake received).
    serial: int = 0

    def json(self) -> Any:
        return json.loads(self.body)


@define
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    gzip: bool = False
    #: Send only this many body bytes, then drop the connection (a reset mid-body).
    truncate_after: int | None = None
    #: A stream: these events, one HTTP chunk each, instead of ``body`` (which is ignored).
    events: list[bytes] | None = None
    #: A stream: what to keep writing while waiting for the client to go away
    #: (:attr:`FakeUpstream.write_until_gone`); by default an SSE comment.
    filler: bytes = b": keep-alive\n\n"


Handler = Callable[[Received], Reply]


def _json_reply(status: int, document: Any, gzipped: bool = False) -> Reply:
    return Reply(
        status=status,
        headers=[("Content-Type", "application/json"), ("x-request-id", "req_fake")],
        body=json.dumps(document).encode(),
        gzip=gzipped,
    )


def stream_reply(events: list[bytes], content_type: str = SSE_CONTENT_TYPE, **kw: Any) -> Reply:
    """A 200 streaming ``events`` (chunked), with the headers a real API sends."""
    headers = [("Content-Type", content_type), ("x-request-id", "req_fake")]
    if content_type == SSE_CONTENT_TYPE:
        headers.append(("Cache-Control", "no-cache"))
    return Reply(status=200, headers=headers, body=b"", events=events, **kw)


@define
class FakeUpstream:
    """
    Answers like api.openai.com, api.anthropic.com and Bedrock, deterministically per call.

    Each answer carries a serial number, so a second upstream call for the same
    request is visible in the body as well as in :attr:`received`.

    Streams obey the scripting fields below, which a test may change between calls.
    """

    received: list[Received] = field(factory=list)
    #: Replace to script a different answer (status, body, headers).
    handler: Handler | None = None
    gzip: bool = False
    #: Streams: once the first event is written, wait for this to be set (at most
    #: :attr:`gate_timeout` seconds, then :attr:`gate_timed_out` is set and the stream goes on).
    gate: threading.Event | None = None
    gate_timeout: float = 10.0
    gate_timed_out: threading.Event = field(factory=threading.Event)
    #: Streams: after this many events, drop the connection without the terminating chunk.
    reset_after_events: int | None = None
    #: Streams: seconds to wait before each event after the first.
    event_delay: float = 0.0
    #: Streams: after the first event (and the gate), keep writing :attr:`Reply.filler`
    #: every few milliseconds until a write fails, for at most this many seconds.
    write_until_gone: float | None = None
    #: Set when a write to a stream fails because the other side closed the connection.
    client_went_away: threading.Event = field(factory=threading.Event)
    #: Set once the first event of a stream has been written.
    first_event_sent: threading.Event = field(factory=threading.Event)
    #: Set once a stream has been written whole (its terminating chunk included).
    stream_finished: threading.Event = field(factory=threading.Event)
    _serial: Any = field(factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    #: When the stream write in progress began (None when no write is in progress).
    _write_started: float | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def write_blocked_for(self) -> float:
        """Seconds the stream write in progress has waited for the socket (0 when none)."""
        started = self._write_started
        return 0.0 if started is None else time.monotonic() - started

    def calls(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if path is None or r.path.startswith(path)]

    def start(self) -> FakeUpstream:
        upstream = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                received = Received(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with upstream._lock:
                    serial = received.serial = next(upstream._serial)
                    upstream.received.append(received)
                reply = (upstream.handler or upstream.default_reply)(received)
                if reply.status == 0:  # scripted: drop the connection without answering
                    self.close_connection = True
                    self.connection.close()
                    return
                if reply.events is not None:
                    self._stream(reply, serial)
                    return
                payload = reply.body.replace(b"__SERIAL__", str(serial).encode())
                self.send_response(reply.status)
                for name, value in reply.headers:
                    self.send_header(name, value)
                if (reply.gzip or upstream.gzip) and "gzip" in self.headers.get(
                    "Accept-Encoding", ""
                ):
                    payload = gzip.compress(payload)
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if reply.truncate_after is not None:
                    self.wfile.write(payload[: reply.truncate_after])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(payload)

            def _chunk(self, data: bytes) -> None:
                upstream._write_started = time.monotonic()
                try:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                finally:
                    upstream._write_started = None

            def _stream(self, reply: Reply, serial: int) -> None:
                assert reply.events is not None
                tag = str(serial).encode()
                events = [event.replace(b"__SERIAL__", tag) for event in reply.events]
                self.send_response(reply.status)
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.connection.settimeout(STREAM_WRITE_TIMEOUT)
                try:
                    for number, event in enumerate(events, start=1):
                        if number > 1 and upstream.event_delay:
                            time.sleep(upstream.event_delay)
                        self._chunk(event)
                        if upstream.reset_after_events is not None and (
                            number >= upstream.reset_after_events
                        ):
                            # Abruptly: no terminating chunk, so the body is incomplete.
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        if number == 1:
                            upstream.first_event_sent.set()
                            gate = upstream.gate
                            if gate is not None and not gate.wait(upstream.gate_timeout):
                                upstream.gate_timed_out.set()
                            if upstream.write_until_gone is not None:
                                self._fill(reply.filler, upstream.write_until_gone)
                    self.wfile.write(b"0\r\n\r\n")
                    upstream.stream_finished.set()
                except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                    upstream.client_went_away.set()
                    self.close_connection = True
                except TimeoutError:  # the other side stopped reading
                    self.close_connection = True

            def _fill(self, filler: bytes, seconds: float) -> None:
                """Write ``filler`` until a write fails (which raises) or ``seconds`` pass."""
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    self._chunk(filler)
                    time.sleep(0.01)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def default_reply(self, received: Received) -> Reply:
        path = received.path.split("?")[0]
        if received.method != "POST":
            return _json_reply(200, {"object": "list", "data": []})
        try:
            request = received.json()
        except ValueError:
            return _json_reply(400, {"error": {"message": "body is not JSON"}})
        stream = isinstance(request, dict) and request.get("stream") is True
        if path.endswith("/chat/completions"):
            if stream:
                return stream_reply(chat_completion_stream(request))
            return _json_reply(200, chat_completion(request))
        if path.endswith("/embeddings"):
            return _json_reply(200, embedding(request))
        if path.endswith("/responses"):
            if stream:
                return stream_reply(responses_stream(request))
            return _json_reply(200, response_object(request))
        if path.endswith("/v1/messages"):
            if stream:
                return stream_reply(anthropic_stream(request))
            return _json_reply(200, anthropic_message(request))
        bedrock = _BEDROCK.search(path)
        if bedrock and bedrock.group(1) == "converse-stream":
            return converse_stream_reply(request, received.serial)
        if bedrock:
            reply = _json_reply(200, converse(request))
            reply.headers = [("Content-Type", "application/json"), *_amzn_headers()]
            return reply
        if path.endswith("/v1/files"):
            return _json_reply(200, {"id": "file-__SERIAL__", "object": "file"})
        return _json_reply(404, {"error": {"message": f"no fake for {path}"}})


def chat_completion(request: Any) -> dict[str, Any]:
    last = request.get("messages", [{}])[-1].get("content", "")
    return {
        "id": "chatcmpl-__SERIAL__",
        "object": "chat.completion",
        "created": 1700000000,
        "model": request.get("model", "gpt-4o-mini"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"echo #__SERIAL__: {last}"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def embedding(request: Any) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
        "model": request.get("model", "text-embedding-3-small"),
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }


def anthropic_message(request: Any) -> dict[str, Any]:
    return {
        "id": "msg___SERIAL__",
        "type": "message",
        "role": "assistant",
        "model": request.get("model", "claude-sonnet-4-5"),
        "content": [{"type": "text", "text": "hello #__SERIAL__"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 5},
    }


def _compact(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def sse_data(document: Any) -> bytes:
    """One unnamed server-sent event, as OpenAI's chat completions stream writes it."""
    return b"data: " + _compact(document) + b"\n\n"


def sse_event(name: str, document: Any) -> bytes:
    """One named server-sent event, as Anthropic and the Responses API write them."""
    return b"event: " + name.encode() + b"\ndata: " + _compact(document) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def _last_user_text(request: Any) -> str:
    last = request.get("messages", [{}])[-1].get("content", "")
    return last if isinstance(last, str) else json.dumps(last)


def chat_completion_stream(request: Any) -> list[bytes]:
    """
    ``chat.completion.chunk`` events spelling ``echo #N: <last message>``, then ``[DONE]``.

    With ``stream_options.include_usage`` every chunk carries ``"usage": null``
    and one last chunk has no choices and the usage, as the real API does.
    """
    options = request.get("stream_options") or {}
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    pieces = ["echo ", "#__SERIAL__", ": ", _last_user_text(request)]

    def chunk(choices: list[Any], **extra: Any) -> bytes:
        document: dict[str, Any] = {
            "id": "chatcmpl-__SERIAL__",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": request.get("model", "gpt-4o-mini"),
            "system_fingerprint": "fp_fake",
            "choices": choices,
        }
        if include_usage:
            document["usage"] = None
        document.update(extra)
        return sse_data(document)

    def choice(delta: dict[str, Any], finish_reason: str | None = None) -> list[Any]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]

    events = [chunk(choice({"role": "assistant", "content": "", "refusal": None}))]
    events += [chunk(choice({"content": piece})) for piece in pieces]
    events.append(chunk(choice({}, "stop")))
    if include_usage:
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        events.append(chunk([], usage=usage))
    events.append(SSE_DONE)
    return events


RESPONSES_USAGE = {
    "input_tokens": 9,
    "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
    "output_tokens": 6,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 15,
}


def _responses_text(request: Any) -> str:
    given = request.get("input", "")
    return "reply #__SERIAL__: " + (given if isinstance(given, str) else json.dumps(given))


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _output_message(text: str | None) -> dict[str, Any]:
    return {
        "id": "msg___SERIAL__",
        "type": "message",
        "status": "in_progress" if text is None else "completed",
        "content": [] if text is None else [_output_text(text)],
        "role": "assistant",
    }


def response_object(request: Any, done: bool = True) -> dict[str, Any]:
    """A Responses API ``response``: completed with its output and usage, or just created."""
    return {
        "id": "resp___SERIAL__",
        "object": "response",
        "created_at": 1700000000,
        "status": "completed" if done else "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": request.get("model", "gpt-4o-mini"),
        "output": [_output_message(_responses_text(request))] if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": RESPONSES_USAGE if done else None,
        "user": None,
        "metadata": {},
    }


def responses_stream(request: Any) -> list[bytes]:
    """The Responses API's event sequence for one text message, ending at ``response.completed``."""
    text = _responses_text(request)
    pieces = ["reply ", "#__SERIAL__", ": ", text.split(": ", 1)[1]]
    where = {"item_id": "msg___SERIAL__", "output_index": 0, "content_index": 0}
    documents: list[dict[str, Any]] = [
        {"type": "response.created", "response": response_object(request, done=False)},
        {"type": "response.in_progress", "response": response_object(request, done=False)},
        {"type": "response.output_item.added", "output_index": 0, "item": _output_message(None)},
        {"type": "response.content_part.added", **where, "part": _output_text("")},
    ]
    documents += [
        {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
        for piece in pieces
    ]
    documents += [
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": _output_text(text)},
        {"type": "response.output_item.done", "output_index": 0, "item": _output_message(text)},
        {"type": "response.completed", "response": response_object(request)},
    ]
    return [
        sse_event(document["type"], {**document, "sequence_number": number})
        for number, document in enumerate(documents)
    ]


#: Anthropic stream usage: 12 input tokens; ``output_tokens`` is 1 at the start, 5 at the end.
ANTHROPIC_STREAM_INPUT_TOKENS = 12
ANTHROPIC_STREAM_OUTPUT_TOKENS = 5


def anthropic_stream(request: Any) -> list[bytes]:
    """Anthropic's Messages stream for one text block spelling ``hello #N``."""
    message = {
        "id": "msg___SERIAL__",
        "type": "message",
        "role": "assistant",
        "model": request.get("model", "claude-sonnet-4-5"),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": ANTHROPIC_STREAM_INPUT_TOKENS,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 1,
        },
    }
    events = [
        sse_event("message_start", {"type": "message_start", "message": message}),
        sse_event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        sse_event("ping", {"type": "ping"}),
    ]
    events += [
        sse_event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
        )
        for t in ("hello", " #", "__SERIAL__")
    ]
    events += [
        sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": ANTHROPIC_STREAM_OUTPUT_TOKENS},
            },
        ),
        sse_event("message_stop", {"type": "message_stop"}),
    ]
    return events


BEDROCK_USAGE = {"inputTokens": 10, "outputTokens": 4, "totalTokens": 14}


def _amzn_headers() -> list[tuple[str, str]]:
    return [("x-amzn-RequestId", "00000000-0000-4000-8000-000000000000")]


def converse(request: Any) -> dict[str, Any]:
    """Bedrock's Converse answer."""
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": "bedrock #__SERIAL__"}]}},
        "stopReason": "end_turn",
        "usage": BEDROCK_USAGE,
        "metrics": {"latencyMs": 42},
    }


def converse_stream_events(serial: int) -> list[bytes]:
    """Bedrock's ConverseStream events (AWS event stream) spelling ``bedrock #N``."""
    events = [encode_event("messageStart", {"role": "assistant"})]
    events += [
        encode_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}})
        for text in ("bedrock", " #", str(serial))
    ]
    events += [
        encode_event("contentBlockStop", {"contentBlockIndex": 0}),
        encode_event("messageStop", {"stopReason": "end_turn"}),
        encode_event("metadata", {"usage": BEDROCK_USAGE, "metrics": {"latencyMs": 42}}),
    ]
    return events


def converse_stream_reply(request: Any, serial: int) -> Reply:
    reply = stream_reply(
        converse_stream_events(serial),
        EVENTSTREAM_CONTENT_TYPE,
        filler=encode_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "."}}),
    )
    reply.headers = [("Content-Type", EVENTSTREAM_CONTENT_TYPE), *_amzn_headers()]
    return reply
