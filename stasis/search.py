"""
Text search over entries: what of an entry a search looks in, and how a query is compared.

A search finds a case-insensitive substring in an entry's model, its prompt
(the request's messages, :mod:`stasis.conversation`) or its answer's text.
The stores keep that text beside each entry, written at put
(``entries.search_text``), so a search reads no answer and parses no JSON;
the in-memory store and :meth:`EntryFilter.matches
<stasis.model.EntryFilter.matches>` work it out from the entry with the same
function, so every store finds exactly the same entries.

Both sides are casefolded and made storable here, once: the SQL only looks
for one string inside another (``instr``, ``strpos``), never with ``LIKE``,
in which a user's ``%`` and ``_`` would be patterns.
"""

from __future__ import annotations

from stasis.conversation import conversation
from stasis.model import Entry

__all__ = ["ANSWER_BYTES", "SEARCH_TEXT_BYTES", "search_text", "searchable"]

#: The search text kept for an entry is at most this long (UTF-8): a 10 MB
#: prompt costs its entry 64 KiB of search text, not another 10 MB, and a
#: search reads at most that much a row.
SEARCH_TEXT_BYTES = 64 * 1024
#: The answer's share of it, at most: a long answer leaves room for the prompt.
ANSWER_BYTES = 16 * 1024


def searchable(text: str) -> str:
    """
    ``text`` as it is searched and stored: casefolded, and with what no
    database can hold (a lone surrogate, NUL) made U+FFFD, on both sides
    alike, so that a query with one finds what a stored text with one says.
    """
    folded = text.casefold().replace("\x00", "\ufffd")
    try:
        folded.encode("utf-8")
    except UnicodeEncodeError:
        return folded.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return folded


def _cut(text: str, limit: int) -> str:
    """``text``'s first ``limit`` bytes of UTF-8, a character cut in two left out."""
    if len(text) * 4 <= limit:
        return text  # cannot be longer (most texts: no encoding needed)
    return text.encode("utf-8", "surrogatepass")[:limit].decode("utf-8", "ignore")


def search_text(entry: Entry) -> str:
    """
    What a search looks in for ``entry``: its model, its answer's text, and
    its request's messages, the last first (the turn that tells one request
    from another comes last; a long system prompt many requests share,
    first), one a line, :func:`searchable`, at most :data:`SEARCH_TEXT_BYTES`.
    """
    read = conversation(entry)
    pieces = [entry.model or "", _cut(read.answer or "", ANSWER_BYTES)]
    pieces += [message.text for message in reversed(read.messages)]
    return _cut(searchable("\n".join(pieces)), SEARCH_TEXT_BYTES)
