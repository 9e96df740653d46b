"""The staff's integrity tools for the audit log: ``classroom-relay audit verify``,
``audit checkpoint``, ``audit retention`` and ``audit hold``.

* ``verify`` checks the whole log (:func:`relay.auditlog.verify_log`): frames, sequence,
  hash chain, checkpoint signatures, tombstones and the checkpoint sink; with ``--bundle``
  against the signing key pinned in the staff bundle. Exit 0 with a summary, 1 with the
  first problem and what to do.
* ``checkpoint`` prints the latest signed checkpoint in a form to publish elsewhere; later,
  ``verify --against`` checks the log is still consistent with it.
* ``retention`` removes whole segments whose records are all older than ``[audit]
  retain_days``, except the current one and those under legal hold; a signed tombstone
  explains each gap, so the log still verifies.
* ``hold`` places, lists and lifts legal holds (``audit/legal-holds.json``).

Crash safety of retention: the tombstone is written and made durable (file and directory
fsync) before any segment is deleted; segments are deleted oldest first. A run cut short
leaves segments that a valid tombstone lists: verification skips them, and the next
``retention --apply`` deletes them. Retention needs no writer lock (it never touches the
current segment); only the ``audit.removed`` record goes through the writer, which
:func:`relay.audit_append.record_events` finds (the running relay, or the log itself).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
import enum
import fcntl
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from relay.audit import EventKind
from relay.audit_access import audit_access
from relay.audit_append import admin_event, record_events
from relay.audit_store import (
    LOCK_NAME,
    SEGMENTS_DIR,
    TOMBSTONES_DIR,
    CheckpointSink,
    list_segments,
)
from relay.auditlog import (
    HASH_BYTES,
    LOG_ID_BYTES,
    MAGIC,
    TOMBSTONE_SUFFIX,
    Checkpoint,
    FrameDamage,
    FrameType,
    Problem,
    SegmentSource,
    Tombstone,
    VerifyReport,
    chain_hash,
    key_fingerprint,
    pack_body,
    raw_public,
    read_frames,
    unpack_body,
    verify_log,
)
from relay.cli import UsageError, parse_time
from relay.errors import AuditError, AuditLogError
from relay.home import FacilityHome, RelayConfig, utc_text

PROG = "classroom-relay"
HOLDS_FILE = "legal-holds.json"
RETENTION_LOCK = ".retention.lock"
"""Taken exclusively by ``retention`` and ``hold`` changes, shared by ``verify``."""
SECONDS_PER_DAY = 86_400
MAX_REASON_CHARS = 500
MAX_SESSION_CHARS = 64
CHECKPOINT_TEXT_HEADER = "classroom-relay audit checkpoint v1"
MAX_PUBLISHED_BYTES = 64 << 10
"""``verify --against``: a published checkpoint is a few hundred bytes."""

EXIT_OK = 0
EXIT_PROBLEM = 1
"""``verify``: the log (or the published checkpoint) does not verify."""


def _say(text: str = "") -> None:
    print(text, flush=True)


def _when(seconds: float) -> str:
    return utc_text(dt.datetime.fromtimestamp(seconds, dt.UTC).replace(microsecond=0))


def _who() -> str:
    return f"admin:{os.environ.get('USER') or 'administrator'}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write, fsync, rename over ``path``, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def _retention_lock(audit_dir: Path, *, exclusive: bool) -> Iterator[None]:
    """One retention or hold change at a time; ``verify`` waits for one to finish."""
    if not audit_dir.is_dir():
        yield
        return
    try:
        # A reader creates nothing: it may verify a read-only copy of the directory.
        flags = os.O_RDWR | os.O_CREAT if exclusive else os.O_RDONLY
        fd = os.open(audit_dir / RETENTION_LOCK, flags, 0o600)
    except FileNotFoundError:
        yield  # no retention or hold change ever ran here
        return
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AuditError(
                "another 'audit retention' or 'audit hold' command is changing the audit "
                "log right now; wait for it to finish and run this again"
            ) from None
        yield
    finally:
        os.close(fd)


def writer_running(audit_dir: Path) -> bool:
    """True when a writer (the relay, or a command appending) holds the log's lock."""
    try:
        fd = os.open(audit_dir / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
    return False


# ---------------------------------------------------------------------------------------
# reading the log for verification
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogFiles:
    """What verification reads: segments, tombstones, the sink, and what was unreadable."""

    segments: tuple[SegmentSource, ...]
    tombstones: tuple[Tombstone, ...]
    sink: Checkpoint | None
    sink_path: Path
    unreadable: Problem | None
    """A tombstone or sink file that cannot be parsed: reported before anything else."""


def _read_segment(path: Path) -> Callable[[], bytes]:
    return path.read_bytes


def read_tombstones(audit_dir: Path) -> tuple[list[Tombstone], Problem | None]:
    found: list[Tombstone] = []
    directory = audit_dir / TOMBSTONES_DIR
    if not directory.is_dir():
        return found, None
    for path in sorted(directory.glob(f"*{TOMBSTONE_SUFFIX}")):
        where = f"{TOMBSTONES_DIR}/{path.name}"
        try:
            fields = unpack_body(path.read_bytes(), f"tombstone {path.name}")
            tomb = Tombstone.from_fields(fields, f"tombstone {path.name}")
        except (OSError, AuditLogError) as exc:
            return found, Problem(where, None, None, f"unreadable: {exc}")
        if tomb.file_name != path.name:
            return found, Problem(
                where, tomb.first, None, f"the tombstone is for records {tomb.first}-"
                f"{tomb.last} but is named {path.name} (renamed?)",
            )  # fmt: skip
        found.append(tomb)
    return found, None


def read_log_files(home: FacilityHome, config: RelayConfig) -> LogFiles:
    """The sink first, then the segments: a sink read first never vouches for more than
    the segments read after it hold."""
    sink_path = home.checkpoint_sink(config)
    unreadable: Problem | None = None
    sink: Checkpoint | None = None
    try:
        sink = CheckpointSink(sink_path).read()
    except AuditLogError as exc:
        unreadable = Problem(
            str(sink_path), None, None, f"the checkpoint sink is unreadable: {exc}"
        )
    segments = tuple(SegmentSource(p.name, _read_segment(p)) for p in list_segments(home.audit_dir))
    tombstones, bad = read_tombstones(home.audit_dir)
    return LogFiles(segments, tuple(tombstones), sink, sink_path, unreadable or bad)


def check_log(
    files: LogFiles,
    key: Ed25519PublicKey,
    *,
    live: bool,
    sink: Checkpoint | None = None,
    sink_name: str | None = None,
) -> VerifyReport:
    """:func:`verify_log` over ``files`` (against ``sink`` instead of the sink file if given)."""
    use = files.sink if sink is None else sink
    report = verify_log(
        files.segments,
        signing_key=key,
        tombstones=files.tombstones,
        sink=use,
        sink_name=sink_name or f"checkpoint sink {files.sink_path}",
        live_tail=live,
    )
    if files.unreadable is not None and sink is None:
        return dataclasses.replace(report, problems=(files.unreadable, *report.problems))
    return report


# ---------------------------------------------------------------------------------------
# audit verify
# ---------------------------------------------------------------------------------------


def _problem_json(problem: Problem) -> dict[str, Any]:
    return {
        "where": problem.where,
        "seq": problem.seq,
        "offset": problem.offset,
        "what": problem.what,
    }


def checkpoint_json(cp: Checkpoint, key: Ed25519PublicKey | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "log": cp.log_id.hex(),
        "seq": cp.seq,
        "chain": cp.chain.hex(),
        "time": cp.time,
        "time_utc": _when(cp.time),
        "signer": cp.signer,
        "signature": base64.b64encode(cp.signature).decode("ascii"),
    }
    if key is not None:
        out["signing_key"] = base64.b64encode(raw_public(key)).decode("ascii")
    return out


def _report_json(report: VerifyReport, published: Problem | None) -> dict[str, Any]:
    problems = [*report.problems, *([published] if published else [])]
    return {
        "ok": not problems,
        "records": report.records,
        "segments": report.segments,
        "first_seq": report.first_seq,
        "last_seq": report.last_seq,
        "checkpoints": report.checkpoints,
        "unsigned_tail": report.unsigned_tail,
        "last_checkpoint": (
            checkpoint_json(report.last_checkpoint) if report.last_checkpoint else None
        ),
        "sink": checkpoint_json(report.sink) if report.sink else None,
        "gaps": [
            {
                "first": t.first,
                "last": t.last,
                "time": t.time,
                "reason": t.reason,
                "tombstone": f"{TOMBSTONES_DIR}/{t.file_name}",
                "segments": [name for name, _ in t.segments],
            }
            for t in report.gaps
        ],
        "leftovers": list(report.leftovers),
        "in_flight_bytes": report.in_flight,
        "problem": _problem_json(problems[0]) if problems else None,
    }


_ADVICE = (
    "What to do: keep the audit directory and the checkpoint sink exactly as they are (copy "
    "them somewhere safe; do not start the relay on them again until this is understood), "
    "tell the facility's security lead, and compare with the latest backup and with the "
    "checkpoints published elsewhere ('audit verify --against'). Records before the "
    "problem verified; nothing from it on can be trusted."
)


def cmd_verify(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    config = home.load_config()
    bundle = Path(args.bundle) if args.bundle else None
    access = audit_access(home, bundle, contents=False, passphrase=lambda: None)
    published = _load_published(args.against) if args.against else None
    live = writer_running(home.audit_dir)
    with _retention_lock(home.audit_dir, exclusive=False):
        files = read_log_files(home, config)
        report = check_log(files, access.signing_key, live=live)
        against: Problem | None = None
        if report.ok and published is not None:
            against = _check_published(files, access.signing_key, published, live=live)
    if args.json:
        out = _report_json(report, against)
        out["signing_key"] = key_fingerprint(raw_public(access.signing_key))
        out["key_source"] = "bundle" if bundle else "home"
        _say(json.dumps(out, indent=2))
        return EXIT_OK if out["ok"] else EXIT_PROBLEM
    key_text = key_fingerprint(raw_public(access.signing_key))
    key_from = f"pinned in the staff bundle {bundle}" if bundle else "from the facility home"
    if not report.ok or against is not None:
        problem = report.problems[0] if report.problems else against
        assert problem is not None
        if report.ok and published is not None:
            _say(
                "The audit log verifies on its own, but it is NOT consistent with the "
                f"published checkpoint of record {published.seq} ({_when(published.time)}): "
                "the log was rewritten or replaced since that checkpoint was published."
            )
        else:
            _say("The audit log does NOT verify.")
        _say(f"First problem: {problem}")
        if report.last_checkpoint is not None:
            _say(
                f"Verified before it: records up to {report.last_seq}, the last signed "
                f"checkpoint covers record {report.last_checkpoint.seq}."
            )
        _say(f"Audit signing key: {key_text} ({key_from}).")
        _say(_ADVICE)
        return EXIT_PROBLEM
    if report.segments == 0:
        _say(
            f"There is no audit log yet in {home.audit_dir}: the relay writes it when it "
            "first starts. Nothing to verify."
        )
        return EXIT_OK
    _summary(report, files, key_text, key_from, live)
    if published is not None:
        _say(
            f"The published checkpoint of record {published.seq} ({_when(published.time)}) "
            "is consistent with the log."
        )
    return EXIT_OK


def _summary(report: VerifyReport, files: LogFiles, key: str, key_from: str, live: bool) -> None:
    _say(
        f"The audit log verifies: {report.records} records (records {report.first_seq}-"
        f"{report.last_seq}) in {report.segments} segment(s), {report.checkpoints} signed "
        "checkpoint(s); chain, frames and signatures are intact."
    )
    for t in report.gaps:
        _say(
            f"  gap: records {t.first}-{t.last} were removed on {_when(t.time)} "
            f"({t.reason}); explained by the signed tombstone {TOMBSTONES_DIR}/{t.file_name}"
        )
    if report.leftovers:
        _say(
            f"  {len(report.leftovers)} segment(s) a tombstone lists as removed are still "
            f"there ({', '.join(report.leftovers)}): a retention run was interrupted; "
            f"'{PROG} audit retention --apply' finishes it"
        )
    cp = report.last_checkpoint
    if cp is not None:
        _say(f"  last checkpoint: record {cp.seq} at {_when(cp.time)}")
    tail = report.unsigned_tail
    if tail:
        _say(
            f"  {tail} record(s) after it not yet signed"
            + (" (the relay is writing: normal)" if live else "")
        )
    if report.in_flight:
        _say(f"  {report.in_flight} bytes of a record being written right now were not read")
    if report.sink is not None:
        _say(f"  checkpoint sink {files.sink_path}: record {report.sink.seq}, matches the log")
    _say(f"  audit signing key {key} ({key_from})")


# ---------------------------------------------------------------------------------------
# audit checkpoint, and verify --against
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Published:
    """A checkpoint as ``audit checkpoint`` printed it (and someone kept it)."""

    checkpoint: Checkpoint
    signing_key: Ed25519PublicKey | None

    @property
    def seq(self) -> int:
        return self.checkpoint.seq

    @property
    def time(self) -> float:
        return self.checkpoint.time


def checkpoint_text(cp: Checkpoint, key: Ed25519PublicKey) -> str:
    values = checkpoint_json(cp, key)
    lines = [CHECKPOINT_TEXT_HEADER]
    lines += [f"{name}: {values[name]}" for name in _TEXT_KEYS]
    return "\n".join(lines) + "\n"


_TEXT_KEYS = ("log", "seq", "chain", "time", "time_utc", "signer", "signature", "signing_key")


def parse_published(text: str, source: str) -> Published:
    """A checkpoint in the text or JSON form of ``audit checkpoint``."""
    stripped = text.strip()
    values: dict[str, Any]
    if stripped.startswith("{"):
        try:
            loaded = json.loads(stripped)
        except ValueError as exc:
            raise UsageError(f"refused {source}: not valid JSON ({exc})") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"refused {source}: not a checkpoint object")
        values = loaded
    else:
        lines = stripped.splitlines()
        if not lines or lines[0].strip() != CHECKPOINT_TEXT_HEADER:
            raise UsageError(
                f"refused {source}: it does not start with '{CHECKPOINT_TEXT_HEADER}'; "
                f"give the text or JSON '{PROG} audit checkpoint' printed"
            )
        values = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                values[name.strip()] = value.strip()
    try:
        log_id = bytes.fromhex(str(values["log"]))
        chain = bytes.fromhex(str(values["chain"]))
        seq = int(values["seq"])
        when = float(values["time"])
        signature = base64.b64decode(str(values["signature"]), validate=True)
        key_text = values.get("signing_key")
        key = (
            Ed25519PublicKey.from_public_bytes(base64.b64decode(str(key_text), validate=True))
            if key_text
            else None
        )
        cp = Checkpoint(log_id, seq, chain, when, str(values["signer"]), signature)
    except KeyError as exc:
        raise UsageError(f"refused {source}: the checkpoint lacks {exc}") from None
    except (ValueError, binascii.Error, AuditLogError) as exc:
        raise UsageError(f"refused {source}: the checkpoint is malformed ({exc})") from None
    if len(log_id) != LOG_ID_BYTES or len(chain) != HASH_BYTES or not math.isfinite(when):
        raise UsageError(f"refused {source}: the checkpoint is malformed")
    return Published(cp, key)


def _load_published(given: str) -> Published:
    if given.lstrip().startswith(("{", CHECKPOINT_TEXT_HEADER)):
        return parse_published(given, "the checkpoint given with --against")
    path = Path(given)
    try:
        if path.stat().st_size > MAX_PUBLISHED_BYTES:
            raise UsageError(f"refused {given}: too large to be a published checkpoint")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"refused --against {given!r}: it is neither the text nor the JSON that "
            f"'{PROG} audit checkpoint' prints, nor a readable file holding it ({exc})"
        ) from None
    return parse_published(text, given)


def _check_published(
    files: LogFiles, key: Ed25519PublicKey, published: Published, *, live: bool
) -> Problem | None:
    """Is the log consistent with a checkpoint published earlier? None when it is."""
    name = "published checkpoint"
    if published.signing_key is not None and raw_public(published.signing_key) != raw_public(key):
        return Problem(
            name,
            published.seq,
            None,
            f"it was signed by audit key {key_fingerprint(raw_public(published.signing_key))}, "
            f"not by the key used to verify ({key_fingerprint(raw_public(key))}): the relay's "
            "signing key was changed, or the checkpoint is of another facility",
        )
    report = check_log(files, key, live=live, sink=published.checkpoint, sink_name=name)
    return report.problems[0] if report.problems else None


def cmd_checkpoint(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    config = home.load_config()
    key = audit_access(home, None, contents=False, passphrase=lambda: None).signing_key
    sink_path = home.checkpoint_sink(config)
    cp = CheckpointSink(sink_path).read()
    if cp is None:
        raise AuditError(
            f"there is no checkpoint in {sink_path} yet: the relay writes one when it starts "
            "and at least every second while it records. Start the relay, then run this again"
        )
    if not cp.valid(key):
        raise AuditError(
            f"refused: the checkpoint in {sink_path} is not signed by this facility's audit "
            f"key ({key_fingerprint(raw_public(key))}): it was forged or the key was changed. "
            f"Run '{PROG} audit verify' and keep the file for investigation"
        )
    if args.json:
        _say(json.dumps(checkpoint_json(cp, key), indent=2))
        return EXIT_OK
    print(checkpoint_text(cp, key), end="", flush=True)
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# legal holds
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LegalHold:
    """Records that retention must keep: a session's, or a time range's, or both."""

    id: str
    reason: str
    placed_by: str
    placed_at: float
    session: str | None = None
    start: float | None = None
    """Records at or after this time (UNIX seconds); None: since the beginning."""
    until: float | None = None
    """... and at or before this time; None: open-ended."""

    def __post_init__(self) -> None:
        if self.session is None and self.start is None and self.until is None:
            raise AuditLogError(f"legal hold {self.id} names neither a session nor a time")
        if self.start is not None and self.until is not None and self.start > self.until:
            raise AuditLogError(f"legal hold {self.id}: its range ends before it starts")

    @property
    def low(self) -> float:
        return -math.inf if self.start is None else self.start

    @property
    def high(self) -> float:
        return math.inf if self.until is None else self.until

    def covers(self, span: SegmentSpan) -> bool:
        """Does this hold keep the segment ``span``?"""
        if self.session is None:
            return span.oldest <= self.high and span.newest >= self.low
        times = span.sessions.get(self.session, ())
        return any(self.low <= t <= self.high for t in times)

    def describe(self) -> str:
        parts = []
        if self.session is not None:
            parts.append(f"session {self.session}")
        if self.start is not None or self.until is not None:
            low = _when(self.start) if self.start is not None else "the beginning"
            high = _when(self.until) if self.until is not None else "no end"
            parts.append(f"records from {low} to {high}")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "session": self.session,
            "from": _when(self.start) if self.start is not None else None,
            "until": _when(self.until) if self.until is not None else None,
            "reason": self.reason,
            "placed_by": self.placed_by,
            "placed_at": _when(self.placed_at),
        }

    @classmethod
    def from_json(cls, data: object, source: str) -> LegalHold:
        if not isinstance(data, dict):
            raise AuditLogError(f"{source}: a hold is not an object")

        def when(name: str) -> float | None:
            value = data.get(name)
            if value is None:
                return None
            try:
                parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            except ValueError:
                raise AuditLogError(f"{source}: {name} {value!r} is not a time") from None
            if parsed.tzinfo is None:
                raise AuditLogError(f"{source}: {name} {value!r} has no time zone")
            return parsed.timestamp()

        try:
            hold = cls(
                id=str(data["id"]),
                reason=str(data["reason"]),
                placed_by=str(data["placed_by"]),
                placed_at=when("placed_at") or 0.0,
                session=None if data.get("session") is None else str(data["session"]),
                start=when("from"),
                until=when("until"),
            )
        except KeyError as exc:
            raise AuditLogError(f"{source}: a hold lacks {exc}") from None
        return hold


@dataclass(frozen=True, slots=True)
class HoldFile:
    holds: tuple[LegalHold, ...] = ()
    next_number: int = 1


def holds_path(home: FacilityHome) -> Path:
    return home.audit_dir / HOLDS_FILE


def load_holds(home: FacilityHome) -> HoldFile:
    path = holds_path(home)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return HoldFile()
    except (OSError, ValueError) as exc:
        raise AuditLogError(
            f"the legal holds file {path} cannot be read ({exc}); restore it from the backup "
            "before anything is removed"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("holds"), list):
        raise AuditLogError(f"{path} is not a legal holds file; restore it from the backup")
    holds = tuple(LegalHold.from_json(h, str(path)) for h in data["holds"])
    number = data.get("next", len(holds) + 1)
    return HoldFile(holds, number if isinstance(number, int) else len(holds) + 1)


def save_holds(home: FacilityHome, holds: HoldFile) -> None:
    data = {"version": 1, "next": holds.next_number, "holds": [h.to_json() for h in holds.holds]}
    home.audit_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = json.dumps(data, indent=2) + "\n"
    _write_atomic(holds_path(home), text.encode("utf-8"))


def _reason(text: str | None, what: str) -> str:
    value = (text or "").strip()
    if not value:
        raise UsageError(f"refused: the {what} is empty; say why in a few words (--reason)")
    if len(value) > MAX_REASON_CHARS:
        raise UsageError(
            f"refused: the {what} has {len(value)} characters; keep it under {MAX_REASON_CHARS}"
        )
    return value


def _record(home: FacilityHome, kind: EventKind, detail: str, **kw: Any) -> None:
    event = admin_event(kind, detail, actor=_who(), **kw)
    record_events(home, [event])


def cmd_hold_add(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    reason = _reason(args.reason, "reason for the legal hold")
    session = args.session
    if session is not None and not (0 < len(session) <= MAX_SESSION_CHARS):
        raise UsageError(f"refused session {session!r}: give the class id the log records")
    start = parse_time(args.start).timestamp() if args.start else None
    until = parse_time(args.until).timestamp() if args.until else None
    if session is None and start is None and until is None:
        raise UsageError(
            "refused: a legal hold needs --session ID, or a time range (--from and/or "
            "--until), or both"
        )
    if start is not None and until is not None and start > until:
        raise UsageError("refused: --until is before --from; swap them")
    with _retention_lock(home.audit_dir, exclusive=True):
        current = load_holds(home)
        hold = LegalHold(
            id=f"legal-{current.next_number}",
            reason=reason,
            placed_by=_who(),
            placed_at=time.time(),
            session=session,
            start=start,
            until=until,
        )
        save_holds(home, HoldFile((*current.holds, hold), current.next_number + 1))
    # The hold is in force before it is recorded: if recording fails, data is kept.
    try:
        _record(
            home,
            EventKind.LEGAL_HOLD,
            f"legal hold {hold.id} placed on {hold.describe()}: {reason}",
            session=session,
            decision="placed",
        )
    except AuditError as exc:
        raise AuditError(
            f"legal hold {hold.id} is in force, but placing it could not be recorded in the "
            f"audit log ({exc}); fix the log ('{PROG} audit verify') and note the hold in the "
            "facility's incident log"
        ) from None
    _say(f"Placed legal hold {hold.id} on {hold.describe()}. Retention keeps these records.")
    return EXIT_OK


def cmd_hold_list(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    holds = load_holds(home).holds
    if args.json:
        _say(json.dumps([h.to_json() for h in holds], indent=2))
        return EXIT_OK
    if not holds:
        _say("No legal holds. Retention removes segments older than [audit] retain_days.")
        return EXIT_OK
    for h in holds:
        _say(f"{h.id}: {h.describe()}")
        _say(f"  placed by {h.placed_by} at {_when(h.placed_at)}: {h.reason}")
    return EXIT_OK


def cmd_hold_remove(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    reason = _reason(args.reason, "reason for lifting the legal hold")
    with _retention_lock(home.audit_dir, exclusive=True):
        current = load_holds(home)
        hold = next((h for h in current.holds if h.id == args.id), None)
        if hold is None:
            known = ", ".join(h.id for h in current.holds) or "none"
            raise UsageError(
                f"refused: there is no legal hold {args.id} (holds: {known}); "
                f"'{PROG} audit hold list' shows them"
            )
        # Recorded before it is lifted: if it cannot be recorded, the hold stays.
        try:
            _record(
                home,
                EventKind.LEGAL_HOLD,
                f"legal hold {hold.id} on {hold.describe()} lifted: {reason}",
                session=hold.session,
                decision="lifted",
            )
        except AuditError as exc:
            raise AuditError(
                f"refused: lifting legal hold {hold.id} could not be recorded in the audit "
                f"log ({exc}); the hold stays in force. Fix the log and try again"
            ) from None
        rest = tuple(h for h in current.holds if h.id != hold.id)
        save_holds(home, HoldFile(rest, current.next_number))
    _say(f"Lifted legal hold {hold.id} ({hold.describe()}).")
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# retention
# ---------------------------------------------------------------------------------------


class Keep(enum.Enum):
    """Why retention keeps a segment."""

    CURRENT = "the current segment (the relay appends to it)"
    SINK = "it holds the record the checkpoint sink vouches for"
    TOO_NEW = "it has records newer than the retention period"
    HELD = "legal hold"


@dataclass(frozen=True, slots=True)
class SegmentSpan:
    """One segment as retention sees it."""

    path: Path
    first_seq: int
    last_seq: int
    before: bytes
    """``chain[first_seq - 1]`` (the header's ``prev``)."""
    after: bytes
    """``chain[last_seq]``."""
    oldest: float
    newest: float
    sessions: Mapping[str, tuple[float, ...]] = field(repr=False)
    """Session id -> times of its records in this segment."""
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class Decision:
    span: SegmentSpan
    keep: Keep | None
    """None: remove it."""
    holds: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Removal:
    """A run of consecutive segments to remove, and the tombstone for it (unsigned)."""

    spans: tuple[SegmentSpan, ...]

    @property
    def first(self) -> int:
        return self.spans[0].first_seq

    @property
    def last(self) -> int:
        return self.spans[-1].last_seq


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    cutoff: float
    decisions: tuple[Decision, ...]
    removals: tuple[Removal, ...]
    leftovers: tuple[tuple[Path, str], ...]
    """(segment, expected SHA-256) a tombstone already lists: an interrupted run."""


def scan_segment(path: Path) -> SegmentSpan:
    """Times, sessions and chain hashes of a segment (already verified)."""
    data = path.read_bytes()
    if data[: len(MAGIC)] != MAGIC:
        raise AuditLogError(f"{path.name} is not an audit segment")
    before = after = b""
    first = last = 0
    oldest, newest = math.inf, -math.inf
    sessions: dict[str, list[float]] = {}
    for frame in read_frames(data):
        if isinstance(frame, FrameDamage):
            break
        fields = frame.fields()
        if frame.ftype == FrameType.SEGMENT:
            before = after = fields["prev"]
            first = frame.seq
        after = chain_hash(after, frame.record)
        last = frame.seq
        when = fields.get("time", fields.get("t"))
        if isinstance(when, int | float):
            oldest, newest = min(oldest, when), max(newest, when)
            session = fields.get("session")
            if isinstance(session, str):
                sessions.setdefault(session, []).append(float(when))
    if not first:
        raise AuditLogError(f"{path.name} has no segment header")
    return SegmentSpan(
        path,
        first,
        last,
        before,
        after,
        oldest,
        newest,
        {k: tuple(v) for k, v in sessions.items()},
        hashlib.sha256(data).hexdigest(),
        len(data),
    )


def plan_retention(
    home: FacilityHome,
    files: LogFiles,
    report: VerifyReport,
    *,
    retain_days: int,
    holds: Sequence[LegalHold],
    now: float,
) -> RetentionPlan:
    cutoff = now - retain_days * SECONDS_PER_DAY
    leftover_names = set(report.leftovers)
    paths = [p for p in list_segments(home.audit_dir) if p.name not in leftover_names]
    leftovers = tuple(
        (home.audit_dir / SEGMENTS_DIR / name, digest)
        for t in files.tombstones
        for name, digest in t.segments
        if name in leftover_names
    )
    sink_seq = files.sink.seq if files.sink is not None else None
    decisions: list[Decision] = []
    for i, path in enumerate(paths):
        span = scan_segment(path)
        held = tuple(h.id for h in holds if h.covers(span))
        keep: Keep | None = None
        if i == len(paths) - 1:
            keep = Keep.CURRENT
        elif sink_seq is not None and span.first_seq <= sink_seq + 1 <= span.last_seq:
            keep = Keep.SINK
        elif span.newest >= cutoff:
            keep = Keep.TOO_NEW
        elif held:
            keep = Keep.HELD
        decisions.append(Decision(span, keep, held))
    removals: list[Removal] = []
    run: list[SegmentSpan] = []
    for d in decisions:
        contiguous = not run or run[-1].last_seq + 1 == d.span.first_seq
        if d.keep is not None or not contiguous:
            if run:
                removals.append(Removal(tuple(run)))
            run = []
        if d.keep is None:
            run.append(d.span)
    if run:
        removals.append(Removal(tuple(run)))
    return RetentionPlan(cutoff, tuple(decisions), tuple(removals), leftovers)


def _tombstone_for(log_id: bytes, removal: Removal, now: float, reason: str) -> dict[str, Any]:
    return {
        "log_id": log_id,
        "first": removal.first,
        "last": removal.last,
        "before": removal.spans[0].before,
        "after": removal.spans[-1].after,
        "time": now,
        "reason": reason,
        "segments": [(s.path.name, s.digest) for s in removal.spans],
    }


def write_tombstone(audit_dir: Path, tomb: Tombstone) -> Path:
    """Durably write ``tomb`` (never over an existing one)."""
    directory = audit_dir / TOMBSTONES_DIR
    directory.mkdir(exist_ok=True, mode=0o700)
    path = directory / tomb.file_name
    if path.exists():
        raise AuditError(
            f"refused: the tombstone {path} already exists; run '{PROG} audit verify' and "
            "keep the directory as it is for investigation"
        )
    _write_atomic(path, pack_body(tomb.to_fields()))
    return path


def _remove_segment(path: Path, expected_digest: str | None) -> None:
    if expected_digest is not None:
        try:
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            return
        if actual != expected_digest:
            raise AuditError(
                f"refused to delete {path.name}: its bytes are not those the tombstone "
                f"recorded; run '{PROG} audit verify' and keep it for investigation"
            )
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def cmd_retention(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    config = home.load_config()
    retain_days = config.audit.retain_days
    now = parse_time(args.now).timestamp() if args.now else time.time()
    if retain_days == 0:
        _say("[audit] retain_days is 0: the audit log is kept in full; nothing is removed.")
        return EXIT_OK
    key = audit_access(home, None, contents=False, passphrase=lambda: None).signing_key
    live = writer_running(home.audit_dir)
    with _retention_lock(home.audit_dir, exclusive=args.apply):
        files = read_log_files(home, config)
        report = check_log(files, key, live=live)
        if not report.ok:
            raise AuditError(
                f"refused: the audit log does not verify ({report.problems[0]}); retention "
                "removes nothing from a log that does not verify, so no evidence is lost. "
                f"Run '{PROG} audit verify' and investigate first"
            )
        holds = load_holds(home).holds
        plan = plan_retention(home, files, report, retain_days=retain_days, holds=holds, now=now)
        _show_plan(plan, retain_days, applying=args.apply)
        if not args.apply:
            if plan.removals or plan.leftovers:
                _say(f"Nothing was removed. Run '{PROG} audit retention --apply' to remove them.")
            return EXIT_OK
        log_id = files.sink.log_id if files.sink is not None else _log_id(files)
        done = _apply(home, plan, key, log_id, retain_days, now)
    if not done and not plan.leftovers:
        return EXIT_OK
    try:
        _record(
            home,
            EventKind.AUDIT_REMOVED,
            "; ".join(done) or "finished removing segments an interrupted retention run left",
            decision="removed",
        )
    except AuditError as exc:
        raise AuditError(
            f"the segments were removed and signed tombstones explain the gaps, but the "
            f"removal could not be recorded in the audit log ({exc}); fix the log and note "
            "the removal in the facility's incident log"
        ) from None
    _say("Recorded in the audit log (audit.removed). 'audit verify' explains the gaps.")
    return EXIT_OK


def _log_id(files: LogFiles) -> bytes:
    for source in files.segments:
        for frame in read_frames(source.read()):
            if isinstance(frame, FrameDamage):
                break
            log_id = frame.fields().get("log")
            if isinstance(log_id, bytes):
                return log_id
            break
    raise AuditLogError("no segment header names the log")


def _apply(
    home: FacilityHome,
    plan: RetentionPlan,
    key: Ed25519PublicKey,
    log_id: bytes,
    retain_days: int,
    now: float,
) -> list[str]:
    from relay.audit_keys import load_signing_key

    signing = load_signing_key(home.root)
    if raw_public(signing.public_key()) != raw_public(key):
        raise AuditError(
            "refused: the audit signing key does not match its public half in the facility "
            "home; restore keys/ from the backup"
        )
    seg_dir = home.audit_dir / SEGMENTS_DIR
    for path, digest in plan.leftovers:
        _remove_segment(path, digest)
    if plan.leftovers:
        _fsync_dir(seg_dir)
    done: list[str] = []
    reason = f"retention: every record older than {retain_days} days (before {_when(plan.cutoff)})"
    for removal in plan.removals:
        tomb = Tombstone.sign(signing, **_tombstone_for(log_id, removal, now, reason))
        path = write_tombstone(home.audit_dir, tomb)  # durable before anything is deleted
        for span in removal.spans:  # oldest first
            _remove_segment(span.path, None)
        _fsync_dir(seg_dir)
        names = ", ".join(s.path.name for s in removal.spans)
        size = sum(s.size for s in removal.spans)
        _say(
            f"Removed records {removal.first}-{removal.last} ({names}; {size} bytes); "
            f"tombstone {TOMBSTONES_DIR}/{path.name}"
        )
        done.append(
            f"retention removed records {removal.first}-{removal.last} (segments {names}, "
            f"{size} bytes), all older than {retain_days} days; signed tombstone "
            f"{TOMBSTONES_DIR}/{path.name}"
        )
    return done


def _show_plan(plan: RetentionPlan, retain_days: int, *, applying: bool) -> None:
    _say(
        f"Retention: [audit] retain_days = {retain_days}; records before {_when(plan.cutoff)} "
        "may be removed, a whole segment at a time."
    )
    for d in plan.decisions:
        s = d.span
        span = f"{s.path.name}  records {s.first_seq}-{s.last_seq}, newest {_when(s.newest)}"
        if d.keep is None:
            _say(f"  {'remove' if applying else 'would remove'}  {span}")
        elif d.keep is Keep.HELD:
            _say(f"  keep    {span}: legal hold {', '.join(d.holds)}")
        else:
            _say(f"  keep    {span}: {d.keep.value}")
    for path, _ in plan.leftovers:
        _say(f"  {'remove' if applying else 'would remove'}  {path.name}: an interrupted run")
    if not plan.removals and not plan.leftovers:
        _say("Nothing to remove.")


# ---------------------------------------------------------------------------------------
# the commands
# ---------------------------------------------------------------------------------------


def register(group: Any, leaf: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add verify, checkpoint, retention and hold to the ``audit`` group."""
    p = leaf(
        group,
        "verify",
        cmd_verify,
        "check the audit log's chain, signatures, checkpoints and checkpoint sink",
        epilog="Exit 0 when the log verifies (a summary is printed), 1 at the first problem "
        "(its segment, record and byte, and what to do), 2 when it could not be checked.",
    )
    p.add_argument(
        "--bundle",
        metavar="FILE",
        help="verify with the audit signing key pinned in this staff bundle "
        "(default: the key in the facility home)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument(
        "--against",
        metavar="FILE_OR_TEXT",
        help="also check a checkpoint published earlier ('audit checkpoint' output) is "
        "consistent with the log",
    )

    p = leaf(
        group,
        "checkpoint",
        cmd_checkpoint,
        "print the latest signed checkpoint, to publish outside the facility",
        epilog="Keep the output somewhere the relay host cannot change (print it, mail it); "
        "'audit verify --against FILE' later proves the log still holds those records.",
    )
    p.add_argument("--json", action="store_true", help="as a JSON object")

    p = leaf(
        group,
        "retention",
        cmd_retention,
        "show (or, with --apply, remove) segments older than [audit] retain_days",
        epilog="Never removes the current segment, nor segments under legal hold ('audit "
        "hold'). Each removed range leaves a signed tombstone, so 'audit verify' still "
        "passes and names the gap; the removal is recorded as audit.removed.",
    )
    p.add_argument("--apply", action="store_true", help="remove them (default: only show)")
    p.add_argument(
        "--now",
        metavar="TIME",
        help="judge ages as if it were TIME (ISO 8601), e.g. to preview a later run",
    )

    hold_parser = group.add_parser(
        "hold",
        parents=parents,
        help="legal holds: records retention must keep",
        description="legal holds: records retention must keep",
    )
    hold_parser.set_defaults(func=None, group=hold_parser)
    holds = hold_parser.add_subparsers(title="commands", metavar="COMMAND")
    p = leaf(holds, "add", cmd_hold_add, "place a legal hold on a session and/or a time range")
    p.add_argument("--session", metavar="ID", help="the class id whose records to keep")
    p.add_argument("--from", dest="start", metavar="TIME", help="keep records from TIME")
    p.add_argument("--until", metavar="TIME", help="keep records until TIME")
    p.add_argument("--reason", required=True, metavar="TEXT", help="why (recorded)")
    p = leaf(holds, "list", cmd_hold_list, "list legal holds")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = leaf(holds, "remove", cmd_hold_remove, "lift a legal hold")
    p.add_argument("id", metavar="HOLD", help="the hold id, as 'audit hold list' shows it")
    p.add_argument("--reason", required=True, metavar="TEXT", help="why (recorded)")


__all__ = [
    "LegalHold",
    "Published",
    "RetentionPlan",
    "checkpoint_text",
    "parse_published",
    "plan_retention",
    "read_log_files",
    "register",
]
