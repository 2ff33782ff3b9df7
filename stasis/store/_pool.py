"""
adbapi's connection pools as the store uses them: reconnecting after a lost connection, quietly.

How adbapi finds a dead connection (``twisted/enterprise/adbapi.py``): only
when something run on it fails. ``runInteraction`` and ``runWithConnection``
then call the wrapper's ``rollback``; with ``cp_reconnect`` that rolls back
and runs ``good_sql`` (``select 1``) and commits, and if any of it fails,
closes the connection and forgets it (``disconnect``), so that the next job on
that thread connects afresh, and the server being back is noticed without a
restart. The job itself fails with its own error either way: the pool
catches the ``ConnectionLost`` that ``rollback`` raises and re-raises the
original error. While the server is down, connecting fails at the start of
each job, before anything is run, and so costs no rollback.

What adbapi adds is two tracebacks per lost connection, logged with
``log.err`` ("Rollback failed"), which a daemon's log must not carry for an
outage it reports itself (once a minute: see ``AdbapiStore``).
:class:`QuietConnection` does the same as adbapi's ``Connection`` without
them.
"""

from __future__ import annotations

from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.interfaces import IReactorTime

__all__ = ["QuietConnection", "connection_pool"]


class QuietConnection(adbapi.Connection):
    """adbapi's connection wrapper, finding a dead connection as it does, without logging it."""

    def rollback(self) -> None:
        connection: Any = self._connection
        if not self._pool.reconnect:
            connection.rollback()
            return
        try:
            connection.rollback()
            cursor = connection.cursor()
            cursor.execute(self._pool.good_sql)
            cursor.close()
            connection.commit()
        except Exception:
            # Lost: forgotten, and closed; the job's own error is what its caller hears.
            self._pool.disconnect(connection)


def connection_pool(
    module: str,
    args: tuple[Any, ...],
    keywords: dict[str, Any],
    size: int,
    reactor: IReactorTime,
) -> adbapi.ConnectionPool:
    """A pool of ``size`` connections made with ``module.connect(*args, **keywords)``."""
    pool = adbapi.ConnectionPool(
        module, *args, cp_min=1, cp_max=size, cp_reactor=reactor, **keywords
    )
    pool.connectionFactory = QuietConnection
    return pool
