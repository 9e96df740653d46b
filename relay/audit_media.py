"""Screen shares as the audit log recorded them: records -> shares -> frames -> files.

The relay records every encoded frame of a share (``screen.media``: ``content`` is base64
of msgpack ``[time, keyframe, VP8 frame]``), a thumbnail every few seconds
(``screen.thumbnail``: base64 PNG), and when a share started, was watched and stopped
(``relay.screen_session``). This module turns those records, given as the flat maps of
:meth:`relay.audit_read.StoredRecord.to_dict` (contents decrypted, or absent), into one
:class:`ShareRecording` per share, and writes a share as files: a playable WebM from its
first keyframe (:func:`relay.screen_media.export_media`) and its thumbnails as PNGs.

Everything but :func:`write_share` is pure. Contents read from the log are unpacked with
small explicit limits and checked, like anything read from outside.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgpack

SCREEN_KINDS = frozenset(
    {
        "screen.started",
        "screen.watched",
        "screen.stopped",
        "screen.asked",
        "screen.media",
        "screen.thumbnail",
    }
)
"""The records of screen shares (docs/audit.md, CR330-CR335)."""
MEDIA_KINDS = frozenset({"screen.media", "screen.thumbnail"})
"""The records holding a share's pictures (summarised, never listed one by one)."""
MAX_FRAME_BYTES = 4 << 20
"""Largest recorded VP8 frame accepted when reading it back."""
THUMBNAIL_NAME = "thumb-{:04d}.png"

_SHARE_ID = r"(?P<id>[a-z0-9][a-z0-9._-]{0,127})"
_SHARE = re.compile(rf"share {_SHARE_ID}(?=$|[:;])")
_MEDIA = re.compile(
    rf"share {_SHARE_ID}: (?P<codec>\w+) (?P<w>\d+)x(?P<h>\d+), (?P<size>\d+) bytes"
    r"(?P<key>, keyframe)?"
)
_THUMB = re.compile(rf"share {_SHARE_ID}: thumbnail (?P<w>\d+)x(?P<h>\d+) PNG")
_STARTED = re.compile(rf"share {_SHARE_ID}; watched by (?P<audience>[^;]+)(?:; (?P<codec>.+))?")
_STOPPED = re.compile(rf"share {_SHARE_ID}: (?P<reason>.*)", re.S)
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class MediaError(ValueError):
    """A share's recording cannot be read back or written (the message says which record)."""


def share_id_of(detail: str | None) -> str | None:
    """The share id a screen record's ``detail`` names (``share py101.s1-ab12: ...``)."""
    if not detail:
        return None
    match = _SHARE.match(detail)
    return match["id"] if match else None


def safe_share_id(share: str) -> bool:
    """A share id that is safe as a file name (it comes from the log: checked anyway)."""
    return bool(re.fullmatch(_SHARE_ID, share)) and ".." not in share


@dataclasses.dataclass(frozen=True, slots=True)
class RecordedFrame:
    seq: int
    time: float
    """When the relay encoded it (the record's time)."""
    keyframe: bool
    width: int
    height: int
    size: int
    data: bytes | None
    """The VP8 frame; None when the contents were not decrypted."""


@dataclasses.dataclass(frozen=True, slots=True)
class RecordedThumbnail:
    seq: int
    time: float
    width: int
    height: int
    png: bytes | None


@dataclasses.dataclass(slots=True)
class ShareRecording:
    """One share as recorded: who started it, who watched, how it ended, its pictures."""

    id: str
    session: str | None = None
    publisher: str | None = None
    started: float | None = None
    audience: str | None = None
    codec: str | None = None
    watchers: list[tuple[float, str]] = dataclasses.field(default_factory=list)
    stopped: float | None = None
    stopped_by: str | None = None
    reason: str | None = None
    frames: list[RecordedFrame] = dataclasses.field(default_factory=list)
    thumbnails: list[RecordedThumbnail] = dataclasses.field(default_factory=list)
    seqs: list[int] = dataclasses.field(default_factory=list)
    """Every record of the share, by number in the log."""

    @property
    def first_seq(self) -> int | None:
        return min(self.seqs) if self.seqs else None

    @property
    def last_seq(self) -> int | None:
        return max(self.seqs) if self.seqs else None

    @property
    def keyframes(self) -> int:
        return sum(1 for f in self.frames if f.keyframe)

    @property
    def media_bytes(self) -> int:
        return sum(f.size for f in self.frames)

    @property
    def duration_s(self) -> float:
        """From the first recorded frame to the last."""
        if not self.frames:
            return 0.0
        return max(0.0, self.frames[-1].time - self.frames[0].time)

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """The frame sizes of the share, in order of first appearance."""
        return list(dict.fromkeys((f.width, f.height) for f in self.frames))

    def size_text(self) -> str:
        return ", ".join(f"{w}x{h}" for w, h in self.sizes) or "no size"

    def summary(self) -> str:
        """``share py101.s1-ab12: 312 frames 1280x720 over 31.2 s, 7 thumbnails``."""
        if not self.frames:
            what = "no frames recorded"
        else:
            what = (
                f"{_count(len(self.frames), 'frame')} {self.size_text()} over "
                f"{self.duration_s:.1f} s ({_count(self.keyframes, 'keyframe')}, "
                f"{_kb(self.media_bytes)})"
            )
        return f"share {self.id}: {what}, {_count(len(self.thumbnails), 'thumbnail')}"

    def to_json(self) -> dict[str, Any]:
        """The share for ``audit show --media --json`` and the media manifest."""
        return {
            "share": self.id,
            "session": self.session,
            "publisher": self.publisher,
            "audience": self.audience,
            "started": self.started,
            "stopped": self.stopped,
            "stopped_by": self.stopped_by,
            "reason": self.reason,
            "watchers": [who for _, who in self.watchers],
            "frames": len(self.frames),
            "keyframes": self.keyframes,
            "sizes": [f"{w}x{h}" for w, h in self.sizes],
            "media_bytes": self.media_bytes,
            "first_frame": self.frames[0].time if self.frames else None,
            "last_frame": self.frames[-1].time if self.frames else None,
            "duration_s": round(self.duration_s, 3),
            "thumbnails": len(self.thumbnails),
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
        }


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _kb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1_000_000 else f"{n / 1e3:.0f} KB"


# ---------------------------------------------------------------------------------------
# records -> shares (pure)
# ---------------------------------------------------------------------------------------


class ShareTally:
    """The shares of records fed in log order (the maps of ``StoredRecord.to_dict``)."""

    def __init__(self, *, contents: bool = True) -> None:
        self.contents = contents
        """Read the frames and thumbnails themselves (False: only what the details say)."""
        self.shares: dict[str, ShareRecording] = {}

    def feed(self, record: Mapping[str, Any]) -> ShareRecording | None:
        """Account for one record; returns the share it belongs to (None: not a share's)."""
        kind = record.get("kind")
        if kind not in SCREEN_KINDS or kind == "screen.asked":
            return None
        detail = _text(record.get("detail"))
        share_id = share_id_of(detail)
        if share_id is None:
            return None
        share = self.shares.get(share_id)
        if share is None:
            share = self.shares[share_id] = ShareRecording(share_id)
        seq = int(record.get("seq") or 0)
        time = float(record.get("time") or 0.0)
        share.seqs.append(seq)
        if share.session is None:
            share.session = _text(record.get("session"))
        actor = _text(record.get("actor"))
        if kind == "screen.media":
            share.frames.append(self._frame(record, seq, time, detail))
            if share.publisher is None:
                share.publisher = actor
        elif kind == "screen.thumbnail":
            share.thumbnails.append(self._thumbnail(record, seq, time, detail))
        elif kind == "screen.started":
            share.started, share.publisher = time, actor
            match = _STARTED.match(detail or "")
            if match:
                share.audience, share.codec = match["audience"], match["codec"]
        elif kind == "screen.watched":
            share.watchers.append((time, actor or "?"))
        elif kind == "screen.stopped":
            share.stopped, share.stopped_by = time, actor
            match = _STOPPED.match(detail or "")
            share.reason = match["reason"] if match else None
        return share

    def recordings(self) -> list[ShareRecording]:
        """The shares, in the order their first record came."""
        return list(self.shares.values())

    def _frame(
        self, record: Mapping[str, Any], seq: int, time: float, detail: str | None
    ) -> RecordedFrame:
        match = _MEDIA.match(detail or "")
        if match is None:
            raise MediaError(f"record {seq} (screen.media) has an unexpected detail {detail!r}")
        width, height, size = int(match["w"]), int(match["h"]), int(match["size"])
        keyframe = match["key"] is not None
        data = None
        content = record.get("content")
        if self.contents and isinstance(content, str):
            when, keyframe, data = unpack_frame(content, seq)
            time = when
            size = len(data)
        return RecordedFrame(seq, time, keyframe, width, height, size, data)

    def _thumbnail(
        self, record: Mapping[str, Any], seq: int, time: float, detail: str | None
    ) -> RecordedThumbnail:
        match = _THUMB.match(detail or "")
        if match is None:
            raise MediaError(f"record {seq} (screen.thumbnail) has an unexpected detail {detail!r}")
        png = None
        content = record.get("content")
        if self.contents and isinstance(content, str):
            png = _b64(content, seq)
            if not png.startswith(_PNG_MAGIC):
                raise MediaError(f"record {seq} (screen.thumbnail) does not hold a PNG")
        return RecordedThumbnail(seq, time, int(match["w"]), int(match["h"]), png)


def collect_shares(
    records: Iterable[Mapping[str, Any]], *, contents: bool = True
) -> list[ShareRecording]:
    """Every share the records (in log order) tell of."""
    tally = ShareTally(contents=contents)
    for record in records:
        tally.feed(record)
    return tally.recordings()


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _b64(text: str, seq: int) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MediaError(f"record {seq}: its content is not base64") from None


def unpack_frame(content: str, seq: int = 0) -> tuple[float, bool, bytes]:
    """``[time, keyframe, frame]`` from a ``screen.media`` record's content (checked)."""
    raw = _b64(content, seq)
    try:
        value = msgpack.unpackb(
            raw,
            raw=False,
            max_array_len=3,
            max_map_len=0,
            max_str_len=0,
            max_ext_len=0,
            max_bin_len=MAX_FRAME_BYTES,
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise MediaError(
            f"record {seq} (screen.media): its content is not a recorded frame"
        ) from None
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not isinstance(value[0], int | float)
        or isinstance(value[0], bool)
        or not isinstance(value[1], bool)
        or not isinstance(value[2], bytes)
        or not value[2]
    ):
        raise MediaError(f"record {seq} (screen.media): expected [time, keyframe, frame bytes]")
    return float(value[0]), value[1], value[2]


def media_chunks(share: ShareRecording) -> list[Any]:
    """The share's frames as :class:`relay.screen_media.MediaChunk` values (one per run of
    frames of one size), for :func:`relay.screen_media.export_media`."""
    from relay.screen_media import CODEC, MediaChunk

    out: list[Any] = []
    run: list[RecordedFrame] = []

    def flush() -> None:
        if run:
            out.append(
                MediaChunk(
                    start=run[0].time,
                    end=max(run[0].time, run[-1].time),
                    keyframe=run[0].keyframe,
                    codec=CODEC,
                    width=run[0].width,
                    height=run[0].height,
                    packets=tuple((f.time, f.data or b"", f.keyframe) for f in run),
                )
            )
            run.clear()

    for frame in share.frames:
        if frame.data is None:
            raise MediaError(
                f"record {frame.seq}: the frame was not decrypted (the staff audit key is needed)"
            )
        if run and (frame.width, frame.height) != (run[0].width, run[0].height):
            flush()
        run.append(frame)
    flush()
    return out


# ---------------------------------------------------------------------------------------
# writing a share (never overwriting)
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ShareFiles:
    """What was planned for one share: the video (None: no keyframe to play from) and the
    thumbnails."""

    share: ShareRecording
    video: Path | None
    thumbnails: tuple[Path, ...]

    def paths(self) -> list[Path]:
        return ([self.video] if self.video else []) + list(self.thumbnails)


def plan_share(share: ShareRecording, out_dir: Path) -> ShareFiles:
    """The files :func:`write_share` will write for ``share`` into ``out_dir``."""
    if not safe_share_id(share.id):
        raise MediaError(f"share id {share.id!r} is not safe as a file name")
    playable = any(f.keyframe for f in share.frames)
    video = out_dir / f"{share.id}.webm" if playable else None
    folder = out_dir / share.id
    thumbs = tuple(folder / THUMBNAIL_NAME.format(i) for i in range(1, len(share.thumbnails) + 1))
    return ShareFiles(share, video, thumbs)


def write_share(files: ShareFiles) -> list[Path]:
    """Write the video and thumbnails :func:`plan_share` planned; an existing file is
    never overwritten (:class:`FileExistsError`). Files are 0600, folders 0700."""
    from relay.screen_media import export_media

    written: list[Path] = []
    share = files.share
    if files.video is not None:
        out = files.video
        partial = out.with_name(f".{out.name}.{os.getpid()}.partial.webm")
        try:
            export_media(media_chunks(share), partial)
            os.chmod(partial, 0o600)
            os.link(partial, out)  # fails if ``out`` exists: never overwritten
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        written.append(out)
    if files.thumbnails:
        folder = files.thumbnails[0].parent
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
        if folder.is_symlink() or not folder.is_dir():
            raise MediaError(f"{folder} is not a plain folder")
        for path, thumb in zip(files.thumbnails, share.thumbnails, strict=True):
            if thumb.png is None:
                raise MediaError(
                    f"record {thumb.seq}: the thumbnail was not decrypted (the staff audit key "
                    "is needed)"
                )
            _write_new(path, thumb.png)
            written.append(path)
    return written


def _write_new(path: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "MEDIA_KINDS",
    "SCREEN_KINDS",
    "MediaError",
    "RecordedFrame",
    "RecordedThumbnail",
    "ShareFiles",
    "ShareRecording",
    "ShareTally",
    "collect_shares",
    "media_chunks",
    "plan_share",
    "safe_share_id",
    "share_id_of",
    "unpack_frame",
    "write_share",
]
