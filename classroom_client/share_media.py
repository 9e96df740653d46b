"""The video sources of the share command: a test pattern, a video file, a screen or a
window (aiortc's MediaPlayer over ffmpeg's x11grab, avfoundation or gdigrab).

Imported only by the share command (aiortc is large); the choices are made, and checked,
in :mod:`classroom_client.share_cli`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import av
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from classroom_client.share_cli import NO_DISPLAY_HINT, SourceKind, SourceSpec
from relay.errors import ClientError
from relay.screen_media import TestPattern


class FittedTrack(MediaStreamTrack):
    """Frames of ``inner`` scaled to ``size`` and no faster than ``fps``; ``finished`` is
    set when ``inner`` ends (a file played to its end)."""

    kind = "video"

    def __init__(self, inner: MediaStreamTrack, size: tuple[int, int] | None, fps: float) -> None:
        super().__init__()
        self.inner = inner
        self.size = size
        self.interval = 1.0 / fps
        self.finished = asyncio.Event()
        self._last: float | None = None

    async def recv(self) -> av.VideoFrame:
        while True:
            try:
                frame = await self.inner.recv()
            except MediaStreamError:
                self.finished.set()
                raise
            assert isinstance(frame, av.VideoFrame)
            when = float(frame.time) if frame.time is not None else time.monotonic()
            if self._last is not None and 0 <= when - self._last < self.interval * 0.95:
                continue  # faster than --fps: drop it
            self._last = when
            if self.size is not None and (frame.width, frame.height) != self.size:
                pts, base = frame.pts, frame.time_base
                frame = frame.reformat(width=self.size[0], height=self.size[1])
                frame.pts, frame.time_base = pts, base
            return frame

    def stop(self) -> None:
        super().stop()
        self.inner.stop()


class Source:
    """An open source; ``track`` gives its frames, fitted to the size and frame rate.

    Raises :class:`ClientError` when the screen cannot be captured or the file cannot be
    read as a video.
    """

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self._player: Any = None
        inner: MediaStreamTrack
        if spec.kind is SourceKind.TESTPATTERN:
            assert spec.size is not None
            inner = TestPattern(spec.size[0], spec.size[1], fps=spec.fps)
        else:
            inner = self._open_player(spec)
        self.track = FittedTrack(inner, spec.size, spec.fps)

    @property
    def finished(self) -> asyncio.Event:
        return self.track.finished

    def _open_player(self, spec: SourceSpec) -> MediaStreamTrack:
        if spec.capture is not None:
            file, fmt, options = spec.capture.file, spec.capture.format, dict(spec.capture.options)
        else:
            file, fmt, options = str(spec.path), None, {}
        try:
            self._player = MediaPlayer(file, format=fmt, options=options, loop=spec.loop)
        except Exception as exc:  # PyAV raises several error types
            if spec.capture is not None:
                raise ClientError(
                    f"could not capture the {spec.kind.value} ({spec.capture.format} "
                    f"{file}: {exc}); {NO_DISPLAY_HINT}"
                ) from exc
            raise ClientError(f"could not open {file} as a video: {exc}") from exc
        video = self._player.video
        if video is None:
            self._player = None
            raise ClientError(f"{file} has no video to share")
        track: MediaStreamTrack = video
        return track

    def stop(self) -> None:
        self.track.stop()


__all__ = ["FittedTrack", "Source"]
