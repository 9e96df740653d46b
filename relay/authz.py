"""Whitelisting decisions: may this certificate connect here, may it join this class.

Pure functions over snapshots of the registry and schedule, with the clock passed in.
Deny by default: anything not explicitly admitted is refused with an :class:`ErrorCode`
and a detail that says why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from relay.errors import AccessDenied, ErrorCode
from relay.identity import Listener, Participant, ParticipantRole, Role
from relay.messages import Hello
from relay.pki import CertIdentity
from relay.registry import RegistrySnapshot
from relay.schedule import ScheduledClass, WindowState


def check_connection(
    ident: CertIdentity, listener: Listener, registry: RegistrySnapshot, now: dt.datetime
) -> None:
    """Admit a TLS-authenticated certificate on ``listener`` or raise :class:`AccessDenied`."""
    if now < ident.not_before or now > ident.not_after:
        raise AccessDenied(ErrorCode.CERT_EXPIRED, f"valid until {ident.not_after.isoformat()}")
    problem = registry.check_certificate(ident)
    if problem is not None:
        raise AccessDenied(problem, f"certificate of {ident.role.value} '{ident.name}'")
    if not listener.accepts(ident.role):
        raise AccessDenied(
            ErrorCode.WRONG_LISTENER,
            f"a {ident.role.value} credential was presented on the {listener.value} listener",
        )


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A join that passed every check that needs no secret.

    For a learner, the PIN (checked off the event loop, in the same time whether or not
    the learner exists) and then the roster (:func:`check_roster`) are still to check,
    in that order, so that nobody can learn which ids exist or are on a roster without
    knowing the PIN.
    """

    participant: Participant
    cls: ScheduledClass
    pin: str | None


def check_join(
    ident: CertIdentity,
    hello: Hello,
    registry: RegistrySnapshot,
    classes: Mapping[str, ScheduledClass],
    now: dt.datetime,
    early: dt.timedelta,
    late: dt.timedelta,
) -> JoinRequest:
    """Decide whether ``ident`` may join ``hello.session`` now, as whom."""
    cls = classes.get(hello.session)
    if cls is None:
        raise AccessDenied(ErrorCode.UNKNOWN_SESSION, f"class '{hello.session}'")
    window = cls.window(now, early, late)
    if window is not WindowState.OPEN:
        when = "has not started yet" if window is WindowState.NOT_YET else "is over"
        raise AccessDenied(
            ErrorCode.OUTSIDE_WINDOW,
            f"class '{cls.id}' runs {cls.start.isoformat()} to {cls.end.isoformat()} and {when}",
        )
    if ident.role is Role.INSTRUCTOR:
        if hello.learner is not None:
            raise AccessDenied(ErrorCode.INVALID_FIELD, "instructors do not sign in a learner")
        if cls.instructor != ident.name:
            raise AccessDenied(ErrorCode.NOT_YOUR_CLASS, f"class '{cls.id}'")
        return JoinRequest(Participant(ParticipantRole.INSTRUCTOR, ident.name), cls, None)
    if ident.role is Role.STAFF:
        if hello.learner is not None:
            raise AccessDenied(ErrorCode.INVALID_FIELD, "staff do not sign in a learner")
        return JoinRequest(Participant(ParticipantRole.STAFF, ident.name), cls, None)
    # A classroom machine, with a learner signing in.
    record = registry.principals.get(ident.name)
    classroom = record.classroom if record is not None else None
    if classroom != cls.classroom:
        raise AccessDenied(
            ErrorCode.WRONG_CLASSROOM,
            f"machine '{ident.name}' is in classroom '{classroom}', the class in '{cls.classroom}'",
        )
    if hello.learner is None or hello.pin is None:
        raise AccessDenied(ErrorCode.LEARNER_REQUIRED, f"machine '{ident.name}'")
    participant = Participant(ParticipantRole.LEARNER, hello.learner, machine=ident.name)
    return JoinRequest(participant, cls, hello.pin)


def check_roster(request: JoinRequest) -> None:
    """After the PIN: is the learner on the class roster?"""
    learner = request.participant.name
    if learner not in request.cls.learners:
        raise AccessDenied(
            ErrorCode.NOT_ON_ROSTER, f"learner '{learner}', class '{request.cls.id}'"
        )


@dataclass(slots=True)
class PinGuard:
    """Counts wrong PINs per learner and locks a learner out after too many."""

    max_failures: int
    lockout_seconds: float
    _failures: dict[str, int] = field(default_factory=dict)
    _locked_until: dict[str, float] = field(default_factory=dict)

    def check(self, learner: str, now: float) -> None:
        until = self._locked_until.get(learner)
        if until is not None:
            if now < until:
                raise AccessDenied(
                    ErrorCode.LEARNER_LOCKED, f"locked for {int(until - now) + 1} more seconds"
                )
            del self._locked_until[learner]
            self._failures.pop(learner, None)

    def failed(self, learner: str, now: float) -> None:
        count = self._failures.get(learner, 0) + 1
        self._failures[learner] = count
        if count >= self.max_failures:
            self._locked_until[learner] = now + self.lockout_seconds

    def succeeded(self, learner: str) -> None:
        self._failures.pop(learner, None)
