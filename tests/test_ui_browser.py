"""
The web UI in a real browser: Debian's chromium driven by Playwright, against
a real ``twistd -n stasis`` whose entries were stored through the proxy.

Everything a stored prompt or answer holds is hostile by assumption: the
hostile-content test stores markup and ``javascript:`` links and checks that
the page shows them as text and runs none of them. Each test saves a
screenshot of what it looked at (in its temporary folder, and in
``/tmp/stasis-ui-shots/`` for a person to look at).

Waiting is Playwright's: ``expect`` polls with a deadline, never a sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.daemon import Daemon

CHROMIUM = Path("/usr/bin/chromium")
#: Set by .ci/run, which installs both: there, a missing browser fails these tests.
REQUIRED = os.environ.get("STASIS_TEST_REQUIRE_BROWSER") == "1"
if REQUIRED:
    import playwright.sync_api as sync_api

    assert CHROMIUM.exists(), "STASIS_TEST_REQUIRE_BROWSER=1, and /usr/bin/chromium is missing"
else:
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="the browser tests need Playwright for Python (pip playwright)",
    )
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="the browser tests need Debian's chromium at /usr/bin/chromium"
)
expect = sync_api.expect

SHOTS = Path("/tmp/stasis-ui-shots")
KEY = "sk-test-SECRET-0123456789abcdef"
PROMPTS = [
    "alpha: what is the capital of France?",
    "bravo: name three prime numbers",
    "charlie: how tall is Mont Blanc?",
    "delta: translate 'cat' into German",
    "echo: what colour is the sky at noon?",
]
#: What a hostile client or model could put in a prompt or an answer.
PAYLOAD = (
    "<script>window.__pwned=1</script> "
    '<img src=x onerror="window.__pwned=2"> '
    "[click me](javascript:window.__pwned=3) "
    '<a href="javascript:window.__pwned=4">html link</a>'
)
LAUNCH_ARGS = [
    "--no-sandbox",  # the tests may run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


class Console:
    """What the page said on its console, and the errors it raised."""

    def __init__(self, page: Any) -> None:
        self.messages: list[str] = []
        page.on("console", lambda m: self.messages.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.messages.append(f"pageerror: {e}"))

    def problems(self) -> list[str]:
        return [m for m in self.messages if m.startswith(("error", "pageerror"))]


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        yield page
    finally:
        context.close()


def shoot(page: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    SHOTS.mkdir(exist_ok=True)
    shutil.copy(path, SHOTS / path.name)


def chat(daemon: Daemon, prompt: str, **fields: Any) -> dict[str, str]:
    """A chat completion through the proxy; its answer's headers."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}], **fields}
    status, headers, _ = daemon.request(
        "POST",
        "/v1/chat/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
    )
    assert status == 200
    return headers


def store(daemon: Daemon, prompts: list[str]) -> dict[str, str]:
    """Each prompt's entry stored through the proxy: prompt -> key."""
    keys = {}
    for prompt in prompts:
        headers = chat(daemon, prompt)
        assert headers["x-stasis-status"] == "MISS"
        keys[prompt] = headers["x-stasis-key"]
    return keys


def rows(page: Any) -> Any:
    return page.locator("table.entries tbody tr")


def test_the_page_lists_searches_opens_and_deletes(
    daemon: Daemon, page: Any, tmp_path: Path
) -> None:
    keys = store(daemon, PROMPTS)
    console = Console(page)
    page.goto(daemon.url + "/_stasis/")
    expect(rows(page)).to_have_count(5)
    expect(page.locator("#fig-entries")).to_have_text("5")
    shoot(page, tmp_path, "entries")
    page.emulate_media(color_scheme="dark")
    shoot(page, tmp_path, "entries-dark")
    page.emulate_media(color_scheme="light")

    # The search narrows the list to the entry whose prompt has the word.
    page.locator("#q").fill("bravo")
    expect(rows(page)).to_have_count(1)
    shoot(page, tmp_path, "search")
    rows(page).first.click()
    expect(page).to_have_url(f"{daemon.url}/_stasis/#/entry/{keys[PROMPTS[1]]}")
    conversation = page.locator("#conversation")
    expect(conversation.locator(".bubble.user")).to_have_text("user" + PROMPTS[1])
    expect(page.locator("#answer")).to_contain_text(PROMPTS[1])
    expect(page.locator("#raw-request")).to_contain_text('"content": "bravo: name three')
    shoot(page, tmp_path, "entry")
    # The caller's key was on every request: no piece of it is on the page.
    shown = page.content()
    assert not [KEY[i : i + 8] for i in range(len(KEY) - 7) if KEY[i : i + 8] in shown]

    # Delete asks first, in the page; Cancel leaves the entry be.
    page.locator("#delete").click()
    expect(page.locator("#delete-confirm")).to_be_visible()
    shoot(page, tmp_path, "delete-confirm")
    page.locator("#delete-no").click()
    expect(page.locator("#delete-confirm")).to_be_hidden()
    page.locator("#delete").click()
    page.locator("#delete-yes").click()
    expect(page).to_have_url(f"{daemon.url}/_stasis/#/")
    page.locator("#q").fill("")
    expect(rows(page)).to_have_count(4)
    assert keys[PROMPTS[1]] not in [r.get_attribute("data-key") for r in rows(page).all()]

    # The store agrees: the key is gone, the others are there.
    listed = daemon.get_json("/_stasis/api/entries")["entries"]
    assert sorted(e["key"] for e in listed) == sorted(
        key for prompt, key in keys.items() if prompt != PROMPTS[1]
    )
    status, _, _ = daemon.request("GET", f"/_stasis/api/entries/{keys[PROMPTS[1]]}")
    assert status == 404
    with closing(sqlite3.connect(daemon.db)) as db:
        stored = sorted(row[0].hex() for row in db.execute("SELECT key FROM entries"))
    assert stored == sorted(e["key"] for e in listed)
    assert console.problems() == []


def test_a_streamed_answer_is_reassembled_and_its_events_are_one_click_away(
    daemon: Daemon, page: Any, tmp_path: Path
) -> None:
    messages = [
        {"role": "system", "content": "You answer in one line."},
        {"role": "user", "content": "foxtrot: stream me a reply"},
    ]
    key = chat(daemon, "unused", messages=messages, stream=True)["x-stasis-key"]
    console = Console(page)
    page.goto(f"{daemon.url}/_stasis/#/entry/{key}")
    bubbles = page.locator("#conversation .bubble")
    expect(bubbles).to_have_count(2)
    expect(bubbles.nth(0)).to_have_class("bubble system")
    expect(bubbles.nth(0).locator(".text")).to_have_text("You answer in one line.")
    expect(bubbles.nth(1).locator(".text")).to_have_text("foxtrot: stream me a reply")
    # The fake upstream streams "echo #1: <last message>" in pieces.
    expect(page.locator("#answer .text")).to_have_text("echo #1: foxtrot: stream me a reply")
    events = page.locator("#events")
    expect(events).to_be_hidden()
    page.locator("#events-summary").click()
    expect(events).to_be_visible()
    expect(events).to_contain_text("chat.completion.chunk")
    expect(events).to_contain_text("data: [DONE]")
    shoot(page, tmp_path, "stream")
    assert console.problems() == []


def test_a_request_made_while_the_page_is_open_appears_live(
    daemon: Daemon, page: Any, tmp_path: Path
) -> None:
    console = Console(page)
    page.goto(daemon.url + "/_stasis/")
    expect(page.locator("#recent-empty")).to_be_visible()
    chat(daemon, PROMPTS[0])
    chat(daemon, PROMPTS[0])
    recent = page.locator("#recent li")
    expect(recent).to_have_count(2)
    expect(recent.nth(0).locator(".badge")).to_have_text("HIT")
    expect(recent.nth(1).locator(".badge")).to_have_text("MISS")
    expect(recent.nth(0)).to_contain_text("POST /v1/chat/completions")
    # The entries table, the figures and the chart catch up on their own too.
    expect(rows(page)).to_have_count(1)
    expect(page.locator("#fig-entries")).to_have_text("1")
    expect(page.locator("#chart rect.bar-hit")).to_have_count(1)
    # The hit saved the entry's tokens, under its model and the default namespace.
    expect(page.locator("#fig-saved")).not_to_have_text("0")
    expect(page.locator("#by-model tr").first).to_contain_text("gpt-4o-mini")
    expect(page.locator("#by-namespace tr").first).to_contain_text("(default)")
    shoot(page, tmp_path, "recent")
    assert console.problems() == []


def test_a_replay_miss_shows_its_diagnostics(start: Any, page: Any, tmp_path: Path) -> None:
    daemon = start("--mode", "replay")
    page.goto(daemon.url + "/_stasis/")
    status, _, _ = daemon.request(
        "POST",
        "/v1/chat/completions",
        json.dumps(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
        ).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
    )
    assert status == 504
    item = page.locator("#recent li").first
    expect(item.locator(".badge")).to_have_text("MISS")
    expect(item.locator(".badge")).to_have_class("badge MISS failed")
    item.locator("details summary").click()
    expect(item.locator("details pre")).to_contain_text("stasis_replay_miss")
    # It has a key, but no entry: nothing to open.
    expect(item.locator("a")).to_have_count(0)
    shoot(page, tmp_path, "replay-miss")


def test_hostile_prompts_and_answers_are_shown_as_text_and_never_run(
    daemon: Daemon, page: Any, tmp_path: Path
) -> None:
    (key,) = store(daemon, [PAYLOAD]).values()
    # A model's name is the client's to choose too: listed, counted, and shown
    # in the recent requests (a hit, so that it has saved tokens).
    chat(daemon, "hello", model=PAYLOAD)
    assert chat(daemon, "hello", model=PAYLOAD)["x-stasis-status"] == "HIT"
    console = Console(page)
    page.goto(daemon.url + "/_stasis/")
    expect(rows(page)).to_have_count(2)
    expect(page.locator("#recent li")).to_have_count(3)
    expect(page.locator("table.entries td.model").first).to_have_text(PAYLOAD)
    expect(page.locator("#by-model tr").first.locator("td").first).to_have_text(PAYLOAD)
    expect(page.locator("#recent li").first).to_contain_text(PAYLOAD)
    shoot(page, tmp_path, "hostile-list")
    assert page.evaluate("window.__pwned") is None
    page.goto(f"{daemon.url}/_stasis/#/entry/{key}")
    # The prompt and the fake upstream's echo of it, as the literal text.
    expect(page.locator("#conversation .bubble.user .text")).to_have_text(PAYLOAD)
    expect(page.locator("#answer .text")).to_contain_text(PAYLOAD)
    expect(page.locator("#raw-request")).to_contain_text("<script>window.__pwned=1</script>")
    expect(
        page.locator("#view-entry").get_by_text("<script>window.__pwned=1</script>").first
    ).to_be_visible()
    shoot(page, tmp_path, "hostile")

    # Nothing ran, nothing was made markup, and no link goes anywhere but here.
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main script, main img, main iframe").count() == 0
    hrefs = page.eval_on_selector_all("a", "links => links.map(a => a.getAttribute('href'))")
    assert not [h for h in hrefs if not h.startswith("#/")], hrefs
    # Links clicked anyway (the raw events' and the page's own) do nothing hostile.
    for link in page.locator("a").all():
        if link.is_visible():
            link.click()
    assert page.evaluate("window.__pwned") is None
    # No console errors: a CSP violation would mean the page tried inline script.
    assert console.problems() == []


def test_purge_asks_with_the_filter_then_removes_what_it_selects(
    daemon: Daemon, page: Any, tmp_path: Path
) -> None:
    store(daemon, PROMPTS[:3])
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {KEY}",
        "X-Stasis-Namespace": "suite-b",
    }
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "kept apart"}]}
    status, _, _ = daemon.request(
        "POST", "/v1/chat/completions", json.dumps(body).encode(), headers
    )
    assert status == 200
    page.goto(daemon.url + "/_stasis/")
    expect(rows(page)).to_have_count(4)
    page.locator("#namespace").fill("suite-b")
    expect(rows(page)).to_have_count(1)
    expect(page.locator("#purge")).to_have_text("Purge 1 matching…")
    page.locator("#purge").click()
    expect(page.locator("#purge-filter")).to_contain_text('"namespace": "suite-b"')
    shoot(page, tmp_path, "purge-confirm")
    page.locator("#purge-yes").click()
    expect(rows(page)).to_have_count(0)
    page.locator("#namespace").fill("")
    expect(rows(page)).to_have_count(3)
    assert len(daemon.get_json("/_stasis/api/entries")["entries"]) == 3


def test_entries_page_by_cursor_older_and_newer(daemon: Daemon, page: Any, tmp_path: Path) -> None:
    store(daemon, [f"prompt number {i}" for i in range(55)])
    listings: list[str] = []
    page.on(
        "request",
        lambda r: listings.append(r.url) if "/_stasis/api/entries?" in r.url else None,
    )
    page.goto(daemon.url + "/_stasis/")
    expect(rows(page)).to_have_count(50)
    newest = rows(page).first.get_attribute("data-key")
    expect(page.locator("#newer")).to_be_disabled()
    page.locator("#older").click()
    expect(rows(page)).to_have_count(5)
    expect(page.locator("#older")).to_be_disabled()
    expect(page.locator("#page-label")).to_have_text("page 2")
    shoot(page, tmp_path, "older")
    page.locator("#newer").click()
    expect(rows(page)).to_have_count(50)
    assert rows(page).first.get_attribute("data-key") == newest
    # Paged by the listing's cursor, never by an offset.
    assert any("cursor=" in url for url in listings)
    assert not any("offset" in url for url in listings)


#: What a browser does as its tab is hidden or shown again.
SET_VISIBILITY = """state => {
    Object.defineProperty(document, "visibilityState", {value: state, configurable: true});
    document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_polling_stops_while_the_tab_is_hidden(daemon: Daemon, page: Any) -> None:
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/_stasis/api/" in r.url else None)
    # The page's timers run on a clock the test moves: no waiting for real seconds.
    page.clock.install()
    page.goto(daemon.url + "/_stasis/")
    expect(page.locator("#live")).to_have_text("live")
    page.clock.run_for(6_000)
    assert any("/recent" in url for url in polls)
    page.evaluate(SET_VISIBILITY, "hidden")
    expect(page.locator("#live")).to_have_text("paused")
    before = len(polls)
    page.clock.run_for(60_000)
    # A request of the test's own, answered: every request the page made
    # before it has been reported by now.
    page.evaluate("() => fetch('/_stasis/api/stats')")
    assert len(polls) == before + 1, polls[before:]
    page.evaluate(SET_VISIBILITY, "visible")
    expect(page.locator("#live")).to_have_text("live")
    page.clock.run_for(2_000)
    page.evaluate("() => fetch('/_stasis/api/stats')")
    assert len(polls) > before + 2
