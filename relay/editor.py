"""The shared editor's relay-side core: one Yjs-compatible document per workspace.

Pure: no I/O, no event loop. The session layer hands every incoming editor update to
:meth:`Workspace.apply`, asks :func:`judge` what the content policy makes of its effect,
and sends the author and the others what the verdict says.

Document model
--------------
One pycrdt (Yrs, Yjs-compatible) ``Doc`` per workspace. Its only root type is the map
``files``: file name -> ``Y.Text`` of plain text (no formatting attributes, no embeds).
A file is created by setting a new key to a Text, deleted by deleting the key, and renamed
by deleting the old key and setting the new key to a Text of the same content in one
transaction. Anything else is refused (:attr:`EditRefusal.UNSUPPORTED`).

What the relay checks before it applies an update
-------------------------------------------------
Yrs has no API to look inside an update, so this module reads the Yjs update format
(v1: struct runs per client, then the delete set) itself, before the update touches the
document, and refuses with nothing applied:

* bytes that are not an update (:attr:`EditRefusal.MALFORMED`);
* content outside the model (:attr:`EditRefusal.UNSUPPORTED`): another root type, a value
  in ``files`` that is not a Text, formatting attributes, embeds, JSON, binary or
  sub-document content, a shared type inside a text;
* an update that is not causally ready (:attr:`EditRefusal.OUT_OF_SYNC`): a client's run
  starting beyond the relay's clock for it, an item whose origin, right origin or parent
  the relay does not have (neither in its document nor earlier in the update), a deletion
  of content the relay does not have, or a file set on top of a sealed entry (below).

Pending structs (what was found)
--------------------------------
Given an update that depends on content it does not have, Yrs does not fail: it keeps
the structs in the store's *pending* update (and unknown deletions in a pending delete
set), outside the state vector, and integrates them silently as soon as the missing
content arrives, possibly much later. ``pycrdt.get_state(update)`` does not help to
detect this: for an update whose run does not start at clock 0 it returns an empty state
vector. ``Doc.get_update()`` does not encode pending structs, but they stay in the
document. The relay therefore never lets them in: the readiness check above refuses such
updates before they are applied; after applying, the state vector is compared with the
clock each client's run must have reached (this also catches cross-client cycles inside
one update, which the check above cannot see). If something did get stuck, what did
integrate is undone (the compensation is in the error) and the document is rebuilt from
its own encoding, which holds no pending structs.

Index units (what was found)
----------------------------
A pycrdt ``Doc`` uses Yrs' default ``OffsetKind::Bytes``: ``len(text)``, the indices of
``Text.insert`` / ``del text[a:b]`` and the ``retain``/``delete`` counts of text events
are UTF-8 byte counts (``len(Text("é😀中x")) == 10``); an index inside a character's
encoding lands in the wrong place. The Yjs wire format counts clocks in UTF-16 code units
(a ``Y.Text`` index in JavaScript is UTF-16 too). Every index this module takes or returns
is a Python code-point index; it converts to UTF-8 byte offsets against its cached string
of each file before calling pycrdt, and converts the byte counts of text events back.

Compensation and sealing
------------------------
A refused change that was applied is undone by a relay-authored transaction (the
*compensation*, sent to the author). Deleted text leaves only length-only structs behind
(Yrs garbage-collects the content of deleted items), so the relay's diffs never carry
it. A deleted map entry, however, keeps its *key* (the file name) in the encoding, and
peers need the entry (later changes of its author may refer to it). So when the relay
deletes a file created by an update whose names were not accepted by the policy (a name
the policy refused, or an update refused by :meth:`Workspace.apply` before any policy saw
its names: limits, bad names, unsupported content), it *seals* the entry: the document is
rebuilt with that entry replaced by a garbage-collected struct of the same length (which
Yjs and Yrs peers integrate as a gap with no content), and no diff, snapshot or forward
ever carries the name. The author still holds the entry; setting that file again on top of
it is refused as out of sync (reload the workspace). Entries of names the policy accepted
(a new file refused for its content) are deleted but not sealed. ``EditorError.resync`` and
``EditVerdict.resync`` say when the author's editor should reload the workspace from the
relay (sync from an empty state).

Hold decisions are not supported in the editor: a change the policy would hold for staff
review is treated as blocked, with a reason saying so.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Doc, Map, Text

from policy.decisions import Action, Decision, Kind

__all__ = [
    "FILES_ROOT",
    "Applied",
    "EditRefusal",
    "EditVerdict",
    "EditVerdictKind",
    "EditorError",
    "EditorLimits",
    "Excerpt",
    "FileChange",
    "FileOp",
    "Insertion",
    "Removal",
    "Workspace",
    "judge",
]

FILES_ROOT = "files"
"""The name of the document's only root type, a map of file name -> Text."""

# --- refusals ------------------------------------------------------------------------------


class EditRefusal(enum.Enum):
    MALFORMED = "malformed_update"
    UNSUPPORTED = "unsupported_content"
    OUT_OF_SYNC = "out_of_sync"
    FILE_TOO_LARGE = "file_too_large"
    WORKSPACE_TOO_LARGE = "workspace_too_large"
    TOO_MANY_FILES = "too_many_files"
    BAD_FILE_NAME = "bad_file_name"


class EditorError(Exception):
    """An update the workspace did not keep.

    ``detail`` says what was refused, why and what to do; it never quotes content.
    ``compensation`` is the relay-authored update that undid what the refused update had
    changed (the author must apply it; ``b""`` when nothing had changed). ``resync`` is
    true when the relay kept nothing of the update: the author's editor then holds changes
    no one else has and should reload the workspace from the relay.
    """

    def __init__(
        self, refusal: EditRefusal, detail: str, compensation: bytes = b"", *, resync: bool = False
    ) -> None:
        self.refusal = refusal
        self.detail = detail
        self.compensation = compensation
        self.resync = resync
        super().__init__(f"{refusal.value}: {detail}")


# --- limits --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EditorLimits:
    max_file_chars: int = 200_000
    """Longest file, in code points."""
    max_workspace_chars: int = 1_000_000
    """Most code points in all files of a workspace together."""
    max_files: int = 200
    """Most files in a workspace."""
    max_name_chars: int = 200
    """Longest file name, in code points."""
    context_lines: int = 1
    """Lines before and after the changed line(s) that the policy also sees."""

    def __post_init__(self) -> None:
        for name in ("max_file_chars", "max_workspace_chars", "max_files", "max_name_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"editor limit '{name}' must be a positive integer, not {value!r}")
        ctx = self.context_lines
        if isinstance(ctx, bool) or not isinstance(ctx, int) or ctx < 0:
            raise ValueError(f"editor limit 'context_lines' must be 0 or more, not {ctx!r}")


# --- what an update did --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Insertion:
    """Text that appeared in a file in one applied update."""

    file: str
    start: int
    """Code-point index in the file after the update."""
    text: str


@dataclass(frozen=True, slots=True)
class Removal:
    """Text that disappeared from a file in one applied update."""

    file: str
    start: int
    """Code-point index, in the file after the update, where the text was."""
    text: str


@dataclass(frozen=True, slots=True)
class Excerpt:
    """What the policy is asked about for one changed region: the changed line(s) and
    ``context_lines`` lines around them, in the file after the update."""

    file: str
    start: int
    end: int
    text: str


class FileOp(enum.Enum):
    CREATED = "created"
    DELETED = "deleted"
    RENAMED = "renamed"


@dataclass(frozen=True, slots=True)
class FileChange:
    op: FileOp
    name: str
    old_name: str | None = None


@dataclass(frozen=True, slots=True)
class Applied:
    """The effect of one incoming update on the authoritative document."""

    before: bytes
    """State vector before the update."""
    insertions: tuple[Insertion, ...]
    removals: tuple[Removal, ...]
    files: tuple[FileChange, ...]
    excerpts: tuple[Excerpt, ...]
    """Merged regions to show the policy."""
    prior: tuple[tuple[str, str | None], ...] = ()
    """Each file whose entry was set or deleted, with its content before (None: absent)."""
    new_entries: tuple[tuple[int, int, int], ...] = field(default=(), repr=False)
    """(client, clock, length) of the map entries by which the update named files that did
    not exist before; a revert seals them."""

    @property
    def empty(self) -> bool:
        return not (self.insertions or self.removals or self.files or self.prior)


# --- reading Yjs updates (format v1) --------------------------------------------------------

_MAX_CLOCK = 2**32 - 1
_MAX_CLIENT = 2**53 - 1

_GC, _DELETED, _JSON, _BINARY, _STRING, _EMBED, _FORMAT, _TYPE, _ANY, _DOC, _SKIP = range(11)
_TEXT_TYPE = 2
_CONTENT_NAMES = {
    _JSON: "JSON values",
    _BINARY: "binary values",
    _EMBED: "embedded objects",
    _FORMAT: "formatting attributes",
    _ANY: "plain values (the files map holds only texts)",
    _DOC: "sub-documents",
}
_TYPE_NAMES = {
    0: "an array",
    1: "a map",
    3: "an XML element",
    4: "an XML fragment",
    5: "an XML hook",
    6: "an XML text",
}

ID = tuple[int, int]


class _Malformed(Exception):
    pass


class _Unsupported(Exception):
    pass


@dataclass(slots=True)
class _Struct:
    client: int
    clock: int
    length: int
    ref: int
    start: int
    end: int
    origin: ID | None = None
    right_origin: ID | None = None
    parent_root: str | None = None
    parent_id: ID | None = None
    parent_sub: str | None = None


@dataclass(slots=True)
class _Run:
    client: int
    clock: int
    structs: list[_Struct]

    @property
    def end(self) -> int:
        return self.structs[-1].clock + self.structs[-1].length if self.structs else self.clock


@dataclass(slots=True)
class _Update:
    runs: list[_Run]
    deletes: list[tuple[int, int, int]]


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise _Malformed("the update ends in the middle of a value")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uint(self, limit: int = _MAX_CLIENT) -> int:
        data, pos = self.data, self.pos
        if pos < len(data) and data[pos] < 0x80:  # one byte: most numbers in an update
            value = data[pos]
            if value > limit:
                raise _Malformed("a number in the update is out of range")
            self.pos = pos + 1
            return value
        value = shift = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if value > limit:
                raise _Malformed("a number in the update is out of range")
            if b < 0x80:
                return value
            shift += 7

    def string(self) -> str:
        n = self.uint(len(self.data))
        end = self.pos + n
        if end > len(self.data):
            raise _Malformed("a string in the update runs past its end")
        raw = self.data[self.pos : end]
        self.pos = end
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed("a string in the update is not valid UTF-8") from None

    def id(self) -> ID:
        return self.uint(), self.uint(_MAX_CLOCK)


def _utf16_len(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-16-le")) // 2


def _parse_update(data: bytes) -> _Update:
    """Reads a Yjs v1 update. Raises :class:`_Malformed` or :class:`_Unsupported`."""
    parsed = _parse_keystroke(data)
    return parsed if parsed is not None else _parse_general(data)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The unsigned number at ``pos`` and the position after it (IndexError past the end
    or for a number longer than 64 bits)."""
    b = data[pos]
    if b < 0x80:
        return b, pos + 1
    value, shift = b & 0x7F, 7
    while True:
        pos += 1
        b = data[pos]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos + 1
        shift += 7
        if shift > 63:
            raise IndexError


def _parse_keystroke(data: bytes) -> _Update | None:
    """The common update of one keystroke, read fast: one client's run of one text item
    placed after a known item (an origin, maybe a right origin), no deletions. Returns
    None for anything else, or anything irregular, which :func:`_parse_general` then reads
    (and refuses with its reason); for what it accepts it returns what that would."""
    # one run of one struct, and the update ends with an empty delete set
    if len(data) < 6 or data[0] != 1 or data[1] != 1 or data[-1] != 0:
        return None
    try:
        client, pos = _varint(data, 2)
        clock, pos = _varint(data, pos)
        start = pos
        info = data[pos]
        if info != 0x84 and info != 0xC4:  # origin (and right origin), string content
            return None
        origin_client, pos = _varint(data, pos + 1)
        origin_clock, pos = _varint(data, pos)
        right: ID | None = None
        if info == 0xC4:
            right_client, pos = _varint(data, pos)
            right_clock, pos = _varint(data, pos)
            if right_client > _MAX_CLIENT or right_clock > _MAX_CLOCK:
                return None
            right = (right_client, right_clock)
        n, pos = _varint(data, pos)
    except IndexError:
        return None
    end = pos + n
    if (
        end != len(data) - 1  # then the empty delete set (data[-1] == 0)
        or client > _MAX_CLIENT
        or clock > _MAX_CLOCK
        or origin_client > _MAX_CLIENT
        or origin_clock > _MAX_CLOCK
    ):
        return None
    try:
        text = data[pos:end].decode("utf-8")
    except UnicodeDecodeError:
        return None
    length = _utf16_len(text)
    if length == 0 or clock + length > _MAX_CLOCK:
        return None
    struct = _Struct(
        client, clock, length, _STRING, start, end, (origin_client, origin_clock), right
    )
    return _Update([_Run(client, clock, [struct])], [])


def _parse_general(data: bytes) -> _Update:
    r = _Reader(data)
    runs: list[_Run] = []
    clients: set[int] = set()
    for _ in range(r.uint(len(data))):
        count = r.uint(len(data))
        client = r.uint()
        clock = r.uint(_MAX_CLOCK)
        if client in clients:
            raise _Malformed("a client appears twice in the update")
        clients.add(client)
        run = _Run(client, clock, [])
        for _ in range(count):
            run.structs.append(_read_struct(r, client, clock))
            clock += run.structs[-1].length
            if clock > _MAX_CLOCK:
                raise _Malformed("a clock in the update is out of range")
        runs.append(run)
    deletes: list[tuple[int, int, int]] = []
    for _ in range(r.uint(len(data))):
        client = r.uint()
        for _ in range(r.uint(len(data))):
            clock, length = r.uint(_MAX_CLOCK), r.uint(_MAX_CLOCK)
            if length == 0 or clock + length > _MAX_CLOCK:
                raise _Malformed("a deleted range in the update is empty or out of range")
            deletes.append((client, clock, length))
    if r.pos != len(data):
        raise _Malformed("bytes follow the end of the update")
    return _Update(runs, deletes)


def _read_struct(r: _Reader, client: int, clock: int) -> _Struct:
    start = r.pos
    info = r.byte()
    ref = info & 0x1F
    if ref in (_GC, _SKIP):
        length = r.uint(_MAX_CLOCK)
        if length == 0:
            raise _Malformed("an empty struct in the update")
        return _Struct(client, clock, length, ref, start, r.pos)
    s = _Struct(client, clock, 0, ref, start, 0)
    if info & 0x80:
        s.origin = r.id()
    if info & 0x40:
        s.right_origin = r.id()
    if not info & 0xC0:
        if r.uint() == 1:
            s.parent_root = r.string()
        else:
            s.parent_id = r.id()
        if info & 0x20:
            s.parent_sub = r.string()
    if ref == _DELETED:
        s.length = r.uint(_MAX_CLOCK)
    elif ref == _STRING:
        s.length = _utf16_len(r.string())
    elif ref == _TYPE:
        type_ref = r.uint()
        if type_ref != _TEXT_TYPE:
            what = _TYPE_NAMES.get(type_ref, "a shared type other than text")
            raise _Unsupported(f"the update inserts {what}; files hold plain text only")
        s.length = 1
    elif ref in _CONTENT_NAMES:
        raise _Unsupported(f"the update inserts {_CONTENT_NAMES[ref]}; files hold plain text only")
    else:
        raise _Malformed(f"unknown content type {ref} in the update")
    if s.length == 0:
        raise _Malformed("an empty item in the update")
    s.end = r.pos
    return s


def _parse_state_vector(data: bytes) -> dict[int, int]:
    r = _Reader(data)
    sv: dict[int, int] = {}
    for _ in range(r.uint(len(data))):
        client = r.uint()
        sv[client] = r.uint(_MAX_CLOCK)
    if r.pos != len(data):
        raise _Malformed("bytes follow the end of the state vector")
    return sv


def _write_uint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _overlaps(s: _Struct, ranges: Iterable[tuple[int, int, int]]) -> bool:
    return any(c == s.client and k < s.clock + s.length and s.clock < k + n for c, k, n in ranges)


def _seal_bytes(update: bytes, parsed: _Update, ranges: Sequence[tuple[int, int, int]]) -> bytes:
    """``update`` with every item overlapping ``ranges`` replaced by a GC struct."""
    out = bytearray()
    last = 0
    for run in parsed.runs:
        for s in run.structs:
            if s.ref not in (_GC, _SKIP) and _overlaps(s, ranges):
                out += update[last : s.start]
                out.append(_GC)
                _write_uint(out, s.length)
                last = s.end
    out += update[last:]
    return bytes(out)


def _structure_problem(parsed: _Update) -> str | None:
    """Content outside the model that can be seen without the document."""
    for run in parsed.runs:
        for s in run.structs:
            if s.ref in (_GC, _SKIP):
                continue
            if s.parent_root is not None:
                if s.parent_root != FILES_ROOT:
                    return (
                        "the update writes to a root type other than the map 'files'; "
                        "the document holds only that map"
                    )
                if s.parent_sub is None:
                    return "the update inserts into the map 'files' without a file name"
                if s.ref == _STRING:
                    return "the update sets a file to a plain string instead of a text"
            elif s.parent_id is not None:
                if s.parent_sub is not None:
                    return "the update sets a named value inside a file"
                if s.ref == _TYPE:
                    return "the update embeds a shared type inside a file"
    return None


def _in_ranges(ref: ID, ranges: Iterable[tuple[int, int, int]]) -> bool:
    return any(c == ref[0] and k <= ref[1] < k + n for c, k, n in ranges)


def _readiness_problem(
    parsed: _Update, known: dict[int, int], sealed: Sequence[tuple[int, int, int]]
) -> str | None:
    """Why the update cannot be integrated completely now (None: it can)."""
    avail = dict(known)
    for run in parsed.runs:
        have = known.get(run.client, 0)
        if run.clock > have:
            return (
                f"it continues the changes of client {run.client} from clock {run.clock}, "
                f"but the relay has them only up to {have}"
            )
        for s in run.structs:
            if s.ref == _SKIP and s.clock + s.length > have:
                return f"it skips changes of client {run.client} the relay does not have"
        avail[run.client] = max(have, run.end)
    for run in parsed.runs:
        for s in run.structs:
            for ref in (s.origin, s.right_origin, s.parent_id):
                if ref is None:
                    continue
                if ref[1] >= avail.get(ref[0], 0) or (ref[0] == s.client and ref[1] >= s.clock):
                    return (
                        f"it refers to a change (client {ref[0]}, clock {ref[1]}) "
                        "the relay does not have"
                    )
            if s.ref == _TYPE and sealed:
                for ref in (s.origin, s.right_origin):
                    if ref is not None and _in_ranges(ref, sealed):
                        return "it sets a file on top of a refused file entry the relay removed"
    for client, clock, length in parsed.deletes:
        if clock + length > avail.get(client, 0):
            return f"it deletes content (client {client}) the relay does not have"
    return None


# --- file names ----------------------------------------------------------------------------

_FORBIDDEN_NAME_CHARS = frozenset('\\:*?"<>|')


def _name_problem(name: str, limits: EditorLimits) -> str | None:
    if not name:
        return "a file name is empty"
    if len(name) > limits.max_name_chars:
        return f"a file name is longer than {limits.max_name_chars} characters"
    if name.startswith("/"):
        return "a file name starts with '/' (names are relative paths)"
    for ch in name:
        if ch in _FORBIDDEN_NAME_CHARS:
            return f"a file name contains {ch!r}, which file names may not contain"
        if unicodedata.category(ch)[0] == "C":
            return "a file name contains a control, format or unassigned character"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return "a file name has an empty, '.' or '..' path component"
        if part != part.strip() or part.endswith("."):
            return (
                "a file name has a path component that starts or ends with a space or ends with '.'"
            )
    return None


# --- text helpers ---------------------------------------------------------------------------


def _byte_offset(s: str, index: int) -> int:
    """The UTF-8 byte offset of code-point ``index`` in ``s``."""
    return index if s.isascii() else len(s[:index].encode("utf-8"))


def _line_span(s: str, start: int, end: int, context: int) -> tuple[int, int]:
    """``[start, end)`` widened to whole lines plus ``context`` lines each side."""
    a = s.rfind("\n", 0, start) + 1
    for _ in range(context):
        if a == 0:
            break
        a = s.rfind("\n", 0, a - 1) + 1
    b = s.find("\n", end)
    for _ in range(context):
        if b < 0:
            break
        b = s.find("\n", b + 1)
    return a, (len(s) if b < 0 else b)


def _code_point_at(s: str, b: int, anchor_c: int, anchor_b: int) -> int:
    """The code-point index in ``s`` of UTF-8 byte offset ``b``, given that code point
    ``anchor_c`` is at byte ``anchor_b``; decodes only the bytes between the two (raises
    UnicodeDecodeError when ``b`` is inside a character, ValueError when outside ``s``)."""
    if b >= anchor_b:
        d = b - anchor_b
        chunk = s[anchor_c : anchor_c + d].encode("utf-8")
        if len(chunk) < d:
            raise ValueError("offset past the end of the text")
        return anchor_c + len(chunk[:d].decode("utf-8"))
    d = anchor_b - b
    chunk = s[max(0, anchor_c - d) : anchor_c].encode("utf-8")
    if len(chunk) < d:
        raise ValueError("offset before the start of the text")
    return anchor_c - len(chunk[len(chunk) - d :].decode("utf-8"))


@dataclass(slots=True)
class _Event:
    """One Yrs event of the files map, read during its transaction: ``name`` None and
    ``data`` the (key, action) pairs for the map itself; a file name and its text delta
    (``size``: the text's UTF-8 length after it); a name and None for a change nested
    deeper (outside the model); None and None when the events could not be read."""

    name: str | None
    data: Any
    size: int = -1


@dataclass(slots=True)
class _TextChange:
    """What one transaction did to one text whose entry stayed the same."""

    insertions: list[Insertion]
    removals: list[Removal]
    tainted: bool = False
    """The text received content outside the model (an embed, formatting)."""


@dataclass(slots=True)
class _Changes:
    """What one transaction did, read from the events of the files map."""

    entries: dict[str, tuple[str | None, object]] = field(default_factory=dict)
    """Name -> (content before or None, value after or _ABSENT), for set/deleted entries."""
    texts: dict[str, _TextChange] = field(default_factory=dict)
    bad_values: list[str] = field(default_factory=list)


_ABSENT = object()


# --- the workspace --------------------------------------------------------------------------


class Workspace:
    """The authoritative document of one workspace, with a cached string per file."""

    def __init__(self, ws_id: str, limits: EditorLimits = EditorLimits()) -> None:
        self.ws_id = ws_id
        self.limits = limits
        self._cache: dict[str, str] = {}
        self._chars = 0
        self._nbytes: dict[str, int] = {}
        """UTF-8 length of each cached file (the document's length of its text)."""
        self._mark: dict[str, tuple[int, int]] = {}
        """A (code point, UTF-8 byte) pair of offsets in each cached file that name the
        same place (where its last change ended): byte offsets near it convert cheaply."""
        self._clock: dict[int, int] = {}
        """The document's state vector (client -> clock), kept up to date."""
        self._sealed: list[tuple[int, int, int]] = []
        self._events: list[_Event] = []
        self._doc: Doc[Any]
        self._files: Map[Any]
        self._sub: Any = None
        self._attach(Doc())

    # -- plumbing -----------------------------------------------------------------------

    def _attach(self, doc: Doc[Any]) -> None:
        if self._sub is not None:
            self._sub.drop()
        self._doc = doc
        self._files = doc.get(FILES_ROOT, type=Map)
        # Yrs' own events, read while the transaction is alive (pycrdt's wrapper would
        # build Python objects for every part of every event, most of them unused here).
        self._sub = self._files.integrated.observe_deep(self._on_events)
        self._clock = self._state()

    def _on_events(self, events: list[Any]) -> None:
        out = self._events
        try:
            for event in events:
                path = event.path
                if not path:
                    out.append(_Event(None, [(k, c.get("action")) for k, c in event.keys.items()]))
                elif len(path) == 1 and isinstance(path[0], str):
                    # the text's length (UTF-8 bytes) after the transaction, to check the delta
                    size = event.target.len(event.transaction)
                    out.append(_Event(path[0], event.delta, size))
                else:
                    out.append(_Event(str(path[0]), None))
        except Exception:  # never raise into Yrs: the fold then reads the document
            out.append(_Event(None, None))

    def _state(self) -> dict[int, int]:
        return _parse_state_vector(self._doc.get_state())

    def _run(self, action: Callable[[], None], *, relay: bool = False) -> _Changes:
        """Runs ``action`` (one transaction) and folds its events into the cache. With
        ``relay`` (a relay-authored transaction) the clocks are read from the document."""
        self._events.clear()
        try:
            action()
        finally:
            events, self._events[:] = list(self._events), []
            if relay:
                self._clock = self._state()
        return self._fold(events)

    def _fold(self, events: list[_Event]) -> _Changes:
        changes = _Changes()
        text_deltas: dict[str, list[dict[str, Any]]] = {}
        sizes: dict[str, int] = {}
        unread = False
        for event in events:
            name, data = event.name, event.data
            if name is None and data is None:
                unread = True
            elif name is None:
                for key, action in data:
                    if key in changes.entries:
                        before = changes.entries[key][0]
                    else:
                        before = self._cache.get(key)
                    after = _ABSENT if action == "delete" else self._files.get(key, _ABSENT)
                    changes.entries[key] = (before, after)
            elif data is None:
                changes.bad_values.append(name)
            else:
                text_deltas.setdefault(name, []).extend(data)
                sizes[name] = event.size
        if unread:
            # the events could not be read: compare every file with the document
            for key in set(self._cache) | set(self._files.keys()):
                if key not in changes.entries and key not in text_deltas:
                    after = self._files.get(key, _ABSENT)
                    if after is _ABSENT or not isinstance(after, Text):
                        changes.entries[key] = (self._cache.get(key), after)
                    else:
                        text_deltas[key] = []
                        sizes[key] = -1  # never matches: the text is read whole
        for name, (_, after) in changes.entries.items():
            if after is _ABSENT:
                self._set_cache(name, None)
            elif isinstance(after, Text):
                self._set_cache(name, str(after))
            else:
                changes.bad_values.append(name)
                self._set_cache(name, None)
        for name, delta in text_deltas.items():
            if name in changes.entries or name not in self._cache:
                continue
            changes.texts[name] = self._fold_delta(name, delta, sizes[name])
        return changes

    def _set_cache(self, name: str, content: str | None, nbytes: int = -1) -> None:
        old = self._cache.pop(name, None)
        self._mark.pop(name, None)
        self._nbytes.pop(name, None)
        if old is not None:
            self._chars -= len(old)
        if content is not None:
            self._cache[name] = content
            self._chars += len(content)
            if nbytes < 0:
                nbytes = len(content) if content.isascii() else len(content.encode("utf-8"))
            self._nbytes[name] = nbytes

    def _fold_delta(self, name: str, delta: list[dict[str, Any]], size: int) -> _TextChange:
        """Applies a text event's delta (UTF-8 byte counts) to the cached string.

        Only the changed places are looked at: byte offsets are converted to code points
        from the nearest offset pair known to match (the file's start or end, the end of
        its last change, the previous operation of the delta), decoding only the bytes in
        between, which also proves that every offset is a character boundary. The result
        is checked against the document by length (``size``: the text's UTF-8 length after
        the transaction); when anything does not fit, the file is read from the document
        and the change recorded as one region.
        """
        old = self._cache[name]
        old_bytes = self._nbytes[name]
        change = _TextChange([], [])
        pieces: list[str] = []
        kept = 0  # old[:kept] is in pieces
        pos_c = pos_b = 0  # position in the old string (code points, bytes)
        shift_c = shift_b = 0  # new position minus old position
        ok = True
        try:
            if old.isascii():

                def at(b: int) -> int:
                    if b > old_bytes:
                        raise ValueError
                    return b

            else:
                mark_c, mark_b = self._mark.get(name, (0, 0))

                def at(b: int) -> int:
                    # nearest known pair: where the delta is, the mark, the start, the end
                    anchor_c, anchor_b = pos_c, pos_b
                    for c, k in ((mark_c, mark_b), (0, 0), (len(old), old_bytes)):
                        if abs(k - b) < abs(anchor_b - b):
                            anchor_c, anchor_b = c, k
                    return _code_point_at(old, b, anchor_c, anchor_b)

            for op in delta:
                if "attributes" in op:
                    change.tainted = True
                if "insert" in op:
                    value = op["insert"]
                    if not isinstance(value, str):
                        change.tainted = True
                        continue
                    change.insertions.append(Insertion(name, pos_c + shift_c, value))
                    pieces.append(old[kept:pos_c])
                    pieces.append(value)
                    kept = pos_c
                    shift_c += len(value)
                    shift_b += len(value) if value.isascii() else len(value.encode("utf-8"))
                elif "retain" in op:
                    target = pos_b + int(op["retain"])
                    pos_c, pos_b = at(target), target
                elif "delete" in op:
                    n = int(op["delete"])
                    end_c = at(pos_b + n)
                    change.removals.append(Removal(name, pos_c + shift_c, old[pos_c:end_c]))
                    pieces.append(old[kept:pos_c])
                    kept = end_c
                    shift_c -= end_c - pos_c
                    shift_b -= n
                    pos_c, pos_b = end_c, pos_b + n
        except (UnicodeDecodeError, ValueError, TypeError):
            ok = False
        if ok and not change.tainted and old_bytes + shift_b == size:
            pieces.append(old[kept:])
            self._set_cache(name, "".join(pieces), size)
            self._mark[name] = (pos_c + shift_c, pos_b + shift_b)
            return change
        # The events did not describe the text exactly (content outside the model, or
        # offsets that are not character boundaries): fall back to one region.
        actual = str(self._files[name])
        change.insertions, change.removals = _coarse(name, old, actual)
        change.tainted = change.tainted or not ok
        self._set_cache(name, actual)
        return change

    # -- reading -------------------------------------------------------------------------

    def state_vector(self) -> bytes:
        return self._doc.get_state()

    def diff(self, state_vector: bytes) -> bytes:
        """What a peer with ``state_vector`` lacks (sync step 2)."""
        try:
            _parse_state_vector(state_vector)
        except _Malformed as err:
            raise EditorError(
                EditRefusal.MALFORMED,
                f"the state vector could not be read ({err}); send the state vector of your "
                "document as Yjs encodes it",
            ) from None
        return self._doc.get_update(state_vector)

    def snapshot(self) -> bytes:
        """The whole state as one update."""
        return self._doc.get_update()

    @classmethod
    def from_snapshot(
        cls,
        ws_id: str,
        data: bytes,
        limits: EditorLimits = EditorLimits(),
    ) -> Workspace:
        """A workspace holding the state of a :meth:`snapshot` (checked like any update)."""
        ws = cls(ws_id, limits)
        if data:
            ws.apply(data)
            parsed = _parse_update(data)
            # GC structs of a snapshot include sealed entries: keep refusing files set on them.
            ws._sealed.extend(
                (s.client, s.clock, s.length)
                for run in parsed.runs
                for s in run.structs
                if s.ref == _GC
            )
        return ws

    def files(self) -> dict[str, str]:
        return dict(self._cache)

    def text(self, name: str) -> str:
        return self._cache[name]

    # -- applying -----------------------------------------------------------------------

    def apply(self, update: bytes) -> Applied:
        """Applies an incoming update to the authoritative document, observing its effect.

        Raises :class:`EditorError` when the update is malformed, not causally ready,
        inserts content outside the model or breaks a limit; when the document had
        changed, it is already back to acceptable content and the error carries the
        compensation for the author.
        """
        try:
            parsed = _parse_update(update)
        except _Malformed as err:
            raise EditorError(
                EditRefusal.MALFORMED,
                f"the editor update could not be read ({err}); send updates as your Yjs "
                "document encodes them, then reload the workspace",
                resync=True,
            ) from None
        except _Unsupported as err:
            raise EditorError(
                EditRefusal.UNSUPPORTED,
                f"{err}; use plain text without formatting or embedded objects, "
                "then reload the workspace",
                resync=True,
            ) from None
        problem = _structure_problem(parsed)
        if problem is not None:
            raise EditorError(
                EditRefusal.UNSUPPORTED,
                f"{problem}; the shared editor holds plain-text files only. Reload the workspace",
                resync=True,
            )
        known = self._clock
        problem = _readiness_problem(parsed, known, self._sealed)
        if problem is not None:
            raise EditorError(
                EditRefusal.OUT_OF_SYNC,
                f"the update cannot be applied: {problem}. Reload the workspace from the relay",
                resync=True,
            )
        before = self._doc.get_state()
        try:
            changes = self._run(lambda: self._doc.apply_update(update))
        except Exception:
            self._clock = self._state()
            if self._doc.get_state() == before:
                raise EditorError(
                    EditRefusal.MALFORMED,
                    "the editor update was refused by the document; reload the workspace",
                    resync=True,
                ) from None
            raise
        applied = self._applied(before, changes, parsed)
        if len(parsed.runs) == 1:
            # One client's run that passed the readiness check depends only on what the
            # document had (or on its own earlier items), so it integrated completely: its
            # clock is now the run's end.
            run = parsed.runs[0]
            if run.end > known.get(run.client, 0):
                known[run.client] = run.end
            stuck = False
        else:
            # Several runs may wait on each other in a cycle the readiness check cannot
            # see: read what the document did integrate.
            self._clock = after = self._state()
            stuck = any(after.get(run.client, 0) < run.end for run in parsed.runs)
        if stuck:
            compensation = self._revert(applied, changes)
            self._rebuild([])
            raise EditorError(
                EditRefusal.OUT_OF_SYNC,
                "part of the update depends on changes the relay does not have, so none of "
                "it was kept; reload the workspace from the relay",
                compensation,
                resync=True,
            )
        refusal = self._check(applied, changes)
        if refusal is not None:
            compensation = self._revert(applied, changes)
            raise EditorError(refusal[0], refusal[1], compensation)
        return applied

    def _applied(self, before: bytes, changes: _Changes, parsed: _Update) -> Applied:
        if not changes.entries:  # text changes only (every keystroke)
            ins = [i for tc in changes.texts.values() for i in tc.insertions]
            rem = [r for tc in changes.texts.values() for r in tc.removals]
            return Applied(before, tuple(ins), tuple(rem), (), self._excerpts(ins, rem))
        insertions: list[Insertion] = []
        removals: list[Removal] = []
        file_changes: list[FileChange] = []
        created: dict[str, str] = {}
        deleted: dict[str, str] = {}
        for name, (old, new) in sorted(changes.entries.items()):
            content = self._cache.get(name) if new is not _ABSENT else None
            if old is None and content is None:
                continue
            if old is not None and content is not None:
                # the entry was set again: a new text in place of the old one
                file_changes.append(FileChange(FileOp.DELETED, name))
                file_changes.append(FileChange(FileOp.CREATED, name))
                if old:
                    removals.append(Removal(name, 0, old))
                if content:
                    insertions.append(Insertion(name, 0, content))
            elif old is None and content is not None:
                created[name] = content
            elif old is not None:
                deleted[name] = old
        renamed: dict[str, str] = {}
        for new_name, content in created.items():
            for old_name, old_content in deleted.items():
                if old_content == content and old_name not in renamed.values():
                    renamed[new_name] = old_name
                    break
        for name, content in created.items():
            if name in renamed:
                file_changes.append(FileChange(FileOp.RENAMED, name, renamed[name]))
            else:
                file_changes.append(FileChange(FileOp.CREATED, name))
                if content:
                    insertions.append(Insertion(name, 0, content))
        for name, old in deleted.items():
            if name not in renamed.values():
                file_changes.append(FileChange(FileOp.DELETED, name))
                if old:
                    removals.append(Removal(name, 0, old))
        for tc in changes.texts.values():
            insertions.extend(tc.insertions)
            removals.extend(tc.removals)
        new_names = {name for name, (old, _) in changes.entries.items() if old is None}
        entries = tuple(
            (s.client, s.clock, s.length)
            for run in parsed.runs
            for s in run.structs
            if s.parent_root == FILES_ROOT and s.parent_sub in new_names
        )
        return Applied(
            before=before,
            insertions=tuple(insertions),
            removals=tuple(removals),
            files=tuple(file_changes),
            excerpts=self._excerpts(insertions, removals),
            prior=tuple((name, old) for name, (old, _) in sorted(changes.entries.items())),
            new_entries=entries,
        )

    def _excerpts(
        self, insertions: Sequence[Insertion], removals: Sequence[Removal]
    ) -> tuple[Excerpt, ...]:
        ctx = self.limits.context_lines
        if len(insertions) + len(removals) == 1:  # one change: its line(s)
            one = insertions[0] if insertions else removals[0]
            content = self._cache.get(one.file)
            if content is None:
                return ()
            end = one.start + len(one.text) if insertions else one.start
            a, b = _line_span(content, one.start, end, ctx)
            return (Excerpt(one.file, a, b, content[a:b]),) if a < b else ()
        spans: dict[str, list[tuple[int, int]]] = {}
        for ins in insertions:
            spans.setdefault(ins.file, []).append((ins.start, ins.start + len(ins.text)))
        for rem in removals:
            spans.setdefault(rem.file, []).append((rem.start, rem.start))
        out: list[Excerpt] = []
        for name in sorted(spans):
            content = self._cache.get(name)
            if content is None:
                continue
            merged: list[list[int]] = []
            for a, b in sorted(_line_span(content, s, e, ctx) for s, e in spans[name]):
                if merged and a <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], b)
                else:
                    merged.append([a, b])
            for a, b in merged:
                if a < b:
                    out.append(Excerpt(name, a, b, content[a:b]))
        return tuple(out)

    def _check(self, applied: Applied, changes: _Changes) -> tuple[EditRefusal, str] | None:
        if changes.bad_values or any(tc.tainted for tc in changes.texts.values()):
            return (
                EditRefusal.UNSUPPORTED,
                "the update put content other than plain text into the workspace (a value "
                "that is not a text, formatting or an embedded object); the relay undid it. "
                "Use plain text only",
            )
        lim = self.limits
        for change in applied.files:
            if change.op is not FileOp.DELETED:
                problem = _name_problem(change.name, lim)
                if problem is not None:
                    return (
                        EditRefusal.BAD_FILE_NAME,
                        f"{problem}; the relay undid the change. Choose a name of at most "
                        f"{lim.max_name_chars} characters, a relative path without \\ : * ? "
                        '" < > | or control characters',
                    )
        before_count = sum(1 for _, old in applied.prior if old is not None)
        before_count += len(self._cache) - sum(
            1 for name, _ in applied.prior if name in self._cache
        )
        if len(self._cache) > lim.max_files and len(self._cache) > before_count:
            return (
                EditRefusal.TOO_MANY_FILES,
                f"the workspace would hold more than {lim.max_files} files; the relay undid "
                "the change. Delete a file before creating another",
            )
        grew: dict[str, int] = {}
        for ins in applied.insertions:
            grew[ins.file] = grew.get(ins.file, 0) + len(ins.text)
        for rem in applied.removals:
            grew[rem.file] = grew.get(rem.file, 0) - len(rem.text)
        for name, delta in grew.items():
            size = len(self._cache.get(name, ""))
            if delta > 0 and size > lim.max_file_chars:
                return (
                    EditRefusal.FILE_TOO_LARGE,
                    f"a file would be longer than {lim.max_file_chars} characters; the relay "
                    "undid the change. Split the file or remove text first",
                )
        if sum(grew.values()) > 0 and self._chars > lim.max_workspace_chars:
            return (
                EditRefusal.WORKSPACE_TOO_LARGE,
                f"the workspace would hold more than {lim.max_workspace_chars} characters; "
                "the relay undid the change. Remove text or files first",
            )
        return None

    # -- relay-authored changes ------------------------------------------------------------

    def revert(self, applied: Applied, *, seal: bool = True) -> bytes:
        """A relay-authored update that undoes ``applied`` (call it right after the
        :meth:`apply` that returned it): inserted text is deleted, removed text put back
        where it was, created files deleted, deleted files restored with their content,
        renames undone. Returns the update of that transaction.

        With ``seal`` (the default) the entries of files the update named are sealed: no
        diff carries their names again. Pass ``seal=False`` only when every new name was
        judged acceptable (the author may then set those names again without reloading).
        """
        return self._revert(applied, None, seal=seal)

    def _revert(self, applied: Applied, changes: _Changes | None, *, seal: bool = True) -> bytes:
        sv = self._doc.get_state()
        tainted = (
            {n for n, tc in changes.texts.items() if tc.tainted} if changes is not None else set()
        )
        prior = dict(applied.prior)
        restore: dict[str, str] = {}
        for name in tainted:
            # undo by content: the events did not describe the change exactly
            old = self._content_before(name, applied)
            restore[name] = old
        edits: dict[str, list[tuple[int, int, str]]] = {}
        for ins in applied.insertions:
            if ins.file not in prior and ins.file not in restore:
                edits.setdefault(ins.file, []).append((ins.start, 0, ins.text))
        for rem in applied.removals:
            if rem.file not in prior and rem.file not in restore:
                edits.setdefault(rem.file, []).append((rem.start, 1, rem.text))

        def undo() -> None:
            with self._doc.transaction(origin="relay"):
                for name, old_content in prior.items():
                    if old_content is None:
                        if name in self._files:
                            del self._files[name]
                    else:
                        self._files[name] = Text(old_content)
                for name, content in restore.items():
                    self._replace_all(name, content)
                for name, ops in edits.items():
                    text = self._files[name]
                    s = str(text)
                    # from the end, and at one position the insertion before the removal
                    for start, kind, chunk in sorted(ops, key=lambda o: (-o[0], o[1])):
                        b = _byte_offset(s, start)
                        if kind == 0:
                            n = len(chunk.encode("utf-8"))
                            del text[b : b + n]
                            s = s[:start] + s[start + len(chunk) :]
                        else:
                            text.insert(b, chunk)
                            s = s[:start] + chunk + s[start:]

        self._run(undo, relay=True)
        update = self._doc.get_update(sv)
        if seal and applied.new_entries:
            self._rebuild(applied.new_entries)
        return update

    def _content_before(self, name: str, applied: Applied) -> str:
        """The content of a file before ``applied``, rebuilt from its recorded edits
        (used when its events were not exact: only the coarse region was recorded)."""
        s = self._cache.get(name, "")
        ops = [(i.start, 0, i.text) for i in applied.insertions if i.file == name]
        ops += [(r.start, 1, r.text) for r in applied.removals if r.file == name]
        for start, kind, chunk in sorted(ops, key=lambda o: (-o[0], o[1])):
            tail = s[start + len(chunk) :] if kind == 0 else chunk + s[start:]
            s = s[:start] + tail
        return s

    def _replace_all(self, name: str, content: str) -> None:
        value = self._files.get(name)
        if isinstance(value, Text):
            value.clear()
            value.insert(0, content)
        else:
            self._files[name] = Text(content)

    def _rebuild(self, seal: Sequence[tuple[int, int, int]]) -> None:
        """Rebuilds the document from its own encoding (which holds no pending structs),
        with the items overlapping ``seal`` replaced by GC structs."""
        full = self._doc.get_update()
        if seal:
            full = _seal_bytes(full, _parse_update(full), seal)
        doc: Doc[Any] = Doc(client_id=self._doc.client_id)
        doc.apply_update(full)
        if doc.get_state() != self._doc.get_state():
            raise RuntimeError("rebuilding the editor document changed its state vector")
        self._attach(doc)
        self._sealed.extend(seal)
        actual = {name: str(value) for name, value in self._files.items()}
        if actual != self._cache:
            raise RuntimeError("rebuilding the editor document changed its files")

    def replace(self, file: str, spans: Sequence[tuple[int, int, str]]) -> bytes:
        """Replaces code-point spans ``[start, end)`` of ``file`` with the given texts in
        one relay-authored transaction; returns its update."""
        return self._replace_many({file: spans})

    def _replace_many(self, spans: dict[str, Sequence[tuple[int, int, str]]]) -> bytes:
        checked: dict[str, list[tuple[int, int, str]]] = {}
        for file, items in spans.items():
            content = self._cache.get(file)
            if content is None:
                raise KeyError(f"no file {file!r} in workspace {self.ws_id!r}")
            ordered = sorted(items)
            last = 0
            for start, end, _ in ordered:
                if not 0 <= start <= end <= len(content) or start < last:
                    raise ValueError("replacement spans must lie in the file and not overlap")
                last = end
            checked[file] = ordered
        sv = self._doc.get_state()

        def edit() -> None:
            with self._doc.transaction(origin="relay"):
                for file, items in checked.items():
                    text = self._files[file]
                    s = self._cache[file]
                    for start, end, new in reversed(items):
                        a, b = _byte_offset(s, start), _byte_offset(s, end)
                        if b > a:
                            del text[a:b]
                        if new:
                            text.insert(a, new)

        self._run(edit, relay=True)
        return self._doc.get_update(sv)

    def forward(self, applied: Applied) -> bytes:
        """What every other peer receives after ``applied`` (and any compensation or
        redaction): the relay's diff since the state before it, so only what the relay
        inspected and kept. ``b""`` when there is nothing to send."""
        if applied.empty and self._doc.get_state() == applied.before:
            return b""
        return self._doc.get_update(applied.before)


def _coarse(name: str, old: str, new: str) -> tuple[list[Insertion], list[Removal]]:
    """One insertion and one removal covering everything between the common prefix and
    suffix of ``old`` and ``new``."""
    p = 0
    limit = min(len(old), len(new))
    while p < limit and old[p] == new[p]:
        p += 1
    q = 0
    while q < limit - p and old[len(old) - 1 - q] == new[len(new) - 1 - q]:
        q += 1
    ins = new[p : len(new) - q]
    rem = old[p : len(old) - q]
    return ([Insertion(name, p, ins)] if ins else []), ([Removal(name, p, rem)] if rem else [])


# --- the policy's verdict on an applied update -----------------------------------------------


class EditVerdictKind(enum.Enum):
    ALLOW = "allow"
    ALERT = "alert"
    REDACT = "redact"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class EditVerdict:
    kind: EditVerdictKind
    decision: Decision | None
    """The most severe policy decision (None when there was nothing to check)."""
    rules: tuple[str, ...]
    categories: tuple[str, ...]
    reason: str
    author_update: bytes
    """What the author must apply: the compensation or the redaction (b"" when allowed)."""
    forward: bytes
    """What the others receive (b"" when there is nothing to send)."""
    inserted: str
    """The inserted texts joined with newlines (the audit record's content)."""
    resync: bool = False
    """The author should reload the workspace (a refused file entry was sealed)."""


_HOLD_REASON = (
    "the change needs security staff review, which the shared editor does not support, "
    "so it was not applied"
)


def _effective(decision: Decision, *, name: bool) -> EditVerdictKind:
    action = decision.action
    if action is Action.ALLOW:
        return EditVerdictKind.ALLOW
    if action is Action.ALERT:
        return EditVerdictKind.ALERT
    if action is Action.REDACT and not name:
        return EditVerdictKind.REDACT
    return EditVerdictKind.BLOCK


_ORDER = {k: i for i, k in enumerate(EditVerdictKind)}

_Asked = tuple[Decision, EditVerdictKind, bool, Excerpt | None]


def judge(ws: Workspace, applied: Applied, decide: Callable[[Kind, str], Decision]) -> EditVerdict:
    """Asks the policy about every new file name and every changed region of ``applied``
    and carries out the most severe answer on ``ws``.

    Block (also hold, and redact of a file name, since names are not redacted): the
    change is reverted; the author gets the compensation, the others the relay's diff,
    which carries none of the refused text. Redact: the redacted spans are replaced by
    ``[redacted:CATEGORY]``; the author gets that update, the others the diff. Allow and
    alert: the others get the relay's diff.
    """
    if not applied.files and len(applied.excerpts) == 1:
        # one changed region, no file entries (every keystroke): allowed is the usual answer
        d = decide(Kind.EDITOR, applied.excerpts[0].text)
        if d.action is Action.ALLOW:
            inserted = "\n".join(i.text for i in applied.insertions)
            return EditVerdict(
                EditVerdictKind.ALLOW, d, (), (), d.reason, b"", ws.forward(applied), inserted
            )
        asked: list[_Asked] = [(d, _effective(d, name=False), False, applied.excerpts[0])]
    else:
        asked = _ask(applied, decide)
    return _carry_out(ws, applied, asked)


def _ask(applied: Applied, decide: Callable[[Kind, str], Decision]) -> list[_Asked]:
    asked: list[_Asked] = []
    for change in applied.files:
        if change.op is not FileOp.DELETED:
            d = decide(Kind.FILE_NAME, change.name)
            asked.append((d, _effective(d, name=True), True, None))
    for ex in applied.excerpts:
        d = decide(Kind.EDITOR, ex.text)
        asked.append((d, _effective(d, name=False), False, ex))
    return asked


def _carry_out(ws: Workspace, applied: Applied, asked: list[_Asked]) -> EditVerdict:
    inserted = "\n".join(i.text for i in applied.insertions)
    if not asked:
        return EditVerdict(
            EditVerdictKind.ALLOW, None, (), (), "", b"", ws.forward(applied), inserted
        )
    worst = max(asked, key=lambda a: (_ORDER[a[1]], a[0].action.severity))
    decision, kind, on_name, _ = worst
    flagged = [a[0] for a in asked if a[0].action is not Action.ALLOW]
    names_ok = all(k in (EditVerdictKind.ALLOW, EditVerdictKind.ALERT) for _, k, n, _ in asked if n)
    rules = tuple(dict.fromkeys(r for d in flagged for r in d.rules or (d.rule,)))
    categories = tuple(dict.fromkeys(c for d in flagged for c in d.categories))
    reason = decision.reason
    if decision.action is Action.HOLD:
        reason = f"{decision.reason}; {_HOLD_REASON}"
    elif decision.action is Action.REDACT and on_name:
        reason = f"{decision.reason}; file names are not redacted, so the change was not applied"
    if kind is EditVerdictKind.BLOCK:
        # Names the policy accepted may stay in the deleted entries (no reload needed);
        # any other name is sealed out of every diff.
        seal = bool(applied.new_entries) and not names_ok
        compensation = ws.revert(applied, seal=seal)
        return EditVerdict(
            kind,
            decision,
            rules,
            categories,
            reason,
            compensation,
            ws.forward(applied),
            inserted,
            resync=seal,
        )
    if kind is EditVerdictKind.REDACT:
        spans: dict[str, list[tuple[int, int, str]]] = {}
        for d, k, _, where in asked:
            if k is not EditVerdictKind.REDACT or where is None:
                continue
            for h in d.hits:
                if h.action is Action.REDACT:
                    spans.setdefault(where.file, []).append(
                        (where.start + h.start, where.start + h.end, h.category)
                    )
        update = ws._replace_many({f: _merge_spans(s) for f, s in spans.items()})
        return EditVerdict(
            kind, decision, rules, categories, reason, update, ws.forward(applied), inserted
        )
    return EditVerdict(
        kind, decision, rules, categories, reason, b"", ws.forward(applied), inserted
    )


def _merge_spans(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Overlapping or touching spans merged (labelled with the first one's category),
    each replaced by ``[redacted:CATEGORY]``."""
    merged: list[tuple[int, int, str]] = []
    for start, end, category in sorted(spans):
        if merged and start <= merged[-1][1]:
            first, last_end, label = merged[-1]
            merged[-1] = (first, max(last_end, end), label)
        else:
            merged.append((start, end, category))
    return [(a, b, f"[redacted:{c}]") for a, b, c in merged]
