"""Audit logs for the tests: written by the real :class:`relay.audit_store.AuditStore`,
read back frame by frame, verified, and tampered with in the ways an attacker would."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from relay.audit import AuditEvent, EventKind
from relay.audit_cli import read_tombstones
from relay.audit_store import AuditSettings, AuditStore, CheckpointSink, list_segments
from relay.auditlog import MAGIC, FrameDamage, SegmentSource, VerifyReport, read_frames, verify_log

SIGNING = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
STAFF = X25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
OTHER_SIGNING = Ed25519PrivateKey.from_private_bytes(bytes(range(64, 96)))
SETTINGS = AuditSettings(
    segment_max_bytes=4096, checkpoint_records=50, checkpoint_interval_s=1e6, key_rotate_s=1e6
)
SINK_NAME = "sink"
T0 = 1_790_000_000.0


def chat_events(count: int, start: float = T0) -> list[AuditEvent]:
    return [
        AuditEvent(
            kind=EventKind.MESSAGE_DELIVERED,
            time=start + i,
            session=f"py10{i % 3}",
            actor="learner:l1001",
            msg_id=f"m-{i}",
            seq=i + 1,
            channel="class",
            decision="delivered",
            content=f"message {i} " + "x" * (i % 40),
        )
        for i in range(count)
    ]


@dataclass(frozen=True)
class LogDir:
    """A log on disk: ``root/audit`` (segments/, tombstones/) and ``root/sink/latest``."""

    root: Path

    @property
    def audit(self) -> Path:
        return self.root / "audit"

    @property
    def sink(self) -> Path:
        return self.root / "sink" / "latest"

    def segment(self, name: str) -> Path:
        return self.audit / "segments" / name

    def copy(self, to: Path) -> LogDir:
        shutil.copytree(self.root, to)
        return LogDir(to)


def write_log(
    root: Path,
    events: list[AuditEvent],
    *,
    settings: AuditSettings = SETTINGS,
    batch: int = 7,
    clock_start: float = T0,
) -> LogDir:
    """Append ``events`` with the real store (group commit, rotation, checkpoints)."""
    log = LogDir(root)
    log.sink.parent.mkdir(parents=True, exist_ok=True)
    ticks = itertools.count()

    def clock() -> float:
        return clock_start + next(ticks) * 0.01

    async def run() -> None:
        store = AuditStore(
            log.audit,
            signing_key=SIGNING,
            staff_public=STAFF.public_key(),
            sink_path=log.sink,
            settings=settings,
            clock=clock,
        )
        try:
            for i in range(0, len(events), batch):
                await store.submit(events[i : i + batch])
        finally:
            await store.close()

    asyncio.run(run())
    return log


@dataclass(frozen=True)
class FrameAt:
    segment: str
    seq: int
    ftype: int
    offset: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.offset


def frames(log: LogDir) -> list[FrameAt]:
    out = []
    for path in list_segments(log.audit):
        for f in read_frames(path.read_bytes()):
            assert not isinstance(f, FrameDamage), f
            out.append(FrameAt(path.name, f.seq, f.ftype, f.offset, f.end))
    return out


def verify(log: LogDir, *, signing: Ed25519PrivateKey = SIGNING) -> VerifyReport:
    segments = [SegmentSource(p.name, p.read_bytes) for p in list_segments(log.audit)]
    tombstones, bad = read_tombstones(log.audit)
    assert bad is None, bad
    return verify_log(
        segments,
        signing_key=signing.public_key(),
        tombstones=tombstones,
        sink=CheckpointSink(log.sink).read(),
        sink_name=SINK_NAME,
    )


# -- tampering -----------------------------------------------------------------------------


def frame_bytes(record: bytes) -> bytes:
    return struct.pack(">I", len(record)) + record + struct.pack(">I", zlib.crc32(record))


def read_frame(log: LogDir, f: FrameAt) -> bytes:
    return log.segment(f.segment).read_bytes()[f.offset : f.end]


def splice(log: LogDir, segment: str, start: int, end: int, data: bytes) -> None:
    path = log.segment(segment)
    old = path.read_bytes()
    path.write_bytes(old[:start] + data + old[end:])


def flip_byte(log: LogDir, f: FrameAt, at: int) -> None:
    path = log.segment(f.segment)
    data = bytearray(path.read_bytes())
    data[f.offset + at] ^= 0x40
    path.write_bytes(bytes(data))


def delete_frame(log: LogDir, f: FrameAt) -> None:
    splice(log, f.segment, f.offset, f.end, b"")


def insert_before(log: LogDir, f: FrameAt, data: bytes) -> None:
    splice(log, f.segment, f.offset, f.offset, data)


def swap_frames(log: LogDir, a: FrameAt, b: FrameAt) -> None:
    assert a.segment == b.segment
    assert a.end == b.offset
    first, second = read_frame(log, a), read_frame(log, b)
    splice(log, a.segment, a.offset, b.end, second + first)


def truncate_at(log: LogDir, f: FrameAt) -> None:
    """Cut the log from record ``f`` on (later segments too)."""
    path = log.segment(f.segment)
    path.write_bytes(path.read_bytes()[: f.offset])
    for later in list_segments(log.audit):
        if later.name > f.segment:
            later.unlink()


def rewrite_record(log: LogDir, f: FrameAt, record: bytes) -> None:
    """Replace record ``f`` by ``record``, with a correct length and CRC."""
    splice(log, f.segment, f.offset, f.end, frame_bytes(record))


def segment_bytes(log: LogDir, name: str) -> bytes:
    data = log.segment(name).read_bytes()
    assert data.startswith(MAGIC)
    return data
