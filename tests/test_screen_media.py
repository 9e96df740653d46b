"""Screen-share media core: real aiortc peer connections on 127.0.0.1, one process.

A TestPattern is published to a "relay" peer connection; a Fanout re-encodes it once and
serves viewer peer connections. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import av
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.codecs import vpx
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from relay import screen_media as sm
from relay.screen_media import (
    BARS_RGB,
    Fanout,
    MediaChunk,
    ScreenLimits,
    StopCode,
    TestPattern,
    Thumbnail,
    add_viewer_to,
    export_media,
    frame_to_png,
    ice_configuration,
    pattern_colour,
    read_counter,
    restore_ice_addresses,
    restrict_ice_addresses,
)

W, H = 320, 240


@pytest.fixture(autouse=True)
def _loopback_ice() -> Any:
    restrict_ice_addresses(["127.0.0.1"])
    yield
    restore_ice_addresses()


async def _negotiate(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> None:
    await offerer.setLocalDescription(await offerer.createOffer())
    offer = offerer.localDescription
    await answerer.setRemoteDescription(RTCSessionDescription(offer.sdp, offer.type))
    await answerer.setLocalDescription(await answerer.createAnswer())
    answer = answerer.localDescription
    await offerer.setRemoteDescription(RTCSessionDescription(answer.sdp, answer.type))


class Share:
    """Publisher -> relay pc -> Fanout -> viewer pcs, all in this process."""

    def __init__(self, fanout_kwargs: dict[str, Any]) -> None:
        self.fanout_kwargs = fanout_kwargs
        self.pcs: list[RTCPeerConnection] = []
        self.fanout: Fanout | None = None

    def pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(ice_configuration())
        self.pcs.append(pc)
        return pc

    async def publish(self, pattern: TestPattern) -> Fanout:
        publisher, relay_in = self.pc(), self.pc()
        publisher.addTrack(pattern)
        got: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        relay_in.on("track", lambda track: got.done() or got.set_result(track))
        await _negotiate(publisher, relay_in)
        source = await asyncio.wait_for(got, 10)
        self.fanout = Fanout(source, **self.fanout_kwargs)
        await self.fanout.start()
        return self.fanout

    async def viewer(self) -> tuple[MediaStreamTrack, Any]:
        """A viewer pc; returns its received (decoding) track and the relay's sender."""
        assert self.fanout is not None
        relay_out, viewer = self.pc(), self.pc()
        _track, sender = add_viewer_to(relay_out, self.fanout)
        got: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        viewer.on("track", lambda track: got.done() or got.set_result(track))
        await _negotiate(relay_out, viewer)
        return await asyncio.wait_for(got, 10), sender

    async def close(self) -> None:
        if self.fanout is not None:
            await self.fanout.stop("test over")
        await asyncio.gather(*(pc.close() for pc in self.pcs))


@pytest.fixture
async def share() -> AsyncIterator[Callable[..., Share]]:
    made: list[Share] = []

    def make(**kwargs: Any) -> Share:
        kwargs.setdefault("limits", ScreenLimits())
        s = Share(kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        await s.close()


async def _frames(track: MediaStreamTrack, n: int, within: float = 10) -> list[av.VideoFrame]:
    async def take() -> list[av.VideoFrame]:
        out = []
        while len(out) < n:
            frame = await track.recv()
            assert isinstance(frame, av.VideoFrame)
            out.append(frame)
        return out

    return await asyncio.wait_for(take(), within)


def _near(a: tuple[int, int, int], b: tuple[int, int, int], tol: int = 40) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def _looks_like_pattern(frame: av.VideoFrame) -> bool:
    """Dimensions, and every probed colour below the counter band is one of the bars."""
    if (frame.width, frame.height) != (W, H):
        return False
    probes = [pattern_colour(frame, x, H * 3 // 4) for x in range(10, W, W // 8)]
    matched = [any(_near(p, bar) for bar in BARS_RGB) for p in probes]
    return sum(matched) >= len(probes) - 2  # bar edges may blur


# --------------------------------------------------------------------------- pure parts


def test_limits_validate() -> None:
    assert ScreenLimits().max_fps == 15.0
    for bad in (
        {"max_width": 0},
        {"max_height": 10**6},
        {"max_fps": 0},
        {"max_fps": float("nan")},
        {"bitrate": 10},
        {"bitrate": 1.5e6},
        {"keyframe_interval_s": -1},
        {"max_width": True},
    ):
        with pytest.raises(ValueError, match="screen limit"):
            ScreenLimits(**bad)  # type: ignore[arg-type]


def test_pattern_counter_colours_and_png() -> None:
    pattern = TestPattern(W, H, step=0)
    frame = pattern.make_frame(0xBEEF)
    assert (frame.width, frame.height) == (W, H)
    assert read_counter(frame) == 0xBEEF
    # first bar (75% white) at the left, blue second to last
    assert _near(pattern_colour(frame, 5, H - 5), BARS_RGB[0], 4)
    assert _near(pattern_colour(frame, W - W // 8 - 5, H - 5), BARS_RGB[6], 4)
    moved = TestPattern(W, H, step=8).make_frame(1)
    assert _near(pattern_colour(moved, 0, H - 5), BARS_RGB[0], 4)
    png = frame_to_png(frame)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with av.open(__import__("io").BytesIO(png)) as c:
        decoded = next(c.decode(video=0))
    assert (decoded.width, decoded.height) == (W, H)
    assert read_counter(decoded) == 0xBEEF


def test_export_needs_a_keyframe(tmp_path: Path) -> None:
    chunk = MediaChunk(0.0, 0.0, False, "VP8", W, H, ((0.0, b"x", False),))
    with pytest.raises(ValueError, match="keyframe"):
        export_media([chunk], tmp_path / "a.webm")
    with pytest.raises(ValueError, match="keyframe flag"):
        MediaChunk(0.0, 0.0, True, "VP8", W, H, ((0.0, b"x", False),))


def test_restrict_ice_addresses_in_sdp() -> None:
    async def offer_sdp() -> str:
        pc = RTCPeerConnection(ice_configuration())
        pc.addTransceiver("video", direction="sendonly")
        try:
            await pc.setLocalDescription(await pc.createOffer())
            return str(pc.localDescription.sdp)
        finally:
            await pc.close()

    assert ice_configuration().iceServers == []
    sdp = asyncio.run(offer_sdp())
    candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
    assert candidates
    for line in candidates:
        fields = line.split()
        assert fields[4] == "127.0.0.1", line
        assert fields[7] == "host", line
    with pytest.raises(ValueError, match="not a host address"):
        restrict_ice_addresses(["0.0.0.0"])  # noqa: S104 - refused, never bound
    with pytest.raises(ValueError, match="does not appear to be an IP"):
        restrict_ice_addresses(["not an address"])


# --------------------------------------------------------------------------- fanout alone


async def test_frame_rate_limit_chunks_thumbnails_and_export(tmp_path: Path) -> None:
    chunks: list[MediaChunk] = []
    thumbs: list[Thumbnail] = []
    pattern = TestPattern(W, H, fps=30, frames=60)
    fanout = Fanout(
        pattern,
        ScreenLimits(max_fps=10),
        on_chunk=chunks.append,
        on_thumbnail=thumbs.append,
        thumbnail_every_s=0.5,
        thumbnail_width=160,
    )
    await fanout.start()
    stop = await asyncio.wait_for(fanout.wait_stopped(), 10)
    assert stop.code is StopCode.SOURCE_ENDED
    stats = fanout.stats()
    assert stats.frames_in == 60
    assert stats.frames_encoded + stats.frames_dropped == 60
    # 2 s of 30 fps at a 10 fps limit (burst of two): about 20 kept
    assert 17 <= stats.frames_encoded <= 24, stats
    assert chunks
    assert chunks[0].keyframe
    assert all(c.codec == "VP8" and (c.width, c.height) == (W, H) for c in chunks)
    assert all(c.end - c.start < 1.0 for c in chunks)
    assert sum(len(c.packets) for c in chunks) == stats.frames_encoded
    assert 3 <= len(thumbs) <= 5
    assert (thumbs[0].width, thumbs[0].height) == (160, 120)
    with av.open(__import__("io").BytesIO(thumbs[0].png)) as c:
        assert next(c.decode(video=0)).width == 160

    for name in ("share.webm", "share.ivf"):
        out = export_media(chunks, tmp_path / name)
        with av.open(str(out)) as container:
            decoded = list(container.decode(video=0))
        assert len(decoded) == stats.frames_encoded
        assert {(f.width, f.height) for f in decoded} == {(W, H)}
        counters = [read_counter(f) for f in decoded]
        assert counters == sorted(counters)
        assert counters[-1] >= 55
        assert _looks_like_pattern(decoded[-1])


async def test_oversize_frame_stops_the_share() -> None:
    stops: list[sm.FanoutStop] = []
    fanout = Fanout(
        TestPattern(640, 480, fps=30), ScreenLimits(max_width=W, max_height=H), on_stop=stops.append
    )
    viewer = fanout.add_viewer()
    await fanout.start()
    stop = await asyncio.wait_for(fanout.wait_stopped(), 5)
    assert stop.code is StopCode.FRAME_TOO_LARGE
    assert "640x480" in stop.reason
    assert "320x240" in stop.reason
    assert stops == [stop]
    assert fanout.stats().frames_encoded == 0
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(viewer.recv(), 2)
    with pytest.raises(RuntimeError, match="stopped"):
        fanout.add_viewer()
    await fanout.stop("again")  # idempotent, first reason kept
    assert fanout.stopped == stop


async def test_recording_failure_stops_the_share() -> None:
    def broken(chunk: MediaChunk) -> None:
        raise OSError("disk full")

    fanout = Fanout(TestPattern(W, H, fps=30), ScreenLimits(), on_chunk=broken, chunk_seconds=0.1)
    await fanout.start()
    stop = await asyncio.wait_for(fanout.wait_stopped(), 5)
    assert stop.code is StopCode.RECORDING_FAILED
    assert "disk full" in stop.reason


# --------------------------------------------------------------------------- over WebRTC


async def test_three_viewers_one_encode_per_frame(
    share: Callable[..., Share], monkeypatch: pytest.MonkeyPatch
) -> None:
    encoders_used: set[int] = set()
    original = vpx.Vp8Encoder.encode

    def counting(self: vpx.Vp8Encoder, frame: Any, force_keyframe: bool = False) -> Any:
        encoders_used.add(id(self))
        return original(self, frame, force_keyframe)

    monkeypatch.setattr(vpx.Vp8Encoder, "encode", counting)
    own_encodes = 0
    original_own = sm._Vp8Encoder.encode

    def counting_own(self: sm._Vp8Encoder, frame: av.VideoFrame, keyframe: bool) -> Any:
        nonlocal own_encodes
        own_encodes += 1
        return original_own(self, frame, keyframe)

    monkeypatch.setattr(sm._Vp8Encoder, "encode", counting_own)

    s = share(limits=ScreenLimits(max_fps=15))
    fanout = await s.publish(TestPattern(W, H, fps=15))
    viewers = [await s.viewer() for _ in range(3)]
    received = await asyncio.gather(*(_frames(track, 20) for track, _ in viewers))
    for frames in received:
        assert all(_looks_like_pattern(f) for f in frames[-5:])
        counters = [read_counter(f) for f in frames]
        assert counters == sorted(counters)
    stats = fanout.stats()
    # the relay encoded each kept frame once, whatever the number of viewers
    assert own_encodes == stats.frames_encoded
    assert stats.frames_encoded + stats.frames_dropped == stats.frames_in
    assert all(v.packets_delivered <= stats.frames_encoded for v in stats.viewers)
    assert sum(v.packets_delivered for v in stats.viewers) >= 60
    # aiortc's per-sender encoder ran only in the publisher, never in the relay's senders
    assert len(encoders_used) == 1


async def test_late_viewer_sees_a_picture_within_two_seconds(
    share: Callable[..., Share],
) -> None:
    # no periodic keyframe for a minute: the join itself must produce one
    s = share(limits=ScreenLimits(max_fps=10, keyframe_interval_s=60))
    fanout = await s.publish(TestPattern(W, H, fps=10))
    first, _ = await s.viewer()
    await _frames(first, 15)
    keyframes = fanout.stats().keyframes
    late, _ = await s.viewer()
    # With the periodic keyframe a minute away, a picture can only come from a keyframe
    # made for the join (how fast is what 'bench screen' measures, not a test).
    frames = await _frames(late, 1, within=5)
    assert _looks_like_pattern(frames[0])
    assert fanout.stats().keyframes > keyframes


async def test_pli_from_a_viewer_makes_a_keyframe(share: Callable[..., Share]) -> None:
    s = share(limits=ScreenLimits(max_fps=10, keyframe_interval_s=60))
    fanout = await s.publish(TestPattern(W, H, fps=10))
    track, sender = await s.viewer()
    await _frames(track, 10)
    before = fanout.stats()
    receiver = next(pc for pc in s.pcs if track in [t.receiver.track for t in pc.getTransceivers()])
    transceiver = next(t for t in receiver.getTransceivers() if t.receiver.track is track)
    await transceiver.receiver._send_rtcp_pli(sender._ssrc)

    for _ in range(150):  # up to 3 s
        if fanout.stats().keyframes > before.keyframes:
            break
        await asyncio.sleep(0.02)
    assert fanout.stats().keyframes > before.keyframes
    assert fanout.stats().keyframe_requests > before.keyframe_requests


# --------------------------------------------------------------------------- measurement
# Not a check: SCREEN_MEDIA_MEASURE=1 pytest -s -k measure prints the relay process's CPU
# for one 1280x720 10 fps source to 1, 10 and 30 viewers, Fanout against aiortc's
# MediaRelay (one encoder per viewer). The publisher and the viewers run in a child
# process (viewers count frames instead of decoding), so only the relay is measured.


def _clients_main(conn: Any, viewers: int, width: int, height: int, fps: float) -> None:
    import aiortc.rtcrtpreceiver as receiver_module

    restrict_ice_addresses(["127.0.0.1"])
    received = [0]

    class CountingDecoder:
        def decode(self, encoded_frame: Any) -> list[Any]:
            received[0] += 1
            return []

    real_get_decoder = receiver_module.get_decoder
    publisher = RTCPeerConnection(ice_configuration())
    pattern = TestPattern(width, height, fps=fps)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        publisher.addTrack(pattern)
        await publisher.setLocalDescription(await publisher.createOffer())
        conn.send(publisher.localDescription.sdp)
        answer = await loop.run_in_executor(None, conn.recv)
        await publisher.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        # viewers' receivers count whole frames instead of decoding them
        receiver_module.get_decoder = lambda codec: CountingDecoder()  # type: ignore[assignment,return-value]
        pcs = []
        for _ in range(viewers):
            offer = await loop.run_in_executor(None, conn.recv)
            pc = RTCPeerConnection(ice_configuration())
            pcs.append(pc)
            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            conn.send(pc.localDescription.sdp)
        while True:
            cmd = await loop.run_in_executor(None, conn.recv)
            if cmd == "mark":
                conn.send((received[0], pattern.count))
            else:
                break
        receiver_module.get_decoder = real_get_decoder
        await asyncio.gather(publisher.close(), *(pc.close() for pc in pcs))

    asyncio.run(main())


async def _measure(viewers: int, baseline: bool, seconds: float = 6.0) -> dict[str, float]:
    import multiprocessing
    import resource

    from aiortc.contrib.media import MediaRelay

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_clients_main, args=(child, viewers, 1280, 720, 10.0))
    proc.start()
    loop = asyncio.get_running_loop()
    pcs: list[RTCPeerConnection] = []
    fanout: Fanout | None = None
    try:
        relay_in = RTCPeerConnection(ice_configuration())
        pcs.append(relay_in)
        got: asyncio.Future[MediaStreamTrack] = loop.create_future()
        relay_in.on("track", lambda t: got.done() or got.set_result(t))
        offer = await loop.run_in_executor(None, parent.recv)
        await relay_in.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await relay_in.setLocalDescription(await relay_in.createAnswer())
        parent.send(relay_in.localDescription.sdp)
        source = await asyncio.wait_for(got, 20)
        media_relay = MediaRelay()
        if not baseline:
            fanout = Fanout(source, ScreenLimits(max_width=1280, max_height=720, max_fps=10))
            await fanout.start()
        for _ in range(viewers):
            pc = RTCPeerConnection(ice_configuration())
            pcs.append(pc)
            if fanout is not None:
                add_viewer_to(pc, fanout)
            else:
                transceiver = pc.addTransceiver(
                    media_relay.subscribe(source, buffered=False), direction="sendonly"
                )
                sm.prefer_vp8(transceiver)
            await pc.setLocalDescription(await pc.createOffer())
            parent.send(pc.localDescription.sdp)
            answer = await loop.run_in_executor(None, parent.recv)
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await asyncio.sleep(3)  # connect and settle
        parent.send("mark")
        r0, s0 = await loop.run_in_executor(None, parent.recv)
        u0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        await asyncio.sleep(seconds)
        u1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        parent.send("mark")
        r1, s1 = await loop.run_in_executor(None, parent.recv)
        cpu = (u1.ru_utime - u0.ru_utime) + (u1.ru_stime - u0.ru_stime)
        return {
            "viewers": viewers,
            "cpu_fraction": round(cpu / (t1 - t0), 3),
            "frames_delivered_ratio": round((r1 - r0) / max(1, viewers * (s1 - s0)), 3),
        }
    finally:
        parent.send("stop")
        if fanout is not None:
            await fanout.stop("measured")
        await asyncio.gather(*(pc.close() for pc in pcs))
        proc.join(20)
        if proc.is_alive():
            proc.kill()


@pytest.mark.skipif(
    not __import__("os").environ.get("SCREEN_MEDIA_MEASURE"), reason="set SCREEN_MEDIA_MEASURE=1"
)
@pytest.mark.timeout(900)
async def test_measure_cpu_fanout_against_per_viewer_encoding() -> None:
    for n in (1, 10, 30):
        for baseline in (False, True):
            result = await _measure(n, baseline)
            name = "per-viewer encode (MediaRelay)" if baseline else "Fanout (encode once)"
            print(f"{name:32} {result}", flush=True)


async def test_relay_answering_an_h264_first_offer_sends_vp8(
    share: Callable[..., Share],
) -> None:
    """The viewer offers (H.264 first), the relay answers: VP8 is still what is sent."""
    s = share(limits=ScreenLimits(max_fps=10))
    fanout = await s.publish(TestPattern(W, H, fps=10))
    viewer, relay_out = s.pc(), s.pc()
    offered = viewer.addTransceiver("video", direction="recvonly")
    caps = sm.RTCRtpSender.getCapabilities("video").codecs
    offered.setCodecPreferences(
        [c for c in caps if c.mimeType == "video/H264"]
        + [c for c in caps if c.mimeType == "video/VP8"]
    )
    await viewer.setLocalDescription(await viewer.createOffer())
    assert "H264" in viewer.localDescription.sdp.split("VP8")[0]
    await relay_out.setRemoteDescription(viewer.localDescription)
    transceiver = relay_out.getTransceivers()[0]
    track = fanout.add_viewer()
    transceiver.direction = "sendonly"
    transceiver.sender.replaceTrack(track)
    sm.prefer_vp8(transceiver)
    sm.watch_keyframe_requests(transceiver.sender, fanout)
    await relay_out.setLocalDescription(await relay_out.createAnswer())
    answer = relay_out.localDescription.sdp
    assert "VP8" in answer
    assert "H264" not in answer
    await viewer.setRemoteDescription(relay_out.localDescription)
    frames = await _frames(offered.receiver.track, 5)
    assert _looks_like_pattern(frames[-1])

    h264_only = s.pc()
    h264_only.addTransceiver("video", direction="recvonly").setCodecPreferences(
        [c for c in caps if c.mimeType == "video/H264"]
    )
    await h264_only.setLocalDescription(await h264_only.createOffer())
    refusing = s.pc()
    await refusing.setRemoteDescription(h264_only.localDescription)
    with pytest.raises(ValueError, match="no VP8"):
        sm.prefer_vp8(refusing.getTransceivers()[0])
