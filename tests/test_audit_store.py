"""relay.audit_store: group commit, checkpoints, rotation, failure and recovery, torn-tail
repair, the writer lock. The storage adapter (``SegmentFile``) is injected where a test
needs to see or break the calls that reach the disk; the bytes still go to real files, and
every log is checked with the verifier and read back with the staff key."""

from __future__ import annotations

import asyncio
import errno
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from relay.audit import AuditEvent, EventKind
from relay.audit_read import AuditReader, StoredRecord
from relay.audit_store import (
    AuditSettings,
    AuditStore,
    CheckpointSink,
    DiskSegment,
    SegmentFile,
    list_segments,
)
from relay.auditlog import (
    MAGIC,
    Checkpoint,
    Frame,
    FrameType,
    SegmentSource,
    VerifyReport,
    read_frames,
    segment_first_seq,
    verify_log,
)
from relay.errors import AuditError, AuditLogError

# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Keys:
    signing: Ed25519PrivateKey
    staff: X25519PrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(Ed25519PrivateKey.generate(), X25519PrivateKey.generate())


class Clock:
    """An injected clock the test moves by hand."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Storage:
    """The opener of :class:`RecordedSegment`: real files, every call written down, and
    faults on demand (a failing append or sync, or a sync held until the test lets go)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        """``append``, ``synced`` (after the fsync returned), ``truncate``, ``close``; the
        test adds its own markers (``receipt ...``) to the same list."""
        self.fail: OSError | None = None
        self.fail_on = "sync"
        self.hold: threading.Event | None = None
        """When set, ``sync`` waits for this event (at most 10 s) before syncing."""
        self.syncing = threading.Event()
        self.lock = threading.Lock()

    def note(self, what: str) -> None:
        with self.lock:
            self.calls.append(what)

    def __call__(self, path: Path, create: bool) -> SegmentFile:
        return RecordedSegment(self, DiskSegment(path, create=create))


class RecordedSegment:
    def __init__(self, storage: Storage, disk: DiskSegment) -> None:
        self.storage = storage
        self.disk = disk

    def _fault(self, call: str) -> None:
        if self.storage.fail is not None and self.storage.fail_on == call:
            raise self.storage.fail

    def append(self, data: bytes) -> None:
        self.storage.note("append")
        self.disk.append(data)
        self._fault("append")

    def sync(self) -> None:
        hold = self.storage.hold
        if hold is not None:
            self.storage.syncing.set()
            hold.wait(10.0)
        self._fault("sync")
        self.disk.sync()
        self.storage.note("synced")

    def truncate(self, size: int) -> None:
        self.storage.note("truncate")
        self.disk.truncate(size)

    def close(self) -> None:
        self.storage.note("close")
        self.disk.close()


def open_store(
    tmp_path: Path,
    keys: Keys,
    *,
    settings: AuditSettings | None = None,
    clock: Callable[[], float] | None = None,
    opener: Storage | None = None,
) -> AuditStore:
    sink = tmp_path / "sink" / "latest"
    sink.parent.mkdir(exist_ok=True)
    extra: dict[str, object] = {}
    if clock is not None:
        extra["clock"] = clock
    if opener is not None:
        extra["opener"] = opener
    return AuditStore(
        tmp_path / "audit",
        signing_key=keys.signing,
        staff_public=keys.staff.public_key(),
        sink_path=sink,
        settings=settings or AuditSettings(),
        **extra,  # type: ignore[arg-type]
    )


def sink_of(tmp_path: Path) -> Checkpoint | None:
    return CheckpointSink(tmp_path / "sink" / "latest").read()


def verify(tmp_path: Path, keys: Keys) -> VerifyReport:
    sources = [
        SegmentSource(p.name, lambda p=p: p.read_bytes())  # type: ignore[misc]
        for p in list_segments(tmp_path / "audit")
    ]
    return verify_log(sources, signing_key=keys.signing.public_key(), sink=sink_of(tmp_path))


def all_records(tmp_path: Path, keys: Keys | None) -> list[StoredRecord]:
    reader = AuditReader(tmp_path / "audit", keys.staff if keys else None)
    return list(reader.records(events_only=False))


def contents(tmp_path: Path, keys: Keys) -> list[str]:
    """The decrypted ``content`` of every event that has one, in order."""
    return [
        str(r.contents["content"])
        for r in all_records(tmp_path, keys)
        if r.contents is not None and "content" in r.contents
    ]


def kinds(tmp_path: Path) -> list[str]:
    return [r.kind for r in all_records(tmp_path, None) if r.ftype is FrameType.EVENT]


def chat(text: str, clock: Callable[[], float] | None = None) -> AuditEvent:
    return AuditEvent(
        kind=EventKind.MESSAGE_DELIVERED,
        time=clock() if clock else 1.0,
        session="py101",
        actor="instructor:alice",
        msg_id=f"m-{len(text)}",
        channel="class",
        content=text,
    )


def as_future(receipt: Awaitable[None]) -> asyncio.Future[None]:
    assert isinstance(receipt, asyncio.Future)
    return receipt


async def until(cond: Callable[[], bool], what: str, limit_s: float = 10.0) -> None:
    """Wait (bounded) until ``cond()`` holds."""
    for _ in range(int(limit_s / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


async def write(store: AuditStore, texts: Sequence[str]) -> None:
    """One commit group per text, each awaited."""
    for text in texts:
        await asyncio.wait_for(store.submit((chat(text),)), 10.0)


def assert_ok(report: VerifyReport) -> None:
    assert report.ok, [str(p) for p in report.problems]


# ---------------------------------------------------------------------------------------
# group commit
# ---------------------------------------------------------------------------------------


async def test_one_receipt_per_group_resolved_only_after_fsync(tmp_path: Path, keys: Keys) -> None:
    storage = Storage()
    store = open_store(tmp_path, keys, opener=storage)
    opened = list(storage.calls)
    assert opened[-1] == "synced"  # the opening records are durable before the first submit
    storage.hold = threading.Event()
    try:
        r1 = as_future(store.submit((chat("a"), chat("b"))))
        assert as_future(store.submit((chat("c"),))) is r1  # the same group, the same receipt
        r1.add_done_callback(lambda _: storage.note("receipt 1"))
        await until(storage.syncing.is_set, "the first group's fsync")
        # The group is appended and its fsync has begun but not returned: no receipt yet.
        assert not r1.done()
        r2 = as_future(store.submit((chat("d"),)))
        assert r2 is not r1
        assert as_future(store.submit((chat("e"),))) is r2
        r2.add_done_callback(lambda _: storage.note("receipt 2"))
        await asyncio.sleep(0.05)
        assert not r1.done()
        assert not r2.done()
    finally:
        storage.hold.set()
    await asyncio.wait_for(asyncio.gather(r1, r2), 10.0)
    assert store.commits == 2
    assert store.records_written == 5
    after = storage.calls[len(opened) :]
    appends = [i for i, call in enumerate(after) if call == "append"]
    syncs = [i for i, call in enumerate(after) if call == "synced"]
    assert len(appends) == 2  # one append and one fsync per group
    assert len(syncs) == 2
    # Each receipt resolves after its group's fsync returned (the next group may already
    # be on its way to the disk by the time the receipt's callbacks run).
    assert appends[0] < syncs[0] < appends[1] < syncs[1]
    assert syncs[0] < after.index("receipt 1")
    assert syncs[1] < after.index("receipt 2")
    await store.close()
    assert_ok(verify(tmp_path, keys))
    assert contents(tmp_path, keys) == ["a", "b", "c", "d", "e"]


async def test_submits_in_one_turn_make_one_group_and_one_fsync(tmp_path: Path, keys: Keys) -> None:
    storage = Storage()
    store = open_store(tmp_path, keys, opener=storage)
    before = storage.calls.count("synced")
    receipts = [store.submit((chat(f"m{i}"),)) for i in range(50)]
    assert len({id(r) for r in receipts}) == 1
    await asyncio.wait_for(receipts[0], 10.0)
    assert storage.calls.count("synced") - before == 1
    assert store.commits == 1
    await store.close()
    assert_ok(verify(tmp_path, keys))
    assert contents(tmp_path, keys) == [f"m{i}" for i in range(50)]


async def test_a_commit_interval_gathers_submits_of_later_turns(tmp_path: Path, keys: Keys) -> None:
    storage = Storage()
    settings = AuditSettings(commit_interval_s=0.5)
    store = open_store(tmp_path, keys, opener=storage, settings=settings)
    await write(store, ["first"])  # a group starts now: the next may not for 0.5 s
    before = storage.calls.count("synced")
    receipts = []
    for i in range(5):  # five loop turns, well within the interval
        receipts.append(as_future(store.submit((chat(f"m{i}"),))))
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*receipts), 10.0)
    assert storage.calls.count("synced") - before == 1
    await store.close()
    assert_ok(verify(tmp_path, keys))
    assert contents(tmp_path, keys) == ["first"] + [f"m{i}" for i in range(5)]


# ---------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------


def checkpoint_records(tmp_path: Path) -> list[StoredRecord]:
    return [r for r in all_records(tmp_path, None) if r.ftype is FrameType.CHECKPOINT]


async def test_checkpoint_at_least_every_checkpoint_records(tmp_path: Path, keys: Keys) -> None:
    settings = AuditSettings(checkpoint_records=5, checkpoint_interval_s=3600.0)
    store = open_store(tmp_path, keys, settings=settings)
    await asyncio.wait_for(store.submit([chat(f"x{i}") for i in range(12)]), 10.0)
    await write(store, [f"y{i}" for i in range(7)])
    records = all_records(tmp_path, None)
    cps = [r.seq for r in records if r.ftype is FrameType.CHECKPOINT]
    assert len(cps) >= 1 + (12 + 7) // 5
    for before, after in zip([0, *cps], [*cps, records[-1].seq + 1], strict=True):
        assert after - before - 1 <= 5, f"{after - before - 1} records between checkpoints"
    # Every checkpoint signs the record before it; the sink holds the latest.
    last = Checkpoint.from_fields(checkpoint_records(tmp_path)[-1].fields)
    assert last.seq == cps[-1] - 1
    assert store.last_checkpoint == last
    assert sink_of(tmp_path) == last
    await store.close()
    assert_ok(verify(tmp_path, keys))


async def test_checkpoint_at_least_every_interval(tmp_path: Path, keys: Keys) -> None:
    clock = Clock()
    settings = AuditSettings(checkpoint_records=1000, checkpoint_interval_s=0.05)
    store = open_store(tmp_path, keys, settings=settings, clock=clock)
    opening = store.last_checkpoint
    clock.now += 0.04
    await write(store, ["first"])
    assert store.last_checkpoint == opening  # 0.04 s: not due yet
    # Nothing more is submitted: the store's timer signs the tail once the interval passed.
    clock.now += 0.02
    await until(lambda: store.last_checkpoint != opening, "the interval checkpoint")
    cp = store.last_checkpoint
    assert cp.time == clock.now
    assert cp.seq == store.seq - 1  # it signs the event; the checkpoint record follows
    assert sink_of(tmp_path) == cp
    # A commit after the interval starts with a checkpoint of the records before it.
    clock.now += 0.01
    await write(store, ["second"])
    assert store.last_checkpoint == cp
    clock.now += 0.1
    await write(store, ["third"])
    assert store.last_checkpoint != cp
    assert sink_of(tmp_path) == store.last_checkpoint
    await store.close()
    final = sink_of(tmp_path)
    assert final is not None
    assert final.seq == store.seq - 1
    assert_ok(verify(tmp_path, keys))
    assert contents(tmp_path, keys) == ["first", "second", "third"]


# ---------------------------------------------------------------------------------------
# rotation
# ---------------------------------------------------------------------------------------


async def test_segment_rotation_at_segment_max_bytes(tmp_path: Path, keys: Keys) -> None:
    settings = AuditSettings(segment_max_bytes=4096)
    store = open_store(tmp_path, keys, settings=settings)
    texts = [f"{i:03d} " + "the quick brown fox " * 15 for i in range(40)]
    await write(store, texts)
    await store.close()
    segments = list_segments(tmp_path / "audit")
    assert len(segments) >= 3
    for path in segments[:-1]:
        assert path.stat().st_size >= 4096, path.name
    records = all_records(tmp_path, None)
    for path in segments:
        frames = list(read_frames(path.read_bytes()))
        assert path.read_bytes()[: len(MAGIC)] == MAGIC
        head, key = frames[0], frames[1]
        assert isinstance(head, Frame)
        assert isinstance(key, Frame)
        assert head.seq == segment_first_seq(path.name)
        assert head.ftype == FrameType.SEGMENT
        assert key.ftype == FrameType.KEY  # a fresh data key for every segment
    assert len([r for r in records if r.ftype is FrameType.SEGMENT]) == len(segments)
    assert_ok(verify(tmp_path, keys))
    assert contents(tmp_path, keys) == texts


async def test_key_rotation_at_key_rotate_s(tmp_path: Path, keys: Keys) -> None:
    clock = Clock()
    settings = AuditSettings(key_rotate_s=10.0)
    store = open_store(tmp_path, keys, settings=settings, clock=clock)
    clock.now += 1
    await write(store, ["under the first key"])
    clock.now += 5
    await write(store, ["still the first key"])
    clock.now += 5
    await write(store, ["under the second key"])
    await store.close()
    records = all_records(tmp_path, keys)
    key_seqs = [r.seq for r in records if r.ftype is FrameType.KEY]
    assert len(key_seqs) == 2
    used = [r.fields["enc"][0] for r in records if r.ftype is FrameType.EVENT]
    assert used == [key_seqs[0], key_seqs[0], key_seqs[1]]
    assert_ok(verify(tmp_path, keys))
    assert contents(tmp_path, keys) == [
        "under the first key",
        "still the first key",
        "under the second key",
    ]


# ---------------------------------------------------------------------------------------
# failure and recovery
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fail_on", ["append", "sync"])
async def test_a_failing_segment_fails_closed_and_recover_resumes(
    tmp_path: Path, keys: Keys, fail_on: str
) -> None:
    storage = Storage()
    store = open_store(tmp_path, keys, opener=storage)
    await write(store, ["before"])
    storage.fail_on = fail_on
    storage.fail = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(AuditError, match="No space left on device"):
        await asyncio.wait_for(store.submit((chat("lost"),)), 10.0)
    assert not store.healthy
    # Every later submit fails too, at once: the relay fails closed.
    for text in ("refused 1", "refused 2"):
        with pytest.raises(AuditError):
            await asyncio.wait_for(store.submit((chat(text),)), 10.0)
    assert not await store.recover()  # the storage still fails
    assert not store.healthy
    storage.fail = None
    assert await store.recover()
    assert store.healthy
    await write(store, ["after"])
    await store.close()
    assert_ok(verify(tmp_path, keys))
    # What failed was cut back (never acknowledged), the outage is recorded.
    assert contents(tmp_path, keys) == ["before", "after"]
    events = kinds(tmp_path)
    assert events.count("audit.recovered") == 1
    assert events.index("audit.recovered") < len(events) - 1
    raw = b"".join(p.read_bytes() for p in list_segments(tmp_path / "audit"))
    assert b"lost" not in raw
    assert b"before" not in raw


# ---------------------------------------------------------------------------------------
# torn tails
# ---------------------------------------------------------------------------------------

TORN_TAILS = {
    "a frame cut inside its record": (200).to_bytes(4, "big") + bytes(range(1, 40)),
    "a frame cut inside its header": b"\x00\x00\x00\x30\x00\x00",
    "zeros": bytes(64),
}


@pytest.mark.parametrize("tail", TORN_TAILS.values(), ids=TORN_TAILS.keys())
async def test_a_torn_tail_is_cut_and_recorded_on_open(
    tmp_path: Path, keys: Keys, tail: bytes
) -> None:
    store = open_store(tmp_path, keys)
    await write(store, ["one", "two"])
    await store.close()
    last = list_segments(tmp_path / "audit")[-1]
    intact = last.read_bytes()
    with last.open("ab") as f:
        f.write(tail)
    store = open_store(tmp_path, keys)
    assert last.read_bytes()[: len(intact)] == intact  # nothing before the tail changed
    await write(store, ["three"])
    await store.close()
    assert_ok(verify(tmp_path, keys))
    assert contents(tmp_path, keys) == ["one", "two", "three"]
    repaired = [r for r in all_records(tmp_path, None) if r.kind == "audit.repaired"]
    assert len(repaired) == 1
    assert f"{len(tail)} bytes" in repaired[0].fields["detail"]


DAMAGE = {
    "zeros, then data": lambda data: data + bytes(32) + b"\x01more",
    "an altered record before the last": lambda data: (
        data[: len(data) - 60] + bytes([data[len(data) - 60] ^ 0xFF]) + data[len(data) - 59 :]
    ),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
async def test_damage_followed_by_data_refuses_to_open(
    tmp_path: Path, keys: Keys, damage: Callable[[bytes], bytes]
) -> None:
    store = open_store(tmp_path, keys)
    await write(store, ["one", "two", "three"])
    await store.close()
    last = list_segments(tmp_path / "audit")[-1]
    damaged = damage(last.read_bytes())
    last.write_bytes(damaged)
    for _ in range(2):  # refused each time, and the lock is not left behind
        with pytest.raises(AuditError, match="audit verify"):
            open_store(tmp_path, keys)
    assert last.read_bytes() == damaged  # left as it was for investigation
    assert not verify(tmp_path, keys).ok


# ---------------------------------------------------------------------------------------
# the writer lock, and the keys
# ---------------------------------------------------------------------------------------


async def test_the_writer_lock_refuses_a_second_store(tmp_path: Path, keys: Keys) -> None:
    store = open_store(tmp_path, keys)
    with pytest.raises(AuditError, match="another process"):
        open_store(tmp_path, keys)
    await write(store, ["still writing"])
    await store.close()
    again = open_store(tmp_path, keys)  # released on close
    await again.close()
    assert_ok(verify(tmp_path, keys))


async def test_contents_open_with_the_staff_key_only(tmp_path: Path, keys: Keys) -> None:
    store = open_store(tmp_path, keys)
    await write(store, ["a secret about range(10)"])
    await store.close()
    raw = b"".join(p.read_bytes() for p in list_segments(tmp_path / "audit"))
    assert b"range(10)" not in raw
    assert contents(tmp_path, keys) == ["a secret about range(10)"]
    (event,) = [r for r in all_records(tmp_path, None) if r.kind == "message.delivered"]
    assert event.contents is None
    assert event.encrypted
    assert event.fields["session"] == "py101"  # what search needs stays in clear
    assert event.to_dict()["encrypted"] is True
    with pytest.raises(AuditLogError, match="staff audit key"):
        AuditReader(tmp_path / "audit").data_key(event.fields["enc"][0])
    stranger = Keys(keys.signing, X25519PrivateKey.generate())
    with pytest.raises(AuditLogError, match="encrypted to audit key"):
        all_records(tmp_path, stranger)
