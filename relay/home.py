"""The facility home: the directory holding a facility's CA, TLS keys, configuration,
registry and schedule, and the code that creates and reads it.

Layout (``classroom-relay init`` creates it; the directory and every subdirectory have
mode 0700, every file mode 0600)::

    relay.toml          listeners, addresses, join windows, limits
    policy.toml         content policy
    registry.json       enrolled instructors, machines, staff; learners
    schedule.json       scheduled classes
    ca/ca.crt           facility CA certificate
    ca/ca.key           facility CA private key (passphrase-protected unless --no-passphrase)
    tls/outside.crt     server certificate and key of the outside listener
    tls/outside.key
    tls/inside.crt      server certificate and key of the inside listener
    tls/inside.key
    ca/audit-staff.key  staff audit key (X25519; protected like the CA key)
    keys/audit-signing.key  the relay's audit signing key (Ed25519) and its .pub
    keys/audit-staff.pub    staff audit public key: contents are encrypted to it
    run/control.sock    control socket of the running relay
    audit/              audit log: segments/, tombstones/, index (docs/audit.md)
    audit-checkpoint/   default checkpoint sink (relay.toml [audit] checkpoint_sink)
    .lock               taken by every command that changes the registry or the schedule

Files are replaced atomically (:func:`atomic_write`): a reader sees the old or the new
file, never half of one.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import errno
import fcntl
import inspect
import ipaddress
import itertools
import os
import ssl
import tempfile
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

from policy.engine import DEFAULT_POLICY_TOML, default_policy_files
from relay import limits as limits_module
from relay import pki
from relay.audit_keys import KEYS_DIR, new_audit_keys
from relay.audit_store import DEFAULT_AUDIT_SETTINGS, AuditSettings
from relay.errors import ConfigError, CredentialError
from relay.identity import Listener
from relay.limits import Limits
from relay.screen_settings import DEFAULT_SCREEN_SETTINGS, ScreenSettings

HOME_ENV = "CLASSROOM_RELAY_HOME"
DEFAULT_HOME = "facility"
DIR_MODE = 0o700
FILE_MODE = 0o600
LOCK_TIMEOUT_S = 10.0
MAX_JOIN_MINUTES = 24 * 60

DEFAULT_JOIN_EARLY_MINUTES = 15
DEFAULT_JOIN_LATE_MINUTES = 0
DEFAULT_OUTSIDE_BIND = ("127.0.0.1", 8443)
DEFAULT_INSIDE_BIND = ("127.0.0.1", 8444)
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
_LOCAL_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - recognised, not bound


# ---------------------------------------------------------------------------------------
# small values: host:port, relay addresses, times in files
# ---------------------------------------------------------------------------------------


def parse_hostport(text: str) -> tuple[str, int]:
    """``"127.0.0.1:8443"``, ``"[::1]:8443"``, ``"relay.local:8443"`` -> ``(host, port)``.

    Port 0 means "any free port" (useful in tests). Raises :class:`ConfigError`.
    """
    what = f"{text!r} is not HOST:PORT"
    example = "write it like 127.0.0.1:8443, [::1]:8443 or 0.0.0.0:8443"
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError(f"{what}; {example}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{what}: {host!r} is not an IPv6 address; {example}") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"{what}; {example}")
        if ":" in host:
            raise ConfigError(f"{what}: put an IPv6 address in brackets; {example}")
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"{what}: the port must be a number from 0 to 65535; {example}")
    if any(c.isspace() for c in host):
        raise ConfigError(f"{what}: the host contains spaces; {example}")
    return host, int(port_text)


def format_hostport(bind: tuple[str, int]) -> str:
    host, port = bind
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_relay_url(url: str, what: str = "relay address") -> str:
    """A ``wss://host[:port][/path]`` address; :class:`ConfigError` says what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"the {what} {url!r} is not a valid URL ({exc})") from None
    if parts.scheme != "wss":
        raise ConfigError(
            f"the {what} {url!r} must start with wss:// (TLS is always on), e.g. wss://relay:8443"
        )
    if not parts.hostname:
        raise ConfigError(f"the {what} {url!r} has no host name, e.g. wss://relay:8443")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ConfigError(
            f"the {what} {url!r} must not contain a user, password, query or fragment"
        )
    if port == 0:
        raise ConfigError(f"the {what} {url!r} has port 0; give the real port")
    return url


def url_host(url: str) -> str:
    host = urlsplit(url).hostname
    assert host is not None
    return host


def default_url(bind: tuple[str, int], option: str) -> str:
    """The address written into bundles when the administrator gives none.

    ``--outside 127.0.0.1:8443`` gives ``wss://localhost:8443``; ``10.0.0.5:8443`` gives
    ``wss://10.0.0.5:8443``; a wildcard or port 0 cannot name an address and is refused.
    """
    host, port = bind
    if host in _WILDCARD_HOSTS or port == 0:
        raise ConfigError(
            f"--{option} {format_hostport(bind)} does not say which address clients use; "
            f"give it with --{option}-url wss://NAME:PORT"
        )
    if host in _LOCAL_HOSTS:
        return f"wss://localhost:{port}"
    return f"wss://{format_hostport(bind)}"


def utc_text(when: dt.datetime) -> str:
    """An aware time as ISO 8601 UTC text with a ``Z``: ``2026-05-09T07:35:25Z``."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("utc_text needs a timezone-aware time")
    text = when.astimezone(dt.UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def parse_utc_text(text: object, what: str) -> dt.datetime:
    """Parse a time written by :func:`utc_text` (any ISO 8601 with an offset) into UTC.

    Raises ``ValueError`` naming ``what``; callers turn it into their own error type.
    """
    if not isinstance(text, str):
        raise ValueError(f"{what} must be an ISO 8601 time string, not {text!r}")
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise ValueError(f"{what} {text!r} has no timezone offset")
    return when.astimezone(dt.UTC)


# ---------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------


def atomic_write(path: Path, data: bytes, *, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` durably: temp file in the same directory, fsync,
    rename over, fsync the directory. The file never exists with another mode."""
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _toml_string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _limit_descriptions() -> dict[str, str]:
    """The one-line description of each limit, read from the docstrings in relay/limits.py."""
    try:
        tree = ast.parse(inspect.getsource(limits_module))
    except (OSError, TypeError, SyntaxError):
        return {}
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Limits":
            body = node.body
            for stmt, after in itertools.pairwise(body):
                if (
                    isinstance(stmt, ast.AnnAssign)
                    and isinstance(stmt.target, ast.Name)
                    and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)
                ):
                    found[stmt.target.id] = " ".join(after.value.value.split())
    return found


def render_relay_toml(
    *,
    facility: str,
    outside_bind: tuple[str, int],
    inside_bind: tuple[str, int],
    outside_url: str,
    inside_url: str,
    join_early_minutes: int = DEFAULT_JOIN_EARLY_MINUTES,
    join_late_minutes: int = DEFAULT_JOIN_LATE_MINUTES,
) -> str:
    lines = [
        "# classroom-relay configuration. See docs/operations.md.",
        "# The relay reads this file when it starts; restart it after a change.",
        "",
        "[relay]",
        "# Display name of the facility.",
        f"facility = {_toml_string(facility)}",
        "# Where the relay listens (HOST:PORT): instructors connect to 'outside',",
        "# classroom machines and security staff to 'inside'.",
        f"outside = {_toml_string(format_hostport(outside_bind))}",
        f"inside = {_toml_string(format_hostport(inside_bind))}",
        "# The addresses written into credential bundles (what clients connect to).",
        f"outside_url = {_toml_string(outside_url)}",
        f"inside_url = {_toml_string(inside_url)}",
        "",
        "[sessions]",
        "# Participants may join a class this many minutes before it starts ...",
        f"join_early_minutes = {join_early_minutes}",
        "# ... and until this many minutes after its scheduled end.",
        f"join_late_minutes = {join_late_minutes}",
        "",
        "[limits]",
        "# Security limits (see docs/protocol.md). The values shown are the defaults;",
        "# remove the '#' in front of a line to change that limit.",
    ]
    docs = _limit_descriptions()
    for f in fields(Limits):
        value = getattr(limits_module.DEFAULT_LIMITS, f.name)
        line = f"# {f.name} = {value!r}"
        if f.name in docs:
            line = f"{line:<40}  # {docs[f.name]}"
        lines.append(line)
    lines += [
        "",
        "[screen]",
        "# Screen shares (docs/protocol.md section 10). The values shown are the defaults.",
    ]
    for f in fields(ScreenSettings):
        lines.append(f"# {f.name} = {getattr(DEFAULT_SCREEN_SETTINGS, f.name)!r}")
    lines += [
        "",
        "[audit]",
        "# The audit log (docs/audit.md, docs/operations.md). The values shown are the",
        "# defaults. Put the checkpoint sink on another disk or a mounted share, so that",
        "# cutting off the end of the log is detectable:",
    ]
    for f in fields(AuditSettings):
        lines.append(f"# {f.name} = {getattr(DEFAULT_AUDIT_SETTINGS, f.name)!r}")
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelayConfig:
    facility: str
    outside_bind: tuple[str, int]
    inside_bind: tuple[str, int]
    outside_url: str
    inside_url: str
    join_early: dt.timedelta
    join_late: dt.timedelta
    limits: Limits
    audit: AuditSettings = DEFAULT_AUDIT_SETTINGS
    screen: ScreenSettings = DEFAULT_SCREEN_SETTINGS

    def bind(self, listener: Listener) -> tuple[str, int]:
        return self.outside_bind if listener is Listener.OUTSIDE else self.inside_bind

    def url(self, listener: Listener) -> str:
        return self.outside_url if listener is Listener.OUTSIDE else self.inside_url


_RELAY_KEYS = ("facility", "outside", "inside", "outside_url", "inside_url")
_SESSION_KEYS = ("join_early_minutes", "join_late_minutes")


def _table(doc: Mapping[str, Any], name: str, source: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: '{name}' must be a table ([{name}]), not a value")
    return value


def parse_relay_toml(text: str, source: str) -> RelayConfig:
    """Check and read relay.toml; every error names ``source``, the key and the problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}; correct the file") from None
    unknown_tables = sorted(set(doc) - {"relay", "sessions", "limits", "audit", "screen"})
    if unknown_tables:
        raise ConfigError(
            f"{source}: unknown key(s) or table(s) {', '.join(unknown_tables)}; "
            "the known tables are [relay], [sessions], [limits], [audit], [screen]"
        )
    relay = _table(doc, "relay", source)
    if "relay" not in doc:
        raise ConfigError(f"{source}: the [relay] table is missing; see docs/operations.md")
    unknown = sorted(set(relay) - set(_RELAY_KEYS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)} in [relay]; "
            f"known keys are {', '.join(_RELAY_KEYS)}"
        )
    values: dict[str, str] = {}
    for key in _RELAY_KEYS:
        if key not in relay:
            raise ConfigError(f"{source}: [relay] needs '{key}'; see docs/operations.md")
        if not isinstance(relay[key], str):
            raise ConfigError(f"{source}: [relay] {key} must be a string, not {relay[key]!r}")
        values[key] = relay[key]
    try:
        facility = pki.check_facility_name(values["facility"])
        outside_bind = parse_hostport(values["outside"])
        inside_bind = parse_hostport(values["inside"])
        outside_url = check_relay_url(values["outside_url"], "outside_url")
        inside_url = check_relay_url(values["inside_url"], "inside_url")
    except (ConfigError, CredentialError) as exc:
        raise ConfigError(f"{source}: [relay] {exc}") from None

    sessions = _table(doc, "sessions", source)
    unknown = sorted(set(sessions) - set(_SESSION_KEYS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)} in [sessions]; "
            f"known keys are {', '.join(_SESSION_KEYS)}"
        )
    minutes: dict[str, int] = {
        "join_early_minutes": DEFAULT_JOIN_EARLY_MINUTES,
        "join_late_minutes": DEFAULT_JOIN_LATE_MINUTES,
    }
    for key in _SESSION_KEYS:
        if key not in sessions:
            continue
        value = sessions[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: [sessions] {key} must be a whole number of minutes")
        if not 0 <= value <= MAX_JOIN_MINUTES:
            raise ConfigError(
                f"{source}: [sessions] {key} = {value} is out of range; "
                f"use 0 to {MAX_JOIN_MINUTES} minutes"
            )
        minutes[key] = value

    limits = Limits.from_mapping(_table(doc, "limits", source), f"{source}: [limits]")
    audit = AuditSettings.from_mapping(_table(doc, "audit", source), source)
    screen = ScreenSettings.from_mapping(_table(doc, "screen", source), source)
    return RelayConfig(
        facility=facility,
        outside_bind=outside_bind,
        inside_bind=inside_bind,
        outside_url=outside_url,
        inside_url=inside_url,
        join_early=dt.timedelta(minutes=minutes["join_early_minutes"]),
        join_late=dt.timedelta(minutes=minutes["join_late_minutes"]),
        limits=limits,
        audit=audit,
        screen=screen,
    )


# ---------------------------------------------------------------------------------------
# the home
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FacilityHome:
    """A facility home directory. Cheap to build: nothing is read until asked for."""

    root: Path

    @property
    def relay_toml(self) -> Path:
        return self.root / "relay.toml"

    @property
    def policy_toml(self) -> Path:
        return self.root / "policy.toml"

    @property
    def registry_file(self) -> Path:
        return self.root / "registry.json"

    @property
    def schedule_file(self) -> Path:
        return self.root / "schedule.json"

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def ca_cert_file(self) -> Path:
        return self.ca_dir / "ca.crt"

    @property
    def ca_key_file(self) -> Path:
        return self.ca_dir / "ca.key"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def control_socket(self) -> Path:
        return self.run_dir / "control.sock"

    @property
    def audit_dir(self) -> Path:
        return self.root / "audit"

    @property
    def keys_dir(self) -> Path:
        return self.root / KEYS_DIR

    def checkpoint_sink(self, config: RelayConfig) -> Path:
        """Where the latest audit checkpoint is copied (relative paths: in the home)."""
        configured = config.audit.checkpoint_sink
        if not configured:
            return self.root / "audit-checkpoint" / "latest"
        path = Path(configured).expanduser()
        return path if path.is_absolute() else self.root / path

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    def server_cert_file(self, listener: Listener) -> Path:
        return self.tls_dir / f"{listener.value}.crt"

    def server_key_file(self, listener: Listener) -> Path:
        return self.tls_dir / f"{listener.value}.key"

    # -- state -----------------------------------------------------------------------

    def exists(self) -> bool:
        return self.relay_toml.is_file()

    def require(self) -> None:
        if not self.exists():
            raise ConfigError(
                f"no facility at {self.root}: run 'classroom-relay init --home {self.root}' first"
            )

    def load_config(self) -> RelayConfig:
        self.require()
        try:
            text = self.relay_toml.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {self.relay_toml}: {exc}") from None
        return parse_relay_toml(text, str(self.relay_toml))

    # -- locking ---------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the home's exclusive administrative lock (``fcntl.flock`` on ``.lock``)."""
        self.require()
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        raise ConfigError(
                            f"another classroom-relay command is changing {self.root} "
                            f"(it holds {self.lock_file}); wait for it to finish and try again"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- keys and certificates ---------------------------------------------------------

    def _read(self, path: Path, what: str) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise CredentialError(
                f"the {what} {path} is missing; restore the facility home from its backup"
            ) from None
        except OSError as exc:
            raise CredentialError(f"cannot read the {what} {path}: {exc}") from None

    def load_ca_certificate(self) -> x509.Certificate:
        data = self._read(self.ca_cert_file, "facility CA certificate")
        try:
            return x509.load_pem_x509_certificate(data)
        except ValueError:
            raise CredentialError(
                f"{self.ca_cert_file} is not a readable certificate; restore it from the backup"
            ) from None

    def ca_key_encrypted(self) -> bool:
        """True when the CA key is passphrase-protected (so enrolling needs the passphrase)."""
        return pki.is_encrypted_key_pem(self._read(self.ca_key_file, "facility CA key"))

    def load_ca(self, passphrase: bytes | None) -> tuple[pki.CaKey, x509.Certificate]:
        """The CA key and certificate; :class:`CredentialError` on a wrong passphrase."""
        self.require()
        cert = self.load_ca_certificate()
        data = self._read(self.ca_key_file, "facility CA key")
        key = pki.load_private_key_pem(data, passphrase, str(self.ca_key_file))
        pki.check_ca_pair(key, cert, str(self.ca_key_file))
        return key, cert

    def server_ssl_context(self, listener: Listener) -> ssl.SSLContext:
        """The TLS server context of ``listener``.

        TLS 1.3 only; a client certificate is required and must chain to the facility CA
        (and nothing else); no session tickets, so every connection presents and verifies
        its certificate afresh (a resumed session would skip expiry checks).
        """
        cert_file = self.server_cert_file(listener)
        key_file = self.server_key_file(listener)
        for path, what in (
            (self.ca_cert_file, "facility CA certificate"),
            (cert_file, f"{listener.value} server certificate"),
            (key_file, f"{listener.value} server key"),
        ):
            if not path.is_file():
                raise CredentialError(
                    f"the {what} {path} is missing; restore the facility home from its backup "
                    "(or create a new one with 'classroom-relay init')"
                )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
        ctx.num_tickets = 0
        ctx.options |= ssl.OP_NO_TICKET
        try:
            ctx.load_verify_locations(cafile=str(self.ca_cert_file))
            ctx.load_cert_chain(str(cert_file), str(key_file))
        except (ssl.SSLError, OSError) as exc:
            raise CredentialError(
                f"cannot load the {listener.value} server certificate and key from "
                f"{self.tls_dir}: {exc}; restore them from the backup"
            ) from None
        return ctx

    def server_certificate(self, listener: Listener) -> x509.Certificate:
        data = self._read(self.server_cert_file(listener), f"{listener.value} server certificate")
        try:
            return x509.load_pem_x509_certificate(data)
        except ValueError:
            raise CredentialError(
                f"{self.server_cert_file(listener)} is not a readable certificate"
            ) from None


def resolve_home(arg: str | None) -> FacilityHome:
    """``--home`` if given, else ``$CLASSROOM_RELAY_HOME``, else ``./facility``."""
    text = arg if arg else os.environ.get(HOME_ENV) or DEFAULT_HOME
    return FacilityHome(Path(text).expanduser().absolute())


# ---------------------------------------------------------------------------------------
# creating a home
# ---------------------------------------------------------------------------------------


def check_names_cover_url(
    names: Sequence[str], url: str, listener: str, add_option: str | None = None
) -> None:
    """Refuse a relay address whose host is not in the listener certificate's names
    (clients check the name and would refuse to connect)."""
    host = url_host(url)
    wanted = pki.parse_subject_alt_name(host)
    have = [pki.parse_subject_alt_name(n) for n in names]
    if wanted not in have:
        listed = ", ".join(pki.san_text(n) for n in have)
        raise ConfigError(
            f"clients would refuse the {listener} certificate: the address {url} names "
            f"{host!r}, which is not among its names ({listed}); "
            f"add {add_option or f'--{listener}-name'} {host}"
        )


def check_can_init(root: Path) -> None:
    """Refuse to create a home where a non-empty directory (or any file) already is."""
    if not root.exists():
        return
    if not root.is_dir():
        raise ConfigError(
            f"{root} exists and is not a directory; choose another --home or remove it"
        )
    entries = sorted(root.iterdir())
    if entries:
        home = FacilityHome(root)
        known = [p for p in (home.relay_toml, home.ca_key_file, home.registry_file) if p.exists()]
        first = known[0] if known else entries[0]
        raise ConfigError(
            f"refusing to initialise {root}: {first} already exists (init never overwrites a "
            "facility); use another --home or move the old directory away first"
        )


def init_facility(
    home: FacilityHome,
    *,
    facility: str,
    outside_names: Sequence[str],
    inside_names: Sequence[str],
    outside_bind: tuple[str, int],
    inside_bind: tuple[str, int],
    outside_url: str,
    inside_url: str,
    passphrase: bytes | None,
    now: dt.datetime,
) -> None:
    """Create a new facility home: CA, both server certificates, relay.toml, policy.toml,
    an empty registry and an empty schedule. Refuses to touch an existing home."""
    # Imported here: both modules build on this one.
    from relay.registry import empty_registry_text
    from relay.schedule import empty_schedule_text

    try:
        facility = pki.check_facility_name(facility)
    except CredentialError as exc:
        raise ConfigError(str(exc)) from None
    check_relay_url(outside_url, "outside address (--outside-url)")
    check_relay_url(inside_url, "inside address (--inside-url)")
    try:
        check_names_cover_url(outside_names, outside_url, "outside")
        check_names_cover_url(inside_names, inside_url, "inside")
    except CredentialError as exc:
        raise ConfigError(str(exc)) from None
    check_can_init(home.root)

    # Everything is computed before the first file is written.
    ca_key, ca_cert = pki.create_ca(facility, now)
    ca_key_pem = pki.private_key_pem(ca_key, passphrase)
    servers = {
        Listener.OUTSIDE: pki.issue_server_certificate(
            ca_key, ca_cert, listener=Listener.OUTSIDE, names=outside_names, now=now
        ),
        Listener.INSIDE: pki.issue_server_certificate(
            ca_key, ca_cert, listener=Listener.INSIDE, names=inside_names, now=now
        ),
    }
    relay_toml = render_relay_toml(
        facility=facility,
        outside_bind=outside_bind,
        inside_bind=inside_bind,
        outside_url=outside_url,
        inside_url=inside_url,
    )
    parse_relay_toml(relay_toml, str(home.relay_toml))  # what we write, we can read

    home.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(home.root, DIR_MODE)
    audit_keys = new_audit_keys(passphrase)
    sink_dir = home.root / "audit-checkpoint"
    for directory in (
        home.ca_dir,
        home.tls_dir,
        home.run_dir,
        home.audit_dir,
        home.keys_dir,
        sink_dir,
    ):
        directory.mkdir(mode=DIR_MODE)
        os.chmod(directory, DIR_MODE)
    atomic_write(home.ca_key_file, ca_key_pem)
    atomic_write(home.ca_cert_file, pki.certificate_pem(ca_cert).encode("ascii"))
    for listener, (key_pem, cert_pem) in servers.items():
        atomic_write(home.server_key_file(listener), key_pem.encode("ascii"))
        atomic_write(home.server_cert_file(listener), cert_pem.encode("ascii"))
    for name, data in audit_keys.files.items():
        atomic_write(home.root / name, data)
    for name, text in default_policy_files().items():
        atomic_write(home.root / name, text.encode("utf-8"))
    atomic_write(home.registry_file, empty_registry_text().encode("utf-8"))
    atomic_write(home.schedule_file, empty_schedule_text().encode("utf-8"))
    # Written last: its presence is what makes the directory a facility home.
    atomic_write(home.relay_toml, relay_toml.encode("utf-8"))
    fsync_directory(home.root)


def renew_server_certificate(
    home: FacilityHome,
    listener: Listener,
    *,
    names: Sequence[str] | None,
    passphrase: bytes | None,
    now: dt.datetime,
) -> x509.Certificate:
    """Issue a fresh server certificate (and key) for ``listener``.

    ``names`` None keeps the names of the current certificate. The new certificate must
    still name the host of the listener's relay address in relay.toml.
    """
    config = home.load_config()
    ca_key, ca_cert = home.load_ca(passphrase)
    if names is None:
        current = home.server_certificate(listener)
        try:
            san = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise CredentialError(
                f"the current {listener.value} certificate has no names; give them with --name"
            ) from None
        names = [pki.san_text(n) for n in san]
    try:
        check_names_cover_url(names, config.url(listener), listener.value, "--name")
    except CredentialError as exc:
        raise ConfigError(str(exc)) from None
    key_pem, cert_pem = pki.issue_server_certificate(
        ca_key, ca_cert, listener=listener, names=names, now=now
    )
    with home.lock():
        atomic_write(home.server_key_file(listener), key_pem.encode("ascii"))
        atomic_write(home.server_cert_file(listener), cert_pem.encode("ascii"))
    return x509.load_pem_x509_certificate(cert_pem.encode("ascii"))


__all__ = [
    "DEFAULT_POLICY_TOML",
    "DEFAULT_SERVER_NAMES",
    "HOME_ENV",
    "FacilityHome",
    "RelayConfig",
    "atomic_write",
    "check_can_init",
    "check_relay_url",
    "default_url",
    "format_hostport",
    "init_facility",
    "parse_hostport",
    "parse_relay_toml",
    "parse_utc_text",
    "renew_server_certificate",
    "resolve_home",
    "utc_text",
]
