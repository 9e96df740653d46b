"""The ``classroom-relay`` command: set up a facility, enrol people and machines, manage
learners and the class schedule, revoke credentials, end classes, run the relay.

Exit codes: 0 done; 2 usage error or refused (one line on stderr says what was refused,
why, and what to do); 130 interrupted. docs/operations.md is the administrator's guide.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import getpass
import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509

from policy.decisions import Kind, Route
from relay import pki
from relay.bundle import Bundle, write_bundle
from relay.errors import ConfigError, ControlError, ControlRefused, CredentialError, RelayError
from relay.home import (
    DEFAULT_INSIDE_BIND,
    DEFAULT_OUTSIDE_BIND,
    DEFAULT_SERVER_NAMES,
    HOME_ENV,
    FacilityHome,
    check_can_init,
    check_names_cover_url,
    check_relay_url,
    default_url,
    format_hostport,
    init_facility,
    parse_hostport,
    renew_server_certificate,
    resolve_home,
    url_host,
    utc_text,
)
from relay.identity import NAME_RULE, Listener, ParticipantRole, Role, valid_name
from relay.registry import (
    PIN_RULE,
    LearnerRecord,
    PrincipalRecord,
    PrincipalStatus,
    RegistryStore,
    check_pin_format,
)
from relay.schedule import ScheduledClass, ScheduleStore, WindowState

PROG = "classroom-relay"
PASSPHRASE_ENV = "CLASSROOM_RELAY_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
PIN_ENV = "CLASSROOM_RELAY_PIN"
MIN_PASSPHRASE_CHARS = 12
MAX_REASON_CHARS = 500

DEFAULT_VALIDITY: dict[Role, dt.timedelta] = {
    Role.INSTRUCTOR: dt.timedelta(hours=12),
    Role.MACHINE: dt.timedelta(days=365),
    Role.STAFF: dt.timedelta(days=90),
}
_DURATION_UNITS = {
    "w": dt.timedelta(weeks=1),
    "d": dt.timedelta(days=1),
    "h": dt.timedelta(hours=1),
    "m": dt.timedelta(minutes=1),
    "s": dt.timedelta(seconds=1),
}
_DURATION = re.compile(r"(\d{1,6})([wdhms])")


class UsageError(RelayError):
    """A command line that cannot be carried out as given."""


# ---------------------------------------------------------------------------------------
# small parsers and helpers
# ---------------------------------------------------------------------------------------


def parse_duration(text: str) -> dt.timedelta:
    """``12h``, ``30m``, ``90d``, ``2w``, ``1h30m`` -> timedelta (positive)."""
    compact = text.strip().lower()
    pos = 0
    total = dt.timedelta(0)
    for m in _DURATION.finditer(compact):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(compact) or not compact:
        raise UsageError(
            f"refused duration {text!r}: write a number and a unit (w, d, h, m, s), "
            "e.g. 12h, 30m, 90d, 2w or 1h30m"
        )
    if total <= dt.timedelta(0):
        raise UsageError(f"refused duration {text!r}: it must be longer than zero")
    return total


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 with an offset or Z; a time without one is this host's local time. -> UTC."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"refused time {text!r}: write ISO 8601, e.g. 2026-05-09T15:00+02:00, "
            "2026-05-09T13:00Z, or 2026-05-09T15:00 for local time on this host"
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        when = when.astimezone()  # local time of the relay host
    return when.astimezone(dt.UTC)


def _now() -> dt.datetime:
    """Now, in UTC, to the second (the precision of certificates and of the files)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def human_duration(span: dt.timedelta) -> str:
    """``12h``, ``14d``, ``1d 2h 30m`` (to the second)."""
    seconds = int(span.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts) or "0s"


def _local(when: dt.datetime) -> str:
    """A time as this host's local time with its offset, to the minute."""
    return when.astimezone().isoformat(sep=" ", timespec="minutes")


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "?", "!")) else text + "."


def _say(text: str = "") -> None:
    print(text, flush=True)


def _note(text: str) -> None:
    print(f"{PROG}: note: {text}", file=sys.stderr, flush=True)


def _warn(text: str) -> None:
    print(f"{PROG}: warning: {text}", file=sys.stderr, flush=True)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _print_json(value: object) -> None:
    _say(json.dumps(value, indent=2, ensure_ascii=False))


def _prompt_secret(prompt: str) -> str:
    try:
        return getpass.getpass(prompt)
    except EOFError:
        raise UsageError(
            f"no input to read the secret from; set the environment variable "
            f"({PASSPHRASE_ENV} or {PIN_ENV}) or run the command in a terminal"
        ) from None


def _new_passphrase() -> bytes:
    """The passphrase for a new CA key: from the environment, or asked twice."""
    text = os.environ.get(PASSPHRASE_ENV)
    if text is None:
        text = _prompt_secret("New passphrase for the facility CA key: ")
        if len(text) >= MIN_PASSPHRASE_CHARS and text != _prompt_secret(
            "The same passphrase again: "
        ):
            raise UsageError("refused: the two passphrases differ; run init again")
    if len(text) < MIN_PASSPHRASE_CHARS:
        raise UsageError(
            f"refused CA passphrase: it has {len(text)} characters, at least "
            f"{MIN_PASSPHRASE_CHARS} are needed (or use --no-passphrase for a demo)"
        )
    return text.encode("utf-8")


def _ca_passphrase(home: FacilityHome) -> bytes | None:
    """The passphrase of the existing CA key (None when the key is not encrypted)."""
    if not home.ca_key_encrypted():
        return None
    text = os.environ.get(PASSPHRASE_ENV)
    if text is None:
        text = _prompt_secret(f"Passphrase of the facility CA key ({home.ca_key_file}): ")
    if not text:
        raise CredentialError(
            "no CA passphrase given; set CLASSROOM_RELAY_PASSPHRASE or type it when asked"
        )
    return text.encode("utf-8")


def _read_pin(given: str | None) -> str:
    if given is not None:
        pin = given
    elif (env := os.environ.get(PIN_ENV)) is not None:
        pin = env
    else:
        pin = _prompt_secret(f"PIN ({PIN_RULE}): ")
        check_pin_format(pin)
        if pin != _prompt_secret("The same PIN again: "):
            raise UsageError("refused: the two PINs differ; run the command again")
    check_pin_format(pin)
    return pin


def _check_name(name: str, what: str) -> str:
    if not valid_name(name):
        raise UsageError(f"refused {what} {name!r}: a {what} is {NAME_RULE}")
    return name


def _check_reason(reason: str, what: str) -> str:
    text = reason.strip()
    if not text:
        raise UsageError(f"refused: the {what} is empty; say why in a few words")
    if len(text) > MAX_REASON_CHARS:
        raise UsageError(
            f"refused: the {what} has {len(text)} characters; keep it under {MAX_REASON_CHARS}"
        )
    return text


def _control(home: FacilityHome, op: str, args: dict[str, object]) -> dict[str, object]:
    """Ask the running relay (its local control socket). Raises ControlError."""
    from relay.control import request_control

    return request_control(home, op, args)


def _reload_relay(home: FacilityHome) -> None:
    try:
        reply = _control(home, "reload", {})
    except ControlError:
        _say("The relay is not running; it reads the change when it starts.")
        return
    message = reply.get("message")
    _say(f"The running relay reloaded: {message}" if message else "The running relay reloaded.")


def _record_admin(
    home: FacilityHome, kind_name: str, detail: str, *, session: str | None = None
) -> None:
    """Record an administrator's change in the audit log (after it is made).

    If it cannot be recorded the command fails (exit 2) saying so: the change stands,
    but the facility must know its log lacks it.
    """
    from relay.audit import EventKind
    from relay.audit_append import admin_event, record_events
    from relay.errors import AuditError

    kind = EventKind.ENROLMENT_CHANGED if kind_name == "enrolment" else EventKind.SCHEDULE_CHANGED
    who = os.environ.get("USER") or "administrator"
    event = admin_event(kind, detail, actor=f"admin:{who}", session=session)
    try:
        record_events(home, [event])
    except AuditError as exc:
        raise AuditError(
            f"the change was made but could not be recorded in the audit log ({exc}); "
            "fix the audit log (see 'classroom-relay audit verify'), then record the change "
            "by hand in the facility's incident log"
        ) from None


# ---------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------


def _server_names(given: list[str] | None, url: str) -> list[str]:
    if given:
        return given
    names = list(DEFAULT_SERVER_NAMES)
    have = {pki.parse_subject_alt_name(n) for n in names}
    host = url_host(url)
    if pki.parse_subject_alt_name(host) not in have:
        names.append(host)
    return names


def cmd_init(args: argparse.Namespace, home: FacilityHome) -> int:
    pki.check_facility_name(args.facility)
    outside_bind = parse_hostport(args.outside) if args.outside else DEFAULT_OUTSIDE_BIND
    inside_bind = parse_hostport(args.inside) if args.inside else DEFAULT_INSIDE_BIND
    outside_url = check_relay_url(
        args.outside_url or default_url(outside_bind, "outside"), "outside address"
    )
    inside_url = check_relay_url(
        args.inside_url or default_url(inside_bind, "inside"), "inside address"
    )
    outside_names = _server_names(args.outside_name, outside_url)
    inside_names = _server_names(args.inside_name, inside_url)
    check_names_cover_url(outside_names, outside_url, "outside")
    check_names_cover_url(inside_names, inside_url, "inside")
    check_can_init(home.root)
    if args.no_passphrase:
        passphrase = None
        _warn(
            f"the CA key will be stored WITHOUT a passphrase in {home.ca_key_file}: anyone who "
            "can read that file can issue credentials for this facility, and the staff audit "
            "key beside it reads every message in the audit log. Use this only for demos and "
            "tests."
        )
    else:
        passphrase = _new_passphrase()
    init_facility(
        home,
        facility=args.facility,
        outside_names=outside_names,
        inside_names=inside_names,
        outside_bind=outside_bind,
        inside_bind=inside_bind,
        outside_url=outside_url,
        inside_url=inside_url,
        passphrase=passphrase,
        now=_now(),
    )
    ca = home.load_ca_certificate()
    config = home.load_config()
    protected = "passphrase-protected" if passphrase else "NOT protected by a passphrase"
    _say(f'Created the facility home of "{config.facility}" in {home.root}')
    _say(f"  CA certificate  {home.ca_cert_file}")
    _say(f"                  SHA-256 {pki.fingerprint(ca)}")
    _say(f"                  valid until {ca.not_valid_after_utc:%Y-%m-%d}")
    _say(f"  CA key          {home.ca_key_file} ({protected})")
    for listener, bind, url, names in (
        (Listener.OUTSIDE, outside_bind, outside_url, outside_names),
        (Listener.INSIDE, inside_bind, inside_url, inside_names),
    ):
        _say(
            f"  {listener.value:<8}        listens on {format_hostport(bind)}, bundles use {url} "
            f"(certificate names: {', '.join(names)})"
        )
    _say("Next: back up this directory (see docs/operations.md), then")
    _say(f"  {PROG} enroll instructor NAME | enroll machine NAME --classroom ROOM")
    _say(f"  {PROG} learner add ID, {PROG} schedule add ..., {PROG} serve")
    return 0


def cmd_enroll(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    role = Role(args.role)
    name = _check_name(args.name, "name")
    classroom = _check_name(args.classroom, "classroom") if role is Role.MACHINE else None
    valid = parse_duration(args.valid) if args.valid else DEFAULT_VALIDITY[role]
    out = Path(args.out) if args.out else Path(f"{name}.bundle")
    config = home.load_config()
    store = RegistryStore(home)
    existing = store.load().check_enrollment(
        name=name, role=role, classroom=classroom, renew=args.renew
    )
    if out.exists() or out.is_symlink():
        raise UsageError(
            f"refused to write {out}: the file exists (bundles are never overwritten); "
            "choose another --out FILE or move the old file away"
        )
    if not out.parent.is_dir():
        raise UsageError(f"refused to write {out}: the directory {out.parent} does not exist")

    passphrase = _ca_passphrase(home)
    ca_key, ca_cert = home.load_ca(passphrase)
    audit_key, audit_signing = None, None
    if role is Role.STAFF:
        from relay.audit_keys import load_signing_public, load_staff_private

        audit_key = load_staff_private(home.root, passphrase)
        audit_signing = load_signing_public(home.root)
    now = _now()
    key_pem, cert_pem, serial = pki.issue_client_certificate(
        ca_key, ca_cert, name=name, role=role, facility=config.facility, valid=valid, now=now
    )
    bundle = Bundle(
        name=name,
        role=role,
        relay_url=config.outside_url if role is Role.INSTRUCTOR else config.inside_url,
        facility=config.facility,
        cert_pem=cert_pem,
        key_pem=key_pem,
        ca_pem=pki.certificate_pem(ca_cert),
        classroom=classroom,
        audit_key=audit_key,
        audit_signing_key=audit_signing,
    )
    write_bundle(out, bundle)
    try:
        record = store.enroll(
            name=name,
            role=role,
            classroom=classroom,
            serial=serial,
            not_after=bundle.not_after,
            now=now,
            renew=args.renew,
        )
    except BaseException:
        out.unlink(missing_ok=True)  # an unregistered bundle is useless: do not leave it
        raise
    where = f" in classroom {classroom}" if classroom else ""
    verb = "Renewed" if existing is not None else "Enrolled"
    _record_admin(
        home,
        "enrolment",
        f"{verb.lower()} {role.value} {name}{where}, certificate serial "
        f"{pki.serial_text(serial)}, valid until {utc_text(record.expires_at)}",
    )
    _say(f"{verb} {role.value} {name}{where}: certificate serial {pki.serial_text(serial)}")
    _say(f"  valid until {_local(record.expires_at)} ({human_duration(valid)} from now)")
    _say(f"  relay address {bundle.relay_url}")
    _say(f"  bundle written to {out} (mode 0600); hand it over on a trusted channel")
    if existing is not None:
        if existing.active:
            _note(
                f"{name}'s earlier certificates stay valid until they expire; to stop them now, "
                f"run '{PROG} revoke {name}' and then enroll it again with --renew"
            )
        else:
            _note(f"{name} was revoked; it is active again, its old certificates stay revoked")
        if existing.classroom != classroom:
            _note(f"{name} moved from classroom {existing.classroom} to {classroom}")
    return 0


def _learner_json(x: LearnerRecord) -> dict[str, object]:
    return {
        "id": x.id,
        "name": x.display_name,
        "status": "active",
        "added_at": utc_text(x.added_at),
    }


def _principal_json(p: PrincipalRecord) -> dict[str, Any]:
    return {
        "name": p.name,
        "role": p.role.value,
        "classroom": p.classroom,
        "status": p.status.value,
        "expires_at": utc_text(p.expires_at),
        "enrolled_at": utc_text(p.enrolled_at),
        "serials": [pki.serial_text(s) for s in p.serials],
        "revoked_serials": [pki.serial_text(s) for s in p.revoked_serials],
        "revoked_at": utc_text(p.revoked_at) if p.revoked_at else None,
        "revoked_reason": p.revoked_reason,
    }


def cmd_registry_list(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    snap = RegistryStore(home).load()
    now = _now()
    principals = sorted(snap.principals.values(), key=lambda p: (p.role.value, p.name))
    learners = sorted(snap.learners.values(), key=lambda x: x.id)
    if args.json:
        _print_json(
            {
                "principals": [_principal_json(p) for p in principals],
                "learners": [_learner_json(x) for x in learners],
            }
        )
        return 0
    rows = [
        [
            p.name,
            p.role.value,
            p.classroom or "-",
            p.status.value,
            _local(p.expires_at) + (" (expired)" if p.expired(now) else ""),
            _local(p.enrolled_at),
        ]
        for p in principals
    ]
    _say(f"Enrolled ({len(rows)}):")
    _say(_table(["NAME", "ROLE", "CLASSROOM", "STATUS", "EXPIRES", "ENROLLED"], rows))
    _say()
    _say(f"Learners ({len(learners)}):")
    _say(_table(["ID", "NAME", "STATUS"], [[x.id, x.display_name, "active"] for x in learners]))
    return 0


def cmd_revoke(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    name = _check_name(args.name, "name")
    reason = _check_reason(args.reason, "reason") if args.reason is not None else None
    store = RegistryStore(home)
    before = store.load().principals.get(name)
    record = store.revoke(name, reason, now=_now())
    if not (before is not None and before.status is PrincipalStatus.REVOKED and before == record):
        _record_admin(
            home,
            "enrolment",
            f"revoked {record.role.value} {name}: {len(record.revoked_serials)} certificate(s)"
            + (f" ({reason})" if reason else ""),
        )
    if before is not None and before.status is PrincipalStatus.REVOKED and before == record:
        since = _local(record.revoked_at) if record.revoked_at else "earlier"
        _say(f"{name} was already revoked (since {since}); nothing changed in the registry.")
    else:
        _say(
            f"Revoked {record.role.value} {name}: {len(record.revoked_serials)} certificate(s) "
            "are refused from now on."
        )
    try:
        reply = _control(
            home,
            "revoke",
            {"name": name, "reason": reason or "revoked by the facility administrator"},
        )
    except ControlError as exc:
        _say(
            f"The running relay was not told ({exc}). The registry is updated: the relay "
            "refuses this credential when it (re)starts and on every new connection."
        )
        return 0
    message = reply.get("message")
    _say(f"The running relay: {message}" if message else "The running relay was told.")
    return 0


def cmd_learner_add(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    learner_id = _check_name(args.id, "learner id")
    if learner_id in RegistryStore(home).load().learners:
        raise UsageError(
            f"refused: learner {learner_id} already exists; use '{PROG} learner set-pin "
            f"{learner_id}' to change the PIN or choose another id"
        )
    pin = _read_pin(args.pin)
    record = RegistryStore(home).add_learner(
        learner_id, pin=pin, display_name=args.name, now=_now()
    )
    _record_admin(home, "enrolment", f"added learner {record.id}")
    _say(f"Added learner {record.id} ({record.display_name}).")
    return 0


def cmd_learner_list(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    learners = sorted(RegistryStore(home).load().learners.values(), key=lambda x: x.id)
    if args.json:
        _print_json([_learner_json(x) for x in learners])
        return 0
    rows = [[x.id, x.display_name, "active", _local(x.added_at)] for x in learners]
    _say(_table(["ID", "NAME", "STATUS", "ADDED"], rows))
    return 0


def cmd_learner_remove(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    record = RegistryStore(home).remove_learner(args.id)
    _record_admin(home, "enrolment", f"removed learner {record.id}")
    _say(f"Removed learner {record.id} ({record.display_name}); they can no longer sign in.")
    now = _now()
    on = sorted(
        c.id for c in ScheduleStore(home).load().values() if record.id in c.learners and c.end > now
    )
    if on:
        _note(
            f"{record.id} is still on the roster of class(es) {', '.join(on)}; the relay "
            "refuses their sign-in there"
        )
    return 0


def cmd_learner_set_pin(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    if args.id not in RegistryStore(home).load().learners:
        raise UsageError(
            f"cannot set the PIN of {args.id!r}: no such learner; add it with "
            f"'{PROG} learner add {args.id}'"
        )
    pin = _read_pin(args.pin)
    record = RegistryStore(home).set_pin(args.id, pin)
    _record_admin(home, "enrolment", f"changed the PIN of learner {record.id}")
    _say(f"Changed the PIN of learner {record.id}.")
    return 0


def _class_json(c: ScheduledClass, state: WindowState) -> dict[str, Any]:
    return {
        "id": c.id,
        "title": c.title,
        "instructor": c.instructor,
        "classroom": c.classroom,
        "learners": sorted(c.learners),
        "start": utc_text(c.start),
        "end": utc_text(c.end),
        "state": state.value,
    }


def cmd_schedule_add(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    config = home.load_config()
    cls = ScheduledClass(
        id=args.id,
        title=args.title,
        instructor=args.instructor,
        classroom=args.classroom,
        learners=frozenset(args.learner),
        start=parse_time(args.start),
        end=parse_time(args.end),
    )
    registry = RegistryStore(home).load()
    ScheduleStore(home).add(cls, registry, now=_now())
    _record_admin(
        home,
        "schedule",
        f'scheduled "{cls.title}": instructor {cls.instructor}, classroom {cls.classroom}, '
        f"learners {', '.join(sorted(cls.learners)) or 'none'}, "
        f"{utc_text(cls.start)} to {utc_text(cls.end)}",
        session=cls.id,
    )
    _say(
        f'Scheduled class {cls.id} "{cls.title}": instructor {cls.instructor}, classroom '
        f"{cls.classroom}, {len(cls.learners)} learner(s)"
    )
    _say(f"  {_local(cls.start)} to {_local(cls.end)}")
    _say(
        f"  open for joining {_local(cls.opens_at(config.join_early))} to "
        f"{_local(cls.closes_at(config.join_late))}"
    )
    machines = [
        p
        for p in registry.principals.values()
        if p.role is Role.MACHINE and p.classroom == cls.classroom and p.active
    ]
    if not machines:
        _note(
            f"no machine is enrolled in classroom {cls.classroom} yet; enrol them with "
            f"'{PROG} enroll machine NAME --classroom {cls.classroom}'"
        )
    instructor = registry.principals[cls.instructor]
    if instructor.expires_at < cls.end:
        _note(
            f"the certificate of {cls.instructor} expires {_local(instructor.expires_at)}, "
            f"before the class ends; renew it in time ('{PROG} enroll instructor "
            f"{cls.instructor} --renew')"
        )
    _reload_relay(home)
    return 0


def cmd_schedule_list(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    config = home.load_config()
    now = _now()
    classes = sorted(ScheduleStore(home).load().values(), key=lambda c: (c.start, c.id))
    states = [c.window(now, config.join_early, config.join_late) for c in classes]
    if args.json:
        _print_json([_class_json(c, s) for c, s in zip(classes, states, strict=True)])
        return 0
    rows = [
        [
            c.id,
            c.title,
            c.instructor,
            c.classroom,
            str(len(c.learners)),
            _local(c.start),
            _local(c.end),
            s.value,
        ]
        for c, s in zip(classes, states, strict=True)
    ]
    headers = ["ID", "TITLE", "INSTRUCTOR", "CLASSROOM", "LEARNERS", "START", "END", "STATE"]
    _say(_table(headers, rows))
    return 0


def cmd_schedule_remove(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    config = home.load_config()
    cls = ScheduleStore(home).remove(args.id)
    _record_admin(home, "schedule", "removed from the schedule", session=cls.id)
    _say(f"Removed class {cls.id} from the schedule.")
    if cls.window(_now(), config.join_early, config.join_late) is WindowState.OPEN:
        _note(
            f"class {cls.id} was open; nobody new can join it. To close it for those in it, "
            f"run '{PROG} session end {cls.id} --reason TEXT'"
        )
    _reload_relay(home)
    return 0


def _staff_bundle(args: argparse.Namespace, doing: str) -> Path | None:
    """The staff bundle of a command that runs either as security staff (``--bundle``,
    through the relay) or as the administrator (the local control socket)."""
    if args.bundle is not None:
        return Path(args.bundle)
    if args.relay is not None:
        raise UsageError(f"--relay goes with --bundle ({doing} as security staff)")
    return None


def _staff_options(p: argparse.ArgumentParser, doing: str) -> None:
    """``--bundle`` and ``--relay`` of a command :func:`_staff_bundle` routes."""
    p.add_argument(
        "--bundle",
        metavar="FILE",
        help=f"{doing} as security staff with this staff bundle, through the relay's inside "
        "listener (default: as the administrator, through the local control socket)",
    )
    p.add_argument("--relay", metavar="URL", help="with --bundle: wss://HOST:PORT to use")


def cmd_session_end(args: argparse.Namespace, home: FacilityHome) -> int:
    session = _check_name(args.id, "class id")
    reason = _check_reason(args.reason, "reason")
    bundle = _staff_bundle(args, "ending a class")
    if bundle is not None:
        # Security staff, from their workstation, through the relay's inside listener.
        from relay.staff import end_class

        return end_class(bundle, args.relay, session, reason)
    home.require()
    try:
        reply = _control(home, "end_session", {"session": session, "reason": reason})
    except ControlError as exc:
        raise UsageError(
            f"cannot end class {session}: {_sentence(str(exc))} A class only runs inside a "
            f"running relay; to keep it from being joined, remove it with "
            f"'{PROG} schedule remove {session}'"
        ) from None
    message = reply.get("message")
    _say(str(message) if message else f"Class {session} ended.")
    return 0


def cmd_share_stop(args: argparse.Namespace, home: FacilityHome) -> int:
    from relay.staff import stop_share

    reason = _check_reason(args.reason, "reason")
    return stop_share(Path(args.bundle), args.relay, args.share, reason)


def cmd_watch(args: argparse.Namespace, home: FacilityHome) -> int:
    from classroom_client.cli import EventType, ListenOptions
    from relay.staff import watch

    opts = ListenOptions(
        count=args.count,
        timeout=args.timeout,
        json=args.json,
        only=frozenset(EventType(t) for t in args.only or ()),
        history=not args.no_history,
    )
    return watch(Path(args.bundle), args.relay, _check_name(args.id, "class id"), opts)


def cmd_reload(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    try:
        reply = _control(home, "reload", {})
    except ControlError as exc:
        raise UsageError(
            f"nothing reloaded: {_sentence(str(exc))} The relay reads the registry, schedule "
            "and policy when it starts."
        ) from None
    message = reply.get("message")
    _say(f"The running relay reloaded: {message}" if message else "The running relay reloaded.")
    return 0


def cmd_status(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    try:
        reply = _control(home, "status", {})
    except ControlError as exc:
        raise UsageError(
            f"no status: {_sentence(str(exc))} Start the relay with '{PROG} serve'."
        ) from None
    reply.pop("ok", None)
    if args.json:
        _print_json(reply)
        return 0
    for key, value in reply.items():
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value
        _say(f"{key}: {shown}")
    return 0


def cmd_tls_renew(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    listener = Listener(args.listener)
    cert = renew_server_certificate(
        home, listener, names=args.name or None, passphrase=_ca_passphrase(home), now=_now()
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    _say(
        f"Issued a new {listener.value} server certificate for "
        f"{', '.join(pki.san_text(n) for n in san)}, valid until "
        f"{cert.not_valid_after_utc:%Y-%m-%d}."
    )
    _say("Restart the relay to use it. Existing bundles stay valid (same CA).")
    return 0


def cmd_serve(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    home.load_config()  # a broken relay.toml is reported before anything starts
    outside = parse_hostport(args.outside) if args.outside else None
    inside = parse_hostport(args.inside) if args.inside else None
    from relay.server import serve

    return serve(home, outside=outside, inside=inside)


def cmd_demo(args: argparse.Namespace, home: FacilityHome) -> int:
    explicit = getattr(args, "home", None)
    ns = argparse.Namespace(
        headless=bool(args.headless),
        duration=args.duration,
        home=resolve_home(explicit) if explicit else None,
    )
    from relay.demo import main as demo_main

    return demo_main(ns)


def _choices(enum_type: Any) -> list[str]:
    return [x.value for x in enum_type]


def cmd_policy_reload(args: argparse.Namespace, home: FacilityHome) -> int:
    home.require()
    from policy.engine import load_policy

    try:
        reply = _control(home, "reload_policy", {})
    except ControlRefused as exc:
        raise UsageError(
            f"the running relay refused the new policy and keeps the one in force: "
            f"{_sentence(str(exc))} Fix the file and run '{PROG} policy reload' again "
            f"('{PROG} policy test --policy FILE' tries a file)."
        ) from None
    except ControlError:
        # No relay running: still tell the administrator whether the file is good.
        policy = load_policy(home.policy_toml)
        _say(
            f"The relay is not running. {home.policy_toml} is valid (policy "
            f"{policy.version}); the relay reads it when it starts."
        )
        return 0
    _say(f"The running relay now decides with policy {reply.get('version')}.")
    return 0


def _check_hold(text: str) -> str:
    from relay.messages import HOLD_ID_PATTERN
    from relay.review import session_of_hold

    if not HOLD_ID_PATTERN.match(text):
        raise UsageError(f"{text!r} is not a hold id (CLASS.hN-TAG, as '{PROG} review list' shows)")
    try:
        session_of_hold(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return text


def cmd_review_list(args: argparse.Namespace, home: FacilityHome) -> int:
    session = _check_name(args.session, "class id") if args.session else None
    bundle = _staff_bundle(args, "reviewing")
    if bundle is not None:
        if session is None:
            raise UsageError(
                "with --bundle, name the class: --session ID (staff review one class at a time)"
            )
        from relay.staff import list_holds

        return list_holds(bundle, args.relay, session, args.json)
    home.require()
    try:
        reply = _control(home, "review_list", {"session": session} if session else {})
    except ControlRefused as exc:
        raise UsageError(f"no held messages shown: {exc}") from None
    except ControlError as exc:
        raise UsageError(
            f"no held messages to show: {_sentence(str(exc))} Held messages live in the "
            f"running relay; start it with '{PROG} serve'."
        ) from None
    from classroom_client.cli import Terminal
    from relay.staff import print_holds

    holds = reply.get("holds")
    print_holds(Terminal(PROG), holds if isinstance(holds, list) else [], args.json)
    return 0


def _cmd_review_decide(args: argparse.Namespace, home: FacilityHome, approve: bool) -> int:
    hold = _check_hold(args.hold)
    reason = args.reason or ""
    if not approve:
        reason = _check_reason(reason, "reason")
    bundle = _staff_bundle(args, "reviewing")
    if bundle is not None:
        from relay.staff import decide_hold

        return decide_hold(bundle, args.relay, hold, approve=approve, reason=reason)
    home.require()
    try:
        reply = _control(home, "review", {"hold": hold, "approve": approve, "reason": reason})
    except ControlRefused as exc:
        raise UsageError(f"nothing decided: {exc}") from None
    except ControlError as exc:
        raise UsageError(
            f"nothing decided: {_sentence(str(exc))} Held messages live in the running relay."
        ) from None
    _say(str(reply.get("message")))
    return 0


def cmd_review_approve(args: argparse.Namespace, home: FacilityHome) -> int:
    return _cmd_review_decide(args, home, approve=True)


def cmd_review_reject(args: argparse.Namespace, home: FacilityHome) -> int:
    return _cmd_review_decide(args, home, approve=False)


def cmd_policy_test(args: argparse.Namespace, home: FacilityHome) -> int:
    from relay.policy_tools import choose_policy, decide_lines

    home_given = bool(args.home or os.environ.get(HOME_ENV))
    policy_file = Path(args.policy) if args.policy else None
    chosen = choose_policy(policy_file, home, home_given=home_given)
    _note(f"deciding with {chosen.describe()}")
    if args.text is not None:
        lines: Iterable[str] = args.text
    else:
        with contextlib.suppress(AttributeError, ValueError):
            sys.stdin.reconfigure(errors="replace")  # type: ignore[union-attr]
        if sys.stdin.isatty():
            _note("type one message per line; end with Ctrl-D")
        lines = iter(sys.stdin.readline, "")
    for line in decide_lines(
        chosen.policy,
        lines,
        kind=Kind(args.kind),
        role=ParticipantRole(args.role),
        route=Route(args.channel),
        as_json=args.json,
    ):
        _say(line)
    return 0


def _since(text: str) -> dt.datetime:
    """``--since``: a duration back from now (``2h``, ``1d``) or a time (``parse_time``)."""
    if re.fullmatch(r"(\d{1,6}[wdhms])+", text.strip().lower()):
        return dt.datetime.now(dt.UTC) - parse_duration(text)
    return parse_time(text)


def cmd_policy_replay(args: argparse.Namespace, home: FacilityHome) -> int:
    from policy.engine import load_policy
    from relay.policy_tools import (
        AuditLogReader,
        ChosenPolicy,
        ReplayCount,
        difference_line,
        replay,
        replay_summary,
    )

    if args.session is None and args.since is None:
        raise UsageError(
            "say which messages to replay: --session ID (one class), --since TIME "
            "(e.g. --since 2h or --since 2026-05-12T14:00), or both"
        )
    session = _check_name(args.session, "class id") if args.session is not None else None
    since = _since(args.since).timestamp() if args.since is not None else None
    home.require()
    path = Path(args.policy)
    chosen = ChosenPolicy(load_policy(path), str(path))
    from relay.audit_access import audit_access
    from relay.audit_query import asked_text, record_read

    access = audit_access(home, None, contents=True, passphrase=lambda: _ca_passphrase(home))
    reader = AuditLogReader(home, access)
    if not reader.exists():
        _say(
            f"There is no audit log yet ({reader.path} does not exist): the relay writes it "
            "when it first runs. Nothing to replay."
        )
        return 0
    asked = ["policy", "replay", "--policy", str(path)]
    asked += ["--session", session] if session is not None else []
    asked += ["--since", args.since] if args.since is not None else []
    record_read(home, access, asked_text(asked))
    count = ReplayCount()
    try:
        for diff in replay(chosen.policy, reader.messages(session=session, since=since), count):
            _say(difference_line(diff, as_json=args.json))
    except OSError as exc:
        raise ConfigError(f"cannot read the audit log {reader.path}: {exc}") from None
    summary = replay_summary(count, chosen, reader.unreadable)
    if args.json:
        _note(summary)
    else:
        _say(summary)
    return 0


def run_bench(argv_rest: list[str]) -> int:
    from relay.bench import main as bench_main

    return bench_main(argv_rest)


# ---------------------------------------------------------------------------------------
# the parser
# ---------------------------------------------------------------------------------------

_HOME_HELP = "facility home directory (default: $CLASSROOM_RELAY_HOME, else ./facility)"

Command = Callable[[argparse.Namespace, FacilityHome], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Administer and run a classroom-relay facility. "
        "See docs/operations.md for the administrator's guide.",
    )
    parser.add_argument("--home", metavar="DIR", default=None, help=_HOME_HELP)
    parser.set_defaults(func=None)
    # Accept --home after the subcommand too; SUPPRESS keeps a top-level value.
    home = argparse.ArgumentParser(add_help=False)
    home.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS, help=_HOME_HELP)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def leaf(
        parent: Any, name: str, func: Command, help_text: str, **kw: Any
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name, parents=[home], help=help_text, description=help_text, **kw
        )
        p.set_defaults(func=func)
        return p

    def group(name: str, help_text: str) -> Any:
        p = sub.add_parser(name, parents=[home], help=help_text, description=help_text)
        p.set_defaults(func=None, group=p)
        return p.add_subparsers(title="commands", metavar="COMMAND")

    p = leaf(sub, "init", cmd_init, "create a new facility home (CA, certificates, config)")
    p.add_argument("--facility", default="Demo Facility", help="display name of the facility")
    p.add_argument("--outside", metavar="HOST:PORT", help="instructor listener (127.0.0.1:8443)")
    p.add_argument("--inside", metavar="HOST:PORT", help="classroom listener (127.0.0.1:8444)")
    p.add_argument("--outside-url", metavar="URL", help="wss:// address for instructor bundles")
    p.add_argument("--inside-url", metavar="URL", help="wss:// address for machine/staff bundles")
    p.add_argument(
        "--outside-name",
        action="append",
        metavar="NAME",
        help="DNS name or IP address of the outside certificate (repeatable; "
        "default localhost, 127.0.0.1, ::1)",
    )
    p.add_argument(
        "--inside-name", action="append", metavar="NAME", help="likewise for the inside listener"
    )
    p.add_argument(
        "--no-passphrase",
        action="store_true",
        help=f"store the CA key unencrypted (demos only); otherwise ${PASSPHRASE_ENV} or a prompt",
    )

    enroll = group("enroll", "issue a credential bundle to an instructor, machine or staff")
    for role, text in (
        (Role.INSTRUCTOR, "a remote instructor (outside listener; default --valid 12h)"),
        (Role.MACHINE, "a classroom machine (inside listener; default --valid 365d)"),
        (Role.STAFF, "a security staff member (inside listener; default --valid 90d)"),
    ):
        p = leaf(enroll, role.value, cmd_enroll, f"enrol {text}")
        p.set_defaults(role=role.value)
        p.add_argument("name", metavar="NAME", help=NAME_RULE)
        if role is Role.MACHINE:
            p.add_argument("--classroom", required=True, metavar="ROOM", help="its classroom")
        p.add_argument("--out", metavar="FILE", help="bundle file to write (default NAME.bundle)")
        p.add_argument("--valid", metavar="DURATION", help="certificate lifetime: 12h, 90d, 2w")
        p.add_argument(
            "--renew",
            action="store_true",
            help="issue a new certificate for a name already enrolled (or revoked)",
        )

    registry = group("registry", "show the registry")
    p = leaf(registry, "list", cmd_registry_list, "list enrolled principals and learners")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = leaf(sub, "revoke", cmd_revoke, "revoke every certificate of a name, at once")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--reason", metavar="TEXT", help="why (recorded in the registry)")

    learner = group("learner", "manage learners (they sign in on machines with id and PIN)")
    p = leaf(learner, "add", cmd_learner_add, "add a learner")
    p.add_argument("id", metavar="ID", help=NAME_RULE)
    p.add_argument("--pin", help=f"{PIN_RULE} (else ${PIN_ENV} or a prompt)")
    p.add_argument("--name", metavar="DISPLAY", help="display name (default: the id)")
    p = leaf(learner, "list", cmd_learner_list, "list learners")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = leaf(learner, "remove", cmd_learner_remove, "remove a learner")
    p.add_argument("id", metavar="ID")
    p = leaf(learner, "set-pin", cmd_learner_set_pin, "change a learner's PIN")
    p.add_argument("id", metavar="ID")
    p.add_argument("--pin", help=f"{PIN_RULE} (else ${PIN_ENV} or a prompt)")

    schedule = group("schedule", "manage the class schedule")
    p = leaf(schedule, "add", cmd_schedule_add, "schedule a class")
    p.add_argument("--id", required=True, help=f"class id: {NAME_RULE}")
    p.add_argument("--title", required=True)
    p.add_argument("--instructor", required=True, metavar="NAME")
    p.add_argument("--classroom", required=True, metavar="ROOM")
    p.add_argument("--learner", required=True, action="append", metavar="ID", help="repeatable")
    p.add_argument(
        "--start",
        required=True,
        metavar="ISO",
        help="e.g. 2026-05-09T15:00+02:00 (local if no offset)",
    )
    p.add_argument("--end", required=True, metavar="ISO")
    p = leaf(schedule, "list", cmd_schedule_list, "list scheduled classes")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = leaf(schedule, "remove", cmd_schedule_remove, "remove a class from the schedule")
    p.add_argument("id", metavar="ID")

    session = group("session", "act on live classes in the running relay")
    p = leaf(session, "end", cmd_session_end, "end a live class now")
    p.add_argument("id", metavar="ID", help="class id")
    p.add_argument("--reason", required=True, metavar="TEXT", help="shown to participants")
    _staff_options(p, "end it")

    share = group("share", "security staff: act on screen shares in a live class")
    p = leaf(share, "stop", cmd_share_stop, "stop a screen share now (staff bundle)")
    p.add_argument("share", metavar="SHARE", help="share id, e.g. py101.s1-ab12")
    p.add_argument("--reason", required=True, metavar="TEXT", help="shown to sharer and viewers")
    p.add_argument("--bundle", required=True, metavar="FILE", help="your staff bundle")
    p.add_argument("--relay", metavar="URL", help="wss://HOST:PORT (default: the bundle's)")

    p = leaf(
        sub,
        "watch",
        cmd_watch,
        "security staff: watch a live class (everything in it, direct messages too)",
    )
    p.add_argument("id", metavar="ID", help="class id")
    p.add_argument("--bundle", required=True, metavar="FILE", help="your staff bundle")
    p.add_argument("--relay", metavar="URL", help="wss://HOST:PORT (default: the bundle's)")
    p.add_argument("--json", action="store_true", help="one JSON object per event")
    p.add_argument("--count", type=int, metavar="N", help="stop after N events")
    p.add_argument("--timeout", type=float, metavar="S", help="stop after S seconds")
    p.add_argument(
        "--only",
        action="append",
        choices=[
            "chat",
            "presence",
            "hand",
            "session_ended",
            "error",
            "held",
            "reviewed",
            "alert",
            "share",
        ],
        help="show only these event types (repeatable)",
    )
    p.add_argument("--no-history", action="store_true", help="skip events before joining")

    tls = group("tls", "the relay's own server certificates")
    p = leaf(tls, "renew", cmd_tls_renew, "issue a new server certificate for a listener")
    p.add_argument("listener", choices=[x.value for x in Listener])
    p.add_argument(
        "--name", action="append", metavar="NAME", help="DNS name or IP (default: keep the names)"
    )

    p = leaf(
        sub, "reload", cmd_reload, "tell the running relay to re-read registry, schedule, policy"
    )
    p = leaf(sub, "status", cmd_status, "show what the running relay is doing")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = leaf(sub, "serve", cmd_serve, "run the relay until Ctrl-C or SIGTERM")
    p.add_argument("--outside", metavar="HOST:PORT", help="override the outside bind address")
    p.add_argument("--inside", metavar="HOST:PORT", help="override the inside bind address")

    p = leaf(sub, "demo", cmd_demo, "run a self-contained demonstration")
    p.add_argument("--headless", action="store_true", help="no browser windows")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")

    policy = group("policy", "try the content policy on sample text and on recorded messages")
    p = leaf(
        policy,
        "test",
        cmd_policy_test,
        "show the policy's decision for each line of text (from --text or standard input)",
        epilog="Without --policy the facility home's policy.toml is used; when no home is "
        "named (--home, $CLASSROOM_RELAY_HOME) and there is none at ./facility, the built-in "
        "default policy. A direct message (--channel direct) goes to the instructor when a "
        "learner or staff member sends it, and to a learner when the instructor sends it. "
        "Exit 0 when every line was decided, whatever the decisions; 2 when the policy "
        "file is invalid.",
    )
    p.add_argument("--policy", metavar="FILE", help="the policy file to try (default: see below)")
    p.add_argument(
        "--role",
        choices=_choices(ParticipantRole),
        default=ParticipantRole.LEARNER.value,
        help="the sender's role (default learner)",
    )
    p.add_argument(
        "--channel",
        choices=_choices(Route),
        default=Route.CLASS.value,
        help="the whole class, or a direct message (default class)",
    )
    p.add_argument(
        "--kind",
        choices=[k.value for k in Kind if k not in (Kind.HAND, Kind.CONTROL)],
        default=Kind.CHAT.value,
        help="what the text is (default chat)",
    )
    p.add_argument(
        "--text",
        action="append",
        metavar="TEXT",
        help="decide this text (repeatable); without it, every line of standard input",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line: action, rule, rules, categories, spans ([start, end] "
        "in characters), reason, text, and redacted for a redaction",
    )
    p = leaf(
        policy,
        "replay",
        cmd_policy_replay,
        "re-decide recorded messages with a new policy file and show those decided differently",
        epilog="Reads the messages in the facility's audit log (their content, sender, channel "
        "and recipient) and asks the new policy about each. A message counts as decided "
        "differently when the action changes, or when the rule behind a refusal, redaction, "
        "hold or alert changes. Shows the content: run it as the administrator on the relay "
        "host. When there is no audit log yet it says so and exits 0.",
    )
    p.add_argument("--policy", required=True, metavar="NEW.toml", help="the policy file to try")
    p.add_argument("--session", metavar="ID", help="only the messages of this class")
    p.add_argument(
        "--since",
        metavar="TIME",
        help="only messages since TIME: a duration back from now (2h, 1d, 30m) or a time "
        "(2026-05-12T14:00, local if no offset)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per message")

    p = leaf(
        policy,
        "reload",
        cmd_policy_reload,
        "make the running relay decide with the current policy.toml (as SIGHUP does)",
        epilog="An invalid file is refused with the reason, and the relay keeps deciding with "
        "the policy in force; the refusal is recorded in the audit log. When the relay is not "
        "running, the file is checked and the result shown.",
    )

    review = group("review", "security staff: messages the policy held for review")
    p = leaf(review, "list", cmd_review_list, "list the messages waiting for review")
    p.add_argument("--session", metavar="ID", help="only this class (required with --bundle)")
    p.add_argument("--json", action="store_true", help="one JSON object per held message")
    _staff_options(p, "list them")
    for name, func, text in (
        ("approve", cmd_review_approve, "deliver a held message now (marked as approved late)"),
        ("reject", cmd_review_reject, "refuse a held message; its sender is told"),
    ):
        p = leaf(review, name, func, text)
        p.add_argument("hold", metavar="HOLD", help="the hold id, as 'review list' shows it")
        p.add_argument(
            "--reason",
            required=name == "reject",
            metavar="TEXT",
            help="shown to the sender" + (" (required)" if name == "reject" else ""),
        )
        _staff_options(p, f"{name} it")

    from relay import audit_cli, audit_query

    audit = group(
        "audit",
        "security staff: verify, checkpoint, retention, legal holds, search, show and export",
    )
    audit_cli.register(audit, leaf, [home])
    audit_query.register(audit, leaf, [home])

    sub.add_parser("bench", help="run benchmarks (arguments go to the benchmark tool)")
    return parser


def _bench_args(argv: list[str]) -> list[str] | None:
    """The arguments after ``bench`` when that is the command (passed through verbatim)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--home":
            i += 2
        elif arg.startswith("--home="):
            i += 1
        else:
            break
    if i < len(argv) and argv[i] == "bench":
        return argv[i + 1 :]
    return None


def run_captured(home: Path, *args: str) -> tuple[int, str, str]:
    """Run ``classroom-relay --home HOME ARGS...`` in this process, capturing its output.

    Returns the exit code, standard output and standard error. Used to build facilities
    for the demo, the benchmarks and the tests with the real admin commands.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--home", str(home), *args])
    return code, out.getvalue(), err.getvalue()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        bench = _bench_args(argv)
        if bench is not None:
            return run_bench(bench)
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
            return exc.code if isinstance(exc.code, int) else 2
        if args.func is None:
            shown: argparse.ArgumentParser = getattr(args, "group", parser)
            shown.print_help(sys.stderr)
            return 2
        return int(args.func(args, resolve_home(args.home)))
    except RelayError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:  # e.g. `classroom-relay registry list | head -1`
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


__all__ = ["build_parser", "main", "parse_duration", "parse_time"]

if __name__ == "__main__":
    raise SystemExit(main())
