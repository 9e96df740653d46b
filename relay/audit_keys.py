"""The audit log's keys, and where they live in the facility home.

* ``keys/audit-signing.key``: the relay's Ed25519 key; it signs checkpoints and
  tombstones. The relay must read it, so it is not passphrase-protected.
* ``keys/audit-signing.pub``: its public half (also in every staff bundle, pinned).
* ``keys/audit-staff.pub``: the staff's X25519 audit public key; data keys are wrapped
  to it, so the relay can write contents it cannot read back.
* ``ca/audit-staff.key``: the staff's private key, kept with the CA key and protected by
  the same passphrase, so that ``enroll staff`` can put it into staff bundles. With
  ``init --no-passphrase`` (demos, tests) it is stored in clear and the relay host can
  read past contents: do not run a facility that way.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from relay.auditlog import key_fingerprint, raw_public
from relay.errors import AuditLogError, CredentialError

KEYS_DIR = "keys"
SIGNING_KEY = "audit-signing.key"
SIGNING_PUB = "audit-signing.pub"
STAFF_PUB = "audit-staff.pub"
STAFF_KEY = "audit-staff.key"
"""In the CA directory."""


@dataclass(frozen=True, slots=True)
class NewAuditKeys:
    """What ``init`` writes: file name (relative to the home) -> bytes."""

    files: dict[str, bytes]
    signing_fingerprint: str
    staff_fingerprint: str


def new_audit_keys(passphrase: bytes | None) -> NewAuditKeys:
    signing = Ed25519PrivateKey.generate()
    staff = X25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pkcs8, pem = serialization.PrivateFormat.PKCS8, serialization.Encoding.PEM
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    files = {
        f"{KEYS_DIR}/{SIGNING_KEY}": signing.private_bytes(
            pem, pkcs8, serialization.NoEncryption()
        ),
        f"{KEYS_DIR}/{SIGNING_PUB}": signing.public_key().public_bytes(pem, spki),
        f"{KEYS_DIR}/{STAFF_PUB}": staff.public_key().public_bytes(pem, spki),
        f"ca/{STAFF_KEY}": staff.private_bytes(pem, pkcs8, encryption),
    }
    return NewAuditKeys(
        files,
        key_fingerprint(raw_public(signing.public_key())),
        key_fingerprint(raw_public(staff.public_key())),
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise AuditLogError(
            f"{what} {path} is missing; restore the facility home from its backup"
        ) from None
    except OSError as exc:
        raise AuditLogError(f"{what} {path} cannot be read: {exc}") from None


def load_signing_key(home_root: Path) -> Ed25519PrivateKey:
    path = home_root / KEYS_DIR / SIGNING_KEY
    key = serialization.load_pem_private_key(_read(path, "the audit signing key"), None)
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditLogError(f"{path} is not an Ed25519 key; restore it from the backup")
    return key


def load_signing_public(home_root: Path) -> Ed25519PublicKey:
    path = home_root / KEYS_DIR / SIGNING_PUB
    key = serialization.load_pem_public_key(_read(path, "the audit signing public key"))
    if not isinstance(key, Ed25519PublicKey):
        raise AuditLogError(f"{path} is not an Ed25519 public key")
    return key


def load_staff_public(home_root: Path) -> X25519PublicKey:
    path = home_root / KEYS_DIR / STAFF_PUB
    key = serialization.load_pem_public_key(_read(path, "the staff audit public key"))
    if not isinstance(key, X25519PublicKey):
        raise AuditLogError(f"{path} is not an X25519 public key")
    return key


def staff_key_path(home_root: Path) -> Path:
    return home_root / "ca" / STAFF_KEY


def staff_key_encrypted(home_root: Path) -> bool:
    return b"ENCRYPTED" in _read(staff_key_path(home_root), "the staff audit key")


def load_staff_private(home_root: Path, passphrase: bytes | None) -> X25519PrivateKey:
    """The staff audit key from the facility home (needs the CA passphrase if set)."""
    path = staff_key_path(home_root)
    data = _read(path, "the staff audit key")
    encrypted = b"ENCRYPTED" in data
    if encrypted and not passphrase:
        raise CredentialError(
            f"the staff audit key {path} is protected by the CA passphrase and none was "
            "given; set CLASSROOM_RELAY_PASSPHRASE, or read the log with a staff bundle "
            "(--bundle FILE)"
        )
    try:
        key = serialization.load_pem_private_key(data, passphrase if encrypted else None)
    except (ValueError, TypeError) as exc:
        raise CredentialError(f"cannot unlock {path}: the passphrase is wrong ({exc})") from None
    if not isinstance(key, X25519PrivateKey):
        raise AuditLogError(f"{path} is not an X25519 key; restore it from the backup")
    return key


# -- the audit key inside a staff bundle ---------------------------------------------------

BUNDLE_LABEL = "CLASSROOM RELAY AUDIT KEY"


def staff_key_block(key: X25519PrivateKey) -> str:
    """The staff audit key as a PEM block with its own label (OpenSSL skips it)."""
    raw = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    body = base64.encodebytes(raw).decode("ascii")
    return f"-----BEGIN {BUNDLE_LABEL}-----\n{body}-----END {BUNDLE_LABEL}-----\n"


def parse_staff_key_block(text: str, source: str) -> X25519PrivateKey | None:
    begin, end = f"-----BEGIN {BUNDLE_LABEL}-----", f"-----END {BUNDLE_LABEL}-----"
    start = text.find(begin)
    if start < 0:
        return None
    stop = text.find(end, start)
    if stop < 0:
        raise CredentialError(f"{source}: the audit key block is not closed")
    try:
        raw = base64.b64decode(text[start + len(begin) : stop], validate=False)
        return X25519PrivateKey.from_private_bytes(raw)
    except ValueError as exc:
        raise CredentialError(
            f"{source}: the audit key in the bundle is unreadable ({exc})"
        ) from None


def signing_public_text(key: Ed25519PublicKey) -> str:
    """How a bundle header and ``audit checkpoint`` write the signing key: base64 raw."""
    return base64.b64encode(raw_public(key)).decode("ascii")


def parse_signing_public_text(text: str, source: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise CredentialError(f"{source}: the audit signing key is unreadable ({exc})") from None
