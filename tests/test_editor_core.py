"""The shared editor's pure core (relay.editor) with real pycrdt peers: sync, convergence,
files, limits, refused content, causality, snapshots, and the policy's verdicts down to
the bytes that leave the relay."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from pycrdt import Doc, Map, Text, merge_updates

from policy.decisions import Decision, Kind, Route, Subject
from policy.engine import default_policy
from relay.editor import (
    FILES_ROOT,
    Applied,
    EditorError,
    EditorLimits,
    EditRefusal,
    EditVerdict,
    EditVerdictKind,
    FileChange,
    FileOp,
    Insertion,
    Removal,
    Workspace,
    _parse_general,
    _parse_state_vector,
    _parse_update,
    judge,
)
from relay.identity import ParticipantRole

ENGINE = default_policy()


def decider(role: ParticipantRole = ParticipantRole.LEARNER) -> Callable[[Kind, str], Decision]:
    def decide(kind: Kind, text: str) -> Decision:
        return ENGINE.decide(Subject(kind=kind, sender_role=role, route=Route.CLASS, text=text))

    return decide


LEARNER = decider()
INSTRUCTOR = decider(ParticipantRole.INSTRUCTOR)
ALLOWED = LEARNER(Kind.EDITOR, "x = 1")


class Peer:
    """A client's document: edits produce updates as a Yjs provider would send them."""

    def __init__(self, client_id: int | None = None) -> None:
        self.doc: Doc[Any] = Doc(client_id=client_id) if client_id is not None else Doc()
        self.files: Map[Any] = self.doc.get(FILES_ROOT, type=Map)

    def edit(self, change: Callable[[], object]) -> bytes:
        sv = self.doc.get_state()
        with self.doc.transaction():
            change()
        return self.doc.get_update(sv)

    def text(self, name: str) -> Text:
        value = self.files[name]
        assert isinstance(value, Text)
        return value

    def type(self, name: str, index: int, chunk: str) -> bytes:
        """Inserts at a code-point index (pycrdt counts UTF-8 bytes)."""
        t = self.text(name)
        offset = len(str(t)[:index].encode())
        return self.edit(lambda: t.insert(offset, chunk))

    def delete(self, name: str, start: int, end: int) -> bytes:
        t = self.text(name)
        s = str(t)
        a, b = len(s[:start].encode()), len(s[:end].encode())
        return self.edit(lambda: t.__delitem__(slice(a, b)))

    def create(self, name: str, content: str = "") -> bytes:
        return self.edit(lambda: self.files.__setitem__(name, Text(content)))

    def remove(self, name: str) -> bytes:
        return self.edit(lambda: self.files.__delitem__(name))

    def rename(self, old: str, new: str) -> bytes:
        def change() -> None:
            content = str(self.text(old))
            del self.files[old]
            self.files[new] = Text(content)

        return self.edit(change)

    def apply(self, update: bytes) -> None:
        if update:
            self.doc.apply_update(update)

    def contents(self) -> dict[str, str]:
        return {name: str(value) for name, value in self.files.items()}


def docs_text(ws: Workspace) -> dict[str, str]:
    """The workspace's files read from its document, not from its cache."""
    peer = Peer()
    peer.apply(ws.diff(b"\x00"))
    return peer.contents()


def relay_cache_matches(ws: Workspace) -> bool:
    return ws.files() == docs_text(ws)


def send(
    ws: Workspace,
    update: bytes,
    author: Peer,
    others: tuple[Peer, ...] = (),
    decide: Callable[[Kind, str], Decision] = LEARNER,
) -> EditVerdict:
    """The choke point's part, as the session does it: apply, judge, deliver."""
    applied = ws.apply(update)
    verdict = judge(ws, applied, decide)
    author.apply(verdict.author_update)
    for peer in others:
        peer.apply(verdict.forward)
    return verdict


def sync_from_relay(ws: Workspace) -> Peer:
    peer = Peer()
    peer.apply(ws.diff(peer.doc.get_state()))
    return peer


# --- values -------------------------------------------------------------------------------


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_files"):
        EditorLimits(max_files=0)
    with pytest.raises(ValueError, match="max_file_chars"):
        EditorLimits(max_file_chars=-1)
    with pytest.raises(ValueError, match="context_lines"):
        EditorLimits(context_lines=-1)
    assert EditorLimits(context_lines=0).context_lines == 0


def test_error_carries_refusal_detail_and_compensation() -> None:
    err = EditorError(EditRefusal.OUT_OF_SYNC, "reload")
    assert (err.refusal, err.detail, err.compensation, err.resync) == (
        EditRefusal.OUT_OF_SYNC,
        "reload",
        b"",
        False,
    )
    assert EditRefusal.FILE_TOO_LARGE.value == "file_too_large"


# --- sync and convergence -------------------------------------------------------------------


def test_sync_from_empty() -> None:
    ws = Workspace("class")
    assert ws.files() == {}
    empty = Peer()
    empty.apply(ws.diff(empty.doc.get_state()))
    assert empty.contents() == {}
    author = Peer()
    send(ws, author.create("main.py", "print('hi')\n"), author)
    late = sync_from_relay(ws)
    assert late.contents() == {"main.py": "print('hi')\n"} == ws.files()
    assert ws.text("main.py") == "print('hi')\n"
    assert ws.ws_id == "class"


def test_two_peers_converge_through_the_relay() -> None:
    ws = Workspace("class")
    a, b = Peer(), Peer()
    send(ws, a.create("main.py", "line one\nline two\n"), a, (b,))
    assert b.contents() == a.contents()
    # concurrent edits: both start from the same state
    ua = a.type("main.py", 0, "# a\n")
    ub = b.type("main.py", 18, "# b\n")
    va = send(ws, ua, a, (b,))
    vb = send(ws, ub, b, (a,))
    assert va.kind is vb.kind is EditVerdictKind.ALLOW
    assert a.contents() == b.contents() == ws.files()
    assert ws.text("main.py") == "# a\nline one\nline two\n# b\n"
    assert relay_cache_matches(ws)


def test_forward_is_the_relays_diff_and_empty_when_nothing_changed() -> None:
    ws = Workspace("class")
    a = Peer()
    update = a.create("f.txt", "abc")
    applied = ws.apply(update)
    verdict = judge(ws, applied, LEARNER)
    assert verdict.forward == ws.diff(applied.before)
    assert verdict.author_update == b""
    assert verdict.inserted == "abc"
    # the same update again changes nothing: nothing to forward
    again = ws.apply(update)
    assert again.empty
    assert ws.forward(again) == b""
    assert judge(ws, again, LEARNER).forward == b""


def test_create_rename_delete() -> None:
    ws = Workspace("class")
    a, b = Peer(), Peer()
    applied = ws.apply(a.create("a.py", "x = 1\n"))
    assert applied.files == (FileChange(FileOp.CREATED, "a.py"),)
    assert applied.insertions == (Insertion("a.py", 0, "x = 1\n"),)
    b.apply(ws.forward(applied))
    applied = ws.apply(a.rename("a.py", "b.py"))
    assert applied.files == (FileChange(FileOp.RENAMED, "b.py", "a.py"),)
    assert applied.insertions == applied.removals == ()
    b.apply(ws.forward(applied))
    assert ws.files() == b.contents() == {"b.py": "x = 1\n"}
    applied = ws.apply(a.remove("b.py"))
    assert applied.files == (FileChange(FileOp.DELETED, "b.py"),)
    assert applied.removals == (Removal("b.py", 0, "x = 1\n"),)
    assert applied.excerpts == ()
    b.apply(ws.forward(applied))
    assert ws.files() == b.contents() == {}


def test_overwriting_a_file_is_a_delete_and_a_create() -> None:
    ws = Workspace("class")
    a = Peer()
    ws.apply(a.create("a.py", "old\n"))
    applied = ws.apply(a.create("a.py", "new\n"))
    assert applied.files == (FileChange(FileOp.DELETED, "a.py"), FileChange(FileOp.CREATED, "a.py"))
    assert applied.prior == (("a.py", "old\n"),)
    ws.revert(applied)
    assert ws.files() == {"a.py": "old\n"}
    assert relay_cache_matches(ws)


def test_revert_undoes_text_and_file_changes_and_peers_follow() -> None:
    ws = Workspace("class")
    a, b = Peer(), Peer()
    for update in (a.create("a.py", "one\ntwo\nthree\n"), a.create("b.py", "bee\n")):
        b.apply(ws.forward(ws.apply(update)))
    before = ws.files()

    def change() -> None:
        t = a.text("a.py")
        t.insert(4, "2a\n")  # ascii: bytes are code points here
        del t[0:4]
        del a.files["b.py"]
        a.files["c.py"] = Text("sea\n")

    applied = ws.apply(a.edit(change))
    assert ws.files() == {"a.py": "2a\ntwo\nthree\n", "c.py": "sea\n"}
    compensation = ws.revert(applied)
    assert ws.files() == before
    a.apply(compensation)
    b.apply(ws.forward(applied))
    assert a.contents() == b.contents() == before
    assert relay_cache_matches(ws)


# --- index units -------------------------------------------------------------------------


def test_indices_are_code_points() -> None:
    ws = Workspace("class")
    a = Peer()
    ws.apply(a.create("u.txt", "é😀中x\n"))
    applied = ws.apply(a.type("u.txt", 2, "Z"))
    assert ws.text("u.txt") == "é😀Z中x\n"
    assert applied.insertions == (Insertion("u.txt", 2, "Z"),)
    applied = ws.apply(a.delete("u.txt", 1, 3))
    assert applied.removals == (Removal("u.txt", 1, "😀Z"),)
    assert ws.text("u.txt") == "é中x\n"
    ex = applied.excerpts[0]
    assert (ex.start, ex.end, ex.text) == (0, 4, "é中x\n")  # the next line is empty
    update = ws.replace("u.txt", [(1, 2, "[中文]"), (3, 3, "😀")])
    assert ws.text("u.txt") == "é[中文]x😀\n"
    a.apply(update)
    assert a.contents() == ws.files()
    assert relay_cache_matches(ws)


def test_random_edits_keep_the_cache_exact() -> None:
    rng = random.Random(5)
    alphabet = "ab \n\té😀中ß𝔘"
    ws = Workspace("class")
    peers = [Peer(), Peer()]
    send(ws, peers[0].create("r.txt", "start\n"), peers[0], (peers[1],))
    for _ in range(300):
        i = rng.randrange(2)
        author, other = peers[i], peers[1 - i]
        content = str(author.text("r.txt"))
        if content and rng.random() < 0.4:
            start = rng.randrange(len(content))
            end = min(len(content), start + rng.randrange(1, 4))
            update = author.delete("r.txt", start, end)
        else:
            chunk = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 4)))
            update = author.type("r.txt", rng.randrange(len(content) + 1), chunk)
        old = ws.text("r.txt")
        applied = ws.apply(update)
        new = ws.text("r.txt")
        # the reported changes, undone from the end, give back the old text
        s = new
        ops = [(x.start, 0, x.text) for x in applied.insertions]
        ops += [(x.start, 1, x.text) for x in applied.removals]
        for start, kind, chunk in sorted(ops, key=lambda o: (-o[0], o[1])):
            s = s[:start] + (s[start + len(chunk) :] if kind == 0 else chunk + s[start:])
        assert s == old
        other.apply(ws.forward(applied))
        if rng.random() < 0.1:  # sometimes a peer is behind: concurrent edits
            continue
        assert relay_cache_matches(ws)
    for peer in peers:
        peer.apply(ws.diff(peer.doc.get_state()))
    assert peers[0].contents() == peers[1].contents() == ws.files() == docs_text(ws)


# --- limits --------------------------------------------------------------------------------


def refused(ws: Workspace, update: bytes, author: Peer) -> EditorError:
    with pytest.raises(EditorError) as info:
        ws.apply(update)
    author.apply(info.value.compensation)
    return info.value


def test_too_large_file_is_undone() -> None:
    ws = Workspace("class", EditorLimits(max_file_chars=10))
    a, b = Peer(), Peer()
    send(ws, a.create("f", "12345"), a, (b,))
    before = ws.state_vector()
    err = refused(ws, a.type("f", 5, "678901"), a)
    assert err.refusal is EditRefusal.FILE_TOO_LARGE
    assert err.compensation
    assert ws.files() == a.contents() == {"f": "12345"}
    b.apply(ws.diff(before))
    assert b.contents() == ws.files()
    # a new file already too large
    err = refused(ws, a.create("g", "x" * 11), a)
    assert err.refusal is EditRefusal.FILE_TOO_LARGE
    assert ws.files() == a.contents() == {"f": "12345"}
    assert b"xxxxxxxxxxx" not in ws.snapshot()


def test_too_many_files_is_undone() -> None:
    ws = Workspace("class", EditorLimits(max_files=2))
    a = Peer()
    ws.apply(a.create("a"))
    ws.apply(a.create("b"))
    err = refused(ws, a.create("c"), a)
    assert err.refusal is EditRefusal.TOO_MANY_FILES
    assert sorted(ws.files()) == sorted(a.contents()) == ["a", "b"]
    # renaming within the limit is fine
    ws.apply(a.rename("b", "d"))
    assert sorted(ws.files()) == ["a", "d"]
    # the refused entry was sealed: its author reloads before setting that name again
    with pytest.raises(EditorError) as info:
        ws.apply(a.create("c"))
    assert info.value.refusal is EditRefusal.OUT_OF_SYNC
    ws.apply(a.remove("d"))
    fresh = sync_from_relay(ws)
    ws.apply(fresh.create("c"))
    assert sorted(ws.files()) == ["a", "c"]


def test_bad_file_names_are_undone() -> None:
    ws = Workspace("class", EditorLimits(max_name_chars=8))
    a = Peer()
    for name in ("toolong.txt", "", "../x", "a\\b", "a\x00", "/abs", "a//b"):
        err = refused(ws, a.create(name, "x"), a)
        assert err.refusal is EditRefusal.BAD_FILE_NAME, name
        assert ws.files() == a.contents() == {}
    ws.apply(a.create("dir/a.py", "ok"))
    assert ws.files() == {"dir/a.py": "ok"}


def test_workspace_total_is_undone() -> None:
    ws = Workspace("class", EditorLimits(max_workspace_chars=10))
    a = Peer()
    ws.apply(a.create("a", "123456"))
    err = refused(ws, a.create("b", "12345"), a)
    assert err.refusal is EditRefusal.WORKSPACE_TOO_LARGE
    assert ws.files() == a.contents() == {"a": "123456"}
    # shrinking stays possible when over a lowered limit
    small = Workspace.from_snapshot("class", ws.snapshot(), EditorLimits(max_workspace_chars=10))
    assert small.files() == {"a": "123456"}


# --- content outside the model, malformed and out-of-order updates ---------------------------


def unsupported_updates() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    p = Peer()
    out["map in files"] = p.edit(lambda: p.files.__setitem__("m", Map({"k": "v"})))
    p = Peer()
    out["string in files"] = p.edit(lambda: p.files.__setitem__("s", "text"))
    p = Peer(client_id=40)
    p.create("f", "abc")
    out["formatting"] = p.edit(lambda: p.text("f").insert(1, "B", {"bold": True}))
    out["format range"] = p.edit(lambda: p.text("f").format(0, 2, {"italic": True}))
    out["embed"] = p.edit(lambda: p.text("f").insert_embed(1, {"img": "x"}))
    p = Peer()
    other = p.doc.get("other", type=Text)
    out["extra root"] = p.edit(lambda: other.insert(0, "hidden"))
    return out


@pytest.mark.parametrize("what", sorted(unsupported_updates()))
def test_unsupported_content_is_refused_before_applying(what: str) -> None:
    ws = Workspace("class")
    if what in ("formatting", "format range", "embed"):
        p = Peer(client_id=40)
        ws.apply(p.create("f", "abc"))
    update = unsupported_updates()[what]
    before = ws.snapshot()
    with pytest.raises(EditorError) as info:
        ws.apply(update)
    assert info.value.refusal is EditRefusal.UNSUPPORTED, info.value.detail
    assert info.value.compensation == b""
    assert info.value.resync
    assert ws.snapshot() == before


def test_content_outside_the_model_seen_only_after_applying_is_undone() -> None:
    """A string whose origin is a file's map entry lands in the map itself: the parent
    cannot be known before applying, so the relay undoes it after."""
    ws = Workspace("class")
    a, b = Peer(client_id=11), Peer()
    b.apply(ws.forward(ws.apply(a.create("x.py", "héllo"))))
    # one struct of client 11 at clock 6: info 0x84 (origin, string), origin (11, 0)
    crafted = bytes([1, 1, 11, 6, 0x84, 11, 0, 2]) + b"hi" + b"\x00"
    before = ws.state_vector()
    err = refused(ws, crafted, a)
    assert err.refusal is EditRefusal.UNSUPPORTED
    assert ws.files() == {"x.py": "héllo"}
    b.apply(ws.diff(before))
    assert b.contents() == {"x.py": "héllo"}


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\xff\xff\xff", b"\x01\x01\x05", b"garbage that is not an update"],
)
def test_malformed_bytes(data: bytes) -> None:
    ws = Workspace("class")
    a = Peer()
    ws.apply(a.create("f", "x"))
    before = ws.snapshot()
    with pytest.raises(EditorError) as info:
        ws.apply(data)
    assert info.value.refusal is EditRefusal.MALFORMED
    assert info.value.compensation == b""
    assert ws.snapshot() == before


def test_truncated_and_padded_updates_are_malformed() -> None:
    ws = Workspace("class")
    update = Peer().create("f", "hello")
    for data in (update[:-3], update + b"\x00"):
        with pytest.raises(EditorError) as info:
            ws.apply(data)
        assert info.value.refusal is EditRefusal.MALFORMED
    assert ws.files() == {}


def test_bad_state_vector() -> None:
    ws = Workspace("class")
    with pytest.raises(EditorError) as info:
        ws.diff(b"\x05\x01")
    assert info.value.refusal is EditRefusal.MALFORMED


def test_out_of_order_update_is_refused_and_never_kept() -> None:
    ws = Workspace("class")
    a = Peer()
    first = a.create("f", "hello")
    second = a.type("f", 5, " SECRET-PENDING")
    with pytest.raises(EditorError) as info:
        ws.apply(second)
    assert info.value.refusal is EditRefusal.OUT_OF_SYNC
    assert info.value.compensation == b""
    assert info.value.resync
    ws.apply(first)
    # Yrs would have integrated a kept pending struct now; the relay kept none
    assert ws.files() == {"f": "hello"}
    assert b"SECRET-PENDING" not in ws.diff(b"\x00")
    ws.apply(second)
    assert ws.files() == {"f": "hello SECRET-PENDING"}


def test_update_depending_on_another_clients_missing_change_is_refused() -> None:
    ws = Workspace("class")
    a, b = Peer(), Peer()
    b.apply(a.create("f", "abc"))
    # b types after a's text, which the relay never received
    with pytest.raises(EditorError) as info:
        ws.apply(b.type("f", 3, "def"))
    assert info.value.refusal is EditRefusal.OUT_OF_SYNC
    assert ws.files() == {}
    assert b"def" not in ws.snapshot()


def test_deleting_content_the_relay_lacks_is_refused() -> None:
    ws = Workspace("class")
    a = Peer()
    a.create("f", "abc")
    sv = a.doc.get_state()
    update = a.delete("f", 0, 1)
    assert a.doc.get_state() == sv  # a pure deletion
    with pytest.raises(EditorError) as info:
        ws.apply(update)
    assert info.value.refusal is EditRefusal.OUT_OF_SYNC


def test_snapshot_round_trip() -> None:
    ws = Workspace("class")
    a = Peer()
    ws.apply(a.create("a.py", "é😀中\n"))
    ws.apply(a.create("b.py", "b\n"))
    ws.apply(a.type("a.py", 1, "x"))
    copy = Workspace.from_snapshot("class", ws.snapshot())
    assert copy.files() == ws.files()
    assert copy.state_vector() == ws.state_vector()
    # the copy goes on where the original was
    update = a.type("b.py", 0, "#")
    assert copy.apply(update).insertions == ws.apply(update).insertions
    assert copy.files() == ws.files()
    assert Workspace.from_snapshot("x", b"").files() == {}


# --- the policy's verdicts -----------------------------------------------------------------

PHONE = "555-123-4567"


def first_blocked_prefix(line: str) -> int:
    """Length of the shortest prefix of ``line`` the policy blocks on its own."""
    for n in range(1, len(line) + 1):
        if LEARNER(Kind.EDITOR, line[:n]).action.severity >= 4:
            return n
    raise AssertionError("the policy blocks no prefix")


def type_keys(ws: Workspace, a: Peer, b: Peer, name: str, keys: str) -> list[EditVerdict]:
    verdicts = []
    for ch in keys:
        pos = len(str(a.text(name)))
        verdicts.append(send(ws, a.type(name, pos, ch), a, (b,)))
    return verdicts


def assert_absent(secret: str, *blobs: bytes) -> None:
    for blob in blobs:
        assert secret.encode() not in blob
        assert secret.encode("utf-16-le") not in blob


def test_phone_typed_key_by_key_is_blocked_at_the_completing_key() -> None:
    ws = Workspace("class")
    a, b = Peer(), Peer()
    send(ws, a.create("main.py", "# é😀\n"), a, (b,))
    line = f"call {PHONE}"
    verdicts = type_keys(ws, a, b, "main.py", line)
    n = first_blocked_prefix(line)
    kinds = [v.kind for v in verdicts]
    assert kinds[: n - 1] == [EditVerdictKind.ALLOW] * (n - 1)
    assert kinds[n - 1] is EditVerdictKind.BLOCK
    assert "phone" in verdicts[n - 1].categories
    assert verdicts[n - 1].rules == ("contact.details",)
    # the partial text stays, the completing key is undone everywhere
    partial = "# é😀\n" + line[: n - 1]
    assert ws.text("main.py") == partial
    assert a.contents() == b.contents() == {"main.py": partial}
    assert relay_cache_matches(ws)


def test_phone_assembled_across_lines_is_blocked() -> None:
    ws = Workspace("class")
    a, b = Peer(), Peer()
    send(ws, a.create("main.py", ""), a, (b,))
    verdicts = type_keys(ws, a, b, "main.py", "call 555-\n123-4567")
    assert EditVerdictKind.BLOCK in [v.kind for v in verdicts]
    assert verdicts[-1].kind is EditVerdictKind.BLOCK
    assert PHONE not in ws.text("main.py")
    assert a.contents() == b.contents() == ws.files()


def test_phone_assembled_by_deleting_between_its_parts_is_blocked() -> None:
    ws = Workspace("class")
    a, b = Peer(), Peer()
    content = "x = '555-12 and 3-4567'\n"
    assert send(ws, a.create("main.py", content), a, (b,)).kind is EditVerdictKind.ALLOW
    start = content.index(" and ")
    verdict = send(ws, a.delete("main.py", start, start + 5), a, (b,))
    assert verdict.kind is EditVerdictKind.BLOCK
    assert ws.text("main.py") == content
    assert a.contents() == b.contents() == {"main.py": content}
    assert_absent(PHONE, verdict.forward, verdict.author_update, ws.diff(b"\x00"))


def test_blocked_text_never_leaves_the_relay() -> None:
    ws = Workspace("class")
    a, b = Peer(), Peer()
    send(ws, a.create("main.py", "print(1)\n"), a, (b,))
    secret = "call me 555-123-4567 now"
    verdict = send(ws, a.type("main.py", 9, secret), a, (b,))
    assert verdict.kind is EditVerdictKind.BLOCK
    assert verdict.inserted == secret
    late = sync_from_relay(ws)
    for blob in (verdict.forward, verdict.author_update, ws.diff(b"\x00"), ws.snapshot()):
        assert_absent(PHONE, blob)
        assert_absent("call me", blob)
    assert a.contents() == b.contents() == late.contents() == {"main.py": "print(1)\n"}
    # work goes on: the author's next edit merges normally
    assert send(ws, a.type("main.py", 9, "print(2)\n"), a, (b,)).kind is EditVerdictKind.ALLOW
    assert a.contents() == b.contents() == ws.files() == {"main.py": "print(1)\nprint(2)\n"}


def test_blocked_file_name_is_sealed_out_of_every_diff() -> None:
    ws = Workspace("class")
    a, b = Peer(), Peer()
    send(ws, a.create("ok.py", "x\n"), a, (b,))
    name = "call 555-123-4567.py"
    before = ws.state_vector()
    verdict = send(ws, a.create(name, "print(1)\n"), a, (b,))
    assert verdict.kind is EditVerdictKind.BLOCK
    assert verdict.resync
    assert a.contents() == b.contents() == ws.files() == {"ok.py": "x\n"}
    for blob in (verdict.forward, verdict.author_update, ws.diff(b"\x00"), ws.diff(before)):
        assert_absent("555-123-4567", blob)
    # a rename to a blocked name: the old name comes back
    other = "ring 555-987-6543.py"
    verdict = send(ws, a.rename("ok.py", other), a, (b,))
    assert verdict.kind is EditVerdictKind.BLOCK
    assert a.contents() == b.contents() == ws.files() == {"ok.py": "x\n"}
    for blob in (ws.snapshot(), verdict.forward, verdict.author_update):
        assert_absent("555-987-6543", blob)
    # others keep working
    send(ws, a.type("ok.py", 0, "# "), a, (b,))
    assert a.contents() == b.contents() == ws.files() == {"ok.py": "# x\n"}


def test_setting_a_file_on_a_sealed_entry_asks_for_a_reload() -> None:
    ws = Workspace("class")
    a = Peer()
    name = "call 555-123-4567.py"
    assert send(ws, a.create(name), a).kind is EditVerdictKind.BLOCK
    # the author's document still holds the deleted entry; setting it again builds on it
    with pytest.raises(EditorError) as info:
        ws.apply(a.create(name))
    assert info.value.refusal is EditRefusal.OUT_OF_SYNC
    assert info.value.resync
    # after a reload the author starts from the relay's state
    fresh = sync_from_relay(ws)
    assert send(ws, fresh.create("fine.py"), fresh).kind is EditVerdictKind.ALLOW
    # and the seal survives a snapshot
    copy = Workspace.from_snapshot("class", ws.snapshot())
    with pytest.raises(EditorError):
        copy.apply(a.create(name))


def test_email_of_an_instructor_is_redacted() -> None:
    ws = Workspace("class")
    a, b = Peer(), Peer()
    send(ws, a.create("notes.md", "# Notes\n"), a, (b,), INSTRUCTOR)
    verdict = send(ws, a.type("notes.md", 8, "mail bob@gmail.com ok\n"), a, (b,), INSTRUCTOR)
    assert verdict.kind is EditVerdictKind.REDACT
    assert verdict.author_update
    expected = "# Notes\nmail [redacted:email] ok\n"
    assert ws.text("notes.md") == a.contents()["notes.md"] == b.contents()["notes.md"] == expected
    assert_absent("bob@gmail.com", verdict.forward, verdict.author_update, ws.snapshot())
    assert relay_cache_matches(ws)


def test_hold_is_treated_as_block() -> None:
    ws = Workspace("class")
    a = Peer()
    send(ws, a.create("notes.md", ""), a, decide=INSTRUCTOR)
    verdict = send(ws, a.type("notes.md", 0, "see https://unlisted-site.io/x"), a, (), INSTRUCTOR)
    assert verdict.kind is EditVerdictKind.BLOCK
    assert verdict.decision is not None
    assert verdict.decision.action.value == "hold"
    assert "staff review" in verdict.reason
    assert ws.text("notes.md") == ""


def test_alert_is_forwarded() -> None:
    ws = Workspace("class")
    a, b = Peer(), Peer()
    send(ws, a.create("n.txt", ""), a, (b,))
    verdict = send(ws, a.type("n.txt", 0, "there was a lockdown"), a, (b,))
    assert verdict.kind is EditVerdictKind.ALERT
    assert verdict.author_update == b""
    assert b.contents() == {"n.txt": "there was a lockdown"}


def test_excerpts_are_changed_lines_with_context_merged() -> None:
    ws = Workspace("class", EditorLimits(context_lines=1))
    a = Peer()
    ws.apply(a.create("f", "".join(f"l{i}\n" for i in range(10))))

    def change() -> None:
        t = a.text("f")
        t.insert(6, "X")  # in l2
        t.insert(10, "Y")  # in l3 (after the first insertion)
        t.insert(26, "Z")  # in l8

    applied: Applied = ws.apply(a.edit(change))
    texts = [(e.start, e.end, e.text) for e in applied.excerpts]
    content = ws.text("f")
    assert content == "l0\nl1\nXl2\nYl3\nl4\nl5\nl6\nl7\nZl8\nl9\n"
    assert [t for _, _, t in texts] == ["l1\nXl2\nYl3\nl4", "l7\nZl8\nl9"]
    for start, end, text in texts:
        assert content[start:end] == text
    # a removal is a region too, even if nothing was inserted
    applied = ws.apply(a.delete("f", 6, 7))
    assert [e.text for e in applied.excerpts] == ["l1\nl2\nYl3"]


def test_new_file_with_blocked_content_leaves_nothing_behind() -> None:
    ws = Workspace("class")
    a, b = Peer(), Peer()
    send(ws, a.create("ok.py", "x\n"), a, (b,))
    verdict = send(ws, a.create("notes.txt", f"ring {PHONE}\n"), a, (b,))
    assert verdict.kind is EditVerdictKind.BLOCK
    assert a.contents() == b.contents() == ws.files() == {"ok.py": "x\n"}
    for blob in (verdict.forward, verdict.author_update, ws.snapshot()):
        assert_absent(PHONE, blob)
        assert_absent("ring", blob)
    # the name was acceptable, so its entry was not sealed: the author may use it again
    assert not verdict.resync
    assert send(ws, a.create("notes.txt", "ring later\n"), a, (b,)).kind is EditVerdictKind.ALLOW
    assert a.contents() == b.contents() == ws.files()


# --- fast paths: the same results as the general code -----------------------------------------


def _parse_outcome(parse: Callable[[bytes], object], data: bytes) -> object:
    """What ``parse`` makes of ``data``: its result or the class of its refusal."""
    from relay.editor import _Malformed, _Unsupported

    try:
        return parse(data)
    except (_Malformed, _Unsupported) as err:
        return type(err)


def test_keystroke_parser_reads_what_the_general_parser_reads() -> None:
    from relay.editor import _parse_keystroke

    rng = random.Random(11)
    updates: list[bytes] = []
    for client_id in (1, 127, 128, 2**31 + 5, 2**53 - 1):
        a = Peer(client_id)
        updates.append(a.create("f", "start\n"))
        for _ in range(30):
            content = str(a.text("f"))
            chunk = rng.choice(["x", "é", "😀", "中", "ab", "\n"])
            # at the end (origin only), in the middle (origin and right origin), at 0 (parent)
            updates.append(
                a.type("f", rng.choice([len(content), rng.randrange(len(content))]), chunk)
            )
            updates.append(a.type("f", 0, chunk))
    fast = 0
    for update in updates:
        mutations = [update, update[:-1], update + b"\x00", update[:-2] + b"\x00"]
        mutations += [
            update[:i] + bytes([update[i] ^ 0x80]) + update[i + 1 :] for i in range(len(update))
        ]
        for data in mutations:
            expected = _parse_outcome(_parse_general, data)
            got = _parse_keystroke(data)
            if got is not None:
                fast += 1
                assert got == expected
            assert _parse_outcome(_parse_update, data) == expected
    assert fast > 100  # the fast path did take the common keystrokes


def test_code_point_offsets_from_any_anchor_check_character_boundaries() -> None:
    from relay.editor import _code_point_at

    s = "aé😀中x\nß𝔘"
    raw = s.encode()
    pairs = [(i, len(s[:i].encode())) for i in range(len(s) + 1)]
    boundaries = {b: c for c, b in pairs}
    for anchor_c, anchor_b in pairs:
        for b in range(len(raw) + 2):
            if b in boundaries:
                assert _code_point_at(s, b, anchor_c, anchor_b) == boundaries[b]
            else:
                with pytest.raises((UnicodeDecodeError, ValueError)):
                    _code_point_at(s, b, anchor_c, anchor_b)


def test_random_edits_in_a_larger_non_ascii_file_keep_cache_and_clocks_exact() -> None:
    rng = random.Random(7)
    alphabet = "ab \n\té😀中ß𝔘xyz"
    ws = Workspace("class")
    peers = [Peer(), Peer(), Peer()]
    base = "".join(rng.choice(alphabet) for _ in range(3000))
    send(ws, peers[0].create("big.txt", base), peers[0], tuple(peers[1:]))
    pending: list[bytes] = []
    held: set[int] = set()  # authors whose updates wait in pending
    for step in range(400):
        who = rng.randrange(3)
        author = peers[who]
        content = str(author.text("big.txt"))
        roll = rng.random()
        if content and roll < 0.3:
            start = rng.randrange(len(content))
            end = min(len(content), start + rng.randrange(1, 40))
            update = author.delete("big.txt", start, end)
        elif roll < 0.5:
            # far from the last change: anywhere in the file
            chunk = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 6)))
            update = author.type("big.txt", rng.randrange(len(content) + 1), chunk)
        else:
            # typing on: next to where this author typed last
            at = min(len(content), getattr(author, "at", 0))
            chunk = rng.choice(alphabet)
            update = author.type("big.txt", at, chunk)
            author.at = at + 1  # type: ignore[attr-defined]
        if who in held or rng.random() < 0.1:
            pending.append(update)  # sent later, merged with others: several runs at once
            held.add(who)
            continue
        if pending and rng.random() < 0.3:
            update = merge_updates(*pending, update)
            pending.clear()
            held.clear()
        applied = ws.apply(update)
        verdict = judge(ws, applied, lambda kind, text: ALLOWED)
        for peer in peers:
            peer.apply(verdict.forward)
        assert ws.files() == docs_text(ws), step
        assert ws._clock == _parse_state_vector(ws.state_vector()), step
    if pending:
        judge(ws, ws.apply(merge_updates(*pending)), lambda kind, text: ALLOWED)
    assert ws.files() == docs_text(ws)
    for peer in peers:
        peer.apply(ws.diff(peer.doc.get_state()))
    assert peers[0].contents() == peers[1].contents() == peers[2].contents() == ws.files()


def test_a_text_change_the_cache_cannot_follow_is_read_from_the_document() -> None:
    ws = Workspace("class")
    a = Peer()
    ws.apply(a.create("f", "héllo\nworld\n"))
    ws._nbytes["f"] += 1  # the cache's idea of the text no longer fits the document
    applied = ws.apply(a.type("f", 6, "new "))
    assert ws.text("f") == "héllo\nnew world\n" == docs_text(ws)["f"]
    assert [(i.start, i.text) for i in applied.insertions] == [(6, "new ")]
    applied = ws.apply(a.delete("f", 1, 2))
    assert ws.text("f") == "hllo\nnew world\n" == docs_text(ws)["f"]
    assert [(r.start, r.text) for r in applied.removals] == [(1, "é")]
