"""
Embedding stasis: ``serve_in_thread`` from plain scripts (each a subprocess
that imports ``stasis`` and the standard library only, never Twisted), and
``StasisService`` added to a Twisted program's own service tree.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest_twisted
import treq
from twisted.application.service import Application, IServiceCollection, MultiService
from twisted.internet.address import IPv4Address

from stasis import Config, StasisService
from tests.fake_upstream import FakeUpstream

#: Longest a script may take: it starts, makes two calls and stops in about a second.
SCRIPT_TIMEOUT = 60.0

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}

#: What every script starts with: a POST through the proxy, with urllib only.
PRELUDE = """
import json, os, signal, socket, sys, threading, urllib.request
import stasis

def post(url):
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    request = urllib.request.Request(
        url + "/v1/chat/completions",
        body.encode(),
        {"Authorization": "Bearer sk-embedded", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return response.headers["X-Stasis-Status"], json.loads(response.read())

def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False

def report(**facts):
    print("REPORT " + json.dumps(facts), flush=True)
"""


def run_script(
    tmp_path: Path, body: str, *args: str
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """Run ``body`` after :data:`PRELUDE` as a script, which must exit 0; its report, its run."""
    source = PRELUDE + textwrap.dedent(body)
    script = tmp_path / "script.py"
    script.write_text(source)
    done = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    reports = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert len(reports) == 1, done.stdout + done.stderr
    return json.loads(reports[0].removeprefix("REPORT ")), done


def test_the_scripts_import_no_twisted() -> None:
    """The point of serve_in_thread: the program never touches Twisted itself."""
    assert "twisted" not in PRELUDE.lower()
    assert "twisted" not in SERVE.lower()


SERVE = """
before = (dict(os.environ), signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
config = stasis.Config(
    listen="tcp:0:interface=127.0.0.1", db=sys.argv[2], upstream=sys.argv[1]
)
proxy = stasis.serve_in_thread(config)
port = int(proxy.url.rsplit(":", 1)[1])
statuses = []
for _ in range(2):
    status, answer = post(proxy.url)
    statuses.append(status)
stats = proxy.stats()
threads_serving = threading.active_count()
proxy.stop()
proxy.stop()  # again: nothing happens
after = (dict(os.environ), signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
report(
    url=proxy.url,
    statuses=statuses,
    object=answer["object"],
    hits=stats["hits"],
    misses=stats["misses"],
    entries=stats["totalEntries"],
    threads_serving=threads_serving,
    threads_after=[t.name for t in threading.enumerate()],
    refused=refused(port),
    untouched=before == after,
    running=proxy.running,
)
"""


def test_a_plain_script_serves_caches_and_stops(tmp_path: Path, upstream: FakeUpstream) -> None:
    db = tmp_path / "cache.db"
    facts, done = run_script(tmp_path, SERVE, upstream.url, str(db))
    assert facts["url"].startswith("http://127.0.0.1:")
    assert not facts["url"].endswith(":0")
    assert facts["statuses"] == ["MISS", "HIT"]
    assert facts["object"] == "chat.completion"
    assert len(upstream.calls()) == 1
    assert (facts["hits"], facts["misses"], facts["entries"]) == (1, 1, 1)
    assert facts["threads_serving"] > 1
    # Stopped: the reactor thread (and the database's) joined, the port closed.
    assert facts["threads_after"] == ["MainThread"]
    assert facts["refused"] is True
    assert facts["running"] is False
    # No environment variable, no signal handler changed.
    assert facts["untouched"] is True
    # Info lines stay below logging's default threshold: nothing on stderr.
    assert done.stderr == ""
    # The database was closed complete: the entry is there for the next run.
    assert db.exists()


def test_its_log_lines_go_to_the_logging_module(tmp_path: Path, upstream: FakeUpstream) -> None:
    body = """
    import logging
    form = "LOG %(name)s %(levelname)s %(message)s"
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format=form)
    with stasis.serve_in_thread(stasis.Config(
        listen="tcp:0:interface=127.0.0.1", db="c.db", upstream=sys.argv[1]
    )) as proxy:
        post(proxy.url)
    report(url=proxy.url)
    """
    facts, done = run_script(tmp_path, body, upstream.url)
    url = facts["url"]
    lines = [line for line in done.stdout.splitlines() if line.startswith("LOG ")]
    assert any(
        line.startswith("LOG stasis.service INFO stasis listening on " + url) for line in lines
    ), lines
    assert any(line.startswith("LOG stasis.http INFO ") and "MISS" in line for line in lines), lines
    # Twisted's own chatter about its reactor is not the program's business.
    assert not [line for line in lines if "stasis" not in line.split()[1]], lines


def test_at_loggings_default_level_no_request_line_is_even_made(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """
    Nothing starts Twisted's logging in such a program, so Twisted keeps every
    event in memory (up to 65,536): a line per request nobody sees must not be made.
    """
    body = """
    from twisted.logger import globalLogPublisher  # only to count what is published

    published = []
    globalLogPublisher.addObserver(lambda event: published.append(event.get("log_namespace")))
    with stasis.serve_in_thread(stasis.Config(
        listen="tcp:0:interface=127.0.0.1", db="c.db", upstream=sys.argv[1]
    )) as proxy:
        statuses = [post(proxy.url)[0] for _ in range(3)]
    report(statuses=statuses, published=published)
    """
    facts, done = run_script(tmp_path, body, upstream.url)
    assert facts["statuses"] == ["MISS", "HIT", "HIT"]
    assert [name for name in facts["published"] if name and name.startswith("stasis")] == []
    assert done.stderr == ""


def test_a_context_manager_stops_it_and_a_second_proxy_is_refused(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    body = """
    config = stasis.Config(listen="tcp:0:interface=127.0.0.1", db="c.db", upstream=sys.argv[1])
    refusals = []
    with stasis.serve_in_thread(config) as proxy:
        status, _ = post(proxy.url)
        try:
            stasis.serve_in_thread(config)
        except RuntimeError as e:
            refusals.append(str(e))
        status_after_refusal, _ = post(proxy.url)
    try:
        stasis.serve_in_thread(config)
    except RuntimeError as e:
        refusals.append(str(e))
    try:
        proxy.stats()
    except RuntimeError as e:
        refusals.append(str(e))
    report(
        statuses=[status, status_after_refusal],
        refusals=refusals,
        threads_after=[t.name for t in threading.enumerate()],
    )
    """
    facts, _ = run_script(tmp_path, body, upstream.url)
    # The refused second call did not disturb the first proxy.
    assert facts["statuses"] == ["MISS", "HIT"]
    while_running, after_stop, stats_after_stop = facts["refusals"]
    assert "already served a proxy in this process" in while_running
    assert "one proxy per process" in while_running
    assert "was stopped" in after_stop
    assert "cannot be restarted" in after_stop
    assert "stopped" in stats_after_stop
    assert facts["threads_after"] == ["MainThread"]


def test_a_reactor_already_running_is_refused(tmp_path: Path) -> None:
    body = """
    from twisted.internet import reactor  # the host program's own reactor, in a thread

    running = threading.Event()
    reactor.callWhenRunning(running.set)
    run = {"installSignalHandlers": False}
    threading.Thread(target=reactor.run, kwargs=run, daemon=True).start()
    assert running.wait(20)
    try:
        stasis.serve_in_thread()
    except RuntimeError as e:
        refusal = str(e)
    else:
        refusal = None
    report(refusal=refusal, db_made=os.path.exists("stasis-cache.db"))
    """
    facts, _ = run_script(tmp_path, body)
    assert facts["refusal"] is not None
    assert "a Twisted reactor already runs in this process" in facts["refusal"]
    assert "StasisService" in facts["refusal"]  # what to do instead
    assert facts["db_made"] is False


def test_a_reactor_that_ran_and_stopped_is_refused(tmp_path: Path) -> None:
    body = """
    from twisted.internet import reactor  # the host program ran its reactor once

    reactor.callWhenRunning(reactor.stop)
    reactor.run(installSignalHandlers=False)
    try:
        stasis.serve_in_thread(stasis.Config(listen="tcp:0:interface=127.0.0.1", db="c.db"))
    except RuntimeError as e:
        refusal = str(e)
    else:
        refusal = None
    report(refusal=refusal, threads_after=[t.name for t in threading.enumerate()])
    """
    facts, done = run_script(tmp_path, body)
    assert facts["refusal"] == (
        "the Twisted reactor already ran and stopped in this process, and it cannot be restarted"
    )
    assert facts["threads_after"] == ["MainThread"]
    assert "Traceback" not in done.stderr


def test_a_port_taken_raises_in_the_caller_and_leaves_no_thread(tmp_path: Path) -> None:
    body = """
    config = stasis.Config(
        listen=f"tcp:{sys.argv[1]}:interface=127.0.0.1", db="c.db", upstream="http://127.0.0.1:9"
    )
    try:
        stasis.serve_in_thread(config)
    except stasis.StartupError as e:
        error = str(e)
    else:
        error = None
    report(
        error=error,
        threads_after=[t.name for t in threading.enumerate()],
        db_made=os.path.exists("c.db"),
    )
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        facts, done = run_script(tmp_path, body, str(port))
    assert facts["error"] == (
        f"cannot listen on tcp:{port}:interface=127.0.0.1: address already in use"
    )
    assert facts["threads_after"] == ["MainThread"]
    assert facts["db_made"] is False
    assert "Traceback" not in done.stderr


def test_several_workers_are_refused_before_anything_starts(tmp_path: Path) -> None:
    body = """
    try:
        stasis.serve_in_thread(stasis.Config(listen="tcp:0", db="c.db", workers=2))
    except ValueError as e:
        error = str(e)
    report(error=error, threads_after=[t.name for t in threading.enumerate()])
    """
    facts, _ = run_script(tmp_path, body)
    assert "config.workers must be 1, not 2" in facts["error"]
    assert facts["threads_after"] == ["MainThread"]


@pytest_twisted.ensureDeferred
async def test_a_twisted_program_adds_the_service_to_its_application(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """``setServiceParent`` into an application's service collection, as a .tac file does."""
    application = Application("host")
    parent = MultiService()
    parent.setServiceParent(IServiceCollection(application))
    service = StasisService(
        Config(listen="tcp:0:interface=127.0.0.1", db=str(tmp_path / "c.db"), upstream=upstream.url)
    )
    service.setServiceParent(parent)
    # What twistd does with the application's collection.
    collection = IServiceCollection(application)
    collection.privilegedStartService()
    collection.startService()
    try:
        port = await service.when_listening()
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        statuses = []
        for _ in range(2):
            response = await treq.post(
                f"http://127.0.0.1:{address.port}/v1/chat/completions",
                json.dumps(CHAT).encode(),
                headers={"Authorization": "Bearer sk-x", "Content-Type": "application/json"},
                persistent=False,
            )
            assert json.loads(await response.content())["object"] == "chat.completion"
            statuses.append(response.headers.getRawHeaders("x-stasis-status")[0])
        assert statuses == ["MISS", "HIT"]
        assert len(upstream.calls()) == 1
    finally:
        await collection.stopService()
    assert service.port is None
    assert not service.running
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", address.port)) != 0  # no longer listening


def test_a_database_that_cannot_open_raises_in_the_caller_and_frees_the_port(
    tmp_path: Path, closed_port: int
) -> None:
    """The port is bound before the database opens: a failed start must let go of it."""
    body = """
    os.mkdir("a-folder")
    config = stasis.Config(
        listen=f"tcp:{sys.argv[1]}:interface=127.0.0.1", db="a-folder", upstream="http://127.0.0.1:9"
    )
    try:
        stasis.serve_in_thread(config)
    except stasis.StartupError as e:
        error = str(e)
    else:
        error = None
    with socket.socket() as again:
        again.bind(("127.0.0.1", int(sys.argv[1])))  # raises if the port is still held
    report(error=error, threads_after=[t.name for t in threading.enumerate()])
    """
    facts, done = run_script(tmp_path, body, str(closed_port))
    assert facts["error"] is not None
    assert "cannot open the cache database 'a-folder'" in facts["error"]
    assert facts["threads_after"] == ["MainThread"]
    assert "Traceback" not in done.stderr


def test_the_openai_sdk_through_a_proxy_in_a_thread(tmp_path: Path, upstream: FakeUpstream) -> None:
    """The README's example: the official SDK pointed at ``proxy.url + "/v1"``."""
    body = """
    import openai

    config = stasis.Config(listen="tcp:0:interface=127.0.0.1", db="c.db", upstream=sys.argv[1])
    with stasis.serve_in_thread(config) as proxy:
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-embedded", max_retries=0)
        statuses, texts = [], []
        for _ in range(2):
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
            statuses.append(raw.headers["x-stasis-status"])
            texts.append(raw.parse().choices[0].message.content)
        stats = proxy.stats()
    report(statuses=statuses, same=texts[0] == texts[1], hits=stats["hits"])
    """
    facts, _ = run_script(tmp_path, body, upstream.url)
    assert facts["statuses"] == ["MISS", "HIT"]
    assert facts["same"] is True
    assert facts["hits"] == 1
    assert len(upstream.calls()) == 1
