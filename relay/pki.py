"""The facility's certificate authority: keys and certificates. Pure, no file I/O.

Everything uses ECDSA P-256 keys and SHA-256 signatures. The facility CA signs three
kinds of certificates:

- its own (self-signed) CA certificate: ``CA=true, pathlen=0``, 10 years;
- one server certificate per listener (``serverAuth``), with the DNS names and IP
  addresses clients use to reach it, 2 years;
- client certificates (``clientAuth``) for instructors, machines and staff: subject
  ``CN=<name>, OU=<role>, O=<facility>``, a random serial, and a lifetime the
  administrator chooses.

The clock is a parameter everywhere, so the same functions also make certificates that
are already expired (``now`` in the past) and CAs unrelated to the facility
(:func:`create_ca`); the relay's tests use them for refusal cases.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from relay.errors import AccessDenied, CredentialError, ErrorCode
from relay.identity import NAME_RULE, Listener, Role, valid_name

CaKey = ec.EllipticCurvePrivateKey
"""The type of every private key this module makes (ECDSA P-256)."""

CA_VALIDITY = dt.timedelta(days=3652)
SERVER_VALIDITY = dt.timedelta(days=730)
CLOCK_SKEW = dt.timedelta(minutes=5)
"""Certificates are valid from five minutes before they are issued (clock skew)."""

MAX_FACILITY_CHARS = 64
"""Longest facility display name (it becomes the O= of every certificate)."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class CertIdentity:
    """Who a client certificate names. Built only from a certificate the TLS layer verified."""

    name: str
    role: Role
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime

    def valid_at(self, now: dt.datetime) -> bool:
        return self.not_before <= now < self.not_after


# ---------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------


def check_facility_name(facility: str) -> str:
    """Return ``facility`` stripped, or raise :class:`CredentialError` saying what is wrong."""
    text = facility.strip()
    if not text:
        raise CredentialError("the facility name is empty; give a display name with --facility")
    if len(text) > MAX_FACILITY_CHARS:
        raise CredentialError(
            f"the facility name is {len(text)} characters; "
            f"use at most {MAX_FACILITY_CHARS} (--facility)"
        )
    if _CONTROL.search(text):
        raise CredentialError("the facility name contains control characters; use plain text")
    return text


def _aware(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("times given to relay.pki must be timezone-aware")
    return now.astimezone(dt.UTC)


def parse_subject_alt_name(text: str) -> x509.GeneralName:
    """A server name for a certificate: an IP address, or a DNS name (lower-cased).

    Raises :class:`CredentialError` for anything else (wildcards, non-ASCII, URLs).
    """
    candidate = text.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
    try:
        return x509.IPAddress(ipaddress.ip_address(candidate))
    except ValueError:
        pass
    name = candidate.lower().rstrip(".")
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise CredentialError(
            f"{text!r} is neither an IP address nor a DNS name (letters, digits and '-' "
            "in dot-separated labels, no wildcards, no port, no scheme); "
            "give names like relay.example.org or 10.0.0.5"
        )
    return x509.DNSName(name)


def san_text(general_name: x509.GeneralName) -> str:
    """The text form of a DNS name or IP address SAN."""
    if isinstance(general_name, x509.IPAddress | x509.DNSName):
        return str(general_name.value)
    return repr(general_name)


# ---------------------------------------------------------------------------------------
# keys and encodings
# ---------------------------------------------------------------------------------------


def generate_key() -> CaKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: CaKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM. With ``passphrase``: PBES2 (PBKDF2-HMAC-SHA256, 600,000 iterations,
    AES-256-CBC), readable by ``openssl pkey`` and by :func:`load_private_key_pem`."""
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if passphrase is None:
        return _pem("PRIVATE KEY", der)
    if not passphrase:
        raise CredentialError("an empty passphrase cannot protect a key")
    return _pem("ENCRYPTED PRIVATE KEY", _pbes2_encrypt(der, passphrase))


KDF_ITERATIONS = 600_000
"""PBKDF2-HMAC-SHA256 rounds protecting the CA key (OWASP's 2023 recommendation)."""

_OID_PBES2 = "1.2.840.113549.1.5.13"
_OID_PBKDF2 = "1.2.840.113549.1.5.12"
_OID_HMAC_SHA256 = "1.2.840.113549.2.9"
_OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _der_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _der(0x06, bytes(body))


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _der_seq(*parts: bytes) -> bytes:
    return _der(0x30, b"".join(parts))


def _pbes2_encrypt(plain_der: bytes, passphrase: bytes) -> bytes:
    """EncryptedPrivateKeyInfo (RFC 8018 PBES2) around a PKCS#8 PrivateKeyInfo."""
    salt = os.urandom(16)
    iv = os.urandom(16)
    aes_key = hashlib.pbkdf2_hmac("sha256", passphrase, salt, KDF_ITERATIONS, dklen=32)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain_der) + padder.finalize()
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    encrypted = encryptor.update(padded) + encryptor.finalize()
    kdf = _der_seq(
        _der_oid(_OID_PBKDF2),
        _der_seq(
            _der(0x04, salt),
            _der_int(KDF_ITERATIONS),
            _der_seq(_der_oid(_OID_HMAC_SHA256), _der(0x05, b"")),
        ),
    )
    scheme = _der_seq(_der_oid(_OID_AES256_CBC), _der(0x04, iv))
    algorithm = _der_seq(_der_oid(_OID_PBES2), _der_seq(kdf, scheme))
    return _der_seq(algorithm, _der(0x04, encrypted))


def _pem(label: str, der: bytes) -> bytes:
    body = base64.b64encode(der).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode()


def is_encrypted_key_pem(data: bytes) -> bool:
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data


def load_private_key_pem(data: bytes, passphrase: bytes | None, source: str) -> CaKey:
    """Load an ECDSA private key; :class:`CredentialError` names ``source`` and the fix."""
    encrypted = is_encrypted_key_pem(data)
    if encrypted and not passphrase:
        raise CredentialError(
            f"the key {source} is protected by a passphrase and none was given; "
            "set CLASSROOM_RELAY_PASSPHRASE or run the command in a terminal to be asked"
        )
    try:
        key = serialization.load_pem_private_key(data, passphrase if encrypted else None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        if encrypted:
            raise CredentialError(
                f"cannot unlock {source}: the passphrase is wrong; "
                "check CLASSROOM_RELAY_PASSPHRASE or type the passphrase chosen at init"
            ) from exc
        raise CredentialError(
            f"{source} is not a readable private key ({exc}); restore it from your backup"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CredentialError(f"{source} is not an ECDSA key; restore it from your backup")
    return key


def certificate_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as colon-separated upper-case hex (as ``openssl x509`` prints)."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def serial_text(serial: int) -> str:
    """A serial as lower-case hex, the form the registry and ``registry list`` use."""
    return format(serial, "x")


# ---------------------------------------------------------------------------------------
# certificates
# ---------------------------------------------------------------------------------------


def _ski(key: CaKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def _aki(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def create_ca(
    facility: str, now: dt.datetime, *, valid: dt.timedelta = CA_VALIDITY
) -> tuple[CaKey, x509.Certificate]:
    """A new, self-signed facility CA (a fresh key each call: two calls give unrelated CAs)."""
    facility = check_facility_name(facility)
    now = _aware(now)
    key = generate_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{facility} classroom-relay CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, facility),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + valid)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(_ski(key), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _check_within_ca(ca_cert: x509.Certificate, not_after: dt.datetime, what: str) -> None:
    if not_after > ca_cert.not_valid_after_utc:
        raise CredentialError(
            f"the {what} would outlive the facility CA (valid until "
            f"{ca_cert.not_valid_after_utc:%Y-%m-%d}); choose a shorter --valid"
        )


def issue_server_certificate(
    ca_key: CaKey,
    ca_cert: x509.Certificate,
    *,
    listener: Listener,
    names: Sequence[str],
    now: dt.datetime,
    valid: dt.timedelta = SERVER_VALIDITY,
) -> tuple[str, str]:
    """A server certificate for ``listener`` with SANs ``names``: ``(key_pem, cert_pem)``."""
    now = _aware(now)
    if not names:
        raise CredentialError(
            f"the {listener.value} certificate needs at least one DNS name or IP address"
        )
    sans: list[x509.GeneralName] = []
    for name in names:
        san = parse_subject_alt_name(name)
        if san not in sans:
            sans.append(san)
    not_after = min(now + valid, ca_cert.not_valid_after_utc)
    key = generate_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [x509.NameAttribute(NameOID.COMMON_NAME, f"classroom-relay {listener.value}")]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(_ski(key), critical=False)
        .add_extension(_aki(ca_cert), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return private_key_pem(key).decode("ascii"), certificate_pem(cert)


def issue_client_certificate(
    ca_key: CaKey,
    ca_cert: x509.Certificate,
    *,
    name: str,
    role: Role,
    facility: str,
    valid: dt.timedelta,
    now: dt.datetime,
) -> tuple[str, str, int]:
    """A client certificate: ``(key_pem, cert_pem, serial)``; the key is unencrypted PKCS#8.

    Valid from ``now - 5 min`` to ``now + valid``; with ``now`` far enough in the past the
    certificate is already expired.
    """
    now = _aware(now)
    if not valid_name(name):
        raise CredentialError(f"{name!r} is not a valid name: {NAME_RULE}")
    if valid <= dt.timedelta(0):
        raise CredentialError("a certificate lifetime must be positive (--valid 12h, 90d, ...)")
    facility = check_facility_name(facility)
    not_after = now + valid
    _check_within_ca(ca_cert, not_after, "certificate")
    key = generate_key()
    serial = x509.random_serial_number()
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, facility),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(_ski(key), critical=False)
        .add_extension(_aki(ca_cert), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return private_key_pem(key).decode("ascii"), certificate_pem(cert), serial


def check_ca_pair(ca_key: CaKey, ca_cert: x509.Certificate, source: str) -> None:
    """Refuse a CA key that does not belong to the CA certificate."""
    ours = ca_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    theirs = ca_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if ours != theirs:
        raise CredentialError(
            f"the CA key in {source} does not match the CA certificate; "
            "restore both files from the same backup"
        )


# ---------------------------------------------------------------------------------------
# reading a verified client certificate
# ---------------------------------------------------------------------------------------


def _single_attribute(cert: x509.Certificate, oid: x509.ObjectIdentifier, what: str) -> str:
    attrs = cert.subject.get_attributes_for_oid(oid)
    if len(attrs) != 1:
        raise AccessDenied(
            ErrorCode.NOT_REGISTERED,
            f"the certificate subject has {len(attrs)} {what} attributes; exactly one is needed",
        )
    value = attrs[0].value
    if not isinstance(value, str):
        raise AccessDenied(ErrorCode.NOT_REGISTERED, f"the certificate {what} is not text")
    return value


def identity_from_certificate(cert: x509.Certificate) -> CertIdentity:
    """Name, role, serial and validity of a client certificate (already chain-verified).

    Raises ``AccessDenied(NOT_REGISTERED)`` when the certificate is not a classroom-relay
    client certificate: no or several CN/OU, unknown role, invalid name, no clientAuth.
    """
    name = _single_attribute(cert, NameOID.COMMON_NAME, "CN (name)")
    role_text = _single_attribute(cert, NameOID.ORGANIZATIONAL_UNIT_NAME, "OU (role)")
    try:
        role = Role(role_text)
    except ValueError:
        raise AccessDenied(
            ErrorCode.NOT_REGISTERED, f"the certificate role {role_text!r} is not a known role"
        ) from None
    if not valid_name(name):
        raise AccessDenied(ErrorCode.NOT_REGISTERED, "the certificate name is not a valid name")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is None or ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise AccessDenied(
            ErrorCode.NOT_REGISTERED, "the certificate is not a client certificate (no clientAuth)"
        )
    return CertIdentity(
        name=name,
        role=role,
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def identity_from_der(der: bytes) -> CertIdentity:
    """:func:`identity_from_certificate` for the DER bytes ``getpeercert(True)`` returns."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise AccessDenied(
            ErrorCode.NOT_REGISTERED, "the client certificate cannot be parsed"
        ) from None
    return identity_from_certificate(cert)


__all__ = [
    "CA_VALIDITY",
    "CLOCK_SKEW",
    "KDF_ITERATIONS",
    "SERVER_VALIDITY",
    "CaKey",
    "CertIdentity",
    "certificate_pem",
    "check_ca_pair",
    "check_facility_name",
    "create_ca",
    "fingerprint",
    "generate_key",
    "identity_from_certificate",
    "identity_from_der",
    "is_encrypted_key_pem",
    "issue_client_certificate",
    "issue_server_certificate",
    "load_private_key_pem",
    "parse_subject_alt_name",
    "private_key_pem",
    "san_text",
    "serial_text",
]
