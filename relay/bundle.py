"""Credential bundles: one file a person or machine carries to connect to the relay.

A bundle is a text file: a few ``Key: value`` header lines, then PEM blocks in this
order: the holder's certificate, its private key, the facility CA certificate. Because
it is plain PEM after the header, ``ssl.SSLContext.load_cert_chain`` reads it directly
and standard tools (openssl, curl) can use it too. It is written with mode 0600.

A staff bundle also carries the staff audit key (a last PEM block labelled
``CLASSROOM RELAY AUDIT KEY``, which OpenSSL skips) and the relay's audit signing key
(header ``Audit-Signing-Key``), so staff can read and verify the audit log.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from relay.audit_keys import (
    parse_signing_public_text,
    parse_staff_key_block,
    signing_public_text,
    staff_key_block,
)
from relay.errors import CredentialError
from relay.identity import Role, valid_name

BUNDLE_FORMAT = "1"


@dataclass(frozen=True, slots=True)
class Bundle:
    name: str
    role: Role
    relay_url: str
    facility: str
    cert_pem: str
    key_pem: str = field(repr=False)
    ca_pem: str
    classroom: str | None = None
    audit_key: X25519PrivateKey | None = field(default=None, repr=False, compare=False)
    """Staff bundles: the staff audit key, to read the audit log's contents."""
    audit_signing_key: Ed25519PublicKey | None = field(default=None, compare=False)
    """Staff bundles: the relay's audit signing key, pinned when the bundle was made."""

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise CredentialError(f"bundle name {self.name!r} is not a valid name")
        if (self.role is Role.MACHINE) != (self.classroom is not None):
            raise CredentialError("a machine bundle names its classroom; others do not")
        if (self.audit_key is not None) and self.role is not Role.STAFF:
            raise CredentialError("only a staff bundle carries the audit key")
        if not self.relay_url.startswith("wss://"):
            raise CredentialError(f"bundle relay address {self.relay_url!r} must start with wss://")

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem.encode())

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    def to_text(self) -> str:
        cert = self.certificate
        lines = [
            "# classroom-relay credential bundle. Keep this file secret: it holds a private key.",
            f"Bundle-Format: {BUNDLE_FORMAT}",
            f"Name: {self.name}",
            f"Role: {self.role.value}",
        ]
        if self.classroom is not None:
            lines.append(f"Classroom: {self.classroom}")
        lines += [
            f"Relay-URL: {self.relay_url}",
            f"Facility: {self.facility}",
            f"Valid-From: {cert.not_valid_before_utc.isoformat()}",
            f"Valid-Until: {cert.not_valid_after_utc.isoformat()}",
        ]
        if self.audit_signing_key is not None:
            lines.append(f"Audit-Signing-Key: {signing_public_text(self.audit_signing_key)}")
        lines.append("")
        audit = staff_key_block(self.audit_key) if self.audit_key is not None else ""
        return "\n".join(lines) + self.cert_pem + self.key_pem + self.ca_pem + audit

    def client_ssl_context(self, path: Path) -> ssl.SSLContext:
        """A TLS 1.3 client context presenting this bundle and trusting only the facility CA.

        ``path`` must be this bundle's file (OpenSSL loads the key from a file).
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=self.ca_pem)
        try:
            ctx.load_cert_chain(str(path))
        except (ssl.SSLError, OSError) as exc:
            raise CredentialError(
                f"could not load the certificate and key from bundle {path}: {exc}. "
                "Ask the facility administrator for a new bundle."
            ) from exc
        return ctx


def write_bundle(path: Path, bundle: Bundle, *, overwrite: bool = False) -> None:
    """Write ``bundle`` to ``path`` with mode 0600 (never readable by others, even briefly)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise CredentialError(
            f"{path} already exists; choose another --out file or remove the old bundle first"
        ) from exc
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(fd, 0o600)
        f.write(bundle.to_text())


def load_bundle(path: Path) -> Bundle:
    """Read and check a bundle file; errors say what is wrong and what to do."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CredentialError(
            f"bundle file {path} does not exist; pass the file the administrator gave you "
            "with --bundle FILE"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(f"cannot read bundle file {path}: {exc}") from exc
    head, sep, _ = text.partition("-----BEGIN")
    if not sep:
        raise CredentialError(f"{path} is not a classroom-relay bundle (no certificate in it)")
    headers: dict[str, str] = {}
    for line in head.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise CredentialError(f"{path}: header line {line!r} is not 'Key: value'")
        headers[key.strip()] = value.strip()
    if headers.get("Bundle-Format") != BUNDLE_FORMAT:
        raise CredentialError(
            f"{path} is not a classroom-relay bundle of format {BUNDLE_FORMAT} "
            f"(Bundle-Format: {headers.get('Bundle-Format')!r})"
        )
    missing = [k for k in ("Name", "Role", "Relay-URL", "Facility") if k not in headers]
    if missing:
        raise CredentialError(f"{path}: bundle header lacks {', '.join(missing)}")
    pem = text[len(head) :].encode()
    try:
        certs = x509.load_pem_x509_certificates(pem)
        key_block = pem[pem.index(b"-----BEGIN PRIVATE KEY") :]
        private_key = serialization.load_pem_private_key(key_block, None)
    except (ValueError, TypeError) as exc:
        raise CredentialError(
            f"{path}: the certificates or the key in the bundle cannot be read ({exc})"
        ) from exc
    if len(certs) != 2:
        raise CredentialError(
            f"{path}: a bundle holds exactly two certificates (holder, facility CA), "
            f"found {len(certs)}"
        )
    try:
        role = Role(headers["Role"])
    except ValueError as exc:
        raise CredentialError(f"{path}: unknown role {headers['Role']!r}") from exc
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    signing = headers.get("Audit-Signing-Key")
    return Bundle(
        audit_key=parse_staff_key_block(text, str(path)),
        audit_signing_key=(
            parse_signing_public_text(signing, str(path)) if signing is not None else None
        ),
        name=headers["Name"],
        role=role,
        classroom=headers.get("Classroom"),
        relay_url=headers["Relay-URL"],
        facility=headers["Facility"],
        cert_pem=certs[0].public_bytes(serialization.Encoding.PEM).decode(),
        key_pem=key_pem,
        ca_pem=certs[1].public_bytes(serialization.Encoding.PEM).decode(),
    )


__all__ = ["BUNDLE_FORMAT", "Bundle", "load_bundle", "write_bundle"]
