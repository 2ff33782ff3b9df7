"""
``/_stasis/``: the web UI's page and its assets, packaged with stasis.

The files are read once, from the package (:mod:`importlib.resources`), so an
installed stasis serves them offline and no path from a request ever reaches
the file system: a request names one of a fixed set of files or gets a 404.

Everything the page shows came from clients and models and is hostile by
assumption, so every answer here carries a strict Content-Security-Policy: no
inline script or style, nothing loaded from elsewhere. The page itself inserts
data only as text (``static/app.js``).
"""

from __future__ import annotations

import hashlib
from importlib.resources import files

from attrs import frozen
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from stasis.errors import MethodNotAllowed, NotFound, StasisError
from stasis.web.admin.answers import ErrorResource, send_error, set_headers
from stasis.web.site import OWN_METHODS

__all__ = ["SECURITY_HEADERS", "StaticFile", "UIResource", "static_files"]

#: The policy every UI answer carries: the page's own script, style and
#: fetches, images only as ``data:`` (the chart is inline SVG built by script),
#: no forms, no framing, no ``<base>``.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode("ascii")),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)

_CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}


@frozen
class StaticFile:
    """One packaged file, with the validator a browser revalidates it by."""

    body: bytes
    content_type: bytes
    etag: bytes

    @classmethod
    def of(cls, body: bytes, content_type: bytes) -> StaticFile:
        digest = hashlib.sha256(body).hexdigest()[:32]
        return cls(body=body, content_type=content_type, etag=b'"%s"' % digest.encode())


def static_files() -> dict[bytes, StaticFile]:
    """
    The files under ``static/`` by name, those of a known type only: a file
    without one (a stray editor backup) is not served rather than served as
    something a browser would sniff.
    """
    found: dict[bytes, StaticFile] = {}
    for item in files(__name__).joinpath("static").iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        content_type = _CONTENT_TYPES.get(suffix)
        if item.is_file() and content_type is not None:
            found[item.name.encode("utf-8")] = StaticFile.of(item.read_bytes(), content_type)
    return found


def _not_allowed() -> MethodNotAllowed:
    return MethodNotAllowed("stasis's web UI answers GET and HEAD only", OWN_METHODS)


def _refuse(request: Request, error: StasisError) -> int:
    """
    Answer with ``error`` as JSON, security headers included. The answer is
    finished: render must return ``NOT_DONE_YET``, or twisted.web writes again.
    """
    send_error(request, error, SECURITY_HEADERS)
    return NOT_DONE_YET


class _FileResource(Resource):
    isLeaf = True

    def __init__(self, file: StaticFile) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.file = file

    def render(self, request: Request) -> bytes | int:
        if request.postpath:
            # /_stasis/app.js/anything: a file has no children.
            return _refuse(request, NotFound("no such file in stasis's web UI"))
        if request.method not in OWN_METHODS:
            return _refuse(request, _not_allowed())
        file = self.file
        set_headers(request, SECURITY_HEADERS)
        request.setHeader(b"content-type", file.content_type)
        # Revalidated on every load, so a stasis upgraded under an open tab
        # never mixes an old app.js with a new page.
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"etag", file.etag)
        if request.setETag(file.etag) is not None:
            # If-None-Match matched: 304, no body (twisted.web set the code).
            return b""
        request.setHeader(b"content-length", b"%d" % len(file.body))
        # twisted.web drops the body of a HEAD answer but keeps its length.
        return file.body


class _Redirect(Resource):
    """``/_stasis`` to ``/_stasis/``: the page's relative URLs need the slash."""

    isLeaf = True

    def render(self, request: Request) -> bytes | int:
        if request.method not in OWN_METHODS:
            return _refuse(request, _not_allowed())
        set_headers(request, SECURITY_HEADERS)
        request.setResponseCode(308)
        request.setHeader(b"location", b"/_stasis/")
        request.setHeader(b"content-length", b"0")
        return b""


class UIResource(Resource):
    """
    ``/_stasis/``: ``index.html`` for the folder itself, the packaged assets
    by name, a JSON 404 for anything else. It is the ``ui`` of
    :class:`~stasis.web.admin.pages.AdminPages`, which has already applied
    the admin access rules and sends ``api/`` elsewhere.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.files = {name: _FileResource(file) for name, file in static_files().items()}
        self.files[b""] = self.files[b"index.html"]
        self._missing = ErrorResource(NotFound("no such file in stasis's web UI"), SECURITY_HEADERS)
        self._redirect = _Redirect()  # type: ignore[no-untyped-call]

    def render(self, request: Request) -> bytes | int:
        return self._redirect.render(request)

    def getChild(self, path: bytes, request: Request) -> IResource:
        return self.files.get(path) or self._missing
