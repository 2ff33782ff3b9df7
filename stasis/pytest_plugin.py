"""
The pytest plugin (entry point ``pytest11``, name ``stasis``): one stasis
daemon for a whole test session, and the provider SDKs pointed at it.

``pytest --stasis-mode cache`` records every LLM call the tests make and
replays it on the next run; ``--stasis-mode replay`` (in CI, with no key)
serves only what was recorded and fails a test whose call was not, saying
which call. The tests need no change: the official SDKs read their base URL
from the environment, which the plugin sets for the session (and for one test,
with the directives of ``@pytest.mark.stasis``), then puts back.

pytest loads every installed plugin in every session, and most sessions set
no mode; so this module imports nothing but pytest and the standard library,
and does nothing at all until a mode is set. The work lives in
:mod:`stasis.testing`, imported on first use; the daemon is a child process,
so Twisted is never imported into the test process.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Generator

    from stasis.testing import StasisProxy
    from stasis.testing._environ import EnvironmentPatch
    from stasis.testing._session import Attachment, ProxySession
    from stasis.testing._settings import Setting, Settings

__all__ = [
    "pytest_addoption",
    "pytest_configure",
    "pytest_report_header",
    "pytest_runtest_makereport",
    "pytest_runtest_setup",
    "pytest_runtest_teardown",
    "pytest_sessionfinish",
    "pytest_sessionstart",
    "pytest_terminal_summary",
    "stasis_proxy",
    "stasis_proxy_session",
]

#: The key of the session's proxy in a pytest-xdist worker's ``workerinput``.
WORKER_INPUT_KEY = "stasis"
#: The report section a failed replay-mode test gets.
SECTION = "stasis: replay misses"

_MARKER = (
    "stasis(mode=None, namespace=None, ttl=None, replay=None): serve this test's LLM calls "
    "with these stasis directives (mode: cache, record, fresh, bypass, replay; namespace: a "
    "partition of the cache; ttl: seconds; replay: fast or realtime). Needs a session mode."
)
_NO_PROXY = (
    "stasis: no proxy in this session; set --stasis-mode, the stasis_mode ini option or "
    "$STASIS_MODE"
)


class _Test:
    """What the plugin knows about the test being run."""

    __slots__ = ("log_offset", "misses_before", "misses_shown", "patch", "view")

    def __init__(self, view: StasisProxy) -> None:
        self.view = view
        self.patch: EnvironmentPatch | None = None
        #: The daemon's replay-miss count as the test began (replay mode only).
        self.misses_before: int | None = None
        #: Where the daemon's log was as the test began.
        self.log_offset = 0
        #: Replay misses already shown in an earlier report (setup, call) of this test.
        self.misses_shown = 0


class _State:
    """The plugin's state for one session (plain classes: loading this module stays cheap)."""

    __slots__ = ("attachment", "owner", "settings")

    def __init__(self) -> None:
        self.settings: Settings | None = None
        #: The daemon this process started (not in an xdist worker).
        self.owner: ProxySession | None = None
        #: The proxy this process's tests use.
        self.attachment: Attachment | None = None


_STATE = pytest.StashKey[_State]()
_TEST = pytest.StashKey[_Test]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("stasis", "stasis: record and replay LLM API calls")
    group.addoption(
        "--stasis-mode",
        dest="stasis_mode",
        metavar="MODE",
        help="Run the session's LLM calls through one stasis daemon in this mode: cache "
        "(alias record), fresh, bypass, replay; off for none. Default: the stasis_mode ini "
        "option, then $STASIS_MODE; unset, the plugin does nothing.",
    )
    group.addoption(
        "--stasis-db",
        dest="stasis_db",
        metavar="PATH",
        help="Where recordings live: an SQLite file, or a cassette (a directory, or a .jsonl "
        "file) imported at start and written back after a session that recorded. Default: "
        "the stasis_db ini option, then $STASIS_DB, then stasis-cache.db in the rootdir.",
    )
    group.addoption(
        "--stasis-upstream",
        dest="stasis_upstream",
        action="append",
        metavar="URL|NAME=URL",
        help="The daemon's --upstream (repeatable). Default: the stasis_upstream ini option, "
        "then $STASIS_UPSTREAM (comma-separated), then each provider's public API.",
    )
    parser.addini("stasis_mode", "stasis: the session's mode (as --stasis-mode).", default="")
    parser.addini(
        "stasis_db",
        "stasis: the SQLite file or cassette, relative to the ini file (as --stasis-db).",
        default="",
    )
    parser.addini(
        "stasis_upstream",
        "stasis: upstreams, separated by commas or lines (as --stasis-upstream).",
        default="",
    )


def _candidates(config: pytest.Config, option: str, ini: str, variable: str) -> list[Setting]:
    from stasis.testing._settings import Setting

    invoked = config.invocation_params.dir
    inifile = config.inipath
    given = config.getoption(option)
    if isinstance(given, list):
        given = ",".join(given)
    return [
        Setting(given or "", f"--{option.replace('_', '-')}", invoked),
        Setting(
            str(config.getini(ini) or ""),
            f"{ini} in {inifile.name if inifile else 'the ini file'}",
            inifile.parent if inifile else config.rootpath,
        ),
        Setting(os.environ.get(variable, ""), f"${variable}", invoked),
    ]


def _settings(config: pytest.Config) -> Settings | None:
    mode = config.getoption("stasis_mode") or config.getini("stasis_mode")
    if not str(mode or os.environ.get("STASIS_MODE", "")).strip():
        return None  # the usual case: nothing to import, nothing to do
    from stasis.testing import PluginError
    from stasis.testing._settings import DEFAULT_DB, resolve

    try:
        return resolve(
            _candidates(config, "stasis_mode", "stasis_mode", "STASIS_MODE"),
            _candidates(config, "stasis_db", "stasis_db", "STASIS_DB"),
            _candidates(config, "stasis_upstream", "stasis_upstream", "STASIS_UPSTREAM"),
            default_db=config.rootpath / DEFAULT_DB,
        )
    except PluginError as e:
        raise pytest.UsageError(f"stasis: {e}") from None


class _XdistHooks:
    """Registered only where pytest-xdist is, whose hook this implements."""

    def __init__(self, state: _State) -> None:
        self.state = state

    def pytest_configure_node(self, node: Any) -> None:
        attachment = self.state.attachment
        if attachment is not None:
            node.workerinput[WORKER_INPUT_KEY] = attachment.payload()


def _worker_input(config: pytest.Config) -> dict[str, Any] | None:
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    return workerinput


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER)
    state = _State()
    config.stash[_STATE] = state
    if _worker_input(config) is None:
        state.settings = _settings(config)
    if state.settings is not None and config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(state), "stasis-xdist")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    state = config.stash.get(_STATE, None)
    if state is None:
        return
    workerinput = _worker_input(config)
    if workerinput is not None:
        payload = workerinput.get(WORKER_INPUT_KEY)
        if payload is not None:
            from stasis.testing._session import Attachment

            state.attachment = Attachment.from_payload(payload)
            state.attachment.apply()
        return
    if state.settings is None:
        return
    from stasis.testing import PluginError
    from stasis.testing._session import ProxySession

    # An xdist controller runs no tests: its workers set the environment.
    controller = config.pluginmanager.hasplugin("dsession")
    try:
        owner = ProxySession.start(state.settings, apply=not controller)
    except PluginError as e:
        raise pytest.UsageError(f"stasis: {e}") from None
    state.owner, state.attachment = owner, owner.attachment
    config.add_cleanup(owner.close)


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash.get(_STATE, None)
    if state is None or state.owner is None:
        return []
    owner = state.owner
    return [f"stasis: {owner.settings.mode} mode, {owner.daemon.url}, db {owner.storage.location}"]


def _view(item: pytest.Item, attachment: Attachment) -> tuple[StasisProxy, bool]:
    """The proxy as ``item`` sees it, and whether its markers changed anything."""
    from stasis.testing import Directives, MarkerError

    markers = list(item.iter_markers("stasis"))
    if not markers:
        return attachment.proxy, False
    try:
        directives = Directives.merged(Directives.of(m.args, m.kwargs) for m in markers)
    except MarkerError as e:
        pytest.fail(str(e), pytrace=False)
    return attachment.proxy.with_directives(directives), True


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    state = item.config.stash.get(_STATE, None)
    attachment = state.attachment if state is not None else None
    if attachment is None:
        return
    view, marked = _view(item, attachment)
    test = item.stash[_TEST] = _Test(view)
    if marked:
        from stasis.testing._environ import EnvironmentPatch

        test.patch = EnvironmentPatch()
        test.patch.apply(view.environ())
    if view.mode == "replay":
        test.log_offset = attachment.log_size()
        try:
            test.misses_before = int(view.stats()["replayMisses"])
        except (OSError, ValueError, KeyError):
            test.misses_before = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    finally:
        test = item.stash.get(_TEST, None)
        if test is not None and test.patch is not None:
            test.patch.restore()


def _replay_section(attachment: Attachment, test: _Test, error: BaseException | None) -> str | None:
    from stasis.testing._replay import find_replay_misses, report

    misses = find_replay_misses(error) if error is not None else []
    counted = None
    if test.misses_before is not None:
        try:
            total = int(test.view.stats()["replayMisses"]) - test.misses_before
        except (OSError, ValueError, KeyError):
            total = None
        if total is not None:
            counted, test.misses_shown = total - test.misses_shown, total
    if not misses and not counted:
        return None
    lines = attachment.miss_lines(test.log_offset, expected=counted or 0) if counted else []
    return report(misses, counted, lines)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        state = item.config.stash.get(_STATE, None)
        test = item.stash.get(_TEST, None)
        if state is not None and state.attachment is not None and test is not None:
            error = call.excinfo.value if call.excinfo is not None else None
            section = _replay_section(state.attachment, test, error)
            if section is not None:
                report.sections.append((SECTION, section))
    return report


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    # trylast: after the session-scoped fixtures' teardown, which may still call.
    state = session.config.stash.get(_STATE, None)
    if state is None:
        return
    if state.owner is None:
        if state.attachment is not None:
            state.attachment.restore()
        return
    if state.owner.finish() and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR


def pytest_terminal_summary(terminalreporter: Any) -> None:
    state = terminalreporter.config.stash.get(_STATE, None)
    if state is not None and state.owner is not None:
        for line in state.owner.summary():
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def stasis_proxy_session(request: pytest.FixtureRequest) -> StasisProxy:
    """The session's stasis proxy, without any test's marker; skips when no mode is set."""
    state = request.config.stash.get(_STATE, None)
    if state is None or state.attachment is None:
        pytest.skip(_NO_PROXY)
    return state.attachment.proxy


@pytest.fixture
def stasis_proxy(request: pytest.FixtureRequest) -> StasisProxy:
    """
    The session's stasis proxy as this test sees it (its ``@pytest.mark.stasis``
    directives included): ``.url``, ``.base_url(provider)``, ``.mode``, ``.stats()``.
    Skips the test when no mode is set.
    """
    state = request.config.stash.get(_STATE, None)
    if state is None or state.attachment is None:
        pytest.skip(_NO_PROXY)
    test = request.node.stash.get(_TEST, None)
    return test.view if test is not None else state.attachment.proxy
