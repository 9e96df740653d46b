"""relay.pki: the facility CA, server and client certificates, reading identities."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from relay import pki
from relay.errors import AccessDenied, CredentialError, ErrorCode
from relay.identity import Listener, Role

NOW = dt.datetime(2026, 5, 9, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def ca() -> tuple[pki.CaKey, x509.Certificate]:
    return pki.create_ca("Test Facility", NOW)


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def test_ca_is_a_p256_ca_with_pathlen_0_for_ten_years(
    ca: tuple[pki.CaKey, x509.Certificate],
) -> None:
    key, cert = ca
    assert isinstance(key.curve, ec.SECP256R1)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    assert bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign
    assert ku.crl_sign
    assert not ku.digital_signature
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "Test Facility"
    )
    assert cert.not_valid_after_utc - NOW >= dt.timedelta(days=3650)
    assert cert.not_valid_before_utc == NOW - pki.CLOCK_SKEW
    cert.verify_directly_issued_by(cert)


def test_two_cas_are_unrelated(ca: tuple[pki.CaKey, x509.Certificate]) -> None:
    _, mine = ca
    _, other = pki.create_ca("Test Facility", NOW)
    with pytest.raises(InvalidSignature):
        other.verify_directly_issued_by(mine)
    assert pki.fingerprint(mine) != pki.fingerprint(other)


def test_server_certificate_names_and_usage(ca: tuple[pki.CaKey, x509.Certificate]) -> None:
    key, cert = ca
    key_pem, cert_pem = pki.issue_server_certificate(
        key,
        cert,
        listener=Listener.OUTSIDE,
        names=["relay.example.org", "10.0.0.5", "::1", "RELAY.example.org"],
        now=NOW,
    )
    server = _cert(cert_pem)
    server.verify_directly_issued_by(cert)
    assert server.subject.rfc4514_string() == "CN=classroom-relay outside"
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["relay.example.org"]  # deduplicated
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("::1"),
    ]
    assert server.not_valid_after_utc == NOW + pki.SERVER_VALIDITY
    assert b"BEGIN PRIVATE KEY" in key_pem.encode()


@pytest.mark.parametrize("bad", ["*.example.org", "wss://relay", "relay:8443", "", "rélay"])
def test_bad_server_names_are_refused(bad: str) -> None:
    with pytest.raises(CredentialError, match="neither an IP address nor a DNS name"):
        pki.parse_subject_alt_name(bad)


def test_client_certificate_subject_usage_serial_and_validity(
    ca: tuple[pki.CaKey, x509.Certificate],
) -> None:
    key, cert = ca
    key_pem, cert_pem, serial = pki.issue_client_certificate(
        key,
        cert,
        name="alice",
        role=Role.INSTRUCTOR,
        facility="Test Facility",
        valid=dt.timedelta(hours=12),
        now=NOW,
    )
    client = _cert(cert_pem)
    client.verify_directly_issued_by(cert)
    assert client.serial_number == serial > 0
    assert client.subject.rfc4514_string() == "O=Test Facility,OU=instructor,CN=alice"
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not client.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert client.not_valid_before_utc == NOW - dt.timedelta(minutes=5)
    assert client.not_valid_after_utc == NOW + dt.timedelta(hours=12)
    private = serialization.load_pem_private_key(key_pem.encode(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.public_key().public_numbers() == client.public_key().public_numbers()  # type: ignore[union-attr]
    # Serials are random: a second certificate has another one.
    _, _, serial2 = pki.issue_client_certificate(
        key,
        cert,
        name="alice",
        role=Role.INSTRUCTOR,
        facility="Test Facility",
        valid=dt.timedelta(hours=12),
        now=NOW,
    )
    assert serial2 != serial


def test_identity_from_der_reads_name_role_serial(
    ca: tuple[pki.CaKey, x509.Certificate],
) -> None:
    key, cert = ca
    _, cert_pem, serial = pki.issue_client_certificate(
        key,
        cert,
        name="m-101",
        role=Role.MACHINE,
        facility="Test Facility",
        valid=dt.timedelta(days=365),
        now=NOW,
    )
    der = _cert(cert_pem).public_bytes(serialization.Encoding.DER)
    ident = pki.identity_from_der(der)
    assert ident == pki.CertIdentity(
        name="m-101",
        role=Role.MACHINE,
        serial=serial,
        not_before=NOW - pki.CLOCK_SKEW,
        not_after=NOW + dt.timedelta(days=365),
    )
    assert ident.valid_at(NOW)
    assert not ident.valid_at(NOW + dt.timedelta(days=366))


def _custom_cert(
    ca: tuple[pki.CaKey, x509.Certificate],
    attrs: list[x509.NameAttribute[str]],
    eku: list[x509.ObjectIdentifier] | None,
) -> bytes:
    ca_key, ca_cert = ca
    key = pki.generate_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=1))
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


CN = NameOID.COMMON_NAME
OU = NameOID.ORGANIZATIONAL_UNIT_NAME
CLIENT = [ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize(
    ("attrs", "eku", "why"),
    [
        ([x509.NameAttribute(CN, "alice")], CLIENT, "OU"),
        ([x509.NameAttribute(OU, "instructor")], CLIENT, "CN"),
        ([x509.NameAttribute(CN, "alice"), x509.NameAttribute(OU, "janitor")], CLIENT, "role"),
        ([x509.NameAttribute(CN, "Alice!"), x509.NameAttribute(OU, "staff")], CLIENT, "name"),
        (
            [
                x509.NameAttribute(CN, "alice"),
                x509.NameAttribute(OU, "staff"),
                x509.NameAttribute(OU, "instructor"),
            ],
            CLIENT,
            "OU",
        ),
        (
            [x509.NameAttribute(CN, "alice"), x509.NameAttribute(OU, "staff")],
            [ExtendedKeyUsageOID.SERVER_AUTH],
            "clientAuth",
        ),
        ([x509.NameAttribute(CN, "alice"), x509.NameAttribute(OU, "staff")], None, "clientAuth"),
    ],
)
def test_identity_refuses_foreign_certificates(
    ca: tuple[pki.CaKey, x509.Certificate],
    attrs: list[x509.NameAttribute[str]],
    eku: list[x509.ObjectIdentifier] | None,
    why: str,
) -> None:
    with pytest.raises(AccessDenied) as info:
        pki.identity_from_der(_custom_cert(ca, attrs, eku))
    assert info.value.code is ErrorCode.NOT_REGISTERED
    assert why in info.value.detail


def test_identity_refuses_garbage() -> None:
    with pytest.raises(AccessDenied) as info:
        pki.identity_from_der(b"\x30\x03\x02\x01\x00")
    assert info.value.code is ErrorCode.NOT_REGISTERED


def test_expired_certificate_from_a_past_clock(ca: tuple[pki.CaKey, x509.Certificate]) -> None:
    key, cert = ca
    _, cert_pem, _ = pki.issue_client_certificate(
        key,
        cert,
        name="old",
        role=Role.STAFF,
        facility="Test Facility",
        valid=dt.timedelta(hours=1),
        now=NOW - dt.timedelta(days=2),
    )
    assert _cert(cert_pem).not_valid_after_utc < NOW


def test_client_certificate_may_not_outlive_the_ca(
    ca: tuple[pki.CaKey, x509.Certificate],
) -> None:
    key, cert = ca
    with pytest.raises(CredentialError, match="outlive the facility CA"):
        pki.issue_client_certificate(
            key,
            cert,
            name="alice",
            role=Role.STAFF,
            facility="Test Facility",
            valid=dt.timedelta(days=20 * 365),
            now=NOW,
        )
    with pytest.raises(CredentialError, match="positive"):
        pki.issue_client_certificate(
            key,
            cert,
            name="alice",
            role=Role.STAFF,
            facility="Test Facility",
            valid=dt.timedelta(0),
            now=NOW,
        )


def test_naive_clock_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        pki.create_ca("X", dt.datetime(2026, 1, 1))


def test_encrypted_key_round_trip_and_wrong_passphrase(
    ca: tuple[pki.CaKey, x509.Certificate],
) -> None:
    key, cert = ca
    pem = pki.private_key_pem(key, b"correct horse battery")
    assert pki.is_encrypted_key_pem(pem)
    assert b"correct horse" not in pem
    loaded = pki.load_private_key_pem(pem, b"correct horse battery", "ca.key")
    pki.check_ca_pair(loaded, cert, "ca.key")
    with pytest.raises(CredentialError, match="passphrase is wrong"):
        pki.load_private_key_pem(pem, b"incorrect horse", "ca.key")
    with pytest.raises(CredentialError, match="CLASSROOM_RELAY_PASSPHRASE"):
        pki.load_private_key_pem(pem, None, "ca.key")
    with pytest.raises(CredentialError, match="does not match"):
        pki.check_ca_pair(pki.generate_key(), cert, "ca.key")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_encrypted_key_is_standard_pkcs8(
    ca: tuple[pki.CaKey, x509.Certificate], tmp_path: Path
) -> None:
    key, _ = ca
    path = tmp_path / "ca.key"
    path.write_bytes(pki.private_key_pem(key, b"correct horse battery"))
    text = subprocess.run(
        ["openssl", "asn1parse", "-in", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert "PBES2" in text
    assert "PBKDF2" in text
    assert "hmacWithSHA256" in text
    subprocess.run(
        ["openssl", "pkey", "-in", str(path), "-passin", "pass:correct horse battery", "-noout"],
        check=True,
        capture_output=True,
    )


@pytest.mark.parametrize("bad", ["", "   ", "x" * 65, "Evil\nFacility"])
def test_facility_name_is_checked(bad: str) -> None:
    with pytest.raises(CredentialError):
        pki.check_facility_name(bad)
