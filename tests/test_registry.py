"""relay.registry: PIN hashes, enrolment rules, revocation, persistence, fail-closed reads."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from relay.errors import ErrorCode, RegistryError
from relay.home import FacilityHome, init_facility
from relay.identity import Role
from relay.pki import CertIdentity
from relay.registry import (
    EMPTY_REGISTRY,
    PrincipalStatus,
    RegistrySnapshot,
    RegistryStore,
    check_pin_format,
    decode_registry,
    encode_registry,
    hash_pin,
    verify_pin,
)

NOW = dt.datetime(2026, 5, 9, 12, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(hours=12)
LOCAL = ["localhost", "127.0.0.1"]


@pytest.fixture
def home(tmp_path: Path) -> FacilityHome:
    h = FacilityHome(tmp_path / "facility")
    init_facility(
        h,
        facility="Test",
        outside_names=LOCAL,
        inside_names=LOCAL,
        outside_bind=("127.0.0.1", 8443),
        inside_bind=("127.0.0.1", 8444),
        outside_url="wss://localhost:8443",
        inside_url="wss://localhost:8444",
        passphrase=None,
        now=NOW,
    )
    return h


@pytest.fixture
def store(home: FacilityHome) -> RegistryStore:
    return RegistryStore(home)


def ident(name: str, role: Role, serial: int) -> CertIdentity:
    return CertIdentity(name=name, role=role, serial=serial, not_before=NOW, not_after=LATER)


def enroll(
    store: RegistryStore,
    name: str,
    role: Role = Role.INSTRUCTOR,
    serial: int = 1,
    *,
    classroom: str | None = None,
    renew: bool = False,
) -> None:
    store.enroll(
        name=name,
        role=role,
        classroom=classroom,
        serial=serial,
        not_after=LATER,
        now=NOW,
        renew=renew,
    )


# ---------------------------------------------------------------------------------------
# PINs
# ---------------------------------------------------------------------------------------


def test_pin_hash_format_and_verification() -> None:
    h = hash_pin("4821")
    scheme, n, r, p, salt, digest = h.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16
    raw = base64.b64decode(digest)
    assert len(raw) == 32
    # It is exactly scrypt(pin, salt, n=2**14, r=8, p=1, 32 bytes).
    expected = hashlib.scrypt(b"4821", salt=base64.b64decode(salt), n=2**14, r=8, p=1, dklen=32)
    assert raw == expected
    assert verify_pin("4821", h)
    assert not verify_pin("4822", h)
    assert not verify_pin("", h)
    assert hash_pin("4821") != h  # fresh salt each time


@pytest.mark.parametrize(
    "bad",
    ["", "plain", "scrypt$16384$8$1$!!$!!", "bcrypt$x", "scrypt$3$8$1$AAAAAAAAAAA=$AAAA", "$$$$$"],
)
def test_malformed_hash_never_verifies(bad: str) -> None:
    assert not verify_pin("1234", bad)


@pytest.mark.parametrize("pin", ["123", "1234567890123", "12a4", "12 34", "١٢٣٤", ""])
def test_pin_format_is_4_to_12_ascii_digits(pin: str) -> None:
    with pytest.raises(RegistryError, match="4 to 12 digits"):
        check_pin_format(pin)


# ---------------------------------------------------------------------------------------
# certificates against the registry
# ---------------------------------------------------------------------------------------


def test_unknown_certificates_are_not_registered(store: RegistryStore) -> None:
    enroll(store, "alice", serial=10)
    snap = store.load()
    assert snap.check_certificate(ident("alice", Role.INSTRUCTOR, 10)) is None
    assert snap.check_certificate(ident("bob", Role.INSTRUCTOR, 10)) is ErrorCode.NOT_REGISTERED
    assert snap.check_certificate(ident("alice", Role.STAFF, 10)) is ErrorCode.NOT_REGISTERED
    assert snap.check_certificate(ident("alice", Role.INSTRUCTOR, 11)) is ErrorCode.NOT_REGISTERED
    assert EMPTY_REGISTRY.check_certificate(ident("alice", Role.INSTRUCTOR, 10)) is (
        ErrorCode.NOT_REGISTERED
    )


def test_revoke_refuses_every_serial_at_once(store: RegistryStore) -> None:
    enroll(store, "alice", serial=10)
    enroll(store, "alice", serial=11, renew=True)
    before = store.load()
    assert before.check_certificate(ident("alice", Role.INSTRUCTOR, 10)) is None
    assert before.check_certificate(ident("alice", Role.INSTRUCTOR, 11)) is None
    record = store.revoke("alice", "laptop stolen", now=NOW)
    assert record.status is PrincipalStatus.REVOKED
    assert record.revoked_reason == "laptop stolen"
    assert record.revoked_at == NOW
    after = store.load()
    assert after.check_certificate(ident("alice", Role.INSTRUCTOR, 10)) is ErrorCode.REVOKED
    assert after.check_certificate(ident("alice", Role.INSTRUCTOR, 11)) is ErrorCode.REVOKED
    assert after.check_certificate(ident("alice", Role.INSTRUCTOR, 99)) is (
        ErrorCode.NOT_REGISTERED  # never issued
    )
    # Revoking again changes nothing.
    assert store.revoke("alice", "again", now=LATER) == record


def test_renew_after_revoke_keeps_old_serials_revoked(store: RegistryStore) -> None:
    enroll(store, "m1", Role.MACHINE, 10, classroom="room-a")
    store.revoke("m1", None, now=NOW)
    with pytest.raises(RegistryError, match="was revoked; add --renew"):
        enroll(store, "m1", Role.MACHINE, 11, classroom="room-a")
    enroll(store, "m1", Role.MACHINE, 11, classroom="room-b", renew=True)
    snap = store.load()
    record = snap.principals["m1"]
    assert record.status is PrincipalStatus.ACTIVE
    assert record.serials == (10, 11)
    assert record.revoked_serials == (10,)
    assert record.classroom == "room-b"
    assert record.revoked_reason is None
    assert snap.check_certificate(ident("m1", Role.MACHINE, 10)) is ErrorCode.REVOKED
    assert snap.check_certificate(ident("m1", Role.MACHINE, 11)) is None


def test_enrolment_rules(store: RegistryStore) -> None:
    enroll(store, "alice", serial=1)
    with pytest.raises(RegistryError, match=r"already enrolled.*--renew"):
        enroll(store, "alice", serial=2)
    with pytest.raises(RegistryError, match="already enrolled with role instructor"):
        enroll(store, "alice", Role.MACHINE, 3, classroom="room-a", renew=True)
    with pytest.raises(RegistryError, match="no staff of that name"):
        enroll(store, "carol", Role.STAFF, 4, renew=True)
    with pytest.raises(RegistryError, match="refused name"):
        enroll(store, "Alice Smith", serial=5)
    with pytest.raises(RegistryError, match="--classroom"):
        enroll(store, "m1", Role.MACHINE, 6)
    with pytest.raises(RegistryError, match="already recorded"):
        enroll(store, "alice", serial=1, renew=True)
    assert store.load().principals["alice"].serials == (1,)


def test_revoke_unknown_name(store: RegistryStore) -> None:
    with pytest.raises(RegistryError, match="nobody of that name"):
        store.revoke("ghost", None)


# ---------------------------------------------------------------------------------------
# persistence
# ---------------------------------------------------------------------------------------


def test_round_trip_through_the_file(store: RegistryStore, home: FacilityHome) -> None:
    big_serial = 2**158 + 12345
    enroll(store, "alice", serial=big_serial)
    enroll(store, "m1", Role.MACHINE, 7, classroom="room-a")
    enroll(store, "sam", Role.STAFF, 8)
    store.revoke("sam", "left the job", now=NOW)
    store.add_learner("l1001", pin="1234", display_name="Sam S.", now=NOW)
    snap = RegistryStore(home).load()
    assert snap == decode_registry(encode_registry(snap), "x")
    assert snap.principals["alice"].serials == (big_serial,)
    assert snap.principals["m1"].classroom == "room-a"
    assert snap.principals["sam"].revoked_at == NOW
    assert snap.learners["l1001"].display_name == "Sam S."
    assert snap.learners["l1001"].added_at == NOW
    doc = json.loads(home.registry_file.read_text())
    assert doc["format"] == 1
    assert doc["principals"]["alice"]["serials"] == [format(big_serial, "x")]
    assert doc["principals"]["alice"]["enrolled_at"] == "2026-05-09T12:00:00Z"
    assert "1234" not in home.registry_file.read_text()
    assert stat.S_IMODE(home.registry_file.stat().st_mode) == 0o600
    with pytest.raises(TypeError):
        snap.principals["x"] = snap.principals["alice"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "corrupt"),
        ("[]", "must be an object"),
        ('{"format": 2, "principals": {}, "learners": {}}', "format 2"),
        ('{"format": 1, "principals": {}}', "lacks learners"),
        (
            '{"format": 1, "learners": {}, "principals": {"a": {"role": "god"}}}',
            "principal 'a' lacks",
        ),
    ],
)
def test_corrupt_registry_is_an_error_naming_the_file(
    home: FacilityHome, content: str, problem: str
) -> None:
    home.registry_file.write_text(content)
    with pytest.raises(RegistryError, match=problem) as info:
        RegistryStore(home).load()
    assert str(home.registry_file) in str(info.value)
    assert "refuses every connection" in str(info.value)


def _doc_with(principal: dict[str, object]) -> str:
    return json.dumps({"format": 1, "learners": {}, "principals": {"alice": principal}})


GOOD_PRINCIPAL: dict[str, object] = {
    "role": "instructor",
    "classroom": None,
    "serials": ["0a"],
    "revoked_serials": [],
    "status": "active",
    "enrolled_at": "2026-05-09T12:00:00Z",
    "expires_at": "2026-05-10T00:00:00Z",
    "revoked_at": None,
    "revoked_reason": None,
}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"role": "janitor"}, "unknown role"),
        ({"status": "maybe"}, "unknown role or status"),
        ({"serials": ["0xA"]}, "hex serial"),
        ({"serials": [10]}, "hex serial"),
        ({"serials": []}, "at least one"),
        ({"revoked_serials": ["0b"]}, "revoked serials"),
        ({"classroom": "room-a"}, "machine has a classroom"),
        ({"enrolled_at": "yesterday"}, "ISO 8601"),
        ({"expires_at": "2026-05-10T00:00:00"}, "no timezone"),
        ({"extra": 1}, "unknown field"),
    ],
)
def test_invalid_principal_fields(
    home: FacilityHome, change: dict[str, object], problem: str
) -> None:
    home.registry_file.write_text(_doc_with({**GOOD_PRINCIPAL, **change}))
    with pytest.raises(RegistryError, match=problem):
        RegistryStore(home).load()


def test_good_principal_document_loads(home: FacilityHome) -> None:
    home.registry_file.write_text(_doc_with(GOOD_PRINCIPAL))
    snap = RegistryStore(home).load()
    assert snap.check_certificate(ident("alice", Role.INSTRUCTOR, 10)) is None


def test_missing_registry_fails_closed(home: FacilityHome) -> None:
    home.registry_file.unlink()
    store = RegistryStore(home)
    with pytest.raises(RegistryError, match="missing"):
        store.load()
    with pytest.raises(RegistryError, match="missing"):
        store.load_if_changed()


def test_load_if_changed_caches_and_notices_changes(
    store: RegistryStore, home: FacilityHome
) -> None:
    first = store.load_if_changed()
    assert store.load_if_changed() is first  # unchanged file: same object, no re-read
    other = RegistryStore(home)
    enroll(other, "alice", serial=1)
    second = store.load_if_changed()
    assert second is not first
    assert "alice" in second.principals
    # A broken file raises every time; the old snapshot is never used again.
    home.registry_file.write_text("{")
    with pytest.raises(RegistryError):
        store.load_if_changed()
    with pytest.raises(RegistryError):
        store.load_if_changed()
    enroll_text = encode_registry(second)
    home.registry_file.write_text(enroll_text)
    assert store.load_if_changed() == second


def test_load_if_changed_sees_same_size_rewrite(store: RegistryStore, home: FacilityHome) -> None:
    enroll(store, "aa", serial=1)
    cached = store.load_if_changed()
    text = home.registry_file.read_text()
    st = home.registry_file.stat()
    # Same size, same mtime, but replaced (new inode): still noticed.
    tmp = home.registry_file.with_suffix(".new")
    tmp.write_text(text.replace('"aa"', '"bb"'))
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, home.registry_file)
    assert "bb" in store.load_if_changed().principals
    assert cached is not store.load_if_changed()


# ---------------------------------------------------------------------------------------
# learners
# ---------------------------------------------------------------------------------------


def test_learners(store: RegistryStore) -> None:
    record = store.add_learner("l1001", pin="1234", display_name=None, now=NOW)
    assert record.display_name == "l1001"
    with pytest.raises(RegistryError, match="already exists"):
        store.add_learner("l1001", pin="9999", display_name=None, now=NOW)
    snap = store.load()
    assert snap.check_learner_pin("l1001", "1234")
    assert not snap.check_learner_pin("l1001", "4321")
    assert not snap.check_learner_pin("nobody", "1234")
    store.set_pin("l1001", "987654")
    snap = store.load()
    assert not snap.check_learner_pin("l1001", "1234")
    assert snap.check_learner_pin("l1001", "987654")
    store.remove_learner("l1001")
    assert "l1001" not in store.load().learners
    with pytest.raises(RegistryError, match="no such learner"):
        store.remove_learner("l1001")
    with pytest.raises(RegistryError, match="no such learner"):
        store.set_pin("l1001", "1234")


@pytest.mark.parametrize(
    ("learner_id", "name", "problem"),
    [("L 1", None, "learner id"), ("l1", "x" * 65, "limit is 64"), ("l1", "a\x07b", "control")],
)
def test_learner_values_are_checked(
    store: RegistryStore, learner_id: str, name: str | None, problem: str
) -> None:
    with pytest.raises(RegistryError, match=problem):
        store.add_learner(learner_id, pin="1234", display_name=name, now=NOW)


def test_snapshot_type_is_read_only() -> None:
    assert isinstance(EMPTY_REGISTRY, RegistrySnapshot)
    assert dict(EMPTY_REGISTRY.principals) == {}
