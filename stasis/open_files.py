"""
The daemon's open-file limit, raised to what the system allows before it listens.

Every client connection holds a file descriptor. Under a soft limit of 256
(macOS's default for a shell, and some containers') a daemon holds ~240
connections; past that Twisted accepts each new one and closes it at once
(its EMFILE recovery), and the client sees a reset. That is how ~240 slow
clients made ``/health`` fail with resets. The hard limit is the system's
word on how many a process may have; the soft one only a default, which any
process may raise up to it: Go does so for every program, nginx has
``worker_rlimit_nofile``. Only the daemon does this: an application that
embeds the service owns its process's limits.

``select()`` cannot watch a descriptor above ``FD_SETSIZE`` (1024), so under
Twisted's select reactor (its default on macOS) the limit goes to 1024 only.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SELECT_LIMIT", "raise_open_files_limit"]

#: The most descriptors the select reactor can watch (FD_SETSIZE).
SELECT_LIMIT = 1024
#: macOS refuses a soft limit above OPEN_MAX even when the hard limit is "unlimited".
_DARWIN_OPEN_MAX = 10240


def _uses_select(reactor: Any) -> bool:
    return type(reactor).__module__ == "twisted.internet.selectreactor"


def raise_open_files_limit(reactor: Any, resource: Any = None) -> int | None:
    """
    Raise the soft ``RLIMIT_NOFILE`` as far as the hard limit (and ``reactor``)
    allow; the soft limit in force afterwards, or None where there is none
    (Windows). Never lowers it. ``resource``: the module, for tests.
    """
    if resource is None:
        try:
            import resource
        except ImportError:  # pragma: no cover - Windows
            return None
    unlimited = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = [hard] if hard != unlimited else [unlimited, _DARWIN_OPEN_MAX]
    if _uses_select(reactor):
        wanted = [SELECT_LIMIT if w == unlimited else min(w, SELECT_LIMIT) for w in wanted]
    for limit in wanted:
        if soft == unlimited or (limit != unlimited and limit <= soft):
            return int(soft)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        except (ValueError, OSError):
            continue
        return int(limit)
    return int(soft)
