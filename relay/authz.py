"""Whitelisting decisions: may this certificate connect here, may it join this class.

Pure functions over snapshots of the registry and schedule, with the clock passed in.
Deny by default: anything not explicitly admitted is refused with an :class:`ErrorCode`
and a detail that says why.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
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
    """Counts wrong PINs and refuses further tries when there were too many.

    Per learner: ``max_failures`` wrong PINs in a row lock the learner out for
    ``lockout_seconds``. Per machine: ``max_machine_failures`` wrong PINs for any learner
    ids within ``lockout_seconds`` stop that machine from trying, so a machine cannot be
    used to guess PINs across many learner ids.
    """

    max_failures: int
    lockout_seconds: float
    max_machine_failures: int = 20
    _failures: dict[str, int] = field(default_factory=dict)
    _locked_until: dict[str, float] = field(default_factory=dict)
    _machine_failures: dict[str, deque[float]] = field(default_factory=dict)

    def check(self, learner: str, now: float, machine: str | None = None) -> None:
        if machine is not None:
            recent = self._recent(machine, now)
            if recent is not None and len(recent) >= self.max_machine_failures:
                wait = int(recent[0] + self.lockout_seconds - now) + 1
                raise AccessDenied(ErrorCode.MACHINE_LOCKED, f"try again in {wait} seconds")
        until = self._locked_until.get(learner)
        if until is not None:
            if now < until:
                raise AccessDenied(
                    ErrorCode.LEARNER_LOCKED, f"locked for {int(until - now) + 1} more seconds"
                )
            del self._locked_until[learner]
            self._failures.pop(learner, None)

    def failed(self, learner: str, now: float, machine: str | None = None) -> None:
        count = self._failures.get(learner, 0) + 1
        self._failures[learner] = count
        if count >= self.max_failures:
            self._locked_until[learner] = now + self.lockout_seconds
        if machine is not None:
            recent = self._recent(machine, now)
            if recent is None:
                recent = self._machine_failures[machine] = deque()
            recent.append(now)

    def succeeded(self, learner: str) -> None:
        self._failures.pop(learner, None)

    def _recent(self, machine: str, now: float) -> deque[float] | None:
        recent = self._machine_failures.get(machine)
        if recent is None:
            return None
        while recent and recent[0] <= now - self.lockout_seconds:
            recent.popleft()
        if not recent:
            del self._machine_failures[machine]
            return None
        return recent
