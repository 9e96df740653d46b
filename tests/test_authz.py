"""Whitelisting decisions, pure: connection admission, joins, PIN lockout."""

from __future__ import annotations

import datetime as dt

import pytest

from relay import authz
from relay.errors import AccessDenied, ErrorCode
from relay.identity import Listener, ParticipantRole, Role
from relay.messages import Hello
from relay.pki import CertIdentity
from relay.registry import (
    LearnerRecord,
    PrincipalRecord,
    PrincipalStatus,
    RegistrySnapshot,
    hash_pin,
)
from relay.schedule import ScheduledClass

NOW = dt.datetime(2026, 11, 23, 18, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
EARLY = dt.timedelta(minutes=15)
LATE = dt.timedelta(0)


def principal(
    name: str, role: Role, serial: int, classroom: str | None = None, **kw: object
) -> PrincipalRecord:
    fields: dict[str, object] = {
        "name": name,
        "role": role,
        "classroom": classroom,
        "serials": (serial,),
        "revoked_serials": (),
        "status": PrincipalStatus.ACTIVE,
        "enrolled_at": NOW - 24 * HOUR,
        "expires_at": NOW + 24 * HOUR,
        "revoked_reason": None,
    }
    fields.update(kw)
    return PrincipalRecord(**fields)  # type: ignore[arg-type]


def ident(name: str, role: Role, serial: int, *, expired: bool = False) -> CertIdentity:
    end = NOW - HOUR if expired else NOW + HOUR
    return CertIdentity(
        name=name, role=role, serial=serial, not_before=NOW - 2 * HOUR, not_after=end
    )


REGISTRY = RegistrySnapshot(
    principals={
        "alice": principal("alice", Role.INSTRUCTOR, 1),
        "bob": principal("bob", Role.INSTRUCTOR, 2),
        "pc-01": principal("pc-01", Role.MACHINE, 3, classroom="room-a"),
        "pc-09": principal("pc-09", Role.MACHINE, 4, classroom="room-b"),
        "sam": principal("sam", Role.STAFF, 5),
        "eve": principal(
            "eve",
            Role.INSTRUCTOR,
            6,
            status=PrincipalStatus.REVOKED,
            revoked_serials=(6,),
            revoked_reason="left",
        ),
    },
    learners={
        "l1": LearnerRecord(id="l1", pin_hash=hash_pin("1234"), display_name="l1", added_at=NOW)
    },
)
CLASSES = {
    "py101": ScheduledClass(
        id="py101",
        title="Python",
        instructor="alice",
        classroom="room-a",
        learners=frozenset({"l1"}),
        start=NOW - HOUR,
        end=NOW + HOUR,
    ),
    "later": ScheduledClass(
        id="later",
        title="Later",
        instructor="alice",
        classroom="room-a",
        learners=frozenset({"l1"}),
        start=NOW + 2 * HOUR,
        end=NOW + 3 * HOUR,
    ),
}


def code_of(fn: object, *args: object) -> ErrorCode:
    with pytest.raises(AccessDenied) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.code


@pytest.mark.parametrize(
    ("who", "listener", "code"),
    [
        (ident("alice", Role.INSTRUCTOR, 1), Listener.INSIDE, ErrorCode.WRONG_LISTENER),
        (ident("pc-01", Role.MACHINE, 3), Listener.OUTSIDE, ErrorCode.WRONG_LISTENER),
        (ident("sam", Role.STAFF, 5), Listener.OUTSIDE, ErrorCode.WRONG_LISTENER),
        (ident("eve", Role.INSTRUCTOR, 6), Listener.OUTSIDE, ErrorCode.REVOKED),
        (ident("ghost", Role.INSTRUCTOR, 9), Listener.OUTSIDE, ErrorCode.NOT_REGISTERED),
        (ident("alice", Role.INSTRUCTOR, 99), Listener.OUTSIDE, ErrorCode.NOT_REGISTERED),
        (ident("alice", Role.STAFF, 1), Listener.INSIDE, ErrorCode.NOT_REGISTERED),
        (
            ident("alice", Role.INSTRUCTOR, 1, expired=True),
            Listener.OUTSIDE,
            ErrorCode.CERT_EXPIRED,
        ),
    ],
)
def test_connection_refusals(who: CertIdentity, listener: Listener, code: ErrorCode) -> None:
    assert code_of(authz.check_connection, who, listener, REGISTRY, NOW) is code


def test_connections_admitted() -> None:
    authz.check_connection(ident("alice", Role.INSTRUCTOR, 1), Listener.OUTSIDE, REGISTRY, NOW)
    authz.check_connection(ident("pc-01", Role.MACHINE, 3), Listener.INSIDE, REGISTRY, NOW)
    authz.check_connection(ident("sam", Role.STAFF, 5), Listener.INSIDE, REGISTRY, NOW)


def join(who: CertIdentity, hello: Hello, now: dt.datetime = NOW) -> authz.JoinRequest:
    return authz.check_join(who, hello, REGISTRY, CLASSES, now, EARLY, LATE)


@pytest.mark.parametrize(
    ("who", "hello", "code"),
    [
        (
            ident("alice", Role.INSTRUCTOR, 1),
            Hello(id="h", session="nope"),
            ErrorCode.UNKNOWN_SESSION,
        ),
        (
            ident("alice", Role.INSTRUCTOR, 1),
            Hello(id="h", session="later"),
            ErrorCode.OUTSIDE_WINDOW,
        ),
        (
            ident("bob", Role.INSTRUCTOR, 2),
            Hello(id="h", session="py101"),
            ErrorCode.NOT_YOUR_CLASS,
        ),
        (
            ident("pc-09", Role.MACHINE, 4),
            Hello(id="h", session="py101", learner="l1", pin="1"),
            ErrorCode.WRONG_CLASSROOM,
        ),
        (
            ident("pc-01", Role.MACHINE, 3),
            Hello(id="h", session="py101"),
            ErrorCode.LEARNER_REQUIRED,
        ),
        (
            ident("alice", Role.INSTRUCTOR, 1),
            Hello(id="h", session="py101", learner="l1", pin="1"),
            ErrorCode.INVALID_FIELD,
        ),
    ],
)
def test_join_refusals(who: CertIdentity, hello: Hello, code: ErrorCode) -> None:
    assert code_of(join, who, hello) is code


def test_join_window_grace() -> None:
    hello = Hello(id="h", session="later")
    alice = ident("alice", Role.INSTRUCTOR, 1)
    assert (
        code_of(join, alice, hello, NOW + 2 * HOUR - EARLY - dt.timedelta(seconds=1))
        is ErrorCode.OUTSIDE_WINDOW
    )
    assert join(alice, hello, NOW + 2 * HOUR - EARLY).participant.pid == "instructor:alice"
    assert code_of(join, alice, hello, NOW + 3 * HOUR) is ErrorCode.OUTSIDE_WINDOW


def test_learner_join_defers_pin_then_roster() -> None:
    req = join(
        ident("pc-01", Role.MACHINE, 3), Hello(id="h", session="py101", learner="l9", pin="1234")
    )
    # Nothing about l9 is revealed before the PIN is checked.
    assert req.pin == "1234"
    assert req.participant.role is ParticipantRole.LEARNER
    assert req.participant.machine == "pc-01"
    assert code_of(authz.check_roster, req) is ErrorCode.NOT_ON_ROSTER
    ok = join(
        ident("pc-01", Role.MACHINE, 3), Hello(id="h", session="py101", learner="l1", pin="1")
    )
    authz.check_roster(ok)


def test_staff_join_any_class_as_observers() -> None:
    req = join(ident("sam", Role.STAFF, 5), Hello(id="h", session="py101"))
    assert req.participant.pid == "staff:sam"
    assert req.pin is None


def test_pin_guard_locks_and_unlocks() -> None:
    guard = authz.PinGuard(max_failures=3, lockout_seconds=60)
    for t in range(3):
        guard.check("l1", float(t))
        guard.failed("l1", float(t))
    assert code_of(guard.check, "l1", 10.0) is ErrorCode.LEARNER_LOCKED
    guard.check("l1", 63.0)  # the lockout ran out
    guard.failed("l1", 64.0)
    guard.check("l1", 65.0)  # the count started again
    guard.succeeded("l1")
    guard.check("l2", 0.0)


def test_pin_guard_throttles_a_machine_guessing_across_learners() -> None:
    guard = authz.PinGuard(max_failures=5, lockout_seconds=60, max_machine_failures=4)
    for i in range(4):
        guard.check(f"x{i}", float(i), machine="pc-01")
        guard.failed(f"x{i}", float(i), machine="pc-01")
    assert code_of(guard.check, "x9", 10.0, "pc-01") is ErrorCode.MACHINE_LOCKED
    guard.check("x9", 10.0, machine="pc-02")  # another machine may still try
    guard.check("x9", 60.5, machine="pc-01")  # the oldest failure left the window
