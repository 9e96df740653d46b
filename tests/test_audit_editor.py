"""``classroom-relay audit show SESSION --editor``: the shared editor's files rebuilt from
the audit log as they were at a time, and editor records in the transcript.

Three levels: the pure rebuild (:mod:`relay.audit_editor`); the command over records
written straight into a facility's audit log with the audit store; and a real relay over
TLS on loopback with an instructor and a learner editing through raw frames.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from pycrdt import Doc, Map, Text

from relay.audit import AuditEvent, EventKind
from relay.audit_editor import (
    EditorRecord,
    EditorRecordRef,
    RebuildPlan,
    clashes,
    first_structs,
    path_parts,
    rebuild,
    unsafe_name,
    valid_workspace,
)
from relay.audit_query import Transcript
from relay.audit_read import StoredRecord
from relay.auditlog import FrameType
from relay.server import Relay, open_audit_store
from tests.conftest import PINS, Facility
from tests.rawclient import Raw, raw_connect

PHONE = "415-555-0134"
T0 = 1_800_000_000.0


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Author:
    """One Yjs document typed into, producing the updates a relay would forward."""

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()
        self.files = self.doc.get("files", type=Map)

    def change(self, body: Callable[[Map[Any]], None]) -> bytes:
        before = self.doc.get_state()
        with self.doc.transaction():
            body(self.files)
        return self.doc.get_update(before)

    def type(self, name: str, text: str) -> bytes:
        def body(files: Map[Any]) -> None:
            if name not in files:
                files[name] = Text()
            t = files[name]
            t += text

        return self.change(body)

    def delete(self, name: str, start: int, end: int) -> bytes:
        def body(files: Map[Any]) -> None:
            t = files[name]
            del t[start:end]

        return self.change(body)

    def snapshot(self) -> bytes:
        return self.doc.get_update()


def rec(seq: int, t: float, kind: str, ws: str, update: bytes | None) -> EditorRecord:
    return EditorRecord(EditorRecordRef(seq, t, kind, ws), b64(update) if update else None)


# ---------------------------------------------------------------------------------------
# the pure rebuild
# ---------------------------------------------------------------------------------------


def test_the_plan_reads_the_latest_snapshot_before_the_time_and_the_changes_after_it() -> None:
    refs = [
        EditorRecordRef(1, 10.0, "editor.update", "class"),
        EditorRecordRef(2, 11.0, "editor.update", "learner:l1001"),
        EditorRecordRef(3, 12.0, "editor.snapshot", "class"),
        EditorRecordRef(4, 13.0, "editor.refused", "class"),
        EditorRecordRef(5, 14.0, "editor.sync", "class"),
        EditorRecordRef(6, 15.0, "editor.snapshot", "class"),
        EditorRecordRef(7, 16.0, "editor.redacted", "class"),
    ]
    plan = RebuildPlan(at=14.0).add_all(refs)
    assert plan.workspaces() == ["class", "learner:l1001"]
    assert [r.seq for r in plan.records("class")] == [3, 4]
    assert [r.seq for r in plan.records("learner:l1001")] == [2]
    assert plan.later == 2
    assert [r.seq for r in RebuildPlan().add_all(refs).records("class")] == [6, 7]
    assert [r.seq for r in RebuildPlan(at=11.5).add_all(refs).records("class")] == [1]
    only = RebuildPlan(ws="learner:l1001").add_all(refs)
    assert only.workspaces() == ["learner:l1001"]
    assert RebuildPlan(at=9.0).add_all(refs).workspaces() == []


def test_rebuild_at_several_times_and_across_a_snapshot() -> None:
    a = Author()
    u1 = a.type("main.py", "print(1)\n")
    u2 = a.type("main.py", "x = 2\n")
    snap = a.snapshot()
    u3 = a.delete("main.py", 0, 9)
    u4 = a.type("notes.txt", "done")
    log = [
        rec(1, 1.0, "editor.update", "class", u1),
        rec(2, 2.0, "editor.update", "class", u2),
        rec(3, 3.0, "editor.snapshot", "class", snap),
        rec(4, 4.0, "editor.update", "class", u3),
        rec(5, 5.0, "editor.alert", "class", u4),
    ]

    def at(t: float | None) -> dict[str, str]:
        plan = RebuildPlan(at=t).add_all(r.ref for r in log)
        chosen = {r.seq for r in plan.records("class")}
        w = rebuild("class", [r for r in log if r.ref.seq in chosen])
        assert w.complete
        return {f.name: f.text for f in w.files}

    assert at(1.0) == {"main.py": "print(1)\n"}
    assert at(2.5) == {"main.py": "print(1)\nx = 2\n"}
    assert at(3.0) == {"main.py": "print(1)\nx = 2\n"}
    assert at(4.0) == {"main.py": "x = 2\n"}
    assert at(None) == {"main.py": "x = 2\n", "notes.txt": "done"}
    # Everything applied in order gives the same: an update the snapshot holds is harmless.
    every = rebuild("class", log)
    assert {f.name: f.text for f in every.files} == at(None)
    assert every.as_of is not None
    assert every.as_of.seq == 5
    assert every.snapshot is not None
    assert every.snapshot.seq == 3
    assert every.applied == 4


def test_a_change_that_depends_on_missing_records_is_reported_not_hidden() -> None:
    a = Author()
    a.type("main.py", "secret = 1\n")  # never recorded (e.g. removed by retention)
    u2 = a.type("main.py", "y = 2\n")
    u3 = a.delete("main.py", 0, 3)
    w = rebuild("class", [rec(7, 1.0, "editor.update", "class", u2)])
    assert not w.complete
    assert w.pending == (7,)
    assert w.files == ()
    # A later snapshot makes the workspace whole again.
    later = rebuild(
        "class",
        [
            rec(8, 2.0, "editor.snapshot", "class", a.snapshot()),
            rec(9, 3.0, "editor.update", "class", u3),
        ],
    )
    assert later.complete
    assert later.files[0].text == "ret = 1\ny = 2\n"
    # A change that only deletes has no new items to check.
    assert first_structs(u3) is None
    assert first_structs(u2) is not None


def test_records_without_an_update_and_bad_records() -> None:
    a = Author()
    u1 = a.type("a.py", "x")
    w = rebuild(
        "class",
        [rec(1, 1.0, "editor.update", "class", u1), rec(2, 2.0, "editor.refused", "class", None)],
    )
    assert [(f.name, f.text, f.chars, f.lines) for f in w.files] == [("a.py", "x", 1, 1)]
    assert w.as_of is not None
    assert w.as_of.seq == 1
    bad = EditorRecord(EditorRecordRef(3, 3.0, "editor.update", "class"), "not base64!")
    with pytest.raises(ValueError, match="record 3"):
        rebuild("class", [bad])
    garbage = rec(4, 4.0, "editor.update", "class", b"\xff\x00garbage")
    with pytest.raises(ValueError, match="cannot be read"):
        rebuild("class", [garbage])
    with pytest.raises(ValueError, match="not 'learner:l1001'"):
        rebuild("learner:l1001", [rec(1, 1.0, "editor.update", "class", u1)])


def test_names_that_are_not_safe_paths_are_refused() -> None:
    assert valid_workspace("class")
    assert valid_workspace("learner:l1001")
    for ws in ("", "learner:", "learner:../x", "instructor:alice", "class/x", "learner:A"):
        assert not valid_workspace(ws), ws
    assert path_parts("learner:l1001", "src/app.py") == ("learner:l1001", "src", "app.py")
    assert unsafe_name("main.py") is None
    for name, why in (
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("../x.py", "'..'"),
        ("a/../../x.py", "'..'"),
        ("a//b", "empty part"),
        ("a/./b", "'.'"),
        ("a/", "empty part"),
        ("x\x00y", "control"),
        ("x\u202ey", "invisible"),
        ("a" * 256, "255 bytes"),
    ):
        problem = unsafe_name(name)
        assert problem is not None, name
        assert why in problem, (name, problem)
        with pytest.raises(ValueError, match=r"^file .* of class: "):
            path_parts("class", name)
    with pytest.raises(ValueError, match="workspace"):
        path_parts("../class", "a.py")
    assert clashes([("class", "a"), ("class", "a", "b"), ("class", "c")]) == [("class", "a")]
    assert clashes([("class", "a.py"), ("learner:l1001", "a.py")]) == []


def stored(seq: int, t: float, kind: str, **fields: Any) -> StoredRecord:
    body = {"kind": kind, "time": t, "session": "py101", **fields}
    contents: dict[str, Any] = {k: body.pop(k) for k in ("content", "delivered") if k in body}
    return StoredRecord(seq, FrameType.EVENT, "s", 8, body, contents)


def test_the_transcript_joins_keystrokes_and_leaves_out_sync_and_presence() -> None:
    ada = {"actor": "learner:l1001", "machine": "pc-01", "learner": "l1001"}
    mine = "learner:l1001"
    records = [
        stored(1, T0, "editor.sync", channel=mine, **ada),
        *(
            stored(
                2 + i,
                T0 + i,
                "editor.update",
                channel=mine,
                decision="delivered",
                detail="main.py: +1 -0 chars",
                content=ch,
                **ada,
            )
            for i, ch in enumerate("print")
        ),
        stored(7, T0 + 6, "editor.presence", channel=mine, detail="main.py 5-5", **ada),
        stored(
            8,
            T0 + 7,
            "editor.refused",
            channel="class",
            decision="refused",
            rule="contact.details",
            error="policy_blocked",
            detail=f"main.py: +{len(PHONE)} -0 chars; phone numbers may not be shared",
            content=PHONE,
            **ada,
        ),
        stored(
            12,
            T0 + 7.5,
            "editor.refused",
            channel="class",
            decision="refused",
            rule="contact.details",
            error="policy_blocked",
            detail="refused change of 1 file entry(ies), +0 chars; names may not hold a phone",
            content="415.py",
            **ada,
        ),
        stored(
            9,
            T0 + 8,
            "editor.update",
            channel="class",
            decision="delivered",
            detail="created b.py; b.py: +2 -0 chars",
            content="hi",
            **ada,
        ),
        stored(10, T0 + 9, "editor.snapshot", channel="class", actor="relay", detail="periodic"),
        stored(
            11,
            T0 + 10,
            "editor.mode",
            channel="class",
            actor="instructor:alice",
            detail="lecture mode on",
        ),
    ]
    transcript = Transcript()
    lines = [line for r in records for line in transcript.feed(r)] + transcript.finish()
    assert transcript.unshown == 2
    assert len(lines) == 6
    typed, refused, refused_name, created, snapshot, mode = lines
    assert (
        "learner:l1001 (at pc-01) edited learner:l1001/main.py: +5 -0 chars in 5 changes until"
        in typed
    )
    assert typed.endswith(', typed "print"  [delivered]')
    assert (
        f"learner:l1001 (at pc-01)'s change to class/main.py was refused (+12 -0 chars), "
        f'typed "{PHONE}"  [refused; rule contact.details; error policy_blocked; phone numbers '
        "may not be shared]"
    ) in refused
    assert (
        "learner:l1001 (at pc-01)'s change to class was refused (+0 chars, 1 file entry(ies)), "
        'typed "415.py"  [refused; rule contact.details; error policy_blocked; names may not '
        "hold a phone]"
    ) in refused_name
    assert 'edited class/b.py: created b.py, +2 -0 chars, typed "hi"  [delivered]' in created
    assert "workspace class recorded whole (periodic)" in snapshot
    assert "instructor:alice set the editor: lecture mode on" in mode


def test_a_single_keystroke_and_long_pastes_read_well() -> None:
    who = {"actor": "instructor:alice"}
    paste = "x" * 500
    records = [
        stored(
            1,
            T0,
            "editor.update",
            channel="class",
            decision="delivered",
            detail="main.py: +1 -0 chars",
            content="\n",
            **who,
        ),
        stored(
            2,
            T0 + 120,  # long after: a line of its own
            "editor.update",
            channel="class",
            decision="delivered",
            detail="main.py: +500 -0 chars",
            content=paste,
            **who,
        ),
    ]
    transcript = Transcript()
    lines = [line for r in records for line in transcript.feed(r)] + transcript.finish()
    assert len(lines) == 2
    assert lines[0].endswith(
        'instructor:alice edited class/main.py: +1 -0 chars, typed "\\n"  [delivered]'
    )
    assert "… (500 characters)" in lines[1]
    assert len(lines[1]) < 350


# ---------------------------------------------------------------------------------------
# the command, over records written with the audit store
# ---------------------------------------------------------------------------------------


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat()


def editor_event(
    kind: EventKind, t: float, ws: str, update: bytes, actor: str = "instructor:alice", **kw: Any
) -> AuditEvent:
    return AuditEvent(
        kind,
        t,
        "py101",
        actor,
        channel=ws,
        delivered=b64(update),
        **kw,
    )


def append(f: Facility, *events: AuditEvent) -> None:
    async def go() -> None:
        store = open_audit_store(f.home, f.home.load_config())
        try:
            await store.submit(events)
        finally:
            await store.close()

    asyncio.run(go())


def run(f: Facility, *args: str) -> tuple[int, str, str]:
    return f.admin("audit", "show", "py101", *args)


def ok(f: Facility, *args: str) -> str:
    code, out, err = run(f, *args)
    assert code == 0, err
    return out


def staff(f: Facility) -> tuple[str, str]:
    return ("--bundle", str(f.bundle("sam")))


def rebuilt(f: Facility, *args: str) -> dict[str, dict[str, str]]:
    """``--editor --json``: workspace -> file -> text."""
    out = ok(f, "--editor", "--json", *args)
    return {
        w["ws"]: {x["name"]: x["text"] for x in w["files"]}
        for w in (json.loads(line) for line in out.splitlines())
    }


def reads(f: Facility) -> list[dict[str, Any]]:
    """The audit.read records (in clear: no key needed)."""
    from relay.audit_read import AuditReader

    records = AuditReader(f.home.audit_dir).records(decrypt=False)
    return [r.to_dict() for r in records if r.kind == "audit.read"]


@pytest.fixture
def written(facility: Facility) -> Facility:
    """py101's editor: the instructor writes main.py in ``class``, learner l1001 writes
    hello.py in their own workspace; a refused phone number (only its length-only trace
    in ``delivered``); a snapshot of ``class`` at T0+40; later changes after it."""
    cls, mine = Author(), Author()
    ada = {"actor": "learner:l1001", "machine": "pc-01", "learner": "l1001"}
    u1 = cls.type("main.py", "print(1)\n")
    u2 = mine.type("hello.py", "x = 2\n")
    # The relay applied the refused text and undid it: others get length-only items.
    relay = Author()
    relay.doc.apply_update(u1)
    before = relay.doc.get_state()
    relay.doc.apply_update(cls.type("main.py", f"# {PHONE}\n"))
    correction = relay.delete("main.py", 9, 9 + len(PHONE) + 3)
    refused_forward = relay.doc.get_update(before)
    cls.doc.apply_update(correction)
    snap = cls.snapshot()
    u4 = cls.type("main.py", "print(2)\n")
    u5 = mine.type("hello.py", "y = 3\n")
    append(
        facility,
        editor_event(
            EventKind.EDITOR_UPDATE,
            T0 + 10,
            "class",
            u1,
            decision="delivered",
            detail="created main.py; main.py: +9 -0 chars",
            content="print(1)\n",
        ),
        editor_event(
            EventKind.EDITOR_UPDATE,
            T0 + 20,
            "learner:l1001",
            u2,
            decision="delivered",
            detail="created hello.py; hello.py: +6 -0 chars",
            content="x = 2\n",
            **ada,
        ),
        editor_event(
            EventKind.EDITOR_REFUSED,
            T0 + 30,
            "class",
            refused_forward,
            decision="refused",
            rule="contact.details",
            error="policy_blocked",
            detail=f"main.py: +{len(PHONE) + 3} -0 chars; phone numbers may not be shared",
            content=f"# {PHONE}\n",
            **ada,
        ),
        editor_event(
            EventKind.EDITOR_SNAPSHOT, T0 + 40, "class", snap, actor="relay", detail="periodic"
        ),
        editor_event(
            EventKind.EDITOR_UPDATE,
            T0 + 50,
            "class",
            u4,
            decision="delivered",
            detail="main.py: +9 -0 chars",
            content="print(2)\n",
        ),
        editor_event(
            EventKind.EDITOR_UPDATE,
            T0 + 60,
            "learner:l1001",
            u5,
            decision="delivered",
            detail="hello.py: +6 -0 chars",
            content="y = 3\n",
            **ada,
        ),
    )
    return facility


def test_files_at_several_times(written: Facility) -> None:
    assert rebuilt(written, "--at", iso(T0 + 15)) == {"class": {"main.py": "print(1)\n"}}
    assert rebuilt(written, "--at", iso(T0 + 35)) == {
        "class": {"main.py": "print(1)\n"},
        "learner:l1001": {"hello.py": "x = 2\n"},
    }
    assert rebuilt(written, "--at", iso(T0 + 40)) == rebuilt(written, "--at", iso(T0 + 45))
    assert rebuilt(written, "--at", iso(T0 + 55))["class"] == {"main.py": "print(1)\nprint(2)\n"}
    assert rebuilt(written) == {
        "class": {"main.py": "print(1)\nprint(2)\n"},
        "learner:l1001": {"hello.py": "x = 2\ny = 3\n"},
    }
    assert rebuilt(written, "--ws", "learner:l1001", "--at", iso(T0 + 30)) == {
        "learner:l1001": {"hello.py": "x = 2\n"}
    }
    # Before anything was written: a note, nothing shown.
    code, out, err = run(written, "--editor", "--at", iso(T0))
    assert (code, out) == (0, "")
    assert "no editor change of class 'py101' at" in err


def test_a_refused_change_never_appears_in_a_rebuilt_file(written: Facility) -> None:
    for t in (T0 + 30, T0 + 31, T0 + 45, T0 + 100):
        out = ok(written, "--editor", "--at", iso(t), *staff(written))
        assert PHONE not in out
    # The transcript shows it, with the rule: staff see what was attempted.
    transcript = ok(written, *staff(written))
    assert PHONE in transcript
    assert "refused; rule contact.details; error policy_blocked" in transcript


def test_the_listing_says_where_and_as_of_what(written: Facility) -> None:
    out = ok(written, "--editor", "--at", iso(T0 + 55), *staff(written))
    lines = out.splitlines()
    assert lines[0].startswith("Class py101, shared editor at ")
    header = next(x for x in lines if x.startswith("class/main.py"))
    assert "(18 chars, 2 lines; as of record" in header
    at = lines.index(header)
    assert lines[at + 1 : at + 3] == ["   1  print(1)", "   2  print(2)"]
    assert any(x.startswith("learner:l1001/hello.py  (6 chars, 1 line;") for x in lines)
    only = ok(written, "--editor", "--file", "hello.py")
    assert "class/main.py" not in only
    assert "learner:l1001/hello.py" in only
    code, out, err = run(written, "--editor", "--file", "nope.py")
    assert code == 0
    assert out == ""
    assert "no file 'nope.py'" in err


def test_every_editor_read_is_recorded_first_and_needs_the_staff_key(
    written: Facility, tmp_path: Path
) -> None:
    assert reads(written) == []
    ok(written, "--editor", "--at", iso(T0 + 15), "--ws", "class", *staff(written))
    (read,) = reads(written)
    assert read["actor"] == "staff:sam"
    assert read["detail"] == f"audit show py101 --editor --at {iso(T0 + 15)} --ws class"
    # Contents are encrypted: without the staff key, nothing is shown.
    from tests.test_audit_query import protect_staff_key, writer_lock_held

    protect_staff_key(written)
    code, out, err = run(written, "--editor")
    assert code == 2
    assert out == ""
    assert "passphrase" in err.lower()
    # A read that cannot be recorded shows nothing.
    with writer_lock_held(written):
        code, out, err = run(written, "--editor", *staff(written))
    assert code == 2
    assert out == ""
    assert "could not be recorded" in err
    assert len(reads(written)) == 1


def test_out_writes_the_files_and_never_overwrites(written: Facility, tmp_path: Path) -> None:
    out_dir = tmp_path / "case-9"
    said = ok(written, "--editor", "--out", str(out_dir), "--at", iso(T0 + 55))
    assert "Wrote 2 file(s) of 2 workspace(s)" in said
    assert (out_dir / "class" / "main.py").read_text() == "print(1)\nprint(2)\n"
    assert (out_dir / "learner:l1001" / "hello.py").read_text() == "x = 2\n"
    assert (out_dir / "class" / "main.py").stat().st_mode & 0o777 == 0o600
    before = (out_dir / "class" / "main.py").read_bytes()
    code, _, err = run(written, "--editor", "--out", str(out_dir))
    assert code == 2
    assert "exists and is never overwritten" in err
    assert (out_dir / "class" / "main.py").read_bytes() == before
    assert (out_dir / "learner:l1001" / "hello.py").read_text() == "x = 2\n"
    # Another directory, one workspace.
    ok(written, "--editor", "--out", str(tmp_path / "other"), "--ws", "learner:l1001")
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["learner:l1001"]
    code, _, err = run(written, "--editor", "--out", str(tmp_path / "x"), "--json")
    assert code == 2
    assert "pick one" in err


def test_unsafe_file_names_are_refused_and_nothing_is_written(
    facility: Facility, tmp_path: Path
) -> None:
    a = Author()
    good = a.type("ok.py", "fine\n")
    bad = a.type("../../escape.py", "owned\n")
    append(
        facility,
        editor_event(EventKind.EDITOR_UPDATE, T0 + 1, "class", good, decision="delivered"),
        editor_event(EventKind.EDITOR_UPDATE, T0 + 2, "class", bad, decision="delivered"),
    )
    out_dir = tmp_path / "out"
    code, _, err = run(facility, "--editor", "--out", str(out_dir))
    assert code == 2
    assert "'..'" in err
    assert "nothing was written" in err
    assert not out_dir.exists()
    assert not (tmp_path / "escape.py").exists()
    # Printing is safe: the name is shown, escaped, and nothing is written.
    assert "class/../../escape.py" in ok(facility, "--editor")


def test_options_of_the_editor_view(written: Facility) -> None:
    code, _, err = run(written, "--at", "1h")
    assert code == 2
    assert "--at goes with --editor" in err
    code, _, err = run(written, "--editor", "--ws", "learner:../x")
    assert code == 2
    assert "refused --ws" in err
    code, _, err = run(written, "--editor", "--at", "yesterday-ish")
    assert code == 2
    assert "ISO 8601" in err
    # A duration back from now, as --since takes it (these records are dated in 2027).
    code, out, err = run(written, "--editor", "--at", "1h")
    assert code == 0
    assert out == ""
    assert "no editor change" in err


# ---------------------------------------------------------------------------------------
# a real relay: an instructor and a learner edit, then staff rebuild the files
# ---------------------------------------------------------------------------------------


class Editor:
    """A participant speaking the editor protocol in raw frames, with its own document."""

    def __init__(self, raw: Raw, pid: str) -> None:
        self.raw = raw
        self.pid = pid
        self.docs: dict[str, Author] = {}
        self._ids = 0

    def author(self, ws: str) -> Author:
        return self.docs.setdefault(ws, Author())

    async def recv(self) -> dict[str, Any]:
        msg = await self.raw.ws.receive(timeout=10.0)
        assert isinstance(msg.data, bytes), msg
        frame: dict[str, Any] = msgpack.unpackb(msg.data, raw=False)
        if frame["t"] in ("editor_update", "editor_state") and frame.get("update"):
            self.author(frame["ws"]).doc.apply_update(frame["update"])
        return frame

    async def send_update(self, ws: str, update: bytes) -> dict[str, Any]:
        self._ids += 1
        ref = f"e-{self._ids}"
        await self.raw.send({"t": "editor_update", "id": ref, "ws": ws, "update": update})
        while True:
            m = await self.recv()
            if m["t"] == "ack" and m["ref"] == ref:
                return m

    async def type(self, ws: str, name: str, text: str) -> dict[str, Any]:
        return await self.send_update(ws, self.author(ws).type(name, text))

    async def drain(self, wait_s: float = 0.2) -> None:
        with contextlib.suppress(TimeoutError):
            while True:
                msg = await self.raw.ws.receive(timeout=wait_s)
                if isinstance(msg.data, bytes):
                    frame = msgpack.unpackb(msg.data, raw=False)
                    if frame["t"] in ("editor_update", "editor_state") and frame.get("update"):
                        self.author(frame["ws"]).doc.apply_update(frame["update"])


@contextlib.asynccontextmanager
async def editing(
    f: Facility, r: Relay, who: str, machine: str | None = None
) -> AsyncIterator[Editor]:
    assert r.addresses is not None
    role, _, name = who.partition(":")
    if role == "learner":
        assert machine is not None
        bundle, url = f.bundle(machine), r.addresses.inside_url
        extra = {"learner": name, "pin": PINS[name]}
    else:
        bundle, url, extra = f.bundle(name), r.addresses.outside_url, {}
    async with raw_connect(url, bundle) as raw:
        welcome = await raw.hello(**extra)
        assert welcome["t"] == "welcome", welcome
        yield Editor(raw, who)


def moment() -> float:
    """A time strictly between the records before and after it."""
    time.sleep(0.01)
    t = time.time()
    time.sleep(0.01)
    return t


@pytest.mark.integration
async def test_a_class_edited_through_the_relay_rebuilt_at_several_times(
    facility: Facility,
) -> None:
    from relay.server import running_relay

    # Enough editor messages for 500 keystrokes in a second or two (a periodic snapshot).
    facility.set_limits(editor_msgs_per_second=100000.0, editor_msgs_burst=100000)
    loopback = ("127.0.0.1", 0)
    times: dict[str, float] = {}
    async with running_relay(facility.home, outside=loopback, inside=loopback) as r:
        async with (
            editing(facility, r, "instructor:alice") as alice,
            editing(facility, r, "learner:l1001", "pc-01") as ada,
        ):
            times["start"] = moment()
            ack = await alice.type("class", "main.py", "print('hello')\n")
            assert ack["status"] == "delivered", ack
            await ada.drain()
            times["hello"] = moment()
            ack = await ada.type("learner:l1001", "mine.py", "a = 1\n")
            assert ack["status"] == "delivered", ack
            ack = await ada.type("class", "main.py", f"# call {PHONE}\n")
            assert ack["status"] == "refused", ack
            await alice.drain()
            times["refused"] = moment()
            # 500 keystrokes in the learner's workspace: the relay records a snapshot.
            for ch in "b = 2\n" * 84:
                ack = await ada.type("learner:l1001", "mine.py", ch)
                assert ack["status"] == "delivered", ack
            await alice.drain()
            times["typed"] = moment()
            ack = await alice.type("learner:l1001", "mine.py", "# well done\n")
            assert ack["status"] == "delivered", ack
            await ada.drain()
            times["helped"] = moment()
        await asyncio.to_thread(facility.must, "session", "end", "py101", "--reason", "done")

    snaps = [r for r in facility.audit_records() if r["kind"] == "editor.snapshot"]
    periodic = [s for s in snaps if s["channel"] == "learner:l1001"]
    assert periodic, "500 changes of a workspace record a snapshot"
    assert times["typed"] > periodic[0]["time"] > times["refused"]

    def files_at(key: str | None) -> dict[str, dict[str, str]]:
        args = ("--at", iso(times[key])) if key else ()
        return rebuilt(facility, *args, *staff(facility))

    assert files_at("start") == {}
    assert files_at("hello") == {"class": {"main.py": "print('hello')\n"}}
    at_refused = files_at("refused")
    assert at_refused == {
        "class": {"main.py": "print('hello')\n"},
        "learner:l1001": {"mine.py": "a = 1\n"},
    }
    mine = "a = 1\n" + "b = 2\n" * 84
    assert files_at("typed")["learner:l1001"] == {"mine.py": mine}
    assert files_at("helped")["learner:l1001"] == {"mine.py": mine + "# well done\n"}
    end = files_at(None)
    assert end["learner:l1001"] == {"mine.py": mine + "# well done\n"}
    assert end["class"] == {"main.py": "print('hello')\n"}
    for t in ("refused", "typed", "helped"):
        assert PHONE not in json.dumps(files_at(t))
    # The reads were recorded, one per command, by the staff member.
    assert {r["actor"] for r in reads(facility)} == {"staff:sam"}
    assert len(reads(facility)) == 9
    # After the periodic snapshot, the rebuild starts from it.
    out = ok(facility, "--editor", "--json", "--ws", "learner:l1001", *staff(facility))
    (w,) = [json.loads(line) for line in out.splitlines()]
    assert w["snapshot_seq"] is not None
    assert w["complete"] is True
    assert w["changes_applied"] < 100
    # The transcript reads well: keystrokes joined, the refusal with its rule.
    transcript = ok(facility, *staff(facility))
    assert "learner:l1001 (at pc-01)'s change to class" in transcript
    assert "[refused; rule contact.details" in transcript
    assert "learner:l1001 (at pc-01) edited learner:l1001/mine.py: +" in transcript
    assert " changes until " in transcript
    assert len(transcript.splitlines()) < 60
