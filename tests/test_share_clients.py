"""Screen share from the clients' side: RelayClient's share API and the share / watch
commands of instructor-console and classroom-client, against a real relay over TLS on
loopback, with real WebRTC media (aiortc) to and from the relay."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiortc.mediastreams import MediaStreamTrack

from relay.client import RelayClient
from relay.errors import ClientError, ErrorCode
from relay.messages import AckStatus, ShareAsked, ShareStarted, ShareStopped
from relay.screen_media import TestPattern
from relay.server import Relay
from tests.conftest import PINS, Facility

pytestmark = pytest.mark.integration

SESSION = "py101"
ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _client(f: Facility, r: Relay, who: str, machine: str | None = None) -> RelayClient:
    assert r.addresses is not None
    role, _, name = who.partition(":")
    if role == "learner":
        assert machine is not None
        return RelayClient(
            f.bundle(machine),
            SESSION,
            relay_url=r.addresses.inside_url,
            learner=name,
            pin=PINS[name],
            reconnect=False,
        )
    url = r.addresses.inside_url if role == "staff" else r.addresses.outside_url
    return RelayClient(f.bundle(name), SESSION, relay_url=url, reconnect=False)


@contextlib.asynccontextmanager
async def joined(
    f: Facility, r: Relay, who: str, machine: str | None = None
) -> AsyncIterator[RelayClient]:
    async with _client(f, r, who, machine) as client:
        yield client


async def event_of(client: RelayClient, kind: type, wait: float = 10.0) -> object:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        event = await client.next_event(max(0.01, deadline - loop.time()))
        if isinstance(event, kind):
            return event


async def drain(track: MediaStreamTrack) -> None:
    """Receive until the track ends (frames already queued may still come out first)."""
    for _ in range(100):
        await asyncio.wait_for(track.recv(), 10)


async def test_two_learners_watch_the_instructors_test_pattern(
    facility: Facility, relay: Relay
) -> None:
    async with (
        joined(facility, relay, "instructor:alice") as alice,
        joined(facility, relay, "learner:l1001", "pc-01") as ada,
        joined(facility, relay, "learner:l1002", "pc-02") as bo,
    ):
        handle = await alice.share_start(TestPattern(320, 240, fps=10))
        assert handle.share
        for learner in (ada, bo):
            started = await event_of(learner, ShareStarted)
            assert isinstance(started, ShareStarted)
            assert started.share == handle.share
            assert started.by == "instructor:alice"
            assert handle.share in learner.shares
        for learner in (ada, bo):
            _view, track = await learner.share_watch(handle.share)
            frame = await asyncio.wait_for(track.recv(), 10)
            assert (frame.width, frame.height) == (320, 240)
        ack = await alice.share_stop(handle.share, "end of demo")
        assert ack.status is AckStatus.DELIVERED
        stopped = await event_of(ada, ShareStopped)
        assert isinstance(stopped, ShareStopped)
        assert stopped.reason == "end of demo"
        assert handle.share not in ada.shares
        assert handle.is_ended


async def test_a_late_joiner_learns_of_the_running_share_and_sees_it(
    facility: Facility, relay: Relay
) -> None:
    async with joined(facility, relay, "instructor:alice") as alice:
        handle = await alice.share_start(TestPattern(320, 240, fps=10))
        await asyncio.sleep(1.0)  # the share runs for a while before the learner comes
        async with joined(facility, relay, "learner:l1003", "pc-03") as late:
            started = await event_of(late, ShareStarted, wait=10.0)
            assert isinstance(started, ShareStarted)
            assert started.share == handle.share
            assert set(late.shares) == {handle.share}
            _view, track = await late.share_watch(handle.share)
            # The relay makes a keyframe for a new viewer: the first frame is a picture
            # (how fast is measured by 'bench screen', not asserted here).
            frame = await asyncio.wait_for(track.recv(), 10.0)
            assert (frame.width, frame.height) == (320, 240)


async def test_a_learner_shares_only_when_asked(facility: Facility, relay: Relay) -> None:
    async with (
        joined(facility, relay, "instructor:alice") as alice,
        joined(facility, relay, "learner:l1001", "pc-01") as ada,
        joined(facility, relay, "learner:l1002", "pc-02") as bo,
    ):
        pattern = TestPattern(160, 120, fps=10)
        with pytest.raises(ClientError) as refused:
            await ada.share_start(pattern)
        assert refused.value.code is ErrorCode.ROUTE_REFUSED
        assert "only when the instructor asks" in str(refused.value)
        assert not ada.share_handles
        assert (await alice.share_ask("l1001")).status is AckStatus.DELIVERED
        asked = await event_of(ada, ShareAsked)
        assert isinstance(asked, ShareAsked)
        assert ada.asked_until == asked.until
        assert asked.until > asked.time
        handle = await ada.share_start(TestPattern(160, 120, fps=10))
        started = await event_of(alice, ShareStarted)
        assert isinstance(started, ShareStarted)
        assert started.by == "learner:l1001"
        assert handle.share not in bo.shares  # only the instructor and staff may watch
        _view, track = await alice.share_watch(handle.share)
        frame = await asyncio.wait_for(track.recv(), 10)
        assert (frame.width, frame.height) == (160, 120)
        with pytest.raises(ClientError) as other:
            await bo.share_watch(handle.share)
        assert other.value.code is ErrorCode.UNKNOWN_SHARE
        # The instructor may ask only learners in the class; learners may not ask.
        assert (await alice.share_ask("l1003")).status is AckStatus.REFUSED
        assert (await bo.share_ask("l1001")).status is AckStatus.REFUSED


async def test_share_stop_ends_the_viewers_tracks(facility: Facility, relay: Relay) -> None:
    from aiortc.mediastreams import MediaStreamError

    async with (
        joined(facility, relay, "instructor:alice") as alice,
        joined(facility, relay, "learner:l1001", "pc-01") as ada,
        joined(facility, relay, "staff:sam") as sam,
    ):
        handle = await alice.share_start(TestPattern(320, 240, fps=10))
        await event_of(ada, ShareStarted)
        view, track = await ada.share_watch(handle.share)
        await asyncio.wait_for(track.recv(), 10)
        # Staff stop any share; everyone watching learns why and their video ends.
        assert (await sam.share_stop(handle.share, "not now")).status is AckStatus.DELIVERED
        end = await asyncio.wait_for(view.ended(), 10)
        assert (end.by, end.reason) == ("staff:sam", "not now")
        with pytest.raises(MediaStreamError):
            await drain(track)
        assert (await asyncio.wait_for(handle.ended(), 10)).by == "staff:sam"
        assert not ada.shares
        assert not alice.share_handles
        assert not ada.share_handles


# ---------------------------------------------------------------------------------------
# the command lines (subprocesses; media restricted to loopback with --media-address)
# ---------------------------------------------------------------------------------------


def _cli_args(f: Facility, r: Relay, who: str, machine: str | None = None) -> list[str]:
    assert r.addresses is not None
    role, _, name = who.partition(":")
    if role == "learner":
        assert machine is not None
        return [
            *("--bundle", str(f.bundle(machine)), "--relay", r.addresses.inside_url),
            *("--learner", name),
        ]
    return ["--bundle", str(f.bundle(name)), "--relay", r.addresses.outside_url]


async def _spawn(
    module: str, argv: list[str], pin: str | None = None
) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"}
    env.pop("CLASSROOM_CLIENT_PIN", None)
    if pin is not None:
        env["CLASSROOM_CLIENT_PIN"] = pin
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )


async def _finish(
    proc: asyncio.subprocess.Process, wait: float = 40
) -> tuple[int | None, str, str]:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), wait)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(f"timed out: {out.decode()} {err.decode()}") from None
    return proc.returncode, out.decode(), err.decode()


def _watch(f: Facility, r: Relay, learner: str, machine: str, *argv: str) -> list[str]:
    return [*_cli_args(f, r, f"learner:{learner}", machine), "watch", SESSION, *argv]


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (after checking the signature)."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_cli_watch_saves_frames_of_the_instructors_share(
    facility: Facility, relay: Relay, tmp_path: Path
) -> None:
    out = tmp_path / "frames"
    async with joined(facility, relay, "instructor:alice") as alice:
        handle = await alice.share_start(TestPattern(320, 240, fps=10))
        argv = _watch(facility, relay, "l1001", "pc-01", "--frames", "3", "--out", str(out))
        argv += ["--wait", "15", "--media-address", "127.0.0.1"]
        code, stdout, stderr = await _finish(
            await _spawn("classroom_client.cli", argv, PINS["l1001"])
        )
        assert code == 0, (stdout, stderr)
        assert f"watching share {handle.share} of instructor:alice" in stderr, (stdout, stderr)
        names = sorted(p.name for p in out.iterdir())
        assert names == ["frame-0001.png", "frame-0002.png", "frame-0003.png"]
        for name in names:
            assert png_size((out / name).read_bytes()) == (320, 240)
            assert f"saved {out / name} (320x240)" in stdout
        assert f"saved 3 frame(s) of share {handle.share}" in stdout


async def test_cli_share_and_cli_watch(facility: Facility, relay: Relay, tmp_path: Path) -> None:
    """The instructor shares with the command line; a learner's command line waits for
    the share to start, saves frames; the share stops with share_stop after --duration."""
    out = tmp_path / "seen"
    watch = await _spawn(
        "classroom_client.cli",
        [
            *_watch(facility, relay, "l1002", "pc-02", "--frames", "4", "--out", str(out)),
            *("--wait", "20", "--media-address", "127.0.0.1"),
        ],
        PINS["l1002"],
    )
    share = [
        *_cli_args(facility, relay, "instructor:alice"),
        *("share", SESSION, "--source", "testpattern", "--size", "256x144", "--fps", "8"),
        *("--duration", "6", "--media-address", "127.0.0.1"),
    ]
    await asyncio.sleep(1.0)  # the learner is usually waiting before the share starts
    sharing = await _spawn("instructor_console.cli", share)
    code, stdout, stderr = await _finish(watch)
    assert code == 0, (stdout, stderr)
    for n in range(1, 5):
        assert png_size((out / f"frame-{n:04d}.png").read_bytes()) == (256, 144)
    code, stdout, stderr = await _finish(sharing)
    assert code == 0, (stdout, stderr)
    assert "sharing testpattern 256x144, at most 8 fps as share " in stdout
    assert "stopped after" in stdout
    stopped = [r for r in facility.audit_records() if r["kind"] == "screen.stopped"]
    assert len(stopped) == 1
    assert "stopped by its sharer (done)" in stopped[0]["detail"]


async def test_cli_learner_share_refused_until_asked(facility: Facility, relay: Relay) -> None:
    learner = [*_cli_args(facility, relay, "learner:l1001", "pc-01"), "share", SESSION]
    learner += ["--source", "testpattern", "--size", "160x120", "--media-address", "127.0.0.1"]
    code, stdout, stderr = await _finish(await _spawn("classroom_client.cli", learner, "1234"))
    assert code == 3, (stdout, stderr)
    assert "refused: " in stderr
    assert "only when the instructor asks" in stderr  # the policy's reason, verbatim
    ask = [*_cli_args(facility, relay, "instructor:alice"), "share-ask", SESSION, "l1001"]
    async with joined(facility, relay, "learner:l1001", "pc-01"):
        code, stdout, stderr = await _finish(await _spawn("instructor_console.cli", ask))
        assert code == 0, (stdout, stderr)
        assert "asked learner:l1001 to show their screen" in stdout
    async with joined(facility, relay, "instructor:alice") as alice:
        sharing = await _spawn("classroom_client.cli", [*learner, "--duration", "3"], "1234")
        started = await event_of(alice, ShareStarted, wait=20)
        assert isinstance(started, ShareStarted)
        assert started.by == "learner:l1001"
        _view, track = await alice.share_watch(started.share)
        frame = await asyncio.wait_for(track.recv(), 10)
        assert (frame.width, frame.height) == (160, 120)
        code, stdout, stderr = await _finish(sharing)
        assert code == 0, (stdout, stderr)
        assert "the instructor and staff can watch it" in stdout
    # Asking a learner who is not in the class is refused.
    code, stdout, stderr = await _finish(await _spawn("instructor_console.cli", ask))
    assert code == 3, (stdout, stderr)


async def test_cli_watch_without_a_share_and_without_a_relay(
    facility: Facility, relay: Relay, tmp_path: Path
) -> None:
    argv = _watch(facility, relay, "l1001", "pc-01", "--frames", "1", "--out", str(tmp_path))
    code, stdout, stderr = await _finish(
        await _spawn("classroom_client.cli", [*argv, "--wait", "1"], "1234")
    )
    assert code == 2, (stdout, stderr)
    assert "no screen share started within 1 s" in stderr
    code, stdout, stderr = await _finish(
        await _spawn("classroom_client.cli", [*argv, "--share", "py101.s9-none"], "1234")
    )
    assert code == 3, (stdout, stderr)
    assert "refused: " in stderr
    assert not os.listdir(tmp_path)
    dead = ["--relay", "wss://127.0.0.1:9", *argv[4:]]
    argv = ["--bundle", str(facility.bundle("pc-01")), *dead]
    code, stdout, stderr = await _finish(await _spawn("classroom_client.cli", argv, "1234"))
    assert code == 2, (stdout, stderr)
    assert "could not reach the relay" in stderr


def test_screen_capture_without_a_display_says_what_to_use(tmp_path: Path) -> None:
    from classroom_client.cli import UsageError
    from classroom_client.share_cli import SourceKind, capture_for, source_spec

    with pytest.raises(UsageError) as no_display:
        capture_for(SourceKind.SCREEN, "linux", {}, 10)
    assert "no display to capture" in str(no_display.value)
    assert "--source testpattern" in str(no_display.value)
    assert "--source FILE" in str(no_display.value)
    screen = capture_for(SourceKind.SCREEN, "linux", {"DISPLAY": ":0"}, 10)
    assert (screen.file, screen.format) == (":0", "x11grab")
    window = capture_for(SourceKind.WINDOW, "linux", {"DISPLAY": ":1"}, 5, "0x3a00007")
    assert window.options["window_id"] == "0x3a00007"
    assert capture_for(SourceKind.SCREEN, "win32", {}, 10).format == "gdigrab"
    assert capture_for(SourceKind.SCREEN, "darwin", {}, 10).format == "avfoundation"
    with pytest.raises(UsageError):
        capture_for(SourceKind.WINDOW, "darwin", {}, 10, "Terminal")
    with pytest.raises(UsageError, match="no such video file"):
        source_spec(str(tmp_path / "none.mp4"), size=None, fps=None, loop=False, window=None)


def test_cli_share_screen_without_a_display_exits_2(
    facility: Facility, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from instructor_console import cli as instructor_cli

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    argv = ["--bundle", str(facility.bundle("alice")), "share", SESSION, "--source", "screen"]
    if not sys.platform.startswith("linux"):
        pytest.skip("the display check shown here is X11's")
    assert instructor_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "no display to capture" in err
    assert "--source testpattern" in err


async def test_cli_share_a_video_file(facility: Facility, relay: Relay, tmp_path: Path) -> None:
    """A video file (written here from the test pattern) is shared, scaled by --size."""
    import av

    video = tmp_path / "lesson.webm"
    pattern = TestPattern(320, 240, fps=10)
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libvpx", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for n in range(20):
            frame = pattern.make_frame(n)
            frame.pts = n
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    argv = [*_cli_args(facility, relay, "instructor:alice"), "share", SESSION]
    argv += ["--source", str(video), "--size", "160x120", "--loop", "--duration", "4"]
    argv += ["--media-address", "127.0.0.1"]
    async with joined(facility, relay, "learner:l1001", "pc-01") as ada:
        sharing = await _spawn("instructor_console.cli", argv)
        started = await event_of(ada, ShareStarted, wait=20)
        assert isinstance(started, ShareStarted)
        _view, track = await ada.share_watch(started.share)
        frame = await asyncio.wait_for(track.recv(), 10)
        assert (frame.width, frame.height) == (160, 120)
        code, stdout, stderr = await _finish(sharing)
        assert code == 0, (stdout, stderr)


async def test_cli_share_stops_on_ctrl_c(facility: Facility, relay: Relay) -> None:
    import signal

    argv = [*_cli_args(facility, relay, "instructor:alice"), "share", SESSION]
    argv += ["--source", "testpattern", "--size", "160x120", "--media-address", "127.0.0.1"]
    async with joined(facility, relay, "learner:l1001", "pc-01") as ada:
        sharing = await _spawn("instructor_console.cli", argv)
        started = await event_of(ada, ShareStarted, wait=20)
        assert isinstance(started, ShareStarted)
        assert sharing.stdout is not None
        line = await asyncio.wait_for(sharing.stdout.readline(), 20)
        assert line.startswith(b"sharing testpattern"), line
        sharing.send_signal(signal.SIGINT)
        stopped = await event_of(ada, ShareStopped, wait=10)
        assert isinstance(stopped, ShareStopped)
        code, stdout, stderr = await _finish(sharing)
        assert stopped.by == "instructor:alice", (stopped, stdout, stderr)
        assert stopped.reason == "stopped by its sharer (interrupted)"
        assert code == 130, (stdout, stderr)


def test_listen_shows_share_events() -> None:
    from classroom_client.cli import EventType, event_record, event_type, format_event
    from relay.messages import ShareAsked, ShareStopped

    started = ShareStarted(share="py101.s1-ab12", by="instructor:alice", time=1.0)
    stopped = ShareStopped(share="py101.s1-ab12", by="staff:sam", reason="not now\x1b[2J", time=2.0)
    asked = ShareAsked(by="instructor:alice", time=3.0, until=603.0)
    assert {event_type(e) for e in (started, stopped, asked)} == {EventType.SHARE}
    assert "instructor:alice started screen share py101.s1-ab12" in format_event(started, 0)
    line = format_event(stopped, 0)
    assert "stopped by staff:sam: not now\\u001b[2J" in line
    assert "\x1b" not in line
    assert "asks you to share your screen" in format_event(asked, 0)
    record = event_record(stopped, history=False, now=0)
    assert record["type"] == "share"
    assert record["event"] == "stopped"
    assert record["share"] == "py101.s1-ab12"
    assert record["text"] == "not now\x1b[2J"
    assert event_record(asked, history=False, now=0)["event"] == "asked"
