"""``classroom-relay audit search|show|export`` and the audit index: a real relay over TLS
on loopback, real clients, then the staff commands on the log it wrote."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import fcntl
import hashlib
import io
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from relay.audit import AuditEvent, EventKind
from relay.audit_index import INDEX_NAME, AuditIndex, SearchFilter, build_query
from relay.audit_query import asked_text, csv_cell
from relay.audit_read import AuditReader
from relay.audit_store import LOCK_NAME, list_segments
from relay.auditlog import Checkpoint
from relay.bundle import load_bundle
from relay.messages import AckStatus
from relay.server import open_audit_store, running_relay
from tests.conftest import Facility
from tests.test_relay_integration import instructor, learner

HELLO = "Open hello.py and print your name"
REFUSED = "my mail is kid@example-mail.org"
REDACTED = "mail me at alice@mailbox.org after class"
AS_DELIVERED = "mail me at [redacted:email] after class"
DIRECT = "is line 3 right?"
FORMULA = "=SUM(A1:A3) gives 6"
OTHER_CLASS = "Welcome to the other class"


# ---------------------------------------------------------------------------------------
# pure parts
# ---------------------------------------------------------------------------------------


def test_queries_carry_values_as_parameters_only() -> None:
    hostile = "x' OR '1'='1"
    sql, params = build_query(
        SearchFilter(
            session=hostile,
            person="learner:l1001",
            machine="pc-01",
            learner="l1001",
            kinds=(EventKind.MESSAGE_REFUSED, EventKind.MESSAGE_HELD),
            decision="refused",
            rule="contact.details",
            since=10.0,
            until=20.0,
            with_content=True,
        ),
        limit=5,
    )
    assert hostile not in sql
    assert "'" not in sql.replace("','", "").replace("''", "")
    assert sql.count("?") == len(params)
    assert params == (
        hostile,
        "learner:l1001",
        "learner:l1001",
        "pc-01",
        "l1001",
        "message.refused",
        "message.held",
        "refused",
        "contact.details",
        ",contact.details,",
        10.0,
        20.0,
        5,
    )
    assert sql.endswith("ORDER BY seq LIMIT ?")
    bare, bare_params = build_query(SearchFilter(person="alice"))
    assert "actor_name = ?" in bare
    assert bare_params == ("alice", "alice", "alice")


def test_filters_check_themselves() -> None:
    with pytest.raises(ValueError, match="after its start"):
        SearchFilter(since=20.0, until=10.0)
    with pytest.raises(ValueError, match="empty"):
        SearchFilter(rule="")
    with pytest.raises(ValueError, match="limit"):
        build_query(SearchFilter(), limit=0)


def test_csv_cells_a_spreadsheet_would_run_are_defused() -> None:
    assert csv_cell(FORMULA) == "'" + FORMULA
    assert csv_cell("+1 555") == "'+1 555"
    assert csv_cell("@cmd") == "'@cmd"
    assert csv_cell("plain") == "plain"
    assert csv_cell(None) == ""
    assert csv_cell(True) == "true"
    assert csv_cell(7) == "7"


def test_what_was_asked_is_recorded_readably() -> None:
    assert asked_text(["audit", "show", "py101"]) == "audit show py101"
    assert asked_text(["--until", "2026-05-12 14:00"]) == '--until "2026-05-12 14:00"'


# ---------------------------------------------------------------------------------------
# a class that happened
# ---------------------------------------------------------------------------------------


@pytest.fixture
async def chatted(facility: Facility) -> Facility:
    """py101: a delivered, a refused, a redacted, a direct and a formula-like message, a
    raised hand; py102 (bob, room-b) next to it."""
    facility.schedule("py102", instructor="bob", classroom="room-b", learners=("l1009",))
    loopback = ("127.0.0.1", 0)
    async with (
        running_relay(facility.home, outside=loopback, inside=loopback) as r,
        instructor(facility, r) as alice,
        learner(facility, r, "l1001", "pc-01") as l1,
        instructor(facility, r, "bob", "py102") as bob,
        learner(facility, r, "l1009", "pc-09", "py102") as l9,
    ):
        assert (await alice.chat(HELLO)).status is AckStatus.DELIVERED
        assert (await l1.chat(REFUSED)).status is AckStatus.REFUSED
        redacted = await alice.chat(REDACTED)
        assert redacted.status is AckStatus.REDACTED
        assert redacted.redacted == AS_DELIVERED
        assert (await l1.chat(DIRECT, to="instructor:alice")).status is AckStatus.DELIVERED
        assert (await l1.chat(FORMULA)).status is AckStatus.DELIVERED
        await l1.hand(True)
        assert (await bob.chat(OTHER_CLASS)).status is AckStatus.DELIVERED
        await l9.hand(True)
    return facility


def run(f: Facility, *args: str) -> tuple[int, str, str]:
    return f.admin("audit", *args)


def ok(f: Facility, *args: str) -> str:
    code, out, err = run(f, *args)
    assert code == 0, err
    return out


def staff(f: Facility) -> tuple[str, str]:
    return ("--bundle", str(f.bundle("sam")))


def found(f: Facility, *args: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ok(f, "search", "--json", *args).splitlines()]


def reads(f: Facility) -> list[dict[str, Any]]:
    return [r for r in f.audit_records() if r["kind"] == "audit.read"]


def messages(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if str(r["kind"]).startswith("message.")]


# ---------------------------------------------------------------------------------------
# search
# ---------------------------------------------------------------------------------------


def test_search_by_class(chatted: Facility) -> None:
    other = found(chatted, "--session", "py102")
    assert other
    assert {r["session"] for r in other} == {"py102"}
    assert [r["content"] for r in messages(other) if "content" in r] == [OTHER_CLASS]
    ours = found(chatted, "--session", "py101")
    contents = [r.get("content") for r in messages(ours)]
    assert contents == [HELLO, REFUSED, REDACTED, DIRECT, FORMULA, None]  # the hand: None
    assert [r["seq"] for r in ours] == sorted(r["seq"] for r in ours)


def test_search_by_person(chatted: Facility) -> None:
    l1001 = found(chatted, "--person", "learner:l1001")
    assert l1001
    assert all("learner:l1001" in (r.get("actor"), r.get("recipient")) for r in l1001)
    assert REFUSED in [r.get("content") for r in l1001]
    # A bare name: alice in any role; the learner's direct message to her included.
    alice = found(chatted, "--person", "alice")
    actors = {r.get("actor") for r in alice}
    assert {"instructor:alice", "alice"} <= actors  # class events and connection events
    direct = [r for r in alice if r.get("recipient") == "instructor:alice"]
    assert [r["content"] for r in direct] == [DIRECT]
    assert not [r for r in alice if r.get("session") == "py102"]


def test_search_by_machine_learner_kind_decision_and_rule(chatted: Facility) -> None:
    machine = found(chatted, "--machine", "pc-09")
    assert machine
    assert {r["machine"] for r in machine} == {"pc-09"}
    assert {r["learner"] for r in found(chatted, "--learner", "l1001")} == {"l1001"}
    two = found(chatted, "--kind", "message.refused", "--kind", "message.redacted")
    assert [(r["kind"], r["content"]) for r in two] == [
        ("message.refused", REFUSED),
        ("message.redacted", REDACTED),
    ]
    (redacted,) = found(chatted, "--decision", "redacted")
    assert redacted["delivered"] == AS_DELIVERED
    (refused,) = found(chatted, "--rule", "contact.details")
    assert (refused["content"], refused["actor"]) == (REFUSED, "learner:l1001")
    assert found(chatted, "--rule", "contact") == []  # a rule name, not a prefix


def test_search_by_time(chatted: Facility) -> None:
    assert messages(found(chatted, "--since", "1h", "--session", "py101"))
    assert found(chatted, "--until", "2000-01-01T00:00Z") == []
    assert found(chatted, "--since", "2100-01-01T00:00Z") == []
    code, _, err = run(chatted, "search", "--since", "2026-05-12T15:00Z", "--until", "2026-05-12")
    assert code == 2
    assert "after its start" in err


def test_search_limit_says_when_more_match(chatted: Facility) -> None:
    code, out, err = run(chatted, "search", "--session", "py101", "--limit", "2", "--json")
    assert code == 0
    assert len(out.splitlines()) == 2
    assert "more match" in err
    code, _, err = run(chatted, "search", "--limit", "0")
    assert code == 2
    assert "--limit" in err


def test_text_search_with_a_staff_bundle(chatted: Facility) -> None:
    hits = found(chatted, "--text", "MAILBOX.ORG", *staff(chatted))
    assert [(r["kind"], r["content"], r["delivered"]) for r in hits] == [
        ("message.redacted", REDACTED, AS_DELIVERED)
    ]
    # The delivered text is searched too; the match is case-insensitive.
    assert [r["seq"] for r in found(chatted, "--text", "[REDACTED:email]", *staff(chatted))] == [
        hits[0]["seq"]
    ]
    assert found(chatted, "--text", "no such words anywhere", *staff(chatted)) == []
    read = reads(chatted)[-1]
    assert read["actor"] == "staff:sam"
    assert read["detail"] == "audit search --limit 100 --text (22 characters, not recorded)"
    assert "no such words" not in read["detail"]  # the words searched may be contents


def test_the_human_table(chatted: Facility) -> None:
    out = ok(chatted, "search", "--session", "py101", "--kind", "message.redacted", *staff(chatted))
    header, row = out.splitlines()
    assert header.split() == ["TIME", "CLASS", "KIND", "ACTOR", "DECISION", "RULE", "WHAT"]
    assert "py101  message.redacted  instructor:alice  redacted  contact.details.instructor" in row
    assert f'"{REDACTED}" -> "mail me at' in row


def test_without_the_staff_key_search_shows_metadata_and_text_search_is_refused(
    chatted: Facility,
) -> None:
    protect_staff_key(chatted)
    code, _, err = run(chatted, "search", "--text", "mailbox")
    assert code == 2
    assert "audit search --text needs the staff audit key: pass --bundle STAFF_BUNDLE" in err
    code, out, err = run(chatted, "search", "--kind", "message.refused")
    assert code == 0, err
    assert "contents are not shown" in err
    assert "(encrypted)" in out
    assert REFUSED not in out
    # The bundle still reads them.
    assert [r["content"] for r in found(chatted, "--text", "KID@", *staff(chatted))] == [REFUSED]
    code, _, err = run(chatted, "search", "--text", "x", "--no-contents")
    assert code == 2
    assert "pick one" in err


def protect_staff_key(f: Facility) -> None:
    """Lock the home's staff audit key with a passphrase (as a real facility has it)."""
    from relay.audit_keys import load_staff_private, staff_key_path

    key = load_staff_private(f.home.root, None)
    staff_key_path(f.home.root).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"a long passphrase"),
        )
    )


# ---------------------------------------------------------------------------------------
# show
# ---------------------------------------------------------------------------------------


def test_show_is_a_transcript_with_the_decisions(chatted: Facility) -> None:
    out = ok(chatted, "show", "py101", *staff(chatted))
    lines = out.splitlines()

    def line(needle: str) -> int:
        (at,) = [i for i, text in enumerate(lines) if needle in text]
        return at

    hello = line(f'instructor:alice -> class: "{HELLO}"  [delivered; rule content.allow]')
    refused = line(
        f'learner:l1001 (at pc-01) -> class: "{REFUSED}"  [refused; rule contact.details'
    )
    redacted = line(f'instructor:alice -> class: "{REDACTED}"  [redacted;')
    assert f'delivered as "{AS_DELIVERED}"' in lines[redacted]
    direct = line(f'learner:l1001 (at pc-01) -> instructor:alice: "{DIRECT}"  [delivered')
    hand = line("learner:l1001 (at pc-01) raised a hand")
    joined = line("learner:l1001 (at pc-01) joined")
    left = line("learner:l1001 (at pc-01) left")
    opened = line("class opened")
    assert opened < joined < hello < refused < redacted < direct < hand < left
    assert OTHER_CLASS not in out
    assert "read the audit log" not in out  # reads are not events of the class


def test_show_json_and_an_unknown_class(chatted: Facility) -> None:
    records = [json.loads(x) for x in ok(chatted, "show", "py101", "--json").splitlines()]
    assert {r["session"] for r in records} == {"py101"}
    assert [r["content"] for r in messages(records) if "content" in r][:3] == [
        HELLO,
        REFUSED,
        REDACTED,
    ]
    assert all(r["time_utc"].endswith("Z") for r in records)
    code, out, err = run(chatted, "show", "nosuchclass")
    assert code == 0
    assert out == ""
    assert "no record of class 'nosuchclass'" in err
    code, _, err = run(chatted, "show", "bad/name")
    assert code == 2
    assert "class id" in err


def test_show_escapes_characters_that_would_disguise_text(facility: Facility) -> None:
    sneaky = "ok\u202egnp.exe\nforged line"
    append(facility, chat_event("py101", "learner:l1001", sneaky))
    out = ok(facility, "show", "py101")
    assert "\u202e" not in out
    assert "ok\\u202egnp.exe\\nforged line" in out


# ---------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_jsonl_with_a_manifest_that_vouches_for_it(
    chatted: Facility, tmp_path: Path
) -> None:
    out_dir = tmp_path / "case-17"
    ok(chatted, "export", "--session", "py101", "--format", "jsonl", "--out", str(out_dir))
    data, manifest_path = out_dir / "py101.jsonl", out_dir / "py101.manifest.json"
    for path in (data, manifest_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    records = [json.loads(line) for line in data.read_text().splitlines()]
    manifest = json.loads(manifest_path.read_text())
    # The export holds every record of the class, as the log has it, decrypted.
    in_log = [
        r
        for r in chatted.audit_records()
        if r.get("session") == "py101" and r["seq"] <= manifest["last_seq"]
    ]
    assert [r["seq"] for r in records] == [r["seq"] for r in in_log]
    assert [r.get("content") for r in records] == [r.get("content") for r in in_log]
    assert manifest["session"] == "py101"
    assert manifest["records"] == len(records)
    assert (manifest["first_seq"], manifest["last_seq"]) == (records[0]["seq"], records[-1]["seq"])
    assert manifest["file"] == {
        "name": "py101.jsonl",
        "format": "jsonl",
        "bytes": data.stat().st_size,
        "sha256": sha256(data),
    }
    assert manifest["exported_by"] == "admin:" + (os.environ.get("USER") or "administrator")
    # Each segment: the hash of its first `size` bytes (the last one may have grown since).
    segments = {p.name: p for p in list_segments(chatted.home.audit_dir)}
    for seg in manifest["segments"]:
        prefix = segments[seg["name"]].read_bytes()[: seg["size"]]
        assert hashlib.sha256(prefix).hexdigest() == seg["sha256"]
    # The checkpoint is the signed one of the sink, and checks with the staff's pinned key.
    cp = manifest["checkpoint"]
    checkpoint = Checkpoint(
        bytes.fromhex(cp["log"]),
        cp["seq"],
        bytes.fromhex(cp["chain"]),
        cp["time"],
        cp["signer"],
        bytes.fromhex(cp["signature"]),
    )
    pinned = load_bundle(chatted.bundle("sam")).audit_signing_key
    assert pinned is not None
    assert checkpoint.valid(pinned)
    assert cp["signature_valid"] is True
    assert manifest["checkpoint_covers_export"] is True
    assert cp["seq"] >= manifest["last_seq"]
    assert manifest["signing_key"]["fingerprint"] == cp["signer"]


def test_export_csv_and_never_overwrite(chatted: Facility, tmp_path: Path) -> None:
    args = ("export", "--session", "py101", "--format", "csv", "--out", str(tmp_path))
    out = ok(chatted, *args, *staff(chatted))
    assert "py101.csv" in out
    data = tmp_path / "py101.csv"
    manifest = json.loads((tmp_path / "py101.manifest.json").read_text())
    assert manifest["file"]["sha256"] == sha256(data)
    assert manifest["exported_by"] == "staff:sam"
    rows = list(csv.DictReader(io.StringIO(data.read_text(), newline="")))
    assert len(rows) == manifest["records"]
    by_content = {row["content"]: row for row in rows if row["content"]}
    assert by_content[REFUSED]["decision"] == "refused"
    assert by_content[REFUSED]["rule"] == "contact.details"
    assert by_content[REDACTED]["delivered"] == AS_DELIVERED
    assert "'" + FORMULA in by_content  # a spreadsheet shows it, does not run it
    before = data.read_bytes()
    code, _, err = run(chatted, *args, *staff(chatted))
    assert code == 2
    assert "never overwrites" in err
    assert data.read_bytes() == before


# ---------------------------------------------------------------------------------------
# every read is recorded, first
# ---------------------------------------------------------------------------------------


def test_every_read_is_recorded_with_who_and_what(chatted: Facility, tmp_path: Path) -> None:
    assert reads(chatted) == []
    ok(chatted, "search", "--person", "learner:l1001", "--kind", "message.refused")
    ok(chatted, "show", "py101", *staff(chatted))
    ok(chatted, "export", "--session", "py102", "--format", "jsonl", "--out", str(tmp_path))
    got = [(r["actor"], r["detail"]) for r in reads(chatted)]
    admin = "admin:" + (os.environ.get("USER") or "administrator")
    assert got == [
        (admin, "audit search --person learner:l1001 --kind message.refused --limit 100"),
        ("staff:sam", "audit show py101"),
        (admin, f"audit export --session py102 --format jsonl --out {tmp_path}"),
    ]
    assert {r["code"] for r in reads(chatted)} == {"CR510I"}
    # The reads are themselves searchable.
    assert [r["actor"] for r in found(chatted, "--kind", "audit.read")][:3] == [
        admin,
        "staff:sam",
        admin,
    ]


def test_a_read_that_cannot_be_recorded_shows_nothing(chatted: Facility, tmp_path: Path) -> None:
    with writer_lock_held(chatted):
        for args in (
            ("search", "--session", "py101"),
            ("show", "py101", *staff(chatted)),
            ("export", "--session", "py101", "--format", "jsonl", "--out", str(tmp_path)),
        ):
            code, out, err = run(chatted, *args)
            assert code == 2, args
            assert out == ""
            assert "nothing shown: this read of the audit log could not be recorded" in err
    assert not list(tmp_path.iterdir())
    assert reads(chatted) == []


@contextlib.contextmanager
def writer_lock_held(f: Facility) -> Iterator[None]:
    """Another process holds the log's writer lock: nothing can be appended."""
    fd = os.open(f.home.audit_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


async def test_reads_while_the_relay_runs_are_recorded_by_it(facility: Facility) -> None:
    async with running_relay(facility.home, outside=("127.0.0.1", 0), inside=("127.0.0.1", 0)) as r:
        async with instructor(facility, r) as alice:
            assert (await alice.chat(HELLO)).status is AckStatus.DELIVERED
        code, out, err = await asyncio.to_thread(
            facility.admin, "audit", "search", "--text", "hello.py", "--json", *staff(facility)
        )
        assert code == 0, err
        assert [json.loads(x)["content"] for x in out.splitlines()] == [HELLO]
    (read,) = reads(facility)
    assert read["actor"] == "staff:sam"
    started = [r["seq"] for r in facility.audit_records() if r["kind"] == "relay.started"]
    stopped = [r["seq"] for r in facility.audit_records() if r["kind"] == "relay.stopped"]
    assert started[-1] < read["seq"] < stopped[-1]  # written by the running relay


# ---------------------------------------------------------------------------------------
# the index
# ---------------------------------------------------------------------------------------


def chat_event(session: str, actor: str, text: str) -> AuditEvent:
    return AuditEvent(
        EventKind.MESSAGE_DELIVERED,
        1_800_000_000.0,
        session,
        actor,
        msg_id="t-1",
        channel="class",
        decision="delivered",
        rule="content.allow",
        content=text,
    )


def append(f: Facility, *events: AuditEvent) -> None:
    async def go() -> None:
        store = open_audit_store(f.home, f.home.load_config())
        try:
            await store.submit(events)
        finally:
            await store.close()

    asyncio.run(go())


def event_count(f: Facility) -> int:
    return len(f.audit_records())


def test_the_index_catches_up_with_new_records_only(chatted: Facility) -> None:
    index = AuditIndex(chatted.home.audit_dir)
    first = index.refresh()
    assert first.rebuilt is None
    assert first.added == event_count(chatted)
    assert stat.S_IMODE((chatted.home.audit_dir / INDEX_NAME).stat().st_mode) == 0o600
    assert index.refresh().added == 0
    append(chatted, chat_event("py103", "instructor:bob", "late words"))
    again = index.refresh()
    assert (again.added, again.rebuilt) == (1, None)
    assert index.count() == event_count(chatted)
    (row,) = index.search(SearchFilter(session="py103"))
    assert row.actor == "instructor:bob"
    assert row.has_content


def test_the_index_is_rebuilt_when_the_log_was_cut_back_and_written_again(
    facility: Facility,
) -> None:
    append(facility, chat_event("py101", "learner:l1001", "first words"))
    index = AuditIndex(facility.home.audit_dir)
    index.refresh()
    (cut,) = [
        r
        for r in AuditReader(facility.home.audit_dir).records(decrypt=False)
        if r.fields.get("msg_id") == "t-1"
    ]
    # Cut the log back to just before that record (as a repair after a failed write
    # does), and let the store write other records there: the same numbers at the same
    # places, other bytes.
    with (facility.home.audit_dir / "segments" / cut.segment).open("r+b") as f:
        f.truncate(cut.offset)
    facility.home.checkpoint_sink(facility.home.load_config()).unlink()  # it vouched for them
    append(facility, chat_event("py101", "learner:l1001", "other words"))
    refresh = index.refresh()
    assert refresh.rebuilt == f"record {cut.seq} is no longer where the index has it"
    assert index.count() == event_count(facility)
    out = ok(facility, "search", "--session", "py101", "--json")
    contents = [json.loads(x).get("content") for x in out.splitlines()]
    assert "other words" in contents
    assert "first words" not in contents


def test_the_index_is_rebuilt_when_segments_are_removed(facility: Facility) -> None:
    with facility.home.relay_toml.open("a") as f:
        f.write("segment_max_bytes = 4096\n")
    for n in range(30):
        append(facility, chat_event("py101", "learner:l1001", f"message {n} " + "x" * 200))
    segments = list_segments(facility.home.audit_dir)
    assert len(segments) > 2
    index = AuditIndex(facility.home.audit_dir)
    index.refresh()
    removed = {row.seq for row in index.search(SearchFilter()) if row.segment == segments[1].name}
    assert removed
    segments[1].unlink()  # as retention does (the tombstone is for `audit verify`)
    refresh = index.refresh()
    assert refresh.rebuilt == f"segment {segments[1].name} is no longer in the log"
    kept = list(AuditReader(facility.home.audit_dir).records(decrypt=False))
    assert index.count() == len(kept)
    out = ok(facility, "search", "--session", "py101", "--limit", "1000", "--json")
    seqs = [json.loads(x)["seq"] for x in out.splitlines()]
    assert seqs == [r.seq for r in kept if r.fields.get("session") == "py101"]
    assert not set(seqs) & removed


def test_an_index_that_is_not_a_database_is_made_again(chatted: Facility) -> None:
    path = chatted.home.audit_dir / INDEX_NAME
    path.write_bytes(b"this is not sqlite" * 100)
    assert messages(found(chatted, "--session", "py102"))
    assert AuditIndex(chatted.home.audit_dir).count() == event_count(chatted)


def test_the_index_never_holds_contents(chatted: Facility) -> None:
    AuditIndex(chatted.home.audit_dir).refresh()
    raw = (chatted.home.audit_dir / INDEX_NAME).read_bytes()
    for text in (HELLO, REFUSED, REDACTED, DIRECT):
        assert text.encode() not in raw
