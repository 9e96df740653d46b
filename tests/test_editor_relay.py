"""The shared editor through a real relay over TLS on loopback, spoken frame by frame.

Peers are real pycrdt documents; every frame each participant receives is kept, so the
tests can check at the byte level that refused text never left the relay.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from pycrdt import Doc, Map, Text

from relay.server import Relay
from tests.conftest import Facility, raw_joined
from tests.rawclient import Raw

pytestmark = pytest.mark.integration

PHONE = "415-555-0134"


@dataclass
class Peer:
    """One participant: a raw connection, its own Yjs documents, and every frame it got."""

    raw: Raw
    pid: str
    docs: dict[str, Doc] = field(default_factory=dict)
    frames: list[bytes] = field(default_factory=list)
    _ids: int = 0

    def doc(self, ws: str) -> Doc:
        if ws not in self.docs:
            doc = Doc()
            doc.get("files", type=Map)
            self.docs[ws] = doc
        return self.docs[ws]

    def files(self, ws: str) -> dict[str, str]:
        files = self.doc(ws).get("files", type=Map)
        return {name: str(text) for name, text in files.items()}

    def next_id(self) -> str:
        self._ids += 1
        return f"{self.pid.replace(':', '-')}-{self._ids}"

    async def recv(self, wait_s: float = 5.0) -> dict[str, Any]:
        msg = await self.raw.ws.receive(timeout=wait_s)
        if msg.data and isinstance(msg.data, bytes):
            self.frames.append(msg.data)
            frame: dict[str, Any] = msgpack.unpackb(msg.data, raw=False)
            if frame["t"] in ("editor_update", "editor_state") and frame.get("update"):
                self.doc(frame["ws"]).apply_update(frame["update"])
            return frame
        return {"t": "<closed>", "code": msg.data}

    async def until(self, t: str, ref: str | None = None, wait_s: float = 5.0) -> dict[str, Any]:
        for _ in range(500):
            m = await self.recv(wait_s)
            if m["t"] == "<closed>":
                raise AssertionError(f"{self.pid}: closed while waiting for {t}")
            if m["t"] == t and (ref is None or m.get("ref") == ref):
                return m
        raise AssertionError(f"{self.pid}: no {t!r}")

    async def quiet(self, wait_s: float = 0.3) -> list[dict[str, Any]]:
        """Read (and apply) whatever arrives until nothing has for ``wait_s``."""
        out: list[dict[str, Any]] = []
        for _ in range(1000):
            try:
                out.append(await self.recv(wait_s))
            except TimeoutError:
                return out
        return out

    async def sync(self, ws: str) -> dict[str, Any]:
        ref = self.next_id()
        sv = self.doc(ws).get_state()
        await self.raw.send({"t": "editor_sync", "id": ref, "ws": ws, "sv": sv})
        for _ in range(100):
            m = await self.recv()
            if m.get("ref") == ref and m["t"] in ("editor_state", "ack"):
                return m
        raise AssertionError("no answer to editor_sync")

    async def edit(self, ws: str, change: Callable[[Map], None]) -> dict[str, Any]:
        """Make a change locally, send its update, and return the relay's ack."""
        doc = self.doc(ws)
        before = doc.get_state()
        files = doc.get("files", type=Map)
        with doc.transaction():
            change(files)
        return await self.send_update(ws, doc.get_update(before))

    async def send_update(self, ws: str, update: bytes) -> dict[str, Any]:
        ref = self.next_id()
        await self.raw.send({"t": "editor_update", "id": ref, "ws": ws, "update": update})
        return await self.until("ack", ref)


@contextlib.asynccontextmanager
async def joined(
    f: Facility, r: Relay, who: str, machine: str | None = None
) -> AsyncIterator[Peer]:
    async with raw_joined(f, r, who, machine) as raw:
        yield Peer(raw, who)


def typed(text: str, name: str = "main.py") -> Callable[[Map], None]:
    def change(files: Map) -> None:
        if name not in files:
            files[name] = Text()
        t = files[name]
        t += text

    return change


def records(f: Facility, kind: str) -> list[dict[str, Any]]:
    return [r for r in f.audit_records() if r["kind"] == kind]


async def test_instructor_code_reaches_learners_and_staff(facility: Facility, relay: Relay) -> None:
    async with (
        joined(facility, relay, "instructor:alice") as alice,
        joined(facility, relay, "learner:l1001", "pc-01") as ada,
        joined(facility, relay, "staff:sam") as sam,
    ):
        for peer in (ada, sam):
            state = await peer.sync("class")
            assert state["t"] == "editor_state"
        ack = await alice.edit("class", typed("for i in range(1, 11):\n    print(i)\n"))
        assert ack["status"] == "delivered"
        got = await ada.until("editor_update")
        assert got["by"] == "instructor:alice"
        assert ada.files("class") == {"main.py": "for i in range(1, 11):\n    print(i)\n"}
        await sam.until("editor_update")
        assert sam.files("class") == ada.files("class")
        # A learner who arrives later gets everything with one sync.
        async with joined(facility, relay, "learner:l1002", "pc-02") as late:
            await late.sync("class")
            assert late.files("class") == alice.files("class")
    kinds = [r["kind"] for r in facility.audit_records()]
    assert "editor.update" in kinds
    assert "editor.sync" in kinds
    update = records(facility, "editor.update")[0]
    assert update["channel"] == "class"
    assert update["actor"] == "instructor:alice"
    assert "print(i)" in update["content"]
    # The update as forwarded is in the record: staff can rebuild the file from it.
    rebuilt = Doc()
    rebuilt.apply_update(base64.b64decode(update["delivered"]))
    assert str(rebuilt.get("files", type=Map)["main.py"]).startswith("for i in range")


async def test_a_blocked_change_never_leaves_the_relay(facility: Facility, relay: Relay) -> None:
    """Byte level: no frame to anyone, the author included, carries the refused number."""
    async with (
        joined(facility, relay, "instructor:alice") as alice,
        joined(facility, relay, "learner:l1001", "pc-01") as ada,
        joined(facility, relay, "learner:l1002", "pc-02") as bo,
        joined(facility, relay, "staff:sam") as sam,
    ):
        for peer in (alice, bo, sam):
            await peer.sync("class")
        ack = await ada.edit("class", typed("x = a\n"))
        assert ack["status"] == "delivered"
        # Pasted in one piece.
        ack = await ada.edit("class", typed(f"# call me {PHONE}\n"))
        assert ack["status"] == "refused"
        assert ack["error"] == "policy_blocked"
        assert "phone" in ack["text"]
        assert PHONE not in ack["text"]
        # The relay's correction came first and put the author back.
        assert ada.files("class") == {"main.py": "x = a\n"}
        # Typed one character at a time: refused at the keystroke that makes it a number
        # the policy recognises; what was typed before it stays.
        typed_so_far = ""
        for ch in f"# call {PHONE}":
            ack = await ada.edit("class", typed(ch))
            if ack["status"] == "refused":
                break
            assert ack["status"] == "delivered"
            typed_so_far += ch
        else:
            raise AssertionError("the number typed key by key was never refused")
        assert len(typed_so_far) >= len("# call 415-555")
        assert ada.files("class")["main.py"] == "x = a\n" + typed_so_far
        for peer in (alice, bo, sam):
            await peer.quiet()
        await ada.quiet()
        # And assembled across two lines.
        ack = await ada.edit("class", typed("\n# 415-555-\n"))
        assert ack["status"] == "delivered"
        ack = await ada.edit("class", typed("0134\n"))
        assert ack["status"] == "refused"
        for peer in (alice, bo, sam, ada):
            await peer.quiet()
        needles = [PHONE.encode(), PHONE.encode("utf-16-le"), b"call me"]
        for peer in (alice, bo, sam, ada):
            for frame in peer.frames:
                for needle in needles:
                    assert needle not in frame, f"{peer.pid} received refused text"
        # Everyone converged on the relay's version.
        want = alice.files("class")
        assert bo.files("class") == want
        assert sam.files("class") == want
        assert ada.files("class") == want
        assert PHONE not in want["main.py"]
        async with joined(facility, relay, "learner:l1003", "pc-03") as late:
            await late.sync("class")
            assert late.files("class") == want
            assert all(PHONE.encode() not in frame for frame in late.frames)
    refused = records(facility, "editor.refused")
    assert len(refused) == 3
    assert {r["error"] for r in refused} == {"policy_blocked"}
    assert PHONE in refused[0]["content"]  # kept for staff, encrypted at rest
    assert all(r["rule"] == "contact.details" for r in refused)


async def test_private_workspaces_sharing_and_lecture_mode(
    facility: Facility, relay: Relay
) -> None:
    async with (
        joined(facility, relay, "instructor:alice") as alice,
        joined(facility, relay, "learner:l1001", "pc-01") as ada,
        joined(facility, relay, "learner:l1002", "pc-02") as bo,
    ):
        ack = await ada.edit("learner:l1001", typed("print('mine')\n", "hello.py"))
        assert ack["status"] == "delivered"
        # The instructor looks over the shoulder ...
        await alice.sync("learner:l1001")
        assert alice.files("learner:l1001") == {"hello.py": "print('mine')\n"}
        # ... another learner does not.
        answer = await bo.sync("learner:l1001")
        assert answer["t"] == "ack"
        assert answer["error"] == "unknown_workspace"
        ack = await bo.edit("learner:l1001", typed("x"))
        assert ack["error"] == "unknown_workspace"
        bo.docs.pop("learner:l1001")  # a refused change: drop the local copy
        # The instructor helps in the learner's workspace; the learner sees it.
        ack = await alice.edit("learner:l1001", typed("# good\n", "hello.py"))
        assert ack["status"] == "delivered"
        await ada.until("editor_update")
        assert ada.files("learner:l1001")["hello.py"].endswith("# good\n")
        # Shared with the class: now the other learner may look, but not edit.
        await alice.raw.send({"t": "editor_share", "id": "s1", "learner": "l1001", "shared": True})
        assert (await alice.until("ack", "s1"))["status"] == "delivered"
        mode = await bo.until("editor_mode")
        assert mode["shared"] == ["learner:l1001"]
        assert (await bo.sync("learner:l1001"))["t"] == "editor_state"
        assert bo.files("learner:l1001") == ada.files("learner:l1001")
        ack = await bo.edit("learner:l1001", typed("x"))
        assert ack["error"] == "read_only"
        # Lecture mode: the class workspace is the instructor's alone.
        await alice.raw.send({"t": "editor_lecture", "id": "l1", "on": True})
        assert (await alice.until("ack", "l1"))["status"] == "delivered"
        mode = await ada.until("editor_mode")  # the share, then the lecture
        assert mode["lecture"] is False
        mode = await ada.until("editor_mode")
        assert mode["lecture"] is True
        ack = await ada.edit("class", typed("print(1)\n"))
        assert ack["error"] == "read_only"
        # A learner may not switch modes.
        await ada.raw.send({"t": "editor_lecture", "id": "l2", "on": False})
        assert (await ada.until("ack", "l2"))["error"] == "not_permitted"
        # A learner who joins now learns the mode right after the welcome.
        async with joined(facility, relay, "learner:l1003", "pc-03") as late:
            mode = await late.until("editor_mode")
            assert mode["lecture"] is True
            assert mode["shared"] == ["learner:l1001"]
    modes = records(facility, "editor.mode")
    assert [m["detail"] for m in modes] == [
        "learner:l1001 shared with the class",
        "lecture mode on",
    ]


async def test_presence_reaches_those_who_see_the_workspace(
    facility: Facility, relay: Relay
) -> None:
    async with (
        joined(facility, relay, "instructor:alice") as alice,
        joined(facility, relay, "learner:l1001", "pc-01") as ada,
        joined(facility, relay, "learner:l1002", "pc-02") as bo,
    ):
        await alice.edit("class", typed("abc\n"))
        await alice.raw.send(
            {
                "t": "editor_presence",
                "id": "p1",
                "ws": "class",
                "file": "main.py",
                "anchor": 1,
                "head": 99,
            }
        )
        got = await ada.until("editor_presence")
        assert got == {
            "t": "editor_presence",
            "ws": "class",
            "who": "instructor:alice",
            "file": "main.py",
            "anchor": 1,
            "head": 4,  # clamped to the file's length
            "time": got["time"],
        }
        await bo.until("editor_presence")
        # In a learner's private workspace, only those who see it learn where the cursor is.
        await ada.edit("learner:l1001", typed("x\n"))
        await ada.raw.send(
            {"t": "editor_presence", "id": "p2", "ws": "learner:l1001", "file": "main.py"}
        )
        got = await alice.until("editor_presence")
        assert got["who"] == "learner:l1001"
        assert not [m for m in await bo.quiet() if m["t"] == "editor_presence"]
        # A file that does not exist is refused.
        await ada.raw.send({"t": "editor_presence", "id": "p3", "ws": "class", "file": "nope.py"})
        assert (await ada.until("ack", "p3"))["status"] == "refused"


async def test_bad_updates_are_refused_with_a_reason(facility: Facility, relay: Relay) -> None:
    async with (
        joined(facility, relay, "instructor:alice") as alice,
        joined(facility, relay, "learner:l1001", "pc-01") as ada,
    ):
        ack = await ada.send_update("class", b"\xff\x00garbage")
        assert ack["status"] == "refused"
        assert ack["error"] == "bad_update"
        # An update that depends on one the relay never got.
        other = Doc()
        files = other.get("files", type=Map)
        files["a.py"] = Text("first")
        state = other.get_state()
        files["a.py"] += " second"
        ack = await ada.send_update("class", other.get_update(state))
        assert ack["error"] == "out_of_sync"
        state_frame = await alice.sync("class")
        assert state_frame["t"] == "editor_state"
        assert alice.files("class") == {}
        # A workspace that does not exist.
        ack = await ada.send_update("learner:l1009", b"\x00\x00")
        assert ack["error"] == "unknown_workspace"
        # Security staff observe and do not edit.
    async with joined(facility, relay, "staff:sam") as sam:
        ack = await sam.edit("class", typed("x"))
        assert ack["error"] == "not_permitted"


async def test_snapshots_rebuild_the_workspace_when_the_class_ends(
    facility: Facility, relay: Relay
) -> None:
    async with joined(facility, relay, "instructor:alice") as alice:
        for line in ("a = 1\n", "b = 2\n", "c = a + b\n"):
            await alice.edit("class", typed(line))
    await asyncio.to_thread(facility.must, "session", "end", "py101", "--reason", "end of lesson")
    snaps = records(facility, "editor.snapshot")
    assert snaps, "the class's end records a snapshot of each changed workspace"
    doc = Doc()
    doc.apply_update(base64.b64decode(snaps[-1]["delivered"]))
    assert str(doc.get("files", type=Map)["main.py"]) == "a = 1\nb = 2\nc = a + b\n"
    assert snaps[-1]["detail"].startswith("class ended")


async def test_a_redacted_span_is_replaced_for_everyone(facility: Facility, relay: Relay) -> None:
    mail = "alice@mailbox.org"
    async with (
        joined(facility, relay, "instructor:alice") as alice,
        joined(facility, relay, "learner:l1001", "pc-01") as ada,
    ):
        await ada.sync("class")
        ack = await alice.edit("class", typed(f"# questions: {mail}\n"))
        assert ack["status"] == "redacted", ack
        assert ack["redacted"] == "# questions: [redacted:email]"
        # The correction reached the author before the ack: its copy reads the same.
        assert alice.files("class") == {"main.py": "# questions: [redacted:email]\n"}
        await ada.until("editor_update")
        assert ada.files("class") == alice.files("class")
        assert all(mail.encode() not in frame for frame in ada.frames)
    redacted = records(facility, "editor.redacted")
    assert len(redacted) == 1
    assert mail in redacted[0]["content"]
    assert redacted[0]["categories"] == "email"
