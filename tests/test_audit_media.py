"""Screen shares read back from the audit log: ``audit show`` (the transcript, ``--media``)
and ``audit export --media`` (a playable video, thumbnails and a manifest per class). The
pure part on hand-made records; the commands on the log a real relay wrote while an
instructor shared a test pattern over WebRTC and a learner watched it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import av
import msgpack
import pytest

from relay.audit_media import (
    MediaError,
    ShareRecording,
    collect_shares,
    media_chunks,
    plan_share,
    safe_share_id,
    share_id_of,
    unpack_frame,
    write_share,
)
from relay.audit_read import AuditReader, StoredRecord
from relay.auditlog import FrameType
from relay.screen_media import TestPattern, read_counter
from relay.server import running_relay
from tests.conftest import Facility
from tests.test_audit_query import protect_staff_key
from tests.test_screen_relay import answer_to, joined, publish, watch

SHARE = "py101.s1-ab12"
W, H = 320, 240


# ---------------------------------------------------------------------------------------
# pure: records -> shares
# ---------------------------------------------------------------------------------------


def _encoded(count: int, keyframe_every: int = 5) -> list[tuple[bytes, bool]]:
    codec = av.CodecContext.create("libvpx", "w")
    assert isinstance(codec, av.video.codeccontext.VideoCodecContext)
    codec.width, codec.height, codec.pix_fmt = W, H, "yuv420p"
    codec.time_base = __import__("fractions").Fraction(1, 10)
    codec.options = {"deadline": "realtime", "lag-in-frames": "0"}
    pattern = TestPattern(W, H)
    out = []
    for n in range(count):
        frame = pattern.make_frame(n)
        frame.pts = n
        frame.pict_type = av.video.frame.PictureType.I if n % keyframe_every == 0 else 0
        for packet in codec.encode(frame):
            out.append((bytes(packet), bool(packet.is_keyframe)))
    return out


def media(seq: int, t: float, data: bytes, key: bool, share: str = SHARE) -> dict[str, Any]:
    body = msgpack.packb([t, key, data], use_bin_type=True)
    detail = f"share {share}: VP8 {W}x{H}, {len(data)} bytes" + (", keyframe" if key else "")
    return {
        "seq": seq,
        "time": t,
        "kind": "screen.media",
        "session": "py101",
        "actor": "instructor:alice",
        "detail": detail,
        "content": base64.b64encode(body).decode(),
    }


def png_record(seq: int, t: float, share: str = SHARE) -> dict[str, Any]:
    from relay.screen_media import frame_to_png

    png = frame_to_png(TestPattern(64, 48).make_frame(seq))
    return {
        "seq": seq,
        "time": t,
        "kind": "screen.thumbnail",
        "session": "py101",
        "actor": "instructor:alice",
        "detail": f"share {share}: thumbnail 64x48 PNG",
        "content": base64.b64encode(png).decode(),
    }


def event(seq: int, t: float, kind: str, actor: str, detail: str) -> dict[str, Any]:
    return {
        "seq": seq,
        "time": t,
        "kind": kind,
        "session": "py101",
        "actor": actor,
        "detail": detail,
    }


def a_share(frames: int = 12) -> list[dict[str, Any]]:
    packets = _encoded(frames)
    records = [
        event(
            1,
            100.0,
            "screen.started",
            "instructor:alice",
            f"share {SHARE}; watched by the class; VP8",
        ),
        event(2, 100.2, "screen.watched", "learner:l1001", f"share {SHARE}"),
        png_record(3, 100.1),
    ]
    records += [media(10 + i, 100.1 + i / 10, d, k) for i, (d, k) in enumerate(packets)]
    records.append(png_record(40, 101.0))
    records.append(event(50, 102.0, "screen.stopped", "staff:sam", f"share {SHARE}: not now"))
    return records


def test_share_ids_are_read_from_details_and_checked() -> None:
    assert share_id_of(f"share {SHARE}; watched by the class; VP8") == SHARE
    assert share_id_of(f"share {SHARE}: VP8 320x240, 10 bytes") == SHARE
    assert share_id_of(f"share {SHARE}") == SHARE
    assert share_id_of("asked learner:l1001 to show their screen") is None
    assert share_id_of("share ../../etc: x") is None
    assert safe_share_id(SHARE)
    assert not safe_share_id("a..b")
    assert not safe_share_id("../x")


def test_records_make_a_share() -> None:
    (share,) = collect_shares(a_share())
    assert share.id == SHARE
    assert share.publisher == "instructor:alice"
    assert share.audience == "the class"
    assert share.watchers == [(100.2, "learner:l1001")]
    assert (share.stopped_by, share.reason) == ("staff:sam", "not now")
    assert len(share.frames) == 12
    assert share.keyframes == 3
    assert share.frames[0].keyframe
    assert share.sizes == [(W, H)]
    assert share.duration_s == pytest.approx(1.1)
    assert len(share.thumbnails) == 2
    assert (share.first_seq, share.last_seq) == (1, 50)
    assert share.summary().startswith(f"share {SHARE}: 12 frames 320x240 over 1.1 s (3 keyframes, ")
    assert share.summary().endswith(", 2 thumbnails")
    # Without contents, the details alone tell the same story.
    (bare,) = collect_shares(
        [{k: v for k, v in r.items() if k != "content"} for r in a_share()], contents=False
    )
    assert len(bare.frames) == 12
    assert bare.keyframes == 3
    assert all(f.data is None for f in bare.frames)
    with pytest.raises(MediaError, match="not decrypted"):
        media_chunks(bare)


def test_recorded_contents_are_checked_like_any_input() -> None:
    good = media(1, 1.0, b"\x10\x02\x00", True)["content"]
    assert unpack_frame(good) == (1.0, True, b"\x10\x02\x00")
    for bad in (
        "not base64!",
        base64.b64encode(msgpack.packb([1.0, True])).decode(),
        base64.b64encode(msgpack.packb([1.0, 1, b"x"])).decode(),
        base64.b64encode(msgpack.packb({"a": 1})).decode(),
        base64.b64encode(msgpack.packb([1.0, True, "text"])).decode(),
        base64.b64encode(msgpack.packb([[]] * 5000)).decode(),
    ):
        with pytest.raises(MediaError):
            unpack_frame(bad, 7)
    bad_detail = media(1, 1.0, b"x", True)
    bad_detail["detail"] = f"share {SHARE}: something else"
    with pytest.raises(MediaError, match="unexpected detail"):
        collect_shares([bad_detail])


def test_a_share_is_written_playable_from_its_first_keyframe(tmp_path: Path) -> None:
    records = a_share(12)
    # A share whose first frames were lost before a keyframe: playback starts at one.
    records = [r for r in records if r["seq"] not in (10, 11)]
    (share,) = collect_shares(records)
    plan = plan_share(share, tmp_path)
    assert plan.video == tmp_path / f"{SHARE}.webm"
    assert [p.name for p in plan.thumbnails] == ["thumb-0001.png", "thumb-0002.png"]
    written = write_share(plan)
    assert written == plan.paths()
    with av.open(str(plan.video)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 12 - 5  # from the keyframe at frame 5
    assert (frames[0].width, frames[0].height) == (W, H)
    assert [read_counter(f) for f in frames] == list(range(5, 12))
    assert plan.video.stat().st_mode & 0o777 == 0o600
    assert plan.thumbnails[0].read_bytes().startswith(b"\x89PNG")
    with pytest.raises(FileExistsError):
        write_share(plan)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_share_without_a_keyframe_has_no_video(tmp_path: Path) -> None:
    share = ShareRecording("py101.s2-ab12")
    assert plan_share(share, tmp_path).video is None
    with pytest.raises(MediaError, match="not safe"):
        plan_share(ShareRecording("../x"), tmp_path)


def test_the_transcript_summarises_a_share_in_one_line() -> None:
    from relay.audit_query import Transcript

    lines: list[str] = []
    transcript = Transcript()
    for i, r in enumerate(a_share()):
        fields = {k: v for k, v in r.items() if k not in ("seq", "content")}
        fields["enc"] = b"x" if "content" in r else None
        fields = {k: v for k, v in fields.items() if v is not None}
        lines += transcript.feed(StoredRecord(i + 1, FrameType.EVENT, "s", 0, fields))
    lines += transcript.finish()
    bodies = [line.split("  ", 1)[1] for line in lines]
    assert bodies == [
        f"share {SHARE} started by instructor:alice  [watched by the class; VP8]",
        f"share {SHARE} watched by learner:l1001",
        bodies[2],
        f"share {SHARE} stopped by staff:sam: not now",
    ]
    assert bodies[2].startswith(f"share {SHARE}: 12 frames 320x240 over 1.1 s")
    assert bodies[2].endswith(", 2 thumbnails")


# ---------------------------------------------------------------------------------------
# a share that happened, through a real relay
# ---------------------------------------------------------------------------------------


@pytest.fixture
async def shared(facility: Facility) -> tuple[Facility, str, int]:
    """alice shares a 320x240 test pattern with py101; l1001 watches 15 frames; staff
    sam stops it. Returns the share id and how many frames the learner got."""
    loopback = ("127.0.0.1", 0)
    async with (
        running_relay(facility.home, outside=loopback, inside=loopback) as r,
        joined(facility, r, "instructor:alice") as alice,
        joined(facility, r, "learner:l1001", "pc-01") as ada,
        joined(facility, r, "staff:sam") as sam,
    ):
        pub, answer = await publish(alice)
        assert answer["t"] == "share_answer", answer
        share = answer["share"]
        await ada.recv_type("share_started")
        pc, track = await watch(ada, share)
        got = 0
        for _ in range(15):
            frame = await asyncio.wait_for(track.recv(), 10)
            assert (frame.width, frame.height) == (W, H)
            got += 1
        await sam.send({"t": "share_stop", "id": "s1", "share": share, "reason": "checked"})
        assert (await answer_to(sam, "s1"))["status"] == "delivered"
        await ada.recv_type("share_stopped")
        await pc.close()
        await pub.close()
    return facility, share, got


def run(f: Facility, *args: str) -> tuple[int, str, str]:
    return f.admin("audit", *args)


def ok(f: Facility, *args: str) -> str:
    code, out, err = run(f, *args)
    assert code == 0, err
    return out


def reads(f: Facility) -> list[dict[str, Any]]:
    """The audit.read records (in clear: no key needed)."""
    records = AuditReader(f.home.audit_dir).records(decrypt=False)
    return [r.to_dict() for r in records if r.kind == "audit.read"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.integration
async def test_export_media_writes_a_playable_video_thumbnails_and_a_manifest(
    shared: tuple[Facility, str, int], tmp_path: Path
) -> None:
    f, share, got = shared
    out_dir = tmp_path / "case-21"
    said = await asyncio.to_thread(
        ok,
        f,
        "export",
        "--session",
        "py101",
        "--media",
        str(out_dir),
        "--bundle",
        str(f.bundle("sam")),
    )
    assert f"{share}.webm" in said
    video = out_dir / f"{share}.webm"
    with av.open(str(video)) as container:
        frames = list(container.decode(video=0))
    assert {(fr.width, fr.height) for fr in frames} == {(W, H)}
    assert len(frames) >= got  # every frame a viewer got was recorded first
    counters = [read_counter(fr) for fr in frames[-5:]]
    assert counters == sorted(counters)
    thumbs = sorted((out_dir / share).iterdir())
    assert thumbs
    assert thumbs[0].name == "thumb-0001.png"
    for thumb in thumbs:
        assert thumb.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert thumb.stat().st_mode & 0o777 == 0o600
    manifest = json.loads((out_dir / "py101.media.manifest.json").read_text())
    assert manifest["format"] == "classroom-relay audit media export v1"
    assert manifest["session"] == "py101"
    assert manifest["exported_by"] == "staff:sam"
    names = {e["name"]: e for e in manifest["files"]}
    assert set(names) == {f"{share}.webm", *(f"{share}/{t.name}" for t in thumbs)}
    for name, entry in names.items():
        assert entry["sha256"] == sha256(out_dir / name), name
        assert entry["bytes"] == (out_dir / name).stat().st_size
    (info,) = manifest["shares"]
    assert info["share"] == share
    assert info["publisher"] == "instructor:alice"
    assert info["watchers"] == ["learner:l1001"]
    assert (info["stopped_by"], info["reason"]) == ("staff:sam", "checked")
    assert info["frames"] >= got
    assert info["thumbnails"] == len(thumbs)
    screen = [r for r in f.audit_records() if str(r["kind"]).startswith("screen.")]
    assert manifest["records"] == len(screen)
    assert manifest["first_seq"] == screen[0]["seq"]
    assert manifest["last_seq"] == screen[-1]["seq"]
    assert manifest["checkpoint"]["signature_valid"] is True
    assert manifest["checkpoint_covers_export"] is True
    # The read was recorded, before anything was written.
    (read,) = reads(f)
    assert read["actor"] == "staff:sam"
    assert read["detail"] == f"audit export --session py101 --media {out_dir}"
    # Never overwritten.
    before = video.read_bytes()
    code, _, err = await asyncio.to_thread(
        run, f, "export", "--session", "py101", "--media", str(out_dir)
    )
    assert code == 2
    assert "never overwrites" in err
    assert video.read_bytes() == before


@pytest.mark.integration
async def test_show_reads_a_share_well_and_lists_recordings(
    shared: tuple[Facility, str, int],
) -> None:
    f, share, got = shared
    out = await asyncio.to_thread(ok, f, "show", "py101")
    lines = [line.split("  ", 1)[1] for line in out.splitlines()]
    started = next(
        i for i, x in enumerate(lines) if x.startswith(f"share {share} started by instructor:alice")
    )
    assert "watched by the class" in lines[started]
    watched = lines.index(f"share {share} watched by learner:l1001 (at pc-01)")
    (summary,) = [x for x in lines if x.startswith(f"share {share}: ")]
    assert " frames 320x240 over " in summary
    assert "thumbnail" in summary
    frames = int(summary.split(": ", 1)[1].split(" ", 1)[0])
    assert frames >= got
    stopped = lines.index(f"share {share} stopped by staff:sam: checked")
    assert started < watched < lines.index(summary) < stopped
    assert not [x for x in lines if "screen.media" in x or "screen.thumbnail" in x]
    # --media lists the recordings (clear fields only: no staff key needed).
    protect_staff_key(f)
    listing = await asyncio.to_thread(ok, f, "show", "py101", "--media")
    assert f"share {share}  started " in listing
    assert "by instructor:alice" in listing
    assert "watched by the class: learner:l1001" in listing
    assert "by staff:sam: checked" in listing
    as_json = await asyncio.to_thread(ok, f, "show", "py101", "--media", "--json")
    (info,) = [json.loads(x) for x in as_json.splitlines()]
    assert info["share"] == share
    assert info["frames"] == frames
    assert info["sizes"] == ["320x240"]
    assert [r["detail"] for r in reads(f)] == [
        "audit show py101",
        "audit show py101 --media",
        "audit show py101 --media --json",
    ]


@pytest.mark.integration
async def test_export_media_needs_the_staff_key(
    shared: tuple[Facility, str, int], tmp_path: Path
) -> None:
    f, _, _ = shared
    protect_staff_key(f)
    out_dir = tmp_path / "nokey"
    code, out, err = await asyncio.to_thread(
        run, f, "export", "--session", "py101", "--media", str(out_dir)
    )
    assert code == 2
    assert out == ""
    assert "passphrase" in err.lower()
    assert not out_dir.exists()
    assert reads(f) == []
    # A bundle that is not staff's is refused too.
    code, _, err = await asyncio.to_thread(
        run,
        f,
        "export",
        "--session",
        "py101",
        "--media",
        str(out_dir),
        "--bundle",
        str(f.bundle("alice")),
    )
    assert code != 0
    assert "not a staff bundle" in err
    assert not out_dir.exists()
