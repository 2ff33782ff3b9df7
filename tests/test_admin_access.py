"""
Who may use the admin API (docs/admin-api.md, *Who may use it*): a browser
page on another site can neither read nor change it, a rebound DNS name is
refused, a change needs JSON and a local client or the token, and a daemon
listening beyond loopback without ``--admin-token`` changes nothing.

Over plain HTTP against real daemons, and the rules one by one on
:class:`~stasis.web.admin.access.AdminAccess` where a real network would be
needed (a client on another machine).
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.web.test.requesthelper import DummyRequest

from stasis.errors import AdminForbidden, AdminUnauthorized
from stasis.web.admin.access import AdminAccess, is_loopback
from tests.admin_client import Answer, call, chat
from tests.daemon import Daemon
from tests.fake_upstream import FakeUpstream

JSON = {"Content-Type": "application/json"}
TOKEN = "an-admin-token-of-the-operators-choice"
PURGE_ALL = b'{"everything": true}'


def _port(daemon: Daemon) -> int:
    port = urlsplit(daemon.url).port
    assert port is not None
    return port


def _token(daemon: Daemon) -> str:
    line = daemon.wait_for_log(r"admin token: ")
    found = re.search(r"admin token: (\S+)", line)
    assert found is not None
    return found.group(1)


def _refused(answer: Answer, status: int = 403) -> str:
    assert answer.status == status, answer.body
    error = answer.json["error"]
    assert error["type"] == (
        "stasis_admin_forbidden" if status == 403 else "stasis_admin_unauthorized"
    )
    assert not any(name.startswith("access-control-") for name in answer.headers)
    return str(error["message"])


def test_a_browser_page_on_another_site_can_neither_read_nor_write(daemon: Daemon) -> None:
    port = _port(daemon)
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": f"http://localhost:{port}"},  # another origin, though local
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        _refused(call(daemon, "GET", "/_stasis/api/stats", headers=headers))
        _refused(call(daemon, "DELETE", "/_stasis/api/entries/" + "0" * 64, headers=headers))
        _refused(call(daemon, "POST", "/_stasis/api/purge", PURGE_ALL, {**JSON, **headers}))
        _refused(call(daemon, "GET", "/_stasis/", headers=headers))
    # The daemon's own page may.
    own = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
    assert call(daemon, "GET", "/_stasis/api/stats", headers=own).status == 200
    assert call(daemon, "POST", "/_stasis/api/purge", PURGE_ALL, {**JSON, **own}).status == 200
    # A CORS preflight is not granted.
    preflight = call(
        daemon,
        "OPTIONS",
        "/_stasis/api/purge",
        headers={
            "Origin": "http://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status in (403, 405)
    assert not any(name.startswith("access-control-") for name in preflight.headers)
    preflight = call(daemon, "OPTIONS", "/_stasis/api/purge")
    assert preflight.status == 405
    assert not any(name.startswith("access-control-") for name in preflight.headers)


def test_a_rebound_dns_name_is_refused(daemon: Daemon) -> None:
    port = _port(daemon)
    chat(daemon, "kept")
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}"):
        message = _refused(call(daemon, "GET", "/_stasis/api/entries", headers={"Host": host}))
        assert "Host" in message
        _refused(
            call(daemon, "POST", "/_stasis/api/purge", PURGE_ALL, {**JSON, "Host": host}),
        )
    assert len(call(daemon, "GET", "/_stasis/api/entries").json["entries"]) == 1
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
        assert call(daemon, "GET", "/_stasis/api/stats", headers={"Host": host}).status == 200


def test_a_change_needs_a_json_body(daemon: Daemon) -> None:
    chat(daemon, "kept")
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        headers = {"Content-Type": content_type}
        message = _refused(call(daemon, "POST", "/_stasis/api/purge", PURGE_ALL, headers))
        assert "application/json" in message
    _refused(call(daemon, "POST", "/_stasis/api/purge", PURGE_ALL))
    assert len(call(daemon, "GET", "/_stasis/api/entries").json["entries"]) == 1
    headers = {"Content-Type": "application/json; charset=utf-8"}
    assert call(daemon, "POST", "/_stasis/api/purge", PURGE_ALL, headers).status == 200


def test_the_printed_token_is_accepted_and_a_wrong_one_is_not(daemon: Daemon) -> None:
    token = _token(daemon)
    # Printed once, on standard error, not as a log event.
    assert daemon.log.count(token) == 1
    assert f"stasis: admin token: {token}\n" in daemon.log
    assert call(daemon, "GET", "/_stasis/api/stats").body.find(token.encode()) == -1
    right = {**JSON, "Authorization": f"Bearer {token}"}
    assert call(daemon, "POST", "/_stasis/api/purge", PURGE_ALL, right).status == 200
    for wrong in (f"Bearer {token}x", "Bearer ", "Basic dXNlcjpwYXNz", token):
        answer = call(
            daemon, "POST", "/_stasis/api/purge", PURGE_ALL, {**JSON, "Authorization": wrong}
        )
        _refused(answer, 401)
        assert answer.headers["www-authenticate"].startswith("Bearer")


def _other_address() -> str | None:
    """This machine's first address that is not loopback, if it has one."""
    try:
        output = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    for address in output.stdout.split():
        if ":" in address or address.startswith("127."):
            continue
        with socket.socket() as probe:
            try:
                probe.bind((address, 0))
            except OSError:
                continue
        return address
    return None


def test_a_daemon_open_to_the_network_without_a_token_changes_nothing(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start("--listen", "tcp:0:interface=0.0.0.0")
    chat(daemon, "kept")
    key = call(daemon, "GET", "/_stasis/api/entries").json["entries"][0]["key"]
    # Even from this machine: a reverse proxy would make every client local.
    message = _refused(call(daemon, "DELETE", f"/_stasis/api/entries/{key}"))
    assert "--admin-token" in message
    _refused(call(daemon, "POST", "/_stasis/api/purge", PURGE_ALL, JSON))
    # No token was made up, so none is printed, and no bearer is accepted.
    assert "admin token:" not in daemon.log
    other = _other_address()
    if other is not None:
        port = _port(daemon)
        headers = {"Host": f"{other}:{port}"}
        read = call(daemon, "GET", "/_stasis/api/entries", headers=headers, connect_to=other)
        assert read.status == 200
        _refused(call(daemon, "DELETE", f"/_stasis/api/entries/{key}", connect_to=other))
    assert len(call(daemon, "GET", "/_stasis/api/entries").json["entries"]) == 1


def test_a_daemon_open_to_the_network_takes_changes_with_its_token(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start("--listen", "tcp:0:interface=0.0.0.0", env={"STASIS_ADMIN_TOKEN": TOKEN})
    assert "admin token:" not in daemon.log
    assert TOKEN not in daemon.log
    chat(daemon, "kept")
    key = call(daemon, "GET", "/_stasis/api/entries").json["entries"][0]["key"]
    path = f"/_stasis/api/entries/{key}"
    other = _other_address() or "127.0.0.1"
    if other != "127.0.0.1":
        # From another address: no token, no change.
        _refused(call(daemon, "DELETE", path, connect_to=other), 401)
    wrong = {"Authorization": f"Bearer {TOKEN[:-1]}"}
    _refused(call(daemon, "DELETE", path, headers=wrong, connect_to=other), 401)
    right = {"Authorization": f"Bearer {TOKEN}"}
    assert call(daemon, "DELETE", path, headers=right, connect_to=other).status == 200
    assert call(daemon, "GET", "/_stasis/api/entries").json["entries"] == []


def test_a_short_admin_token_is_refused_at_start(tmp_path: object) -> None:
    from stasis.tap import Options

    options = Options(environ={"STASIS_ADMIN_TOKEN": "short"})
    with pytest.raises(SystemExit) as exited:
        options.parseOptions([])
    assert exited.value.code == 2
    options = Options(environ={"STASIS_ADMIN_TOKEN": TOKEN})
    options.parseOptions([])
    assert options.config.admin_token == TOKEN
    assert TOKEN not in repr(options.config)
    assert "--admin-token" in str(Options())


# The rules one by one, on requests made up here.


def _request(
    method: bytes = b"GET",
    host: bytes = b"127.0.0.1:4000",
    peer: str = "127.0.0.1",
    headers: dict[bytes, bytes] | None = None,
) -> DummyRequest:
    request = DummyRequest([b"api", b"stats"])
    request.method = method
    request.client = IPv4Address("TCP", peer, 51234)
    request.requestHeaders.setRawHeaders(b"host", [host])
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [value])
    return request


def _listening(address: object, token: str = TOKEN, given: bool = False) -> AdminAccess:
    access = AdminAccess(token=token, given=given)
    access.listening_on(address)  # type: ignore[arg-type]
    return access


LOOPBACK = IPv4Address("TCP", "127.0.0.1", 4000)
EVERYWHERE = IPv4Address("TCP", "0.0.0.0", 4000)
DELETE_JSON = {b"content-type": b"application/json"}


def test_a_listener_is_loopback_only_when_every_address_is() -> None:
    assert is_loopback(LOOPBACK)
    assert is_loopback(IPv4Address("TCP", "127.8.9.10", 1))
    assert is_loopback(IPv6Address("TCP", "::1", 1))
    assert is_loopback(IPv6Address("TCP", "::ffff:127.0.0.1", 1))
    assert is_loopback(UNIXAddress(b"/run/stasis.sock"))
    assert not is_loopback(EVERYWHERE)
    assert not is_loopback(IPv6Address("TCP", "::", 1))
    assert not is_loopback(IPv4Address("TCP", "192.0.2.2", 1))
    both = AdminAccess(token=TOKEN)
    both.listening_on(UNIXAddress(b"/run/stasis.sock"))
    both.listening_on(EVERYWHERE)
    assert not both.loopback
    # Before it listens, it counts as open to the network.
    assert AdminAccess(token=TOKEN).refusal(_request(b"DELETE")) is not None


def test_the_made_up_token_is_announced_only_on_loopback() -> None:
    assert _listening(LOOPBACK).announced() == TOKEN
    assert _listening(UNIXAddress(b"/run/s.sock")).announced() == TOKEN
    assert _listening(EVERYWHERE).announced() is None
    assert _listening(LOOPBACK, given=True).announced() is None


def test_a_change_from_another_machine_needs_the_token() -> None:
    access = _listening(LOOPBACK)
    remote = _request(b"DELETE", peer="192.0.2.7", headers=DELETE_JSON)
    assert isinstance(access.refusal(remote), AdminUnauthorized)
    bearer = {**DELETE_JSON, b"authorization": f"Bearer {TOKEN}".encode()}
    assert access.refusal(_request(b"DELETE", peer="192.0.2.7", headers=bearer)) is None
    assert access.refusal(_request(b"DELETE", headers=DELETE_JSON)) is None
    # Reads need no token, from anywhere the Host names the daemon.
    assert access.refusal(_request(peer="192.0.2.7")) is None


def test_a_network_listener_without_a_given_token_refuses_every_change() -> None:
    access = _listening(EVERYWHERE)
    bearer = {b"authorization": f"Bearer {TOKEN}".encode()}
    for request in (
        _request(b"DELETE"),
        _request(b"DELETE", headers=bearer),
        _request(b"DELETE", peer="192.0.2.7", headers=bearer),
    ):
        assert isinstance(access.refusal(request), AdminForbidden)
    given = _listening(EVERYWHERE, given=True)
    assert given.refusal(_request(b"DELETE", peer="192.0.2.7", headers=bearer)) is None
    assert isinstance(given.refusal(_request(b"DELETE", peer="192.0.2.7")), AdminUnauthorized)


def test_a_host_names_the_daemon_by_loopback_localhost_or_its_address() -> None:
    access = _listening(IPv4Address("TCP", "192.0.2.2", 4000), given=True)
    for host in (b"127.0.0.1:4000", b"localhost:4000", b"[::1]:4000", b"192.0.2.2:4000"):
        assert access.refusal(_request(host=host)) is None, host
    for host in (b"evil.example:4000", b"192.0.2.9:4000", b"localhost.evil.example", b""):
        assert isinstance(access.refusal(_request(host=host)), AdminForbidden), host


def test_no_token_is_printed_beside_json_log_lines(start: Callable[..., Daemon]) -> None:
    daemon = start("--log-format", "json")
    assert "admin token:" not in daemon.log
