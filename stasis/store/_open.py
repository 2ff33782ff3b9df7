"""
The one way to get a store from ``--db``: a file path is SQLite; a URL names another engine.
"""

from __future__ import annotations

import re

from twisted.internet.interfaces import IReactorTime

from stasis.store._adbapi import AdbapiStore
from stasis.store._protocol import Store, StoreError
from stasis.store._sqlite import SQLiteDialect
from stasis.store._url import DatabaseURL

__all__ = ["open_store"]

#: ``scheme://`` at the start: a database URL, never a file path (not even C:\ on Windows).
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def open_store(db: str, reactor: IReactorTime, *, workers: int = 1) -> Store:
    """
    The store ``--db`` names: a path is an SQLite file (created if need be);
    ``postgresql://`` (or ``postgres://``) a PostgreSQL database.

    The store is not open yet: :meth:`~stasis.store.Store.open` it (the
    service does when it starts). A URL of an engine this installation
    cannot use is refused here, with :class:`StoreError`, so that a typo in
    ``--db`` stops the start-up instead of creating a file named like a URL.
    """
    scheme = _URL.match(db)
    if scheme is None:
        return AdbapiStore(SQLiteDialect(db), reactor, workers_share=workers > 1)
    name = scheme.group(1).lower()
    if name in ("postgresql", "postgres"):
        return _postgres_store(DatabaseURL(db), reactor)
    raise StoreError(
        f"unknown database URL scheme {name!r} in --db; give a file path for an SQLite "
        "database or a postgresql:// URL"
    )


def _postgres_store(url: DatabaseURL, reactor: IReactorTime) -> Store:
    # Imported here: psycopg is optional, and only a PostgreSQL store needs it.
    try:
        import psycopg  # noqa: F401
    except ImportError as e:
        missing = (e.name or "").partition(".")[0] == "psycopg"
        why = "is not installed" if missing else f"cannot be loaded ({str(e).splitlines()[0]})"
        raise StoreError(
            f"cannot use the cache database {url.location}: PostgreSQL needs psycopg, "
            f"which {why}; pip install 'stasis[postgres]'"
        ) from None
    from stasis.store._postgres import PostgreSQLDialect

    return AdbapiStore(PostgreSQLDialect(url), reactor)
