"""
Someone watching the web UI while the proxy works: what section m measures beside.

``python -m bench.uiwatch URL [--browser | --poller]`` keeps ``URL/_stasis/``
open until SIGTERM, then prints what the UI asked the admin API (``UIWATCH``
and one JSON line: requests by endpoint, failures, seconds watched).

- ``--browser``: the real page in a headless Debian ``chromium`` driven by
  Playwright, polling at its own cadence (recent requests, the figures and the
  chart), as a person leaves a tab open.
- ``--poller``: no browser, the same calls at a cadence at least as busy as
  the page's (recent every second, stats and series every 5 s, and an entries
  page every 5 s, which the page only loads when asked), over one keep-alive
  connection: the daemon's side of the UI alone, without a browser's CPU.

It prints ``watching URL`` once the UI has shown its first entries, and exits
on SIGTERM (``Process.stop``), closing the browser first.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

__all__ = ["CHROMIUM", "browser_available", "main"]

CHROMIUM = "/usr/bin/chromium"
#: As the UI tests start it: headless, and nothing that reaches out of the machine.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API = "/_stasis/api/"
READY_SECONDS = 30.0

#: The poller's calls: (every so many seconds, what to ask).
POLLS: tuple[tuple[float, str], ...] = (
    (1.0, "recent"),
    (5.0, "stats"),
    (5.0, "series?minutes=60"),
    (5.0, "entries?limit=50"),
)


def browser_available() -> bool:
    """Whether Playwright and Debian's chromium are both installed."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return os.access(CHROMIUM, os.X_OK)


class _Stop:
    """Set by SIGTERM: the watcher's loop ends and it reports."""

    def __init__(self) -> None:
        self.event = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: self.event.set())


def _endpoint(path: str) -> str:
    """``/_stasis/api/recent?after=3`` -> ``recent``; an entry's key is not kept."""
    name = path.split("?", 1)[0].removeprefix(API)
    return "entries/KEY" if name.startswith("entries/") else name


def _report(mode: str, asked: Counter[str], failed: Counter[str], started: float) -> None:
    summary = {
        "mode": mode,
        "seconds": round(time.monotonic() - started, 2),
        "requests": dict(asked),
        "failed": dict(failed),
    }
    print("UIWATCH " + json.dumps(summary), flush=True)


def watch_browser(url: str, stop: _Stop) -> None:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import Response, sync_playwright

    asked: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    started = time.monotonic()

    def answered(response: Response) -> None:
        path = urlsplit(response.url).path
        if path.startswith(API):
            name = _endpoint(path)
            asked[name] += 1
            if response.status != 200:
                failed[name] += 1

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("response", answered)
            page.goto(url + "/_stasis/")
            page.wait_for_selector("#entries tr", timeout=READY_SECONDS * 1000)
            started = time.monotonic()
            print(f"watching {url}", flush=True)
            while not stop.event.is_set():
                page.wait_for_timeout(200)  # lets Playwright take the page's events
            browser.close()
        except PlaywrightError:
            # The SIGTERM that stops this process went to its whole group, the
            # Playwright driver and the browser too: gone first is not a failure.
            if not stop.event.wait(1.0):
                raise
    _report("browser", asked, failed, started)


def watch_poller(url: str, stop: _Stop, without: tuple[str, ...] = ()) -> None:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    asked: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    last = 0

    def get(what: str) -> Any:
        connection.request("GET", API + what, headers={"Accept": "application/json"})
        response = connection.getresponse()
        body = response.read()
        name = _endpoint(API + what)
        asked[name] += 1
        if response.status != 200:
            failed[name] += 1
            return None
        return json.loads(body)

    def recent() -> None:
        nonlocal last
        answer = get(f"recent?after={last}")
        if answer is not None:
            last = answer["last"]

    calls: dict[str, Callable[[], object]] = {"recent": recent}
    page = get("entries?limit=50")
    if not page or not page["entries"]:
        raise SystemExit(f"the UI's API lists no entries at {url}")
    started = time.monotonic()
    print(f"watching {url}", flush=True)
    polls = [(every, what) for every, what in POLLS if _endpoint(API + what) not in without]
    due = {what: started for _, what in polls}
    while not stop.event.is_set():
        now = time.monotonic()
        for every, what in polls:
            if now >= due[what]:
                calls.get(what, lambda what=what: get(what))()
                due[what] = now + every
        stop.event.wait(max(0.0, min(due.values()) - time.monotonic()))
    connection.close()
    _report("poller", asked, failed, started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.uiwatch", description=__doc__)
    parser.add_argument("url", help="the daemon, e.g. http://127.0.0.1:4000")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--browser", action="store_true", help="the page in headless chromium")
    mode.add_argument("--poller", action="store_true", help="the page's calls, without a browser")
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        help="with --poller: leave this endpoint out (stats, series, recent, entries)",
    )
    options = parser.parse_args(argv)
    stop = _Stop()
    if options.browser:
        watch_browser(options.url, stop)
    else:
        watch_poller(options.url, stop, tuple(options.without))
    return 0


if __name__ == "__main__":
    sys.exit(main())
