"""``classroom-relay audit search|show|export``: security staff read the audit log.

Each command names who reads: ``--bundle STAFF_BUNDLE`` (security staff; the bundle's
staff audit key decrypts contents), or, without it, the administrator on the relay host
(the facility home's staff audit key, unlocked with the CA passphrase). Every read is
recorded in the log itself (``audit.read``: who, and what they asked) **before** anything
is shown; if it cannot be recorded, nothing is shown (fail closed).

``search`` and ``show`` find records through the index (:mod:`relay.audit_index`) and
then read each one from the log itself; ``export`` reads the whole log and does not
depend on the index. Text found in the log is shown with invisible and
direction-changing characters escaped, so a message cannot disguise itself on a
terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime as dt
import enum
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from relay.audit import EventKind
from relay.audit_access import AuditAccess
from relay.audit_index import AuditIndex, IndexedRecord, SearchFilter
from relay.audit_read import AuditReader, StoredRecord
from relay.auditlog import Checkpoint, key_fingerprint, raw_public
from relay.errors import AuditError, AuditLogError, CredentialError, RelayError
from relay.home import FacilityHome, utc_text
from relay.identity import parse_pid, valid_name

DEFAULT_SEARCH_LIMIT = 100
"""``audit search`` shows at most this many records unless ``--limit`` says otherwise."""
MAX_SEARCH_LIMIT = 100_000
MAX_TEXT_CHARS = 200
"""Longest ``--text`` accepted."""
TABLE_CONTENT_CHARS = 60
"""Contents longer than this are cut (with …) in the search table; --json has them whole."""
EXPORT_FORMAT_NAME = "classroom-relay audit export v1"

_MESSAGE_KINDS = frozenset(
    {
        EventKind.MESSAGE_DELIVERED,
        EventKind.MESSAGE_REFUSED,
        EventKind.MESSAGE_REDACTED,
        EventKind.MESSAGE_ALERT,
        EventKind.MESSAGE_HELD,
    }
)
_KINDS_BY_NAME = {kind.name_: kind for kind in EventKind}
CSV_COLUMNS = (
    "seq",
    "time_utc",
    "time",
    "kind",
    "code",
    "session",
    "actor",
    "machine",
    "learner",
    "channel",
    "recipient",
    "msg_id",
    "class_seq",
    "decision",
    "rule",
    "rules",
    "categories",
    "hold",
    "error",
    "policy_version",
    "peer",
    "detail",
    "content",
    "delivered",
    "encrypted",
)
"""Columns of a CSV export; JSONL has every field of every record."""
_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class ExportFormat(enum.Enum):
    JSONL = "jsonl"
    CSV = "csv"


# ---------------------------------------------------------------------------------------
# who reads, and recording that they did
# ---------------------------------------------------------------------------------------


def _access(home: FacilityHome, bundle: str | None, *, contents: bool) -> AuditAccess:
    from relay.audit_access import audit_access
    from relay.cli import _ca_passphrase

    return audit_access(
        home,
        Path(bundle) if bundle is not None else None,
        contents=contents,
        passphrase=lambda: _ca_passphrase(home),
    )


def record_read(home: FacilityHome, access: AuditAccess, asked: str) -> None:
    """Record that ``access.reader_name`` read the log, asking ``asked``; raises
    :class:`AuditError` (and nothing may be shown) when that cannot be recorded.

    The record names no class (``session`` is for what happened in a class); the class
    asked about is in ``detail``, with the rest of the command."""
    from relay.audit_append import admin_event, record_events

    event = admin_event(EventKind.AUDIT_READ, asked, actor=access.reader_name)
    try:
        record_events(home, [event])
    except AuditError as exc:
        raise AuditError(
            f"nothing shown: this read of the audit log could not be recorded in it ({exc}). "
            "Every read is recorded first; fix the audit log (see 'classroom-relay audit "
            "verify') and ask again"
        ) from None


def asked_text(words: Sequence[str]) -> str:
    """The command as it is recorded in ``audit.read`` (``audit search --session py101``)."""
    return " ".join(json.dumps(w, ensure_ascii=False) if _needs_quotes(w) else w for w in words)


def _needs_quotes(word: str) -> bool:
    return not word or any(c.isspace() or c in "\"'\\" for c in word)


# ---------------------------------------------------------------------------------------
# reading records the index names
# ---------------------------------------------------------------------------------------


def read_indexed(reader: AuditReader, row: IndexedRecord, *, decrypt: bool) -> StoredRecord:
    """The record ``row`` names, read from the log (the index is never shown as such)."""
    record = reader.record_at(row.segment, row.offset, decrypt=decrypt)
    if record.seq != row.seq:
        raise AuditLogError(
            f"the audit index names record {row.seq} at byte {row.offset} of {row.segment}, "
            f"but record {record.seq} is there: the log changed while it was read. Ask again; "
            "if it persists, run 'classroom-relay audit verify'"
        )
    return record


def text_matches(record: StoredRecord, needle: str) -> bool:
    """Case-insensitive substring of the decrypted content or delivered text."""
    contents = record.contents or {}
    folded = needle.casefold()
    return any(
        isinstance(v, str) and folded in v.casefold()
        for k, v in contents.items()
        if k in ("content", "delivered")
    )


# ---------------------------------------------------------------------------------------
# formatting (pure)
# ---------------------------------------------------------------------------------------


def visible(text: str) -> str:
    from relay.policy_tools import mark

    return mark(text)


def local_time(seconds: float) -> str:
    from relay.policy_tools import local_time as local

    return local(seconds)


def record_json(record: StoredRecord) -> dict[str, Any]:
    """A record for ``--json`` and exports: its fields, decrypted contents, ``time_utc``."""
    out = record.to_dict()
    out["time_utc"] = utc_text(dt.datetime.fromtimestamp(record.time, dt.UTC))
    return out


def _s(d: dict[str, Any], key: str) -> str | None:
    value = d.get(key)
    return None if value is None else str(value)


def _quoted(d: dict[str, Any], key: str) -> str | None:
    value = _s(d, key)
    return None if value is None else f'"{visible(value)}"'


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def search_row(record: StoredRecord) -> list[str]:
    d = record.to_dict()
    content = _quoted(d, "content")
    if content is None:
        detail = _s(d, "detail")
        content = "(encrypted)" if d.get("encrypted") else visible(detail) if detail else ""
    delivered = _quoted(d, "delivered")
    if delivered is not None:
        content += f" -> {delivered}"
    return [
        local_time(record.time),
        visible(_s(d, "session") or "-"),
        record.kind,
        visible(_s(d, "actor") or "-"),
        visible(_s(d, "decision") or "-"),
        visible(_s(d, "rule") or "-"),
        _cut(content, TABLE_CONTENT_CHARS),
    ]


SEARCH_HEADERS = ("TIME", "CLASS", "KIND", "ACTOR", "DECISION", "RULE", "WHAT")
"""WHAT: the contents in quotes (``-> "..."`` as delivered, when redacted), else the
record's detail."""


def _who(d: dict[str, Any]) -> str:
    who = visible(_s(d, "actor") or "relay")
    machine = _s(d, "machine")
    if machine is not None and _s(d, "learner") is not None:
        who += f" (at {visible(machine)})"
    return who


def _bracket(parts: Iterable[str | None]) -> str:
    shown = [p for p in parts if p]
    return f"  [{'; '.join(shown)}]" if shown else ""


def transcript_line(record: StoredRecord) -> str:
    """One line of ``audit show``: when, who, to whom, what, and what was decided."""
    d = record.to_dict()
    kind = _KINDS_BY_NAME.get(record.kind)
    who = _who(d)
    detail = _s(d, "detail")
    reason = visible(detail) if detail else None
    if kind in _MESSAGE_KINDS:
        to = visible(_s(d, "recipient") or "?") if d.get("channel") == "direct" else "class"
        text = _quoted(d, "content") or (
            "(contents encrypted: read with the staff audit key)"
            if d.get("encrypted")
            else "(no text)"
        )
        delivered = _quoted(d, "delivered")
        rules = _s(d, "rules")
        body = f"{who} -> {to}: {text}" + _bracket(
            [
                _s(d, "decision"),
                f"rule {_s(d, 'rule')}" if d.get("rule") else None,
                f"rules {rules}" if rules else None,
                f"found {_s(d, 'categories')}" if d.get("categories") else None,
                f"hold {_s(d, 'hold')}" if d.get("hold") else None,
                f"delivered as {delivered}" if delivered else None,
                reason if kind is not EventKind.MESSAGE_DELIVERED else None,
            ]
        )
    elif kind is EventKind.HAND:
        body = f"{who} {'raised' if detail == 'raised' else 'lowered'} a hand"
        if d.get("recipient"):
            body += f" (of {visible(str(d['recipient']))})"
    elif kind in (EventKind.REVIEW_APPROVED, EventKind.REVIEW_REJECTED, EventKind.REVIEW_EXPIRED):
        body = f"review of hold {_s(d, 'hold')}" + _bracket(
            [
                f"{_s(d, 'decision') or record.kind} by {who}",
                f"rule {_s(d, 'rule')}" if d.get("rule") else None,
                reason,
            ]
        )
    elif kind is EventKind.JOINED:
        body = f"{who} joined" + (f" ({reason})" if reason else "")
    elif kind is EventKind.LEFT:
        body = f"{who} left" + (f" ({reason})" if reason else "")
    elif kind is EventKind.SESSION_OPENED:
        body = "class opened" + (f": {reason}" if reason else "")
    elif kind is EventKind.SESSION_ENDED:
        body = f"class ended by {who}" + (f": {reason}" if reason else "")
    elif kind is EventKind.SESSION_PAUSED:
        body = "class was paused (the audit log failed)" + (f": {reason}" if reason else "")
    elif kind is EventKind.JOIN_REFUSED:
        body = f"{who} was refused entry" + _bracket([_s(d, "error"), reason])
    elif kind is EventKind.AUDIT_READ:
        body = f"{who} read the audit log" + (f": {reason}" if reason else "")
    else:
        body = f"{record.kind} {who}" + _bracket([_s(d, "decision"), _s(d, "error"), reason])
    return f"{local_time(record.time)}  {body}"


def csv_cell(value: object) -> str:
    """A CSV cell; text a spreadsheet would run as a formula starts with ``'``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return "'" + text if text.startswith(_CSV_FORMULA_START) else text


def export_bytes(records: Sequence[dict[str, Any]], fmt: ExportFormat) -> bytes:
    """The export file: one JSON object a line (every field), or CSV (:data:`CSV_COLUMNS`)."""
    if fmt is ExportFormat.JSONL:
        lines = (json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
        return "".join(lines).encode("utf-8")
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in records:
        writer.writerow([csv_cell(r.get(c)) for c in CSV_COLUMNS])
    return out.getvalue().encode("utf-8")


# ---------------------------------------------------------------------------------------
# search
# ---------------------------------------------------------------------------------------


def _usage(text: str) -> RelayError:
    from relay.cli import UsageError

    return UsageError(text)


def _name(value: str | None, what: str) -> str | None:
    if value is not None and not valid_name(value):
        from relay.identity import NAME_RULE

        raise _usage(f"refused {what} {value!r}: a {what} is {NAME_RULE}")
    return value


def _person(value: str | None) -> str | None:
    if value is None or valid_name(value) or parse_pid(value) is not None:
        return value
    if value.startswith("admin:") and valid_name(value.partition(":")[2]):
        return value
    raise _usage(
        f"refused person {value!r}: give a participant id (instructor:alice, learner:l1001, "
        "staff:sam) or a bare name (alice, l1001, pc-01)"
    )


def _kinds(values: list[str] | None) -> tuple[EventKind, ...]:
    return tuple(_KINDS_BY_NAME[v] for v in values or ())


def search_filter(args: argparse.Namespace) -> SearchFilter:
    from relay.cli import _since, parse_time

    since = _since(args.since).timestamp() if args.since is not None else None
    until = parse_time(args.until).timestamp() if args.until is not None else None
    try:
        return SearchFilter(
            session=_name(args.session, "class id"),
            person=_person(args.person),
            machine=_name(args.machine, "machine"),
            learner=_name(args.learner, "learner id"),
            kinds=_kinds(args.kind),
            decision=args.decision,
            rule=args.rule,
            since=since,
            until=until,
            with_content=args.text is not None,
        )
    except ValueError as exc:
        raise _usage(f"refused search: {exc}") from None


def _search_words(args: argparse.Namespace) -> list[str]:
    words = ["audit", "search"]
    for option in ("session", "person", "machine", "learner", "decision", "rule"):
        value = getattr(args, option)
        if value is not None:
            words += [f"--{option}", value]
    for kind in args.kind or ():
        words += ["--kind", kind]
    if args.since is not None:
        words += ["--since", args.since]
    if args.until is not None:
        words += ["--until", args.until]
    words += ["--limit", str(args.limit)]
    return words


def search_asked(args: argparse.Namespace) -> str:
    """What ``audit.read`` records of a search. The words of ``--text`` may be contents
    themselves and the record is in clear: only their length is recorded."""
    asked = asked_text(_search_words(args))
    if args.text is not None:
        asked += f" --text ({len(args.text)} characters, not recorded)"
    return asked


def _search_access(home: FacilityHome, args: argparse.Namespace) -> AuditAccess:
    """The reader's keys: contents are decrypted when the staff audit key can be had; a
    search without --text falls back to metadata when it cannot (with a note)."""
    if args.text is not None and args.no_contents:
        raise _usage("--text searches the contents, --no-contents does not read them: pick one")
    if args.no_contents:
        return _access(home, args.bundle, contents=False)
    try:
        return _access(home, args.bundle, contents=True)
    except RelayError as exc:
        if args.bundle is not None:
            raise
        if args.text is not None:
            raise CredentialError(
                "audit search --text needs the staff audit key: pass --bundle STAFF_BUNDLE, "
                f"or give the CA passphrase on the relay host ({_unsentence(str(exc))})"
            ) from None
        from relay.cli import _note

        _note(f"contents are not shown: {_unsentence(str(exc))}")
    return _access(home, None, contents=False)


def _unsentence(text: str) -> str:
    return text.strip().rstrip(".")


def cmd_audit_search(args: argparse.Namespace, home: FacilityHome) -> int:
    from relay.cli import _say, _table

    if not 1 <= args.limit <= MAX_SEARCH_LIMIT:
        raise _usage(f"refused --limit {args.limit}: give 1 to {MAX_SEARCH_LIMIT}")
    if args.text is not None and not 0 < len(args.text) <= MAX_TEXT_CHARS:
        raise _usage(f"refused --text: give 1 to {MAX_TEXT_CHARS} characters")
    flt = search_filter(args)
    home.require()
    access = _search_access(home, args)
    record_read(home, access, search_asked(args))
    found, more = _search(home, access, flt, args.text, args.limit)
    if args.json:
        for record in found:
            _say(json.dumps(record_json(record), ensure_ascii=False, sort_keys=True))
    elif found:
        _say(_table(SEARCH_HEADERS, [search_row(r) for r in found]))
    from relay.cli import _note

    shown = f"{len(found)} record{'' if len(found) == 1 else 's'}"
    if more:
        _note(f"{shown} shown; more match: narrow the search or raise --limit")
    else:
        _note(f"{shown} found")
    return 0


def _search(
    home: FacilityHome,
    access: AuditAccess,
    flt: SearchFilter,
    text: str | None,
    limit: int,
) -> tuple[list[StoredRecord], bool]:
    reader = access.reader(home)
    decrypt = access.staff_key is not None
    found: list[StoredRecord] = []
    rows = AuditIndex(home.audit_dir).search(flt, limit=None if text else limit + 1)
    with contextlib.closing(rows):
        for row in rows:
            record = read_indexed(reader, row, decrypt=decrypt and row.has_content)
            if text is not None and not text_matches(record, text):
                continue
            if len(found) == limit:
                return found, True
            found.append(record)
    return found, False


# ---------------------------------------------------------------------------------------
# show
# ---------------------------------------------------------------------------------------


def session_records(
    home: FacilityHome, access: AuditAccess, session: str
) -> Iterator[StoredRecord]:
    reader = access.reader(home)
    decrypt = access.staff_key is not None
    for row in AuditIndex(home.audit_dir).search(SearchFilter(session=session)):
        yield read_indexed(reader, row, decrypt=decrypt and row.has_content)


def cmd_audit_show(args: argparse.Namespace, home: FacilityHome) -> int:
    from relay.cli import _note, _say

    session = _name(args.session, "class id")
    assert session is not None
    home.require()
    access = _access(home, args.bundle, contents=True)
    words = ["audit", "show", session] + (["--json"] if args.json else [])
    record_read(home, access, asked_text(words))
    count = 0
    for record in session_records(home, access, session):
        count += 1
        if args.json:
            _say(json.dumps(record_json(record), ensure_ascii=False, sort_keys=True))
        else:
            _say(transcript_line(record))
    if count == 0:
        _note(f"the audit log has no record of class {session!r}")
    return 0


# ---------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SegmentHash:
    name: str
    size: int
    """Bytes hashed: a segment still being written grows; its first ``size`` bytes do not."""
    sha256: str


def segment_hash(path: Path) -> SegmentHash:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return SegmentHash(path.name, size, digest.hexdigest())


def checkpoint_json(cp: Checkpoint, access: AuditAccess) -> dict[str, Any]:
    return {
        "log": cp.log_id.hex(),
        "seq": cp.seq,
        "chain": cp.chain.hex(),
        "time": cp.time,
        "time_utc": utc_text(dt.datetime.fromtimestamp(cp.time, dt.UTC)),
        "signer": cp.signer,
        "signature": cp.signature.hex(),
        "signature_valid": cp.valid(access.signing_key),
    }


def export_manifest(
    *,
    session: str,
    fmt: ExportFormat,
    file_name: str,
    data: bytes,
    records: Sequence[StoredRecord],
    segments: Sequence[SegmentHash],
    checkpoint: Checkpoint | None,
    access: AuditAccess,
    now: dt.datetime,
) -> dict[str, Any]:
    """The chain-of-custody manifest of an export (pure)."""
    from relay.audit_keys import signing_public_text

    return {
        "format": EXPORT_FORMAT_NAME,
        "session": session,
        "records": len(records),
        "first_seq": records[0].seq if records else None,
        "last_seq": records[-1].seq if records else None,
        "file": {
            "name": file_name,
            "format": fmt.value,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
        "segments": [dataclasses.asdict(s) for s in segments],
        "checkpoint": checkpoint_json(checkpoint, access) if checkpoint is not None else None,
        "checkpoint_covers_export": bool(
            checkpoint is not None and records and checkpoint.seq >= records[-1].seq
        ),
        "signing_key": {
            "fingerprint": key_fingerprint(raw_public(access.signing_key)),
            "public": signing_public_text(access.signing_key),
        },
        "exported_by": access.reader_name,
        "exported_at": utc_text(now),
    }


def _write_new(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise _usage(
            f"refused to export: {path} exists, and an export never overwrites a file; "
            "choose another --out directory"
        ) from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def cmd_audit_export(args: argparse.Namespace, home: FacilityHome) -> int:
    from relay.audit_store import CheckpointSink, list_segments
    from relay.cli import _note, _say

    session = _name(args.session, "class id")
    assert session is not None
    fmt = ExportFormat(args.format)
    out_dir = Path(args.out)
    data_path = out_dir / f"{session}.{fmt.value}"
    manifest_path = out_dir / f"{session}.manifest.json"
    for path in (data_path, manifest_path):
        if path.exists():
            raise _usage(
                f"refused to export: {path} exists, and an export never overwrites a file; "
                "choose another --out directory"
            )
    home.require()
    config = home.load_config()
    access = _access(home, args.bundle, contents=True)
    words = ["audit", "export", "--session", session, "--format", fmt.value, "--out"]
    record_read(home, access, asked_text([*words, str(out_dir)]))
    reader = access.reader(home)
    records = [r for r in _session_scan(reader, session)]
    segments = [segment_hash(p) for p in list_segments(home.audit_dir)]
    try:
        checkpoint = CheckpointSink(home.checkpoint_sink(config)).read()
    except AuditLogError as exc:
        _note(f"the manifest has no checkpoint: {exc}")
        checkpoint = None
    data = export_bytes([record_json(r) for r in records], fmt)
    manifest = export_manifest(
        session=session,
        fmt=fmt,
        file_name=data_path.name,
        data=data,
        records=records,
        segments=segments,
        checkpoint=checkpoint,
        access=access,
        now=dt.datetime.now(dt.UTC),
    )
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_new(data_path, data)
    _write_new(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    _say(f"Exported {len(records)} record(s) of class {session} to {data_path}")
    _say(f"Manifest (hashes, signed checkpoint): {manifest_path}")
    return 0


def _session_scan(reader: AuditReader, session: str) -> Iterator[StoredRecord]:
    """Every event record of ``session``, read straight from the log (not the index)."""
    for record in reader.records(decrypt=False):
        if record.fields.get("session") == session:
            if record.encrypted and reader.staff_key is not None:
                yield reader.record_at(record.segment, record.offset)
            else:
                yield record


# ---------------------------------------------------------------------------------------
# the commands
# ---------------------------------------------------------------------------------------

_BUNDLE_HELP = (
    "read as security staff with this staff bundle (its audit key decrypts contents); "
    "default: as the administrator on the relay host, with the facility home's staff audit "
    "key (CA passphrase)"
)
_READ_NOTE = (
    "Every read is recorded in the audit log (audit.read: who, and what was asked) "
    "before anything is shown; if it cannot be recorded, nothing is shown."
)


def register(group: Any, leaf: Callable[..., argparse.ArgumentParser], parents: Any) -> None:
    """Add ``search``, ``show`` and ``export`` to the ``audit`` group."""
    p = leaf(
        group,
        "search",
        cmd_audit_search,
        "find records of the audit log by class, person, machine, kind, decision, rule, time "
        "and text",
        epilog=_READ_NOTE + " Filters combine (all must match). Times are shown in this "
        "host's local time with its offset.",
    )
    p.add_argument("--session", metavar="ID", help="class id")
    p.add_argument(
        "--person",
        metavar="WHO",
        help="sender or recipient: instructor:alice, learner:l1001, staff:sam, or a bare name",
    )
    p.add_argument("--machine", metavar="NAME", help="classroom machine")
    p.add_argument("--learner", metavar="ID", help="learner id")
    p.add_argument(
        "--kind",
        action="append",
        choices=sorted(_KINDS_BY_NAME),
        metavar="KIND",
        help="event kind, e.g. message.refused (repeatable; docs/audit.md lists them)",
    )
    p.add_argument("--decision", metavar="D", help="e.g. delivered, refused, redacted, held")
    p.add_argument("--rule", metavar="RULE", help="the policy rule that decided or matched")
    p.add_argument(
        "--since", metavar="TIME", help="a duration back from now (2h, 7d) or a time (ISO 8601)"
    )
    p.add_argument("--until", metavar="TIME", help="a time (ISO 8601, local if no offset)")
    p.add_argument(
        "--text",
        metavar="TEXT",
        help="case-insensitive text in the message contents (decrypted: needs the staff key)",
    )
    p.add_argument(
        "--no-contents",
        action="store_true",
        help="metadata only: do not decrypt contents (no staff audit key needed)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_SEARCH_LIMIT,
        metavar="N",
        help=f"show at most N records, oldest first (default {DEFAULT_SEARCH_LIMIT})",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per record")
    p.add_argument("--bundle", metavar="STAFF_BUNDLE", help=_BUNDLE_HELP)

    p = leaf(
        group,
        "show",
        cmd_audit_show,
        "a class as a transcript: who said what to whom, and what the policy decided",
        epilog=_READ_NOTE,
    )
    p.add_argument("session", metavar="SESSION", help="class id")
    p.add_argument("--json", action="store_true", help="one JSON object per record")
    p.add_argument("--bundle", metavar="STAFF_BUNDLE", help=_BUNDLE_HELP)

    p = leaf(
        group,
        "export",
        cmd_audit_export,
        "export a class's records (decrypted) with a manifest for chain of custody",
        epilog=_READ_NOTE + " Writes SESSION.jsonl or SESSION.csv and SESSION.manifest.json "
        "(record count, sequence range, SHA-256 of the export and of the segments, the latest "
        "signed checkpoint, the signing key, who exported and when) into DIR; refuses to "
        "overwrite a file. The export reads the log itself, not the index.",
    )
    p.add_argument("--session", required=True, metavar="ID", help="class id")
    p.add_argument(
        "--format",
        required=True,
        choices=[f.value for f in ExportFormat],
        help="jsonl (every field) or csv (fixed columns; formula-like cells start with ')",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    p.add_argument("--bundle", metavar="STAFF_BUNDLE", help=_BUNDLE_HELP)


__all__ = [
    "CSV_COLUMNS",
    "ExportFormat",
    "SegmentHash",
    "asked_text",
    "csv_cell",
    "export_bytes",
    "export_manifest",
    "record_json",
    "register",
    "search_row",
    "text_matches",
    "transcript_line",
]
