"""The client's editor replica (pure pycrdt): local changes as updates, and their sizes."""

from __future__ import annotations

import pytest
from pycrdt import Doc, Map, Text

from relay.editor_client import (
    EditorReplica,
    ReplicaError,
    decode_state_vector,
    minimal_edit,
    text_units,
)
from relay.limits import Limits

WS = "class"
MIXED = "héllo 😀 中文 wörld\n🎉 done"


def mirror(src: EditorReplica, dst: EditorReplica, updates: list[bytes], ws: str = WS) -> None:
    for update in updates:
        assert dst.apply(ws, update)


def plain_doc(updates: list[bytes]) -> dict[str, str]:
    """The files as a fresh pycrdt document (another implementation's view) sees them."""
    doc: Doc = Doc()  # type: ignore[type-arg]
    files = doc.get("files", type=Map)
    for update in updates:
        doc.apply_update(update)
    return {k: str(v) for k, v in files.items()}


def test_create_write_and_mirror() -> None:
    a, b = EditorReplica(), EditorReplica()
    sent = a.create_file(WS, "main.py", "print('hi')\n")
    assert len(sent) == 1
    mirror(a, b, sent)
    assert b.files(WS) == {"main.py": "print('hi')\n"}
    sent2 = a.write_file(WS, "main.py", "print('hello')\n")
    mirror(a, b, sent2)
    assert b.files(WS) == a.files(WS) == {"main.py": "print('hello')\n"}
    assert plain_doc(sent + sent2) == {"main.py": "print('hello')\n"}
    assert a.write_file(WS, "main.py", "print('hello')\n") == []


def test_write_file_sends_only_the_difference() -> None:
    a = EditorReplica()
    body = "".join(f"line {i}: {'x' * 60}\n" for i in range(2000))
    a.write_file(WS, "big.py", body)
    changed = body.replace("line 1000:", "line 1000 (changed):")
    updates = a.write_file(WS, "big.py", changed)
    assert len(updates) == 1
    assert len(updates[0]) < 100
    assert a.text(WS, "big.py") == changed


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("", "abc"),
        ("abc", ""),
        ("aaa", "aaaa"),
        ("abcabc", "abc"),
        ("héllo", "hállo"),
        ("a😀b", "a😀😀b"),
        ("中文", "中国文"),
        ("x🎉y", "xy"),
        (MIXED, MIXED[::-1]),
    ],
)
def test_minimal_edit_round_trips(old: str, new: str) -> None:
    edit = minimal_edit(old, new)
    if old == new:
        assert edit is None
        return
    assert edit is not None
    assert old[: edit.start] + edit.text + old[edit.start + edit.length :] == new
    a, b = EditorReplica(), EditorReplica()
    mirror(a, b, a.write_file(WS, "f.txt", old))
    mirror(a, b, a.write_file(WS, "f.txt", new))
    assert a.text(WS, "f.txt") == b.text(WS, "f.txt") == new


def test_positions_are_code_points_with_non_ascii_text() -> None:
    a, b = EditorReplica(), EditorReplica()
    mirror(a, b, a.create_file(WS, "u.txt", MIXED))
    # Insert after each of é, 😀 and 中 (code point indices), then delete them.
    mirror(a, b, a.insert(WS, "u.txt", 2, "|"))
    assert a.text(WS, "u.txt") == "hé|llo 😀 中文 wörld\n🎉 done"
    at = a.text(WS, "u.txt").index("😀") + 1  # type: ignore[union-attr]
    mirror(a, b, a.insert(WS, "u.txt", at, "#"))
    assert "😀#" in a.text(WS, "u.txt")  # type: ignore[operator]
    at = a.text(WS, "u.txt").index("中")  # type: ignore[union-attr]
    mirror(a, b, a.delete(WS, "u.txt", at, 2))
    assert "中文" not in a.text(WS, "u.txt")  # type: ignore[operator]
    mirror(a, b, a.delete(WS, "u.txt", 1, 1))
    assert a.text(WS, "u.txt") == b.text(WS, "u.txt") == "h|llo 😀#  wörld\n🎉 done"
    assert text_units("😀") in (1, 2, 4)


def test_positions_outside_the_file_are_refused() -> None:
    a = EditorReplica()
    a.create_file(WS, "f", "abc")
    with pytest.raises(ReplicaError):
        a.insert(WS, "f", 4, "x")
    with pytest.raises(ReplicaError):
        a.delete(WS, "f", 2, 2)
    with pytest.raises(ReplicaError):
        a.insert(WS, "nope", 0, "x")


def test_large_changes_are_split_under_the_protocol_limit() -> None:
    limit = Limits().max_bin_bytes
    a, b = EditorReplica(), EditorReplica()
    big = "é" * 30_000 + "😀" * 20_000 + "中" * 10_000
    updates = a.write_file(WS, "big.txt", big)
    assert len(updates) >= 5
    assert all(len(u) < limit for u in updates)
    mirror(a, b, updates)
    assert b.text(WS, "big.txt") == big
    # A rewrite in the middle, a rename and a delete: every update under the limit.
    changed = big[:100] + "😀" * 30_000 + big[-100:]
    updates = a.write_file(WS, "big.txt", changed)
    updates += a.rename_file(WS, "big.txt", "moved.txt")
    assert all(len(u) < limit for u in updates)
    mirror(a, b, updates)
    assert b.files(WS) == {"moved.txt": changed}
    mirror(a, b, a.delete_file(WS, "moved.txt"))
    assert b.files(WS) == {}


def test_rename_is_one_transaction_and_checks_names() -> None:
    a, b = EditorReplica(), EditorReplica()
    mirror(a, b, a.create_file(WS, "a.py", "x = 1\n"))
    mirror(a, b, a.create_file(WS, "b.py", ""))
    updates = a.rename_file(WS, "a.py", "c.py")
    assert len(updates) == 1
    mirror(a, b, updates)
    assert b.files(WS) == {"b.py": "", "c.py": "x = 1\n"}
    with pytest.raises(ReplicaError):
        a.rename_file(WS, "c.py", "b.py")
    with pytest.raises(ReplicaError):
        a.rename_file(WS, "nope.py", "d.py")
    with pytest.raises(ReplicaError):
        a.create_file(WS, "b.py")
    with pytest.raises(ReplicaError):
        a.create_file(WS, "bad\x00name")
    assert a.rename_file(WS, "c.py", "c.py") == []


def test_concurrent_edits_converge() -> None:
    a, b = EditorReplica(), EditorReplica()
    mirror(a, b, a.create_file(WS, "f", "hello world"))
    ua = a.insert(WS, "f", 5, ",")
    ub = b.insert(WS, "f", 11, "!")
    mirror(a, b, ua)
    mirror(b, a, ub)
    assert a.text(WS, "f") == b.text(WS, "f") == "hello, world!"


def test_bad_update_marks_the_workspace_stale() -> None:
    a = EditorReplica()
    assert not a.stale(WS)
    assert not a.apply(WS, b"\xff\xff\x01")
    assert a.stale(WS)
    a.reset(WS)
    assert not a.stale(WS)
    assert a.files(WS) == {}


def test_missing_at_tells_what_the_relay_lacks() -> None:
    a, relay = EditorReplica(), EditorReplica()
    mirror(a, relay, a.create_file(WS, "f", "one"))
    assert a.missing_at(WS, relay.state_vector(WS)) is None
    a.insert(WS, "f", 3, " two")  # never sent
    missing = a.missing_at(WS, relay.state_vector(WS))
    assert missing is not None
    assert relay.apply(WS, missing)
    assert relay.text(WS, "f") == "one two"
    assert a.missing_at(WS, relay.state_vector(WS)) is None


def test_state_vectors_decode() -> None:
    a = EditorReplica()
    assert decode_state_vector(a.state_vector(WS)) == {}
    a.create_file(WS, "f", "abc")
    sv = decode_state_vector(a.state_vector(WS))
    assert len(sv) == 1
    assert next(iter(sv.values())) > 0
    with pytest.raises(ValueError, match="client"):
        decode_state_vector(b"\x05\x01")


def test_workspace_ids_are_checked() -> None:
    a = EditorReplica()
    with pytest.raises(ValueError, match="workspace"):
        a.create_file("nobody", "f")
    a.create_file("learner:l1001", "f")
    assert a.workspaces() == ["learner:l1001"]


def test_updates_apply_to_a_foreign_document() -> None:
    """Updates of another pycrdt document (say, a browser's yjs) are merged too."""
    other: Doc = Doc()  # type: ignore[type-arg]
    files = other.get("files", type=Map)
    files["x.py"] = Text("from elsewhere")
    a = EditorReplica()
    assert a.apply(WS, other.get_update())
    assert a.files(WS) == {"x.py": "from elsewhere"}
