"""The screen-share commands of the two command lines.

- ``instructor-console ... share SESSION --source screen|window|testpattern|FILE``: show a
  screen (or a test pattern, or a video file) to the class through the relay until Ctrl-C,
  ``--duration`` or the end of the file; ``classroom-client ... share SESSION --source ...``
  does the same for a learner the instructor asked (only the instructor and staff see it);
- ``instructor-console ... share-ask SESSION LEARNER``: ask a learner to show their screen;
- ``... watch SESSION --frames N --out DIR [--share ID]``: watch a share and save N frames
  as PNG files (``frame-0001.png`` ...) so a person can check what arrives.

The media is WebRTC (aiortc) to and from the relay (:mod:`relay.share_client`); these
commands turn a command line into :class:`relay.client.RelayClient` calls. The pure
parts (which capture device a platform uses, the checks of options) take values and
return values, so they are tested without a display or a relay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import functools
import ipaddress
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from classroom_client.cli import (
    Body,
    Exit,
    Side,
    Terminal,
    UsageError,
    clean_text,
    finished_exit,
)
from relay.client import RelayClient
from relay.errors import ClientError
from relay.identity import NAME_RULE, valid_name
from relay.messages import AckStatus, SessionEnded, ShareStarted

if TYPE_CHECKING:
    from classroom_client.share_media import Source

DEFAULT_FPS = 10.0
DEFAULT_PATTERN_SIZE = (640, 360)
DEFAULT_WATCH_WAIT_S = 30.0
"""``watch``: how long to wait for a share to start, and for each frame."""
MAX_SIZE = (3840, 2160)

# ---------------------------------------------------------------------------------------
# sources (pure parts)
# ---------------------------------------------------------------------------------------


class SourceKind(enum.Enum):
    SCREEN = "screen"
    WINDOW = "window"
    TESTPATTERN = "testpattern"
    FILE = "file"


@dataclass(frozen=True, slots=True)
class Capture:
    """How ffmpeg (through aiortc's MediaPlayer) opens a screen or a window."""

    file: str
    format: str
    options: Mapping[str, str] = field(default_factory=dict)


NO_DISPLAY_HINT = (
    "use --source testpattern (a synthetic picture) or --source FILE (a video file) instead"
)


def capture_for(
    kind: SourceKind,
    platform: str,
    env: Mapping[str, str],
    fps: float,
    window: str | None = None,
) -> Capture:
    """The capture device for ``screen`` or ``window`` on ``platform`` (``sys.platform``).

    Raises :class:`UsageError` saying what to use instead when there is nothing to capture
    (no display, a platform without screen capture).
    """
    rate = f"{fps:g}"
    if kind is SourceKind.WINDOW and not window:
        raise UsageError(
            "--source window needs --window: on Linux (X11) the window id (e.g. from "
            "'xwininfo' or 'xdotool getactivewindow'), on Windows the window title"
        )
    if platform.startswith("linux") or "bsd" in platform:
        display = env.get("DISPLAY", "")
        if not display:
            wayland = " (Wayland sessions are not captured; log in to an X11 session)"
            raise UsageError(
                f"there is no display to capture here: $DISPLAY is not set"
                f"{wayland if env.get('WAYLAND_DISPLAY') else ''}; {NO_DISPLAY_HINT}"
            )
        options = {"framerate": rate, "draw_mouse": "1"}
        if kind is SourceKind.WINDOW:
            assert window is not None
            try:
                int(window, 0)
            except ValueError:
                raise UsageError(
                    f"--window {window!r}: on X11 give the window id, a number such as "
                    "0x3a00007 (from 'xwininfo' or 'xdotool getactivewindow')"
                ) from None
            options["window_id"] = window
        return Capture(display, "x11grab", options)
    if platform == "darwin":
        if kind is SourceKind.WINDOW:
            raise UsageError(
                "macOS captures whole screens only: use --source screen, or "
                f"{NO_DISPLAY_HINT.removeprefix('use ')}"
            )
        return Capture(
            "Capture screen 0:none", "avfoundation", {"framerate": rate, "capture_cursor": "1"}
        )
    if platform in ("win32", "cygwin"):
        target = f"title={window}" if kind is SourceKind.WINDOW else "desktop"
        return Capture(target, "gdigrab", {"framerate": rate})
    raise UsageError(f"screen capture is not supported on {platform}; {NO_DISPLAY_HINT}")


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` (even numbers, 32..3840 by 32..2160)."""
    width, sep, height = text.lower().partition("x")
    try:
        if not sep:
            raise ValueError
        w, h = int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: write WxH, e.g. 1280x720"
        ) from None
    if not (32 <= w <= MAX_SIZE[0] and 32 <= h <= MAX_SIZE[1]) or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(
            f"{text!r}: width and height must be even, from 32x32 to {MAX_SIZE[0]}x{MAX_SIZE[1]}"
        )
    return w, h


def parse_fps(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a frame rate") from None
    if not 0.1 <= value <= 60:
        raise argparse.ArgumentTypeError(f"{text!r}: the frame rate must be from 0.1 to 60")
    return value


def parse_media_address(text: str) -> str:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None
    if ip.is_unspecified or ip.is_multicast:
        raise argparse.ArgumentTypeError(f"{text!r} is not one host address")
    return str(ip)


def default_media_address(relay_url: str) -> str | None:
    """The loopback address when the relay is on a loopback address, else None (every
    host address: aioice leaves loopback out of those, so it could never reach it)."""
    host = urlsplit(relay_url).hostname or ""
    if host == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return str(ip) if ip.is_loopback else None


@dataclass(frozen=True, slots=True)
class SourceSpec:
    kind: SourceKind
    path: Path | None = None
    size: tuple[int, int] | None = None
    fps: float = DEFAULT_FPS
    loop: bool = False
    window: str | None = None
    capture: Capture | None = None

    def describe(self) -> str:
        what = str(self.path) if self.kind is SourceKind.FILE else self.kind.value
        size = f" {self.size[0]}x{self.size[1]}" if self.size else ""
        return f"{what}{size}, at most {self.fps:g} fps"


def source_spec(
    text: str,
    *,
    size: tuple[int, int] | None,
    fps: float | None,
    loop: bool,
    window: str | None,
    platform: str = sys.platform,
    env: Mapping[str, str] | None = None,
) -> SourceSpec:
    """Check ``--source`` and its options; raises :class:`UsageError`."""
    rate = fps or DEFAULT_FPS
    if window is not None and text != SourceKind.WINDOW.value:
        raise UsageError("--window goes with --source window only")
    if loop and text in (k.value for k in SourceKind if k is not SourceKind.FILE):
        raise UsageError("--loop goes with --source FILE (a video file) only")
    if text == SourceKind.TESTPATTERN.value:
        return SourceSpec(SourceKind.TESTPATTERN, size=size or DEFAULT_PATTERN_SIZE, fps=rate)
    if text in (SourceKind.SCREEN.value, SourceKind.WINDOW.value):
        kind = SourceKind(text)
        capture = capture_for(kind, platform, os.environ if env is None else env, rate, window)
        return SourceSpec(kind, size=size, fps=rate, window=window, capture=capture)
    path = Path(text).expanduser()
    if not path.is_file():
        raise UsageError(
            f"--source {text!r}: no such video file; the sources are screen, window, "
            "testpattern, or the path of a video file"
        )
    return SourceSpec(SourceKind.FILE, path=path, size=size, fps=rate, loop=loop)


# ---------------------------------------------------------------------------------------
# the commands
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShareOptions:
    source: SourceSpec
    duration: float | None
    wait: float
    media_address: str | None


@dataclass(frozen=True, slots=True)
class WatchOptions:
    frames: int
    out: Path
    share: str | None
    wait: float
    media_address: str | None


def _restrict_media(address: str | None, client: RelayClient) -> None:
    from relay.screen_media import restrict_ice_addresses

    chosen = address or default_media_address(client.url)
    if chosen is not None:
        restrict_ice_addresses([chosen])


async def _consume_events(client: RelayClient) -> None:
    """Keep taking events while a share runs (the share's state is kept by the client)."""
    async for _ in client.events():
        pass


def _open_source(spec: SourceSpec) -> Source:
    from classroom_client.share_media import Source

    return Source(spec)


async def do_share(client: RelayClient, term: Terminal, side: Side, opts: ShareOptions) -> Exit:
    _restrict_media(opts.media_address, client)
    source = _open_source(opts.source)
    events = asyncio.ensure_future(_consume_events(client))
    handle = None
    try:
        try:
            handle = await asyncio.wait_for(client.share_start(source.track), opts.wait)
        except TimeoutError:
            term.error(f"the relay did not answer the share within {opts.wait:g} s")
            return Exit.FAILED
        audience = "the class" if side.instructor else "the instructor and staff"
        term.out(
            f"sharing {opts.source.describe()} as share {handle.share}; {audience} can watch it"
        )
        started = time.monotonic()
        ended = asyncio.ensure_future(handle.ended())
        finished = asyncio.ensure_future(source.finished.wait())
        waiters: set[asyncio.Future[Any]] = {ended, finished, events}
        try:
            await asyncio.wait(waiters, timeout=opts.duration, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # Ctrl-C: end the share properly before leaving.
            await _stop_share(client, handle.share, "stopped by its sharer (interrupted)")
            raise
        finally:
            for waiter in (ended, finished):
                waiter.cancel()
        elapsed = time.monotonic() - started
        if handle.end is not None and handle.end.by != "client":
            term.note(f"the share was stopped by {handle.end.by}: {clean_text(handle.end.reason)}")
            return Exit.REFUSED
        if client.finished:
            return finished_exit(client, term)
        why = "the video ended" if source.finished.is_set() else "done"
        await _stop_share(client, handle.share, f"stopped by its sharer ({why})")
        term.out(f"share {handle.share} stopped after {elapsed:.1f} s ({why})")
        return Exit.OK
    finally:
        events.cancel()
        source.stop()
        if handle is not None:
            await handle.close()


async def _stop_share(client: RelayClient, share: str, reason: str) -> None:
    with contextlib.suppress(ClientError, TimeoutError):
        await asyncio.wait_for(client.share_stop(share, reason), 5.0)


async def do_share_ask(client: RelayClient, term: Terminal, learner: str, wait: float) -> Exit:
    try:
        ack = await asyncio.wait_for(client.share_ask(learner), wait)
    except TimeoutError:
        term.error(f"no decision from the relay within {wait:g} s")
        return Exit.FAILED
    if ack.status is AckStatus.DELIVERED:
        term.out(
            f"asked learner:{learner} to show their screen; they can share for the next "
            "10 minutes (classroom-client ... share SESSION --source ...)"
        )
        return Exit.OK
    term.note(f"{ack.status.value}: {ack.text or ack.error}")
    return Exit.REFUSED if ack.status is AckStatus.REFUSED else Exit.FAILED


def _pick(shares: Mapping[str, ShareStarted], me: str | None) -> ShareStarted | None:
    """The share to watch: an instructor's first, else the earliest; never one's own."""
    running = [s for s in shares.values() if s.by != me]
    running.sort(key=lambda s: (not s.by.startswith("instructor:"), s.time))
    return running[0] if running else None


async def _wait_for_share(client: RelayClient, wait: float) -> ShareStarted | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    me = client.me.pid if client.me else None
    while True:
        found = _pick(client.shares, me)
        if found is not None:
            return found
        left = deadline - loop.time()
        if left <= 0 or client.finished:
            return None
        try:
            event = await client.next_event(left)
        except TimeoutError:
            return None
        if isinstance(event, SessionEnded):
            return None


async def do_watch(client: RelayClient, term: Terminal, opts: WatchOptions) -> Exit:
    import av
    from aiortc.mediastreams import MediaStreamError

    from relay.screen_media import frame_to_png

    _restrict_media(opts.media_address, client)
    share_id = opts.share
    if share_id is None:
        found = await _wait_for_share(client, opts.wait)
        if found is None:
            if client.finished or client.ended is not None:
                return finished_exit(client, term)
            term.error(
                f"no screen share started within {opts.wait:g} s; wait longer (--wait S), "
                "or ask the instructor to share"
            )
            return Exit.FAILED
        share_id = found.share
        term.note(f"watching share {share_id} of {found.by}")
    try:
        handle, track = await asyncio.wait_for(client.share_watch(share_id), opts.wait)
    except TimeoutError:
        term.error(f"the relay did not answer within {opts.wait:g} s")
        return Exit.FAILED
    events = asyncio.ensure_future(_consume_events(client))
    saved = 0
    try:
        opts.out.mkdir(parents=True, exist_ok=True)
        while saved < opts.frames:
            try:
                frame = await asyncio.wait_for(track.recv(), opts.wait)
            except MediaStreamError:
                end = handle.end
                why = f" by {end.by}: {clean_text(end.reason)}" if end else ""
                term.note(f"the share ended{why}; {saved} of {opts.frames} frame(s) saved")
                return Exit.REFUSED
            except TimeoutError:
                term.error(
                    f"no frame arrived within {opts.wait:g} s; {saved} of {opts.frames} "
                    "frame(s) saved (the media may be blocked between here and the relay: "
                    "see --media-address)"
                )
                return Exit.FAILED
            if not isinstance(frame, av.VideoFrame):
                continue
            saved += 1
            path = opts.out / f"frame-{saved:04d}.png"
            path.write_bytes(frame_to_png(frame))
            term.out(f"saved {path} ({frame.width}x{frame.height})")
        term.out(f"saved {saved} frame(s) of share {share_id} into {opts.out}")
        return Exit.OK
    finally:
        events.cancel()
        await handle.close()


# ---------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------

MEDIA_ADDRESS_HELP = (
    "gather WebRTC (ICE) candidates only on this IP address (default: every host address; "
    "the loopback address when the relay's address is a loopback one)"
)

SHARE_EPILOG = """\
sources:
  screen       the whole screen (X11 on Linux, avfoundation on macOS, gdigrab on Windows)
  window       one window: --window ID (X11 window id) or --window TITLE (Windows)
  testpattern  moving colour bars with a frame counter (no display needed)
  FILE         a video file (--loop plays it again from the start at its end)

The picture goes to the relay over WebRTC (DTLS-SRTP); the relay records it and sends it
on. --size scales the picture (testpattern: draws it at that size; default 640x360);
--fps caps the frame rate (default 10; the facility's relay caps it too). The share runs
until Ctrl-C, --duration S, or the end of a file, then is stopped with share_stop.
Exit 3 when the relay refuses the share or someone else stops it.
"""

WATCH_EPILOG = """\
watch waits (up to --wait S) for a share to start, or uses one already running (the
relay tells a joiner about those), or the one given with --share ID; then saves the
next N frames received into DIR as frame-0001.png, frame-0002.png, ... (overwritten if
present) and prints a line per file. Exit 0 once N frames are saved; 2 when no share
started, or no frame came, within --wait; 3 when the relay refuses or the share ends first.
"""


def add_share_commands(
    command: Callable[..., argparse.ArgumentParser],
    side: Side,
    wait_help: str,
    commands: tuple[enum.Enum, enum.Enum, enum.Enum],
) -> None:
    """Add ``share``, ``share-ask`` (instructor) and ``watch`` to a parser; ``commands`` are
    the caller's members for them (``classroom_client.cli`` may run as ``__main__``, whose
    enum is not this module's import of it)."""
    share, share_ask, watch = commands
    who = "the class" if side.instructor else "the instructor (when asked to)"
    p = command(share, f"show your screen (or a test pattern, a video) to {who}")
    p.epilog = f"{SHARE_EPILOG}\n{p.epilog or ''}"
    p.add_argument(
        "--source",
        metavar="SOURCE",
        required=True,
        help="screen, window, testpattern, or the path of a video file",
    )
    p.add_argument("--size", metavar="WxH", type=parse_size, help="picture size, e.g. 1280x720")
    p.add_argument(
        "--fps", metavar="N", type=parse_fps, help=f"frame rate (default {DEFAULT_FPS:g})"
    )
    p.add_argument("--duration", metavar="S", type=_seconds, help="stop after S seconds")
    p.add_argument("--loop", action="store_true", help="play a video file again at its end")
    p.add_argument("--window", metavar="ID", help="the window for --source window")
    p.add_argument("--wait", metavar="S", type=_seconds, default=30.0, help=wait_help)
    p.add_argument(
        "--media-address", metavar="IP", type=parse_media_address, help=MEDIA_ADDRESS_HELP
    )

    if side.instructor:
        p = command(share_ask, "ask a learner to show their screen to you")
        p.add_argument("learner", metavar="LEARNER", help="l1001 or learner:l1001")
        p.add_argument("--wait", metavar="S", type=_seconds, default=30.0, help=wait_help)

    p = command(watch, "watch a screen share and save N frames as PNG files")
    p.epilog = f"{WATCH_EPILOG}\n{p.epilog or ''}"
    p.add_argument("--frames", metavar="N", type=_count, required=True, help="frames to save")
    p.add_argument("--out", metavar="DIR", required=True, help="the folder (made if missing)")
    p.add_argument("--share", metavar="ID", help="the share to watch (default: a running one)")
    p.add_argument(
        "--wait",
        metavar="S",
        type=_seconds,
        default=DEFAULT_WATCH_WAIT_S,
        help="wait up to S seconds for a share and for each frame "
        f"(default {DEFAULT_WATCH_WAIT_S:g})",
    )
    p.add_argument(
        "--media-address", metavar="IP", type=parse_media_address, help=MEDIA_ADDRESS_HELP
    )


def _seconds(text: str) -> float:
    from classroom_client.cli import _seconds as seconds

    return seconds(text)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError(f"{text!r} must be from 1 to 100000")
    return value


def _learner(text: str) -> str:
    name = text.removeprefix("learner:")
    if not valid_name(name):
        raise UsageError(f"{text!r} is not a valid learner id: a learner id is {NAME_RULE}")
    return name


def plan(side: Side, args: argparse.Namespace, term: Terminal) -> Body:
    """Check the share commands' options before connecting; what to do once joined."""
    name = args.command.value
    if name == "share":
        spec = source_spec(
            args.source, size=args.size, fps=args.fps, loop=args.loop, window=args.window
        )
        opts = ShareOptions(spec, args.duration, args.wait, args.media_address)
        return functools.partial(do_share, term=term, side=side, opts=opts)
    if name == "share-ask":
        return functools.partial(
            do_share_ask, term=term, learner=_learner(args.learner), wait=args.wait
        )
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out}: exists and is not a folder")
    if args.share is not None and not _share_id_ok(args.share):
        raise UsageError(f"--share {args.share!r} is not a share id (e.g. py101.s1-ab12)")
    watch = WatchOptions(args.frames, out, args.share, args.wait, args.media_address)
    return functools.partial(do_watch, term=term, opts=watch)


def _share_id_ok(text: str) -> bool:
    return 0 < len(text) <= 64 and all(c.isascii() and (c.isalnum() or c in "._:-") for c in text)


__all__ = [
    "Capture",
    "ShareOptions",
    "SourceKind",
    "SourceSpec",
    "WatchOptions",
    "add_share_commands",
    "capture_for",
    "default_media_address",
    "parse_size",
    "plan",
    "source_spec",
]
