"""
A fake LLM upstream on a real loopback socket, speaking the providers' wire formats.

One instance answers for every provider (OpenAI, Azure OpenAI, Anthropic,
Bedrock, Gemini), telling them apart by path, so a test may run one for
everything or one per provider (each on its own port) to prove routing.

It runs in its own thread (stdlib ``http.server``), so tests can drive it with
the official, blocking SDKs while a real ``twistd -n stasis`` sits in between.
Every request it receives is recorded, so a test can prove how many calls
reached the upstream and what headers they carried.

Asked for a stream (``"stream": true``, or Bedrock's ``converse-stream``), it
answers the way the real APIs do: HTTP/1.1 chunked transfer-encoding, one chunk
per event, each written to the socket at once, so events really arrive apart.
OpenAI chat completions and Anthropic messages speak server-sent events
(``data: ...`` / ``event: ...``), Bedrock the AWS event stream
(:mod:`tests.eventstream`), Gemini's ``streamGenerateContent?alt=sse`` SSE with
CRLF line ends, as Google writes them. Fields on :class:`FakeUpstream` script how a stream
misbehaves: a gate after its first event, a reset after N events, a delay
between events, and a flag for a client that went away. With ``gzip`` set,
plain answers are gzip'd whole and streams event by event (a sync flush after
each, as a server that compresses a stream must); :meth:`FakeUpstream.serve_gzip_bomb`
answers chat calls with a gzip bomb instead, and :attr:`FakeUpstream.writes`
tells how far each answer's body got onto the socket.

Like Bedrock, the fake verifies every SigV4 signature it is sent (with
botocore's canonical request over the request exactly as received, and
:attr:`FakeUpstream.aws_secret_key`) and answers an AWS-style ``403`` when it
does not verify; each :class:`Received` says how its signature fared.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import hmac
import itertools
import json
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from attrs import define, field

from tests.eventstream import encode_event

__all__ = [
    "AWS_ACCESS_KEY",
    "AWS_SECRET_KEY",
    "FakeUpstream",
    "Received",
    "Reply",
    "Writes",
    "check_sigv4",
    "gzip_bomb",
    "gzip_bomb_reply",
    "stream_reply",
]

#: AWS's documented example key pair: what the fake Bedrock expects signatures from.
AWS_ACCESS_KEY = "AKIDEXAMPLE"
AWS_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

#: How long one write of a stream may block before the fake gives up on it.
STREAM_WRITE_TIMEOUT = 15.0
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
EVENTSTREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
_BEDROCK = re.compile(
    r"/model/([^/]+)/(converse|converse-stream|invoke|invoke-with-response-stream)$"
)
_GEMINI = re.compile(
    r"/models/([^/:]+):(generateContent|streamGenerateContent|countTokens|embedContent|"
    r"batchEmbedContents)$"
)
#: SigV4 signatures more than this far from the fake's clock are refused, as AWS does.
SIGV4_MAX_SKEW = 15 * 60


#: What a gzip bomb inflates to, by default: ~1 MB on the wire.
GZIP_BOMB_BYTES = 1 << 30
#: A body is written to the socket in pieces of this size, each counted in :class:`Writes`.
WRITE_PIECE = 64 * 1024


class _Server(ThreadingHTTPServer):
    #: A real API's backlog, not http.server's 5: tests send dozens of requests at once.
    request_queue_size = 128


@define
class Received:
    """One request as the upstream saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    #: The call's serial number (1 for the first request the fake received).
    serial: int = 0
    #: A SigV4-signed request: ``"valid"``, or why its signature did not verify;
    #: ``""`` for a request without a SigV4 signature.
    signature: str = ""

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def target(self) -> str:
        """The path without its query."""
        return self.path.split("?")[0]

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.path.partition("?")[2], keep_blank_values=True))


@define
class Writes:
    """How far one answer's body got onto the socket."""

    #: Body bytes written (as sent: compressed, chunk framing included).
    sent: int = 0
    #: The whole body was written.
    done: bool = False
    #: When the write in progress began (None when none is).
    blocked_since: float | None = None

    def stalled(self, seconds: float) -> bool:
        """Whether a write has waited for the reader for ``seconds`` at least."""
        since = self.blocked_since
        return since is not None and time.monotonic() - since >= seconds


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


#: The gzip header of a member with no name, time or flags.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_MIB = 1 << 20


@functools.cache
def gzip_bomb(prefix: bytes, suffix: bytes, size: int = GZIP_BOMB_BYTES) -> bytes:
    """
    ``prefix``, ``size`` bytes of ``0`` (whole MiBs) and ``suffix``, gzip'd: one
    valid member, about a thousandth of ``size``.

    Compressing a gigabyte takes seconds; but after a full flush deflate
    starts afresh, so one MiB of zeros compresses to the same bytes every
    time: the member is that segment repeated, with the CRC of the whole.
    Built once per process.
    """
    block = b"0" * _MIB
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)
    segment = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    tail = deflate.compress(suffix) + deflate.flush()
    count = size // _MIB
    crc = zlib.crc32(prefix)
    for _ in range(count):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(suffix, crc)
    length = len(prefix) + count * _MIB + len(suffix)
    trailer = struct.pack("<II", crc, length & 0xFFFFFFFF)
    return _GZIP_HEADER + head + segment * count + tail + trailer


#: A chat completion whose content is the bomb's zeros.
_BOMB_JSON = (
    b'{"id":"chatcmpl-bomb","object":"chat.completion","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"',
    b'"},"finish_reason":"stop"}]}',
)
#: One chat.completion.chunk whose content is the bomb's zeros, then [DONE].
_BOMB_SSE = (
    b'data: {"id":"chatcmpl-bomb","object":"chat.completion.chunk","choices":[{"index":0,'
    b'"delta":{"content":"',
    b'"}}]}\n\ndata: [DONE]\n\n',
)


def gzip_bomb_reply(stream: bool, size: int = GZIP_BOMB_BYTES) -> Reply:
    """A 200 gzip bomb (:func:`gzip_bomb`): SSE in chunks of 64 KiB, or one JSON answer."""
    if stream:
        body = gzip_bomb(*_BOMB_SSE, size)
        chunks = [body[start : start + WRITE_PIECE] for start in range(0, len(body), WRITE_PIECE)]
        reply = stream_reply(chunks)
        reply.headers.append(("Content-Encoding", "gzip"))
        return reply
    return Reply(
        status=200,
        headers=[("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
        body=gzip_bomb(*_BOMB_JSON, size),
    )


@define
class FakeUpstream:
    """
    Answers like api.openai.com, api.anthropic.com, Bedrock, Gemini and Azure OpenAI,
    deterministically per call.

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
    #: The key pair SigV4 signatures must verify with (Bedrock's IAM, in effect).
    aws_access_key: str = AWS_ACCESS_KEY
    aws_secret_key: str = AWS_SECRET_KEY
    #: False: accept any SigV4 signature unchecked (``Received.signature`` is still set).
    verify_sigv4: bool = True
    #: How far each answer's body got onto the socket, by the call's serial number.
    writes: dict[int, Writes] = field(factory=dict)
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

    def hold_until(self, gate: threading.Event, deadline: float = 30.0) -> None:
        """Answer every request as usual, but only once ``gate`` is set (so requests overlap)."""

        def held(received: Received) -> Reply:
            if not gate.wait(deadline):
                raise AssertionError("the test never let the upstream answer")
            return self.default_reply(received)

        self.handler = held

    def serve_gzip_bomb(self, size: int = GZIP_BOMB_BYTES) -> None:
        """
        Answer chat calls with a gzip bomb: ``size`` bytes of answer once
        decoded, a thousandth of it on the wire, sent whatever Accept-Encoding
        said; a stream (``"stream": true``) as SSE in chunks, else one JSON
        answer. Other calls are answered as usual.
        """

        def bomb(received: Received) -> Reply:
            if not received.target.endswith("/chat/completions"):
                return self.default_reply(received)
            return gzip_bomb_reply(received.json().get("stream") is True, size)

        self.handler = bomb

    def writes_stalled(self, count: int, seconds: float) -> bool:
        """
        Whether ``count`` answers have begun, and each was written whole or
        has waited at least ``seconds`` for its reader: all the upstream can send.
        """
        with self._lock:
            writes = list(self.writes.values())
        return len(writes) >= count and all(w.done or w.stalled(seconds) for w in writes)

    def calls(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if path is None or r.path.startswith(path)]

    def start(self) -> FakeUpstream:
        upstream = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            #: A gzip'd stream's compressor (None: the stream goes as it is).
            _deflate: Any = None
            _stream_writes: Writes

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
                refused = upstream.authenticate(received)
                with upstream._lock:
                    serial = received.serial = next(upstream._serial)
                    upstream.received.append(received)
                reply = refused or (upstream.handler or upstream.default_reply)(received)
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
                if self._gzip(reply):
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
                writes = self._writes(serial)
                try:
                    for start in range(0, len(payload), WRITE_PIECE):
                        self._write(writes, payload[start : start + WRITE_PIECE])
                except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                    self.close_connection = True
                    return
                writes.done = True

            def _gzip(self, reply: Reply) -> bool:
                """Whether to gzip ``reply`` (asked for, and accepted)."""
                accepted = "gzip" in self.headers.get("Accept-Encoding", "")
                return (reply.gzip or upstream.gzip) and accepted

            def _writes(self, serial: int) -> Writes:
                with upstream._lock:
                    writes = upstream.writes[serial] = Writes()
                return writes

            def _write(self, writes: Writes, data: bytes) -> None:
                writes.blocked_since = time.monotonic()
                try:
                    self.wfile.write(data)
                    self.wfile.flush()
                finally:
                    writes.blocked_since = None
                writes.sent += len(data)

            def _chunk(self, data: bytes) -> None:
                if self._deflate is not None:
                    data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
                upstream._write_started = time.monotonic()
                try:
                    self._write(self._stream_writes, b"%x\r\n%s\r\n" % (len(data), data))
                finally:
                    upstream._write_started = None

            def _last_chunk(self) -> None:
                if self._deflate is not None:
                    rest = self._deflate.flush()
                    self._write(self._stream_writes, b"%x\r\n%s\r\n" % (len(rest), rest))
                self._write(self._stream_writes, b"0\r\n\r\n")
                self._stream_writes.done = True

            def _stream(self, reply: Reply, serial: int) -> None:
                assert reply.events is not None
                tag = str(serial).encode()
                events = [event.replace(b"__SERIAL__", tag) for event in reply.events]
                self.send_response(reply.status)
                for name, value in reply.headers:
                    self.send_header(name, value)
                self._deflate = None
                if self._gzip(reply):
                    self._deflate = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self._stream_writes = self._writes(serial)
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
                    self._last_chunk()
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

        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        # A short poll interval: stop() waits for serve_forever to notice, once per fake.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def authenticate(self, received: Received) -> Reply | None:
        """
        As AWS does: a SigV4 signature must verify, and a Bedrock call must carry
        one (or a Bedrock API key as a Bearer token). Sets ``received.signature``;
        returns the 403 to answer with, or None to go on.
        """
        authorization = received.headers.get("authorization", "")
        if authorization.startswith("AWS4-HMAC-SHA256 "):
            problem = check_sigv4(
                received.method,
                received.path,
                received.headers,
                received.body,
                self.aws_access_key,
                self.aws_secret_key,
            )
            received.signature = problem or "valid"
            if problem and self.verify_sigv4:
                return aws_error(403, *problem.split(": ", 1))
            return None
        if _BEDROCK.search(received.target) and not authorization.startswith("Bearer "):
            return aws_error(
                403, "MissingAuthenticationTokenException", "Missing Authentication Token"
            )
        return None

    def default_reply(self, received: Received) -> Reply:
        path = received.target
        if received.method == "POST" and path.endswith("/v1/files"):
            # multipart/form-data, as the SDKs upload files
            return _json_reply(200, file_object(received))
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
        if path.endswith("/v1/messages/count_tokens"):
            return _json_reply(200, {"input_tokens": 12})
        bedrock = _BEDROCK.search(path)
        if bedrock:
            return bedrock_reply(bedrock.group(1), bedrock.group(2), request, received.serial)
        gemini = _GEMINI.search(path)
        if gemini:
            return gemini_reply(received, gemini.group(1), gemini.group(2), request)
        return _json_reply(404, {"error": {"message": f"no fake for {path}"}})


def chat_completion(request: Any) -> dict[str, Any]:
    last = (request.get("messages") or [{}])[-1].get("content", "")
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


EMBEDDING = [0.1, 0.2, 0.3]


def embedding(request: Any) -> dict[str, Any]:
    """
    One embedding per input; base64 (little-endian float32) when asked, as the
    openai SDK does by default.
    """
    given = request.get("input", "")
    count = len(given) if isinstance(given, list) and not isinstance(given[0], int) else 1
    vector: Any = EMBEDDING
    if request.get("encoding_format") == "base64":
        vector = base64.b64encode(struct.pack("<3f", *EMBEDDING)).decode()
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": vector} for index in range(count)
        ],
        "model": request.get("model", "text-embedding-3-small"),
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }


def file_object(received: Received) -> dict[str, Any]:
    """What ``POST /v1/files`` answers (the upload itself is not parsed)."""
    return {
        "id": "file-__SERIAL__",
        "object": "file",
        "bytes": len(received.body),
        "created_at": 1700000000,
        "filename": "upload.jsonl",
        "purpose": "batch",
        "status": "processed",
        "status_details": None,
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
    last = (request.get("messages") or [{}])[-1].get("content", "")
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


# --- Bedrock: SigV4 and InvokeModel -------------------------------------------------


def aws_error(status: int, code: str, message: str) -> Reply:
    """An AWS JSON (restJson1) error, as Bedrock answers: the code in ``x-amzn-ErrorType``."""
    return Reply(
        status=status,
        headers=[
            ("Content-Type", "application/json"),
            (
                "x-amzn-ErrorType",
                f"{code}:http://internal.amazon.com/coral/com.amazon.coral.service/",
            ),
            *_amzn_headers(),
        ],
        body=json.dumps({"message": message}).encode(),
    )


def _sigv4_fields(authorization: str) -> dict[str, str]:
    _, _, rest = authorization.partition(" ")
    fields = {}
    for part in rest.split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value
    return fields


def check_sigv4(
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    access_key: str = AWS_ACCESS_KEY,
    secret_key: str = AWS_SECRET_KEY,
    now: datetime | None = None,
) -> str | None:
    """
    None when ``headers['authorization']`` is a valid SigV4 signature of this
    request by ``access_key``/``secret_key``, else ``"ErrorCode: message"``.

    The canonical request is botocore's, over the request exactly as received:
    the method, the target as sent (``%3A`` and all; botocore encodes the path
    once more, as AWS does for every service but S3), its query, the signed
    headers with their values (``host`` included) and the hash of the body.
    ``headers`` has lower-case names.
    """
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    mismatch = (
        "InvalidSignatureException: The request signature we calculated does not match the "
        "signature you provided. Check your AWS Secret Access Key and signing method."
    )
    fields = _sigv4_fields(headers.get("authorization", ""))
    scope = fields.get("Credential", "").split("/")
    signed = [name for name in fields.get("SignedHeaders", "").split(";") if name]
    if len(scope) != 5 or scope[4] != "aws4_request" or not fields.get("Signature"):
        return (
            "IncompleteSignatureException: Authorization needs Credential, SignedHeaders, Signature"
        )
    if scope[0] != access_key:
        return "UnrecognizedClientException: The security token included in the request is invalid."
    if "host" not in signed:
        return "InvalidSignatureException: 'Host' must be a signed header."
    missing = [name for name in signed if name not in headers]
    if missing:
        return f"InvalidSignatureException: signed headers are missing: {', '.join(missing)}"
    timestamp = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(timestamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return "IncompleteSignatureException: the request has no valid X-Amz-Date"
    if scope[1] != timestamp[:8]:
        return f"InvalidSignatureException: the credential scope's date {scope[1]} is not today's"
    skew = abs(((now or datetime.now(timezone.utc)) - signed_at).total_seconds())
    if skew > SIGV4_MAX_SKEW:
        return f"InvalidSignatureException: Signature expired: {timestamp} is too far from now"
    declared = headers.get("x-amz-content-sha256")
    if "x-amz-content-sha256" in signed and declared != hashlib.sha256(body).hexdigest():
        return "InvalidSignatureException: X-Amz-Content-SHA256 does not match the body"
    request = AWSRequest(
        method=method,
        url=f"http://{headers['host']}{target}",
        headers={name: headers[name] for name in signed},
        data=body,
    )
    request.context["timestamp"] = timestamp
    signer = SigV4Auth(Credentials(access_key, secret_key), scope[3], scope[2])
    canonical = signer.canonical_request(request)
    if signer.signed_headers(signer.headers_to_sign(request)) != fields["SignedHeaders"]:
        return mismatch
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, fields["Signature"]):
        return mismatch
    return None


#: InvokeModel's token counts, in its ``x-amzn-bedrock-*-token-count`` headers.
INVOKE_INPUT_TOKENS = 12
INVOKE_OUTPUT_TOKENS = 5
#: What a Llama model on Bedrock counts (its body has no ``usage``: only the headers tell).
LLAMA_INPUT_TOKENS = 20
LLAMA_OUTPUT_TOKENS = 7


def bedrock_reply(model: str, operation: str, request: Any, serial: int) -> Reply:
    if operation == "converse-stream":
        return converse_stream_reply(request, serial)
    if operation == "converse":
        reply = _json_reply(200, converse(request))
        reply.headers = [("Content-Type", "application/json"), *_amzn_headers()]
        return reply
    if operation == "invoke-with-response-stream":
        return invoke_stream_reply(serial)
    llama = model.startswith("meta.")
    counts = (
        (LLAMA_INPUT_TOKENS, LLAMA_OUTPUT_TOKENS)
        if llama
        else (INVOKE_INPUT_TOKENS, INVOKE_OUTPUT_TOKENS)
    )
    body = llama_generation(request) if llama else bedrock_anthropic_message(request)
    return Reply(
        status=200,
        headers=[
            ("Content-Type", "application/json"),
            *_amzn_headers(),
            ("X-Amzn-Bedrock-Invocation-Latency", "42"),
            ("X-Amzn-Bedrock-Input-Token-Count", str(counts[0])),
            ("X-Amzn-Bedrock-Output-Token-Count", str(counts[1])),
        ],
        body=json.dumps(body).encode(),
    )


def bedrock_anthropic_message(request: Any) -> dict[str, Any]:
    """An Anthropic model's own answer through InvokeModel (no ``model`` in the request)."""
    return {
        "id": "msg_bdrk___SERIAL__",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-haiku-20240307",
        "content": [{"type": "text", "text": "invoked #__SERIAL__"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": INVOKE_INPUT_TOKENS, "output_tokens": INVOKE_OUTPUT_TOKENS},
    }


def llama_generation(request: Any) -> dict[str, Any]:
    return {"generation": "llama #__SERIAL__", "stop_reason": "stop"}


def invoke_stream_chunks(serial: int) -> list[dict[str, Any]]:
    """The Anthropic events InvokeModelWithResponseStream wraps, the last with its metrics."""
    message = bedrock_anthropic_message({})
    message.update(id=f"msg_bdrk_{serial}", content=[], stop_reason=None)
    message["usage"] = {"input_tokens": INVOKE_INPUT_TOKENS, "output_tokens": 1}
    chunks: list[dict[str, Any]] = [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    chunks += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
        for t in ("invoked", " #", str(serial))
    ]
    chunks += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": INVOKE_OUTPUT_TOKENS},
        },
        {
            "type": "message_stop",
            "amazon-bedrock-invocationMetrics": {
                "inputTokenCount": INVOKE_INPUT_TOKENS,
                "outputTokenCount": INVOKE_OUTPUT_TOKENS,
                "invocationLatency": 42,
                "firstByteLatency": 10,
            },
        },
    ]
    return chunks


def invoke_stream_reply(serial: int) -> Reply:
    """``chunk`` events whose payload is ``{"bytes": base64(the model's event)}``."""
    events = [
        encode_event("chunk", {"bytes": base64.b64encode(_compact(chunk)).decode()})
        for chunk in invoke_stream_chunks(serial)
    ]
    reply = stream_reply(events, EVENTSTREAM_CONTENT_TYPE)
    reply.headers = [
        ("Content-Type", EVENTSTREAM_CONTENT_TYPE),
        ("X-Amzn-Bedrock-Content-Type", "application/json"),
        *_amzn_headers(),
    ]
    return reply


# --- Gemini --------------------------------------------------------------------------

#: Gemini's usage: the total counts the model's thinking too, so it is not prompt + candidates.
GEMINI_USAGE = {
    "promptTokenCount": 8,
    "candidatesTokenCount": 5,
    "thoughtsTokenCount": 3,
    "totalTokenCount": 16,
}
GEMINI_COUNT_TOKENS = 8


def _gemini_candidate(text: str, done: bool = True) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"parts": [{"text": text}], "role": "model"},
        "index": 0,
    }
    if done:
        candidate["finishReason"] = "STOP"
    return candidate


def gemini_response(model: str, text: str = "gemini #__SERIAL__") -> dict[str, Any]:
    return {
        "candidates": [_gemini_candidate(text)],
        "usageMetadata": GEMINI_USAGE,
        "modelVersion": model,
        "responseId": "resp-__SERIAL__",
    }


def gemini_stream_chunks(model: str) -> list[dict[str, Any]]:
    """``gemini #N`` in three chunks; each carries the usage so far, the last the totals."""
    chunks = []
    pieces = ("gemini", " #", "__SERIAL__")
    for number, piece in enumerate(pieces, start=1):
        last = number == len(pieces)
        usage = (
            GEMINI_USAGE
            if last
            else {
                "promptTokenCount": 8,
                "totalTokenCount": 8 + number,
                "candidatesTokenCount": number,
            }
        )
        chunks.append(
            {
                "candidates": [_gemini_candidate(piece, done=last)],
                "usageMetadata": usage,
                "modelVersion": model,
                "responseId": "resp-__SERIAL__",
            }
        )
    return chunks


def gemini_error(status: int, code: str, message: str) -> Reply:
    return _json_reply(status, {"error": {"code": status, "message": message, "status": code}})


def gemini_reply(received: Received, model: str, method: str, request: Any) -> Reply:
    """``/v1beta/models/{model}:{method}``; the key must come in a header or ``key=``."""
    if not (received.headers.get("x-goog-api-key") or received.query.get("key")):
        return gemini_error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers.")
    if method == "generateContent":
        return _json_reply(200, gemini_response(model))
    if method == "streamGenerateContent":
        chunks = gemini_stream_chunks(model)
        if received.query.get("alt") == "sse":
            # Google ends each event's lines with CRLF.
            return stream_reply([b"data: " + _compact(chunk) + b"\r\n\r\n" for chunk in chunks])
        return _json_reply(200, chunks)
    if method == "countTokens":
        return _json_reply(200, {"totalTokens": GEMINI_COUNT_TOKENS})
    if method == "embedContent":
        return _json_reply(200, {"embedding": {"values": EMBEDDING}})
    requests = request.get("requests", []) if isinstance(request, dict) else []
    return _json_reply(200, {"embeddings": [{"values": EMBEDDING} for _ in requests]})
