"""relay.home: creating and reading a facility home; real TLS 1.3 handshakes with its
server contexts and client bundles."""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import stat
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from policy.engine import DEFAULT_LEXICON_TXT, default_policy, load_policy
from relay import home as home_mod
from relay import pki
from relay.bundle import Bundle, load_bundle, write_bundle
from relay.errors import ConfigError, CredentialError
from relay.home import (
    DEFAULT_POLICY_TOML,
    FacilityHome,
    atomic_write,
    check_relay_url,
    default_url,
    init_facility,
    parse_hostport,
    parse_relay_toml,
    parse_utc_text,
    resolve_home,
    utc_text,
)
from relay.identity import Listener, Role
from relay.limits import Limits

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
LOCAL = ["localhost", "127.0.0.1", "::1"]


def make_home(root: Path, passphrase: bytes | None = None) -> FacilityHome:
    home = FacilityHome(root)
    init_facility(
        home,
        facility="Test Facility",
        outside_names=LOCAL,
        inside_names=LOCAL,
        outside_bind=("127.0.0.1", 8443),
        inside_bind=("127.0.0.1", 8444),
        outside_url="wss://localhost:8443",
        inside_url="wss://localhost:8444",
        passphrase=passphrase,
        now=NOW,
    )
    return home


@pytest.fixture
def facility(tmp_path: Path) -> FacilityHome:
    return make_home(tmp_path / "facility")


def enrol_bundle(
    home: FacilityHome,
    path: Path,
    *,
    name: str = "alice",
    role: Role = Role.INSTRUCTOR,
    now: dt.datetime = NOW,
    valid: dt.timedelta = dt.timedelta(hours=12),
    ca: tuple[pki.CaKey, x509.Certificate] | None = None,
) -> Path:
    ca_key, ca_cert = ca if ca is not None else home.load_ca(None)
    key_pem, cert_pem, _ = pki.issue_client_certificate(
        ca_key, ca_cert, name=name, role=role, facility="Test Facility", valid=valid, now=now
    )
    bundle = Bundle(
        name=name,
        role=role,
        relay_url="wss://localhost:8443",
        facility="Test Facility",
        cert_pem=cert_pem,
        key_pem=key_pem,
        # The bundle always trusts *this* facility's CA (to check the relay).
        ca_pem=pki.certificate_pem(home.load_ca_certificate()),
        classroom="room-a" if role is Role.MACHINE else None,
    )
    write_bundle(path, bundle)
    return path


# ---------------------------------------------------------------------------------------
# a real TLS handshake over a loopback socket pair
# ---------------------------------------------------------------------------------------


@dataclass
class Handshake:
    server_error: BaseException | None = None
    client_error: BaseException | None = None
    peer_der: bytes | None = None
    server_der: bytes | None = None
    version: str | None = None
    received: bytes = b""


def handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str = "localhost"
) -> Handshake:
    result = Handshake()
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                result.peer_der = s.getpeercert(binary_form=True)
                result.version = s.version()
                s.sendall(b"welcome")
        except (ssl.SSLError, OSError) as exc:
            result.server_error = exc

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=server_hostname) as c:
            result.server_der = c.getpeercert(binary_form=True)
            result.received = c.recv(7)
    except (ssl.SSLError, OSError) as exc:
        result.client_error = exc
    finally:
        thread.join(10)
        a.close()
        b.close()
    assert not thread.is_alive()
    return result


def test_enrolled_bundle_completes_tls13_handshake(facility: FacilityHome, tmp_path: Path) -> None:
    path = enrol_bundle(facility, tmp_path / "alice.bundle")
    client_ctx = load_bundle(path).client_ssl_context(path)
    result = handshake(facility.server_ssl_context(Listener.OUTSIDE), client_ctx)
    assert result.server_error is None
    assert result.client_error is None
    assert result.version == "TLSv1.3"
    assert result.received == b"welcome"
    assert result.peer_der is not None
    ident = pki.identity_from_der(result.peer_der)
    assert (ident.name, ident.role) == ("alice", Role.INSTRUCTOR)


def test_inside_listener_presents_its_own_certificate(
    facility: FacilityHome, tmp_path: Path
) -> None:
    path = enrol_bundle(facility, tmp_path / "m1.bundle", name="m1", role=Role.MACHINE)
    result = handshake(
        facility.server_ssl_context(Listener.INSIDE), load_bundle(path).client_ssl_context(path)
    )
    assert result.client_error is None
    assert result.server_error is None
    assert result.server_der is not None
    presented = x509.load_der_x509_certificate(result.server_der)
    assert presented.subject.rfc4514_string() == "CN=classroom-relay inside"
    assert presented == facility.server_certificate(Listener.INSIDE)


def test_client_certificate_from_another_ca_is_refused(
    facility: FacilityHome, tmp_path: Path
) -> None:
    other_ca = pki.create_ca("Test Facility", NOW)  # same name, different key
    path = enrol_bundle(facility, tmp_path / "forged.bundle", ca=other_ca)
    result = handshake(
        facility.server_ssl_context(Listener.OUTSIDE), load_bundle(path).client_ssl_context(path)
    )
    assert isinstance(result.server_error, ssl.SSLError)
    assert "certificate verify failed" in str(result.server_error)
    assert result.peer_der is None
    assert result.received == b""


def test_expired_client_certificate_is_refused(facility: FacilityHome, tmp_path: Path) -> None:
    path = enrol_bundle(
        facility,
        tmp_path / "old.bundle",
        now=NOW - dt.timedelta(days=3),
        valid=dt.timedelta(hours=1),
    )
    result = handshake(
        facility.server_ssl_context(Listener.OUTSIDE), load_bundle(path).client_ssl_context(path)
    )
    assert isinstance(result.server_error, ssl.SSLError)
    assert "expired" in str(result.server_error)
    assert result.received == b""


def test_client_without_certificate_is_refused(facility: FacilityHome) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(facility.ca_cert_file))
    result = handshake(facility.server_ssl_context(Listener.OUTSIDE), ctx)
    assert isinstance(result.server_error, ssl.SSLError)
    assert result.received == b""


def test_tls12_is_refused(facility: FacilityHome, tmp_path: Path) -> None:
    path = enrol_bundle(facility, tmp_path / "alice.bundle")
    ctx = load_bundle(path).client_ssl_context(path)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    result = handshake(facility.server_ssl_context(Listener.OUTSIDE), ctx)
    assert result.server_error is not None
    assert result.client_error is not None


def test_relay_presenting_a_name_not_in_its_certificate_is_refused_by_clients(
    facility: FacilityHome, tmp_path: Path
) -> None:
    path = enrol_bundle(facility, tmp_path / "alice.bundle")
    result = handshake(
        facility.server_ssl_context(Listener.OUTSIDE),
        load_bundle(path).client_ssl_context(path),
        server_hostname="relay.elsewhere.org",
    )
    assert isinstance(result.client_error, ssl.SSLCertVerificationError)


def test_server_context_settings(facility: FacilityHome) -> None:
    ctx = facility.server_ssl_context(Listener.OUTSIDE)
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.num_tickets == 0
    assert len(ctx.get_ca_certs()) == 1


def test_missing_server_key_is_a_clear_error(facility: FacilityHome) -> None:
    facility.server_key_file(Listener.INSIDE).unlink()
    with pytest.raises(CredentialError, match=r"inside server key .* is missing"):
        facility.server_ssl_context(Listener.INSIDE)


# ---------------------------------------------------------------------------------------
# init
# ---------------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_every_file_private(facility: FacilityHome) -> None:
    assert facility.exists()
    assert _mode(facility.root) == 0o700
    for directory in (facility.ca_dir, facility.tls_dir, facility.run_dir, facility.audit_dir):
        assert _mode(directory) == 0o700
    files = [
        facility.relay_toml,
        facility.policy_toml,
        facility.root / "lexicon.txt",
        facility.registry_file,
        facility.schedule_file,
        facility.ca_cert_file,
        facility.ca_key_file,
        *(facility.server_cert_file(x) for x in Listener),
        *(facility.server_key_file(x) for x in Listener),
    ]
    for path in files:
        assert _mode(path) == 0o600, path
    assert facility.policy_toml.read_text() == DEFAULT_POLICY_TOML
    assert (facility.root / "lexicon.txt").read_text() == DEFAULT_LEXICON_TXT
    assert load_policy(facility.policy_toml).version == default_policy().version
    doc = tomllib.loads(DEFAULT_POLICY_TOML)
    assert doc["routing"] == {"learner_to_learner_direct": False, "learner_screen_share": True}
    assert {r["id"] for r in doc["rule"]} >= {"contact.link", "contact.details"}
    assert not facility.ca_key_encrypted()
    assert not any(p.name.endswith(".tmp") for p in facility.root.rglob("*"))


def test_init_writes_a_config_that_loads(facility: FacilityHome) -> None:
    config = facility.load_config()
    assert config.facility == "Test Facility"
    assert config.outside_bind == ("127.0.0.1", 8443)
    assert config.inside_bind == ("127.0.0.1", 8444)
    assert config.outside_url == "wss://localhost:8443"
    assert config.inside_url == "wss://localhost:8444"
    assert config.join_early == dt.timedelta(minutes=15)
    assert config.join_late == dt.timedelta(0)
    assert config.limits == Limits()
    text = facility.relay_toml.read_text()
    for name in Limits.__dataclass_fields__:
        assert f"# {name} = " in text


def test_init_refuses_an_existing_home(facility: FacilityHome) -> None:
    with pytest.raises(ConfigError, match=r"relay\.toml already exists.*another --home"):
        make_home(facility.root)


def test_init_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"notes\.txt already exists"):
        make_home(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_init_into_an_empty_directory(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir(mode=0o755)
    make_home(root)
    assert _mode(root) == 0o700


def test_init_refuses_an_address_the_certificate_does_not_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--outside-name relay\.example\.org"):
        init_facility(
            FacilityHome(tmp_path / "f"),
            facility="X",
            outside_names=LOCAL,
            inside_names=LOCAL,
            outside_bind=("0.0.0.0", 8443),  # noqa: S104
            inside_bind=("127.0.0.1", 8444),
            outside_url="wss://relay.example.org:8443",
            inside_url="wss://localhost:8444",
            passphrase=None,
            now=NOW,
        )
    assert not (tmp_path / "f").exists()


def test_passphrase_protected_ca(tmp_path: Path) -> None:
    home = make_home(tmp_path / "f", passphrase=b"correct horse battery")
    assert home.ca_key_encrypted()
    key, cert = home.load_ca(b"correct horse battery")
    assert cert.subject == cert.issuer
    pki.check_ca_pair(key, cert, "x")
    with pytest.raises(CredentialError, match="passphrase is wrong"):
        home.load_ca(b"wrong horse battery")
    with pytest.raises(CredentialError, match="none was given"):
        home.load_ca(None)


# ---------------------------------------------------------------------------------------
# relay.toml
# ---------------------------------------------------------------------------------------

GOOD = """
[relay]
facility = "F"
outside = "0.0.0.0:9443"
inside = "[::]:9444"
outside_url = "wss://relay.example.org:9443"
inside_url = "wss://10.1.2.3:9444"
[sessions]
join_early_minutes = 5
join_late_minutes = 10
[limits]
max_frame_bytes = 1024
msgs_per_second = 5
"""


def test_parse_relay_toml() -> None:
    config = parse_relay_toml(GOOD, "relay.toml")
    assert config.outside_bind == ("0.0.0.0", 9443)  # noqa: S104
    assert config.inside_bind == ("::", 9444)
    assert config.join_early == dt.timedelta(minutes=5)
    assert config.join_late == dt.timedelta(minutes=10)
    assert config.limits.max_frame_bytes == 1024
    assert config.limits.msgs_per_second == 5.0
    assert config.url(Listener.INSIDE) == "wss://10.1.2.3:9444"
    assert config.bind(Listener.OUTSIDE) == ("0.0.0.0", 9443)  # noqa: S104


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace('facility = "F"', 'facility = "F'), r"relay\.toml is not valid TOML.*line 3"),
        (GOOD + "\n[extra]\n", "unknown key.*extra"),
        (
            GOOD.replace('facility = "F"', 'facility = "F"\ncolour = "red"'),
            "colour.*in \\[relay\\]",
        ),
        (GOOD.replace('outside = "0.0.0.0:9443"\n', ""), "needs 'outside'"),
        (GOOD.replace('"0.0.0.0:9443"', '"9443"'), "not HOST:PORT"),
        (GOOD.replace('"wss://relay.example.org:9443"', '"https://r"'), "must start with wss://"),
        (GOOD.replace("join_early_minutes = 5", "join_early_minutes = -1"), "out of range"),
        (GOOD.replace("join_late_minutes = 10", "join_late_minutes = 1.5"), "whole number"),
        (GOOD.replace("join_late_minutes = 10", "join_late = 10"), "join_late.*\\[sessions\\]"),
        (GOOD.replace("max_frame_bytes = 1024", "max_frames = 1024"), "unknown limit"),
        (GOOD.replace("max_frame_bytes = 1024", 'max_frame_bytes = "1k"'), "must be int"),
        (GOOD.replace("max_frame_bytes = 1024", "max_depth = 1"), "limits.*max_depth"),
        (GOOD + "\n[audit]\nkey = 1\n", "\\[audit\\]"),
        ("[sessions]\n", "\\[relay\\] table is missing"),
    ],
)
def test_relay_toml_errors_name_the_file_and_the_problem(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        parse_relay_toml(text, "relay.toml")
    assert "relay.toml" in str(info.value)


def test_load_config_without_home(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no facility at .*classroom-relay init --home"):
        FacilityHome(tmp_path).load_config()


def test_facility_name_with_quotes_round_trips(tmp_path: Path) -> None:
    home = FacilityHome(tmp_path / "f")
    init_facility(
        home,
        facility='San "Q" \\ Prison – Ünit 7',
        outside_names=LOCAL,
        inside_names=LOCAL,
        outside_bind=("127.0.0.1", 1),
        inside_bind=("127.0.0.1", 2),
        outside_url="wss://localhost:1",
        inside_url="wss://localhost:2",
        passphrase=None,
        now=NOW,
    )
    assert home.load_config().facility == 'San "Q" \\ Prison – Ünit 7'


# ---------------------------------------------------------------------------------------
# small values
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8443", ("127.0.0.1", 8443)),
        ("[::1]:8443", ("::1", 8443)),
        ("relay.local:1", ("relay.local", 1)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),  # noqa: S104
    ],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


@pytest.mark.parametrize(
    "text", ["8443", ":8443", "::1:8443", "[::1]8443", "[nope]:1", "h:65536", "h:x", "h:-1", "h:"]
)
def test_parse_hostport_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_hostport(text)


def test_default_url() -> None:
    assert default_url(("127.0.0.1", 8443), "outside") == "wss://localhost:8443"
    assert default_url(("::1", 1), "outside") == "wss://localhost:1"
    assert default_url(("10.0.0.5", 9), "inside") == "wss://10.0.0.5:9"
    assert default_url(("fd00::5", 9), "inside") == "wss://[fd00::5]:9"
    with pytest.raises(ConfigError, match="--outside-url"):
        default_url(("0.0.0.0", 8443), "outside")  # noqa: S104


@pytest.mark.parametrize(
    "url", ["ws://x:1", "wss://", "wss://u:p@x:1", "wss://x:1/?q=1", "wss://x:0", "wss://x:99999"]
)
def test_check_relay_url_refuses(url: str) -> None:
    with pytest.raises(ConfigError):
        check_relay_url(url)


def test_resolve_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(home_mod.HOME_ENV, raising=False)
    assert resolve_home(None).root == tmp_path / "facility"
    monkeypatch.setenv(home_mod.HOME_ENV, str(tmp_path / "env"))
    assert resolve_home(None).root == tmp_path / "env"
    assert resolve_home("given").root == tmp_path / "given"
    assert resolve_home("given").control_socket == tmp_path / "given" / "run" / "control.sock"


def test_utc_text_round_trip() -> None:
    when = dt.datetime(2026, 5, 9, 15, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert utc_text(when) == "2026-05-09T13:00:00Z"
    assert parse_utc_text("2026-05-09T13:00:00Z", "t") == when
    with pytest.raises(ValueError, match="no timezone"):
        parse_utc_text("2026-05-09T13:00:00", "t")


def test_atomic_write_replaces_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert _mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_lock_is_exclusive_across_processes(facility: FacilityHome) -> None:
    import fcntl

    fd = os.open(facility.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description = another command
        with (
            pytest.raises(ConfigError, match="another classroom-relay command"),
            facility.lock(timeout_s=0.2),
        ):
            pass
    finally:
        os.close(fd)
    with facility.lock(timeout_s=0.2):
        pass
