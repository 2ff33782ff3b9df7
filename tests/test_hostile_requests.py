"""
Whatever a client sends, a client's mistake is a 4xx, never a 500 or a
``critical`` log line with a traceback: hypothesis writes request lines,
headers (stasis's own directives among them) and bodies, and the whole server
side answers them in memory, the engine over the in-memory store and a fake
upstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import LogLevel, globalLogPublisher

from stasis.web.proxy import ProxyResource
from stasis.web.root import Root
from stasis.web.site import StasisSite
from tests.test_proxy_resource import Harness
from tests.test_site import _serve

METHODS = st.sampled_from(["POST", "GET", "PUT", "DELETE", "CONNECT", "OPTIONS", "PATCH", "X"])
TOKEN = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"),
    min_size=1,
    max_size=20,
)
TARGET = st.one_of(
    st.sampled_from(
        [
            "/v1/chat/completions",
            "/v1/messages",
            "/model/anthropic.claude-3-haiku-20240307-v1:0/converse",
            "/v1beta/models/gemini-2.0-flash:generateContent",
            "/_stasis/with/mode=replay/v1/chat/completions",
            "/_stasis/with/",
            "*",
        ]
    ),
    st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60
    ),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60).map(
        lambda tail: "/v1/chat/completions" + tail
    ),
)
VALUE = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40),
    st.sampled_from(["9" * 5000, "-1", "0", "1e999", "replay", "bypass", "nan", "", " "]),
)
HEADER_NAME = st.one_of(
    st.sampled_from(
        [
            "X-Stasis-Mode",
            "X-Stasis-TTL",
            "X-Stasis-Namespace",
            "X-Stasis-Replay",
            "X-Stasis-Ignore",
            "X-Stasis-Samples",
            "Cache-Control",
            "Content-Type",
            "Authorization",
            "x-api-key",
            "anthropic-version",
            "Accept",
            "Accept-Encoding",
            "Content-Encoding",
            "Transfer-Encoding",
            "Expect",
            "Host",
        ]
    ),
    TOKEN,
)
BODY = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b'{"model": "\\ud800", "messages": []}',
            b'{"model": "gpt", "messages": [], "n": 1e999}',
            b'{"model": "gpt", "messages": [], "n": ' + b"9" * 5000 + b"}",
            b'{"model": "gpt", "stream": true, "messages": [{"role": "user", "content": "x"}]}',
            b"[" * 5000 + b"]" * 5000,
        ]
    ),
)


@pytest.fixture
def criticals() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") in (LogLevel.critical, LogLevel.error) or event.get(
            "log_failure"
        ):
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield seen
    finally:
        globalLogPublisher.removeObserver(observe)


def site_of(harness: Harness) -> StasisSite:
    proxy = ProxyResource(harness.engine)
    root = Root(proxy, harness.store, harness.counters)
    return StasisSite(root, max_body_bytes=10_000, upstream=proxy, reactor=harness.clock)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=METHODS,
    target=TARGET,
    headers=st.lists(st.tuples(HEADER_NAME, VALUE), max_size=6),
    body=BODY,
)
def test_no_request_is_a_500_or_a_critical_log_line(
    criticals: list[dict[str, Any]],
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
) -> None:
    harness = Harness()
    site = site_of(harness)
    head = f"{method} {target} HTTP/1.1\r\nHost: stasis\r\n".encode("latin-1")
    for name, value in headers:
        if name.lower() not in ("host", "transfer-encoding", "content-length"):
            head += f"{name}: {value}\r\n".encode("latin-1")
    head += b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    response, _ = _serve(site, head + body)
    harness._settle()
    status = response.split(b" ", 2)[1] if response.startswith(b"HTTP/1.1 ") else b""
    assert status != b"500", response[:400]
    assert criticals == [], [event.get("log_format") for event in criticals]
