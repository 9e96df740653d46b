"""The shared editor on disk: a learner's folder mirror, the instructor's export and
one-shot editor commands.

``classroom-client ... sync SESSION DIR`` keeps a local folder in step with the learner's
own workspace (``learner:NAME``) so that any local editor can be used, and keeps a
read-only copy of the class workspace in ``DIR/class/``::

    DIR/hello.py          <-> learner:l1001 hello.py   (edits on disk are sent)
    DIR/class/lesson.py   <-  class lesson.py          (read-only copy)

Every change found on disk (the folder is polled every ``interval`` seconds; no extra
dependency) becomes a minimal-diff update that goes through the relay's policy like
typing does; a change the relay refuses is put back on disk as the relay kept it, with a
notice saying what was refused and why. Changes made by others (the instructor helping)
are written to disk when the file on disk has not changed meanwhile.

File names are relative paths checked by :func:`name_problem` before anything is written:
no absolute paths, no ``..`` or ``.`` components, no hidden components, no backslashes,
drive letters or control characters; symbolic links are never followed. Hidden files
(``.git``, editor swap files) and backups ending in ``~`` are not synced.

``DIR/.classroom-sync.json`` remembers what was last in step (SHA-256 of each file), so
that a later run can tell a file changed on disk while offline from one the relay
changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import stat
import sys
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from relay.client import RelayClient, describe_ack
from relay.editor_client import ReplicaError
from relay.errors import ClientError
from relay.messages import CLASS_WORKSPACE, Ack, AckStatus, EditorModeEvent, SessionEnded

CLASS_DIR = "class"
"""The folder (inside DIR) holding the read-only copy of the class workspace."""
STATE_FILE = ".classroom-sync.json"
REFUSED_DIR = ".classroom-sync-refused"
"""Where a refused version of a file is kept on this machine (hidden: never synced), so
that putting the file back does not lose the learner's work."""
DEFAULT_INTERVAL_S = 0.3
MAX_NAME_CHARS = 200
_FORBIDDEN = frozenset('\\:*?"<>|')


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a file of a synced folder, or None when it can."""
    if not name:
        return "the name is empty"
    if len(name) > MAX_NAME_CHARS:
        return f"the name is longer than {MAX_NAME_CHARS} characters"
    if name.startswith("/"):
        return "the name is an absolute path (names are relative to the folder)"
    for ch in name:
        if ch in _FORBIDDEN:
            return f"the name contains {ch!r}"
        if unicodedata.category(ch)[0] == "C":
            return "the name contains a control or format character"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return "the name has an empty, '.' or '..' part"
        if part.startswith("."):
            return "the name has a hidden part (starting with '.')"
        if part != part.strip() or part.endswith("."):
            return "a part of the name starts or ends with a space or ends with '.'"
    return None


def safe_path(root: Path, name: str) -> Path:
    """Where file ``name`` goes under ``root``; :class:`ClientError` if it is not safe.

    Besides :func:`name_problem`, no existing part of the path may be a symbolic link
    (a link could point outside the folder).
    """
    problem = name_problem(name)
    if problem is not None:
        raise ClientError(f"the file name {name!r} is refused: {problem}")
    path = root
    for part in name.split("/"):
        path = path / part
        if path.is_symlink():
            raise ClientError(
                f"the file name {name!r} is refused: {path} is a symbolic link, which is "
                "never followed"
            )
    return path


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _stat_key(st: os.stat_result) -> tuple[int, int]:
    return (st.st_mtime_ns, st.st_size)


def _write_text(path: Path, text: str, *, read_only: bool = False) -> tuple[int, int]:
    """Write atomically (a hidden temporary file, then rename); the new file's stat key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.sync-tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as out:
        out.write(text)
    if read_only:
        os.chmod(tmp, 0o444)
    os.replace(tmp, path)
    return _stat_key(os.stat(path, follow_symlinks=False))


def _remove(path: Path, root: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_file() and not path.is_symlink():
            if not os.access(path, os.W_OK):
                os.chmod(path, 0o644)
            path.unlink()
    # Remove folders left empty (never the root itself).
    parent = path.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


def scan(root: Path, *, skip_top: frozenset[str] = frozenset()) -> Iterator[tuple[str, Path]]:
    """The regular files under ``root`` as (name, path): no links, no hidden or ``~`` files.

    Names that :func:`name_problem` refuses are yielded too (the caller reports them).
    """
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        rel = here.relative_to(root).as_posix()
        keep = []
        for d in sorted(dirnames):
            if d.startswith(".") or (here / d).is_symlink():
                continue
            if rel == "." and d in skip_top:
                continue
            keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            if f.startswith(".") or f.endswith("~"):
                continue
            path = here / f
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            name = f if rel == "." else f"{rel}/{f}"
            yield name, path


def read_text(path: Path) -> str | None:
    """The file's text, or None when it is not UTF-8 text."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text


# ---------------------------------------------------------------------------------------
# the folder mirror
# ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Tracked:
    """What disk and relay last agreed on for one file, and the disk file's stat then."""

    text: str
    stat: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class SyncReport:
    sent: int = 0
    refused: int = 0
    received: int = 0


class Reporter:
    """Where the mirror says what it did: stdout for results, stderr for notices."""

    def out(self, line: str) -> None:
        print(line, flush=True)

    def note(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)


@dataclass
class FolderSync:
    """One learner's folder kept in step with their workspace (and the class copy)."""

    client: RelayClient
    root: Path
    ws: str
    report: Reporter = field(default_factory=Reporter)
    class_copy: bool = True
    _own: dict[str, _Tracked] = field(default_factory=dict)
    _cls: dict[str, _Tracked] = field(default_factory=dict)
    _warned: set[str] = field(default_factory=set)
    _baseline: dict[str, str] = field(default_factory=dict)
    sent: int = 0
    refused: int = 0
    received: int = 0

    @property
    def class_root(self) -> Path:
        return self.root / CLASS_DIR

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.report.note(text)

    # -- state file ---------------------------------------------------------------------

    def _load_baseline(self) -> None:
        path = self.root / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        files = data.get(self.ws) if isinstance(data, dict) else None
        if isinstance(files, dict):
            self._baseline = {
                k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)
            }

    def _save_baseline(self) -> None:
        current = {name: _digest(t.text) for name, t in sorted(self._own.items())}
        if current == self._baseline:
            return
        self._baseline = current
        with contextlib.suppress(OSError):
            _write_text(self.root / STATE_FILE, json.dumps({self.ws: current}, indent=1) + "\n")

    # -- start --------------------------------------------------------------------------

    async def start(self) -> None:
        """Load both workspaces from the relay and reconcile them with the folder."""
        if self.root.exists() and not self.root.is_dir():
            raise ClientError(f"{self.root} is not a folder; give a folder to sync into")
        self.root.mkdir(parents=True, exist_ok=True)
        self._load_baseline()
        await self.client.editor_sync(self.ws)
        if self.class_copy:
            await self.client.editor_sync(CLASS_WORKSPACE)
        relay = self.client.editor.files(self.ws)
        disk = self._disk_files()
        for name in sorted(set(relay) | set(disk)):
            known = self._baseline.get(name)
            mine, theirs = disk.get(name), relay.get(name)
            if mine is not None and theirs is not None:
                if mine == theirs:
                    self._own[name] = _Tracked(theirs, self._stat(name))
                elif known is not None and _digest(mine) == known:
                    self._write_own(name, theirs)  # changed at the relay only
                    self.received += 1
                else:
                    self._own[name] = _Tracked(theirs, None)  # changed on disk: sent below
                    if known is None:
                        self.report.note(
                            f"note: {name} differs from {self.ws} and this folder was not "
                            "synced before: the copy on disk is sent"
                        )
            elif theirs is not None:
                if known is not None and _digest(theirs) == known:
                    self._own[name] = _Tracked(theirs, None)  # deleted on disk: sent below
                else:
                    self._write_own(name, theirs)
                    self.received += 1
            elif mine is not None and known is not None and _digest(mine) == known:
                # Deleted at the relay while this folder was not synced.
                _remove(safe_path(self.root, name), self.root)
                self.report.out(f"removed {name} (deleted in {self.ws})")
        self._save_baseline()
        self.report.out(
            f"syncing {self.ws} <-> {self.root} ({len(self._own)} files)"
            + (
                f"; class -> {self.class_root} (read-only, "
                f"{len(self.client.editor.files(CLASS_WORKSPACE))} files)"
                if self.class_copy
                else ""
            )
        )

    def _stat(self, name: str) -> tuple[int, int] | None:
        try:
            return _stat_key(os.stat(safe_path(self.root, name), follow_symlinks=False))
        except (OSError, ClientError):
            return None

    def _disk_files(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, path in scan(self.root, skip_top=frozenset({CLASS_DIR})):
            problem = name_problem(name)
            if problem is not None:
                self._warn_once(name, f"not synced: {name!r}: {problem}; rename the file")
                continue
            text = read_text(path)
            if text is None:
                self._warn_once(name, f"not synced: {name} is not UTF-8 text")
                continue
            out[name] = text
        return out

    def _write_own(self, name: str, text: str) -> bool:
        try:
            path = safe_path(self.root, name)
        except ClientError as exc:
            self._warn_once(f"relay:{name}", f"{exc}; it was not written to {self.root}")
            return False
        top = name.split("/", 1)[0]
        if self.class_copy and top == CLASS_DIR and "/" in name:
            self._warn_once(
                f"relay:{name}",
                f"{name} in {self.ws} is not written: '{CLASS_DIR}/' holds the class copy",
            )
            return False
        self._own[name] = _Tracked(text, _write_text(path, text))
        return True

    # -- one round ----------------------------------------------------------------------

    async def step(self) -> None:
        """Send what changed on disk, then write what changed at the relay.

        A workspace being reloaded (after a refusal or a bad update) is left alone on
        disk until the relay's state is back.
        """
        await self._push_local()
        if self.client.synced(self.ws):
            self._pull_own()
        if self.class_copy and self.client.synced(CLASS_WORKSPACE):
            self._mirror_class()
        self._save_baseline()
        for event in self.client.drain_events():
            if isinstance(event, EditorModeEvent):
                state = "on" if event.lecture else "off"
                self.report.note(f"note: lecture mode is {state} (set by {event.by})")
            elif isinstance(event, SessionEnded):
                self.report.note(f"note: the class has ended (by {event.by})")

    def _local_changes(self) -> tuple[dict[str, str], list[str]]:
        changed: dict[str, str] = {}
        present: set[str] = set()
        for name, path in scan(self.root, skip_top=frozenset({CLASS_DIR})):
            problem = name_problem(name)
            if problem is not None:
                self._warn_once(name, f"not synced: {name!r}: {problem}; rename the file")
                continue
            present.add(name)
            try:
                key = _stat_key(os.stat(path, follow_symlinks=False))
            except OSError:
                continue
            tracked = self._own.get(name)
            if tracked is not None and tracked.stat == key:
                continue
            text = read_text(path)
            if text is None:
                self._warn_once(name, f"not synced: {name} is not UTF-8 text")
                continue
            if tracked is not None and tracked.text == text:
                tracked.stat = key
                continue
            changed[name] = text
        deleted = [n for n in self._own if n not in present]
        return changed, deleted

    async def _push_local(self) -> None:
        changed, deleted = self._local_changes()
        for name, text in changed.items():
            try:
                acks = await self.client.write_file(self.ws, name, text)
            except ReplicaError as exc:
                self._warn_once(f"local:{name}", f"not synced: {name}: {exc}")
                continue
            self._after_push(name, acks, "changed" if name in self._own else "new", text)
        for name in deleted:
            if self.client.editor.text(self.ws, name) is None:
                self._own.pop(name, None)
                continue
            acks = await self.client.delete_file(self.ws, name)
            self._after_push(name, acks, "deleted")

    def _after_push(self, name: str, acks: list[Ack], what: str, sent: str | None = None) -> None:
        """Report the relay's decision; put the file back as the relay has it if it
        refused or redacted the change."""
        self.sent += 1
        if not self.client.synced(self.ws):
            self.report.note(
                f"note: the relay's decision on {name} is not known yet (the workspace is "
                "being reloaded); the folder is brought in step when it is back"
            )
            self._own.pop(name, None)
            return
        kept = self.client.editor.text(self.ws, name)
        refused = next((a for a in acks if a.status is AckStatus.REFUSED), None)
        redacted = next((a for a in acks if a.status is AckStatus.REDACTED), None)
        path = safe_path(self.root, name)
        if refused is not None:
            self.refused += 1
            self.report.note(
                f"refused: your change to {name} was not kept: {refused.text or refused.error}"
            )
            if sent is not None:
                self._keep_refused(name, sent)
        elif redacted is not None:
            self.report.note(f"redacted: your change to {name}: {redacted.text}")
        else:
            self.report.out(
                f"sent {name} ({what}): {describe_ack(acks[-1]) if acks else 'no change'}"
            )
        if kept is None:
            self._own.pop(name, None)
            if path.exists() and (refused is not None or redacted is not None):
                _remove(path, self.root)
                self.report.note(
                    f"note: {name} was removed from {self.root}: the relay did not keep it"
                )
            return
        disk = read_text(path) if path.exists() else None
        if disk != kept:
            self._own[name] = _Tracked(kept, _write_text(path, kept))
            self.report.note(f"note: {name} on disk was put back to the relay's version")
        else:
            self._own[name] = _Tracked(kept, self._stat(name))

    def _keep_refused(self, name: str, text: str) -> None:
        try:
            path = safe_path(self.root / REFUSED_DIR, name)
            _write_text(path, text)
        except (OSError, ClientError):
            return
        self.report.note(
            f"note: your version of {name} is kept in {path} on this machine only "
            "(it is not synced); change it there and copy it back"
        )

    def _pull_own(self) -> None:
        relay = self.client.editor.files(self.ws)
        for name, text in relay.items():
            tracked = self._own.get(name)
            if tracked is not None and tracked.text == text:
                continue
            if tracked is not None and self._stat(name) != tracked.stat:
                continue  # changed on disk meanwhile: the next round sends it
            if tracked is None and self._stat(name) is not None:
                continue  # a new file on disk with this name: the next round sends it
            if self._write_own(name, text):
                self.received += 1
                self.report.out(f"received {name}")
        for name in [n for n in self._own if n not in relay]:
            tracked = self._own.pop(name)
            try:
                path = safe_path(self.root, name)
            except ClientError:
                continue
            if self._stat(name) == tracked.stat:
                _remove(path, self.root)
                self.report.out(f"removed {name} (deleted in {self.ws})")

    def _mirror_class(self) -> None:
        root = self.class_root
        relay = self.client.editor.files(CLASS_WORKSPACE)
        for name, text in relay.items():
            try:
                path = safe_path(root, name)
            except ClientError as exc:
                self._warn_once(f"class:{name}", f"{exc}; it was not written to {root}")
                continue
            tracked = self._cls.get(name)
            try:
                now = _stat_key(os.stat(path, follow_symlinks=False))
            except OSError:
                now = None
            if tracked is not None and tracked.text == text and tracked.stat == now:
                continue
            if tracked is not None and tracked.text == text and now is not None:
                if read_text(path) == text:
                    tracked.stat = now
                    continue
                self.report.note(
                    f"note: {CLASS_DIR}/{name} is a read-only copy of the class workspace; "
                    f"your change was not sent and the file was put back. Copy it out of "
                    f"{CLASS_DIR}/ to work on it."
                )
            if path.exists() and not os.access(path, os.W_OK):
                os.chmod(path, 0o644)
            self._cls[name] = _Tracked(text, _write_text(path, text, read_only=True))
        for name in [n for n in self._cls if n not in relay]:
            self._cls.pop(name)
            with contextlib.suppress(ClientError):
                _remove(safe_path(root, name), root)

    async def run(self, *, duration: float | None, interval: float = DEFAULT_INTERVAL_S) -> None:
        """Rounds every ``interval`` seconds until ``duration`` (None: until the client
        stops: the class ended, or a refusal that ends the connection)."""
        deadline = None if duration is None else time.monotonic() + duration
        while not self.client.finished:
            await self.step()
            if deadline is not None and time.monotonic() >= deadline:
                return
            pause = interval
            if deadline is not None:
                pause = max(0.0, min(interval, deadline - time.monotonic()))
            await asyncio.sleep(pause)

    def summary(self) -> SyncReport:
        return SyncReport(self.sent, self.refused, self.received)


# ---------------------------------------------------------------------------------------
# export (instructor)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportPlan:
    write: dict[str, str]
    unchanged: list[str]
    conflicts: list[str]
    refused: dict[str, str]
    """name -> why it cannot be written safely."""


def plan_export(root: Path, files: dict[str, str]) -> ExportPlan:
    """What exporting ``files`` into ``root`` would do (nothing is written)."""
    write: dict[str, str] = {}
    unchanged: list[str] = []
    conflicts: list[str] = []
    refused: dict[str, str] = {}
    for name, text in files.items():
        try:
            path = safe_path(root, name)
        except ClientError as exc:
            refused[name] = str(exc)
            continue
        if path.exists() or path.is_symlink():
            current = read_text(path) if path.is_file() and not path.is_symlink() else None
            if current == text:
                unchanged.append(name)
                continue
            conflicts.append(name)
        write[name] = text
    return ExportPlan(write, unchanged, conflicts, refused)


def write_export(root: Path, plan: ExportPlan) -> list[Path]:
    written = []
    for name, text in plan.write.items():
        path = safe_path(root, name)
        if path.exists() and not os.access(path, os.W_OK):
            os.chmod(path, 0o644)
        _write_text(path, text)
        written.append(path)
    return written


__all__ = [
    "CLASS_DIR",
    "REFUSED_DIR",
    "STATE_FILE",
    "ExportPlan",
    "FolderSync",
    "Reporter",
    "SyncReport",
    "name_problem",
    "plan_export",
    "read_text",
    "safe_path",
    "scan",
    "write_export",
]
