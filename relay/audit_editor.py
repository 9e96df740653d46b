"""Rebuilding the shared editor's workspaces from the audit log, as they were at a time.

Pure: records in, files out (no I/O). ``classroom-relay audit show SESSION --editor``
(:mod:`relay.audit_query`) finds the records, decrypts the ones chosen here and prints or
writes what :func:`rebuild` returns.

What the log holds (``docs/audit.md``): each editor change of a workspace (records
``editor.update``, ``editor.redacted``, ``editor.alert``, ``editor.refused``) carries in
``delivered`` the Yjs v1 update the relay forwarded, which is exactly what the relay
kept of the change (a refused change: only length-only deleted items, never its text);
``editor.snapshot`` carries the whole state of the workspace as one update. The document
of a workspace is the root map ``files``: file name -> text.

A workspace at time ``T`` is its latest snapshot with a time at or before ``T`` (or an
empty document), and then, in record order, the ``delivered`` update of every change
record of that workspace after the snapshot whose time is at or before ``T``. Only
those records need to be decrypted: at most one snapshot interval of changes per
workspace, however long the class. Applying an update a snapshot already contains is
harmless in Yjs, so the result does not depend on exactly where a snapshot falls.

An update whose changes depend on others that are not in the log (records removed by
retention before the first snapshot, changes the relay kept while the audit log had
failed and recorded only in the next snapshot) cannot be applied: Yjs keeps it pending.
:class:`RebuiltWorkspace` says so (``complete`` false, ``pending`` the records), so staff
are never shown a partial file as if it were whole.
"""

from __future__ import annotations

import base64
import binascii
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Doc, Map, Text

from relay.identity import valid_name

CLASS_WS = "class"
CHANGE_KINDS = frozenset({"editor.update", "editor.redacted", "editor.alert", "editor.refused"})
"""Records whose ``delivered`` update changed a workspace."""
SNAPSHOT_KIND = "editor.snapshot"
REBUILD_KINDS = CHANGE_KINDS | {SNAPSHOT_KIND}
FILES_ROOT = "files"
MAX_NAME_PART_BYTES = 255
"""Longest part of a file name written to disk (most file systems' limit)."""


class RebuildError(ValueError):
    """A record's update cannot be read (the log is damaged or was not written by us)."""


def valid_workspace(ws: str) -> bool:
    """``class`` or ``learner:NAME`` with a valid name."""
    if ws == CLASS_WS:
        return True
    role, sep, name = ws.partition(":")
    return role == "learner" and bool(sep) and valid_name(name)


@dataclass(frozen=True, slots=True)
class EditorRecordRef:
    """Where an editor record is and its clear metadata (what the index says)."""

    seq: int
    time: float
    kind: str
    ws: str
    segment: str = ""
    offset: int = 0

    @property
    def is_snapshot(self) -> bool:
        return self.kind == SNAPSHOT_KIND


@dataclass(slots=True)
class _Chosen:
    snapshot: EditorRecordRef | None = None
    changes: list[EditorRecordRef] = field(default_factory=list)


class RebuildPlan:
    """Chooses, from editor records given in log order, those a rebuild at ``at`` reads.

    Memory stays bounded: a workspace's changes before its latest usable snapshot are
    dropped as soon as that snapshot is seen.
    """

    def __init__(self, at: float | None = None, ws: str | None = None) -> None:
        self.at = at
        self.ws = ws
        self._chosen: dict[str, _Chosen] = {}
        self.later = 0
        """Records of the chosen workspaces after ``at`` (not used)."""

    def add(self, ref: EditorRecordRef) -> None:
        if ref.kind not in REBUILD_KINDS or (self.ws is not None and ref.ws != self.ws):
            return
        if self.at is not None and ref.time > self.at:
            self.later += 1
            return
        chosen = self._chosen.setdefault(ref.ws, _Chosen())
        if ref.is_snapshot:
            chosen.snapshot = ref
            chosen.changes.clear()
        else:
            chosen.changes.append(ref)

    def add_all(self, refs: Iterable[EditorRecordRef]) -> RebuildPlan:
        for ref in refs:
            self.add(ref)
        return self

    def workspaces(self) -> list[str]:
        """The workspaces that have records up to ``at``: ``class`` first, then by name."""
        return sorted(self._chosen, key=lambda ws: (ws != CLASS_WS, ws))

    def records(self, ws: str) -> list[EditorRecordRef]:
        """The records to read for ``ws``: its snapshot (if any) first, then changes."""
        chosen = self._chosen.get(ws)
        if chosen is None:
            return []
        head = [chosen.snapshot] if chosen.snapshot is not None else []
        return head + chosen.changes


@dataclass(frozen=True, slots=True)
class EditorRecord:
    """An editor record as read (decrypted): its update, if it carries one."""

    ref: EditorRecordRef
    delivered: str | None
    """Base64 of the Yjs v1 update, as stored in the record."""


@dataclass(frozen=True, slots=True)
class RebuiltFile:
    name: str
    text: str

    @property
    def chars(self) -> int:
        return len(self.text)

    @property
    def lines(self) -> int:
        if not self.text:
            return 0
        return self.text.count("\n") + (0 if self.text.endswith("\n") else 1)


@dataclass(frozen=True, slots=True)
class RebuiltWorkspace:
    ws: str
    files: tuple[RebuiltFile, ...]
    """Sorted by name."""
    as_of: EditorRecordRef | None
    """The last record applied (None: nothing to apply)."""
    snapshot: EditorRecordRef | None
    """The snapshot the rebuild started from (None: an empty document)."""
    applied: int
    """Change records applied after the snapshot."""
    pending: tuple[int, ...] = ()
    """Records whose update could not be applied (they depend on changes not in the log)."""
    not_text: tuple[str, ...] = ()
    """Entries of ``files`` that are not text (never written by the relay)."""

    @property
    def complete(self) -> bool:
        return not self.pending and not self.not_text

    def file(self, name: str) -> RebuiltFile | None:
        return next((f for f in self.files if f.name == name), None)


def decode_update(record: EditorRecord) -> bytes | None:
    if record.delivered is None:
        return None
    try:
        return base64.b64decode(record.delivered, validate=True)
    except (binascii.Error, ValueError):
        raise RebuildError(
            f"record {record.ref.seq} ({record.ref.kind}): 'delivered' is not base64"
        ) from None


def _varuint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise IndexError
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def first_structs(update: bytes) -> tuple[int, int] | None:
    """``(client, clock)`` where the update's first run of new items starts, or None
    when it has none (a change that only deletes). Yjs v1: the number of clients, then
    for the first one the number of its items, its id and the clock of the first item."""
    try:
        clients, pos = _varuint(update, 0)
        if clients == 0:
            return None
        structs, pos = _varuint(update, pos)
        client, pos = _varuint(update, pos)
        clock, pos = _varuint(update, pos)
    except IndexError:
        return None
    return (client, clock) if structs else None


def state_vector(doc: Doc[Any]) -> dict[int, int]:
    """A document's state vector as ``{client: next clock}``."""
    data = doc.get_state()
    count, pos = _varuint(data, 0)
    out: dict[int, int] = {}
    for _ in range(count):
        client, pos = _varuint(data, pos)
        clock, pos = _varuint(data, pos)
        out[client] = clock
    return out


def rebuild(ws: str, records: Sequence[EditorRecord]) -> RebuiltWorkspace:
    """Apply the records :meth:`RebuildPlan.records` chose for ``ws``, in that order."""
    doc: Doc[Any] = Doc()
    files = doc.get(FILES_ROOT, type=Map)
    snapshot: EditorRecordRef | None = None
    last: EditorRecordRef | None = None
    applied = 0
    starts: list[tuple[int, tuple[int, int]]] = []
    for record in records:
        if record.ref.ws != ws:
            raise ValueError(f"record {record.ref.seq} is of {record.ref.ws!r}, not {ws!r}")
        update = decode_update(record)
        if record.ref.is_snapshot:
            snapshot = record.ref
        if update is None:
            continue
        try:
            doc.apply_update(update)
        except ValueError as exc:
            raise RebuildError(
                f"record {record.ref.seq} ({record.ref.kind}): its update cannot be read ({exc})"
            ) from None
        start = first_structs(update)
        if start is not None:
            starts.append((record.ref.seq, start))
        last = record.ref
        if not record.ref.is_snapshot:
            applied += 1
    sv = state_vector(doc)
    pending = tuple(seq for seq, (client, clock) in starts if sv.get(client, 0) <= clock)
    texts: list[RebuiltFile] = []
    odd: list[str] = []
    for name, value in files.items():
        if isinstance(value, Text):
            texts.append(RebuiltFile(name, str(value)))
        else:
            odd.append(name)
    texts.sort(key=lambda f: f.name)
    return RebuiltWorkspace(
        ws=ws,
        files=tuple(texts),
        as_of=last,
        snapshot=snapshot,
        applied=applied,
        pending=pending,
        not_text=tuple(sorted(odd)),
    )


# ---------------------------------------------------------------------------------------
# writing files out: names that are safe as paths
# ---------------------------------------------------------------------------------------


def unsafe_name(name: str) -> str | None:
    """Why ``name`` (a workspace's file name, ``/`` between folders) may not become a
    relative path on disk; None when it may."""
    if not name:
        return "it is empty"
    if name.startswith("/"):
        return "it is absolute"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        return "it has control or invisible characters"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return f"it has a part {part!r}" if part else "it has an empty part"
        if len(part.encode("utf-8")) > MAX_NAME_PART_BYTES:
            return f"a part is longer than {MAX_NAME_PART_BYTES} bytes"
    return None


def path_parts(ws: str, name: str) -> tuple[str, ...]:
    """``(ws, *folders, file)``; raises :class:`ValueError` saying why when unsafe."""
    if not valid_workspace(ws):
        raise ValueError(f"workspace {ws!r} is not 'class' or 'learner:NAME'")
    why = unsafe_name(name)
    if why is not None:
        raise ValueError(f"file {name!r} of {ws}: {why}")
    return (ws, *name.split("/"))


def clashes(paths: Iterable[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Paths that are also the folder of another path (a file ``a`` and a file ``a/b``)."""
    all_paths = set(paths)
    folders = {p[:i] for p in all_paths for i in range(1, len(p))}
    return sorted(all_paths & folders)


__all__ = [
    "CHANGE_KINDS",
    "REBUILD_KINDS",
    "SNAPSHOT_KIND",
    "EditorRecord",
    "EditorRecordRef",
    "RebuildError",
    "RebuildPlan",
    "RebuiltFile",
    "RebuiltWorkspace",
    "clashes",
    "path_parts",
    "rebuild",
    "unsafe_name",
    "valid_workspace",
]
