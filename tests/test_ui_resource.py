"""
``/_stasis/``, the web UI's files, over HTTP in memory: every answer carries
the strict Content-Security-Policy and its companions, only the packaged files
are served (no listing, no path out of the package), and the page itself holds
nothing the policy would have to block.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.resource import Resource
from twisted.web.server import Request

from stasis.cache import Counters
from stasis.web.admin.access import AdminAccess
from stasis.web.admin.pages import AdminPages
from stasis.web.root import Root
from stasis.web.site import StasisSite
from stasis.web.ui import CSP, UIResource, static_files
from tests.memory_store import MemoryStore

SECURITY = {
    b"content-security-policy": CSP.encode(),
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"x-frame-options": b"DENY",
}


class Upstream(Resource):
    """The proxy's place in the tree: it must never see a /_stasis request."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[bytes] = []

    def render(self, request: Request) -> bytes:
        self.paths.append(request.uri)
        return b"proxied"


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


def _serve(upstream: Upstream, data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    reactor = MemoryReactorClock()
    store = MemoryStore(reactor)
    # The tree as stasis.service builds it, but an admin API that is not the UI's business.
    admin = AdminPages(AdminAccess(token="t", given=True), Resource(), UIResource())
    root = Root(upstream, store, Counters(), admin=admin)  # type: ignore[arg-type]
    site = StasisSite(root, max_body_bytes=1000, reactor=reactor)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    assert channel is not None
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    head, _, body = transport.value().partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b": ")
        headers[name.lower()] = value
    if headers.get(b"transfer-encoding") == b"chunked":
        body = _unchunk(body)
    return int(status.split()[1]), headers, body


def _unchunk(body: bytes) -> bytes:
    out = b""
    while True:
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return out
        out, body = out + rest[:n], rest[n + 2 :]


def get(
    upstream: Upstream, path: bytes, method: bytes = b"GET", extra: bytes = b"", body: bytes = b""
) -> tuple[int, dict[bytes, bytes], bytes]:
    head = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % (method, path, extra)
    return _serve(upstream, head + body)


def _secure(headers: dict[bytes, bytes]) -> None:
    for name, value in SECURITY.items():
        assert headers.get(name) == value, name


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        (b"/_stasis/", b"text/html; charset=utf-8"),
        (b"/_stasis/index.html", b"text/html; charset=utf-8"),
        (b"/_stasis/app.js", b"text/javascript; charset=utf-8"),
        (b"/_stasis/app.css", b"text/css; charset=utf-8"),
        (b"/_stasis/favicon.svg", b"image/svg+xml"),
    ],
)
def test_each_file_is_served_with_its_type_and_the_security_headers(
    upstream: Upstream, path: bytes, content_type: bytes
) -> None:
    status, headers, body = get(upstream, path)
    assert status == 200
    assert headers[b"content-type"] == content_type
    assert headers[b"cache-control"] == b"no-cache"
    assert headers[b"etag"].startswith(b'"')
    assert int(headers[b"content-length"]) == len(body) > 0
    _secure(headers)
    assert upstream.paths == []


def test_the_folder_is_the_page_and_revalidates_by_etag(upstream: Upstream) -> None:
    _, headers, page = get(upstream, b"/_stasis/")
    assert get(upstream, b"/_stasis/index.html")[2] == page
    status, again, body = get(
        upstream, b"/_stasis/", extra=b"If-None-Match: %s\r\n" % headers[b"etag"]
    )
    assert (status, body) == (304, b"")
    _secure(again)


def test_head_answers_the_length_without_the_body(upstream: Upstream) -> None:
    _, _, page = get(upstream, b"/_stasis/app.js")
    status, headers, body = get(upstream, b"/_stasis/app.js", method=b"HEAD")
    assert status == 200
    assert body == b""
    assert int(headers[b"content-length"]) == len(page)
    _secure(headers)


def test_the_bare_prefix_redirects_to_the_folder(upstream: Upstream) -> None:
    status, headers, _ = get(upstream, b"/_stasis")
    assert status == 308
    assert headers[b"location"] == b"/_stasis/"
    _secure(headers)


@pytest.mark.parametrize(
    "path",
    [
        b"/_stasis/nope.js",
        b"/_stasis/static/app.js",
        b"/_stasis/app.js/more",
        b"/_stasis/../stats",
        b"/_stasis/../../etc/passwd",
        b"/_stasis/%2e%2e/__init__.py",
        b"/_stasis/..%2f__init__.py",
        b"/_stasis/..%2f..%2fsetup.cfg",
        b"/_stasis/%2fetc%2fpasswd",
        b"/_stasis/__init__.py",
        b"/_stasis/static/",
    ],
)
def test_anything_but_a_packaged_file_is_a_json_404(upstream: Upstream, path: bytes) -> None:
    status, headers, body = get(upstream, path)
    assert status == 404
    assert json.loads(body)["error"]["type"] == "stasis_not_found"
    assert headers[b"content-type"] == b"application/json"
    _secure(headers)
    assert upstream.paths == []


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"PATCH"])
def test_other_methods_are_refused_and_never_proxied(upstream: Upstream, method: bytes) -> None:
    # A write the admin access rules let through (JSON, the token): the UI still refuses it.
    for path in (b"/_stasis/", b"/_stasis/app.js", b"/_stasis"):
        extra = (
            b"Content-Length: 2\r\nContent-Type: application/json\r\nAuthorization: Bearer t\r\n"
        )
        status, headers, body = get(upstream, path, method=method, extra=extra, body=b"{}")
        assert status == 405, path
        assert headers[b"allow"] == b"GET, HEAD"
        assert json.loads(body)["error"]["type"] == "stasis_method_not_allowed"
        _secure(headers)
    assert upstream.paths == []


def test_other_paths_still_go_to_the_upstream(upstream: Upstream) -> None:
    status, _, body = get(upstream, b"/_stasisx/", method=b"POST", extra=b"Content-Length: 0\r\n")
    assert (status, body) == (200, b"proxied")


class _Page(HTMLParser):
    """What in a page a strict CSP would block, or that loads from elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=…>")
            if name == "style":
                self.problems.append(f"<{tag} style=…>")
            if name in ("src", "href") and value and ("//" in value or ":" in value):
                self.problems.append(f"<{tag} {name}={value}> is not the page's own")
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "script":
            src = dict(attrs).get("src")
            if not src:
                self.problems.append("<script> without src")
            self.scripts.append(src or "")
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append(f"inline script body: {data.strip()[:40]!r}")


def test_the_page_holds_nothing_the_policy_would_block() -> None:
    page = _Page()
    page.feed(static_files()[b"index.html"].body.decode("utf-8"))
    assert page.problems == []
    assert page.scripts == ["app.js"]


def test_the_script_never_writes_markup() -> None:
    script = static_files()[b"app.js"].body.decode("utf-8")
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
    ):
        assert sink not in script, sink
