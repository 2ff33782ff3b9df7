"""
Running stasis as a service: the unit files in ``contrib/`` and what the
daemon does for systemd (socket activation, ``NOTIFY_SOCKET``).

The units are checked with ``systemd-analyze`` where it is installed (and
skipped, saying so, where not); socket activation and notification are
tested on real daemons, passing them what systemd would.
"""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tomllib

from stasis.notify import notify, notify_socket
from stasis.tap import Options
from tests.daemon import Daemon, _environment, command
from tests.fake_upstream import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "contrib" / "systemd"
PLIST = ROOT / "contrib" / "launchd" / "com.stasis.proxy.plist"
#: Where the units and the plist expect the program; the tests point them at this environment's.
INSTALLED = "/usr/local/bin/stasis"
CHAT = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
HEADERS = {"Authorization": "Bearer sk-test-services", "Content-Type": "application/json"}

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (apt-get install systemd provides it)",
)


def _units(tmp_path: Path) -> Path:
    """The units, copied, with ExecStart pointing at this environment's stasis."""
    folder = tmp_path / "units"
    folder.mkdir()
    for unit in ("stasis.service", "stasis.socket"):
        text = (SYSTEMD / unit).read_text()
        (folder / unit).write_text(
            text.replace(INSTALLED, str(Path(sys.executable).parent / "stasis"))
        )
    return folder


def _exec_start(unit: str) -> list[str]:
    """The ExecStart= command line of ``unit``, its continuation lines joined."""
    text = unit.replace("\\\n", " ")
    [line] = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=").split()


@needs_systemd_analyze
def test_the_units_verify(tmp_path: Path) -> None:
    folder = _units(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", "stasis.socket", "stasis.service"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on unknown keys and misspelt options too: only silence is clean.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@needs_systemd_analyze
def test_the_service_is_rated_ok_by_systemd_analyze_security(tmp_path: Path) -> None:
    folder = _units(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", "stasis.service"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 252)")
    match = re.search(r"Overall exposure level for stasis.service: ([0-9.]+) (\w+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    # 0-10, lower is safer: "OK" is below 4.0; a service on the network cannot go far below 1.
    assert float(match.group(1)) <= 2.0, result.stdout


def test_the_service_runs_stasis_start_on_the_socket_systemd_passes() -> None:
    unit = (SYSTEMD / "stasis.service").read_text()
    program, subcommand, *arguments = _exec_start(unit)
    assert (program, subcommand) == (INSTALLED, "start")
    assert arguments[arguments.index("--listen") + 1] == "systemd:domain=INET:index=0"
    assert "Type=notify" in unit.splitlines()
    assert "User=stasis" in unit.splitlines()
    assert "StateDirectory=stasis" in unit.splitlines()
    assert arguments[arguments.index("--db") + 1].startswith("/var/lib/stasis/")
    # It would break every https upstream (see test_write_execute_memory_breaks_tls).
    assert "MemoryDenyWriteExecute=yes" not in unit.splitlines()
    socket_unit = (SYSTEMD / "stasis.socket").read_text()
    assert "ListenStream=127.0.0.1:4000" in socket_unit.splitlines()
    assert "[Install]" in unit and "[Install]" in socket_unit


def test_the_plist_parses_and_runs_a_program_stasis_installs(tmp_path: Path) -> None:
    with PLIST.open("rb") as f:
        plist = plistlib.load(f)
    assert plist["Label"] == PLIST.stem
    program, subcommand, *arguments = plist["ProgramArguments"]
    # launchd does not search PATH: the path is absolute, and the plist says to
    # replace it with what `command -v stasis` prints. Its program is the
    # console script this package installs, which this environment has too.
    assert os.path.isabs(program)
    assert "command -v stasis" in PLIST.read_text()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert os.path.basename(program) in scripts
    assert (Path(sys.executable).parent / os.path.basename(program)).is_file()
    assert subcommand == "start"
    # The options are the daemon's own, and valid.
    options = Options(environ={})
    options.parseOptions(arguments)
    assert options.config.db == plist["WorkingDirectory"] + "/stasis-cache.db"
    for key in ("RunAtLoad", "KeepAlive", "StandardOutPath", "StandardErrorPath"):
        assert key in plist
    # Restarted after a failure, not after the clean stop (status 0) a SIGTERM makes.
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ExitTimeOut"] > options.config.shutdown_grace


def test_write_execute_memory_breaks_tls() -> None:
    """
    Why the unit has no ``MemoryDenyWriteExecute=yes``: Twisted's TLS client
    (every https upstream) makes a pyOpenSSL verify callback, which cffi
    allocates as writable and executable memory. ``PR_SET_MDWE`` is the
    kernel's same restriction, applied to a child process here.
    """
    script = (
        "import ctypes, sys\n"
        "if sys.argv[1] == 'mdwe' and ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0:\n"
        "    sys.exit(3)\n"  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        "from twisted.internet.ssl import optionsForClientTLS\n"
        "from twisted.internet.protocol import Factory, Protocol\n"
        "from twisted.internet.testing import StringTransport\n"
        "from twisted.protocols.tls import TLSMemoryBIOFactory\n"
        "options = optionsForClientTLS('api.openai.com')\n"
        "factory = TLSMemoryBIOFactory(options, True, Factory.forProtocol(Protocol))\n"
        "wire = StringTransport()\n"
        "try:\n"
        "    factory.buildProtocol(None).makeConnection(wire)\n"
        "except MemoryError:\n"
        "    sys.exit(4)\n"
        "sys.exit(0 if wire.value() else 5)\n"  # the ClientHello went out
    )

    def run(restriction: str) -> int:
        done = subprocess.run([sys.executable, "-c", script, restriction], timeout=60)
        return done.returncode

    assert run("none") == 0
    restricted = run("mdwe")
    if restricted == 3:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert restricted == 4


# Socket activation and notification, on real daemons.

#: Runs the rest of its arguments with LISTEN_PID set to its own pid (kept by
#: exec), the socket on fd 3 and LISTEN_FDNAMES naming it: what systemd
#: (227 and later) does for ExecStart. Twisted ignores sockets that
#: LISTEN_FDNAMES does not name.
_AS_SYSTEMD = (
    "import os, sys\n"
    "fd = int(sys.argv[1])\n"
    "if fd != 3:\n"
    "    os.dup2(fd, 3)\n"
    "    os.close(fd)\n"
    "os.environ['LISTEN_PID'] = str(os.getpid())\n"
    "os.environ['LISTEN_FDS'] = '1'\n"
    "os.environ['LISTEN_FDNAMES'] = 'stasis.socket'\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop()
        assert "Traceback" not in daemon.log, daemon.log


def _popen(tmp_path: Path, args: list[str], **kw: object) -> subprocess.Popen[str]:
    env = _environment({}, home=tmp_path)
    env.update(kw.pop("env", {}))  # type: ignore[call-overload]
    return subprocess.Popen(
        args,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,  # type: ignore[call-overload]
    )


@pytest.mark.parametrize("via", ["twistd", "stasis"])
def test_socket_activation_serves_on_the_socket_systemd_passes(
    tmp_path: Path, upstream: FakeUpstream, daemons: list[Daemon], via: str
) -> None:
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    port = listening.getsockname()[1]
    db = tmp_path / "stasis-cache.db"
    process = _popen(
        tmp_path,
        [
            sys.executable,
            "-c",
            _AS_SYSTEMD,
            str(listening.fileno()),
            *command(via),
            "--listen",
            "systemd:domain=INET:index=0",
            "-u",
            upstream.url,
            "-d",
            str(db),
        ],
        pass_fds=(listening.fileno(),),
    )
    listening.close()  # the daemon holds it now, as it would systemd's copy
    daemon = Daemon(process, db)
    daemons.append(daemon)
    daemon.wait_ready()
    assert daemon.url == f"http://127.0.0.1:{port}"
    assert f"stasis listening on http://127.0.0.1:{port}" in daemon.log
    for expected in ("MISS", "HIT"):
        status, headers, _ = daemon.request("POST", "/v1/chat/completions", CHAT, HEADERS)
        assert (status, headers["x-stasis-status"]) == (200, expected)
    assert len(upstream.calls()) == 1
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(15) == 0


@pytest.fixture
def notifications() -> Iterator[tuple[str, socket.socket]]:
    """An abstract-namespace datagram socket, as systemd's NOTIFY_SOCKET, passing credentials."""
    name = f"@stasis-test-{uuid.uuid4().hex}"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(b"\0" + name[1:].encode())
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    receiver.settimeout(20)
    with receiver:
        yield name, receiver


def _receive(receiver: socket.socket) -> tuple[int, dict[str, str]]:
    """The next notification: the sender's pid and the message's fields."""
    size = socket.CMSG_SPACE(12)  # struct ucred: pid, uid, gid
    data, ancillary, _, _ = receiver.recvmsg(4096, size)
    pid = -1
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = int.from_bytes(payload[:4], sys.byteorder)
    fields = dict(line.split("=", 1) for line in data.decode().splitlines())
    return pid, fields


def test_notify_socket_hears_ready_once_listening_and_stopping_on_sigterm(
    start: Callable[..., Daemon], notifications: tuple[str, socket.socket]
) -> None:
    name, receiver = notifications
    daemon = start(env={"NOTIFY_SOCKET": name})
    pid, ready = _receive(receiver)
    assert pid == daemon.process.pid
    assert ready == {"READY": "1", "STATUS": f"serving on {daemon.url}"}
    # READY means it answers.
    assert daemon.get_json("/health")["status"] == "healthy"
    daemon.process.send_signal(signal.SIGTERM)
    pid, stopping = _receive(receiver)
    assert (pid, stopping["STOPPING"]) == (daemon.process.pid, "1")
    assert daemon.process.wait(15) == 0


def test_with_workers_the_supervisor_alone_says_ready_once_all_serve(
    start: Callable[..., Daemon], notifications: tuple[str, socket.socket]
) -> None:
    name, receiver = notifications
    daemon = start("--workers", "2", env={"NOTIFY_SOCKET": name})
    pid, ready = _receive(receiver)
    assert (pid, ready["READY"]) == (daemon.process.pid, "1")
    assert "with 2 workers" in daemon.wait_for_log("stasis listening on")
    daemon.process.send_signal(signal.SIGTERM)
    pid, stopping = _receive(receiver)
    assert (pid, stopping["STOPPING"]) == (daemon.process.pid, "1")
    assert daemon.process.wait(30) == 0
    # No worker said anything: the next message would be one.
    receiver.settimeout(0.2)
    with pytest.raises(TimeoutError):
        receiver.recv(4096)


def test_notify_reaches_a_socket_by_path_and_is_silent_without_one(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        assert notify("READY=1", "STATUS=up", environ={"NOTIFY_SOCKET": str(path)})
        assert receiver.recv(4096) == b"READY=1\nSTATUS=up"
    assert notify_socket({"NOTIFY_SOCKET": "@abstract"}) == b"\0abstract"
    assert notify_socket({}) is None
    assert notify_socket({"NOTIFY_SOCKET": "vsock:2:1234"}) is None
    assert not notify("READY=1", environ={})
    # A socket that is gone is a warning, never an exception.
    assert not notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "gone")})
