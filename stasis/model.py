"""
What the cache holds and what is asked of it: plain values, importing nothing but attrs.

Providers read token usage into these, the store keeps and finds entries by
them, and the engine, the CLI and the web UI pass them around; so they live
apart from all of those, and ``import stasis.providers`` does not pull in a
database driver or a web server.
"""

from __future__ import annotations

import enum

from attrs import field, frozen

__all__ = [
    "Change",
    "ChangeKind",
    "Entry",
    "EntryFilter",
    "EntryInfo",
    "Page",
    "Saving",
    "StoreStats",
    "StoredRequest",
    "TokenUsage",
]


@frozen
class TokenUsage:
    """Tokens the upstream billed for the recorded call; every hit saves ``total`` again."""

    input: int = 0
    output: int = 0
    total: int = 0

    @classmethod
    def of(cls, input: int, output: int, total: int = 0) -> TokenUsage:
        """Usage from its parts; ``total`` is input + output unless the API reported one."""
        return cls(input=input, output=output, total=total or input + output)


#: Per event of a streamed answer: (byte offset where it ends, ms after the start).
Timeline = tuple[tuple[int, int], ...]


@frozen
class StoredRequest:
    """
    What an entry's key was derived from, less its credential.

    Kept so that ``stasis show``, the cassettes and the replay-miss
    diagnostics can say which request an answer belongs to. ``query`` has any
    credential parameter (Gemini's ``key=``) removed; ``headers`` are only
    those that took part in the key (lower-case names, e.g.
    ``anthropic-version``), never a credential.
    """

    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    #: The ignore rules (JSON paths, as written) left out of its key.
    ignored: tuple[str, ...] = ()


@frozen
class Entry:
    """
    One cached response, ready to be written back to a client.

    ``headers`` are the upstream's end-to-end headers as raw pairs, already
    stripped of hop-by-hop, framing and per-connection fields, so a hit writes
    them unchanged. ``body`` is the decoded body, byte for byte as the upstream
    meant it.
    """

    key: str
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    created_at: float
    method: str = "POST"
    path: str = ""
    provider: str = ""
    model: str | None = None
    namespace: str = ""
    usage: TokenUsage = TokenUsage()
    expires_at: float | None = None
    last_hit_at: float | None = None
    hit_count: int = 0
    #: For a streamed answer, per event: (byte offset where it ends, ms after the start).
    timeline: Timeline | None = None
    #: The key this answer has in the shared credential scope (equal to ``key``
    #: for an entry stored there): the key it is exported under. Empty for an
    #: entry stored before stasis kept it.
    shared_key: str = ""
    #: The request, when read with the entry (``Store.get(key, request=True)``).
    request: StoredRequest | None = None
    #: Which of a key's answers this is (``X-Stasis-Samples``): 0 for the first,
    #: stored under the key itself; sample ``i`` has a key of its own.
    sample: int = 0

    @property
    def portable_key(self) -> str:
        """The key this answer is exported and imported under."""
        return self.shared_key or self.key

    def is_fresh(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


@frozen
class EntryInfo:
    """An entry's facts without its answer: what a listing shows, cheap to read by the thousand."""

    key: str
    status: int
    created_at: float
    method: str
    path: str
    provider: str
    model: str | None
    namespace: str
    usage: TokenUsage
    expires_at: float | None
    last_hit_at: float | None
    hit_count: int
    #: The stored body's length in bytes (decoded, as a hit sends it).
    size: int
    shared_key: str = ""
    #: Which of its key's answers this is (``X-Stasis-Samples``); 0 for the first.
    sample: int = 0

    @property
    def portable_key(self) -> str:
        return self.shared_key or self.key

    @classmethod
    def of(cls, entry: Entry) -> EntryInfo:
        return cls(
            key=entry.key,
            status=entry.status,
            created_at=entry.created_at,
            method=entry.method,
            path=entry.path,
            provider=entry.provider,
            model=entry.model,
            namespace=entry.namespace,
            usage=entry.usage,
            expires_at=entry.expires_at,
            last_hit_at=entry.last_hit_at,
            hit_count=entry.hit_count,
            size=len(entry.body),
            shared_key=entry.shared_key,
            sample=entry.sample,
        )


@frozen
class EntryFilter:
    """
    Which entries a listing or a purge covers; a field left ``None`` matches every entry.

    Times are POSIX seconds of ``created_at``: ``since`` inclusive, ``until`` exclusive.
    """

    provider: str | None = None
    model: str | None = None
    namespace: str | None = None
    #: The request path (``/v1/chat/completions``), exactly.
    path: str | None = None
    since: float | None = None
    until: float | None = None
    #: Found, case-insensitively, in the entry's model, its prompt or its
    #: answer's text (:mod:`stasis.search`); "" finds every entry.
    text: str | None = None

    def matches(self, entry: Entry | EntryInfo) -> bool:
        """
        Whether ``entry`` is one this filter covers (the stores say so in SQL).

        A filter with :attr:`text` needs the whole :class:`Entry`, request
        included: an :class:`EntryInfo` has neither prompt nor answer to look
        in, and is refused (``ValueError``) rather than judged on its model.
        """
        return (
            (self.provider is None or entry.provider == self.provider)
            and (self.model is None or entry.model == self.model)
            and (self.namespace is None or entry.namespace == self.namespace)
            and (self.path is None or entry.path == self.path)
            and (self.since is None or entry.created_at >= self.since)
            and (self.until is None or entry.created_at < self.until)
            and (not self.text or self._text_in(entry))
        )

    def _text_in(self, entry: Entry | EntryInfo) -> bool:
        if not isinstance(entry, Entry):
            raise ValueError("a text search needs the entry itself, not its EntryInfo")
        # Here, not at the top: this module imports nothing but attrs.
        from stasis.search import search_text, searchable

        return searchable(self.text or "") in search_text(entry)


@frozen
class Page:
    """One page of a listing, newest first."""

    entries: tuple[EntryInfo, ...]
    #: Hand back to get the entries after these; None when there are no more.
    cursor: str | None = None


@frozen
class Saving:
    """The tokens the hits on one model's (or namespace's) entries saved."""

    #: The model or the namespace; None for entries whose model is not known.
    value: str | None
    entries: int
    #: Each entry's total tokens times its hits, summed.
    tokens_saved: int


@frozen
class StoreStats:
    """The figures ``/health`` and ``/stats`` report; times are POSIX seconds."""

    entries: int
    tokens_saved: int
    db_size_bytes: int
    oldest: float | None
    newest: float | None
    #: What the entries cost in the database by the store's estimate (their
    #: packed values plus a fixed overhead per row): what ``--max-size`` bounds.
    #: Less than ``db_size_bytes``, which also counts free pages and the WAL.
    stored_bytes: int = 0


class ChangeKind(enum.Enum):
    """What happened to the keys of a :class:`Change`."""

    #: Stored, new or replacing an answer of the same key.
    PUT = "put"
    #: Removed one by one (``rm``, the admin API).
    DELETE = "delete"
    #: Removed by a filter or by expiry (``purge``, ``prune``).
    PURGE = "purge"
    #: The feed lost track of what changed (the database was replaced, or this
    #: process did not look for longer than changes are kept): forget everything.
    RESET = "reset"


@frozen
class Change:
    """
    One committed change to the store, as its change feed publishes it.

    In-memory layers in front of the store (hot entries, the key filter,
    prepared heads) subscribe and forget exactly these keys.
    """

    kind: ChangeKind
    keys: tuple[str, ...] = field(default=())
    #: True when this process made the change; False when it was seen in the
    #: database (another daemon, a management command, a raw SQL client).
    local: bool = True
