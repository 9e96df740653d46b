"""Who is who: roles, principals (certificate holders) and participants (people in a class).

Pure values, no I/O.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
"""Names of instructors, machines, staff, learners, classrooms and class ids."""

NAME_RULE = (
    "1 to 63 characters: lower-case letters, digits, '.', '_' or '-', "
    "starting with a letter or digit"
)


def valid_name(name: str) -> bool:
    return bool(NAME_PATTERN.match(name))


class Role(enum.Enum):
    """The role written into a certificate (its OU) and the registry."""

    INSTRUCTOR = "instructor"
    MACHINE = "machine"
    STAFF = "staff"


class Listener(enum.Enum):
    """The relay's two listeners."""

    OUTSIDE = "outside"
    INSIDE = "inside"

    def accepts(self, role: Role) -> bool:
        if self is Listener.OUTSIDE:
            return role is Role.INSTRUCTOR
        return role in (Role.MACHINE, Role.STAFF)


class ParticipantRole(enum.Enum):
    """The role a participant has inside a class."""

    INSTRUCTOR = "instructor"
    LEARNER = "learner"
    STAFF = "staff"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated certificate holder."""

    name: str
    role: Role
    serial: int
    classroom: str | None = None

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise ValueError(f"principal name {self.name!r} is not valid: {NAME_RULE}")
        if (self.role is Role.MACHINE) != (self.classroom is not None):
            raise ValueError("a machine has a classroom; other principals have none")


@dataclass(frozen=True, slots=True)
class Participant:
    """Someone in a class. ``pid`` is the id used on the wire, e.g. ``learner:l1001``."""

    role: ParticipantRole
    name: str
    machine: str | None = None
    pid: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise ValueError(f"participant name {self.name!r} is not valid: {NAME_RULE}")
        if (self.role is ParticipantRole.LEARNER) != (self.machine is not None):
            raise ValueError("a learner is always on a machine; others are not")
        object.__setattr__(self, "pid", f"{self.role.value}:{self.name}")


def parse_pid(pid: str) -> tuple[ParticipantRole, str] | None:
    """Split ``role:name``; None when it is not a well-formed participant id."""
    role_text, sep, name = pid.partition(":")
    if not sep or not valid_name(name):
        return None
    try:
        return ParticipantRole(role_text), name
    except ValueError:
        return None
