"""Screen share through a real relay over TLS on loopback: signalling frame by frame,
media over real WebRTC (aiortc) to and from the relay."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from relay.screen_media import TestPattern, ice_configuration, prefer_vp8
from relay.server import Relay
from tests.conftest import Facility
from tests.conftest import raw_joined as joined
from tests.rawclient import Raw

pytestmark = pytest.mark.integration


async def answer_to(raw: Raw, ref: str) -> dict[str, Any]:
    for _ in range(200):
        m = await raw.recv(10)
        if m.get("ref") == ref and m["t"] in ("share_answer", "ack"):
            return m
    raise AssertionError(f"no answer to {ref}")


async def publish(raw: Raw, ref: str = "p1") -> tuple[RTCPeerConnection, dict[str, Any]]:
    pc = RTCPeerConnection(ice_configuration())
    transceiver = pc.addTransceiver(TestPattern(320, 240, fps=10), direction="sendonly")
    prefer_vp8(transceiver)
    await pc.setLocalDescription(await pc.createOffer())
    assert pc.localDescription is not None
    await raw.send({"t": "share_start", "id": ref, "sdp": pc.localDescription.sdp})
    answer = await answer_to(raw, ref)
    if answer["t"] == "share_answer":
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    return pc, answer


async def watch(raw: Raw, share: str, ref: str = "w1") -> tuple[RTCPeerConnection, Any]:
    pc = RTCPeerConnection(ice_configuration())
    transceiver = pc.addTransceiver("video", direction="recvonly")
    prefer_vp8(transceiver)
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(track: Any) -> None:
        if not got.done():
            got.set_result(track)

    await pc.setLocalDescription(await pc.createOffer())
    assert pc.localDescription is not None
    await raw.send({"t": "share_watch", "id": ref, "share": share, "sdp": pc.localDescription.sdp})
    answer = await answer_to(raw, ref)
    assert answer["t"] == "share_answer", answer
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    track = await asyncio.wait_for(got, 10)
    return pc, track


async def test_the_instructors_screen_reaches_learners_through_the_relay(
    facility: Facility, relay: Relay
) -> None:
    async with (
        joined(facility, relay, "instructor:alice") as alice,
        joined(facility, relay, "learner:l1001", "pc-01") as ada,
        joined(facility, relay, "staff:sam") as sam,
    ):
        pub, answer = await publish(alice)
        assert answer["t"] == "share_answer", answer
        share = answer["share"]
        # Only the relay's own addresses are offered for the media.
        lines = answer["sdp"].splitlines()
        candidates = [line for line in lines if line.startswith("a=candidate")]
        assert candidates
        assert all(" 127.0.0.1 " in c for c in candidates)
        # The sharer is asked to keep to the facility's bitrate (browsers obey b=AS/TIAS).
        assert "b=AS:1000" in lines
        assert "b=TIAS:1000000" in lines
        started = await ada.recv_type("share_started")
        assert started["share"] == share
        assert started["by"] == "instructor:alice"
        viewers = []
        for raw in (ada, sam):
            pc, track = await watch(raw, share)
            frame = await asyncio.wait_for(track.recv(), 10)
            assert (frame.width, frame.height) == (320, 240)
            viewers.append(pc)
        await alice.send({"t": "share_stop", "id": "x1", "share": share})
        assert (await answer_to(alice, "x1"))["status"] == "delivered"
        stopped = await ada.recv_type("share_stopped")
        assert stopped["share"] == share
        for pc in (pub, *viewers):
            await pc.close()
    kinds = [r["kind"] for r in facility.audit_records()]
    assert "screen.started" in kinds
    assert kinds.count("screen.watched") == 2
    assert "screen.stopped" in kinds
    assert "screen.media" in kinds
    assert "screen.thumbnail" in kinds


async def test_who_may_share(facility: Facility, relay: Relay) -> None:
    async with (
        joined(facility, relay, "instructor:alice") as alice,
        joined(facility, relay, "learner:l1001", "pc-01") as ada,
        joined(facility, relay, "learner:l1002", "pc-02") as bo,
        joined(facility, relay, "staff:sam") as sam,
    ):
        # A learner not asked: refused by the policy's rule.
        pc, answer = await publish(ada, "a1")
        await pc.close()
        assert answer["t"] == "ack"
        assert answer["error"] == "route_refused"
        assert "only when the instructor asks" in answer["text"]
        # Staff never share.
        pc, answer = await publish(sam, "s1")
        await pc.close()
        assert answer["error"] == "route_refused"
        # The instructor asks; now the learner may, and only the instructor and staff see it.
        await alice.send({"t": "share_ask", "id": "k1", "learner": "l1001"})
        assert (await answer_to(alice, "k1"))["status"] == "delivered"
        asked = await ada.recv_type("share_asked")
        assert asked["by"] == "instructor:alice"
        pc, answer = await publish(ada, "a2")
        assert answer["t"] == "share_answer", answer
        share = answer["share"]
        await alice.recv_type("share_started")
        # Another learner may not watch a learner's share.
        other = RTCPeerConnection(ice_configuration())
        other.addTransceiver("video", direction="recvonly")
        await other.setLocalDescription(await other.createOffer())
        assert other.localDescription is not None
        await bo.send(
            {"t": "share_watch", "id": "b1", "share": share, "sdp": other.localDescription.sdp}
        )
        refused = await answer_to(bo, "b1")
        assert refused["error"] == "unknown_share"
        await other.close()
        # Staff stop any share.
        await sam.send({"t": "share_stop", "id": "s2", "share": share, "reason": "not now"})
        assert (await answer_to(sam, "s2"))["status"] == "delivered"
        stopped = await ada.recv_type("share_stopped")
        assert stopped["reason"] == "not now"
        assert stopped["by"] == "staff:sam"
        await pc.close()


async def test_offers_other_than_one_video_are_refused(facility: Facility, relay: Relay) -> None:
    async with joined(facility, relay, "instructor:alice") as alice:
        pc = RTCPeerConnection(ice_configuration())
        pc.createDataChannel("smuggle")
        pc.addTransceiver(TestPattern(64, 64), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        assert pc.localDescription is not None
        await alice.send({"t": "share_start", "id": "d1", "sdp": pc.localDescription.sdp})
        refused = await answer_to(alice, "d1")
        assert refused["error"] == "bad_offer"
        assert "one video only" in refused["text"]
        await pc.close()


async def test_every_frame_viewers_get_was_recorded_first(facility: Facility, relay: Relay) -> None:
    import base64

    import av
    import msgpack

    async with (
        joined(facility, relay, "instructor:alice") as alice,
        joined(facility, relay, "learner:l1001", "pc-01") as ada,
    ):
        pub, answer = await publish(alice)
        share = answer["share"]
        await ada.recv_type("share_started")
        pc, track = await watch(ada, share)
        received = 0
        for _ in range(5):
            await asyncio.wait_for(track.recv(), 10)
            received += 1
            # At the moment a frame arrives, the log already holds at least as many frames.
            media = [r for r in facility.audit_records() if r["kind"] == "screen.media"]
            assert len(media) >= received
        await pc.close()
        await pub.close()
    media = [r for r in facility.audit_records() if r["kind"] == "screen.media"]
    decoder = av.CodecContext.create("vp8", "r")
    decoded = 0
    for record in media:
        when, keyframe, data = msgpack.unpackb(base64.b64decode(record["content"]), raw=False)
        assert isinstance(keyframe, bool)
        assert when > 0
        for frame in decoder.decode(av.Packet(data)):
            assert (frame.width, frame.height) == (320, 240)
            decoded += 1
    assert decoded >= received
    assert media[0]["detail"].startswith(f"share {share}: VP8 320x240")
    assert media[0]["detail"].endswith("keyframe")


async def test_a_late_joiner_learns_of_the_share_and_sees_a_picture_quickly(
    facility: Facility, relay: Relay
) -> None:
    async with joined(facility, relay, "instructor:alice") as alice:
        pub, answer = await publish(alice)
        share = answer["share"]
        await asyncio.sleep(1.0)
        async with joined(facility, relay, "learner:l1002", "pc-02") as late:
            started = await late.recv_type("share_started")
            assert started["share"] == share
            pc, track = await watch(late, share)
            frame = await asyncio.wait_for(track.recv(), 10)
            assert (frame.width, frame.height) == (320, 240)
            await pc.close()
        await pub.close()


async def test_staff_stop_a_share_from_the_command_line(facility: Facility, relay: Relay) -> None:
    assert relay.addresses is not None
    async with (
        joined(facility, relay, "instructor:alice") as alice,
        joined(facility, relay, "learner:l1001", "pc-01") as ada,
    ):
        pub, answer = await publish(alice)
        share = answer["share"]
        code, out, err = await asyncio.to_thread(
            facility.admin,
            "share",
            "stop",
            share,
            "--reason",
            "not appropriate",
            "--bundle",
            str(facility.bundle("sam")),
            "--relay",
            relay.addresses.inside_url,
        )
        assert code == 0, err
        assert f"Share {share} of class py101 stopped: not appropriate" in out
        stopped = await ada.recv_type("share_stopped")
        assert stopped["by"] == "staff:sam"
        assert stopped["reason"] == "not appropriate"
        await pub.close()
        code, out, err = await asyncio.to_thread(
            facility.admin,
            "share",
            "stop",
            "nonsense",
            "--reason",
            "x",
            "--bundle",
            str(facility.bundle("sam")),
            "--relay",
            relay.addresses.inside_url,
        )
        assert code == 2
        assert "is not a share id" in err
