"""Interop of the relay's editor core with Yjs itself (JavaScript, through node).

The Yjs peer is tests/js/peer.mjs; install its dependency once with
``npm ci --prefix tests/js``. Without node or the yjs module these tests are skipped.
"""

from __future__ import annotations

import base64
import json
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.editor import EditorError, EditRefusal, EditVerdictKind, Workspace, judge
from tests.test_editor_core import INSTRUCTOR, LEARNER, Peer, assert_absent, first_blocked_prefix

JS_DIR = Path(__file__).parent / "js"
TIMEOUT_S = 20.0


def _node_skip_reason() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed: the Yjs interop tests need node 18 or newer"
    if not (JS_DIR / "node_modules" / "yjs" / "package.json").is_file():
        return "the yjs module is not installed: run 'npm ci --prefix tests/js'"
    return None


class YjsPeers:
    """One node process holding any number of Y.Doc peers."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["node", str(JS_DIR / "peer.mjs")],
            cwd=JS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        try:
            line = self.lines.get(timeout=TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"the Yjs peer did not answer {op!r} in time") from None
        result: dict[str, Any] = json.loads(line)
        if not result.pop("ok"):
            raise AssertionError(f"the Yjs peer failed {op!r}: {result['error']}")
        return result

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def node() -> Iterator[YjsPeers]:
    reason = _node_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    peers = YjsPeers()
    try:
        yield peers
    finally:
        peers.close()


_ids = iter(range(1, 1_000_000))


class Y:
    """One Yjs document in the node process."""

    def __init__(self, node: YjsPeers, client: int | None = None) -> None:
        self.node = node
        self.id = f"y{next(_ids)}"
        args: dict[str, Any] = {"client": client} if client is not None else {}
        node.call("new", id=self.id, **args)

    def __getattr__(self, op: str) -> Any:
        def call(**args: Any) -> dict[str, Any]:
            return self.node.call(op, id=self.id, **args)

        return call

    def take(self) -> list[bytes]:
        """The updates Yjs emitted since the last take, one per transaction."""
        return [base64.b64decode(u) for u in self.node.call("updates", id=self.id)["updates"]]

    def receive(self, update: bytes) -> None:
        if update:
            self.node.call("apply", id=self.id, update=base64.b64encode(update).decode())

    def contents(self) -> dict[str, Any]:
        files: dict[str, Any] = self.node.call("files", id=self.id)["files"]
        return files

    def state_vector(self) -> bytes:
        return base64.b64decode(self.node.call("sv", id=self.id)["sv"])


def relay(
    ws: Workspace, author: Y, others: tuple[Y | Peer, ...] = (), decide: Any = LEARNER
) -> list[EditVerdictKind]:
    """Sends every pending update of ``author`` through the workspace, as the session does."""
    kinds = []
    for update in author.take():
        applied = ws.apply(update)
        verdict = judge(ws, applied, decide)
        author.receive(verdict.author_update)
        for peer in others:
            if isinstance(peer, Y):
                peer.receive(verdict.forward)
            else:
                peer.apply(verdict.forward)
        kinds.append(verdict.kind)
    return kinds


def test_yjs_updates_are_applied_with_code_point_indices(node: YjsPeers) -> None:
    ws = Workspace("class")
    y = Y(node)
    y.create(file="main.py", content="é😀中\n")
    y.insert(file="main.py", index=2, chunk="x𝔘y")
    (create,), (insert,) = [[u] for u in y.take()]
    applied = ws.apply(create)
    assert applied.insertions[0].text == "é😀中\n"
    applied = ws.apply(insert)
    assert [(i.start, i.text) for i in applied.insertions] == [(2, "x𝔘y")]
    assert ws.files() == y.contents() == {"main.py": "é😀x𝔘y中\n"}
    y.delete(file="main.py", index=1, length=3)
    (delete,) = y.take()
    applied = ws.apply(delete)
    assert [(r.start, r.text) for r in applied.removals] == [(1, "😀x𝔘")]
    assert ws.files() == y.contents() == {"main.py": "éy中\n"}


def test_relay_diffs_apply_in_yjs(node: YjsPeers) -> None:
    ws = Workspace("class")
    py = Peer()
    ws.apply(py.create("a.txt", "ascii\n"))
    ws.apply(py.create("b.txt", "ünïcödé 😀 中文\n"))
    ws.apply(py.type("b.txt", 9, "𝔘"))
    late = Y(node)
    late.receive(ws.diff(late.state_vector()))
    assert late.contents() == ws.files()
    # and the other way: the relay syncs from what a Yjs document holds
    copy = Workspace("copy")
    copy.apply(base64.b64decode(late.diff()["update"]))
    assert copy.files() == ws.files()


def test_yjs_and_pycrdt_peers_converge_through_the_relay(node: YjsPeers) -> None:
    ws = Workspace("class")
    y1, y2, py = Y(node), Y(node), Peer()
    y1.create(file="main.py", content="def f():\n    return 1\n")
    relay(ws, y1, (y2, py))
    # concurrent edits from all three, then everyone receives the others'
    y1.insert(file="main.py", index=0, chunk="# é\n")
    y2.insert(file="main.py", index=22, chunk="# 😀\n")
    u_py = py.type("main.py", 9, "    x = '中'\n")
    relay(ws, y1, (y2, py))
    relay(ws, y2, (y1, py))
    applied = ws.apply(u_py)
    forward = judge(ws, applied, LEARNER).forward
    y1.receive(forward)
    y2.receive(forward)
    assert y1.contents() == y2.contents() == py.contents() == ws.files()
    assert set(ws.text("main.py")) >= set("é😀中")
    # files: rename and delete from Yjs
    y2.rename(file="main.py", to="app.py")
    y2.create(file="tmp.txt", content="t")
    y2.remove(file="tmp.txt")
    relay(ws, y2, (y1, py))
    assert y1.contents() == y2.contents() == py.contents() == ws.files()
    assert list(ws.files()) == ["app.py"]


def test_phone_typed_in_yjs_is_undone_in_yjs(node: YjsPeers) -> None:
    ws = Workspace("class")
    author, other = Y(node), Y(node)
    author.create(file="main.py", content="# ü\n")
    relay(ws, author, (other,))
    line = "call 555-123-4567"
    author.type(file="main.py", index=4, chunk=line)
    updates = author.take()
    assert len(updates) == len(line)  # one update per key
    kinds = []
    for update in updates:
        applied = ws.apply(update)
        verdict = judge(ws, applied, LEARNER)
        author.receive(verdict.author_update)
        other.receive(verdict.forward)
        kinds.append(verdict.kind)
        if verdict.kind is EditVerdictKind.BLOCK:
            assert_absent("555-123-45", verdict.forward, verdict.author_update)
    n = first_blocked_prefix(line)
    assert kinds[n - 1] is EditVerdictKind.BLOCK
    assert EditVerdictKind.BLOCK not in kinds[: n - 1]
    # the author typed on before the compensation arrived; the keys after the block
    # complete another number, so they are refused too
    assert (
        author.contents() == other.contents() == ws.files() == {"main.py": "# ü\n" + line[: n - 1]}
    )
    assert_absent("555-123-4567", ws.snapshot(), base64.b64decode(other.diff()["update"]))
    assert not other.pending()["pending"]
    assert not author.pending()["pending"]


def test_redaction_from_yjs(node: YjsPeers) -> None:
    ws = Workspace("class")
    author, other = Y(node), Y(node)
    author.create(file="notes.md", content="")
    relay(ws, author, (other,), INSTRUCTOR)
    author.insert(file="notes.md", index=0, chunk="mail bob@gmail.com 😀\n")
    assert relay(ws, author, (other,), INSTRUCTOR) == [EditVerdictKind.REDACT]
    expected = {"notes.md": "mail [redacted:email] 😀\n"}
    assert author.contents() == other.contents() == ws.files() == expected
    assert_absent("bob@gmail.com", ws.snapshot(), base64.b64decode(other.diff()["update"]))


def test_blocked_file_name_from_yjs_is_sealed(node: YjsPeers) -> None:
    ws = Workspace("class")
    author, other = Y(node), Y(node)
    author.create(file="ok.py", content="x\n")
    relay(ws, author, (other,))
    author.create(file="call 555-123-4567.py", content="print(1)\n")
    assert relay(ws, author, (other,)) == [EditVerdictKind.BLOCK]
    assert author.contents() == other.contents() == ws.files() == {"ok.py": "x\n"}
    assert_absent("555-123-4567", base64.b64decode(other.diff()["update"]), ws.snapshot())
    # Yjs accepted the sealed entry: nothing is pending, and work goes on for everyone
    assert not other.pending()["pending"]
    author.insert(file="ok.py", index=0, chunk="# ")
    other.insert(file="ok.py", index=1, chunk="y")
    relay(ws, author, (other,))
    relay(ws, other, (author,))
    assert author.contents() == other.contents() == ws.files() == {"ok.py": "# xy\n"}
    # a fresh Yjs peer syncs from the relay without the refused name
    late = Y(node)
    late.receive(ws.diff(late.state_vector()))
    assert late.contents() == ws.files()
    assert not late.pending()["pending"]


def test_formatting_from_yjs_is_refused(node: YjsPeers) -> None:
    ws = Workspace("class")
    author = Y(node)
    author.create(file="f.md", content="bold")
    relay(ws, author)
    author.format(file="f.md", index=0, length=4, attrs={"bold": True})
    (update,) = author.take()
    with pytest.raises(EditorError) as info:
        ws.apply(update)
    assert info.value.refusal is EditRefusal.UNSUPPORTED
    assert info.value.resync
    assert ws.files() == {"f.md": "bold"}
