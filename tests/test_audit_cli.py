"""``classroom-relay audit verify|checkpoint|retention|hold`` on a real facility home."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import re
import time
from pathlib import Path

import pytest

from relay.audit import AuditEvent, EventKind
from relay.audit_cli import parse_published
from relay.audit_read import AuditReader
from relay.audit_store import list_segments
from relay.auditlog import FrameDamage, FrameType, read_frames
from relay.server import Relay, open_audit_store
from tests.conftest import Facility, iso

DAY = 86_400.0


def _small_segments(facility: Facility) -> None:
    path = facility.home.relay_toml
    text = path.read_text()
    assert "\n[audit]\n" in text
    path.write_text(text.replace("\n[audit]\n", "\n[audit]\nsegment_max_bytes = 4096\n", 1))


def _fill(facility: Facility, start: float, count: int, session: str) -> None:
    """Append ``count`` chat events of ``session`` with times from ``start`` on."""
    home = facility.home
    config = home.load_config()
    ticks = itertools.count()

    def clock() -> float:
        return start + next(ticks)

    async def run() -> None:
        store = open_audit_store(home, config, clock)
        try:
            for i in range(0, count, 10):
                batch = [
                    AuditEvent(
                        kind=EventKind.MESSAGE_DELIVERED,
                        time=start + i + j,
                        session=session,
                        actor="learner:l1001",
                        decision="delivered",
                        content=f"line {i + j} of {session} " + "y" * 30,
                    )
                    for j in range(min(10, count - i))
                ]
                await store.submit(batch)
        finally:
            await store.close()

    asyncio.run(run())


def _segments(facility: Facility) -> list[Path]:
    return list_segments(facility.home.audit_dir)


def _sessions_and_newest(path: Path) -> tuple[set[str], float]:
    sessions: set[str] = set()
    newest = 0.0
    from relay.auditlog import unpack_body

    for f in read_frames(path.read_bytes()):
        assert not isinstance(f, FrameDamage)
        fields = unpack_body(f.body, "r")
        newest = max(newest, float(fields.get("time", fields.get("t", 0.0))))
        if isinstance(fields.get("session"), str):
            sessions.add(fields["session"])
    return sessions, newest


def _flip_in_an_event(facility: Facility) -> tuple[str, int, int]:
    path = _segments(facility)[0]
    data = bytearray(path.read_bytes())
    target = next(
        f
        for f in read_frames(bytes(data))
        if not isinstance(f, FrameDamage) and f.ftype == FrameType.EVENT
    )
    assert not isinstance(target, FrameDamage)
    data[target.end - 6] ^= 0x01
    path.write_bytes(bytes(data))
    return path.name, target.seq, target.offset


# -- verify ----------------------------------------------------------------------------------


def test_verify_passes_and_summarises(facility: Facility) -> None:
    _fill(facility, time.time(), 30, "py101")
    out = facility.must("audit", "verify")
    assert out.startswith("The audit log verifies: ")
    assert "checkpoint sink" in out
    assert "matches the log" in out
    assert "from the facility home" in out
    report = json.loads(facility.must("audit", "verify", "--json"))
    assert report["ok"] is True
    assert report["problem"] is None
    assert report["records"] == report["last_seq"] > 30
    assert report["unsigned_tail"] == 0
    assert report["gaps"] == []


def test_verify_with_the_staff_bundle_uses_the_pinned_key(facility: Facility) -> None:
    _fill(facility, time.time(), 5, "py101")
    bundle = str(facility.bundle("sam"))
    out = facility.must("audit", "verify", "--bundle", bundle)
    assert f"pinned in the staff bundle {bundle}" in out
    # A swapped signing key on the relay host does not fool the bundle's pinned key.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    rogue = Ed25519PrivateKey.generate()
    keys = facility.home.root / "keys"
    (keys / "audit-signing.key").write_bytes(
        rogue.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (keys / "audit-signing.pub").write_bytes(
        rogue.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    code, out, _ = facility.admin("audit", "verify", "--bundle", bundle)
    assert code == 0, out  # nothing re-signed yet: the log is still the relay's
    _fill(facility, time.time(), 5, "py101")  # now checkpoints are signed by the rogue key
    code, out, _ = facility.admin("audit", "verify", "--bundle", bundle)
    assert code == 1
    assert "signature is not valid" in out


def test_verify_reports_the_first_problem_and_exits_1(facility: Facility) -> None:
    _fill(facility, time.time(), 30, "py101")
    name, seq, offset = _flip_in_an_event(facility)
    code, out, err = facility.admin("audit", "verify")
    assert code == 1, err
    assert "The audit log does NOT verify." in out
    assert f"First problem: {name}, record {seq}, byte {offset}: " in out
    assert "What to do:" in out
    report = json.loads(facility.admin("audit", "verify", "--json")[1])
    assert report["ok"] is False
    assert report["problem"]["seq"] == seq
    assert report["problem"]["offset"] == offset


def test_verify_without_a_facility_says_what_to_do(tmp_path: Path) -> None:
    code, _, err = Facility(tmp_path).admin("audit", "verify")
    assert code == 2
    assert "init" in err


# -- checkpoint, verify --against --------------------------------------------------------------


def test_checkpoint_can_be_published_and_compared_later(facility: Facility, tmp_path: Path) -> None:
    _fill(facility, time.time(), 20, "py101")
    text = facility.must("audit", "checkpoint")
    assert text.splitlines()[0] == "classroom-relay audit checkpoint v1"
    published = parse_published(text, "test")
    assert published.signing_key is not None
    as_json = json.loads(facility.must("audit", "checkpoint", "--json"))
    assert as_json["seq"] == published.seq
    assert as_json["chain"] == published.checkpoint.chain.hex()
    saved = tmp_path / "published.txt"
    saved.write_text(text)
    _fill(facility, time.time(), 20, "py101")  # the log grows: still consistent
    out = facility.must("audit", "verify", "--against", str(saved))
    assert f"published checkpoint of record {published.seq}" in out
    facility.must("audit", "verify", "--against", json.dumps(as_json))
    # a checkpoint that claims another chain hash is refused (its signature fails)
    forged = text.replace(as_json["chain"], "00" * 32)
    code, out, _ = facility.admin("audit", "verify", "--against", forged)
    assert code == 1
    assert "published checkpoint" in out
    assert "signature" in out


def test_verify_against_rejects_a_log_rewritten_since(facility: Facility, tmp_path: Path) -> None:
    _fill(facility, time.time(), 20, "py101")
    saved = tmp_path / "published.txt"
    saved.write_text(facility.must("audit", "checkpoint"))
    # The log (and its sink) are replaced by a fresh one signed with the same key:
    # everything verifies on its own, but not against what was published.
    for path in _segments(facility):
        path.unlink()
    facility.home.checkpoint_sink(facility.home.load_config()).unlink()
    _fill(facility, time.time(), 20, "py101")
    facility.must("audit", "verify")
    code, out, _ = facility.admin("audit", "verify", "--against", str(saved))
    assert code == 1
    assert "published checkpoint" in out


def test_checkpoint_refuses_garbage_given_to_against(facility: Facility) -> None:
    _fill(facility, time.time(), 3, "py101")
    code, _, err = facility.admin("audit", "verify", "--against", "not a checkpoint")
    assert code == 2
    assert "audit checkpoint" in err


# -- legal holds ---------------------------------------------------------------------------


def test_hold_add_list_remove_are_recorded(facility: Facility) -> None:
    out = facility.must("audit", "hold", "add", "--session", "py101", "--reason", "case 17")
    assert "Placed legal hold legal-1 on session py101" in out
    now = dt.datetime.now(dt.UTC)
    facility.must(
        "audit", "hold", "add", "--from", iso(now - dt.timedelta(days=3)),
        "--until", iso(now), "--reason", "incident 4",
    )  # fmt: skip
    listed = json.loads(facility.must("audit", "hold", "list", "--json"))
    assert [h["id"] for h in listed] == ["legal-1", "legal-2"]
    assert listed[0]["session"] == "py101"
    assert listed[1]["until"] == iso(now)
    assert "legal-2: records from" in facility.must("audit", "hold", "list")
    facility.must("audit", "hold", "remove", "legal-1", "--reason", "case closed")
    listed = json.loads(facility.must("audit", "hold", "list", "--json"))
    assert [h["id"] for h in listed] == ["legal-2"]
    events = [r for r in facility.audit_records() if r["kind"] == "audit.legal_hold"]
    assert [(e["decision"], e.get("session")) for e in events] == [
        ("placed", "py101"),
        ("placed", None),
        ("lifted", "py101"),
    ]
    assert "case 17" in events[0]["detail"]
    assert "case closed" in events[2]["detail"]
    assert all(e["actor"].startswith("admin:") for e in events)
    facility.must("audit", "verify")


def test_hold_refusals_say_why(facility: Facility) -> None:
    code, _, err = facility.admin("audit", "hold", "add", "--reason", "x")
    assert code == 2
    assert "--session" in err
    code, _, err = facility.admin("audit", "hold", "remove", "legal-9", "--reason", "x")
    assert code == 2
    assert "no legal hold legal-9" in err
    assert "hold list" in err
    code, _, err = facility.admin(
        "audit", "hold", "add", "--from", "2026-05-02T00:00Z", "--until", "2026-05-01T00:00Z",
        "--reason", "x",
    )  # fmt: skip
    assert code == 2
    assert "before" in err


# -- retention -------------------------------------------------------------------------------


@pytest.fixture
def aged(facility: Facility) -> tuple[Facility, float]:
    """A log of four phases (sessions old-a, held, old-b, recent), several segments
    each; returns the facility and a 'now' at which the first three are expired."""
    _small_segments(facility)
    base = time.time()
    _fill(facility, base + 100 * DAY, 120, "old-a")
    _fill(facility, base + 200 * DAY, 120, "held")
    _fill(facility, base + 300 * DAY, 120, "old-b")
    _fill(facility, base + 900 * DAY, 40, "recent")
    return facility, base + 1000 * DAY


def _when(seconds: float) -> str:
    return iso(dt.datetime.fromtimestamp(seconds, dt.UTC))


def test_retention_dry_run_removes_nothing(aged: tuple[Facility, float]) -> None:
    facility, now = aged
    before = {p.name: p.read_bytes() for p in _segments(facility)}
    out = facility.must("audit", "retention", "--now", _when(now))
    assert "would remove" in out
    assert "retention --apply" in out
    assert {p.name: p.read_bytes() for p in _segments(facility)} == before
    # Without --now, nothing here is a year old yet.
    assert "Nothing to remove." in facility.must("audit", "retention")


def test_retention_keeps_held_segments_and_verify_explains_the_gaps(
    aged: tuple[Facility, float],
) -> None:
    facility, now = aged
    facility.must("audit", "hold", "add", "--session", "held", "--reason", "case 17")
    before = _segments(facility)
    spans = {p.name: _sessions_and_newest(p) for p in before}
    out = facility.must("audit", "retention", "--apply", "--now", _when(now))
    assert "Removed records 1-" in out
    after = {p.name for p in _segments(facility)}
    removed = [p.name for p in before if p.name not in after]
    assert removed, out
    cutoff = now - 365 * DAY
    for name, (sessions, newest) in spans.items():
        if name in removed:
            assert newest < cutoff, name
            assert "held" not in sessions, name
        elif name != before[-1].name:
            assert newest >= cutoff or "held" in sessions, name
    assert any("held" in spans[n][0] for n in after)
    # A gap at the start (old-a) and one in the middle (old-b), each with a tombstone.
    tombs = sorted((facility.home.audit_dir / "tombstones").glob("*.tomb"))
    assert len(tombs) == 2
    assert tombs[0].name.startswith("00000000000000000001-")
    report = json.loads(facility.must("audit", "verify", "--json"))
    assert report["ok"] is True, report["problem"]
    assert [g["tombstone"] for g in report["gaps"]] == [f"tombstones/{t.name}" for t in tombs]
    assert next(g["first"] for g in report["gaps"]) == 1
    assert "gap: records 1-" in facility.must("audit", "verify")
    events = [r for r in facility.audit_records() if r["kind"] == "audit.removed"]
    assert len(events) == 1
    assert all(t.name in events[0]["detail"] for t in tombs)
    # Running it again finds nothing more to remove.
    assert "Nothing to remove." in facility.must(
        "audit", "retention", "--apply", "--now", _when(now)
    )


def test_retention_keeps_a_held_time_range(aged: tuple[Facility, float]) -> None:
    facility, now = aged
    old_b = now - 700 * DAY  # base + 300 days: the old-b phase
    facility.must(
        "audit", "hold", "add", "--from", _when(old_b), "--until", _when(old_b + 60),
        "--reason", "incident window",
    )  # fmt: skip
    facility.must("audit", "retention", "--apply", "--now", _when(now))
    remaining = [_sessions_and_newest(p)[0] for p in _segments(facility)]
    assert any("old-b" in s for s in remaining)
    assert not any("old-a" in s for s in remaining)
    facility.must("audit", "verify")


def test_an_interrupted_retention_run_still_verifies_and_is_finished(
    aged: tuple[Facility, float],
) -> None:
    """Crash after the tombstone is durable but before every segment is deleted."""
    facility, now = aged
    segments = _segments(facility)
    saved = {p.name: p.read_bytes() for p in segments}
    facility.must("audit", "retention", "--apply", "--now", _when(now))
    gone = [name for name in saved if not (facility.home.audit_dir / "segments" / name).exists()]
    assert len(gone) >= 2
    (facility.home.audit_dir / "segments" / gone[-1]).write_bytes(saved[gone[-1]])
    out = facility.must("audit", "verify")
    assert "a retention run was interrupted" in out
    out = facility.must("audit", "retention", "--apply", "--now", _when(now))
    assert gone[-1] in out
    assert not (facility.home.audit_dir / "segments" / gone[-1]).exists()
    assert "interrupted" not in facility.must("audit", "verify")


def test_retention_refuses_a_log_that_does_not_verify(aged: tuple[Facility, float]) -> None:
    facility, now = aged
    before = [p.name for p in _segments(facility)]
    _flip_in_an_event(facility)
    code, _, err = facility.admin("audit", "retention", "--apply", "--now", _when(now))
    assert code == 2
    assert "refused" in err
    assert "does not verify" in err
    assert [p.name for p in _segments(facility)] == before


def test_retention_with_retain_days_0_keeps_everything(aged: tuple[Facility, float]) -> None:
    facility, now = aged
    path = facility.home.relay_toml
    path.write_text(path.read_text().replace("[audit]\n", "[audit]\nretain_days = 0\n", 1))
    out = facility.must("audit", "retention", "--apply", "--now", _when(now))
    assert "nothing is removed" in out


@pytest.mark.integration
async def test_retention_while_the_relay_runs(facility: Facility) -> None:
    _small_segments(facility)
    base = time.time()
    await asyncio.to_thread(_fill, facility, base - 800 * DAY, 150, "old-a")
    from relay.server import running_relay

    async with running_relay(
        facility.home, outside=("127.0.0.1", 0), inside=("127.0.0.1", 0)
    ) as relay:
        assert isinstance(relay, Relay)
        code, out, err = await asyncio.to_thread(facility.admin, "audit", "retention", "--apply")
        assert code == 0, err
        assert "Removed records " in out  # not record 1: the facility's setup is recent
        code, out, err = await asyncio.to_thread(facility.admin, "audit", "verify")
        assert code == 0, out + err
        assert re.search(r"gap: records \d+-\d+ were removed", out)
    facility.must("audit", "verify")
    reader = AuditReader(facility.home.audit_dir)
    kinds = [r.kind for r in reader.records()]
    assert "audit.removed" in kinds
