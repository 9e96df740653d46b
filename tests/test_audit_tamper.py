"""The tamper suite: every way of changing a written audit log is detected, and the first
problem reported is the right one (segment, record, byte).

The log is written by the real :class:`~relay.audit_store.AuditStore` (several segments,
a checkpoint every 50 records). Each tampering is tried at the start, in the middle and
at the end of the log.

Golden vectors (``tests/audit_vectors``, kept beside each other like transparency-dev's
tampered proofs): a tiny deterministic log, copies of it tampered in each way, and the
first problem each must report (``expected.json``). :func:`write_vectors` makes them;
``python -m tests.test_audit_tamper`` rewrites them after a deliberate format change.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from relay.audit_cli import read_tombstones
from relay.audit_store import CheckpointSink
from relay.auditlog import (
    MAGIC,
    ChainState,
    Checkpoint,
    FrameDamage,
    FrameType,
    RecordEncoder,
    SegmentSource,
    Tombstone,
    VerifyReport,
    chain_hash,
    genesis_hash,
    load_public_ed25519,
    pack_body,
    raw_public,
    read_frames,
    segment_name,
    unpack_body,
    verify_log,
)
from tests.audit_logs import (
    OTHER_SIGNING,
    SIGNING,
    SINK_NAME,
    STAFF,
    T0,
    FrameAt,
    LogDir,
    chat_events,
    delete_frame,
    flip_byte,
    frame_bytes,
    frames,
    insert_before,
    read_frame,
    rewrite_record,
    swap_frames,
    truncate_at,
    verify,
    write_log,
)

POSITIONS = ("start", "middle", "end")
EVENTS = 400


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> LogDir:
    return write_log(tmp_path_factory.mktemp("audit") / "log", chat_events(EVENTS))


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> LogDir:
    """Another log of the same events (same segment boundaries, another log id)."""
    return write_log(tmp_path_factory.mktemp("audit") / "other", chat_events(EVENTS))


@pytest.fixture
def log(generated: LogDir, tmp_path: Path) -> LogDir:
    return generated.copy(tmp_path / "log")


def _segments(log: LogDir) -> list[str]:
    return sorted({f.segment for f in frames(log)})


def _record_at(log: LogDir, position: str) -> FrameAt:
    """Record 1, an event in the middle segment, or the last record."""
    all_frames = frames(log)
    if position == "start":
        return all_frames[0]
    if position == "end":
        return all_frames[-1]
    names = _segments(log)
    middle = [f for f in all_frames if f.segment == names[len(names) // 2]]
    return next(f for f in middle[4:] if f.ftype == FrameType.EVENT)


def _checkpoint_at(log: LogDir, position: str) -> FrameAt:
    cps = [f for f in frames(log) if f.ftype == FrameType.CHECKPOINT]
    if position == "start":
        return cps[0]
    if position == "end":
        return cps[-1]
    names = _segments(log)
    return next(f for f in cps if f.segment == names[len(names) // 2])


def _problem(report: VerifyReport) -> Any:
    assert not report.ok, "the tampering was not detected"
    return report.problems[0]


def test_the_generated_log_verifies(log: LogDir) -> None:
    report = verify(log)
    assert report.ok, report.problems
    assert len(_segments(log)) >= 4
    assert report.records == len(frames(log))
    assert report.records > EVENTS
    assert report.checkpoints >= EVENTS // 50
    assert report.unsigned_tail == 0
    assert report.sink is not None
    assert report.sink.seq == report.last_seq - 1


@pytest.mark.parametrize("position", POSITIONS)
def test_a_flipped_byte_is_reported_at_its_record(log: LogDir, position: str) -> None:
    target = _record_at(log, position)
    flip_byte(log, target, at=target.size - 6)  # inside the body
    p = _problem(verify(log))
    assert (p.where, p.seq, p.offset) == (target.segment, target.seq, target.offset)
    assert "checksum" in p.what


@pytest.mark.parametrize("at", [0, 3, 4, 11, 12])
def test_a_flipped_byte_in_length_seq_type_or_crc_is_reported_at_its_record(
    log: LogDir, at: int
) -> None:
    target = _record_at(log, "middle")
    flip_byte(log, target, at=at if at < 12 else target.size - 1)
    p = _problem(verify(log))
    assert (p.where, p.seq, p.offset) == (target.segment, target.seq, target.offset)


def test_an_altered_record_with_a_fixed_crc_is_caught_by_the_next_checkpoint(
    log: LogDir,
) -> None:
    target = _record_at(log, "middle")
    record = bytearray(read_frame(log, target)[4:-4])
    record[-3] ^= 0x01
    rewrite_record(log, target, bytes(record))
    p = _problem(verify(log))
    nxt = next(f for f in frames(log) if f.ftype == FrameType.CHECKPOINT and f.seq > target.seq)
    assert (p.where, p.seq, p.offset) == (nxt.segment, nxt.seq, nxt.offset)
    first, last = (int(n) for n in p.what.split("a record in ")[1].split()[0].split("-"))
    assert first <= target.seq <= last


@pytest.mark.parametrize("position", POSITIONS)
def test_a_deleted_record_is_reported_by_its_number(log: LogDir, position: str) -> None:
    target = _record_at(log, position)
    delete_frame(log, target)
    p = _problem(verify(log))
    if position == "end":  # nothing follows it: the sink shows it existed
        assert (p.where, p.seq, p.offset) == (SINK_NAME, target.seq, None)
        assert "cut off" in p.what
    else:
        assert (p.where, p.seq, p.offset) == (target.segment, target.seq, target.offset)
        assert "removed" in p.what


@pytest.mark.parametrize("position", POSITIONS)
def test_an_inserted_record_is_reported(log: LogDir, position: str) -> None:
    target = _record_at(log, position)
    insert_before(log, target, read_frame(log, target))  # a second record numbered N
    p = _problem(verify(log))
    assert (p.where, p.seq, p.offset) == (target.segment, target.seq, target.end)
    assert "inserted" in p.what


def test_an_inserted_forged_event_is_reported(log: LogDir) -> None:
    target = _record_at(log, "middle")
    body = pack_body({"kind": "message.delivered", "code": "CR300I", "time": T0})
    forged = frame_bytes(target.seq.to_bytes(8, "big") + bytes([FrameType.EVENT]) + body)
    insert_before(log, target, forged)
    p = _problem(verify(log))
    assert (p.where, p.seq) == (target.segment, target.seq)
    assert p.offset == target.offset + len(forged)


@pytest.mark.parametrize("position", POSITIONS)
def test_swapped_records_are_reported_at_the_first(log: LogDir, position: str) -> None:
    all_frames = frames(log)
    target = _record_at(log, position)
    i = all_frames.index(target)
    a, b = (all_frames[i - 1], target) if position == "end" else (target, all_frames[i + 1])
    swap_frames(log, a, b)
    p = _problem(verify(log))
    assert (p.where, p.seq, p.offset) == (a.segment, a.seq, a.offset)
    assert "reordered" in p.what


@pytest.mark.parametrize("position", POSITIONS)
def test_a_truncated_tail_is_reported_by_the_sink(log: LogDir, position: str) -> None:
    target = _record_at(log, position)
    last = frames(log)[-1].seq
    truncate_at(log, target)
    p = _problem(verify(log))
    assert (p.where, p.seq, p.offset) == (SINK_NAME, target.seq, None)
    assert f"records {target.seq}-{last} were cut off" in p.what


def test_a_tail_cut_inside_a_record_is_reported_at_that_record(log: LogDir) -> None:
    target = _record_at(log, "end")
    path = log.segment(target.segment)
    path.write_bytes(path.read_bytes()[: target.end - 3])
    p = _problem(verify(log))
    assert (p.where, p.seq, p.offset) == (target.segment, target.seq, target.offset)


@pytest.mark.parametrize("position", POSITIONS)
def test_a_segment_of_another_log_is_reported_at_that_segment(
    log: LogDir, other: LogDir, position: str
) -> None:
    names = _segments(log)
    assert names == _segments(other)
    name = {"start": names[0], "middle": names[len(names) // 2], "end": names[-1]}[position]
    shutil.copyfile(other.segment(name), log.segment(name))
    p = _problem(verify(log))
    first = int(name.split(".")[0])
    assert (p.where, p.seq, p.offset) == (name, first, len(MAGIC))
    assert "another log" in p.what


def test_a_regenerated_segment_is_reported_at_its_first_checkpoint(log: LogDir) -> None:
    """The attacker rewrites a middle segment record by record (right log id, right chain
    before it, valid CRCs) but cannot sign: its checkpoint gives it away."""
    names = _segments(log)
    name = names[len(names) // 2]
    seg = [f for f in frames(log) if f.segment == name]
    first_event = next(f for f in seg if f.ftype == FrameType.EVENT)
    record = bytearray(read_frame(log, first_event)[4:-4])
    record[-1] ^= 0x01  # the forged event
    rewrite_record(log, first_event, bytes(record))
    # ... and re-sign every checkpoint of the segment with a key of its own
    data = log.segment(name).read_bytes()
    header = next(iter(read_frames(data)))
    assert not isinstance(header, FrameDamage)
    chain = unpack_body(header.body, "header")["prev"]
    for f in read_frames(data):
        assert not isinstance(f, FrameDamage)
        if f.ftype == FrameType.CHECKPOINT:
            cp = Checkpoint.from_fields(unpack_body(f.body, "cp"))
            forged = Checkpoint.sign(OTHER_SIGNING, cp.log_id, cp.seq, chain, cp.time)
            rewrite_record(log, _at(log, f.seq), f.record[:9] + forged.to_bytes())
            data = log.segment(name).read_bytes()
            break
        chain = chain_hash(chain, f.record)
    cp_frame = next(f for f in seg if f.ftype == FrameType.CHECKPOINT)
    p = _problem(verify(log))
    assert (p.where, p.seq, p.offset) == (name, cp_frame.seq, cp_frame.offset)
    assert "signature" in p.what


def _at(log: LogDir, seq: int) -> FrameAt:
    return next(f for f in frames(log) if f.seq == seq)


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("how", ["other key", "altered chain", "altered seq"])
def test_a_forged_checkpoint_is_reported_at_that_record(
    log: LogDir, position: str, how: str
) -> None:
    target = _checkpoint_at(log, position)
    record = read_frame(log, target)[4:-4]
    cp = Checkpoint.from_fields(unpack_body(record[9:], "cp"))
    if how == "other key":
        forged = Checkpoint.sign(OTHER_SIGNING, cp.log_id, cp.seq, cp.chain, cp.time)
    elif how == "altered chain":
        forged = Checkpoint(cp.log_id, cp.seq, bytes(32), cp.time, cp.signer, cp.signature)
    else:
        forged = Checkpoint(cp.log_id, cp.seq - 1, cp.chain, cp.time, cp.signer, cp.signature)
    rewrite_record(log, target, record[:9] + forged.to_bytes())
    p = _problem(verify(log))
    assert (p.where, p.seq, p.offset) == (target.segment, target.seq, target.offset)
    assert "signature is not valid" in p.what


def test_a_forged_sink_is_reported(log: LogDir) -> None:
    cp = CheckpointSink(log.sink).read()
    assert cp is not None
    CheckpointSink(log.sink).write(
        Checkpoint.sign(OTHER_SIGNING, cp.log_id, cp.seq + 10, cp.chain, cp.time)
    )
    p = _problem(verify(log))
    assert (p.where, p.seq, p.offset) == (SINK_NAME, cp.seq + 10, None)
    assert "signature" in p.what


def test_a_sink_of_an_older_checkpoint_still_verifies_but_a_missing_one_does_not(
    log: LogDir,
) -> None:
    """An older genuine checkpoint in the sink is consistent (rolling the sink back is
    why the checkpoint is published elsewhere); an empty sink is a problem."""
    cps = [f for f in frames(log) if f.ftype == FrameType.CHECKPOINT]
    older = Checkpoint.from_fields(unpack_body(read_frame(log, cps[2])[13:-4], "cp"))
    CheckpointSink(log.sink).write(older)
    assert verify(log).ok
    log.sink.unlink()
    p = _problem(verify(log))
    assert p.where == SINK_NAME
    assert "no checkpoint" in p.what


def test_verifying_with_another_key_fails_at_the_sink(log: LogDir) -> None:
    p = _problem(verify(log, signing=OTHER_SIGNING))
    assert p.where == SINK_NAME
    assert "signature" in p.what


# ---------------------------------------------------------------------------------------
# golden vectors
# ---------------------------------------------------------------------------------------

VECTORS = Path(__file__).parent / "audit_vectors"
VECTOR_LOG_ID = bytes(range(100, 116))
FOREIGN_LOG_ID = bytes(range(200, 216))
VECTOR_SEGMENTS = 3
EVENTS_PER_SEGMENT = 3

Files = dict[str, bytes]
"""Relative path in a case directory -> bytes."""


def _deterministic(seed: bytes) -> tuple[Callable[[int], bytes], Callable[[], X25519PrivateKey]]:
    counter = itertools.count()

    def random_bytes(n: int) -> bytes:
        return hashlib.sha256(seed + next(counter).to_bytes(8, "big")).digest()[:n]

    def new_ephemeral() -> X25519PrivateKey:
        return X25519PrivateKey.from_private_bytes(random_bytes(32))

    return random_bytes, new_ephemeral


def vector_log(log_id: bytes, seed: bytes) -> tuple[Files, Checkpoint]:
    """Three segments of six records (header, key, three events, checkpoint)."""
    random_bytes, new_ephemeral = _deterministic(seed)
    state = ChainState(log_id, 0, genesis_hash(log_id))
    enc = RecordEncoder(
        state, staff_public=STAFF.public_key(), random_bytes=random_bytes,
        new_ephemeral=new_ephemeral,
    )  # fmt: skip
    events = chat_events(VECTOR_SEGMENTS * EVENTS_PER_SEGMENT)
    files: Files = {}
    cp: Checkpoint | None = None
    for s in range(VECTOR_SEGMENTS):
        out: list[bytes] = []
        name = segment_name(state.seq + 1)
        enc.segment_start(name, T0 + 10 * s, out)
        for event in events[s * EVENTS_PER_SEGMENT : (s + 1) * EVENTS_PER_SEGMENT]:
            enc.event(event, out)
        cp = enc.checkpoint(SIGNING, T0 + 10 * s + 5, out)
        files[f"segments/{name}"] = MAGIC + b"".join(out)
    assert cp is not None
    files["sink"] = cp.to_bytes()
    return files, cp


def _frames_of(data: bytes) -> list[FrameAt]:
    out = []
    for f in read_frames(data):
        assert not isinstance(f, FrameDamage)
        out.append(FrameAt("", f.seq, f.ftype, f.offset, f.end))
    return out


def _chain_after(files: Files, last: int) -> bytes:
    chain = genesis_hash(VECTOR_LOG_ID)
    for name in sorted(n for n in files if n.startswith("segments/")):
        for f in read_frames(files[name]):
            assert not isinstance(f, FrameDamage)
            if f.seq > last:
                return chain
            chain = chain_hash(chain, f.record)
    return chain


def _tombstone(files: Files, seg: str, first: int, last: int, key: Any = SIGNING) -> Files:
    tomb = Tombstone.sign(
        key,
        log_id=VECTOR_LOG_ID,
        first=first,
        last=last,
        before=_chain_after(files, first - 1),
        after=_chain_after(files, last),
        time=T0 + 1000,
        reason="retention: every record older than 365 days",
        segments=[(seg, hashlib.sha256(files[f"segments/{seg}"]).hexdigest())],
    )
    out = {k: v for k, v in files.items() if k != f"segments/{seg}"}
    out[f"tombstones/{tomb.file_name}"] = pack_body(tomb.to_fields())
    return out


def vector_cases() -> dict[str, tuple[str, Files, dict[str, Any] | None]]:
    """name -> (what was done, files, expected first problem or None)."""
    good, sink_cp = vector_log(VECTOR_LOG_ID, b"vector")
    foreign, _ = vector_log(FOREIGN_LOG_ID, b"foreign")
    names = sorted(n for n in good if n.startswith("segments/"))
    s1, s2, s3 = (n.removeprefix("segments/") for n in names)
    mid = good[f"segments/{s2}"]
    mid_frames = _frames_of(mid)
    by_seq = {f.seq: f for f in mid_frames}
    r9, r10 = by_seq[9], by_seq[10]
    r12 = by_seq[12]
    last_seg = good[f"segments/{s3}"]
    r15 = next(f for f in _frames_of(last_seg) if f.seq == 15)

    def with_mid(data: bytes) -> Files:
        return {**good, f"segments/{s2}": data}

    def problem(where: str, seq: int | None, offset: int | None) -> dict[str, Any]:
        return {"where": where, "seq": seq, "offset": offset}

    flipped = bytearray(mid)
    flipped[r9.end - 6] ^= 0x40
    cp12 = Checkpoint.from_fields(unpack_body(mid[r12.offset + 13 : r12.end - 4], "cp"))
    forged12 = Checkpoint.sign(OTHER_SIGNING, cp12.log_id, cp12.seq, cp12.chain, cp12.time)
    forged_frame = frame_bytes(mid[r12.offset + 4 : r12.offset + 13] + forged12.to_bytes())
    forged_sink = Checkpoint.sign(
        OTHER_SIGNING, sink_cp.log_id, sink_cp.seq, sink_cp.chain, sink_cp.time
    )
    tomb_mid = f"{7:020d}-{12:020d}.tomb"
    return {
        "good": ("the log as written", good, None),
        "gap_start": (
            "segment 1 removed by retention, a signed tombstone explains records 1-6",
            _tombstone(good, s1, 1, 6),
            None,
        ),
        "gap_middle": (
            "segment 2 removed by retention, a signed tombstone explains records 7-12",
            _tombstone(good, s2, 7, 12),
            None,
        ),
        "gap_unexplained": (
            "segment 2 deleted, no tombstone",
            {k: v for k, v in good.items() if k != f"segments/{s2}"},
            problem(s3, 7, None),
        ),
        "gap_forged_tombstone": (
            "segment 2 deleted, a tombstone signed with another key",
            _tombstone(good, s2, 7, 12, OTHER_SIGNING),
            problem(tomb_mid, 7, None),
        ),
        "flipped_byte": (
            "one bit of record 9's body flipped",
            with_mid(bytes(flipped)),
            problem(s2, 9, r9.offset),
        ),
        "deleted_record": (
            "record 9 deleted",
            with_mid(mid[: r9.offset] + mid[r9.end :]),
            problem(s2, 9, r9.offset),
        ),
        "inserted_record": (
            "a copy of record 9 inserted before it",
            with_mid(mid[: r9.offset] + mid[r9.offset : r9.end] + mid[r9.offset :]),
            problem(s2, 9, r9.end),
        ),
        "swapped_records": (
            "records 9 and 10 swapped",
            with_mid(
                mid[: r9.offset]
                + mid[r10.offset : r10.end]
                + mid[r9.offset : r9.end]
                + mid[r10.end :]
            ),
            problem(s2, 9, r9.offset),
        ),
        "truncated_tail": (
            "the log cut after record 14",
            {**good, f"segments/{s3}": last_seg[: r15.offset]},
            problem(SINK_NAME, 15, None),
        ),
        "replaced_segment": (
            "segment 2 replaced by segment 2 of another log",
            with_mid(foreign[f"segments/{s2}"]),
            problem(s2, 7, len(MAGIC)),
        ),
        "forged_checkpoint": (
            "the checkpoint record 12 re-signed with another key",
            with_mid(mid[: r12.offset] + forged_frame + mid[r12.end :]),
            problem(s2, 12, r12.offset),
        ),
        "forged_sink": (
            "the checkpoint sink re-signed with another key",
            {**good, "sink": forged_sink.to_bytes()},
            problem(SINK_NAME, sink_cp.seq, None),
        ),
    }


def write_vectors(directory: Path) -> None:
    """(Re)write the golden vectors: one directory per case, and expected.json."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    expected: dict[str, Any] = {}
    for name, (what, files, problem) in vector_cases().items():
        for rel, data in files.items():
            path = directory / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        expected[name] = {"what": what, "ok": problem is None, "problem": problem}
    keys = {
        "signing_public": base64.b64encode(raw_public(SIGNING.public_key())).decode(),
        "staff_private_hex": STAFF.private_bytes_raw().hex(),
        "log_id_hex": VECTOR_LOG_ID.hex(),
    }
    (directory / "keys.json").write_text(json.dumps(keys, indent=2) + "\n")
    (directory / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")


def verify_vector(case: Path) -> VerifyReport:
    keys = json.loads((case.parent / "keys.json").read_text())
    segments = [
        SegmentSource(p.name, p.read_bytes) for p in sorted((case / "segments").glob("*.seg"))
    ]
    tombstones, bad = read_tombstones(case)
    assert bad is None
    return verify_log(
        segments,
        signing_key=load_public_ed25519(base64.b64decode(keys["signing_public"])),
        tombstones=tombstones,
        sink=CheckpointSink(case / "sink").read(),
        sink_name=SINK_NAME,
    )


def _expected() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((VECTORS / "expected.json").read_text())
    return loaded


VECTOR_CASES = (
    "good",
    "gap_start",
    "gap_middle",
    "gap_unexplained",
    "gap_forged_tombstone",
    "flipped_byte",
    "deleted_record",
    "inserted_record",
    "swapped_records",
    "truncated_tail",
    "replaced_segment",
    "forged_checkpoint",
    "forged_sink",
)


@pytest.mark.parametrize("case", VECTOR_CASES)
def test_the_committed_vectors_verify_as_recorded(case: str) -> None:
    assert sorted(_expected()) == sorted(VECTOR_CASES)
    want = _expected()[case]
    report = verify_vector(VECTORS / case)
    assert report.ok is want["ok"], report.problems
    if not report.ok:
        p = report.problems[0]
        assert {"where": p.where, "seq": p.seq, "offset": p.offset} == want["problem"], p
    elif case.startswith("gap"):
        assert len(report.gaps) == 1


def test_the_vectors_are_reproducible(tmp_path: Path) -> None:
    """The same keys and injected randomness give the same bytes: a change to the format
    shows up here, and the vectors must then be rewritten deliberately."""
    write_vectors(tmp_path / "v")
    made = sorted(p.relative_to(tmp_path / "v") for p in (tmp_path / "v").rglob("*") if p.is_file())
    kept = sorted(p.relative_to(VECTORS) for p in VECTORS.rglob("*") if p.is_file())
    assert made == [p for p in kept if p.name != "README.md"]
    for rel in made:
        assert (tmp_path / "v" / rel).read_bytes() == (VECTORS / rel).read_bytes(), rel


if __name__ == "__main__":
    write_vectors(Path(sys.argv[1]) if len(sys.argv) > 1 else VECTORS)
