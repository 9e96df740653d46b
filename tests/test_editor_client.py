"""The client's editor replica (pure pycrdt): local changes as updates, and their sizes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from pycrdt import Doc, Map, Text

from relay.client import RelayClient
from relay.editor_client import (
    EditorReplica,
    ReplicaError,
    decode_state_vector,
    minimal_edit,
    text_units,
)
from relay.errors import ClientError, ErrorCode
from relay.limits import Limits
from relay.messages import AckStatus, EditorUpdateEvent
from relay.server import Relay
from tests.conftest import PINS, Facility
from tests.conftest import eventually as wait_until

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


# -- through a real relay over TLS on loopback -------------------------------------------------

PHONE = "415-555-0134"


def _instructor(f: Facility, r: Relay, name: str = "alice") -> RelayClient:
    assert r.addresses is not None
    return RelayClient(f.bundle(name), "py101", relay_url=r.addresses.outside_url)


def _learner(f: Facility, r: Relay, learner_id: str, machine: str) -> RelayClient:
    assert r.addresses is not None
    return RelayClient(
        f.bundle(machine),
        "py101",
        relay_url=r.addresses.inside_url,
        learner=learner_id,
        pin=PINS[learner_id],
    )


def eventually(check: Callable[[], bool]) -> Awaitable[None]:
    return wait_until(check, wait_s=5.0)


async def editor_frames(client: RelayClient, wait_s: float = 0.3) -> list[EditorUpdateEvent]:
    out: list[EditorUpdateEvent] = []
    for _ in range(10_000):
        try:
            event = await client.next_event(wait_s)
        except TimeoutError:
            return out
        if isinstance(event, EditorUpdateEvent):
            out.append(event)
    return out


@pytest.mark.integration
async def test_instructor_code_reaches_learners(facility: Facility, relay: Relay) -> None:
    async with (
        _instructor(facility, relay) as alice,
        _learner(facility, relay, "l1001", "pc-01") as ada,
        _learner(facility, relay, "l1002", "pc-02") as bo,
    ):
        await ada.editor_sync(WS)
        acks = await alice.write_file(WS, "hello.py", "print('héllo 😀 中文')\n")
        assert [a.status for a in acks] == [AckStatus.DELIVERED]
        await eventually(lambda: ada.editor.files(WS) == alice.editor.files(WS))
        # A learner who never synced still receives the change; a sync catches up anyway.
        await bo.editor_sync(WS)
        assert bo.editor.files(WS) == {"hello.py": "print('héllo 😀 中文')\n"}
        # Edits with code-point positions after non-ASCII text land where expected.
        at = len("print('héllo 😀")
        acks = await alice.insert(WS, "hello.py", at, " 🎉")
        assert acks[0].status is AckStatus.DELIVERED
        want = {"hello.py": "print('héllo 😀 🎉 中文')\n"}
        await eventually(lambda: ada.editor.files(WS) == bo.editor.files(WS) == want)
        frames = await editor_frames(ada)
        assert frames
        assert {f.by for f in frames} == {"instructor:alice"}
        # Rename and delete reach everyone.
        await alice.rename_file(WS, "hello.py", "main.py")
        await eventually(lambda: list(ada.editor.files(WS)) == ["main.py"])
        await alice.delete_file(WS, "main.py")
        await eventually(lambda: bo.editor.files(WS) == {})


@pytest.mark.integration
async def test_learner_workspace_is_private_until_shared(facility: Facility, relay: Relay) -> None:
    mine = "learner:l1001"
    async with (
        _instructor(facility, relay) as alice,
        _learner(facility, relay, "l1001", "pc-01") as ada,
        _learner(facility, relay, "l1002", "pc-02") as bo,
    ):
        acks = await ada.write_file(mine, "hello.py", "print('mine')\n")
        assert acks[0].status is AckStatus.DELIVERED
        await alice.editor_sync(mine)
        assert alice.editor.files(mine) == {"hello.py": "print('mine')\n"}
        with pytest.raises(ClientError) as info:
            await bo.editor_sync(mine)
        assert info.value.code is ErrorCode.UNKNOWN_WORKSPACE
        assert bo.editor.files(mine) == {}
        # The instructor helps; the learner sees it.
        await alice.write_file(mine, "hello.py", "print('mine')\n# good\n")
        await eventually(lambda: ada.editor.text(mine, "hello.py") == "print('mine')\n# good\n")
        ack = await alice.share("l1001", True)
        assert ack.status is AckStatus.DELIVERED
        await eventually(lambda: bo.editor_mode is not None and bo.editor_mode.shared == (mine,))
        await bo.editor_sync(mine)
        assert bo.editor.files(mine) == ada.editor.files(mine)
        # Shared is not editable by others: refused, and bo's replica is put back.
        acks = await bo.write_file(mine, "hello.py", "vandalised")
        assert acks[-1].status is AckStatus.REFUSED
        assert acks[-1].error == "read_only"
        assert bo.editor.files(mine) == ada.editor.files(mine)
        assert (await alice.share("l1001", False)).status is AckStatus.DELIVERED
        await eventually(lambda: bo.editor_mode is not None and bo.editor_mode.shared == ())


@pytest.mark.integration
async def test_lecture_mode_makes_the_class_workspace_read_only(
    facility: Facility, relay: Relay
) -> None:
    async with (
        _instructor(facility, relay) as alice,
        _learner(facility, relay, "l1001", "pc-01") as ada,
    ):
        await alice.write_file(WS, "lesson.py", "x = 1\n")
        acks = await ada.write_file(WS, "lesson.py", "x = 2\n")
        assert acks[0].status is AckStatus.DELIVERED
        assert (await alice.lecture(True)).status is AckStatus.DELIVERED
        await eventually(lambda: ada.editor_mode is not None and ada.editor_mode.lecture)
        acks = await ada.write_file(WS, "lesson.py", "x = 3\n")
        assert acks[-1].status is AckStatus.REFUSED
        assert acks[-1].error == "read_only"
        assert "lecture" in (acks[-1].text or "")
        assert ada.editor.text(WS, "lesson.py") == "x = 2\n"
        refused = await ada.lecture(False)
        assert refused.status is AckStatus.REFUSED
        assert refused.error == "not_permitted"
        assert (await alice.lecture(False)).status is AckStatus.DELIVERED
        await eventually(lambda: ada.editor_mode is not None and not ada.editor_mode.lecture)
        acks = await ada.write_file(WS, "lesson.py", "x = 3\n")
        assert acks[0].status is AckStatus.DELIVERED
        await eventually(lambda: alice.editor.text(WS, "lesson.py") == "x = 3\n")


@pytest.mark.integration
async def test_a_phone_number_typed_key_by_key_is_undone(facility: Facility, relay: Relay) -> None:
    async with (
        _instructor(facility, relay) as alice,
        _learner(facility, relay, "l1001", "pc-01") as ada,
    ):
        await alice.write_file(WS, "main.py", "x = 1\n")
        await ada.editor_sync(WS)
        seen: list[str] = []
        line = f"# call {PHONE}"
        refused_at = None
        for i, ch in enumerate(line):
            before = ada.editor.text(WS, "main.py") or ""
            acks = await ada.insert(WS, "main.py", len(before), ch)
            seen.append(alice.editor.text(WS, "main.py") or "")
            assert len(acks) == 1
            if acks[0].status is AckStatus.REFUSED:
                assert acks[0].error == "policy_blocked"
                assert PHONE not in (acks[0].text or "")
                # The relay's correction came first: the replica no longer shows the key.
                assert ada.editor.text(WS, "main.py") == before
                refused_at = i
                break
            assert acks[0].status is AckStatus.DELIVERED
        # Refused while typing the number (the policy may see it before its last digit).
        assert refused_at is not None
        assert refused_at >= len("# call 415-555")
        await eventually(lambda: alice.editor.files(WS) == ada.editor.files(WS))
        # The instructor never held the whole number, and no frame carried it.
        frames = await editor_frames(alice)
        assert all(PHONE not in s for s in seen)
        assert PHONE not in (alice.editor.text(WS, "main.py") or "")
        assert all(PHONE.encode() not in f.update for f in frames)
        # Typing goes on after the refusal.
        acks = await ada.insert(WS, "main.py", len(ada.editor.text(WS, "main.py") or ""), "\n")
        assert acks[0].status is AckStatus.DELIVERED
        await eventually(lambda: alice.editor.files(WS) == ada.editor.files(WS))


@pytest.mark.integration
async def test_reconnecting_catches_up_on_the_editor(facility: Facility, relay: Relay) -> None:
    async with (
        _instructor(facility, relay) as alice,
        _learner(facility, relay, "l1001", "pc-01") as ada,
    ):
        await alice.write_file(WS, "a.py", "one\n")
        await ada.editor_sync(WS)
        assert ada.editor.files(WS) == {"a.py": "one\n"}
        await ada.drop_connection()
        await alice.write_file(WS, "a.py", "one\ntwo\n")
        await alice.write_file(WS, "b.py", "three\n")
        await eventually(lambda: ada.editor.files(WS) == {"a.py": "one\ntwo\n", "b.py": "three\n"})
        assert ada.reconnects >= 1
