"""instructor-console and classroom-client against a real relay over TLS on loopback.

A facility is made with the admin CLI, a relay runs in-process on ephemeral ports, and
the clients' ``main`` functions run in a worker thread (they call ``asyncio.run``) or as
subprocesses (interactive mode fed by a pipe, a listener running beside another command).
No mocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from classroom_client import ClassroomClient
from classroom_client import cli as learner_cli
from classroom_client.cli import LEARNER_SIDE, BadLine, SayDirect, SayToClass, SetHand, parse_line
from classroom_client.client import check_relay_address
from instructor_console import InstructorConsole
from instructor_console import cli as instructor_cli
from relay import cli as admin_cli
from relay.client import RelayClient
from relay.errors import ClientError, ErrorCode
from relay.home import FacilityHome
from relay.messages import AckStatus, ChatEvent, PresenceChange, PresenceEvent
from relay.server import Relay, running_relay

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
Capture = pytest.CaptureFixture[str]
PIN = "1234"


@dataclass(frozen=True)
class Facility:
    home: Path
    alice: Path
    pc01: Path
    pc02: Path


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def facility(tmp_path_factory: pytest.TempPathFactory) -> Facility:
    root = tmp_path_factory.mktemp("cc")
    home = root / "fac"
    fac = Facility(home, root / "alice.bundle", root / "pc01.bundle", root / "pc02.bundle")
    now = dt.datetime.now(dt.UTC)
    start, end = _iso(now - dt.timedelta(minutes=5)), _iso(now + dt.timedelta(hours=1))
    commands = [
        ["init", "--no-passphrase"],
        ["enroll", "instructor", "alice", "--out", str(fac.alice)],
        ["enroll", "machine", "pc-01", "--classroom", "room-a", "--out", str(fac.pc01)],
        ["enroll", "machine", "pc-02", "--classroom", "room-a", "--out", str(fac.pc02)],
        ["learner", "add", "l1001", "--pin", PIN],
        ["learner", "add", "l1002", "--pin", PIN],
        ["learner", "add", "l1003", "--pin", PIN],
    ]
    for class_id in ("py101", "py-end", "py-hist"):
        commands.append(
            [
                *("schedule", "add", "--id", class_id, "--title", "Python basics"),
                *("--instructor", "alice", "--classroom", "room-a"),
                *("--learner", "l1001", "--learner", "l1002", "--learner", "l1003"),
                *("--start", start, "--end", end),
            ]
        )
    with (
        open(os.devnull, "w") as sink,
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        for argv in commands:
            assert admin_cli.main(["--home", str(home), *argv]) == 0, argv
    return fac


@pytest.fixture
async def relay(facility: Facility) -> AsyncIterator[Relay]:
    async with running_relay(
        FacilityHome(facility.home),
        outside=("127.0.0.1", 0),
        inside=("127.0.0.1", 0),
        control=False,  # a long temporary path can exceed the Unix socket limit
    ) as r:
        yield r


def _outside(r: Relay) -> str:
    assert r.addresses is not None
    return r.addresses.outside_url


def _inside(r: Relay) -> str:
    assert r.addresses is not None
    return r.addresses.inside_url


def _instructor(fac: Facility, r: Relay, *argv: str) -> list[str]:
    return ["--bundle", str(fac.alice), "--relay", _outside(r), *argv]


def _learner(
    fac: Facility, r: Relay, learner: str, *argv: str, bundle: Path | None = None
) -> list[str]:
    return [
        "--bundle",
        str(bundle or fac.pc01),
        "--relay",
        _inside(r),
        "--learner",
        learner,
        "--pin",
        PIN,
        *argv,
    ]


async def _spawn(
    module: str, argv: list[str], stdin: bytes | None = None
) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )


async def _finish(
    proc: asyncio.subprocess.Process, stdin: bytes | None = None, wait: float = 20
) -> tuple[int | None, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(stdin), wait)
    return proc.returncode, out.decode(), err.decode()


async def _wait_for_presence(c: RelayClient, pid: str, wait: float = 15.0) -> None:
    """Wait until ``pid`` is in the class (as seen by the API client ``c``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while pid not in c.roster:
        event = await c.next_event(deadline - loop.time())
        if isinstance(event, PresenceChange) and event.event is PresenceEvent.JOINED:
            continue


# ---------------------------------------------------------------------------------------
# one-shot commands: exit codes and messages
# ---------------------------------------------------------------------------------------


async def test_chat_delivered_exit_0(facility: Facility, relay: Relay, capsys: Capture) -> None:
    argv = _instructor(facility, relay, "chat", "py101", "hello class")
    assert await asyncio.to_thread(instructor_cli.main, argv) == 0
    out, err = capsys.readouterr()
    assert out.startswith("delivered (seq "), (out, err)

    argv = _instructor(facility, relay, "chat", "py101", "Try a for loop", "--to", "l1001")
    assert await asyncio.to_thread(instructor_cli.main, argv) == 0
    assert capsys.readouterr().out.startswith("delivered (seq ")


async def test_learner_to_learner_refused_exit_3(
    facility: Facility, relay: Relay, capsys: Capture
) -> None:
    argv = _learner(facility, relay, "l1001", "chat", "py101", "psst", "--to", "learner:l1002")
    assert await asyncio.to_thread(learner_cli.main, argv) == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("classroom-client: refused: "), err
    assert "learners may not send direct messages to other learners" in err
    assert "What to do:" in err
    assert "Traceback" not in err


async def test_hand_and_lower_hand(
    facility: Facility, relay: Relay, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The PIN from the environment, options after the command.
    monkeypatch.setenv("CLASSROOM_CLIENT_PIN", PIN)
    argv = ["hand", "py101", "up", "--bundle", str(facility.pc02), "--learner", "l1002"]
    argv += ["--relay", _inside(relay)]
    assert await asyncio.to_thread(learner_cli.main, argv) == 0
    assert capsys.readouterr().out.startswith("delivered")
    # The hand was lowered when l1002 left; lowering it again is acknowledged all the same.
    argv = _instructor(facility, relay, "lower-hand", "py101", "learner:l1002")
    assert await asyncio.to_thread(instructor_cli.main, argv) == 0
    assert capsys.readouterr().out.startswith("delivered")


async def test_who_lists_roster(facility: Facility, relay: Relay, capsys: Capture) -> None:
    console = InstructorConsole(facility.alice, _outside(relay))
    async with console.join("py101"):
        argv = _learner(facility, relay, "l1001", "who", "py101")
        assert await asyncio.to_thread(learner_cli.main, argv) == 0
        out = capsys.readouterr().out
        assert 'Class py101 "Python basics"' in out
        assert "instructor:alice" in out
        assert "learner:l1001" in out
        assert "on pc-01, you" in out
        argv = _learner(facility, relay, "l1001", "who", "py101", "--json")
        assert await asyncio.to_thread(learner_cli.main, argv) == 0
        who = json.loads(capsys.readouterr().out)
        assert who["you"]["pid"] == "learner:l1001"
        assert {p["pid"] for p in who["roster"]} >= {"instructor:alice", "learner:l1001"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cannot_connect_exit_2(facility: Facility, capsys: Capture) -> None:
    url = f"wss://localhost:{_closed_port()}"
    argv = ["--bundle", str(facility.alice), "--relay", url, "chat", "py101", "hi"]
    assert instructor_cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("instructor-console: error: could not reach the relay"), err
    assert "Traceback" not in err


def test_wrong_role_bundle_exit_2(facility: Facility, capsys: Capture) -> None:
    argv = ["--bundle", str(facility.pc01), "chat", "py101", "hi"]
    assert instructor_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "this bundle belongs to machine 'pc-01'; instructor-console needs an instructor" in err
    assert err.startswith("instructor-console: error: ")

    argv = ["--bundle", str(facility.alice), "--learner", "l1001", "--pin", PIN, "who", "py101"]
    assert learner_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "this bundle belongs to instructor 'alice'; classroom-client needs a machine" in err


def test_usage_errors_exit_2(
    facility: Facility, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLASSROOM_CLIENT_PIN", raising=False)
    bad = [
        (instructor_cli.main, ["chat", "py101", "hi"], "--bundle FILE is required"),
        (
            instructor_cli.main,
            ["--bundle", str(facility.alice), "--relay", "https://x:1", "who", "py101"],
            "must start with wss://",
        ),
        (
            instructor_cli.main,
            ["--bundle", str(facility.alice), "--relay", "wss://localhost", "who", "py101"],
            "names no port",
        ),
        (instructor_cli.main, ["--bundle", str(facility.alice), "who", "Py 101"], "class id"),
        (instructor_cli.main, ["--bundle", str(facility.alice), "chat", "py101", " "], "empty"),
        (
            learner_cli.main,
            ["--bundle", str(facility.pc01), "--learner", "l1001", "who", "py101"],
            "no PIN for learner l1001",
        ),
    ]
    for main, argv, expected in bad:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err, (argv, err)
        assert "Traceback" not in err


async def test_join_refused_exit_2(facility: Facility, relay: Relay, capsys: Capture) -> None:
    # The instructor's bundle on the inside listener.
    argv = ["--bundle", str(facility.alice), "--relay", _inside(relay), "who", "py101"]
    assert await asyncio.to_thread(instructor_cli.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("instructor-console: refused: "), err
    assert "instructors connect to the outside address" in err
    # A wrong PIN.
    argv = _learner(facility, relay, "l1003", "who", "py101")
    argv[argv.index("--pin") + 1] = "9999"
    assert await asyncio.to_thread(learner_cli.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("classroom-client: refused: "), err
    assert "learner id or PIN is wrong" in err


# ---------------------------------------------------------------------------------------
# listen
# ---------------------------------------------------------------------------------------


async def test_listen_json_count(facility: Facility, relay: Relay) -> None:
    console = InstructorConsole(facility.alice, _outside(relay))
    argv = _learner(
        facility,
        relay,
        "l1001",
        "listen",
        "py101",
        "--json",
        "--count",
        "2",
        "--only",
        "chat",
        "--no-history",
        "--timeout",
        "20",
    )
    listener = await _spawn("classroom_client.cli", argv)
    try:
        async with console.join("py101") as alice:
            await _wait_for_presence(alice, "learner:l1001")
        send = _instructor(facility, relay, "chat", "py101", "hello class")
        assert await asyncio.to_thread(instructor_cli.main, send) == 0
        send = _instructor(facility, relay, "chat", "py101", "line one\nline two", "--to", "l1001")
        assert await asyncio.to_thread(instructor_cli.main, send) == 0
        code, out, err = await _finish(listener)
    finally:
        if listener.returncode is None:
            listener.kill()
            await listener.wait()
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 2, out
    first, second = records
    assert first["type"] == "chat"
    assert first["from"] == "instructor:alice"
    assert first["channel"] == "class"
    assert first["text"] == "hello class"
    assert first["to"] is None
    assert isinstance(first["seq"], int)
    assert first["history"] is False
    assert first["time"].endswith("Z")
    assert dt.datetime.fromisoformat(first["time"].replace("Z", "+00:00")).tzinfo is not None
    assert second["channel"] == "direct"
    assert second["to"] == "learner:l1001"
    assert second["text"] == "line one\nline two"
    assert second["seq"] > first["seq"]


async def test_listen_text_history_and_timeout(
    facility: Facility, relay: Relay, capsys: Capture
) -> None:
    send = _instructor(facility, relay, "chat", "py-hist", "earlier\n[00:00:00] #class fake")
    assert await asyncio.to_thread(instructor_cli.main, send) == 0
    capsys.readouterr()
    argv = _learner(facility, relay, "l1002", "listen", "py-hist", "--timeout", "0.7")
    argv[1] = str(facility.pc02)
    assert await asyncio.to_thread(learner_cli.main, argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    chat = [line for line in lines if line.startswith("[") and "#class" in line]
    # The replayed message, its second line indented so that it cannot pose as a message.
    assert len(chat) == 1, out
    assert chat[0].endswith("] #class instructor:alice: earlier"), out
    assert lines[lines.index(chat[0]) + 1] == "    [00:00:00] #class fake"
    assert any(line.endswith("] * instructor:alice joined") for line in lines), out
    # --count counts every printed event, whatever its type.
    argv = _learner(
        facility, relay, "l1002", "listen", "py-hist", "--count", "2", bundle=facility.pc02
    )
    assert await asyncio.to_thread(learner_cli.main, argv) == 0
    assert capsys.readouterr().out.splitlines() == lines[:3]  # the chat takes two lines


async def test_listen_ends_with_class_exit_3(facility: Facility, relay: Relay) -> None:
    argv = _learner(facility, relay, "l1001", "listen", "py-end", "--json")
    listener = await _spawn("classroom_client.cli", argv)
    try:
        console = InstructorConsole(facility.alice, _outside(relay))
        async with console.join("py-end") as alice:
            await _wait_for_presence(alice, "learner:l1001")
        assert await relay.end_session("py-end", "admin:root", "Fire drill")
        code, out, err = await _finish(listener)
    finally:
        if listener.returncode is None:
            listener.kill()
            await listener.wait()
    assert code == 3, (out, err)
    ended = json.loads(out.splitlines()[-1])
    assert ended["type"] == "session_ended"
    assert ended["text"] == "Fire drill"
    assert "classroom-client: the class has ended (by admin" in err
    assert "Fire drill" in err


# ---------------------------------------------------------------------------------------
# interactive mode, fed by a pipe
# ---------------------------------------------------------------------------------------


async def test_interactive_instructor_pipe(facility: Facility, relay: Relay) -> None:
    proc = await _spawn(
        "instructor_console.cli", _instructor(facility, relay, "interactive", "py101"), b""
    )
    code, out, err = await _finish(proc, b"hello\n/bogus\n/lower learner:l1002\n/quit\n")
    assert code == 0, (out, err)
    assert "Joined class py101" in out
    assert "-> delivered (seq " in out
    assert "unknown command /bogus" in err
    assert out.count("-> delivered") == 2, out
    assert "Traceback" not in err


async def test_interactive_learner_pipe(facility: Facility, relay: Relay) -> None:
    console = InstructorConsole(facility.alice, _outside(relay))
    async with console.join("py101") as alice:
        lines = b"/dm instructor question?\n/dm learner:l1002 psst\n/hand up\n/who\n"
        proc = await _spawn(
            "classroom_client.cli",
            _learner(facility, relay, "l1001", "interactive", "py101"),
            b"",
        )
        code, out, err = await _finish(proc, lines)  # end of input leaves
        got = []
        with contextlib.suppress(TimeoutError):
            while True:
                event = await alice.next_event(2.0)
                if isinstance(event, ChatEvent) and event.sender == "learner:l1001":
                    got.append(event)
                    break
    assert code == 0, (out, err)
    assert "-> delivered (seq " in out
    assert "-> refused: " in out
    assert "learners may not send direct messages" in out
    assert "Raised hands (1, first raised first): learner:l1001" in out
    assert [(e.to, e.text) for e in got] == [("instructor:alice", "question?")]


# ---------------------------------------------------------------------------------------
# the Python API and pure helpers
# ---------------------------------------------------------------------------------------


async def test_python_api(facility: Facility, relay: Relay) -> None:
    with pytest.raises(ClientError, match="instructor-console needs an instructor bundle"):
        InstructorConsole(facility.pc01)
    with pytest.raises(ClientError, match="classroom-client needs a machine bundle"):
        ClassroomClient(facility.alice, "l1001", PIN)
    learner = ClassroomClient(facility.pc01, "l1001", PIN, relay_url=_inside(relay))
    assert learner.pid == "learner:l1001"
    assert learner.classroom == "room-a"
    assert PIN not in repr(learner)
    async with learner.join("py101") as c:
        assert c.me is not None
        assert c.me.pid == "learner:l1001"
        ack = await c.chat("hi", to="learner:l1002")
        assert ack.status is AckStatus.REFUSED
        assert ack.error == "route_refused"
    console = InstructorConsole(facility.alice, relay_url=_outside(relay))
    alice = await console.join("py101")
    try:
        assert (await alice.chat("hello")).status is AckStatus.DELIVERED
    finally:
        await alice.close()
    bad_pin = ClassroomClient(facility.pc02, "l1002", "0000", relay_url=_inside(relay))
    with pytest.raises(ClientError) as caught:
        await bad_pin.join("py101")
    assert caught.value.code is ErrorCode.BAD_PIN


def test_relay_address_and_lines() -> None:
    assert check_relay_address("wss://relay.example:8443/") == "wss://relay.example:8443"
    assert check_relay_address("wss://[::1]:8443") == "wss://[::1]:8443"
    for bad in ("ws://relay:8443", "wss://relay", "wss://relay:8443/v1", "wss://:8443", "x"):
        with pytest.raises(ClientError):
            check_relay_address(bad)
    assert parse_line("hello", LEARNER_SIDE) == SayToClass("hello")
    assert parse_line("//etc", LEARNER_SIDE) == SayToClass("/etc")
    assert parse_line("/dm instructor is it?", LEARNER_SIDE) == SayDirect("instructor", "is it?")
    assert parse_line("/hand up", LEARNER_SIDE) == SetHand(True)
    assert isinstance(parse_line("/lower learner:l1", LEARNER_SIDE), BadLine)
    assert parse_line("   ", LEARNER_SIDE) is None
    assert learner_cli.clean_text("a\x1b[2Jb\u202ec\nd") == "a\\u001b[2Jb\\u202ec\n    d"
