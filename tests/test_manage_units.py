"""
The management commands' small parts, in memory: times as typed and printed,
the fitted table, the progress bar, option parsing and help.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.python.usage import UsageError

from stasis import __version__, cli
from stasis.commands import COMMANDS
from stasis.commands._human import count_of, size
from stasis.commands._options import check_key
from stasis.commands._progress import ProgressBar
from stasis.commands._table import Column, render_table
from stasis.commands.ls import LsOptions
from stasis.commands.show import ShowOptions
from stasis.model import EntryFilter
from stasis.times import iso8601, parse_moment, short_time

NOW = 1_700_000_000.0


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=timezone.utc).timestamp()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("typed", "seconds_ago"),
    [
        ("90s", 90),
        ("45m", 2700),
        ("12h", 43200),
        ("7d", 604800),
        ("2w", 1209600),
        ("1h30m", 5400),
        ("1.5h", 5400),
        (" 7D ", 604800),
    ],
)
def test_a_duration_is_that_long_before_now(typed: str, seconds_ago: float) -> None:
    assert parse_moment(typed, NOW) == NOW - seconds_ago


@pytest.mark.parametrize(
    ("typed", "moment"),
    [
        ("2024-01-15", utc(2024, 1, 15)),
        ("2024-01-15T10:30", utc(2024, 1, 15, 10, 30)),
        ("2024-01-15 10:30:05", utc(2024, 1, 15, 10, 30, 5)),
        ("2024-01-15T10:30:00.000Z", utc(2024, 1, 15, 10, 30)),
        ("2024-01-15T12:30:00+02:00", utc(2024, 1, 15, 10, 30)),
    ],
)
def test_a_date_or_time_is_utc_unless_it_names_a_zone(typed: str, moment: float) -> None:
    assert parse_moment(typed, NOW) == moment


@pytest.mark.parametrize("typed", ["yesterday", "", "7", "d7", "2024-13-01", "1h 30m", "-5m"])
def test_anything_else_is_refused_with_what_is_accepted(typed: str) -> None:
    with pytest.raises(ValueError, match=r"is not an ISO-8601 date or time .* duration ago"):
        parse_moment(typed, NOW)


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_times_are_the_original_tools_format_to_the_millisecond(when: float) -> None:
    text = iso8601(when)
    assert text is not None
    moment = datetime.fromtimestamp(round(when * 1000) / 1000, tz=timezone.utc)
    assert text == moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def test_times_in_a_listing_and_none() -> None:
    assert short_time(utc(2024, 1, 15, 10, 30, 59)) == "2024-01-15 10:30"
    assert iso8601(None) is None


def test_sizes_and_counts_read_naturally() -> None:
    assert [size(n) for n in (0, 812, 1536, 10 * 1024, 5 * 1024**3)] == [
        "0 B",
        "812 B",
        "1.5 KiB",
        "10 KiB",
        "5.0 GiB",
    ]
    assert [count_of(n, "entry", "entries") for n in (0, 1, 1234)] == [
        "0 entries",
        "1 entry",
        "1,234 entries",
    ]


COLUMNS = (
    Column("KEY"),
    Column("MODEL", cut="end", minimum=6),
    Column("PATH", cut="start", minimum=8),
    Column("EXTRA", drop=0),
    Column("N", align=">", drop=1),
)
ROWS = [
    ["abc", "claude-sonnet-4-5", "/v1/chat/completions", "x", "7"],
    ["defghi", "o1", "/v1/messages", "yy", "1234"],
]


def test_a_table_without_a_width_cuts_nothing() -> None:
    assert render_table(COLUMNS, ROWS) == [
        "KEY     MODEL              PATH                  EXTRA     N",
        "abc     claude-sonnet-4-5  /v1/chat/completions  x         7",
        "defghi  o1                 /v1/messages          yy     1234",
    ]


def test_a_narrow_table_cuts_models_at_the_end_and_paths_at_the_start() -> None:
    lines = render_table(COLUMNS, ROWS, width=50)
    assert all(len(line) <= 50 for line in lines)
    assert lines == [
        "KEY     MODEL          PATH            EXTRA     N",
        "abc     claude-sonne…  …t/completions  x         7",
        "defghi  o1             /v1/messages    yy     1234",
    ]


def test_a_table_that_cannot_fit_leaves_out_the_least_needed_columns_first() -> None:
    assert render_table(COLUMNS, ROWS, width=35) == [
        "KEY     MODEL      PATH           N",
        "abc     claude-s…  …mpletions     7",
        "defghi  o1         …/messages  1234",
    ]
    # What cannot be left out is cut to its minimum, and then overflows.
    assert render_table(COLUMNS, ROWS, width=10) == [
        "KEY     MODEL   PATH",
        "abc     claud…  …letions",
        "defghi  o1      …essages",
    ]


def test_the_progress_bar_redraws_in_place_at_most_ten_times_a_second() -> None:
    out = io.StringIO()
    now = [0.0]
    bar = ProgressBar(out, "exporting", clock=lambda: now[0], width=10)
    bar(0, 200)
    bar(50, 200)  # too soon: not drawn
    now[0] = 0.2
    bar(100, 200)
    bar(200, 200)  # the end is always drawn
    assert out.getvalue().split("\r")[1:] == [
        "exporting [..........] 0/200   0%",
        "exporting [#####.....] 100/200  50%",
        "exporting [##########] 200/200 100%",
    ]
    bar.clear()
    assert out.getvalue().endswith("\r" + " " * 35 + "\r")
    cleared = out.getvalue()
    bar.clear()
    assert out.getvalue() == cleared


def test_keys_are_hex_and_long_enough() -> None:
    assert check_key(" ABCDEF12 ") == "abcdef12"
    for bad, problem in [
        ("abcde", "too short"),
        ("abcdeg", "not a cache key"),
        ("a" * 65, "not a cache key"),
    ]:
        with pytest.raises(UsageError, match=problem):
            check_key(bad)


def test_filters_become_an_entry_filter() -> None:
    options = LsOptions(environ={}, clock=lambda: NOW)
    options.parseOptions(
        [
            *("--provider", "gemini", "--namespace", "", "--since", "1d"),
            *("--until", "2024-01-15", "--search", "Oslo 100%"),
        ]
    )
    assert options.where == EntryFilter(
        provider="gemini",
        namespace="",
        since=NOW - 86400,
        until=utc(2024, 1, 15),
        text="Oslo 100%",
    )
    assert options.limit == 50
    assert options.describe_filter() == (
        "provider=gemini, namespace=, since=1d, until=2024-01-15, search=Oslo 100%"
    )
    everything = LsOptions(environ={"STASIS_DB": "/data/cache.db"})
    everything.parseOptions(["--all"])
    assert (everything.where, everything.limit, everything.db) == (
        EntryFilter(),
        None,
        "/data/cache.db",
    )


def test_options_may_follow_the_key() -> None:
    options = ShowOptions(environ={})
    options.parseOptions(["ABCDEF", "--json", "-d", "other.db"])
    assert (options.key, options["json"], options.db) == ("abcdef", True, "other.db")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_command_has_help(capsys: pytest.CaptureFixture[str], command: object) -> None:
    name = command.name  # type: ignore[attr-defined]
    with pytest.raises(SystemExit) as exited:
        cli.main([name, "-h"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"Usage: stasis {name} [options]")
    assert "-d, --db=" in shown and "$STASIS_DB" in shown
    assert f"Examples:\n  stasis {name}" in shown or f"| stasis {name}" in shown


def test_stasis_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    shown = capsys.readouterr().out
    for name in ("start", *(command.name for command in COMMANDS)):
        assert f"\n    {name} " in shown


def test_a_command_says_the_stasis_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["ls", "--version"])
    assert capsys.readouterr().out == f"stasis {__version__.public()}\n"


def test_a_management_command_loads_none_of_the_daemon() -> None:
    """Half of a command's start-up would go to the web server, treq and the engine."""
    script = (
        "import sys; from stasis import cli; import stasis.commands; import json; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", script], check=True, capture_output=True, text=True
        ).stdout
    )
    daemon = ("twisted.web", "treq", "stasis.service", "stasis.cache", "stasis.tap")
    assert [m for m in loaded if m.startswith(daemon)] == []


def test_an_error_logged_while_a_command_runs_is_one_line() -> None:
    from twisted.logger import Logger
    from twisted.python.failure import Failure

    from stasis.commands._runner import _OneLineErrors

    out = io.StringIO()
    log = Logger(namespace="stasis.store", observer=_OneLineErrors(out))
    log.warn("the cache database {path} is read-only", path="x.db")  # a daemon's concern
    try:
        raise ValueError("disk I/O error")
    except ValueError:
        log.failure("watching the cache database failed", Failure())
    log.error("cannot checkpoint {path}", path="x.db")
    assert out.getvalue() == (
        "stasis: watching the cache database failed: disk I/O error\n"
        "stasis: cannot checkpoint x.db\n"
    )
