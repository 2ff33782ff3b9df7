"""
One pytest session's proxy: the daemon, the cassette around it, and the
environment that sends the SDKs to it.

The process that runs the tests (pytest itself, or each pytest-xdist worker)
holds an :class:`Attachment`: the proxy's address and the variables to set.
The process that owns the daemon (pytest without xdist, or the xdist
controller) holds a :class:`ProxySession` as well, which starts it before the
tests and, after them, stops it and writes the cassette back. Workers learn
the attachment from the controller (:meth:`Attachment.payload`), so however
many workers run there is one daemon and one cache, and a call recorded by
one worker is a hit for the others.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from attrs import define, field

from stasis.testing._daemon import Daemon, start_daemon
from stasis.testing._environ import EnvironmentPatch
from stasis.testing._errors import CassetteError, DaemonStartError, SettingsError
from stasis.testing._proxy import DEFAULT_PROVIDERS, PROVIDERS, StasisProxy, replay_placeholders
from stasis.testing._replay import is_miss_line
from stasis.testing._settings import Settings
from stasis.testing._storage import Storage

__all__ = ["Attachment", "ProxySession", "inherited_routes", "session_environ"]

#: The plugin's own variables: the daemon is given its settings explicitly.
_OWN_VARIABLES = ("STASIS_DB", "STASIS_UPSTREAM", "STASIS_MODE")
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
#: Seconds to wait for the daemon's log to show lines it has already counted
#: (it writes them in batches, a tenth of a second apart).
LOG_DEADLINE = 2.0
#: The most log lines a report quotes.
MAX_LOG_LINES = 20


def inherited_routes(environ: Mapping[str, str], upstreams: tuple[str, ...]) -> list[str]:
    """
    ``NAME=URL`` upstreams for the base-URL variables already set: a test
    suite that talks to a gateway (``OPENAI_BASE_URL=https://gw/v1``) keeps
    talking to it through the daemon. None when a bare upstream sends
    everything elsewhere, and none for a provider the upstreams name.
    """
    named = set()
    for upstream in upstreams:
        name, equals, _ = upstream.partition("=")
        if not equals or "://" in name:
            return []
        named.add(name.strip().lower())
    routes = []
    for provider in PROVIDERS.values():
        value = environ.get(provider.variable, "").strip().rstrip("/")
        if value and provider.name not in named:
            if provider.suffix and value.endswith(provider.suffix):
                value = value[: -len(provider.suffix)]
            routes.append(f"{provider.name}={value}")
    return routes


def _no_proxy(environ: Mapping[str, str]) -> dict[str, str]:
    """Keep calls to the daemon on loopback off an HTTP proxy the environment names."""
    if not any(environ.get(name) or environ.get(name.lower()) for name in _PROXY_VARIABLES):
        return {}
    hosts = [
        host.strip()
        for name in ("NO_PROXY", "no_proxy")
        for host in environ.get(name, "").split(",")
        if host.strip()
    ]
    if "127.0.0.1" not in hosts:
        hosts.append("127.0.0.1")
    merged = ",".join(dict.fromkeys(hosts))
    return {"NO_PROXY": merged, "no_proxy": merged}


def session_environ(proxy: StasisProxy, environ: Mapping[str, str]) -> dict[str, str]:
    """Every variable the session sets: base URLs, replay's stand-in keys, ``NO_PROXY``."""
    changes = proxy.environ()
    if proxy.session_mode == "replay":
        changes.update(replay_placeholders(environ))
    changes.update(_no_proxy(environ))
    return changes


@define
class Attachment:
    """The proxy as the process running the tests uses it."""

    proxy: StasisProxy
    #: The variables the session sets (see :func:`session_environ`).
    environ: dict[str, str]
    #: The daemon's log, for a failed test's report (None if it cannot be read).
    log: Path | None = None
    patch: EnvironmentPatch = field(factory=EnvironmentPatch)

    def apply(self) -> None:
        self.patch.apply(self.environ)

    def restore(self) -> None:
        self.patch.restore()

    def payload(self) -> dict[str, Any]:
        """What a pytest-xdist worker needs (plain data, for ``workerinput``)."""
        return {
            "url": self.proxy.url,
            "mode": self.proxy.session_mode,
            "providers": list(self.proxy.providers),
            "environ": dict(self.environ),
            "log": None if self.log is None else str(self.log),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Attachment:
        proxy = StasisProxy(
            url=payload["url"],
            session_mode=payload["mode"],
            providers=tuple(payload["providers"]),
        )
        log = payload.get("log")
        return cls(proxy=proxy, environ=dict(payload["environ"]), log=Path(log) if log else None)

    def log_size(self) -> int:
        if self.log is None:
            return 0
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def miss_lines(
        self, offset: int, expected: int = 0, deadline: float = LOG_DEADLINE
    ) -> list[str]:
        """
        The daemon's log lines about replay misses written after ``offset``,
        waiting (up to ``deadline`` seconds) until there are ``expected`` of them.
        """
        if self.log is None:
            return []
        end = time.monotonic() + deadline
        while True:
            try:
                with self.log.open("rb") as f:
                    f.seek(offset)
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                return []
            lines = [line for line in text.splitlines() if is_miss_line(line)]
            if len(lines) >= expected or time.monotonic() > end:
                # The newest: a line of the test before may have been written late.
                return lines[-min(max(expected, 1), MAX_LOG_LINES) :]
            time.sleep(0.02)


def _clean(environ: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in environ.items() if name not in _OWN_VARIABLES}


@define
class ProxySession:
    """The daemon a session owns, and the cassette it reads and writes."""

    settings: Settings
    storage: Storage
    workdir: Path
    daemon: Daemon
    attachment: Attachment
    #: The environment the daemon and the cassette commands run with.
    env: dict[str, str]
    #: ``/stats`` just before the daemon stopped.
    final_stats: dict[str, Any] | None = None
    #: Written to the cassette at the end (its location).
    exported: str | None = None
    #: What went wrong at the end, one line each.
    problems: list[str] = field(factory=list)
    #: The session (not an xdist controller) sets the environment itself.
    applied: bool = False
    finished: bool = False

    @classmethod
    def start(
        cls,
        settings: Settings,
        environ: Mapping[str, str] | None = None,
        apply: bool = True,
        launch: Callable[..., Daemon] = start_daemon,
    ) -> ProxySession:
        """
        Import the cassette, start the daemon and (``apply``) set the environment.
        Raises :class:`~stasis.testing.PluginError` subclasses; nothing is left
        running or changed when it does.
        """
        environ = dict(os.environ if environ is None else environ)
        storage = Storage.of(settings.db)
        if settings.mode == "replay" and not storage.exists():
            raise SettingsError(
                f"replay mode, but {settings.db} does not exist: record it first "
                "(--stasis-mode cache, with an API key)"
            )
        placeholders = replay_placeholders(environ) if settings.mode == "replay" else {}
        # The daemon verifies Bedrock signatures with the credentials the SDKs
        # sign with: in replay mode, the same stand-ins.
        env = {**_clean(environ), **placeholders}
        inherited = inherited_routes(environ, settings.upstreams)
        upstreams = settings.upstreams + tuple(inherited)
        providers = DEFAULT_PROVIDERS + (("azure",) if environ.get("AZURE_OPENAI_ENDPOINT") else ())
        workdir = Path(tempfile.mkdtemp(prefix="stasis-pytest-"))
        try:
            if settings.mode != "bypass":
                storage.load(workdir, env)
            daemon = launch(workdir, storage.daemon_db(workdir), settings.mode, upstreams, env)
        except DaemonStartError as e:
            shutil.rmtree(workdir, ignore_errors=True)
            if not inherited:
                raise
            raise DaemonStartError(
                f"{e}\n(besides its settings, the daemon was given --upstream "
                f"{' '.join(inherited)}, from the base-URL variables already set)"
            ) from None
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        proxy = StasisProxy(url=daemon.url, session_mode=settings.mode, providers=providers)
        attachment = Attachment(proxy, session_environ(proxy, environ), log=daemon.log)
        session = cls(settings, storage, workdir, daemon, attachment, env)
        if apply:
            attachment.apply()
            session.applied = True
        return session

    def _should_export(self) -> bool:
        if not self.storage.is_cassette:
            return False
        stats = self.final_stats
        if stats is None:
            return self.settings.mode in ("cache", "fresh")
        # A miss that was not a replay miss went upstream and may have been stored.
        return int(stats.get("misses", 0)) > int(stats.get("replayMisses", 0))

    def finish(self) -> list[str]:
        """
        Restore the environment, read the final statistics, stop the daemon and
        export the cassette if anything was recorded; the problems, if any.
        """
        if self.finished:
            return self.problems
        self.finished = True
        if self.applied:
            self.attachment.restore()
        try:
            self.final_stats = self.attachment.proxy.stats()
        except (OSError, ValueError) as e:
            self.problems.append(f"stasis: cannot read the daemon's statistics: {e}")
        status = self.daemon.stop()
        if status not in (0, -signal.SIGTERM):
            self.problems.append(
                f"stasis: the daemon exited with status {status}:\n{self.daemon.log_tail()}"
            )
        keep = False
        if self._should_export():
            try:
                self.storage.save(self.workdir, self.env)
                self.exported = self.storage.location
            except CassetteError as e:
                keep = True
                db = self.storage.daemon_db(self.workdir)
                self.problems.append(
                    f"stasis: {e}\nstasis: this session's recordings are kept in {db}; "
                    f"to write them: python -m stasis export {self.storage.location} -d {db}"
                )
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.problems

    def close(self) -> None:
        """A safety net for an interrupted session: stop the daemon, restore the environment."""
        if not self.finished:
            self.finished = True
            if self.applied:
                self.attachment.restore()
            with contextlib.suppress(OSError):
                self.daemon.stop()
            shutil.rmtree(self.workdir, ignore_errors=True)

    def summary(self) -> list[str]:
        """The lines for the end of the terminal report."""
        lines = []
        stats = self.final_stats
        if stats is not None:
            hits = int(stats.get("hits", 0))
            lines.append(
                f"stasis: {hits} hits, {stats.get('misses', 0)} misses "
                f"({stats.get('replayMisses', 0)} replay misses), "
                f"{hits} calls and {stats.get('tokensSavedSinceStart', 0)} tokens saved"
            )
        if self.exported is not None:
            entries = "" if stats is None else f" ({stats.get('totalEntries', 0)} entries)"
            lines.append(f"stasis: wrote the cassette {self.exported}{entries}")
        return lines + self.problems
