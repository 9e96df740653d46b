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

HOLD_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
"""Hold ids: ``SESSION.hN-TAG`` (the class id, a counter and a tag of the relay run)."""


class Channel(enum.Enum):
    CLASS = "class"
    DIRECT = "direct"


class AckStatus(enum.Enum):
    DELIVERED = "delivered"
    REDACTED = "redacted"
    """Delivered with parts replaced by ``[redacted:CATEGORY]``; ``redacted`` has the text."""
    REFUSED = "refused"
    HELD = "held"
    """Kept for security staff to review; a ``reviewed`` frame follows later."""


class ReviewOutcome(enum.Enum):
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


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


@dataclass(frozen=True, slots=True)
class ReviewList:
    """Staff ask for the messages of their class that wait for review."""

    id: str


@dataclass(frozen=True, slots=True)
class Review:
    """Staff approve (deliver late) or reject a held message."""

    id: str
    hold: str
    approve: bool
    reason: str = ""

    def __post_init__(self) -> None:
        if not HOLD_ID_PATTERN.match(self.hold):
            raise ValueError(f"hold id {self.hold!r} is not valid")
        if not self.approve and not self.reason.strip():
            raise ValueError("a reason is required to reject a held message")
        if FORBIDDEN_CONTROLS.search(self.reason):
            raise ValueError("the reason must not contain control characters")


CLASS_WORKSPACE = "class"
"""The class workspace: the instructor drives it, everyone in the class sees it."""


def check_workspace(ws: str) -> None:
    """``class`` or ``learner:NAME`` (a learner's private workspace)."""
    if ws == CLASS_WORKSPACE:
        return
    role, _, name = ws.partition(":")
    if role != "learner" or not valid_name(name):
        raise ValueError(f"workspace {ws!r} is not 'class' or 'learner:NAME'")


@dataclass(frozen=True, slots=True)
class EditorSync:
    """Yjs sync step 1: the client's state vector; the relay answers with what it lacks."""

    id: str
    ws: str
    sv: bytes = b"\x00"

    def __post_init__(self) -> None:
        check_workspace(self.ws)


@dataclass(frozen=True, slots=True)
class EditorUpdate:
    """A Yjs (v1) update of a workspace: typing, file creation, rename, delete."""

    id: str
    ws: str
    update: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_workspace(self.ws)
        if not self.update:
            raise ValueError("an editor update must not be empty")


@dataclass(frozen=True, slots=True)
class EditorPresence:
    """Awareness: which file the sender has open, and the cursor and selection in it."""

    id: str
    ws: str
    file: str | None = None
    anchor: int = 0
    head: int = 0

    def __post_init__(self) -> None:
        check_workspace(self.ws)
        if self.anchor < 0 or self.head < 0:
            raise ValueError("cursor positions must not be negative")
        if self.file is not None and (not self.file or FORBIDDEN_CONTROLS.search(self.file)):
            raise ValueError("the file name must not be empty or hold control characters")


@dataclass(frozen=True, slots=True)
class EditorLecture:
    """The instructor turns lecture mode on (class workspace read-only, all follow) or off."""

    id: str
    on: bool


@dataclass(frozen=True, slots=True)
class EditorShare:
    """The instructor shows a learner's workspace to the whole class, or stops."""

    id: str
    learner: str
    shared: bool

    def __post_init__(self) -> None:
        if not valid_name(self.learner):
            raise ValueError(f"learner id {self.learner!r} is not valid")


SHARE_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
"""Share ids: ``SESSION.sN-TAG`` (the class id, a counter and a tag of the relay run)."""

MAX_SDP_CHARS = 16_000
"""Longest session description (WebRTC offer or answer) on the wire."""


def _check_sdp(sdp: str) -> None:
    if not sdp.startswith("v=0"):
        raise ValueError("the session description must be SDP (start with 'v=0')")


def _check_share(share: str) -> None:
    if not SHARE_ID_PATTERN.match(share):
        raise ValueError(f"share id {share!r} is not valid")


@dataclass(frozen=True, slots=True)
class ShareStart:
    """Publish a screen: a WebRTC offer with one video track the sender sends."""

    id: str
    sdp: str = field(repr=False)

    def __post_init__(self) -> None:
        _check_sdp(self.sdp)


@dataclass(frozen=True, slots=True)
class ShareWatch:
    """Receive a share: a WebRTC offer with one video track the sender receives."""

    id: str
    share: str
    sdp: str = field(repr=False)

    def __post_init__(self) -> None:
        _check_share(self.share)
        _check_sdp(self.sdp)


@dataclass(frozen=True, slots=True)
class ShareStop:
    """End a share: its publisher, the instructor, or security staff."""

    id: str
    share: str
    reason: str = ""

    def __post_init__(self) -> None:
        _check_share(self.share)
        if FORBIDDEN_CONTROLS.search(self.reason):
            raise ValueError("the reason must not contain control characters")


@dataclass(frozen=True, slots=True)
class ShareAsk:
    """The instructor asks a learner to show their screen."""

    id: str
    learner: str

    def __post_init__(self) -> None:
        if not valid_name(self.learner):
            raise ValueError(f"learner id {self.learner!r} is not valid")


ClientMessage = (
    Hello
    | Chat
    | Hand
    | EndSession
    | Bye
    | ReviewList
    | Review
    | EditorSync
    | EditorUpdate
    | EditorPresence
    | EditorLecture
    | EditorShare
    | ShareStart
    | ShareWatch
    | ShareStop
    | ShareAsk
)

CLIENT_TYPES: dict[str, type[ClientMessage]] = {
    "hello": Hello,
    "chat": Chat,
    "hand": Hand,
    "end_session": EndSession,
    "bye": Bye,
    "review_list": ReviewList,
    "review": Review,
    "editor_sync": EditorSync,
    "editor_update": EditorUpdate,
    "editor_presence": EditorPresence,
    "editor_lecture": EditorLecture,
    "editor_share": EditorShare,
    "share_start": ShareStart,
    "share_watch": ShareWatch,
    "share_stop": ShareStop,
    "share_ask": ShareAsk,
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
    redacted: str | None = None
    """Redacted chat: the text as it was delivered."""
    hold: str | None = None
    """Held chat: the id of the hold, which the later ``reviewed`` frame names."""

    def __post_init__(self) -> None:
        delivered = self.status is AckStatus.DELIVERED or self.status is AckStatus.REDACTED
        if delivered and self.seq is None:
            raise ValueError("a delivered ack carries the sequence number")
        if self.status is not AckStatus.DELIVERED and self.text is None:
            raise ValueError("a redacted, refused or held ack says why")
        if (self.status is AckStatus.REDACTED) != (self.redacted is not None):
            raise ValueError("a redacted ack, and only it, carries the redacted text")
        if (self.status is AckStatus.HELD) != (self.hold is not None):
            raise ValueError("a held ack, and only it, names the hold")


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
    approved_by: str | None = None
    """Set when the message was held for review and staff approved it late."""
    sent: float | None = None
    """For a message approved late: when it was sent (``time`` is when it was delivered)."""

    def __post_init__(self) -> None:
        if (self.approved_by is None) != (self.sent is None):
            raise ValueError("an approved-late chat event names the approver and the send time")


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


@dataclass(frozen=True, slots=True)
class HeldInfo:
    """A message waiting for review, as staff see it (its content included)."""

    hold: str
    ref: str
    """The message id the sender gave it."""
    sender: str
    channel: Channel
    text: str
    time: float
    expires: float
    rule: str
    reason: str
    categories: tuple[str, ...]
    to: str | None = None


@dataclass(frozen=True, slots=True)
class HeldNotice:
    """To staff in the class: a message was just held for review."""

    held: HeldInfo


@dataclass(frozen=True, slots=True)
class Holds:
    """The answer to ``review_list``: the class's messages waiting for review."""

    ref: str
    holds: tuple[HeldInfo, ...]


@dataclass(frozen=True, slots=True)
class Reviewed:
    """A held message was approved, rejected or expired (to its sender and to staff)."""

    hold: str
    ref: str
    outcome: ReviewOutcome
    by: str
    reason: str
    time: float
    seq: int | None = None
    """Approved: the sequence number it was delivered with."""

    def __post_init__(self) -> None:
        if (self.outcome is ReviewOutcome.APPROVED) != (self.seq is not None):
            raise ValueError("an approval, and only it, carries the delivered sequence number")


@dataclass(frozen=True, slots=True)
class AlertNotice:
    """To staff in the class: a delivered message matched a rule that alerts staff."""

    ref: str
    seq: int
    sender: str
    rule: str
    reason: str
    categories: tuple[str, ...]
    time: float


@dataclass(frozen=True, slots=True)
class EditorState:
    """Yjs sync step 2 and step 1 at once: what the asker lacked, and the relay's state."""

    ref: str
    ws: str
    update: bytes = field(repr=False)
    sv: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class EditorUpdateEvent:
    """A change of a workspace, as the relay applied it.

    ``by`` is who made it (``relay`` for a compensation or redaction the relay authored);
    ``ref`` is set only on the frame to the author that answers its own update.
    """

    ws: str
    update: bytes = field(repr=False)
    by: str
    time: float
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class EditorPresenceEvent:
    ws: str
    who: str
    file: str | None
    anchor: int
    head: int
    time: float


@dataclass(frozen=True, slots=True)
class EditorModeEvent:
    """Lecture mode, and which learners' workspaces the class sees (sent on every change
    and right after ``welcome``)."""

    lecture: bool
    shared: tuple[str, ...]
    by: str
    time: float


@dataclass(frozen=True, slots=True)
class ShareAnswer:
    """The relay's WebRTC answer to ``share_start`` or ``share_watch``."""

    ref: str
    share: str
    sdp: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ShareStarted:
    """A share began: those who may watch it can send ``share_watch``."""

    share: str
    by: str
    time: float
    width: int = 0
    height: int = 0


@dataclass(frozen=True, slots=True)
class ShareStopped:
    share: str
    by: str
    reason: str
    time: float


@dataclass(frozen=True, slots=True)
class ShareAsked:
    """To a learner: the instructor asks to see their screen (``share_start`` allowed)."""

    by: str
    time: float
    until: float


ServerMessage = (
    Welcome
    | Ack
    | ChatEvent
    | PresenceChange
    | HandEvent
    | ErrorFrame
    | SessionEnded
    | HeldNotice
    | Holds
    | Reviewed
    | AlertNotice
    | EditorState
    | EditorUpdateEvent
    | EditorPresenceEvent
    | EditorModeEvent
    | ShareAnswer
    | ShareStarted
    | ShareStopped
    | ShareAsked
)

SequencedEvent = ChatEvent | PresenceChange | HandEvent
"""Events that carry a class sequence number and are kept in history for resume."""
