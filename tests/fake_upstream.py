"""
A fake LLM upstream on a real loopback socket, speaking the providers' wire formats.

It runs in its own thread (stdlib ``http.server``), so tests can drive it with
the official, blocking SDKs while a real ``twistd -n stasis`` sits in between.
Every request it receives is recorded, so a test can prove how many calls
reached the upstream and what headers they carried.
"""

from __future__ import annotations

import gzip
import itertools
import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from attrs import define, field

__all__ = ["FakeUpstream", "Received", "Reply"]


@define
class Received:
    """One request as the upstream saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

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


Handler = Callable[[Received], Reply]


def _json_reply(status: int, document: Any, gzipped: bool = False) -> Reply:
    return Reply(
        status=status,
        headers=[("Content-Type", "application/json"), ("x-request-id", "req_fake")],
        body=json.dumps(document).encode(),
        gzip=gzipped,
    )


@define
class FakeUpstream:
    """
    Answers like api.openai.com and api.anthropic.com, deterministically per call.

    Each answer carries a serial number, so a second upstream call for the same
    request is visible in the body as well as in :attr:`received`.
    """

    received: list[Received] = field(factory=list)
    #: Replace to script a different answer (status, body, headers).
    handler: Handler | None = None
    gzip: bool = False
    _serial: Any = field(factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

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
                    upstream.received.append(received)
                    serial = next(upstream._serial)
                reply = (upstream.handler or upstream.default_reply)(received)
                if reply.status == 0:  # scripted: drop the connection without answering
                    self.close_connection = True
                    self.connection.close()
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
        if path.endswith("/chat/completions"):
            return _json_reply(200, chat_completion(request))
        if path.endswith("/embeddings"):
            return _json_reply(200, embedding(request))
        if path.endswith("/v1/messages"):
            return _json_reply(200, anthropic_message(request))
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
