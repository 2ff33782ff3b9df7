"""
The JSON admin API under ``/_stasis/api/`` (docs/admin-api.md): the store's
listing, entries, deletes and purges, and the daemon's figures.

Who may call it is :mod:`stasis.web.admin.access`'s business, settled before a
request gets here. Everything here goes through the :class:`~stasis.store.Store`
interface, so under ``--workers`` a delete or purge made through any worker
reaches the others through the store's change feed, as a ``stasis rm`` does.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from stasis.cache import Counters
from stasis.cache.housekeeping import UNBOUNDED, Bounds
from stasis.conversation import conversation
from stasis.entry_json import entry_json, info_json
from stasis.errors import (
    BadRequest,
    InternalError,
    MethodNotAllowed,
    NotFound,
    StasisError,
    StoreUnreadable,
)
from stasis.keys import WHOLE_KEY
from stasis.log import logger
from stasis.model import Entry, EntryFilter, Saving
from stasis.store import BadCursor, Store, StoreError
from stasis.times import iso8601
from stasis.web.admin.answers import Encoded, send_error, send_json
from stasis.web.admin.figures import StoreFigures
from stasis.web.exchange import Exchange
from stasis.web.status import stats_report
from stasis.web.traffic import KEPT_MINUTES, Seen, Traffic

__all__ = ["MAX_LIMIT", "AdminApi", "entry_filter"]

log = logger("stasis.admin")

#: The most entries one page lists, and how many when the client does not say.
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
#: How many models (and namespaces) the figures name, by tokens saved.
TOP_SAVINGS = 20

#: An entry whose answer and request are larger than this together is shown
#: from a thread (parsing and encoding a large answer takes a while).
INLINE_DETAIL_BYTES = 256 * 1024

#: The filter fields a listing and a purge take, as they are named in JSON.
_FILTER_FIELDS = ("provider", "namespace", "model", "path", "q")

Handler = Callable[[Request, str], Awaitable[Any]]


def _key(text: str) -> str:
    """``text`` as a whole key; anything else names no entry (a 404, as a missing key)."""
    key = text.lower()
    if not WHOLE_KEY.fullmatch(key):
        raise NotFound(f"no entry with key {text!r}: a key is 64 hex digits")
    return key


def entry_filter(given: Mapping[str, str]) -> EntryFilter:
    """
    The filter ``given`` names (query parameters or a purge's JSON); an empty
    ``provider``, ``model``, ``path`` or ``q`` is no filter (an empty search
    box), while an empty ``namespace`` is the default namespace.
    """

    def value(name: str) -> str | None:
        text = given.get(name)
        return text if text or (name == "namespace" and text is not None) else None

    return EntryFilter(
        provider=value("provider"),
        namespace=value("namespace"),
        model=value("model"),
        path=value("path"),
        text=value("q"),
    )


def _text(value: bytes, name: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{name} is not UTF-8") from None


def _query(request: Request) -> dict[str, str]:
    """The query parameters, each once: a parameter given twice is ambiguous."""
    args: dict[bytes, list[bytes]] = request.args or {}
    query: dict[str, str] = {}
    for raw, values in args.items():
        name = _text(raw, "a parameter's name")
        if len(values) > 1:
            raise BadRequest(f"the parameter {name} is given more than once")
        query[name] = _text(values[0], name)
    return query


def _whole(query: Mapping[str, str], name: str, low: int, high: int, default: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    # isascii: "²" is a digit to str.isdigit, and no number to int().
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}, not {text!r}")
    return int(text)


def _detail(entry: Entry) -> dict[str, Any]:
    """An entry as ``entries/KEY`` shows it: ``stasis show --json``, and the conversation."""
    talk = conversation(entry)
    return {
        **entry_json(entry),
        "conversation": [{"role": m.role, "text": m.text} for m in talk.messages],
        "answer": talk.answer,
    }


class AdminApi(Resource):
    """``/_stasis/api/``: one leaf routing by path and method (see docs/admin-api.md)."""

    isLeaf = True

    def __init__(
        self,
        store: Store,
        counters: Counters,
        traffic: Traffic,
        bounds: Bounds = UNBOUNDED,
        in_thread: Callable[[Callable[[], bytes]], Deferred[bytes]] | None = None,
    ) -> None:
        """``in_thread`` runs the work a large entry's view takes off the reactor (None: inline)."""
        super().__init__()  # type: ignore[no-untyped-call]
        self.store = store
        self.in_thread = in_thread
        self.counters = counters
        self.traffic = traffic
        self.bounds = bounds
        #: The store's figures, read at most so often (see stasis.web.admin.figures).
        self.figures = StoreFigures(store, TOP_SAVINGS)
        #: path -> method -> handler; the key of ``entries/KEY`` is passed as its argument.
        self._routes: dict[str, dict[bytes, Handler]] = {
            "stats": {b"GET": self._stats},
            "entries": {b"GET": self._list},
            "entries/": {b"GET": self._get, b"DELETE": self._delete},
            "purge": {b"POST": self._purge},
            "series": {b"GET": self._series},
            "recent": {b"GET": self._recent},
        }

    def render(self, request: Request) -> object:
        exchange = Exchange(request)
        d = ensureDeferred(self._answer(request))
        d.addCallbacks(self._done, self._failed, callbackArgs=(exchange,), errbackArgs=(exchange,))
        return NOT_DONE_YET

    def _handler(self, request: Request) -> tuple[Handler, str]:
        path = [_text(part, "the path") for part in request.postpath or []]
        argument = ""
        if len(path) == 2 and path[0] == "entries" and path[1]:
            name, argument = "entries/", path[1]
        elif len(path) == 1:
            name = path[0]
        else:
            raise NotFound("no such admin API endpoint")
        methods = self._routes.get(name)
        if methods is None:
            raise NotFound("no such admin API endpoint")
        method = b"GET" if request.method == b"HEAD" else request.method
        handler = methods.get(method)
        if handler is None:
            allowed = tuple(sorted({*methods, *((b"HEAD",) if b"GET" in methods else ())}))
            raise MethodNotAllowed(
                f"{request.method.decode('latin-1')} is not one of {b', '.join(allowed).decode()}",
                allowed,
            )
        return handler, argument

    async def _answer(self, request: Request) -> Any:
        handler, argument = self._handler(request)
        return await handler(request, argument)

    def _done(self, document: Any, exchange: Exchange) -> None:
        if exchange.open:
            exchange.finished = True
            send_json(exchange.request, document)

    def _failed(self, failure: Failure, exchange: Exchange) -> None:
        error = failure.value
        if isinstance(error, BadCursor):
            error = BadRequest(f"cursor is not one a listing gave: {error}")
        elif isinstance(error, StoreError):
            log.warn("the admin API cannot use the cache database: {error}", error=error)
            error = StoreUnreadable(f"cannot use the cache database: {error}")
        elif not isinstance(error, StasisError):
            log.failure("the admin API failed", failure)
            error = InternalError("stasis failed to serve this request; see its log")
        if exchange.open:
            exchange.finished = True
            send_error(exchange.request, error)

    # The endpoints

    async def _stats(self, request: Request, _: str) -> Any:
        figures = await self.figures.read()
        return {
            **stats_report(figures.stats, self.counters, self.bounds),
            "tokensSavedByModel": [_saving_json("model", s) for s in figures.by_model],
            "tokensSavedByNamespace": [_saving_json("namespace", s) for s in figures.by_namespace],
        }

    async def _list(self, request: Request, _: str) -> Any:
        query = _query(request)
        where = entry_filter(query)
        limit = _whole(query, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
        cursor = query.get("cursor") or None
        page = await self.store.list_entries(where, limit, cursor)
        return {"entries": [info_json(info) for info in page.entries], "cursor": page.cursor}

    async def _get(self, request: Request, text: str) -> Any:
        key = _key(text)
        entry = await self.store.get(key, request=True)
        if entry is None:
            raise NotFound(f"no entry with key {key}")
        stored = len(entry.body) + (0 if entry.request is None else len(entry.request.body))
        if stored <= INLINE_DETAIL_BYTES or self.in_thread is None:
            return _detail(entry)
        # An answer of up to 64 MiB, parsed, reassembled and encoded: on a
        # thread, so that the hits go on meanwhile.
        encoded: bytes = await self.in_thread(lambda: json.dumps(_detail(entry)).encode())
        return Encoded(encoded)

    async def _delete(self, request: Request, text: str) -> Any:
        key = _key(text)
        deleted = await self.store.delete(key)
        self.figures.forget()
        if not deleted:
            raise NotFound(f"no entry with key {key}")
        return {"deleted": True}

    async def _purge(self, request: Request, _: str) -> Any:
        given = _json_object(request)
        unknown = sorted(set(given) - {*_FILTER_FIELDS, "everything"})
        if unknown:
            raise BadRequest(f"a purge's filter has no field {', '.join(unknown)}")
        everything = given.pop("everything", False)
        if not isinstance(everything, bool):
            raise BadRequest("everything must be true or false")
        for name, value in given.items():
            if not isinstance(value, str):
                raise BadRequest(f"{name} must be a string")
        where = entry_filter(given)
        if where == EntryFilter() and not everything:
            raise BadRequest('an empty filter purges every entry: say so with {"everything": true}')
        purged = await self.store.purge(where)
        self.figures.forget()
        return {"purged": purged}

    async def _series(self, request: Request, _: str) -> Any:
        minutes = _whole(_query(request), "minutes", 1, KEPT_MINUTES, 60)
        return {
            "step": 60,
            "points": [
                {"at": iso8601(at), "hits": hits, "misses": misses, "bypasses": bypasses}
                for at, hits, misses, bypasses in self.traffic.series(minutes)
            ],
        }

    async def _recent(self, request: Request, _: str) -> Any:
        after = _whole(_query(request), "after", 0, 2**53, 0)
        last, requests = self.traffic.recent(after)
        return {"last": last, "requests": [_seen_json(seq, seen) for seq, seen in requests]}


def _saving_json(column: str, saving: Saving) -> dict[str, Any]:
    return {column: saving.value, "entries": saving.entries, "tokensSaved": saving.tokens_saved}


def _seen_json(seq: int, seen: Seen) -> dict[str, Any]:
    """One of the recent requests, as ``recent`` lists it."""
    return {
        "seq": seq,
        "at": iso8601(seen.at),
        "method": seen.method,
        "path": seen.path,
        "status": seen.status,
        "cache": seen.cache,
        "detail": seen.detail,
        "provider": seen.provider,
        "model": seen.model,
        "namespace": seen.namespace,
        "key": seen.key,
        "ms": round(seen.seconds * 1000, 1),
        "upstreamMs": None
        if seen.upstream_seconds is None
        else round(seen.upstream_seconds * 1000, 1),
        "error": None if seen.error is None else dict(seen.error),
    }


def _json_object(request: Request) -> dict[str, Any]:
    content = request.content
    body = b"" if content is None else (content.seek(0), content.read())[1]
    try:
        document = json.loads(body)
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(document, dict):
        raise BadRequest("the body must be a JSON object")
    return document
