"""The client's mirror of the shared editor: one pycrdt document per workspace. Pure, no I/O.

:class:`EditorReplica` keeps what a participant sees of each workspace (``class``,
``learner:NAME``) as a Yjs document whose root map ``files`` holds one ``Text`` per file.
The relay's frames are applied to it (:meth:`EditorReplica.apply`), and local changes are
made as transactions that each yield one Yjs v1 update to send::

    replica = EditorReplica()
    for update in replica.write_file("class", "hello.py", "print('hi')\\n"):
        ...  # send EditorUpdate(ws="class", update=update)

Positions in the public API are Python string indices (Unicode code points); the
replica converts them to the units of the underlying text type (UTF-8 bytes for
pycrdt's default documents), so ``é``, emoji and CJK text are edited where one expects.

Every update a change produces stays under ``max_update_bytes`` (the protocol's
``max_bin_bytes``): large insertions are split into chunks of at most ``chunk_chars``
code points, one update each.

When an update from the relay cannot be applied, the workspace is marked stale
(:meth:`EditorReplica.stale`); the owner re-syncs it (``editor_sync``) from scratch.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc, Map, Subscription, Text, TransactionEvent

from relay.limits import DEFAULT_LIMITS
from relay.messages import check_workspace

FILES_ROOT = "files"
"""The root map of every workspace document: file name -> Text."""

DEFAULT_CHUNK_CHARS = 12_000
"""Most code points inserted by one update (4 bytes each at most: well under 60,000)."""

_EMPTY_UPDATES = frozenset({b"", b"\x00\x00"})


class ReplicaError(ValueError):
    """A local change that cannot be made (no such file, name taken, bad position)."""


class _Units(enum.Enum):
    """What pycrdt's ``Text`` counts in (it depends on the document's offset kind)."""

    UTF8 = "utf-8 bytes"
    UTF16 = "utf-16 code units"
    CODE_POINTS = "code points"


def _detect_units() -> _Units:
    doc: Doc[Any] = Doc()
    files = doc.get(FILES_ROOT, type=Map)
    files["probe"] = Text("😀")
    n = len(files["probe"])
    return {4: _Units.UTF8, 2: _Units.UTF16}.get(n, _Units.CODE_POINTS)


_UNITS = _detect_units()


def text_units(text: str) -> int:
    """How long ``text`` is in the units of pycrdt's ``Text`` indices."""
    if _UNITS is _Units.UTF8:
        return len(text.encode("utf-8", "surrogatepass"))
    if _UNITS is _Units.UTF16:
        return len(text.encode("utf-16-le", "surrogatepass")) // 2
    return len(text)


def common_affixes(old: str, new: str) -> tuple[int, int]:
    """Lengths (code points) of the common prefix and the common suffix of two texts,
    not overlapping: ``old[p:len(old)-s]`` is replaced by ``new[p:len(new)-s]``."""
    limit = min(len(old), len(new))
    p = 0
    # Compare in blocks first (fast for long files), then character by character.
    step = 256
    while p + step <= limit and old[p : p + step] == new[p : p + step]:
        p += step
    while p < limit and old[p] == new[p]:
        p += 1
    s = 0
    limit -= p
    while (
        s + step <= limit
        and old[len(old) - s - step : len(old) - s] == new[len(new) - s - step : len(new) - s]
    ):
        s += step
    while s < limit and old[len(old) - 1 - s] == new[len(new) - 1 - s]:
        s += 1
    return p, s


@dataclass(frozen=True, slots=True)
class TextEdit:
    """Replace ``length`` code points at ``start`` with ``text`` (a minimal diff)."""

    start: int
    length: int
    text: str


def minimal_edit(old: str, new: str) -> TextEdit | None:
    """One delete and one insert turning ``old`` into ``new``; None when they are equal."""
    if old == new:
        return None
    p, s = common_affixes(old, new)
    return TextEdit(p, len(old) - p - s, new[p : len(new) - s])


def _chunks(text: str, size: int) -> Iterator[str]:
    for i in range(0, len(text), size):
        yield text[i : i + size]


class _Space:
    """One workspace: its document and the updates its local transactions produce."""

    __slots__ = ("_sub", "captured", "capturing", "doc", "stale")

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()
        self.doc.get(FILES_ROOT, type=Map)
        self.stale = False
        self.capturing = False
        self.captured: list[bytes] = []
        self._sub: Subscription = self.doc.observe(self._observed)

    def _observed(self, event: TransactionEvent) -> None:
        if self.capturing:
            update: bytes = event.update
            if update not in _EMPTY_UPDATES:
                self.captured.append(update)

    @property
    def files(self) -> Map[Any]:
        files: Map[Any] = self.doc.get(FILES_ROOT, type=Map)
        return files


def _applying_failed(exc: BaseException) -> bool:
    """True for the errors a bad update raises (a Rust panic is not an ``Exception``)."""
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


class EditorReplica:
    """What one participant holds of the workspaces of a class."""

    def __init__(
        self,
        *,
        max_update_bytes: int = DEFAULT_LIMITS.max_bin_bytes,
        chunk_chars: int = DEFAULT_CHUNK_CHARS,
    ) -> None:
        if chunk_chars < 1 or max_update_bytes < 1:
            raise ValueError("chunk_chars and max_update_bytes must be positive")
        self.max_update_bytes = max_update_bytes
        self.chunk_chars = chunk_chars
        self._spaces: dict[str, _Space] = {}

    # -- workspaces ---------------------------------------------------------------------

    def _space(self, ws: str) -> _Space:
        space = self._spaces.get(ws)
        if space is None:
            check_workspace(ws)
            space = self._spaces[ws] = _Space()
        return space

    def workspaces(self) -> list[str]:
        """The workspaces this replica holds, in the order it first saw them."""
        return list(self._spaces)

    def holds(self, ws: str) -> bool:
        return ws in self._spaces

    def doc(self, ws: str) -> Doc[Any]:
        """The workspace's document (created empty on first use)."""
        return self._space(ws).doc

    def state_vector(self, ws: str) -> bytes:
        return self._space(ws).doc.get_state()

    def stale(self, ws: str) -> bool:
        """True when an update of ``ws`` could not be applied: it needs a fresh sync."""
        space = self._spaces.get(ws)
        return space is not None and space.stale

    def reset(self, ws: str) -> None:
        """Forget ``ws`` (a fresh, empty document replaces it on next use)."""
        self._spaces.pop(ws, None)

    def forget(self, ws: str) -> None:
        self.reset(ws)

    # -- reading ------------------------------------------------------------------------

    def files(self, ws: str) -> dict[str, str]:
        """File name -> content, sorted by name (entries that are not text are skipped)."""
        space = self._spaces.get(ws)
        if space is None:
            return {}
        out: dict[str, str] = {}
        for name, value in space.files.items():
            if isinstance(value, Text):
                out[name] = str(value)
        return dict(sorted(out.items()))

    def text(self, ws: str, name: str) -> str | None:
        space = self._spaces.get(ws)
        if space is None:
            return None
        value = space.files.get(name)
        return str(value) if isinstance(value, Text) else None

    # -- from the relay -----------------------------------------------------------------

    def apply(self, ws: str, update: bytes) -> bool:
        """Apply an update from the relay. False (and ``ws`` marked stale) if it failed."""
        space = self._space(ws)
        if not update or update in _EMPTY_UPDATES:
            return True
        try:
            space.doc.apply_update(update)
        except BaseException as exc:
            if not _applying_failed(exc):
                raise
            space.stale = True
            return False
        return True

    def missing_at(self, ws: str, remote_sv: bytes) -> bytes | None:
        """What the holder of ``remote_sv`` lacks of our changes, or None if nothing.

        Only inserted content is compared (state vectors do not cover deletions; a
        deletion sent earlier is resent by the client's own retry of that message).
        """
        space = self._space(ws)
        try:
            remote = decode_state_vector(remote_sv)
        except ValueError:
            return None
        local = decode_state_vector(space.doc.get_state())
        if all(remote.get(client, 0) >= clock for client, clock in local.items()):
            return None
        update: bytes = space.doc.get_update(remote_sv)
        return update

    # -- local changes ------------------------------------------------------------------

    def _change(self, ws: str, body: Callable[[Map[Any]], None]) -> list[bytes]:
        """Run ``body`` in one transaction; the update it produced (none if no change)."""
        space = self._space(ws)
        space.captured = []
        space.capturing = True
        try:
            with space.doc.transaction():
                body(space.files)
        finally:
            space.capturing = False
        out, space.captured = space.captured, []
        for update in out:
            if len(update) > self.max_update_bytes:
                raise ReplicaError(
                    f"a change produced a {len(update)}-byte update; the limit is "
                    f"{self.max_update_bytes} (send smaller changes)"
                )
        return out

    def _text(self, files: Map[Any], name: str) -> Text:
        value = files.get(name)
        if not isinstance(value, Text):
            raise ReplicaError(f"no file {name!r} in the workspace")
        return value

    def _append(self, ws: str, name: str, at: int, text: str) -> list[bytes]:
        """Insert ``text`` at code point ``at`` of file ``name``, one chunk per update."""
        updates: list[bytes] = []
        pos = at
        for chunk in _chunks(text, self.chunk_chars):

            def put(files: Map[Any], chunk: str = chunk, pos: int = pos) -> None:
                t = self._text(files, name)
                t.insert(text_units(str(t)[:pos]), chunk)

            updates += self._change(ws, put)
            pos += len(chunk)
        return updates

    def create_file(self, ws: str, name: str, content: str = "") -> list[bytes]:
        """A new file (its name must not be taken)."""
        check_file_name(name)
        if self.text(ws, name) is not None:
            raise ReplicaError(f"a file {name!r} already exists in {ws}")
        first, rest = content[: self.chunk_chars], content[self.chunk_chars :]

        def create(files: Map[Any]) -> None:
            files[name] = Text(first)

        updates = self._change(ws, create)
        if rest:
            updates += self._append(ws, name, len(first), rest)
        return updates

    def write_file(self, ws: str, name: str, content: str) -> list[bytes]:
        """Make file ``name`` hold ``content`` (creating it if needed) with a minimal diff:
        one deletion and one insertion (split into chunks when large)."""
        old = self.text(ws, name)
        if old is None:
            return self.create_file(ws, name, content)
        edit = minimal_edit(old, content)
        if edit is None:
            return []
        return self.replace(ws, name, edit.start, edit.length, edit.text)

    def replace(self, ws: str, name: str, start: int, length: int, text: str) -> list[bytes]:
        """Replace ``length`` code points at ``start`` with ``text``."""
        current = self.text(ws, name)
        if current is None:
            raise ReplicaError(f"no file {name!r} in {ws}")
        if start < 0 or length < 0 or start + length > len(current):
            raise ReplicaError(
                f"positions {start}..{start + length} are outside {name!r} "
                f"({len(current)} characters)"
            )
        first, rest = text[: self.chunk_chars], text[self.chunk_chars :]

        def edit(files: Map[Any]) -> None:
            t = self._text(files, name)
            s = str(t)
            at = text_units(s[:start])
            if length:
                del t[at : at + text_units(s[start : start + length])]
            if first:
                t.insert(at, first)

        updates = self._change(ws, edit)
        if rest:
            updates += self._append(ws, name, start + len(first), rest)
        return updates

    def insert(self, ws: str, name: str, index: int, text: str) -> list[bytes]:
        """Insert ``text`` at code point ``index`` of file ``name``."""
        return self.replace(ws, name, index, 0, text)

    def delete(self, ws: str, name: str, index: int, length: int) -> list[bytes]:
        """Delete ``length`` code points at ``index`` of file ``name``."""
        return self.replace(ws, name, index, length, "")

    def rename_file(self, ws: str, old: str, new: str) -> list[bytes]:
        """Rename in one transaction: the old entry is deleted, the new one set."""
        check_file_name(new)
        content = self.text(ws, old)
        if content is None:
            raise ReplicaError(f"no file {old!r} in {ws}")
        if old == new:
            return []
        if self.text(ws, new) is not None:
            raise ReplicaError(f"a file {new!r} already exists in {ws}")
        first, rest = content[: self.chunk_chars], content[self.chunk_chars :]

        def rename(files: Map[Any]) -> None:
            del files[old]
            files[new] = Text(first)

        updates = self._change(ws, rename)
        if rest:
            updates += self._append(ws, new, len(first), rest)
        return updates

    def delete_file(self, ws: str, name: str) -> list[bytes]:
        if self.text(ws, name) is None:
            raise ReplicaError(f"no file {name!r} in {ws}")

        def remove(files: Map[Any]) -> None:
            del files[name]

        return self._change(ws, remove)


def check_file_name(name: str) -> None:
    """A file name the replica writes: not empty, no control characters."""
    if not name or any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name):
        raise ReplicaError(f"{name!r} is not a usable file name")


def _varuint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated or oversized varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def decode_state_vector(sv: bytes) -> dict[int, int]:
    """A Yjs v1 state vector: client id -> clock (raises ValueError if malformed)."""
    count, pos = _varuint(sv, 0)
    if count > len(sv):
        raise ValueError("state vector counts more clients than it has bytes")
    out: dict[int, int] = {}
    for _ in range(count):
        client, pos = _varuint(sv, pos)
        clock, pos = _varuint(sv, pos)
        out[client] = clock
    if pos != len(sv):
        raise ValueError("trailing bytes after the state vector")
    return out


__all__ = [
    "DEFAULT_CHUNK_CHARS",
    "FILES_ROOT",
    "EditorReplica",
    "ReplicaError",
    "TextEdit",
    "check_file_name",
    "common_affixes",
    "decode_state_vector",
    "minimal_edit",
    "text_units",
]
