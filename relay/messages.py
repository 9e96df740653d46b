"""Typed messages of protocol ``classroom-relay.v1``.

Each message is a frozen dataclass that checks itself when built. ``relay.wire`` turns
them into msgpack maps and back; ``docs/protocol.md`` is the normative description.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from relay.frozen import quick_init
from relay.identity import ParticipantRole, parse_pid, valid_name

FORBIDDEN_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
"""C0 controls other than tab, line feed and carriage return; DEL; C1 controls."""


class Channel(enum.Enum):
    CLASS = "class"
    DIRECT = "direct"


class AckStatus(enum.Enum):
    DELIVERED = "delivered"
    REFUSED = "refused"
    HELD = "held"


class PresenceEvent(enum.Enum):
    JOINED = "joined"
    LEFT = "left"


def _check_pid(pid: str, what: str) -> None:
    if parse_pid(pid) is None:
        raise ValueError(f"{what} {pid!r} is not a participant id (role:name)")


# ---------------------------------------------------------------------------------------
# client -> relay
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """First frame of every connection: which class to join, and (machines) who signs in."""

    id: str
    session: str
    learner: str | None = None
    pin: str | None = field(default=None, repr=False)
    resume_after: int = 0
    client: str = ""

    def __post_init__(self) -> None:
        if not valid_name(self.session):
            raise ValueError(f"session id {self.session!r} is not valid")
        if self.learner is not None and not valid_name(self.learner):
            raise ValueError(f"learner id {self.learner!r} is not valid")
        if (self.learner is None) != (self.pin is None):
            raise ValueError("learner and pin go together")
        if self.resume_after < 0:
            raise ValueError("resume_after must not be negative")


@quick_init
@dataclass(frozen=True, slots=True)
class Chat:
    id: str
    channel: Channel
    text: str
    to: str | None = None

    def __post_init__(self) -> None:
        if (self.channel is Channel.DIRECT) != (self.to is not None):
            raise ValueError("a direct message names one recipient ('to'); a class message none")
        if self.to is not None:
            _check_pid(self.to, "recipient")
        if not self.text.strip():
            raise ValueError("chat text must not be empty")
        if FORBIDDEN_CONTROLS.search(self.text):
            raise ValueError(
                "chat text must not contain control characters other than tab and new line"
            )


@dataclass(frozen=True, slots=True)
class Hand:
    """Raise or lower a hand: learners their own; the instructor may lower a learner's."""

    id: str
    raised: bool
    who: str | None = None

    def __post_init__(self) -> None:
        if self.who is not None:
            _check_pid(self.who, "hand owner")


@dataclass(frozen=True, slots=True)
class EndSession:
    """Staff end the class they are watching."""

    id: str
    reason: str

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise ValueError("a reason is required to end a class")


@dataclass(frozen=True, slots=True)
class Bye:
    """The participant leaves the class on purpose (no automatic reconnect)."""

    id: str


ClientMessage = Hello | Chat | Hand | EndSession | Bye

CLIENT_TYPES: dict[str, type[ClientMessage]] = {
    "hello": Hello,
    "chat": Chat,
    "hand": Hand,
    "end_session": EndSession,
    "bye": Bye,
}
CLIENT_TYPE_NAMES: dict[type[ClientMessage], str] = {v: k for k, v in CLIENT_TYPES.items()}

# ---------------------------------------------------------------------------------------
# relay -> client
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParticipantInfo:
    pid: str
    role: ParticipantRole
    name: str
    machine: str | None = None

    def __post_init__(self) -> None:
        _check_pid(self.pid, "participant")


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    title: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Welcome:
    session: SessionInfo
    you: ParticipantInfo
    roster: tuple[ParticipantInfo, ...]
    hands: tuple[str, ...]
    last_seq: int
    replay: int
    """How many history events follow this frame before live traffic."""


@quick_init
@dataclass(frozen=True, slots=True)
class Ack:
    ref: str
    status: AckStatus
    seq: int | None = None
    code: int | None = None
    error: str | None = None
    text: str | None = None
    time: float | None = None
    """Delivered chat: the time the relay gave the message (its sender gets no echo)."""

    def __post_init__(self) -> None:
        if self.status is AckStatus.DELIVERED and self.seq is None:
            raise ValueError("a delivered ack carries the sequence number")
        if self.status is not AckStatus.DELIVERED and self.text is None:
            raise ValueError("a refused or held ack says why")


@quick_init
@dataclass(frozen=True, slots=True)
class ChatEvent:
    seq: int
    id: str
    sender: str
    channel: Channel
    text: str
    time: float
    to: str | None = None


@dataclass(frozen=True, slots=True)
class PresenceChange:
    seq: int
    event: PresenceEvent
    who: ParticipantInfo
    time: float


@dataclass(frozen=True, slots=True)
class HandEvent:
    seq: int
    who: str
    raised: bool
    time: float


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    code: int
    error: str
    text: str
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class SessionEnded:
    reason: str
    by: str
    time: float


ServerMessage = Welcome | Ack | ChatEvent | PresenceChange | HandEvent | ErrorFrame | SessionEnded

SequencedEvent = ChatEvent | PresenceChange | HandEvent
"""Events that carry a class sequence number and are kept in history for resume."""
