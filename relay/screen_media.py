"""Screen-share media core: encode once, hand the same packets to every viewer.

The relay receives the sharer's video over WebRTC (aiortc decodes it once), and a
:class:`Fanout` re-encodes each kept frame **once** with VP8 and gives the same
``av.Packet`` to every viewer's track. aiortc's ``RTCRtpSender`` only packetises a
track's output when ``recv()`` returns an ``av.Packet`` (``_next_encoded_frame`` calls
``encoder.pack(packet)`` instead of ``encoder.encode(frame)``), so the per-viewer cost is
RTP packetisation and SRTP, not a VP8 encode (18-30 ms per 720p frame).

Pieces, all usable by the relay, the two clients and the bench:

- :class:`ScreenLimits`: resolution, frame rate, bitrate and keyframe interval of a share.
- :class:`Fanout`: one per share; drops frames above ``max_fps``, stops the share with a
  :class:`FanoutStop` when a frame is larger than the limits, encodes, fans out, and cuts
  the encoded stream into :class:`MediaChunk` (about one per second) and
  :class:`Thumbnail` values for the audit log.
- :func:`add_viewer_to` / :func:`watch_keyframe_requests`: a viewer's PLI/FIR reaches
  the one encoder.
- :func:`restrict_ice_addresses` / :func:`ice_configuration`: host candidates only on
  the listener addresses, no STUN/TURN.
- :class:`TestPattern`, :func:`read_counter`, :func:`frame_to_png`,
  :func:`export_media`.

Viewers must negotiate VP8 (the packets are VP8): :func:`add_viewer_to` sets the
transceiver's codec preferences to VP8 only.

The relay records each encoded frame before any viewer gets it (``record_frame``, awaited
by the fan-out); a recording that fails stops the share (fail closed) with
:attr:`StopCode.RECORDING_FAILED`. ``on_chunk`` (about a second of frames at a time) is
for callers that record after the fact, such as tests and tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fractions
import math
import multiprocessing
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import aioice.ice
import av
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.video.codeccontext import VideoCodecContext

__all__ = [
    "CODEC",
    "EncodedFrame",
    "Fanout",
    "FanoutStats",
    "FanoutStop",
    "MediaChunk",
    "ScreenLimits",
    "StopCode",
    "TestPattern",
    "Thumbnail",
    "ViewerStats",
    "ViewerTrack",
    "add_viewer_to",
    "export_media",
    "frame_to_png",
    "ice_configuration",
    "prefer_vp8",
    "read_counter",
    "restore_ice_addresses",
    "restrict_ice_addresses",
    "watch_keyframe_requests",
]

CODEC = "VP8"
#: RTP video clock; encoded packets carry pts in this time base.
VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)
#: Recording and export time base (milliseconds).
_MS = fractions.Fraction(1, 1000)
#: An encoded packet as av types it.
AvPacket: TypeAlias = "av.Packet[Any]"

# Hard bounds on what a facility may configure (security parameters, not defaults).
MAX_DIMENSION = 4096
MAX_FPS = 60.0
MIN_BITRATE = 50_000
MAX_BITRATE = 20_000_000


# --------------------------------------------------------------------------- limits


@dataclass(frozen=True, slots=True)
class ScreenLimits:
    """Limits of one screen share, enforced by the relay's :class:`Fanout`.

    ``max_width``/``max_height``: a larger frame stops the share (it is not scaled down:
    the sharer's client is expected to scale, so a larger frame is a misbehaving client).
    ``max_fps``: frames arriving faster are dropped before encoding.
    ``bitrate``: the one encoder's target, bits per second.
    ``keyframe_interval_s``: a keyframe at least this often, so a viewer whose picture
    broke recovers without asking, and every recording chunk is near a keyframe.
    """

    max_width: int = 1920
    max_height: int = 1080
    max_fps: float = 15.0
    bitrate: int = 1_500_000
    keyframe_interval_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("max_width", "max_height"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"screen limit {name} must be an integer, not {value!r}")
            if not 16 <= value <= MAX_DIMENSION:
                raise ValueError(f"screen limit {name}={value} must be in 16..{MAX_DIMENSION}")
        if not isinstance(self.max_fps, int | float) or isinstance(self.max_fps, bool):
            raise ValueError(f"screen limit max_fps must be a number, not {self.max_fps!r}")
        if not (math.isfinite(self.max_fps) and 0.5 <= self.max_fps <= MAX_FPS):
            raise ValueError(f"screen limit max_fps={self.max_fps} must be in 0.5..{MAX_FPS}")
        if not isinstance(self.bitrate, int) or isinstance(self.bitrate, bool):
            raise ValueError(f"screen limit bitrate must be an integer, not {self.bitrate!r}")
        if not MIN_BITRATE <= self.bitrate <= MAX_BITRATE:
            raise ValueError(
                f"screen limit bitrate={self.bitrate} must be in {MIN_BITRATE}..{MAX_BITRATE}"
            )
        kf = self.keyframe_interval_s
        if not isinstance(kf, int | float) or isinstance(kf, bool):
            raise ValueError(f"screen limit keyframe_interval_s must be a number, not {kf!r}")
        if not (math.isfinite(kf) and 0.1 <= kf <= 3600):
            raise ValueError(f"screen limit keyframe_interval_s={kf} must be in 0.1..3600")


# --------------------------------------------------------------------------- ICE

_original_get_host_addresses = aioice.ice.get_host_addresses


def restrict_ice_addresses(addresses: Sequence[str]) -> None:
    """Make aioice gather host candidates only on ``addresses``, in this process.

    aioice's ``Connection.gather_candidates`` calls the module-level
    ``aioice.ice.get_host_addresses(use_ipv4, use_ipv6)`` (aioice excludes 127.0.0.1
    there); this replaces that function with one returning exactly the given addresses
    (loopback allowed, so tests run on 127.0.0.1), filtered by IP version. It affects
    every peer connection created afterwards in this process, which is what the relay
    wants: its media goes only through its listener addresses. Combine with
    :func:`ice_configuration` so no STUN/TURN server is contacted (aiortc otherwise
    defaults to a public STUN server). :func:`restore_ice_addresses` undoes it.
    """
    import ipaddress

    if isinstance(addresses, str):
        raise TypeError("restrict_ice_addresses takes a sequence of addresses, not a string")
    parsed = [ipaddress.ip_address(a) for a in addresses]  # ValueError on a bad address
    if not parsed:
        raise ValueError("restrict_ice_addresses needs at least one address")
    for ip in parsed:
        if ip.is_unspecified or ip.is_multicast:
            raise ValueError(f"{ip} is not a host address to gather ICE candidates on")
    v4 = [str(ip) for ip in parsed if ip.version == 4]
    v6 = [str(ip) for ip in parsed if ip.version == 6]

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return (v4 if use_ipv4 else []) + (v6 if use_ipv6 else [])

    aioice.ice.get_host_addresses = get_host_addresses


def restore_ice_addresses() -> None:
    """Undo :func:`restrict_ice_addresses` (aioice's own interface enumeration)."""
    aioice.ice.get_host_addresses = _original_get_host_addresses


def ice_configuration() -> RTCConfiguration:
    """An ``RTCConfiguration`` with no ICE servers (no STUN, no TURN)."""
    return RTCConfiguration(iceServers=[])


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class MediaChunk:
    """About a second of a share's encoded video, for the audit log.

    ``packets`` are ``(time, data, is_keyframe)``: ``time`` is the wall-clock time (the
    fanout's clock, seconds) the frame was taken for encoding; ``data`` one VP8 frame.
    ``keyframe`` says the chunk starts with a keyframe.
    """

    start: float
    end: float
    keyframe: bool
    codec: str
    width: int
    height: int
    packets: tuple[tuple[float, bytes, bool], ...]

    def __post_init__(self) -> None:
        if self.codec != CODEC:
            raise ValueError(f"unsupported media codec {self.codec!r}")
        if not self.packets:
            raise ValueError("a media chunk holds at least one packet")
        if self.end < self.start:
            raise ValueError("a media chunk ends before it starts")
        if self.width <= 0 or self.height <= 0:
            raise ValueError("a media chunk needs positive dimensions")
        if self.keyframe != self.packets[0][2]:
            raise ValueError("a media chunk's keyframe flag must match its first packet")


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One encoded frame as the viewers get it (what ``record_frame`` records)."""

    time: float
    data: bytes
    keyframe: bool
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """A small PNG of the share at ``time`` (fanout clock, seconds)."""

    time: float
    png: bytes
    width: int
    height: int


class StopCode(enum.Enum):
    REQUESTED = "requested"
    SOURCE_ENDED = "source_ended"
    FRAME_TOO_LARGE = "frame_too_large"
    BAD_FRAME = "bad_frame"
    ENCODER_FAILED = "encoder_failed"
    RECORDING_FAILED = "recording_failed"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True, slots=True)
class FanoutStop:
    """Why a fanout stopped: a code and a human reason."""

    code: StopCode
    reason: str


@dataclass(frozen=True, slots=True)
class ViewerStats:
    packets_delivered: int
    packets_skipped: int
    overflows: int


@dataclass(frozen=True, slots=True)
class FanoutStats:
    frames_in: int
    frames_encoded: int
    frames_dropped: int
    keyframes: int
    keyframe_requests: int
    bytes_encoded: int
    encode_seconds: float
    packets_delivered: int  # to every viewer so far, including viewers who left
    viewers: tuple[ViewerStats, ...]  # the current viewers


# --------------------------------------------------------------------------- encoder


class _Vp8Encoder:
    """One libvpx encoder (real-time settings as aiortc's Vp8Encoder, fixed bitrate)."""

    def __init__(self, bitrate: int) -> None:
        self._bitrate = bitrate
        self._codec: VideoCodecContext | None = None

    def encode(self, frame: av.VideoFrame, keyframe: bool) -> list[AvPacket]:
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        codec = self._codec
        if codec is not None and (frame.width != codec.width or frame.height != codec.height):
            codec = None
        if codec is None:
            codec = av.CodecContext.create("libvpx", "w")
            assert isinstance(codec, VideoCodecContext)
            codec.width = frame.width
            codec.height = frame.height
            codec.bit_rate = self._bitrate
            codec.pix_fmt = "yuv420p"
            codec.time_base = VIDEO_TIME_BASE
            codec.gop_size = 100_000  # keyframes are forced by the fanout's schedule
            codec.qmin = 2
            codec.qmax = 56
            codec.options = {
                "bufsize": str(self._bitrate),
                "cpu-used": "-6",
                "deadline": "realtime",
                "lag-in-frames": "0",
                "minrate": str(self._bitrate),
                "maxrate": str(self._bitrate),
                "noise-sensitivity": "4",
                "overshoot-pct": "15",
                "partitions": "0",
                "static-thresh": "1",
                "undershoot-pct": "100",
            }
            pixels = frame.width * frame.height
            cpus = multiprocessing.cpu_count()
            codec.thread_count = 2 if pixels > 640 * 480 and cpus >= 3 else 1
            self._codec = codec
            keyframe = True
        # The decoder marks a received keyframe I, which libvpx would obey: only the
        # fanout's schedule decides.
        frame.pict_type = (
            av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        )
        return list(codec.encode(frame))


def _thumbnail(frame: av.VideoFrame, width: int) -> tuple[bytes, int, int]:
    w = min(width, frame.width)
    h = max(2, round(frame.height * w / frame.width) // 2 * 2)
    small = frame.reformat(width=w, height=h, format="rgb24")
    return _png(small), w, h


def _png(rgb: av.VideoFrame) -> bytes:
    ctx = av.CodecContext.create("png", "w")
    assert isinstance(ctx, VideoCodecContext)
    ctx.width = rgb.width
    ctx.height = rgb.height
    ctx.pix_fmt = "rgb24"
    ctx.time_base = fractions.Fraction(1, 1)
    out = [bytes(p) for p in ctx.encode(rgb)]
    out += [bytes(p) for p in ctx.encode(None)]
    return b"".join(out)


def frame_to_png(frame: av.VideoFrame) -> bytes:
    """A decoded frame as PNG bytes (full size, RGB)."""
    return _png(frame.reformat(format="rgb24"))


# --------------------------------------------------------------------------- fanout


class ViewerTrack(MediaStreamTrack):
    """A viewer's video track: ``recv()`` returns the fanout's shared ``av.Packet``.

    Nothing is queued until the viewer's sender first calls ``recv()`` (the DTLS
    connection is up then); from that point the viewer waits for a keyframe, asking the
    fanout for one, so a late joiner's first frame is the next encoded frame. A viewer
    that falls ``max_queue`` packets behind loses its queue and waits for the next
    keyframe again (it asks for one when it next pulls).
    """

    kind = "video"

    def __init__(self, fanout: Fanout, max_queue: int) -> None:
        super().__init__()
        self._fanout = fanout
        self._max_queue = max_queue
        self._queue: deque[AvPacket] = deque()
        self._wakeup = asyncio.Event()
        self._active = False
        self._waiting_keyframe = True
        self._asked = False
        self.packets_delivered = 0
        self.packets_skipped = 0
        self.overflows = 0

    async def recv(self) -> AvPacket:
        if not self._active:
            self._active = True
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if self._queue:
                packet = self._queue.popleft()
                self.packets_delivered += 1
                return packet
            if self._waiting_keyframe and not self._asked:
                self._asked = True
                self._fanout.request_keyframe()
            self._wakeup.clear()
            await self._wakeup.wait()

    def _offer(self, packet: AvPacket) -> None:
        if not self._active:
            return
        if self._waiting_keyframe:
            if not packet.is_keyframe:
                self.packets_skipped += 1
                return
            self._waiting_keyframe = False
            self._asked = False
        if len(self._queue) >= self._max_queue:
            self.overflows += 1
            self.packets_skipped += len(self._queue) + 1
            self._queue.clear()
            self._waiting_keyframe = True
            return
        self._queue.append(packet)
        self._wakeup.set()

    def stop(self) -> None:
        super().stop()
        self._fanout.remove_viewer(self)
        self._queue.clear()
        self._wakeup.set()

    def stats(self) -> ViewerStats:
        return ViewerStats(self.packets_delivered, self.packets_skipped, self.overflows)


@dataclass(slots=True)
class _ChunkBuilder:
    width: int
    height: int
    packets: list[tuple[float, bytes, bool]] = field(default_factory=list)

    def build(self) -> MediaChunk:
        return MediaChunk(
            start=self.packets[0][0],
            end=self.packets[-1][0],
            keyframe=self.packets[0][2],
            codec=CODEC,
            width=self.width,
            height=self.height,
            packets=tuple(self.packets),
        )


class Fanout:
    """One per share: the publisher's decoded track in, one VP8 encoder, many viewers.

    Frames arriving faster than ``limits.max_fps`` (token bucket on ``clock``, burst of
    two frames) are dropped before encoding; a frame larger than the limits stops the
    fanout (:attr:`StopCode.FRAME_TOO_LARGE`). Each kept frame is encoded once, in a
    worker thread, and the same packet goes to every :class:`ViewerTrack`. A keyframe is
    made at the start, on :meth:`request_keyframe` (a new viewer, a viewer's PLI/FIR),
    and at least every ``limits.keyframe_interval_s``.

    ``on_chunk`` gets a :class:`MediaChunk` about every ``chunk_seconds`` (cut early when
    the picture size changes, and the last one at stop); ``on_thumbnail`` a
    :class:`Thumbnail` for the first frame and then every ``thumbnail_every_s``;
    ``on_stop`` the :class:`FanoutStop`, once. ``record_frame`` is awaited with each
    :class:`EncodedFrame` before any viewer gets it. Callbacks run on the event loop; one
    that raises stops the share (:attr:`StopCode.RECORDING_FAILED`).
    """

    def __init__(
        self,
        source: MediaStreamTrack,
        limits: ScreenLimits,
        *,
        on_chunk: Callable[[MediaChunk], None] | None = None,
        on_thumbnail: Callable[[Thumbnail], None] | None = None,
        on_stop: Callable[[FanoutStop], None] | None = None,
        record_frame: Callable[[EncodedFrame], Awaitable[None]] | None = None,
        thumbnail_every_s: float = 5.0,
        thumbnail_width: int = 320,
        chunk_seconds: float = 1.0,
        max_viewer_queue: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if source.kind != "video":
            raise ValueError("a screen share's source must be a video track")
        if not (math.isfinite(thumbnail_every_s) and thumbnail_every_s > 0):
            raise ValueError("thumbnail_every_s must be positive")
        if not (math.isfinite(chunk_seconds) and chunk_seconds > 0):
            raise ValueError("chunk_seconds must be positive")
        if not 16 <= thumbnail_width <= MAX_DIMENSION:
            raise ValueError("thumbnail_width must be in 16..4096")
        if max_viewer_queue < 1:
            raise ValueError("max_viewer_queue must be at least 1")
        self.source = source
        self.limits = limits
        self._on_chunk = on_chunk
        self._on_thumbnail = on_thumbnail
        self._on_stop = on_stop
        self._record_frame = record_frame
        self._thumbnail_every_s = thumbnail_every_s
        self._thumbnail_width = thumbnail_width
        self._chunk_seconds = chunk_seconds
        self._max_viewer_queue = max_viewer_queue
        self._clock = clock
        self._viewers: list[ViewerTrack] = []
        self._encoder = _Vp8Encoder(limits.bitrate)
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._stop: FanoutStop | None = None
        self._force_keyframe = True
        self._last_keyframe: float | None = None
        self._tokens = 1.0
        self._last_token_time: float | None = None
        self._last_pts = -1
        self._next_thumbnail: float | None = None
        self._chunk: _ChunkBuilder | None = None
        # stats
        self.frames_in = 0
        self.frames_encoded = 0
        self.frames_dropped = 0
        self.keyframes = 0
        self.keyframe_requests = 0
        self.bytes_encoded = 0
        self.encode_seconds = 0.0
        self._delivered_by_gone = 0

    # -- viewers

    def add_viewer(self) -> ViewerTrack:
        """A new viewer track (its first packet is a keyframe made for it)."""
        if self._stop is not None:
            raise RuntimeError(f"the share has stopped: {self._stop.reason}")
        track = ViewerTrack(self, self._max_viewer_queue)
        self._viewers.append(track)
        return track

    def remove_viewer(self, track: MediaStreamTrack) -> None:
        """Stop sending to ``track`` (idempotent); call it when the viewer leaves."""
        if track in self._viewers:
            self._viewers.remove(track)
            assert isinstance(track, ViewerTrack)
            self._delivered_by_gone += track.packets_delivered
        if isinstance(track, ViewerTrack) and track.readyState == "live":
            track.stop()

    @property
    def viewers(self) -> tuple[ViewerTrack, ...]:
        return tuple(self._viewers)

    def request_keyframe(self) -> None:
        """Make the next encoded frame a keyframe (requests coalesce)."""
        self.keyframe_requests += 1
        self._force_keyframe = True

    # -- life cycle

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the fanout has already been started")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="screen-encode")
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, reason: str) -> None:
        """Stop the share (idempotent): viewers' tracks end, the last chunk is emitted."""
        await self._finish(FanoutStop(StopCode.REQUESTED, reason))

    @property
    def stopped(self) -> FanoutStop | None:
        return self._stop

    async def wait_stopped(self) -> FanoutStop:
        await self._stopped.wait()
        assert self._stop is not None
        return self._stop

    def stats(self) -> FanoutStats:
        return FanoutStats(
            frames_in=self.frames_in,
            frames_encoded=self.frames_encoded,
            frames_dropped=self.frames_dropped,
            keyframes=self.keyframes,
            keyframe_requests=self.keyframe_requests,
            bytes_encoded=self.bytes_encoded,
            encode_seconds=self.encode_seconds,
            packets_delivered=self._delivered_by_gone
            + sum(v.packets_delivered for v in self._viewers),
            viewers=tuple(v.stats() for v in self._viewers),
        )

    async def _finish(self, stop: FanoutStop) -> None:
        if self._stop is not None:
            return
        self._stop = stop
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):  # already stopping: the first reason stays
            self._flush_chunk()
        for viewer in list(self._viewers):
            viewer.stop()
        self._viewers.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._stopped.set()
        if self._on_stop is not None:
            self._on_stop(stop)

    # -- the pump

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stop: FanoutStop
        try:
            stop = await self._pump(loop)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not leave the share half-running
            stop = FanoutStop(StopCode.INTERNAL_ERROR, f"the share failed: {exc!r}")
        await self._finish(stop)

    async def _pump(self, loop: asyncio.AbstractEventLoop) -> FanoutStop:
        while True:
            try:
                frame = await self.source.recv()
            except MediaStreamError:
                return FanoutStop(StopCode.SOURCE_ENDED, "the shared video ended")
            self.frames_in += 1
            if not isinstance(frame, av.VideoFrame):
                return FanoutStop(StopCode.BAD_FRAME, "the shared track sent a non-video frame")
            lim = self.limits
            if frame.width > lim.max_width or frame.height > lim.max_height:
                return FanoutStop(
                    StopCode.FRAME_TOO_LARGE,
                    f"a shared frame of {frame.width}x{frame.height} exceeds the "
                    f"share limit of {lim.max_width}x{lim.max_height}",
                )
            now = self._clock()
            if not self._admit(now):
                self.frames_dropped += 1
                continue
            keyframe = self._force_keyframe or (
                self._last_keyframe is None or now - self._last_keyframe >= lim.keyframe_interval_s
            )
            self._force_keyframe = False
            frame.pts = self._pts(frame)
            frame.time_base = VIDEO_TIME_BASE
            thumb = self._next_thumbnail is None or now >= self._next_thumbnail
            if thumb:
                self._next_thumbnail = now + self._thumbnail_every_s
            try:
                t0 = time.perf_counter()
                packets, png = await loop.run_in_executor(
                    self._executor, self._encode, frame, keyframe, thumb
                )
                self.encode_seconds += time.perf_counter() - t0
            except Exception as exc:
                return FanoutStop(StopCode.ENCODER_FAILED, f"the video encoder failed: {exc}")
            self.frames_encoded += 1
            try:
                if png is not None and self._on_thumbnail is not None:
                    self._on_thumbnail(Thumbnail(now, png[0], png[1], png[2]))
                for packet in packets:
                    if self._record_frame is not None:
                        # Recorded first: no viewer gets a frame whose record is not durable.
                        await self._record_frame(self._encoded(packet, now, frame))
                    self._deliver(packet, now, frame.width, frame.height)
            except Exception as exc:
                return FanoutStop(StopCode.RECORDING_FAILED, f"recording the share failed: {exc}")

    def _admit(self, now: float) -> bool:
        fps = self.limits.max_fps
        if self._last_token_time is not None:
            elapsed = max(0.0, now - self._last_token_time)
            self._tokens = min(2.0, self._tokens + elapsed * fps)
        self._last_token_time = now
        if self._tokens >= 1.0 - 1e-6:
            self._tokens -= 1.0
            return True
        return False

    def _pts(self, frame: av.VideoFrame) -> int:
        pts: int
        if frame.pts is not None and frame.time_base is not None:
            pts = int(frame.pts * frame.time_base / VIDEO_TIME_BASE)
        else:
            pts = int(self._clock() * VIDEO_TIME_BASE.denominator)
        if pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts

    def _encode(
        self, frame: av.VideoFrame, keyframe: bool, thumb: bool
    ) -> tuple[list[AvPacket], tuple[bytes, int, int] | None]:
        packets = self._encoder.encode(frame, keyframe)
        png = _thumbnail(frame, self._thumbnail_width) if thumb else None
        return packets, png

    def _encoded(self, packet: AvPacket, now: float, frame: av.VideoFrame) -> EncodedFrame:
        return EncodedFrame(now, bytes(packet), bool(packet.is_keyframe), frame.width, frame.height)

    def _deliver(self, packet: AvPacket, now: float, width: int, height: int) -> None:
        packet.pts = self._last_pts
        packet.time_base = VIDEO_TIME_BASE
        data = bytes(packet)
        key = bool(packet.is_keyframe)
        self.bytes_encoded += len(data)
        if key:
            self.keyframes += 1
            self._last_keyframe = now
        for viewer in self._viewers:
            viewer._offer(packet)
        self._record(now, data, key, width, height)

    def _record(self, now: float, data: bytes, key: bool, width: int, height: int) -> None:
        chunk = self._chunk
        if chunk is not None and (
            chunk.width != width
            or chunk.height != height
            or now - chunk.packets[0][0] >= self._chunk_seconds
        ):
            self._flush_chunk()
            chunk = None
        if chunk is None:
            chunk = self._chunk = _ChunkBuilder(width, height)
        chunk.packets.append((now, data, key))

    def _flush_chunk(self) -> None:
        chunk, self._chunk = self._chunk, None
        if chunk is not None and chunk.packets and self._on_chunk is not None:
            self._on_chunk(chunk.build())


# --------------------------------------------------------------------------- senders


def watch_keyframe_requests(sender: RTCRtpSender, fanout: Fanout) -> None:
    """Send a viewer's PLI/FIR (RTCP feedback to ``sender``) to ``fanout.request_keyframe``.

    aiortc 1.16's ``RTCRtpSender._handle_rtcp_packet`` answers an ``RtcpPsfbPacket`` with
    fmt PLI or FIR by calling ``self._send_keyframe()``, which only sets a flag for its own
    encoder, unused when the track yields packets. This wraps that method on this one
    sender instance (an instance attribute shadows the class method), so the request
    reaches the shared encoder. The aiortc pin (<1.17) keeps this hook stable; a test
    sends a real PLI through a peer connection to prove it.
    """
    original: Callable[[], None] = sender._send_keyframe

    def send_keyframe() -> None:
        original()
        fanout.request_keyframe()

    sender._send_keyframe = send_keyframe  # type: ignore[method-assign]


def prefer_vp8(transceiver: RTCRtpTransceiver) -> None:
    """Send only VP8 (and its RTX) on ``transceiver``: the fanout's packets are VP8.

    Works on both sides of the negotiation. As the offerer, call it before
    ``createOffer``. As the answerer, aiortc 1.16 has already chosen the codecs in
    ``setRemoteDescription`` (in the remote offer's order, preferences set later are
    ignored), so this also filters the transceiver's negotiated codecs
    (``transceiver._codecs``) to VP8: otherwise a viewer offering H.264 first would get
    VP8 packets sent as H.264. Raises ``ValueError`` when the offer had no VP8.
    """
    caps = RTCRtpSender.getCapabilities("video")
    vp8 = [c for c in caps.codecs if c.mimeType.lower() == "video/vp8"]
    rtx = [c for c in caps.codecs if c.mimeType.lower() == "video/rtx"]
    transceiver.setCodecPreferences(vp8 + rtx)
    negotiated: list[Any] = list(getattr(transceiver, "_codecs", []))
    if negotiated:
        kept = [c for c in negotiated if c.mimeType.lower() == "video/vp8"]
        if not kept:
            raise ValueError("the viewer's offer has no VP8, the only codec of a screen share")
        types = {c.payloadType for c in kept}
        kept += [
            c
            for c in negotiated
            if c.mimeType.lower() == "video/rtx" and c.parameters.get("apt") in types
        ]
        transceiver._codecs = kept


def add_viewer_to(pc: RTCPeerConnection, fanout: Fanout) -> tuple[ViewerTrack, RTCRtpSender]:
    """Add a new viewer of ``fanout`` to ``pc`` (send-only, VP8, keyframe requests wired).

    Call before creating the offer. When the viewer leaves, call
    ``fanout.remove_viewer(track)`` (closing ``pc`` does not stop the track).
    """
    track = fanout.add_viewer()
    transceiver = pc.addTransceiver(track, direction="sendonly")
    prefer_vp8(transceiver)
    watch_keyframe_requests(transceiver.sender, fanout)
    return track, transceiver.sender


# --------------------------------------------------------------------------- test pattern

# 75% colour bars: white, yellow, cyan, green, magenta, red, blue, black (RGB 0..255).
BARS_RGB: tuple[tuple[int, int, int], ...] = (
    (191, 191, 191),
    (191, 191, 0),
    (0, 191, 191),
    (0, 191, 0),
    (191, 0, 191),
    (191, 0, 0),
    (0, 0, 191),
    (16, 16, 16),
)
COUNTER_BITS = 16


def _yuv(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = (c / 255 for c in rgb)
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    return round(y), round(u), round(v)


def _band_height(height: int) -> int:
    return max(8, height // 10) // 2 * 2


class TestPattern(VideoStreamTrack):
    """A synthetic screen: colour bars moving left and a frame counter as 16 blocks.

    The top band holds the counter's bits, most significant first, white for 1 and black
    for 0 (see :func:`read_counter`); below it eight 75% colour bars scroll by
    ``step`` pixels a frame. Frames are built from bytes (yuv420p planes), paced at
    ``fps`` in real time with pts on the 90 kHz clock; after ``frames`` frames (if given)
    the track ends.
    """

    __test__ = False  # not a pytest class

    def __init__(
        self,
        width: int = 640,
        height: int = 360,
        fps: float = 10.0,
        *,
        frames: int | None = None,
        step: int = 4,
    ) -> None:
        super().__init__()
        if width % 2 or height % 2 or width < 32 or height < 32:
            raise ValueError("the test pattern needs even dimensions of at least 32")
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError("the test pattern's fps must be positive")
        self.width = width
        self.height = height
        self.fps = fps
        self.frames = frames
        self.step = step // 2 * 2
        self.count = 0
        self._t0: float | None = None
        band = _band_height(height)
        self._band = band
        yuv = [_yuv(c) for c in BARS_RGB]
        bar_w = width // len(yuv) // 2 * 2
        y_row = bytearray()
        u_row = bytearray()
        v_row = bytearray()
        for i, (y, u, v) in enumerate(yuv):
            w = bar_w if i < len(yuv) - 1 else width - bar_w * (len(yuv) - 1)
            y_row += bytes([y]) * w
            u_row += bytes([u]) * (w // 2)
            v_row += bytes([v]) * (w // 2)
        self._rows = (bytes(y_row), bytes(u_row), bytes(v_row))

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live" or (self.frames is not None and self.count >= self.frames):
            raise MediaStreamError
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + self.count / self.fps
        if due > now:
            await asyncio.sleep(due - now)
        frame = self.make_frame(self.count)
        frame.pts = round(self.count * 90_000 / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        self.count += 1
        return frame

    def make_frame(self, n: int) -> av.VideoFrame:
        """Frame number ``n`` of the pattern (no pacing, no pts)."""
        w, h, band = self.width, self.height, self._band
        frame = av.VideoFrame(w, h, "yuv420p")
        shift = (n * self.step) % w
        bits_w = w // COUNTER_BITS
        y_band = bytearray()
        for bit in range(COUNTER_BITS):
            on = (n >> (COUNTER_BITS - 1 - bit)) & 1
            y_band += bytes([235 if on else 16]) * bits_w
        y_band += bytes([16]) * (w - len(y_band))
        for index, plane in enumerate(frame.planes):
            pw, ph = (w, h) if index == 0 else (w // 2, h // 2)
            pband = band if index == 0 else band // 2
            row = self._rows[index]
            s = shift if index == 0 else shift // 2
            row = row[s:] + row[:s]
            top = bytes(y_band) if index == 0 else bytes([128]) * pw
            pad = bytes(plane.line_size - pw)
            plane.update((top + pad) * pband + (row + pad) * (ph - pband))
        return frame


def read_counter(frame: av.VideoFrame) -> int:
    """The frame counter drawn by :class:`TestPattern` (survives VP8 at sane bitrates)."""
    gray = frame.reformat(format="gray")
    plane = gray.planes[0]
    data = bytes(plane)
    y = _band_height(gray.height) // 2
    bits_w = gray.width // COUNTER_BITS
    value = 0
    for bit in range(COUNTER_BITS):
        x = bit * bits_w + bits_w // 2
        value = (value << 1) | (1 if data[y * plane.line_size + x] > 128 else 0)
    return value


def pattern_colour(frame: av.VideoFrame, x: int, y: int) -> tuple[int, int, int]:
    """The RGB colour at (x, y) of a decoded frame (for checks in tests and the bench)."""
    rgb = frame.reformat(format="rgb24")
    plane = rgb.planes[0]
    data = bytes(plane)
    i = y * plane.line_size + 3 * x
    return data[i], data[i + 1], data[i + 2]


# --------------------------------------------------------------------------- export


def export_media(chunks: Iterable[MediaChunk], out: Path) -> Path:
    """Write a share's chunks as a playable file; returns the path written.

    ``.webm``/``.mkv`` are muxed by av (Matroska), ``.ivf`` as IVF; any other suffix gets
    ``.webm`` appended. Playback starts at the first keyframe (packets before it cannot
    be decoded); times are kept in milliseconds from that keyframe, and packets whose
    time does not increase are nudged forward by a millisecond. Raises ``ValueError``
    when there is no keyframe to start from.
    """
    suffix = out.suffix.lower()
    if suffix not in (".webm", ".mkv", ".ivf"):
        out = out.with_name(out.name + ".webm")
        suffix = ".webm"
    packets: list[tuple[int, bytes, bool]] = []
    width = height = 0
    origin: float | None = None
    last = -1
    for chunk in chunks:
        if chunk.codec != CODEC:
            raise ValueError(f"cannot export codec {chunk.codec!r}")
        for t, data, key in chunk.packets:
            if origin is None:
                if not key:
                    continue
                origin = t
                width, height = chunk.width, chunk.height
            ms = max(round((t - origin) * 1000), last + 1)
            last = ms
            packets.append((ms, data, key))
    if origin is None:
        raise ValueError("the recording has no keyframe to start playback from")
    fmt = {".webm": "webm", ".mkv": "matroska", ".ivf": "ivf"}[suffix]
    container: Any = av.open(str(out), mode="w", format=fmt)
    try:
        stream = container.add_stream("libvpx", rate=30)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.time_base = _MS
        for ms, data, key in packets:
            packet = av.Packet(data)
            packet.pts = ms
            packet.dts = ms
            packet.time_base = _MS
            packet.stream = stream
            if key:
                packet.is_keyframe = True
            container.mux(packet)
    finally:
        container.close()
    return out
