"""The audit log's search index: clear metadata of every event record, in SQLite.

``audit/index.sqlite3`` (0600, beside the segments) holds one row per EVENT record: where
it is (segment file, byte offset), when, its kind and code, and the clear fields staff
search by (class, who, machine, learner, recipient, decision, rules, categories, hold).
Message contents are never in it: they stay encrypted in the log, and a text search
decrypts the candidates the index names.

The index is derived data. It is brought up to date from the log before every query
(only the records after the last one it holds are read), and thrown away and rebuilt
when it no longer describes the log: another log, a segment it indexed removed (by
retention) or replaced, or its last record no longer at its place with the same bytes
(the log was cut back or repaired). It is never evidence: what staff are shown is read
again from the log itself, and ``classroom-relay audit verify`` checks the log.

Query building is pure (:func:`build_query`): a :class:`SearchFilter` in, parameterised
SQL out; values are never put into the SQL text.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.audit import EventKind
from relay.audit_read import AuditReader, StoredRecord
from relay.auditlog import MAGIC, Frame, FrameDamage, read_frames
from relay.errors import AuditLogError

INDEX_NAME = "index.sqlite3"
SCHEMA_VERSION = "1"
BUSY_TIMEOUT_S = 30.0
"""How long a query waits for another process that is updating the index."""
CATCH_UP_BATCH = 500
"""Rows inserted per statement while catching up."""

_COLUMNS = (
    "seq",
    "segment",
    "offset",
    "time",
    "kind",
    "code",
    "session",
    "actor",
    "actor_name",
    "machine",
    "learner",
    "recipient",
    "recipient_name",
    "channel",
    "msg_id",
    "class_seq",
    "decision",
    "rule",
    "rules",
    "categories",
    "hold",
    "error",
    "has_content",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    segment TEXT NOT NULL,
    offset INTEGER NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    code TEXT,
    session TEXT,
    actor TEXT,
    actor_name TEXT,
    machine TEXT,
    learner TEXT,
    recipient TEXT,
    recipient_name TEXT,
    channel TEXT,
    msg_id TEXT,
    class_seq INTEGER,
    decision TEXT,
    rule TEXT,
    rules TEXT,
    categories TEXT,
    hold TEXT,
    error TEXT,
    has_content INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_session ON records (session, seq);
CREATE INDEX IF NOT EXISTS records_time ON records (time);
CREATE INDEX IF NOT EXISTS records_actor ON records (actor_name);
CREATE INDEX IF NOT EXISTS records_recipient ON records (recipient_name);
CREATE INDEX IF NOT EXISTS records_kind ON records (kind);
CREATE INDEX IF NOT EXISTS records_learner ON records (learner);
CREATE INDEX IF NOT EXISTS records_machine ON records (machine);
CREATE INDEX IF NOT EXISTS records_hold ON records (hold);
"""
# Built from the constant column names only; every value is a parameter.
_NAMES = ", ".join(_COLUMNS)
_MARKS = ", ".join("?" for _ in _COLUMNS)
_INSERT = f"INSERT INTO records ({_NAMES}) VALUES ({_MARKS})"  # noqa: S608
_SHOWN = ", ".join(c for c in _COLUMNS if not c.endswith("_name"))
_SELECT = f"SELECT {_SHOWN} FROM records"  # noqa: S608


# ---------------------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexedRecord:
    """One row of the index: where an event record is, and its clear metadata."""

    seq: int
    segment: str
    offset: int
    time: float
    kind: str
    code: str | None
    session: str | None
    actor: str | None
    machine: str | None
    learner: str | None
    recipient: str | None
    channel: str | None
    msg_id: str | None
    class_seq: int | None
    decision: str | None
    rule: str | None
    rules: str | None
    categories: str | None
    hold: str | None
    error: str | None
    has_content: bool

    def __post_init__(self) -> None:
        if self.seq < 1 or self.offset < len(MAGIC):
            raise ValueError(f"index row {self.seq}: impossible record number or offset")


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """What staff search the index by; every field set narrows the search (AND).

    ``person``: a participant id (``instructor:alice``, ``learner:l1001``, ``staff:sam``)
    matches the sender (actor) or the recipient exactly; a bare name (``alice``,
    ``l1001``, ``pc-01``) matches it in any role, and a learner by id.
    """

    session: str | None = None
    person: str | None = None
    machine: str | None = None
    learner: str | None = None
    kinds: tuple[EventKind, ...] = ()
    decision: str | None = None
    rule: str | None = None
    """The deciding rule, or any rule that matched (``rules``)."""
    since: float | None = None
    """UNIX seconds, inclusive."""
    until: float | None = None
    """UNIX seconds, exclusive."""
    with_content: bool = False
    """Only records with (encrypted) contents: the candidates of a text search."""

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ValueError("the end of the time range must be after its start")
        for name in ("session", "person", "machine", "learner", "decision", "rule"):
            value = getattr(self, name)
            if value is not None and not value:
                raise ValueError(f"an empty {name} matches nothing; leave it out instead")


def _name_of(pid: str | None) -> str | None:
    """``instructor:alice`` -> ``alice``; a bare name stays as it is."""
    if pid is None:
        return None
    return pid.rpartition(":")[2]


def build_query(
    flt: SearchFilter, *, limit: int | None = None
) -> tuple[str, tuple[str | int | float, ...]]:
    """The SQL selecting the rows that match ``flt``, in log order, and its parameters."""
    where: list[str] = []
    params: list[str | int | float] = []
    if flt.session is not None:
        where.append("session = ?")
        params.append(flt.session)
    if flt.person is not None:
        if ":" in flt.person:
            where.append("(actor = ? OR recipient = ?)")
            params += [flt.person, flt.person]
        else:
            where.append("(actor_name = ? OR recipient_name = ? OR learner = ?)")
            params += [flt.person, flt.person, flt.person]
    if flt.machine is not None:
        where.append("machine = ?")
        params.append(flt.machine)
    if flt.learner is not None:
        where.append("learner = ?")
        params.append(flt.learner)
    if flt.kinds:
        where.append(f"kind IN ({', '.join('?' for _ in flt.kinds)})")
        params += [k.name_ for k in flt.kinds]
    if flt.decision is not None:
        where.append("decision = ?")
        params.append(flt.decision)
    if flt.rule is not None:
        where.append("(rule = ? OR instr(',' || coalesce(rules, '') || ',', ?) > 0)")
        params += [flt.rule, f",{flt.rule},"]
    if flt.since is not None:
        where.append("time >= ?")
        params.append(flt.since)
    if flt.until is not None:
        where.append("time < ?")
        params.append(flt.until)
    if flt.with_content:
        where.append("has_content = 1")
    sql = _SELECT
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq"
    if limit is not None:
        if limit < 1:
            raise ValueError("a limit is at least 1")
        sql += " LIMIT ?"
        params.append(limit)
    return sql, tuple(params)


def _text(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    return value if isinstance(value, str) else None


def row_of(record: StoredRecord) -> tuple[str | int | float | None, ...]:
    """The index row of an event record (its clear fields only)."""
    f = record.fields
    actor, recipient = _text(f, "actor"), _text(f, "recipient")
    class_seq = f.get("class_seq")
    return (
        record.seq,
        record.segment,
        record.offset,
        record.time,
        record.kind,
        _text(f, "code"),
        _text(f, "session"),
        actor,
        _name_of(actor),
        _text(f, "machine"),
        _text(f, "learner"),
        recipient,
        _name_of(recipient),
        _text(f, "channel"),
        _text(f, "msg_id"),
        class_seq if isinstance(class_seq, int) and not isinstance(class_seq, bool) else None,
        _text(f, "decision"),
        _text(f, "rule"),
        _text(f, "rules"),
        _text(f, "categories"),
        _text(f, "hold"),
        _text(f, "error"),
        1 if record.encrypted else 0,
    )


def _indexed(row: sqlite3.Row) -> IndexedRecord:
    return IndexedRecord(
        seq=row["seq"],
        segment=row["segment"],
        offset=row["offset"],
        time=row["time"],
        kind=row["kind"],
        code=row["code"],
        session=row["session"],
        actor=row["actor"],
        machine=row["machine"],
        learner=row["learner"],
        recipient=row["recipient"],
        channel=row["channel"],
        msg_id=row["msg_id"],
        class_seq=row["class_seq"],
        decision=row["decision"],
        rule=row["rule"],
        rules=row["rules"],
        categories=row["categories"],
        hold=row["hold"],
        error=row["error"],
        has_content=bool(row["has_content"]),
    )


# ---------------------------------------------------------------------------------------
# where the index stands against the log
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mark:
    """The last record the index holds, and the log it was read from."""

    log_id: str
    seq: int
    segment: str
    offset: int
    digest: str
    """SHA-256 of that record's bytes, to notice the same number at the same place with
    other bytes (a log cut back and written again)."""


def staleness(
    mark: Mark | None, indexed: set[str], present: list[str], directory: Path
) -> str | None:
    """Why an index must be rebuilt (a few words), or None when it describes the log.

    ``indexed``: the segments the index has read; ``present``: those in the log now."""
    missing = sorted(indexed - set(present))
    if missing:
        return f"segment {missing[0]} is no longer in the log"
    if mark is None:
        return None
    if _log_id(directory, present) != mark.log_id:
        return "the log is another one"
    if _frame_digest(directory, mark.segment, mark.offset, mark.seq) != mark.digest:
        return f"record {mark.seq} is no longer where the index has it"
    return None


def _log_id(directory: Path, present: list[str]) -> str | None:
    """The log id in the header of the first segment present (hex)."""
    if not present:
        return None
    try:
        header = AuditReader(directory).record_at(present[0], len(MAGIC), decrypt=False)
    except AuditLogError:
        return None
    log_id = header.fields.get("log")
    return log_id.hex() if isinstance(log_id, bytes) else None


def _frame_digest(directory: Path, segment: str, offset: int, seq: int) -> str | None:
    """SHA-256 of the record at ``offset`` of ``segment`` if its number is ``seq``."""
    path = directory / "segments" / segment
    try:
        with path.open("rb") as f:
            f.seek(offset)
            head = f.read(4)
            data = head + f.read(int.from_bytes(head, "big") + 4)
    except OSError:
        return None
    for frame in read_frames(data, 0):
        if isinstance(frame, FrameDamage) or frame.seq != seq:
            return None
        return _digest(frame)
    return None


def _digest(frame: Frame) -> str:
    return hashlib.sha256(frame.record).hexdigest()


# ---------------------------------------------------------------------------------------
# the index
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refresh:
    """What bringing the index up to date did."""

    added: int
    rebuilt: str | None
    """Why it was rebuilt, or None."""


class AuditIndex:
    """The index of the audit log in ``directory`` (``audit/`` of the facility home)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / INDEX_NAME

    def _connect(self) -> sqlite3.Connection:
        if not self.directory.is_dir():
            raise AuditLogError(
                f"there is no audit log in {self.directory}: the relay writes it when it first runs"
            )
        try:
            return self._connect_once()
        except sqlite3.DatabaseError:
            # Derived data: an index that is not a readable database is made again.
            self.path.unlink(missing_ok=True)
        try:
            return self._connect_once()
        except sqlite3.DatabaseError as exc:
            raise AuditLogError(
                f"the audit index {self.path} cannot be made ({exc}); check the disk and the "
                "permissions of the audit directory"
            ) from None

    def _connect_once(self) -> sqlite3.Connection:
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.chmod(self.path, 0o600)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    @contextlib.contextmanager
    def _open(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    def refresh(self) -> Refresh:
        """Bring the index up to date with the log (rebuilding it if need be)."""
        with self._open() as db:
            return self._refresh(db)

    def _refresh(self, db: sqlite3.Connection) -> Refresh:
        db.execute("BEGIN IMMEDIATE")
        try:
            result = self._catch_up(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    def _catch_up(self, db: sqlite3.Connection) -> Refresh:
        reader = AuditReader(self.directory)
        present = [p.name for p in reader.segments()]
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        indexed = {row[0] for row in db.execute("SELECT name FROM segments")}
        why: str | None
        if meta.get("schema") not in (None, SCHEMA_VERSION):
            why = "the index has another format"
        else:
            why = staleness(_mark_of(meta), indexed, present, self.directory)
        if why is not None:
            db.execute("DELETE FROM records")
            db.execute("DELETE FROM segments")
            db.execute("DELETE FROM meta")
            meta = {}
        mark = _mark_of(meta)
        log_id = _log_id(self.directory, present) or ""
        batch: list[tuple[str | int | float | None, ...]] = []
        added = 0
        last: StoredRecord | None = None
        for record in reader.records(from_seq=mark.seq + 1 if mark else 1, decrypt=False):
            batch.append(row_of(record))
            last = record
            if len(batch) >= CATCH_UP_BATCH:
                db.executemany(_INSERT, batch)
                added += len(batch)
                batch.clear()
        db.executemany(_INSERT, batch)
        added += len(batch)
        db.executemany(
            "INSERT OR IGNORE INTO segments (name) VALUES (?)", [(name,) for name in present]
        )
        if last is not None:
            digest = _frame_digest(self.directory, last.segment, last.offset, last.seq)
            new = {
                "schema": SCHEMA_VERSION,
                "log_id": log_id,
                "seq": str(last.seq),
                "segment": last.segment,
                "offset": str(last.offset),
                "digest": digest or "",
            }
            db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(new.items())
            )
        return Refresh(added, why)

    def search(
        self, flt: SearchFilter, *, limit: int | None = None
    ) -> Generator[IndexedRecord, None, None]:
        """The rows matching ``flt`` in log order, after bringing the index up to date."""
        sql, params = build_query(flt, limit=limit)
        with self._open() as db:
            self._refresh(db)
            for row in db.execute(sql, params):
                yield _indexed(row)

    def count(self) -> int:
        with self._open() as db:
            (n,) = db.execute("SELECT count(*) FROM records").fetchone()
            return int(n)


def _mark_of(meta: dict[str, str]) -> Mark | None:
    try:
        return Mark(
            meta["log_id"],
            int(meta["seq"]),
            meta["segment"],
            int(meta["offset"]),
            meta["digest"],
        )
    except (KeyError, ValueError):
        return None


__all__ = [
    "INDEX_NAME",
    "AuditIndex",
    "IndexedRecord",
    "Mark",
    "Refresh",
    "SearchFilter",
    "build_query",
    "row_of",
    "staleness",
]
