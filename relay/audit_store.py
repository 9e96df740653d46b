"""The durable audit store: segment files, group commit, checkpoints, crash repair.

:class:`AuditStore` is the :class:`relay.audit.AuditSink` the relay runs with. Events
submitted during one commit are encoded by :class:`relay.auditlog.RecordEncoder` (hash
chain, encrypted contents) and appended to the current segment together; one ``fsync``
makes the whole group durable and only then is the receipt of every event in it
resolved (nothing is delivered before). While one group is being written and synced in
the store's I/O thread, the next one gathers.

At least every ``checkpoint_interval_s`` seconds, or every ``checkpoint_records``
records, a signed checkpoint is appended and, once durable, copied to the checkpoint
sink (a file outside the audit directory).

If writing, syncing or the sink fails, the receipt fails with
:class:`~relay.errors.AuditError` and so does every later submit: the relay fails
closed. :meth:`AuditStore.recover` (called by the relay every second) cuts the segment
back to what was acknowledged, and if the storage works again, records the outage and
accepts events again.

Opening the store repairs a torn tail left by a crash (an incomplete last frame, or
zeros) and records the repair. Any other damage refuses to open: that is for
``classroom-relay audit verify`` and a person to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from relay.audit import AuditEvent, EventKind
from relay.auditlog import (
    MAGIC,
    SEGMENT_SUFFIX,
    ChainState,
    Checkpoint,
    Frame,
    FrameDamage,
    FrameType,
    RecordEncoder,
    chain_hash,
    genesis_hash,
    read_frames,
    segment_first_seq,
    segment_name,
)
from relay.errors import AuditError, AuditLogError, ConfigError
from relay.limits import settings_from_table

log = logging.getLogger("relay.audit")

LOCK_NAME = ".writer.lock"
SEGMENTS_DIR = "segments"
TOMBSTONES_DIR = "tombstones"


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """The ``[audit]`` table of relay.toml (docs/operations.md)."""

    checkpoint_sink: str = ""
    """File the latest signed checkpoint is copied to: put it on another disk or a
    mounted share. Empty: ``audit-checkpoint/latest`` in the facility home (outside the
    audit directory, but on the same disk)."""
    commit_interval_s: float = 0.0
    """Group commit: a group starts at most this often. 0: as soon as the group before
    it is durable (records arriving meanwhile form the next group). A few milliseconds
    makes each fsync cover more records under load, at that cost in latency."""
    checkpoint_interval_s: float = 1.0
    """A checkpoint is signed at least this often while records are written."""
    checkpoint_records: int = 1000
    """... and at least every this many records."""
    segment_max_bytes: int = 16 << 20
    """A segment file that reaches this size is closed and a new one begun."""
    key_rotate_s: float = 3600.0
    """A new data key is drawn at least this often (and for every segment)."""
    retain_days: int = 365
    """``audit retention`` removes segments whose records are all older than this,
    except those under legal hold; 0 keeps everything."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "checkpoint_sink":
                if not isinstance(value, str):
                    raise ConfigError("[audit] checkpoint_sink must be a path (a string)")
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"[audit] {f.name} must be a number, not {value!r}")
            if value < 0 or (value == 0 and f.name not in ("retain_days", "commit_interval_s")):
                raise ConfigError(f"[audit] {f.name} must be positive, not {value!r}")
        if self.segment_max_bytes < 4096:
            raise ConfigError("[audit] segment_max_bytes must be at least 4096")

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str) -> AuditSettings:
        return settings_from_table(cls, data, source, "audit")


DEFAULT_AUDIT_SETTINGS = AuditSettings()


# ---------------------------------------------------------------------------------------
# storage adapters
# ---------------------------------------------------------------------------------------


class SegmentFile(Protocol):
    """The open segment: the one place the store's bytes reach the disk."""

    def append(self, data: bytes) -> None: ...
    def sync(self) -> None: ...
    def truncate(self, size: int) -> None: ...
    def close(self) -> None: ...


class DiskSegment:
    def __init__(self, path: Path, *, create: bool) -> None:
        flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT | os.O_EXCL if create else 0)
        self.path = path
        self.fd = os.open(path, flags, 0o600)

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def sync(self) -> None:
        os.fsync(self.fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


SegmentOpener = Callable[[Path, bool], SegmentFile]


def _open_disk_segment(path: Path, create: bool) -> SegmentFile:
    return DiskSegment(path, create=create)


class CheckpointSink:
    """The latest checkpoint, kept in one file outside the audit directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> Checkpoint | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AuditLogError(f"the checkpoint sink {self.path} cannot be read: {exc}") from None
        return Checkpoint.from_bytes(data, f"the checkpoint sink {self.path}")

    def write(self, cp: Checkpoint) -> None:
        """Replace the file atomically (write, fsync, rename, fsync the directory)."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, cp.to_bytes())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# ---------------------------------------------------------------------------------------
# opening: find where the log stands, repair a torn tail
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Repair:
    segment: str
    offset: int
    cut_bytes: int
    last_seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class LogEnd:
    state: ChainState
    segment: Path | None
    """The last segment, to go on appending to (None: the log is empty)."""
    size: int
    repair: Repair | None


def list_segments(directory: Path) -> list[Path]:
    seg_dir = directory / SEGMENTS_DIR
    if not seg_dir.is_dir():
        return []
    found = [p for p in seg_dir.iterdir() if segment_first_seq(p.name) is not None]
    return sorted(found, key=lambda p: p.name)


def find_log_end(directory: Path, sink: Checkpoint | None) -> LogEnd:
    """Read the last segment, check its chain, and find where the next record goes.

    A torn tail (the file ends inside a frame, or the rest of the file is zeros) is
    reported as a :class:`Repair` for the caller to cut; anything else wrong raises
    :class:`AuditError`.
    """
    segments = list_segments(directory)
    if not segments:
        if sink is not None:
            raise AuditError(
                f"the audit log in {directory} is empty, but the checkpoint sink vouches for "
                f"record {sink.seq}: the log was removed. Restore it from a backup, or run "
                "'classroom-relay audit verify' to see what is there"
            )
        return LogEnd(ChainState(os.urandom(16), 0, b""), None, 0, None)
    path = segments[-1]
    data = path.read_bytes()
    name = path.name
    if data[: len(MAGIC)] != MAGIC:
        if len(data) < len(MAGIC) and MAGIC.startswith(data):
            raise AuditError(f"segment {name} was cut off while it was created; remove it")
        raise AuditError(f"segment {name} is not an audit segment; run 'audit verify'")
    first_seq = segment_first_seq(name)
    state: ChainState | None = None
    end = len(MAGIC)
    damage: FrameDamage | None = None
    for frame in read_frames(data):
        if isinstance(frame, FrameDamage):
            damage = frame
            break
        if state is None:
            state = _state_from_header(frame, name, first_seq)
        elif frame.seq != state.seq + 1:
            raise AuditError(
                f"segment {name} byte {frame.offset}: record {frame.seq} follows {state.seq}; "
                "run 'classroom-relay audit verify'"
            )
        state.chain = _advance(state.chain, frame)
        state.seq = frame.seq
        end = frame.end
    if state is None:
        raise AuditError(f"segment {name} has no readable header; run 'audit verify'")
    repair = None
    if damage is not None:
        torn = not damage.complete or not any(data[damage.offset :])
        if not torn:
            raise AuditError(
                f"segment {name} is damaged at byte {damage.offset} ({damage.reason}), with "
                "data after it: this is not an interrupted write. Run 'classroom-relay audit "
                "verify' and keep a copy of the directory for investigation"
            )
        repair = Repair(name, damage.offset, len(data) - damage.offset, state.seq, damage.reason)
    if sink is not None and sink.seq > state.seq:
        raise AuditError(
            f"the audit log ends at record {state.seq}, but the checkpoint sink vouches for "
            f"record {sink.seq}: records were cut off. Run 'classroom-relay audit verify'"
        )
    return LogEnd(state, path, end, repair)


def _state_from_header(frame: Frame, name: str, first_seq: int | None) -> ChainState:
    if frame.ftype != FrameType.SEGMENT or frame.seq != first_seq:
        raise AuditError(f"segment {name} does not start with its header; run 'audit verify'")
    fields = frame.fields()
    log_id, prev = fields.get("log"), fields.get("prev")
    if not isinstance(log_id, bytes) or not isinstance(prev, bytes):
        raise AuditError(f"segment {name} has a malformed header; run 'audit verify'")
    return ChainState(log_id, frame.seq - 1, prev)


def _advance(chain: bytes, frame: Frame) -> bytes:
    return chain_hash(chain, frame.record)


# ---------------------------------------------------------------------------------------
# the store
# ---------------------------------------------------------------------------------------


class AuditStore:
    """The tamper-evident, encrypted audit log (see the module doc)."""

    def __init__(
        self,
        directory: Path,
        *,
        signing_key: Ed25519PrivateKey,
        staff_public: X25519PublicKey,
        sink_path: Path,
        settings: AuditSettings = DEFAULT_AUDIT_SETTINGS,
        clock: Callable[[], float] = time.time,
        opener: SegmentOpener = _open_disk_segment,
    ) -> None:
        self.directory = directory
        self.segments_dir = directory / SEGMENTS_DIR
        self.signing_key = signing_key
        self.settings = settings
        self.clock = clock
        self.opener = opener
        self.sink = CheckpointSink(sink_path)
        self._lock_fd = self._lock()
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-io")
        try:
            self._open(staff_public)
        except BaseException:
            self._unlock()
            self._io.shutdown(wait=False)
            raise
        self._pending: list[AuditEvent] = []
        self._receipt: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._failed: AuditError | None = None
        self._failed_at = 0.0
        self._closed = False
        self._group_started = 0.0
        self.records_written = 0
        self.commits = 0

    # -- opening ---------------------------------------------------------------------

    def _lock(self) -> int:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.segments_dir.mkdir(exist_ok=True, mode=0o700)
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AuditError(
                f"the audit log in {self.directory} is being written by another process "
                "(a running relay, or an audit command); stop it or use the relay's control "
                "socket"
            ) from None
        return fd

    def _unlock(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)

    def _open(self, staff_public: X25519PublicKey) -> None:
        if not self.sink.path.parent.is_dir():
            raise AuditError(
                f"the checkpoint sink directory {self.sink.path.parent} does not exist; "
                "mount it or change [audit] checkpoint_sink in relay.toml"
            )
        try:
            sink_cp = self.sink.read()
        except AuditLogError as exc:
            raise AuditError(f"{exc}; run 'classroom-relay audit verify'") from None
        end = find_log_end(self.directory, sink_cp)
        state = end.state
        now = self.clock()
        out: list[bytes] = []
        if end.segment is None:
            state.chain = genesis_hash(state.log_id)
        self.encoder = RecordEncoder(state, staff_public=staff_public)
        if end.segment is None:
            name = segment_name(1)
            self.encoder.segment_start(name, now, out)
            self._segment = self.opener(self.segments_dir / name, True)
            self._segment.append(MAGIC)
            self._size = len(MAGIC)
        else:
            self._segment = self.opener(end.segment, False)
            self._size = end.size
            if end.repair is not None:
                self._segment.truncate(end.size)
            self.encoder.new_key(now, out)
        if end.repair is not None:
            r = end.repair
            log.warning(
                "audit log: cut a torn tail of %d bytes from %s after record %d (%s)",
                r.cut_bytes,
                r.segment,
                r.last_seq,
                r.reason,
            )
            event = AuditEvent(
                kind=EventKind.AUDIT_REPAIRED,
                time=now,
                detail=(
                    f"an interrupted write was cut from segment {r.segment}: {r.cut_bytes} "
                    f"bytes at byte {r.offset}, after record {r.last_seq} ({r.reason}); "
                    "no acknowledged record was in it"
                ),
            )
            self.encoder.event(event, out)
        cp = self.encoder.checkpoint(self.signing_key, now, out)
        data = b"".join(out)
        try:
            self._segment.append(data)
            self._segment.sync()
            self._sync_directory()
            self.sink.write(cp)
        except OSError as exc:
            self._segment.close()
            raise AuditError(f"the audit log cannot be written: {exc}") from None
        self._size += len(data)
        self._durable = dataclasses.replace(state)
        self._durable_size = self._size
        self._last_cp_time = now
        self.last_checkpoint = cp

    @property
    def _since_cp(self) -> int:
        """Records after the last checkpoint record (not yet signed)."""
        return self._durable.seq - self.last_checkpoint.seq - 1

    def _sync_directory(self) -> None:
        fd = os.open(self.segments_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- the sink interface ------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._failed is None

    @property
    def seq(self) -> int:
        """The last durable record."""
        return self._durable.seq

    def submit(self, events: Sequence[AuditEvent]) -> Awaitable[None]:
        receipt = self._receipt
        if receipt is None:
            loop = asyncio.get_running_loop()
            receipt = loop.create_future()
            if self._failed is not None or self._closed:
                receipt.set_exception(self._failed or AuditError("the audit log is closed"))
                return receipt
            self._receipt = receipt
            if self._writer is None:
                self._writer = loop.create_task(self._write_loop())
        self._pending.extend(events)
        return receipt

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.settings.commit_interval_s
        try:
            while self._receipt is not None or self._checkpoint_due():
                wait = self._group_started + interval - loop.time()
                if wait > 0 and self._failed is None:
                    await asyncio.sleep(wait)  # let the group gather
                self._group_started = loop.time()
                events, self._pending = self._pending, []
                receipt, self._receipt = self._receipt, None
                if self._failed is not None:
                    if receipt is not None and not receipt.done():
                        receipt.set_exception(self._failed)
                    continue
                await self._commit(loop, events, receipt)
        finally:
            self._writer = None
            self._arm_timer(loop)

    def _checkpoint_due(self) -> bool:
        if self._since_cp == 0 or self._failed is not None or self._closed:
            return False
        s = self.settings
        return (
            self._since_cp >= s.checkpoint_records
            or self.clock() - self._last_cp_time >= s.checkpoint_interval_s
        )

    def _arm_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None or self._since_cp == 0 or self._closed:
            return
        delay = max(0.0, self._last_cp_time + self.settings.checkpoint_interval_s - self.clock())
        self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._writer is None and self._checkpoint_due():
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        else:
            self._arm_timer(asyncio.get_running_loop())

    async def _commit(
        self,
        loop: asyncio.AbstractEventLoop,
        events: list[AuditEvent],
        receipt: asyncio.Future[None] | None,
    ) -> None:
        enc = self.encoder
        now = self.clock()
        cp: Checkpoint | None = None
        try:
            if self._size >= self.settings.segment_max_bytes:
                await self._rotate(loop, now)
            out: list[bytes] = []
            if self._checkpoint_due():
                cp = enc.checkpoint(self.signing_key, now, out)
            if now - enc.key_time >= self.settings.key_rotate_s:
                enc.new_key(now, out)
            every = self.settings.checkpoint_records
            unsigned = enc.state.seq - (cp or self.last_checkpoint).seq - 1
            for event in events:
                enc.event(event, out)
                unsigned += 1
                if unsigned >= every:
                    cp = enc.checkpoint(self.signing_key, now, out)
                    unsigned = 0
            data = b"".join(out)
            await loop.run_in_executor(self._io, self._write, data, cp)
        except Exception as exc:
            self._fail(exc)
            if receipt is not None and not receipt.done():
                assert self._failed is not None
                receipt.set_exception(self._failed)
            return
        self._durable_after(len(data), cp, now)
        self.records_written += len(events)
        self.commits += 1
        if receipt is not None and not receipt.done():
            receipt.set_result(None)

    def _durable_after(self, written: int, cp: Checkpoint | None, now: float) -> None:
        self._size += written
        self._durable = dataclasses.replace(self.encoder.state)
        self._durable_size = self._size
        if cp is not None:
            self._last_cp_time = now
            self.last_checkpoint = cp

    def _write(self, data: bytes, cp: Checkpoint | None) -> None:
        """In the I/O thread: append, fsync, then copy the checkpoint to the sink."""
        self._segment.append(data)
        self._segment.sync()
        if cp is not None:
            self.sink.write(cp)

    async def _rotate(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        """Close the full segment with a checkpoint and begin the next one."""
        enc = self.encoder
        out: list[bytes] = []
        cp = enc.checkpoint(self.signing_key, now, out)
        closing = b"".join(out)
        await loop.run_in_executor(self._io, self._write, closing, cp)
        self._durable_after(len(closing), cp, now)
        name = segment_name(enc.state.seq + 1)
        path = self.segments_dir / name
        out = []
        enc.segment_start(name, now, out)
        data = MAGIC + b"".join(out)

        def begin() -> SegmentFile:
            segment = self.opener(path, True)
            try:
                segment.append(data)
                segment.sync()
                self._sync_directory()
            except BaseException:
                segment.close()
                path.unlink(missing_ok=True)
                raise
            return segment

        try:
            segment = await loop.run_in_executor(self._io, begin)
        except BaseException:
            enc.state = dataclasses.replace(self._durable)
            raise
        old, self._segment = self._segment, segment
        with contextlib.suppress(OSError):
            old.close()
        self._size = 0
        self._durable_after(len(data), None, now)

    def _fail(self, exc: Exception) -> None:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        self._failed = AuditError(
            f"the audit log could not be written ({reason}); nothing is delivered until it "
            "can be: free disk space or fix the storage, and the relay resumes by itself"
        )
        self._failed_at = self.clock()
        self.encoder.state = dataclasses.replace(self._durable)
        log.critical("AUDIT LOG FAILURE: %s", self._failed)

    async def recover(self) -> bool:
        """After a failure: cut back to what was acknowledged and try again.

        Returns True when the store accepts events again (the outage is recorded).
        """
        failed = self._failed
        if failed is None:
            return True
        if self._closed or self._writer is not None:
            return False
        loop = asyncio.get_running_loop()
        enc = self.encoder
        now = self.clock()
        out: list[bytes] = []
        enc.state = dataclasses.replace(self._durable)
        enc.new_key(now, out)
        event = AuditEvent(
            kind=EventKind.AUDIT_RECOVERED,
            time=now,
            detail=(
                f"the audit log could not be written for {now - self._failed_at:.1f} s "
                f"({failed}); what was not recorded then was not delivered"
            ),
        )
        enc.event(event, out)
        cp = enc.checkpoint(self.signing_key, now, out)
        data = b"".join(out)

        def attempt() -> None:
            self._segment.truncate(self._durable_size)
            self._segment.append(data)
            self._segment.sync()
            self.sink.write(cp)

        try:
            await loop.run_in_executor(self._io, attempt)
        except Exception as exc:
            enc.state = dataclasses.replace(self._durable)
            log.error("audit log still failing: %s", exc)
            return False
        self._size = self._durable_size
        self._durable_after(len(data), cp, now)
        self._failed = None
        log.warning("audit log writable again after %.1f s", now - self._failed_at)
        return True

    async def close(self) -> None:
        """Write what is pending and a final checkpoint, then release the log."""
        if self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._writer is not None:
            await asyncio.shield(self._writer)
        if self._failed is None and self._since_cp:
            self._last_cp_time = -1e18  # force the final checkpoint
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
            await self._writer
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with contextlib.suppress(OSError):
            self._segment.close()
        self._io.shutdown(wait=True)
        self._unlock()


def segment_paths(directory: Path) -> list[Path]:
    """Every segment file of the log in ``directory``, in order."""
    return list_segments(directory)


__all__ = [
    "SEGMENT_SUFFIX",
    "AuditSettings",
    "AuditStore",
    "CheckpointSink",
    "DiskSegment",
    "LogEnd",
    "Repair",
    "SegmentFile",
    "find_log_end",
    "list_segments",
]
