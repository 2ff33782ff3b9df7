"""
The command lines: ``twistd -n stasis`` and the ``stasis`` console script, as real processes.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from stasis import __version__
from stasis.commands import start as cli
from stasis.commands.start import handover_problem
from tests.daemon import Daemon, _environment, poll_until, run
from tests.fake_upstream import FakeUpstream


def test_twistd_lists_the_plugin(tmp_path: Path) -> None:
    result = run(["--help"], tmp_path, via="twistd")
    # `twistd -n stasis --help` shows the plugin's own options.
    assert result.returncode == 0, result.stderr
    for option in ("--port", "--listen", "--upstream", "--db", "--mode", "--log-level"):
        assert option in result.stdout


def test_stasis_version_and_help(tmp_path: Path) -> None:
    result = run(["--version"], tmp_path, via="stasis")
    assert result.returncode == 0
    assert result.stdout.strip() == f"stasis {__version__.public()}"
    help_text = run(["--help"], tmp_path, via="stasis")
    assert help_text.returncode == 0
    for option in ("-p, --port", "-u, --upstream", "-d, --db", "-l, --log-level", "--pidfile"):
        assert option in help_text.stdout


@pytest.mark.parametrize(
    ("command", "shows"),
    [
        (["stasis", "-h"], "start"),
        (["stasis", "start", "-h"], "--pidfile"),
        (["stasis", "ls", "-h"], "--since"),
        (["twistd", "-n", "stasis", "-h"], "--max-body"),
    ],
)
def test_dash_h_is_help(tmp_path: Path, command: list[str], shows: str) -> None:
    bindir = Path(sys.executable).parent
    result = subprocess.run(
        [str(bindir / command[0]), *command[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert "-h, --help" in result.stdout
    assert shows in result.stdout


@pytest.mark.parametrize("via", ["twistd", "stasis"])
@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--port", "abc"], "--port must be a number"),
        (["--port", "70000"], "between 0 and 65535"),
        (["--mode", "sometimes"], "cache, fresh, bypass, replay"),
        (["--log-level", "loud"], "fatal, error, warn, info, debug, trace"),
        (["--upstream", "ftp://example.com"], "http:// or https://"),
        (["--upstream-timeout", "-1"], "greater than 0"),
        (["--no-such-option"], "--no-such-option"),
        (["--listen", "bogus:thing"], "--listen 'bogus:thing' is not a Twisted server endpoint"),
        (["--listen", "tcp:abc"], "--listen 'tcp:abc' is not a Twisted server endpoint"),
        (
            ["--listen", "unix:/nonexistent/dir/s.sock"],
            "the socket's folder /nonexistent/dir does not exist",
        ),
        (["--max-body", "1.9"], "--max-body: '1.9' is not a whole number of bytes"),
    ],
)
def test_a_bad_option_is_one_line_and_a_nonzero_exit(
    tmp_path: Path, via: str, args: list[str], complaint: str
) -> None:
    result = run(args, tmp_path, via=via)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert complaint in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("via", ["twistd", "stasis"])
def test_an_unusable_database_stops_startup_with_one_line(
    tmp_path: Path, upstream: FakeUpstream, via: str
) -> None:
    db = tmp_path / "missing" / "cache.db"
    result = run(["-p", "0", "-u", upstream.url, "-d", str(db)], tmp_path, via=via)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"stasis: cannot open the cache database '{db}': unable to open database file"
    ]
    assert "cache database" not in result.stdout
    assert "Traceback" not in result.stdout


@pytest.mark.parametrize("via", ["twistd", "stasis"])
def test_a_busy_port_stops_startup_with_one_line_and_no_database(
    tmp_path: Path, upstream: FakeUpstream, via: str
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(["-p", str(port), "-u", upstream.url], tmp_path, via=via)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"stasis: cannot listen on tcp:{port}:interface=127.0.0.1:backlog=511: "
        "address already in use"
    ]
    assert "Traceback" not in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_stasis_start_serves_the_same_way_and_writes_no_pidfile(
    start: Callable[..., Daemon], upstream: FakeUpstream, tmp_path: Path
) -> None:
    first = start(via="stasis")
    second = start(via="stasis", db=tmp_path / "other.db")
    for daemon in (first, second):
        c = openai.OpenAI(base_url=daemon.url + "/v1", api_key="sk-test")
        statuses = [
            c.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            ).headers["x-stasis-status"]
            for _ in range(2)
        ]
        assert statuses == ["MISS", "HIT"]
    assert len(upstream.calls()) == 2
    assert not (tmp_path / "twistd.pid").exists()


def test_stasis_start_writes_a_pidfile_when_asked(
    start: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = start("--pidfile", str(tmp_path / "stasis.pid"), via="stasis")
    assert int((tmp_path / "stasis.pid").read_text()) == daemon.process.pid


def test_log_level_warn_silences_request_lines(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    quiet = start("-l", "warn")
    quiet.request("GET", "/stats")
    loud = start("-l", "info")
    loud.request("GET", "/stats")
    loud.wait_for_log("GET /stats 200")
    quiet.stop()
    assert "GET /stats" not in quiet.log
    assert "GET /health" not in quiet.log  # the harness's readiness check


def test_twistd_still_takes_the_options_stasis_start_hands_it() -> None:
    """
    ``stasis start`` hands twistd its parsed options through ServerOptions
    internals; if a Twisted release changes them, it falls back (slower), and
    this test names what changed.
    """
    problem = handover_problem()
    assert problem is None, f"twistd changed: {problem}"


@pytest.mark.parametrize("twistd_changed", [False, True])
def test_stasis_start_gives_twistd_the_options_either_way(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, twistd_changed: bool
) -> None:
    if twistd_changed:
        monkeypatch.setattr(cli, "handover_problem", lambda: "a test says so")
    options = cli.StartOptions()
    options.parseOptions(["--pidfile", str(tmp_path / "p.pid"), "-p", "0", "--mode", "replay"])
    config = cli._twistd_config(options)
    assert config.subCommand == "stasis"
    assert config.subOptions is options
    assert config["no_save"]
    assert config["nodaemon"]
    assert config["pidfile"] == str(tmp_path / "p.pid")
    assert config.loadedPlugins["stasis"].makeService.__module__ == "stasis.tap"


def test_a_failure_while_the_reactor_runs_sets_the_exit_status(tmp_path: Path) -> None:
    """twistd exits 0 once its reactor stops; the daemon's late failure makes it 1."""
    script = (
        "from stasis.tap import _exit_status_at_interpreter_exit as exit_status\n"
        "exit_status(1)\n"
        "print('shut down cleanly', end='')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stdout, result.stderr) == (1, "shut down cleanly", "")


def test_a_daemonized_twistd_reports_a_busy_port_and_does_not_hang(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """twistd's first process waits on a pipe that only an Exception from start-up writes to."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "twistd"),
                "--pidfile",
                "twistd.pid",
                "--logfile",
                "twistd.log",
                "stasis",
                "-p",
                str(port),
                "-u",
                upstream.url,
            ],
            cwd=tmp_path,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"StartupError: cannot listen on tcp:{port}:interface=127.0.0.1" in result.stderr
    # The daemon removes its pid file just after telling the first process.
    poll_until(lambda: not (tmp_path / "twistd.pid").exists())
    assert not (tmp_path / "stasis-cache.db").exists()
