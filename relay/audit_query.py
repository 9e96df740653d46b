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
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from relay.audit import EventKind
from relay.audit_access import AuditAccess
from relay.audit_editor import (
    REBUILD_KINDS,
    EditorRecord,
    EditorRecordRef,
    RebuildError,
    RebuildPlan,
    RebuiltWorkspace,
    clashes,
    path_parts,
    rebuild,
    valid_workspace,
)
from relay.audit_index import AuditIndex, IndexedRecord, SearchFilter
from relay.audit_media import (
    MEDIA_KINDS,
    SCREEN_KINDS,
    MediaError,
    ShareRecording,
    ShareTally,
    share_id_of,
)
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
    elif record.kind in _EDITOR_SHOWN:
        body = _editor_body(record.kind, d, who)
    elif record.kind in SCREEN_KINDS:
        body = _screen_body(record.kind, d, who)
    else:
        body = f"{record.kind} {who}" + _bracket([_s(d, "decision"), _s(d, "error"), reason])
    return f"{local_time(record.time)}  {body}"


# The shared editor's records, by name (docs/audit.md, CR320-CR327).
_EDITOR_CHANGES = frozenset({"editor.update", "editor.redacted", "editor.alert", "editor.refused"})
_EDITOR_SHOWN = _EDITOR_CHANGES | {"editor.snapshot", "editor.mode"}
EDITOR_UNSHOWN = frozenset({"editor.sync", "editor.presence"})
"""Editor records the transcript leaves out (counted in a note; ``--json`` has them)."""
TRANSCRIPT_TYPED_CHARS = 200
"""Text typed into the editor longer than this is cut (with …) in the transcript."""
TYPING_RUN_GAP_S = 60.0
"""Plain edits by one person in one workspace with less than this between them, and no
other line of the transcript between them, are shown as one line."""
_PLAIN_EDIT = re.compile(r"(?P<files>[^;]+): \+(?P<ins>\d+) -(?P<rem>\d+) chars")
_REFUSED_EDIT = re.compile(
    r"refused change of (?P<entries>\d+) file entry\(ies\), \+(?P<ins>\d+) chars"
)


def _typed(text: str | None, encrypted: bool) -> str:
    if text is None:
        return "(contents encrypted: read with the staff audit key)" if encrypted else ""
    shown = visible(text)
    if len(shown) > TRANSCRIPT_TYPED_CHARS:
        shown = shown[: TRANSCRIPT_TYPED_CHARS - 1] + f"… ({len(text)} characters)"
    return f'"{shown}"'


def _place(ws: str, files: str) -> str:
    """``class/main.py``, or ``class (a.py, b.py)`` for several files."""
    names = [f.strip() for f in files.split(",")]
    if len(names) == 1:
        return f"{visible(ws)}/{visible(names[0])}"
    return f"{visible(ws)} ({visible(files)})"


_FILE_OPS = ("created ", "deleted ", "renamed ")


def _editor_body(kind: str, d: dict[str, Any], who: str) -> str:
    ws = _s(d, "channel") or "?"
    detail = _s(d, "detail")
    if kind == "editor.snapshot":
        return f"workspace {visible(ws)} recorded whole" + (
            f" ({visible(detail)})" if detail else ""
        )
    if kind == "editor.mode":
        return f"{who} set the editor: {visible(detail or '?')}"
    # detail (relay.editor_session): "created a.py; a.py: +9 -0 chars; <reason>"
    place, what, reasons = visible(ws), [], []
    for part in (detail or "").split("; ") if detail else ():
        edit = _PLAIN_EDIT.fullmatch(part)
        if edit is not None and place == visible(ws):
            place = _place(ws, edit["files"])
            what.append(f"+{edit['ins']} -{edit['rem']} chars")
        elif part.startswith(_FILE_OPS):
            what.append(visible(part))
        elif (refused := _REFUSED_EDIT.fullmatch(part)) is not None:
            # A refused change's record names no file (a name may be what was refused).
            what.append(f"+{refused['ins']} chars")
            if refused["entries"] != "0":
                what.append(f"{refused['entries']} file entry(ies)")
        else:
            reasons.append(visible(part))
    typed = _typed(_s(d, "content"), bool(d.get("encrypted")))
    tail = f", typed {typed}" if typed else ""
    if kind == "editor.refused":
        body = f"{who}'s change to {place} was refused" + (f" ({', '.join(what)})" if what else "")
    else:
        body = f"{who} edited {place}" + (f": {', '.join(what)}" if what else "")
    return (
        body
        + tail
        + _bracket(
            [
                _s(d, "decision"),
                f"rule {_s(d, 'rule')}" if d.get("rule") else None,
                f"rules {_s(d, 'rules')}" if d.get("rules") else None,
                f"found {_s(d, 'categories')}" if d.get("categories") else None,
                f"error {_s(d, 'error')}" if d.get("error") else None,
                *reasons,
            ]
        )
    )


_STARTED_DETAIL = re.compile(r"share [^;]+; watched by (?P<audience>[^;]+)(?:; (?P<rest>.*))?")


def _screen_body(kind: str, d: dict[str, Any], who: str) -> str:
    """A screen share's record (docs/audit.md, CR330-CR335) as a transcript line."""
    detail = _s(d, "detail") or ""
    share = visible(share_id_of(detail) or "?")
    if kind == "screen.started":
        match = _STARTED_DETAIL.match(detail)
        said = (
            [f"watched by {visible(match['audience'])}", visible(match["rest"] or "") or None]
            if match
            else [visible(detail)]
        )
        return f"share {share} started by {who}" + _bracket(
            [*said, f"rule {_s(d, 'rule')}" if d.get("rule") else None]
        )
    if kind == "screen.watched":
        return f"share {share} watched by {who}"
    if kind == "screen.stopped":
        reason = detail.split(": ", 1)[1] if ": " in detail else ""
        return f"share {share} stopped by {who}" + (f": {visible(reason)}" if reason else "")
    if kind == "screen.asked":
        asked = visible(_s(d, "recipient") or "?")
        return f"{who} asked {asked} to show their screen"
    # screen.media / screen.thumbnail shown one by one (Transcript summarises them)
    return f"{kind} {who}" + _bracket([visible(detail) or None])


@dataclasses.dataclass(slots=True)
class _TypingRun:
    """Plain delivered edits of one person in one workspace, shown as one line."""

    first: StoredRecord
    last: StoredRecord
    actor: str
    ws: str
    files: dict[str, None]
    inserted: int
    removed: int
    typed: list[str]
    encrypted: bool
    rule: str | None
    count: int = 1

    def line(self) -> str:
        if self.count == 1:
            return transcript_line(self.first)
        d = self.first.to_dict()
        text = "".join(self.typed) if not self.encrypted else None
        typed = _typed(text, self.encrypted)
        place = _place(self.ws, ", ".join(self.files))
        body = (
            f"{_who(d)} edited {place}: +{self.inserted} -{self.removed} chars in "
            f"{self.count} changes until {local_time(self.last.time)[11:19]}"
            + (f", typed {typed}" if typed else "")
            + _bracket(["delivered", f"rule {visible(self.rule)}" if self.rule else None])
        )
        return f"{local_time(self.first.time)}  {body}"


def _plain_edit(record: StoredRecord) -> _TypingRun | None:
    d = record.to_dict()
    if record.kind != "editor.update" or d.get("decision") != "delivered":
        return None
    match = _PLAIN_EDIT.fullmatch(_s(d, "detail") or "")
    if match is None or d.get("rules") or d.get("categories"):
        return None
    content = _s(d, "content")
    return _TypingRun(
        first=record,
        last=record,
        actor=_s(d, "actor") or "",
        ws=_s(d, "channel") or "?",
        files=dict.fromkeys(f.strip() for f in match["files"].split(",")),
        inserted=int(match["ins"]),
        removed=int(match["rem"]),
        typed=[content or ""],
        encrypted=content is None and bool(d.get("encrypted")),
        rule=_s(d, "rule"),
    )


class Transcript:
    """The lines of ``audit show`` for records given in order: one line per record, but
    an editor's keystrokes by one person in one workspace are joined into one line, and
    editor sync and presence records are left out (counted in :attr:`unshown`)."""

    def __init__(self) -> None:
        self.unshown = 0
        self._run: _TypingRun | None = None
        self._media = ShareTally(contents=False)
        self._media_pending: dict[str, StoredRecord] = {}
        """Shares with pictures not yet summarised: the first media record of each."""

    def feed(self, record: StoredRecord) -> list[str]:
        if record.kind in EDITOR_UNSHOWN:
            self.unshown += 1
            return []
        if record.kind in MEDIA_KINDS:
            share = self._tally(record)
            if share is not None:
                self._media_pending.setdefault(share.id, record)
                return []
            return [*self._flush_run(), transcript_line(record)]
        if record.kind == "screen.stopped":
            share_id = share_id_of(_s(record.to_dict(), "detail"))
            out = self._flush_run()
            if share_id is not None:
                out += self._summary(share_id)
            return [*out, transcript_line(record)]
        edit = _plain_edit(record)
        run = self._run
        if edit is not None and run is not None and self._joins(run, edit):
            run.last = edit.last
            run.files.update(edit.files)
            run.inserted += edit.inserted
            run.removed += edit.removed
            run.typed += edit.typed
            run.encrypted = run.encrypted or edit.encrypted
            run.count += 1
            return []
        out = self._flush_run()
        if edit is not None:
            self._run = edit
        else:
            out.append(transcript_line(record))
        return out

    @staticmethod
    def _joins(run: _TypingRun, edit: _TypingRun) -> bool:
        return (
            edit.actor == run.actor
            and edit.ws == run.ws
            and edit.rule == run.rule
            and 0 <= edit.first.time - run.last.time < TYPING_RUN_GAP_S
        )

    def _flush_run(self) -> list[str]:
        """The line of the edits still being joined, if any."""
        run, self._run = self._run, None
        return [run.line()] if run is not None else []

    def _tally(self, record: StoredRecord) -> ShareRecording | None:
        try:
            return self._media.feed(record.to_dict())
        except MediaError:
            return None  # shown as a line of its own

    def _summary(self, share_id: str) -> list[str]:
        """One line for a share's frames and thumbnails (at the time of its first)."""
        first = self._media_pending.pop(share_id, None)
        share = self._media.shares.get(share_id)
        if first is None or share is None:
            return []
        return [f"{local_time(first.time)}  {visible(share.summary())}"]

    def finish(self) -> list[str]:
        """The lines still held back: edits being joined, shares not yet summarised."""
        out = self._flush_run()
        for share_id in list(self._media_pending):
            out += self._summary(share_id)
        return out


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
    if args.editor and args.media:
        raise _usage("--editor shows the editor's files, --media the screen shares: pick one")
    if args.editor:
        return cmd_audit_show_editor(args, home, session)
    for option in ("at", "ws", "file", "out"):
        if getattr(args, option) is not None:
            raise _usage(f"--{option} goes with --editor (the files of the shared editor)")
    if args.media:
        return cmd_audit_show_media(args, home, session)
    home.require()
    access = _access(home, args.bundle, contents=True)
    words = ["audit", "show", session] + (["--json"] if args.json else [])
    record_read(home, access, asked_text(words))
    count = 0
    transcript = Transcript()
    for record in session_records(home, access, session):
        count += 1
        if args.json:
            _say(json.dumps(record_json(record), ensure_ascii=False, sort_keys=True))
        else:
            for line in transcript.feed(record):
                _say(line)
    for line in transcript.finish():
        _say(line)
    if count == 0:
        _note(f"the audit log has no record of class {session!r}")
    if transcript.unshown:
        _note(
            f"{transcript.unshown} editor sync and presence record(s) not shown "
            "(--json shows every record)"
        )
    return 0


# ---------------------------------------------------------------------------------------
# show --media: the screen shares of a class
# ---------------------------------------------------------------------------------------


def _screen_event_kinds() -> tuple[EventKind, ...]:
    return tuple(k for k in EventKind if k.name_ in SCREEN_KINDS)


def session_shares(home: FacilityHome, access: AuditAccess, session: str) -> list[ShareRecording]:
    """The class's screen shares from their records' clear fields (found by the index,
    read from the log; nothing decrypted)."""
    reader = access.reader(home)
    tally = ShareTally(contents=False)
    flt = SearchFilter(session=session, kinds=_screen_event_kinds())
    rows = AuditIndex(home.audit_dir).search(flt)
    with contextlib.closing(rows):
        for row in rows:
            tally.feed(read_indexed(reader, row, decrypt=False).to_dict())
    return tally.recordings()


def share_listing(share: ShareRecording) -> list[str]:
    """A share for ``audit show SESSION --media``: who, when, how it ended, its pictures."""
    started = local_time(share.started) if share.started is not None else "(start not recorded)"
    by = visible(share.publisher or "?")
    lines = [f"share {visible(share.id)}  started {started} by {by}"]
    if share.audience:
        lines.append(
            f"  watched by {visible(share.audience)}"
            + (
                f": {', '.join(sorted({visible(w) for _, w in share.watchers}))}"
                if share.watchers
                else " (nobody watched)"
            )
        )
    if share.stopped is not None:
        why = f": {visible(share.reason)}" if share.reason else ""
        lines.append(
            f"  stopped {local_time(share.stopped)} by {visible(share.stopped_by or '?')}{why}"
        )
    else:
        lines.append("  no stop recorded (the log ends while it ran, or the relay stopped)")
    lines.append(f"  {visible(share.summary().split(': ', 1)[1])}")
    lines.append(f"  records {share.first_seq}..{share.last_seq}")
    return lines


def cmd_audit_show_media(args: argparse.Namespace, home: FacilityHome, session: str) -> int:
    from relay.cli import _note, _say

    home.require()
    access = _access(home, args.bundle, contents=False)
    words = ["audit", "show", session, "--media"] + (["--json"] if args.json else [])
    record_read(home, access, asked_text(words))
    shares = session_shares(home, access, session)
    if not shares:
        _note(f"the audit log has no screen share of class {session!r}")
        return 0
    for share in shares:
        if args.json:
            _say(json.dumps(share.to_json(), ensure_ascii=False, sort_keys=True))
        else:
            for line in share_listing(share):
                _say(line)
    if not args.json:
        _note(
            f"{len(shares)} share(s); export them as video with 'classroom-relay audit export "
            f"--session {session} --media DIR'"
        )
    return 0


# ---------------------------------------------------------------------------------------
# show --editor: the shared editor's files as they were
# ---------------------------------------------------------------------------------------


def _editor_kinds() -> tuple[EventKind, ...]:
    return tuple(k for k in EventKind if k.name_ in REBUILD_KINDS)


def editor_refs(home: FacilityHome, session: str) -> Iterator[EditorRecordRef]:
    """The class's snapshot and change records of the editor, in log order (index)."""
    kinds = _editor_kinds()
    rows = AuditIndex(home.audit_dir).search(SearchFilter(session=session, kinds=kinds))
    with contextlib.closing(rows):
        for row in rows:
            if row.kind in REBUILD_KINDS and row.channel is not None:
                yield EditorRecordRef(
                    row.seq, row.time, row.kind, row.channel, row.segment, row.offset
                )


def read_editor_record(reader: AuditReader, session: str, ref: EditorRecordRef) -> EditorRecord:
    """The record ``ref`` names, read (and decrypted) from the log, checked against it."""
    record = reader.record_at(ref.segment, ref.offset, decrypt=True)
    fields = record.fields
    if (
        record.seq != ref.seq
        or record.kind != ref.kind
        or fields.get("session") != session
        or fields.get("channel") != ref.ws
    ):
        raise AuditLogError(
            f"the audit index names record {ref.seq} ({ref.kind} of {ref.ws}) at byte "
            f"{ref.offset} of {ref.segment}, but the log has record {record.seq} "
            f"({record.kind}) there: the log changed while it was read. Ask again; if it "
            "persists, run 'classroom-relay audit verify'"
        )
    contents = record.contents or {}
    delivered = contents.get("delivered", fields.get("delivered"))
    if record.encrypted and record.contents is None:
        raise CredentialError("rebuilding editor files needs the staff audit key (--bundle)")
    return EditorRecord(ref, delivered if isinstance(delivered, str) else None)


def rebuild_workspaces(
    home: FacilityHome,
    access: AuditAccess,
    session: str,
    at: float | None,
    ws: str | None,
) -> list[RebuiltWorkspace]:
    """Every workspace of ``session`` (or just ``ws``) as it was at ``at`` (None: now)."""
    plan = RebuildPlan(at, ws).add_all(editor_refs(home, session))
    reader = access.reader(home)
    out: list[RebuiltWorkspace] = []
    for name in plan.workspaces():
        records = [read_editor_record(reader, session, ref) for ref in plan.records(name)]
        try:
            out.append(rebuild(name, records))
        except RebuildError as exc:
            raise AuditLogError(
                f"workspace {name} cannot be rebuilt: {exc}; run 'classroom-relay audit verify'"
            ) from None
    return out


def _as_of(ref: EditorRecordRef | None) -> str:
    if ref is None:
        return "no change recorded"
    return f"as of record {ref.seq} at {local_time(ref.time)}"


def _incomplete(w: RebuiltWorkspace) -> str | None:
    parts = []
    if w.pending:
        shown = ", ".join(str(s) for s in w.pending[:5]) + (", ..." if len(w.pending) > 5 else "")
        parts.append(
            f"{len(w.pending)} change(s) (records {shown}) depend on changes that are not "
            "in the audit log and could not be applied"
        )
    if w.not_text:
        parts.append(f"entries that are not text: {', '.join(map(repr, w.not_text))}")
    return "; ".join(parts) or None


def workspace_json(session: str, w: RebuiltWorkspace, name: str | None) -> dict[str, Any]:
    """One workspace for ``--json``: where the rebuild stopped, and its files."""
    ref = w.as_of
    return {
        "session": session,
        "ws": w.ws,
        "as_of_seq": ref.seq if ref else None,
        "as_of_time": ref.time if ref else None,
        "as_of_time_utc": utc_text(dt.datetime.fromtimestamp(ref.time, dt.UTC)) if ref else None,
        "snapshot_seq": w.snapshot.seq if w.snapshot else None,
        "changes_applied": w.applied,
        "complete": w.complete,
        "pending_seqs": list(w.pending),
        "files": [
            {"name": f.name, "chars": f.chars, "lines": f.lines, "text": f.text}
            for f in w.files
            if name is None or f.name == name
        ],
    }


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def file_listing(w: RebuiltWorkspace, name: str | None) -> list[str]:
    """The files of ``w`` for a terminal: a header each, then the numbered lines (so no
    line of a file can pass for a header), characters that would disguise text escaped."""
    out: list[str] = []
    for f in w.files:
        if name is not None and f.name != name:
            continue
        out.append(
            f"{visible(w.ws)}/{visible(f.name)}  ({_count(f.chars, 'char')}, "
            f"{_count(f.lines, 'line')}; {_as_of(w.as_of)})"
        )
        lines = f.text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        width = max(4, len(str(len(lines))))
        for i, line in enumerate(lines, 1):
            shown = "".join(c if c == "\t" else visible(c) for c in line)
            out.append(f"{i:>{width}}  {shown}".rstrip())
        out.append("")
    return out


def _editor_words(args: argparse.Namespace, session: str) -> list[str]:
    words = ["audit", "show", session, "--editor"]
    for option in ("at", "ws", "file", "out"):
        value = getattr(args, option)
        if value is not None:
            words += [f"--{option}", str(value)]
    return words + (["--json"] if args.json else [])


def cmd_audit_show_editor(args: argparse.Namespace, home: FacilityHome, session: str) -> int:
    from relay.cli import _note, _say, _since, _warn

    ws = args.ws
    if ws is not None and not valid_workspace(ws):
        raise _usage(f"refused --ws {ws!r}: give 'class' or 'learner:NAME' (a learner id)")
    if args.file is not None and not args.file:
        raise _usage("refused --file '': give a file name, e.g. main.py or src/app.py")
    if args.out is not None and args.json:
        raise _usage("--out writes files, --json prints them: pick one")
    at = _since(args.at).timestamp() if args.at is not None else None
    out_dir = Path(args.out) if args.out is not None else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise _usage(f"refused --out {out_dir}: it is not a directory")
    home.require()
    access = _access(home, args.bundle, contents=True)
    record_read(home, access, asked_text(_editor_words(args, session)))
    rebuilt = rebuild_workspaces(home, access, session, at, ws)
    when = f"at {local_time(at)}" if at is not None else "at the end of the audit log"
    if not rebuilt:
        what = f"workspace {ws} of class {session!r}" if ws else f"class {session!r}"
        _note(f"the audit log has no editor change of {what} {when}")
        return 0
    for w in rebuilt:
        problem = _incomplete(w)
        if problem is not None:
            _warn(f"workspace {w.ws} is incomplete {when}: {problem}")
    name = args.file
    if name is not None and not any(w.file(name) for w in rebuilt):
        _note(f"no file {name!r} in the editor of class {session!r} {when}")
        return 0
    if out_dir is not None:
        return _write_workspaces(out_dir, rebuilt, name)
    if args.json:
        for w in rebuilt:
            if name is None or w.file(name):
                _say(json.dumps(workspace_json(session, w, name), ensure_ascii=False))
        return 0
    _say(f"Class {session}, shared editor {when}:")
    _say()
    for w in rebuilt:
        if name is None and not w.files:
            _say(f"{visible(w.ws)}: no files ({_as_of(w.as_of)})")
            _say()
        for line in file_listing(w, name):
            _say(line)
    return 0


def _write_workspaces(out_dir: Path, rebuilt: Sequence[RebuiltWorkspace], name: str | None) -> int:
    """Write every file to ``out_dir/WS/NAME``: all names checked first, nothing
    overwritten, nothing followed through a symbolic link."""
    from relay.cli import _say

    chosen: list[tuple[tuple[str, ...], str]] = []
    for w in rebuilt:
        for f in w.files:
            if name is not None and f.name != name:
                continue
            try:
                chosen.append((path_parts(w.ws, f.name), f.text))
            except ValueError as exc:
                raise _usage(f"refused to write the files: {exc}; nothing was written") from None
    clash = clashes(p for p, _ in chosen)
    if clash:
        raise _usage(
            f"refused to write the files: {'/'.join(clash[0])} is both a file and a folder; "
            "nothing was written (read it without --out)"
        )
    for parts, _ in chosen:
        target = out_dir.joinpath(*parts)
        if target.exists() or target.is_symlink():
            raise _usage(
                f"refused to write the files: {target} exists and is never overwritten; "
                "nothing was written; choose another --out directory"
            )
        for i in range(1, len(parts)):
            folder = out_dir.joinpath(*parts[:i])
            if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                raise _usage(
                    f"refused to write the files: {folder} is not a plain folder; nothing "
                    "was written; choose another --out directory"
                )
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for parts, text in chosen:
        folder = out_dir
        for part in parts[:-1]:
            folder = folder / part
            with contextlib.suppress(FileExistsError):
                folder.mkdir(mode=0o700)
        _write_file(folder / parts[-1], text.encode("utf-8"))
        _say(f"wrote {out_dir.joinpath(*parts)}")
    workspaces = len({p[0] for p, _ in chosen})
    _say(f"Wrote {len(chosen)} file(s) of {workspaces} workspace(s) to {out_dir}")
    return 0


def _write_file(path: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise _usage(f"refused to write {path}: it exists and is never overwritten") from None
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


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
    if args.media is None and (args.format is None or args.out is None):
        raise _usage(
            "give --format and --out (the records), --media DIR (the screen shares), or both"
        )
    if (args.format is None) != (args.out is None):
        raise _usage("--format and --out go together")
    if args.out is None:
        return cmd_audit_export_media(args, home, session)
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
    words.append(str(out_dir))
    if args.media is not None:
        words += ["--media", str(args.media)]
        _media_targets(Path(args.media), session)  # refuse before anything is read
    record_read(home, access, asked_text(words))
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
    if args.media is not None:
        return _export_media(home, access, session, Path(args.media))
    return 0


MEDIA_EXPORT_FORMAT_NAME = "classroom-relay audit media export v1"


def _media_targets(media_dir: Path, session: str) -> Path:
    """The media manifest's path; refuses a directory that is not one, or a manifest that
    exists (an export never overwrites)."""
    if media_dir.exists() and (media_dir.is_symlink() or not media_dir.is_dir()):
        raise _usage(f"refused --media {media_dir}: it is not a directory")
    manifest = media_dir / f"{session}.media.manifest.json"
    if manifest.exists() or manifest.is_symlink():
        raise _usage(
            f"refused to export: {manifest} exists, and an export never overwrites a file; "
            "choose another --media directory"
        )
    return manifest


def _screen_scan(reader: AuditReader, session: str) -> Iterator[StoredRecord]:
    """The class's screen share records, read straight from the log (not the index), the
    contents of the frames and thumbnails decrypted."""
    for record in reader.records(decrypt=False):
        if record.fields.get("session") == session and record.kind in SCREEN_KINDS:
            if record.encrypted and reader.staff_key is not None:
                yield reader.record_at(record.segment, record.offset)
            else:
                yield record


def media_manifest(
    *,
    session: str,
    shares: Sequence[ShareRecording],
    records: Sequence[StoredRecord],
    files: Sequence[tuple[str, bytes]],
    segments: Sequence[SegmentHash],
    checkpoint: Checkpoint | None,
    access: AuditAccess,
    now: dt.datetime,
) -> dict[str, Any]:
    """The chain-of-custody manifest of a media export (pure): every file written, with
    its SHA-256, the share it is of, and the records it was made from."""
    from relay.audit_keys import signing_public_text

    last = records[-1].seq if records else None
    return {
        "format": MEDIA_EXPORT_FORMAT_NAME,
        "session": session,
        "records": len(records),
        "first_seq": records[0].seq if records else None,
        "last_seq": last,
        "shares": [s.to_json() for s in shares],
        "files": [
            {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in files
        ],
        "segments": [dataclasses.asdict(s) for s in segments],
        "checkpoint": checkpoint_json(checkpoint, access) if checkpoint is not None else None,
        "checkpoint_covers_export": bool(
            checkpoint is not None and last is not None and checkpoint.seq >= last
        ),
        "signing_key": {
            "fingerprint": key_fingerprint(raw_public(access.signing_key)),
            "public": signing_public_text(access.signing_key),
        },
        "exported_by": access.reader_name,
        "exported_at": utc_text(now),
    }


def cmd_audit_export_media(args: argparse.Namespace, home: FacilityHome, session: str) -> int:
    media_dir = Path(args.media)
    _media_targets(media_dir, session)
    home.require()
    access = _access(home, args.bundle, contents=True)
    words = ["audit", "export", "--session", session, "--media", str(media_dir)]
    record_read(home, access, asked_text(words))
    return _export_media(home, access, session, media_dir)


def _export_media(home: FacilityHome, access: AuditAccess, session: str, media_dir: Path) -> int:
    """Write every share of ``session`` (video, thumbnails) and the media manifest."""
    from relay.audit_media import plan_share, write_share
    from relay.audit_store import CheckpointSink, list_segments
    from relay.cli import _note, _say

    manifest_path = _media_targets(media_dir, session)
    config = home.load_config()
    reader = access.reader(home)
    records = list(_screen_scan(reader, session))
    tally = ShareTally(contents=True)
    try:
        for record in records:
            if record.encrypted and record.contents is None and record.kind in MEDIA_KINDS:
                raise CredentialError("exporting screen shares needs the staff audit key")
            tally.feed(record.to_dict())
        shares = tally.recordings()
        plans = [plan_share(share, media_dir) for share in shares]
    except MediaError as exc:
        raise AuditLogError(
            f"the screen recording cannot be read back: {exc}; nothing was written; run "
            "'classroom-relay audit verify'"
        ) from None
    for plan in plans:
        for path in plan.paths():
            if path.exists() or path.is_symlink():
                raise _usage(
                    f"refused to export: {path} exists, and an export never overwrites a "
                    "file; nothing was written; choose another --media directory"
                )
        folder = media_dir / plan.share.id
        if plan.thumbnails and (folder.is_symlink() or (folder.exists() and not folder.is_dir())):
            raise _usage(f"refused to export: {folder} is not a plain folder; nothing was written")
    segments = [segment_hash(p) for p in list_segments(home.audit_dir)]
    try:
        checkpoint = CheckpointSink(home.checkpoint_sink(config)).read()
    except AuditLogError as exc:
        _note(f"the manifest has no checkpoint: {exc}")
        checkpoint = None
    media_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    written: list[tuple[str, bytes]] = []
    for plan in plans:
        try:
            paths = write_share(plan)
        except FileExistsError as exc:
            raise _usage(
                f"refused to write {exc.filename}: it exists and is never overwritten"
            ) from None
        except (MediaError, ValueError) as exc:
            raise AuditLogError(f"share {plan.share.id} could not be written: {exc}") from None
        for path in paths:
            written.append((path.relative_to(media_dir).as_posix(), path.read_bytes()))
        if plan.video is None:
            _note(f"share {plan.share.id} has no keyframe recorded: no video written")
        thumbs = len(plan.thumbnails)
        where = f", {thumbs} thumbnail(s) in {media_dir / plan.share.id}" if thumbs else ""
        _say(f"share {plan.share.id}: {plan.video or '(no video)'}{where}")
    manifest = media_manifest(
        session=session,
        shares=shares,
        records=records,
        files=written,
        segments=segments,
        checkpoint=checkpoint,
        access=access,
        now=dt.datetime.now(dt.UTC),
    )
    _write_new(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    if not shares:
        _note(f"the audit log has no screen share of class {session!r}")
    _say(f"Exported {len(shares)} screen share(s) of class {session} to {media_dir}")
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
        "a class as a transcript: who said what to whom, and what the policy decided; "
        "with --editor, the shared editor's files as they were at a time",
        epilog=_READ_NOTE + " In the transcript, an editor's keystrokes by one person in one "
        "workspace are joined into one line, and editor sync and presence records are "
        "left out (--json shows every record).",
    )
    p.add_argument("session", metavar="SESSION", help="class id")
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per record (with --editor: per workspace, with its files)",
    )
    p.add_argument("--bundle", metavar="STAFF_BUNDLE", help=_BUNDLE_HELP)
    p.add_argument(
        "--editor",
        action="store_true",
        help="the shared editor's files instead of the transcript: every workspace of the "
        "class rebuilt from its recorded snapshots and changes",
    )
    p.add_argument(
        "--at",
        metavar="TIME",
        help="with --editor: the files as they were at TIME, a duration back from now (10m, "
        "2h) or a time (ISO 8601, local if no offset); default: the end of the log",
    )
    p.add_argument(
        "--ws",
        metavar="WS",
        help="with --editor: only this workspace (class, or learner:ID)",
    )
    p.add_argument("--file", metavar="NAME", help="with --editor: only this file")
    p.add_argument(
        "--media",
        action="store_true",
        help="the class's screen shares instead of the transcript: who shared, who watched, "
        "when each stopped and why, frames, size and duration (no contents decrypted)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="with --editor: write the files into DIR/WS/NAME instead of printing them "
        "(never overwrites a file)",
    )

    p = leaf(
        group,
        "export",
        cmd_audit_export,
        "export a class's records (decrypted) or its screen shares as video, with a "
        "manifest for chain of custody",
        epilog=_READ_NOTE + " Writes SESSION.jsonl or SESSION.csv and SESSION.manifest.json "
        "(record count, sequence range, SHA-256 of the export and of the segments, the latest "
        "signed checkpoint, the signing key, who exported and when) into DIR; refuses to "
        "overwrite a file. The export reads the log itself, not the index.",
    )
    p.add_argument("--session", required=True, metavar="ID", help="class id")
    p.add_argument(
        "--format",
        choices=[f.value for f in ExportFormat],
        help="jsonl (every field) or csv (fixed columns; formula-like cells start with '); "
        "with --out",
    )
    p.add_argument("--out", metavar="DIR", help="directory to write the records into")
    p.add_argument(
        "--media",
        metavar="DIR",
        help="write every screen share of the class into DIR: SHARE.webm (playable from its "
        "first keyframe), SHARE/thumb-0001.png ..., and SESSION.media.manifest.json (SHA-256 "
        "of each file, the records used, the signed checkpoint); never overwrites a file",
    )
    p.add_argument("--bundle", metavar="STAFF_BUNDLE", help=_BUNDLE_HELP)


__all__ = [
    "CSV_COLUMNS",
    "ExportFormat",
    "SegmentHash",
    "Transcript",
    "asked_text",
    "csv_cell",
    "export_bytes",
    "export_manifest",
    "rebuild_workspaces",
    "record_json",
    "register",
    "search_row",
    "text_matches",
    "transcript_line",
]
