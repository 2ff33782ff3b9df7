"""
The one way to get a store from ``--db``: a file path is SQLite; a URL names another engine.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from twisted.internet.interfaces import IReactorTime

from stasis.store._adbapi import AdbapiStore
from stasis.store._protocol import Store, StoreError
from stasis.store._sqlite import SQLiteDialect

__all__ = ["open_store"]

#: ``scheme://`` at the start: a database URL, never a file path (not even C:\ on Windows).
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def _without_password(url: str) -> str:
    """``url`` as it may be shown in an error: its password, if any, left out."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}@" if parts.username else ""
    except ValueError:
        return f"{url.partition('://')[0]}://…"
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def open_store(db: str, reactor: IReactorTime, *, workers: int = 1) -> Store:
    """
    The store ``--db`` names: a path is an SQLite file (created if need be).

    The store is not open yet: :meth:`~stasis.store.Store.open` it (the
    service does when it starts). A URL of an engine this version cannot use
    is refused here, with :class:`StoreError`, so that a typo in ``--db``
    stops the start-up instead of creating a file named like a URL.
    """
    scheme = _URL.match(db)
    if scheme is None:
        return AdbapiStore(SQLiteDialect(db), reactor, workers_share=workers > 1)
    name = scheme.group(1).lower()
    if name in ("postgresql", "postgres"):
        raise StoreError(
            f"PostgreSQL ({_without_password(db)}) is not supported by this version of "
            "stasis; give --db a file path for an SQLite database"
        )
    raise StoreError(
        f"unknown database URL scheme {name!r} in --db; give a file path for an SQLite database"
    )
