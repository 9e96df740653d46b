"""The registry: who may connect (instructors, machines, staff) and which learners exist.

``registry.json`` in the facility home is the single source of truth. The CLI changes it
under the home's lock and replaces it atomically; the relay reads it (cheaply, only when
the file changed) for every new connection. A registry that cannot be read is an error,
never an empty registry: the relay fails closed.

File format (version 1)::

    {"format": 1,
     "principals": {"alice": {"role": "instructor", "classroom": null,
                              "serials": ["5f1c..."], "revoked_serials": [],
                              "status": "active", "enrolled_at": "2026-05-09T07:35:25Z",
                              "expires_at": "2026-05-09T19:35:25Z",
                              "revoked_at": null, "revoked_reason": null}},
     "learners": {"l1001": {"display_name": "Sam", "added_at": "2026-05-09T07:35:25Z",
                            "pin_hash": "scrypt$16384$8$1$<salt>$<hash>"}}}

Serials are lower-case hex strings. Every certificate ever issued for a name is listed in
``serials``; revoking a name puts all of them into ``revoked_serials`` for good, even if
the name is enrolled again later.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from relay.errors import ErrorCode, RegistryError
from relay.home import FacilityHome, atomic_write, parse_utc_text, utc_text
from relay.identity import NAME_RULE, Role, valid_name
from relay.pki import CertIdentity, serial_text

REGISTRY_FORMAT = 1

PIN_PATTERN = re.compile(r"^[0-9]{4,12}$")
PIN_RULE = "4 to 12 digits"
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_SALT_BYTES = 16
SCRYPT_HASH_BYTES = 32
_SCRYPT_MAXMEM = 64 * 1024 * 1024
_MAX_SCRYPT_N = 2**20
MAX_DISPLAY_NAME_CHARS = 64
MAX_REASON_CHARS = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class PrincipalStatus(enum.Enum):
    ACTIVE = "active"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class PrincipalRecord:
    """An enrolled instructor, machine or staff member (a certificate holder)."""

    name: str
    role: Role
    classroom: str | None
    serials: tuple[int, ...]
    revoked_serials: tuple[int, ...]
    status: PrincipalStatus
    enrolled_at: dt.datetime
    expires_at: dt.datetime
    revoked_reason: str | None
    revoked_at: dt.datetime | None = None

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise ValueError(f"principal name {self.name!r} is not valid: {NAME_RULE}")
        if (self.role is Role.MACHINE) != (self.classroom is not None):
            raise ValueError(f"{self.name}: a machine has a classroom; other principals have none")
        if self.classroom is not None and not valid_name(self.classroom):
            raise ValueError(f"{self.name}: classroom {self.classroom!r} is not valid")
        if not self.serials:
            raise ValueError(f"{self.name}: a principal has at least one certificate serial")
        if not set(self.revoked_serials) <= set(self.serials):
            raise ValueError(f"{self.name}: revoked serials must be serials issued to it")

    @property
    def active(self) -> bool:
        return self.status is PrincipalStatus.ACTIVE

    def expired(self, now: dt.datetime) -> bool:
        return now >= self.expires_at


@dataclass(frozen=True, slots=True)
class LearnerRecord:
    """A learner. Learners have no certificate: they sign in on a machine with id + PIN."""

    id: str
    pin_hash: str
    display_name: str
    added_at: dt.datetime

    def __post_init__(self) -> None:
        if not valid_name(self.id):
            raise ValueError(f"learner id {self.id!r} is not valid: {NAME_RULE}")
        if _parse_pin_hash(self.pin_hash) is None:
            raise ValueError(f"learner {self.id}: the PIN hash is not in the scrypt$... form")


# ---------------------------------------------------------------------------------------
# PINs
# ---------------------------------------------------------------------------------------


def check_pin_format(pin: str) -> None:
    if not PIN_PATTERN.match(pin):
        raise RegistryError(f"refused PIN: a PIN is {PIN_RULE} (nothing else); choose another")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_pin(pin: str) -> str:
    """``scrypt$16384$8$1$<salt b64>$<hash b64>`` with a fresh 16-byte salt."""
    check_pin_format(pin)
    salt = secrets.token_bytes(SCRYPT_SALT_BYTES)
    digest = hashlib.scrypt(
        pin.encode("ascii"),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        dklen=SCRYPT_HASH_BYTES,
        maxmem=_SCRYPT_MAXMEM,
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _parse_pin_hash(pin_hash: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = pin_hash.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        digest = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        return None
    if not (2 <= n <= _MAX_SCRYPT_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        return None
    if len(salt) < 8 or len(digest) < 16:
        return None
    return n, r, p, salt, digest


_DUMMY_SALT = b"\x00" * SCRYPT_SALT_BYTES


def verify_pin(pin: str, pin_hash: str) -> bool:
    """True when ``pin`` matches ``pin_hash``; constant-time comparison, False for a
    malformed hash (fail closed). Costs one scrypt (~50 ms of CPU): run it off the event loop.
    """
    parsed = _parse_pin_hash(pin_hash)
    if parsed is None:
        return False
    n, r, p, salt, digest = parsed
    try:
        candidate = hashlib.scrypt(
            pin.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=len(digest), maxmem=_SCRYPT_MAXMEM
        )
    except ValueError:
        return False
    return hmac.compare_digest(candidate, digest)


def _burn_pin_check(pin: str) -> None:
    """Spend the time of a real check, so an unknown learner id takes as long as a wrong PIN."""
    hashlib.scrypt(
        pin.encode("utf-8"),
        salt=_DUMMY_SALT,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        dklen=SCRYPT_HASH_BYTES,
        maxmem=_SCRYPT_MAXMEM,
    )


# ---------------------------------------------------------------------------------------
# snapshot: what the relay consults
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """The registry at one moment. Read-only mappings."""

    principals: Mapping[str, PrincipalRecord]
    learners: Mapping[str, LearnerRecord]

    def check_certificate(self, ident: CertIdentity) -> ErrorCode | None:
        """None when the (chain-verified) certificate is admitted; otherwise why not.

        NOT_REGISTERED: unknown name, role other than enrolled, or a serial never issued
        to that name. REVOKED: the name is revoked or this serial was revoked.
        """
        record = self.principals.get(ident.name)
        if record is None or record.role is not ident.role:
            return ErrorCode.NOT_REGISTERED
        if ident.serial in record.revoked_serials:
            return ErrorCode.REVOKED
        if ident.serial not in record.serials:
            return ErrorCode.NOT_REGISTERED
        if record.status is not PrincipalStatus.ACTIVE:
            return ErrorCode.REVOKED
        return None

    def principal(self, name: str) -> PrincipalRecord | None:
        return self.principals.get(name)

    def check_learner_pin(self, learner_id: str, pin: str) -> bool:
        """True when the learner exists and the PIN is right. Takes the same time for an
        unknown learner as for a wrong PIN. Costs one scrypt: run it off the event loop."""
        record = self.learners.get(learner_id)
        if record is None:
            _burn_pin_check(pin)
            return False
        return verify_pin(pin, record.pin_hash)

    def check_enrollment(
        self, *, name: str, role: Role, classroom: str | None, renew: bool
    ) -> PrincipalRecord | None:
        """Refuse (RegistryError) an enrolment that is not allowed; return the existing
        record when this is a renewal, None for a new name."""
        if not valid_name(name):
            raise RegistryError(f"refused name {name!r}: a name is {NAME_RULE}")
        if (role is Role.MACHINE) != (classroom is not None):
            raise RegistryError("a machine is enrolled with --classroom ROOM; others without")
        if classroom is not None and not valid_name(classroom):
            raise RegistryError(f"refused classroom {classroom!r}: a classroom name is {NAME_RULE}")
        existing = self.principals.get(name)
        if existing is None:
            if renew:
                raise RegistryError(
                    f"cannot renew {name}: no {role.value} of that name is enrolled; "
                    "enrol it without --renew"
                )
            return None
        if existing.role is not role:
            raise RegistryError(
                f"refused: {name} is already enrolled with role {existing.role.value} "
                "(names are unique across instructors, machines and staff); choose another name"
            )
        if not renew:
            if existing.active:
                raise RegistryError(
                    f"{name} is already enrolled (certificate valid until "
                    f"{existing.expires_at:%Y-%m-%d %H:%M} UTC); add --renew to issue a new "
                    "certificate (the old one stays valid until it expires; revoke first to "
                    "stop it)"
                )
            raise RegistryError(
                f"{name} was revoked; add --renew to enrol it again with a new certificate "
                "(its old certificates stay revoked)"
            )
        return existing


def _frozen_snapshot(
    principals: dict[str, PrincipalRecord], learners: dict[str, LearnerRecord]
) -> RegistrySnapshot:
    return RegistrySnapshot(MappingProxyType(dict(principals)), MappingProxyType(dict(learners)))


EMPTY_REGISTRY = _frozen_snapshot({}, {})


# ---------------------------------------------------------------------------------------
# the file
# ---------------------------------------------------------------------------------------


def empty_registry_text() -> str:
    return encode_registry(EMPTY_REGISTRY)


def encode_registry(snapshot: RegistrySnapshot) -> str:
    principals: dict[str, Any] = {}
    for name in sorted(snapshot.principals):
        p = snapshot.principals[name]
        principals[name] = {
            "role": p.role.value,
            "classroom": p.classroom,
            "serials": [serial_text(s) for s in p.serials],
            "revoked_serials": [serial_text(s) for s in p.revoked_serials],
            "status": p.status.value,
            "enrolled_at": utc_text(p.enrolled_at),
            "expires_at": utc_text(p.expires_at),
            "revoked_at": utc_text(p.revoked_at) if p.revoked_at else None,
            "revoked_reason": p.revoked_reason,
        }
    learners: dict[str, Any] = {}
    for learner_id in sorted(snapshot.learners):
        lr = snapshot.learners[learner_id]
        learners[learner_id] = {
            "display_name": lr.display_name,
            "added_at": utc_text(lr.added_at),
            "pin_hash": lr.pin_hash,
        }
    doc = {"format": REGISTRY_FORMAT, "principals": principals, "learners": learners}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


class _Bad(Exception):
    pass


def _obj(value: object, what: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(f"{what} must be an object")
    missing = sorted(keys - set(value))
    if missing:
        raise _Bad(f"{what} lacks {', '.join(missing)}")
    extra = sorted(set(value) - keys)
    if extra:
        raise _Bad(f"{what} has unknown field(s) {', '.join(extra)}")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _Bad(f"{what} must be a string")
    return value


def _serials(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise _Bad(f"{what} must be a list of hex strings")
    out: list[int] = []
    for item in value:
        if not isinstance(item, str) or not re.fullmatch(r"[0-9a-f]{1,40}", item):
            raise _Bad(f"{what} holds {item!r}, which is not a lower-case hex serial")
        out.append(int(item, 16))
    return tuple(out)


def _time(value: object, what: str) -> dt.datetime:
    try:
        return parse_utc_text(value, what)
    except ValueError as exc:
        raise _Bad(str(exc)) from None


_PRINCIPAL_KEYS = {
    "role",
    "classroom",
    "serials",
    "revoked_serials",
    "status",
    "enrolled_at",
    "expires_at",
    "revoked_at",
    "revoked_reason",
}
_LEARNER_KEYS = {"display_name", "added_at", "pin_hash"}


def decode_registry(text: str, source: str) -> RegistrySnapshot:
    """Parse registry.json; any problem is a :class:`RegistryError` naming ``source``."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise RegistryError(
            f"the registry {source} is corrupt ({exc}); the relay refuses every connection "
            "until it is fixed: restore it from the backup"
        ) from None
    try:
        doc = _obj(doc, "the document", {"format", "principals", "learners"})
        if doc["format"] != REGISTRY_FORMAT:
            raise _Bad(
                f"format {doc['format']!r} is not {REGISTRY_FORMAT}; "
                "this version of classroom-relay cannot read it"
            )
        principals: dict[str, PrincipalRecord] = {}
        raw_principals = doc["principals"]
        if not isinstance(raw_principals, dict):
            raise _Bad("'principals' must be an object")
        for name, raw in raw_principals.items():
            what = f"principal {name!r}"
            p = _obj(raw, what, _PRINCIPAL_KEYS)
            try:
                role = Role(p["role"])
                status = PrincipalStatus(p["status"])
            except ValueError:
                raise _Bad(f"{what} has an unknown role or status") from None
            classroom = p["classroom"]
            if classroom is not None:
                classroom = _text(classroom, f"{what} classroom")
            reason = p["revoked_reason"]
            if reason is not None:
                reason = _text(reason, f"{what} revoked_reason")
            revoked_at = p["revoked_at"]
            try:
                principals[name] = PrincipalRecord(
                    name=name,
                    role=role,
                    classroom=classroom,
                    serials=_serials(p["serials"], f"{what} serials"),
                    revoked_serials=_serials(p["revoked_serials"], f"{what} revoked_serials"),
                    status=status,
                    enrolled_at=_time(p["enrolled_at"], f"{what} enrolled_at"),
                    expires_at=_time(p["expires_at"], f"{what} expires_at"),
                    revoked_reason=reason,
                    revoked_at=None
                    if revoked_at is None
                    else _time(revoked_at, f"{what} revoked_at"),
                )
            except ValueError as exc:
                raise _Bad(str(exc)) from None
        learners: dict[str, LearnerRecord] = {}
        raw_learners = doc["learners"]
        if not isinstance(raw_learners, dict):
            raise _Bad("'learners' must be an object")
        for learner_id, raw in raw_learners.items():
            what = f"learner {learner_id!r}"
            lr = _obj(raw, what, _LEARNER_KEYS)
            try:
                learners[learner_id] = LearnerRecord(
                    id=learner_id,
                    pin_hash=_text(lr["pin_hash"], f"{what} pin_hash"),
                    display_name=_text(lr["display_name"], f"{what} display_name"),
                    added_at=_time(lr["added_at"], f"{what} added_at"),
                )
            except ValueError as exc:
                raise _Bad(str(exc)) from None
    except _Bad as exc:
        raise RegistryError(
            f"the registry {source} is invalid: {exc}; the relay refuses every connection "
            "until it is fixed: correct it or restore it from the backup"
        ) from None
    return _frozen_snapshot(principals, learners)


def _clean_text(text: str | None, what: str, limit: int) -> str | None:
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    if len(text) > limit:
        raise RegistryError(f"refused {what}: it is {len(text)} characters; the limit is {limit}")
    if _CONTROL.search(text):
        raise RegistryError(f"refused {what}: it contains control characters; use plain text")
    return text


_FileKey = tuple[int, int, int]


class RegistryStore:
    """registry.json of one facility home: cached reads and locked, atomic changes."""

    def __init__(self, home: FacilityHome) -> None:
        self.home = home
        self._cached: tuple[_FileKey, RegistrySnapshot] | None = None

    @property
    def path(self) -> Path:
        return self.home.registry_file

    # -- reading ---------------------------------------------------------------------

    def _stat_key(self) -> _FileKey:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise RegistryError(
                f"the registry {self.path} is missing; the relay refuses every connection "
                "until it is restored from the backup (or the home is created with "
                "'classroom-relay init')"
            ) from None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _read(self) -> tuple[_FileKey, RegistrySnapshot]:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            self._stat_key()  # raises the explanatory error
            raise
        except OSError as exc:
            raise RegistryError(f"cannot read the registry {self.path}: {exc}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise RegistryError(
                f"the registry {self.path} is not UTF-8 text; restore it from the backup"
            ) from None
        return (st.st_mtime_ns, st.st_size, st.st_ino), decode_registry(text, str(self.path))

    def load(self) -> RegistrySnapshot:
        key, snapshot = self._read()
        self._cached = (key, snapshot)
        return snapshot

    def load_if_changed(self) -> RegistrySnapshot:
        """The cached snapshot unless the file's (mtime, size, inode) changed. A corrupt or
        missing file raises every time (never falls back to the old snapshot)."""
        key = self._stat_key()
        cached = self._cached
        if cached is not None and cached[0] == key:
            return cached[1]
        return self.load()

    # -- changing --------------------------------------------------------------------

    def _write_principal(self, snap: RegistrySnapshot, record: PrincipalRecord) -> None:
        """Write ``snap`` with ``record`` added or replaced (under the lock)."""
        principals = {**snap.principals, record.name: record}
        self._write(_frozen_snapshot(principals, dict(snap.learners)))

    def _write_learner(self, snap: RegistrySnapshot, record: LearnerRecord) -> None:
        """Write ``snap`` with ``record`` added or replaced (under the lock)."""
        learners = {**snap.learners, record.id: record}
        self._write(_frozen_snapshot(dict(snap.principals), learners))

    def _write(self, snapshot: RegistrySnapshot) -> None:
        atomic_write(self.path, encode_registry(snapshot).encode("utf-8"))
        self._cached = None

    def enroll(
        self,
        *,
        name: str,
        role: Role,
        classroom: str | None,
        serial: int,
        not_after: dt.datetime,
        now: dt.datetime,
        renew: bool = False,
    ) -> PrincipalRecord:
        """Record a newly issued certificate for ``name``.

        A new name needs ``renew=False``; an enrolled (or revoked) name needs ``renew=True``
        and keeps its revoked serials revoked. A machine's classroom is updated on renewal.
        """
        with self.home.lock():
            snap = self.load()
            existing = snap.check_enrollment(name=name, role=role, classroom=classroom, renew=renew)
            if existing is None:
                record = PrincipalRecord(
                    name=name,
                    role=role,
                    classroom=classroom,
                    serials=(serial,),
                    revoked_serials=(),
                    status=PrincipalStatus.ACTIVE,
                    enrolled_at=now,
                    expires_at=not_after,
                    revoked_reason=None,
                )
            else:
                if serial in existing.serials:
                    raise RegistryError(f"serial {serial_text(serial)} is already recorded")
                record = replace(
                    existing,
                    classroom=classroom,
                    serials=(*existing.serials, serial),
                    status=PrincipalStatus.ACTIVE,
                    enrolled_at=now,
                    expires_at=not_after,
                    revoked_reason=None,
                    revoked_at=None,
                )
            self._write_principal(snap, record)
            return record

    def revoke(
        self, name: str, reason: str | None = None, *, now: dt.datetime | None = None
    ) -> PrincipalRecord:
        """Revoke ``name`` and every certificate issued to it so far. Revoking a revoked
        name again changes nothing and returns its record."""
        when = now if now is not None else dt.datetime.now(dt.UTC)
        reason = _clean_text(reason, "revocation reason", MAX_REASON_CHARS)
        with self.home.lock():
            snap = self.load()
            existing = snap.principals.get(name)
            if existing is None:
                raise RegistryError(
                    f"cannot revoke {name!r}: nobody of that name is enrolled "
                    "(see 'classroom-relay registry list')"
                )
            if not existing.active and set(existing.revoked_serials) == set(existing.serials):
                return existing
            record = replace(
                existing,
                status=PrincipalStatus.REVOKED,
                revoked_serials=existing.serials,
                revoked_reason=reason,
                revoked_at=when,
            )
            self._write_principal(snap, record)
            return record

    def add_learner(
        self, learner_id: str, *, pin: str, display_name: str | None, now: dt.datetime
    ) -> LearnerRecord:
        if not valid_name(learner_id):
            raise RegistryError(f"refused learner id {learner_id!r}: a learner id is {NAME_RULE}")
        shown = _clean_text(display_name, "display name", MAX_DISPLAY_NAME_CHARS) or learner_id
        pin_hash = hash_pin(pin)
        with self.home.lock():
            snap = self.load()
            if learner_id in snap.learners:
                raise RegistryError(
                    f"learner {learner_id} already exists; use 'learner set-pin' to change the "
                    "PIN or choose another id"
                )
            record = LearnerRecord(
                id=learner_id, pin_hash=pin_hash, display_name=shown, added_at=now
            )
            self._write_learner(snap, record)
            return record

    def remove_learner(self, learner_id: str) -> LearnerRecord:
        with self.home.lock():
            snap = self.load()
            record = snap.learners.get(learner_id)
            if record is None:
                raise RegistryError(
                    f"cannot remove learner {learner_id!r}: no such learner "
                    "(see 'classroom-relay learner list')"
                )
            learners = dict(snap.learners)
            del learners[learner_id]
            self._write(_frozen_snapshot(dict(snap.principals), learners))
            return record

    def set_pin(self, learner_id: str, pin: str) -> LearnerRecord:
        pin_hash = hash_pin(pin)
        with self.home.lock():
            snap = self.load()
            existing = snap.learners.get(learner_id)
            if existing is None:
                raise RegistryError(
                    f"cannot set the PIN of {learner_id!r}: no such learner; "
                    "add it with 'classroom-relay learner add'"
                )
            record = replace(existing, pin_hash=pin_hash)
            self._write_learner(snap, record)
            return record


__all__ = [
    "EMPTY_REGISTRY",
    "PIN_RULE",
    "LearnerRecord",
    "PrincipalRecord",
    "PrincipalStatus",
    "RegistrySnapshot",
    "RegistryStore",
    "check_pin_format",
    "decode_registry",
    "empty_registry_text",
    "encode_registry",
    "hash_pin",
    "verify_pin",
]
