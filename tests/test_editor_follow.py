"""Follow mode of the shared editor: the pure view (:func:`classroom_client.follow.follow_view`
and its helpers, the ``/open`` line), then ``classroom-client follow``, ``instructor-console
editor present`` and interactive ``/open`` against a real relay over TLS on loopback.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from classroom_client import cli as learner_cli
from classroom_client.cli import LEARNER_SIDE, BadLine, OpenFile, ShowOpen, parse_line
from classroom_client.follow import (
    PINNED,
    WAITING,
    follow_view,
    instructor_presence,
    line_of,
    line_start,
)
from instructor_console import cli as instructor_cli
from instructor_console.cli import INSTRUCTOR_SIDE
from relay.client import RelayClient
from relay.messages import EditorModeEvent, EditorPresenceEvent
from relay.server import Relay
from tests.conftest import PINS, Facility, console_argv, eventually

Capture = pytest.CaptureFixture[str]
ROOT = Path(__file__).resolve().parent.parent
LOOPS = "".join(f"line {n}\n" for n in range(1, 21))


def _at(
    offset: int, *, who: str = "instructor:alice", file: str | None = "loops.py", time: float = 1.0
) -> EditorPresenceEvent:
    return EditorPresenceEvent(
        ws="class", who=who, file=file, anchor=offset, head=offset, time=time
    )


def _mode(lecture: bool) -> EditorModeEvent:
    return EditorModeEvent(lecture=lecture, shared=(), by="instructor:alice", time=1.0)


# -- pure --------------------------------------------------------------------------------


def test_line_offsets() -> None:
    text = "a\nbc\n\nd"
    assert [line_start(text, n) for n in (1, 2, 3, 4)] == [0, 2, 5, 6]
    assert line_start(text, 99) == 6  # past the end: the last line
    assert line_start("", 3) == 0
    assert [line_of(text, i) for i in (0, 1, 2, 4, 5, 6, 7, 100)] == [1, 1, 2, 2, 3, 4, 4, 4]
    emoji = "😀\nx"  # code points, not UTF-16 units or bytes
    assert line_start(emoji, 2) == 2


def test_view_shows_the_lines_around_the_cursor() -> None:
    lines = follow_view({"loops.py": LOOPS}, _at(line_start(LOOPS, 10)), None, context=2)
    assert lines == [
        "instructor is at class/loops.py line 10 (instructor:alice)",
        "    8  line 8",
        "    9  line 9",
        ">  10  line 10",
        "   11  line 11",
        "   12  line 12",
    ]


def test_view_at_the_edges_and_with_a_selection() -> None:
    first = follow_view({"loops.py": LOOPS}, _at(0), None, context=1)
    assert first[1:] == [">   1  line 1", "    2  line 2"]
    last = follow_view({"loops.py": LOOPS}, _at(len(LOOPS) + 50), None, context=1)
    assert last[0].startswith("instructor is at class/loops.py line 21 ")
    assert last[-1] == ">  21"  # the empty line after the final line break
    selection = EditorPresenceEvent(
        ws="class",
        who="instructor:alice",
        file="loops.py",
        anchor=line_start(LOOPS, 3),
        head=line_start(LOOPS, 5),
        time=1.0,
    )
    lines = follow_view({"loops.py": LOOPS}, selection, None, context=1)
    assert (
        lines[0] == "instructor is at class/loops.py line 5, selection lines 3-5 (instructor:alice)"
    )
    assert lines[1:] == ["|   4  line 4", ">   5  line 5", "    6  line 6"]


def test_view_without_a_place() -> None:
    assert follow_view(None, None, None) == [WAITING]
    assert follow_view(None, None, _mode(True)) == [WAITING, PINNED]
    assert follow_view({}, _at(0, file=None), None) == [
        "instructor has no file open (instructor:alice)"
    ]
    assert follow_view({}, _at(0, file="gone.py"), _mode(False)) == [
        "instructor is at class/gone.py, which this client does not have (instructor:alice)"
    ]
    assert follow_view(None, _at(0), None)[0].endswith(
        "which this client does not have (instructor:alice)"
    )


def test_view_in_lecture_mode_says_the_class_is_pinned() -> None:
    lines = follow_view({"loops.py": LOOPS}, _at(0), _mode(True), context=0)
    assert lines == [
        "instructor is at class/loops.py line 1 (instructor:alice)",
        PINNED,
        ">   1  line 1",
    ]


def test_view_escapes_what_could_disguise_text() -> None:
    text = "ok\nx = 1\x1b[2J\u202e# gnp.\u200b\r\n\u2028fake header\n"
    presence = EditorPresenceEvent(
        ws="class", who="instructor:alice", file="a\u202eb.py", anchor=3, head=3, time=1.0
    )
    lines = follow_view({"a\u202eb.py": text}, presence, None, context=5)
    shown = "\n".join(lines)
    assert lines[0] == "instructor is at class/a\\u202eb.py line 2 (instructor:alice)"
    assert ">   2  x = 1\\u001b[2J\\u202e# gnp.\\u200b" in lines
    assert "    3  \\u2028fake header" in lines
    for bad in ("\x1b", "\u202e", "\u200b", "\u2028", "\r"):
        assert bad not in shown
    long = follow_view({"loops.py": "y" * 1000}, _at(0), None)[1]
    assert long.endswith("... (700 more characters)")


def test_the_instructor_to_follow() -> None:
    older = _at(1, time=1.0)
    newer = _at(5, time=2.0)
    learner = _at(9, who="learner:l1002", time=3.0)
    bob = _at(7, who="instructor:bob", time=4.0)
    present = {"instructor:alice", "learner:l1002"}
    assert instructor_presence([older, newer, learner, bob], present) is newer
    assert instructor_presence([learner], present) is None
    assert instructor_presence([older, bob], {"instructor:bob"}) is bob
    assert instructor_presence([], present) is None


def test_open_and_show_lines() -> None:
    assert parse_line("/open class loops.py 3", INSTRUCTOR_SIDE) == OpenFile("class", "loops.py", 3)
    assert parse_line("/open l1001 main.py", INSTRUCTOR_SIDE) == OpenFile("l1001", "main.py", 1)
    assert parse_line("/open class my file.py 12", INSTRUCTOR_SIDE) == OpenFile(
        "class", "my file.py", 12
    )
    assert parse_line("/show", INSTRUCTOR_SIDE) == ShowOpen()
    for bad in ("/open", "/open class", "/open class a.py 0"):
        assert isinstance(parse_line(bad, INSTRUCTOR_SIDE), BadLine), bad
    refused = parse_line("/open class a.py", LEARNER_SIDE)
    assert isinstance(refused, BadLine)
    assert "follow" in refused.message


def test_follow_and_present_command_lines() -> None:
    args = learner_cli.build_parser(LEARNER_SIDE).parse_args(["follow", "py101"])
    assert (args.context, args.duration) == (5, None)
    parser = learner_cli.build_parser(INSTRUCTOR_SIDE)
    args = parser.parse_args(["editor", "py101", "present", "class", "a.py", "--line", "4"])
    assert (args.action, args.ws, args.file, args.line, args.duration) == (
        "present",
        "class",
        "a.py",
        4,
        None,
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["editor", "py101", "present", "class", "a.py", "--line", "0"])


# -- against a relay ----------------------------------------------------------------------


def _instructor_api(f: Facility, r: Relay) -> RelayClient:
    assert r.addresses is not None
    return RelayClient(f.bundle("alice"), "py101", relay_url=r.addresses.outside_url)


def _learner_api(f: Facility, r: Relay, learner: str, machine: str) -> RelayClient:
    assert r.addresses is not None
    return RelayClient(
        f.bundle(machine),
        "py101",
        relay_url=r.addresses.inside_url,
        learner=learner,
        pin=PINS[learner],
    )


def _follow_argv(f: Facility, r: Relay, *extra: str) -> list[str]:
    assert r.addresses is not None
    return [
        *("--bundle", str(f.bundle("pc-01")), "--relay", r.addresses.inside_url),
        *("--learner", "l1001", "--pin", PINS["l1001"]),
        *("follow", "py101", *extra),
    ]


class _Out:
    """What a command running in a worker thread has printed so far (pytest's capture)."""

    def __init__(self, capsys: Capture) -> None:
        self.capsys = capsys
        self.out = ""
        self.err = ""

    def __call__(self) -> str:
        got = self.capsys.readouterr()
        self.out += got.out
        self.err += got.err
        return self.out


@pytest.mark.integration
async def test_follow_shows_where_the_instructor_is(
    facility: Facility, relay: Relay, capsys: Capture
) -> None:
    out = _Out(capsys)
    async with _instructor_api(facility, relay) as alice:
        await alice.write_file("class", "loops.py", LOOPS)
        argv = _follow_argv(facility, relay, "--duration", "10", "--context", "1")
        follow = asyncio.create_task(asyncio.to_thread(learner_cli.main, argv))
        try:
            await eventually(lambda: "waiting for the instructor" in out())
            await alice.presence("class", "loops.py", line_start(LOOPS, 3), line_start(LOOPS, 3))
            await eventually(lambda: "instructor is at class/loops.py line 3" in out())
            assert ">   3  line 3" in out()
            assert "    2  line 2" in out()
            assert "    4  line 4" in out()
            # The instructor types: the text shown follows.
            acks = await alice.insert("class", "loops.py", line_start(LOOPS, 3), "# now ")
            assert acks[-1].error is None, acks
            await eventually(lambda: ">   3  # now line 3" in out())
            # Lecture mode: the class is pinned.
            await alice.lecture(True)
            await eventually(lambda: PINNED in out())
            # The instructor moves to another file.
            await alice.write_file("class", "two.py", "a\nb\n")
            await alice.presence("class", "two.py", 2, 2)
            await eventually(lambda: "instructor is at class/two.py line 2" in out())
        finally:
            code = await asyncio.wait_for(follow, 30)
    out()
    assert code == 0, (out.out, out.err)
    assert "Traceback" not in out.err


@pytest.mark.integration
async def test_present_points_a_follower_at_a_file(
    facility: Facility, relay: Relay, capsys: Capture
) -> None:
    out = _Out(capsys)
    async with _instructor_api(facility, relay) as setup:
        await setup.write_file("class", "loops.py", LOOPS)
    present = console_argv(
        facility,
        relay,
        "editor",
        "py101",
        "present",
        "class",
        "loops.py",
        "--line",
        "7",
        "--duration",
        "8",
    )
    presenting = asyncio.create_task(asyncio.to_thread(instructor_cli.main, present))
    try:
        await eventually(lambda: "showing the class class/loops.py line 7 for 8 s" in out())
        # A learner who joins afterwards still learns where the instructor is.
        async with _learner_api(facility, relay, "l1002", "pc-02") as bea:
            await eventually(lambda: ("class", "instructor:alice") in bea.editor_presence)
            seen = bea.editor_presence[("class", "instructor:alice")]
            assert (seen.file, seen.head) == ("loops.py", line_start(LOOPS, 7))
        argv = _follow_argv(facility, relay, "--duration", "3")
        code = await asyncio.to_thread(learner_cli.main, argv)
        assert code == 0, (out(), out.err)
        assert "instructor is at class/loops.py line 7 (instructor:alice)" in out()
        assert ">   7  line 7" in out.out
    finally:
        assert await asyncio.wait_for(presenting, 30) == 0, out.err
    # A file that is not there: refused before anything is sent.
    missing = console_argv(facility, relay, "editor", "py101", "present", "class", "nope.py")
    assert await asyncio.to_thread(instructor_cli.main, missing) == 2
    out()
    assert "class has no file 'nope.py' (its files: loops.py)" in out.err


@pytest.mark.integration
async def test_interactive_open_and_show(facility: Facility, relay: Relay) -> None:
    assert relay.addresses is not None
    async with _learner_api(facility, relay, "l1001", "pc-01") as ada:
        async with _instructor_api(facility, relay) as setup:
            await setup.write_file("class", "loops.py", LOOPS)
        await ada.editor_sync("class")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "instructor_console.cli",
            *console_argv(facility, relay, "interactive", "py101"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        lines = b"/show\n/open class nope.py\n/open class loops.py 4\n/show\n"
        raw_out, raw_err = await asyncio.wait_for(proc.communicate(lines), 30)
        out, err = raw_out.decode(), raw_err.decode()
        assert proc.returncode == 0, (out, err)
        await eventually(lambda: ("class", "instructor:alice") in ada.editor_presence)
    seen = ada.editor_presence[("class", "instructor:alice")]
    assert (seen.file, seen.anchor, seen.head) == ("loops.py", 21, 21)
    assert "no file open for the class" in out
    assert "-> not opened: class has no file 'nope.py'" in out
    assert "-> the class follows you at class/loops.py line 4" in out
    assert ">   4  line 4" in out
    assert "Traceback" not in err
