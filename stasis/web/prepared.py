"""
Hits written from header bytes encoded once per cached entry.

A hit's headers are the same bytes every time it is served, apart from the
``Date`` twisted.web adds and the entry's ``Age``. Setting them one by one on
the request makes twisted.web encode, validate and re-serialise each of them
on every hit, which costs a busy daemon more than the rest of the hit does; so
they are encoded once, when an entry is first served, and written with the body
in one go.

Only a complete, plain answer goes this way: a ``HEAD`` request, a status that
has no body, or a paced replay takes twisted.web's usual path.

Writing the head by hand relies on twisted.web's HTTP/1.x internals rather
than on its interfaces (see :data:`RELIES_ON`): the ``Request`` attributes
that ``write()`` and ``finish()`` consult to know that the head is out, and
the channel's ``writeSequence``. So it is done only on an HTTP/1.x
``HTTPChannel`` (an HTTP/2 stream frames its headers itself), and never on a
Twisted that lacks one of them: hits then take the usual path, slower.
tests/test_private_apis.py fails, naming the name, when a Twisted upgrade
removes one.
"""

from __future__ import annotations

import weakref

from attrs import frozen
from twisted.web import http
from twisted.web.http import NO_BODY_CODES, HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from stasis.cache_status import HIT, note_status
from stasis.model import Change, ChangeKind, Entry
from stasis.web.site import head_defaults
from stasis.web.traffic import note_about

__all__ = [
    "MISSING",
    "RELIES_ON",
    "PreparedHead",
    "PreparedHeads",
    "can_write_prepared",
    "write_prepared",
]

#: What :func:`write_prepared` needs of twisted.web beyond its interfaces:
#: ``Request.write`` writes the head unless ``startedWriting`` says it is out,
#: ``finish()`` writes it (again) the same way, ``sentLength`` is the body's
#: length for the access log; the status line takes ``clientproto`` and
#: ``code_message``; the whole answer goes out through ``HTTPChannel.writeSequence``.
RELIES_ON: tuple[tuple[type, str], ...] = (
    (http.Request, "startedWriting"),
    (http.Request, "sentLength"),
    (http.Request, "clientproto"),
    (http.Request, "code_message"),
    (http.HTTPChannel, "writeSequence"),
)


def _missing(relies_on: tuple[tuple[type, str], ...] = RELIES_ON) -> tuple[str, ...]:
    """The full names of those of ``relies_on`` that this Twisted lacks."""
    return tuple(
        f"{owner.__module__}.{owner.__qualname__}.{name}"
        for owner, name in relies_on
        if not hasattr(owner, name)
    )


#: The names in :data:`RELIES_ON` this Twisted lacks: any, and no hit is written prepared.
MISSING = _missing()

#: The protocol versions whose head is a status line and header lines on the wire.
_HTTP1 = frozenset((b"HTTP/1.1", b"HTTP/1.0"))


def _canonical(headers: tuple[tuple[bytes, bytes], ...]) -> list[tuple[bytes, bytes]]:
    """Header pairs validated and spelled as twisted.web would write them."""
    checked = Headers()
    for name, value in headers:
        checked.addRawHeader(name, value)
    return [(name, value) for name, values in checked.getAllRawHeaders() for value in values]


@frozen
class PreparedHead:
    """One entry's hit headers as bytes: header lines, each ending CRLF."""

    #: The entry these bytes were made from; not kept alive by them.
    entry: weakref.ref[Entry]
    #: Every header of the hit except Date, Age and Content-Length.
    lines: bytes
    #: Lower-case names in ``lines``: twisted.web's defaults of the same name give way.
    names: frozenset[bytes]

    @classmethod
    def of(cls, entry: Entry) -> PreparedHead:
        pairs = _canonical(
            (
                *entry.headers,
                (b"x-stasis-key", entry.key.encode("ascii")),
                (b"x-stasis-status", HIT.status.value),
                (b"cache-status", HIT.cache_status()),
            )
        )
        lines = b"".join(name + b": " + value + b"\r\n" for name, value in pairs)
        names = frozenset(name.lower() for name, _ in pairs) | {b"age", b"content-length"}
        return cls(entry=weakref.ref(entry), lines=lines, names=names)


class PreparedHeads:
    """
    Prepared heads by cache key, at most ``size`` of them (oldest forgotten first).

    A head is only ever used for the very entry object it was made from: a
    refreshed or re-read entry is a new object, and gets new bytes. Heads do
    not keep their entries (and so their bodies) alive; the hot cache alone
    decides which answers stay in memory.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._heads: dict[str, PreparedHead] = {}

    def __len__(self) -> int:
        return len(self._heads)

    def on_change(self, change: Change) -> None:
        """Forget removed keys' heads (a changed answer is a new entry, with new bytes anyway)."""
        if change.kind is ChangeKind.RESET:
            self._heads.clear()
        elif change.kind is not ChangeKind.PUT:
            for key in change.keys:
                self._heads.pop(key, None)

    def of(self, entry: Entry) -> PreparedHead:
        head = self._heads.get(entry.key)
        if head is not None and head.entry() is entry:
            return head
        head = PreparedHead.of(entry)
        if entry.key not in self._heads and len(self._heads) >= self._size:
            del self._heads[next(iter(self._heads))]
        self._heads[entry.key] = head
        return head


def can_write_prepared(request: Request, entry: Entry) -> bool:
    """
    Whether ``entry`` can answer ``request`` as one prepared write.

    Only over HTTP/1.x: an HTTP/2 request's channel is a stream
    (``twisted.web._http2.H2Stream``) that puts what it is given into DATA
    frames, so a status line written to it would reach the client as body.
    A request whose client has gone has no channel at all.
    """
    return (
        not MISSING
        # HTTPChannel bound at import: twisted.web.http is a deprecation proxy
        # whose every attribute lookup costs a microsecond.
        and isinstance(getattr(request, "channel", None), HTTPChannel)
        and request.clientproto in _HTTP1
        and not request.startedWriting
        and request.method != b"HEAD"
        and (entry.status not in NO_BODY_CODES)
    )


def write_prepared(request: Request, entry: Entry, head: PreparedHead, age: int) -> None:
    """
    Write the whole answer to ``request``; the caller then finishes it.

    The headers already on the request (``Connection: close`` when the client
    asked for it), and ``Server`` and ``Date`` (:func:`head_defaults`), are
    written too, unless the entry carries its own of the same name.
    """
    body = entry.body
    request.setResponseCode(entry.status)
    lines = [request.clientproto, b" %d %s\r\n" % (request.code, request.code_message)]
    for name, values in request.responseHeaders.getAllRawHeaders():
        if name.lower() not in head.names:
            for value in values:
                lines.append(name + b": " + value + b"\r\n")
    lines.append(head_defaults(request, head.names))
    lines.append(head.lines)
    lines.append(b"Age: %d\r\nContent-Length: %d\r\n\r\n" % (age, len(body)))
    lines.append(body)
    request.startedWriting = 1
    request.sentLength = len(body)
    note_status(request, HIT.status)
    note_about(request, entry, entry.key)
    request.channel.writeSequence(lines)
