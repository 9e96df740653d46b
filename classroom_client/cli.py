"""The ``classroom-client`` command, and the terminal front end it shares with
``instructor-console`` (:mod:`instructor_console.cli`).

A learner signs in on a classroom machine and, from the command line or a script, sends
a message, raises a hand, listens to the class, or works interactively::

    classroom-client --bundle pc-01.bundle --learner l1001 listen py101 --count 3 --only chat
    classroom-client --bundle pc-01.bundle --learner l1001 interactive py101
    classroom-client --bundle pc-01.bundle --learner l1001 sync py101 ~/py101
    classroom-client --bundle pc-01.bundle --learner l1001 follow py101
    classroom-client --bundle pc-01.bundle --learner l1001 watch py101 --frames 5 --out shots
    classroom-client --bundle pc-01.bundle --learner l1001 share py101 --source screen

``sync`` mirrors the learner's editor workspace to a folder (:mod:`classroom_client.workspace`),
``follow`` shows where the instructor is in the editor (:mod:`classroom_client.follow`);
the instructor's ``export`` and ``editor`` commands are defined here too. ``share``,
``share-ask`` and ``watch`` (screen share) are :mod:`classroom_client.share_cli`.

Everything that talks to the relay goes through :class:`relay.client.RelayClient`; this
module turns command lines and typed lines into its calls, and its events into lines of
text or JSON. The pure parts (event rendering, parsing of interactive lines, recipients)
take values and return values, so they are tested without a relay.

Exit codes are :class:`Exit`; ``--help`` lists them.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
import datetime as dt
import enum
import functools
import getpass
import io
import json
import logging
import os
import re
import sys
import unicodedata
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from classroom_client.client import (
    PROG,
    ClassroomClient,
    Joining,
    check_class_id,
    check_relay_address,
    open_bundle,
)
from classroom_client.workspace import DEFAULT_INTERVAL_S
from relay.client import RelayClient, describe_ack
from relay.errors import ClientError, RelayError
from relay.identity import NAME_RULE, ParticipantRole, Role, parse_pid, valid_name
from relay.limits import Limits
from relay.messages import (
    Ack,
    AckStatus,
    AlertNotice,
    Channel,
    ChatEvent,
    EditorModeEvent,
    ErrorFrame,
    HandEvent,
    HeldNotice,
    ParticipantInfo,
    PresenceChange,
    PresenceEvent,
    Reviewed,
    ReviewOutcome,
    ServerMessage,
    SessionEnded,
    ShareAsked,
    ShareStarted,
    ShareStopped,
    Welcome,
)

if TYPE_CHECKING:
    from classroom_client.follow import Pointer

PIN_ENV = "CLASSROOM_CLIENT_PIN"
DEFAULT_WAIT_S = 30.0
"""How long a one-shot command waits for the relay's decision on its message."""
INTERACTIVE_HISTORY = 50
"""Interactive mode shows at most this many of the events replayed on joining."""
DEFAULT_CONTEXT = 5
"""``follow`` and ``/show`` print this many lines before and after the cursor line."""

# ---------------------------------------------------------------------------------------
# exit codes and the two sides
# ---------------------------------------------------------------------------------------


class Exit(enum.IntEnum):
    """Exit codes of ``instructor-console`` and ``classroom-client``."""

    OK = 0
    """Done: delivered; listen reached --count or --timeout; the user left."""
    FAILED = 2
    """Could not start: usage, bundle, address, unreachable relay, join refused."""
    REFUSED = 3
    """After joining: a message refused or held, the class ended, the credential revoked."""
    INTERRUPTED = 130
    """Ctrl-C."""


@dataclass(frozen=True, slots=True)
class Side:
    """Which of the two clients a front end serves."""

    prog: str
    role: ParticipantRole
    description: str

    @property
    def instructor(self) -> bool:
        return self.role is ParticipantRole.INSTRUCTOR


LEARNER_SIDE = Side(
    prog=PROG,
    role=ParticipantRole.LEARNER,
    description="Sign a learner in to a live class from this classroom machine: send a "
    "message, raise a hand, listen to the class, work interactively, sync your editor "
    "workspace with a folder, follow the instructor in the editor, watch a screen share, "
    "or share your screen when the instructor asks.",
)


class Command(enum.Enum):
    CHAT = "chat"
    LISTEN = "listen"
    WHO = "who"
    HAND = "hand"
    LOWER_HAND = "lower-hand"
    INTERACTIVE = "interactive"
    SYNC = "sync"
    FOLLOW = "follow"
    EXPORT = "export"
    EDITOR = "editor"
    SHARE = "share"
    SHARE_ASK = "share-ask"
    WATCH = "watch"


class EventType(enum.Enum):
    """What an event is, as ``--only`` and the JSON ``type`` key name it."""

    CHAT = "chat"
    PRESENCE = "presence"
    HAND = "hand"
    SESSION_ENDED = "session_ended"
    ERROR = "error"
    HELD = "held"
    REVIEWED = "reviewed"
    ALERT = "alert"
    SHARE = "share"
    """Screen share started, stopped, or the instructor asking a learner to share."""


_EVENT_TYPES: dict[type, EventType] = {
    ChatEvent: EventType.CHAT,
    PresenceChange: EventType.PRESENCE,
    HandEvent: EventType.HAND,
    SessionEnded: EventType.SESSION_ENDED,
    ErrorFrame: EventType.ERROR,
    HeldNotice: EventType.HELD,
    Reviewed: EventType.REVIEWED,
    AlertNotice: EventType.ALERT,
    ShareStarted: EventType.SHARE,
    ShareStopped: EventType.SHARE,
    ShareAsked: EventType.SHARE,
}


def shown_event(event: ServerMessage) -> bool:
    """True for events ``listen`` prints (editor traffic is the sync command's business)."""
    return type(event) in _EVENT_TYPES


def event_type(event: ServerMessage) -> EventType:
    found = _EVENT_TYPES.get(type(event))
    if found is None:
        raise ValueError(f"{type(event).__name__} is not an event a client shows")
    return found


def event_seq(event: ServerMessage) -> int | None:
    if isinstance(event, ChatEvent | PresenceChange | HandEvent):
        return event.seq
    return None


# ---------------------------------------------------------------------------------------
# rendering events (pure)
# ---------------------------------------------------------------------------------------

_BIDI_CONTROLS = [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C]
_UNSAFE = {
    code: f"\\u{code:04x}"
    for code in [*range(0x00, 0x20), *range(0x7F, 0xA0), *_BIDI_CONTROLS]
    if code not in (0x09, 0x0A)
}


def clean_text(text: str, indent: str = "    ") -> str:
    """Text from the relay made safe for a terminal.

    Control characters (escape sequences) and bidirectional overrides are shown escaped;
    line breaks become a new line starting with ``indent``, so that a message can never
    pose as a line of its own (a fake ``[07:05] #class instructor:alice: ...``).
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_UNSAFE)
    return text.replace("\n", "\n" + indent)


_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def visible_line(text: str) -> str:
    """One line of a file from the relay made safe for a terminal: every control,
    invisible or direction-changing character (line breaks, zero-width spaces, bidi
    overrides) shown as an escape such as ``\\u200b``; tabs are kept."""
    if text.isprintable():
        return text
    out: list[str] = []
    for ch in text:
        if ch != "\t" and unicodedata.category(ch) in _INVISIBLE:
            code = ord(ch)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def clock(t: float) -> str:
    """``HH:MM:SS`` in this machine's local time."""
    return dt.datetime.fromtimestamp(t).strftime("%H:%M:%S")


def utc_iso(t: float) -> str:
    """ISO 8601 UTC with milliseconds and ``Z``: ``2026-05-09T07:05:12.250Z``."""
    stamp = dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _who_text(p: ParticipantInfo) -> str:
    return f"{p.pid} (on {p.machine})" if p.machine else p.pid


def format_event(event: ServerMessage, now: float) -> str:
    """One readable line (continuation lines indented) for an event.

    ``now`` stamps events that carry no time of their own (relay notices).
    """
    if isinstance(event, ChatEvent):
        text = clean_text(event.text)
        if event.approved_by is not None and event.sent is not None:
            late = f"held for review, sent {clock(event.sent)}, approved by {event.approved_by}"
            text += f"  ({late})"
        if event.channel is Channel.DIRECT:
            return f"[{clock(event.time)}] (direct) {event.sender} -> {event.to}: {text}"
        return f"[{clock(event.time)}] #class {event.sender}: {text}"
    if isinstance(event, HeldNotice):
        h = event.held
        where = f"-> {h.to}" if h.to else "-> #class"
        return (
            f"[{clock(h.time)}] ⏸ held for review {h.hold}: {h.sender} {where}: "
            f"{clean_text(h.text)}\n    rule {h.rule}: {clean_text(h.reason)}; "
            f"expires {clock(h.expires)} unless approved"
        )
    if isinstance(event, Reviewed):
        outcome = {
            ReviewOutcome.APPROVED: f"approved by {event.by} (delivered, seq {event.seq})",
            ReviewOutcome.REJECTED: f"rejected by {event.by}",
            ReviewOutcome.EXPIRED: "expired unreviewed",
        }[event.outcome]
        why = f": {clean_text(event.reason)}" if event.reason else ""
        return f"[{clock(event.time)}] ⏵ held message {event.ref} ({event.hold}) {outcome}{why}"
    if isinstance(event, AlertNotice):
        return (
            f"[{clock(event.time)}] ⚠ alert: message {event.seq} of {event.sender} matched "
            f"{event.rule} ({', '.join(event.categories)}): {clean_text(event.reason)}"
        )
    if isinstance(event, PresenceChange):
        verb = "joined" if event.event is PresenceEvent.JOINED else "left"
        return f"[{clock(event.time)}] * {_who_text(event.who)} {verb}"
    if isinstance(event, HandEvent):
        action = "raised a hand" if event.raised else "lowered the hand"
        return f"[{clock(event.time)}] ✋ {event.who} {action}"
    if isinstance(event, SessionEnded):
        return (
            f"[{clock(event.time)}] ! the class has ended (by {event.by}): "
            f"{clean_text(event.reason)}"
        )
    if isinstance(event, ErrorFrame):
        return f"[{clock(now)}] ! relay notice ({event.error}): {clean_text(event.text)}"
    if isinstance(event, ShareStarted):
        return f"[{clock(event.time)}] ▶ {event.by} started screen share {event.share}"
    if isinstance(event, ShareStopped):
        return (
            f"[{clock(event.time)}] ■ screen share {event.share} stopped by {event.by}: "
            f"{clean_text(event.reason)}"
        )
    if isinstance(event, ShareAsked):
        return (
            f"[{clock(event.time)}] ▶ {event.by} asks you to share your screen "
            f"(until {clock(event.until)})"
        )
    raise ValueError(f"{type(event).__name__} is not an event a client shows")


def format_mode(event: EditorModeEvent) -> str:
    """The line shown when the instructor changes lecture mode or sharing."""
    lecture = "on (the class workspace is read-only)" if event.lecture else "off"
    shared = ", ".join(event.shared) or "none"
    return (
        f"[{clock(event.time)}] ✎ editor: lecture mode {lecture}; shared with the class: "
        f"{shared} (by {event.by})"
    )


def event_record(event: ServerMessage, *, history: bool, now: float) -> dict[str, Any]:
    """The JSON object ``listen --json`` prints for an event (one per line).

    Always: ``type``, ``from`` (pid or null), ``channel``, ``text``, ``time`` (ISO 8601
    UTC), ``seq``, ``to`` (null where they do not apply) and ``history`` (true for events
    the relay replayed from before this client joined). Per type: chat ``id``; presence
    ``event`` and ``who`` (a participant map); hand ``who`` and ``raised``;
    session_ended ``by``; error ``code`` and ``error``. A chat approved late after review
    adds ``approved_by`` and ``sent``. Review traffic: held (staff; ``hold``, ``id``,
    ``rule``, ``reason``, ``categories``, ``expires``), reviewed (``hold``, ``id``,
    ``outcome``, ``seq``; ``from`` is the reviewer, ``text`` the reason) and alert (staff;
    ``id``, ``rule``, ``categories``; ``text`` is the reason). Screen share: ``share``
    (``event`` started / stopped, ``from`` who; stopped: ``text`` the reason) and the
    instructor asking you to share (``event`` asked, ``until``).
    """
    record: dict[str, Any] = {
        "type": event_type(event).value,
        "from": None,
        "channel": None,
        "text": None,
        "time": utc_iso(now),
        "seq": event_seq(event),
        "to": None,
        "history": history,
    }
    if isinstance(event, ChatEvent):
        record.update(
            {
                "from": event.sender,
                "channel": event.channel.value,
                "text": event.text,
                "time": utc_iso(event.time),
                "to": event.to,
                "id": event.id,
            }
        )
        if event.approved_by is not None and event.sent is not None:
            record.update({"approved_by": event.approved_by, "sent": utc_iso(event.sent)})
    elif isinstance(event, HeldNotice):
        h = event.held
        record.update(
            {
                "from": h.sender,
                "channel": h.channel.value,
                "text": h.text,
                "time": utc_iso(h.time),
                "to": h.to,
                "hold": h.hold,
                "id": h.ref,
                "rule": h.rule,
                "reason": h.reason,
                "categories": list(h.categories),
                "expires": utc_iso(h.expires),
            }
        )
    elif isinstance(event, Reviewed):
        record.update(
            {
                "from": event.by,
                "text": event.reason,
                "time": utc_iso(event.time),
                "hold": event.hold,
                "id": event.ref,
                "outcome": event.outcome.value,
                "seq": event.seq,
            }
        )
    elif isinstance(event, AlertNotice):
        record.update(
            {
                "from": event.sender,
                "text": event.reason,
                "time": utc_iso(event.time),
                "seq": event.seq,
                "id": event.ref,
                "rule": event.rule,
                "categories": list(event.categories),
            }
        )
    elif isinstance(event, ShareStarted | ShareStopped):
        record.update({"from": event.by, "time": utc_iso(event.time), "share": event.share})
        if isinstance(event, ShareStopped):
            record.update({"text": event.reason, "event": "stopped"})
        else:
            record["event"] = "started"
    elif isinstance(event, ShareAsked):
        record.update(
            {
                "from": event.by,
                "time": utc_iso(event.time),
                "event": "asked",
                "until": utc_iso(event.until),
            }
        )
    elif isinstance(event, PresenceChange):
        record.update(
            {
                "from": event.who.pid,
                "time": utc_iso(event.time),
                "event": event.event.value,
                "who": participant_record(event.who),
            }
        )
    elif isinstance(event, HandEvent):
        record.update(
            {
                "from": event.who,
                "time": utc_iso(event.time),
                "who": event.who,
                "raised": event.raised,
            }
        )
    elif isinstance(event, SessionEnded):
        record.update(
            {"from": event.by, "text": event.reason, "time": utc_iso(event.time), "by": event.by}
        )
    elif isinstance(event, ErrorFrame):
        record.update({"text": event.text, "code": event.code, "error": event.error})
    return record


def participant_record(p: ParticipantInfo) -> dict[str, Any]:
    return {"pid": p.pid, "role": p.role.value, "name": p.name, "machine": p.machine}


def ordered_hands(first: Sequence[str], raised: set[str]) -> list[str]:
    """Raised hands in the order they were raised (as far as this client saw it)."""
    seen = [pid for pid in dict.fromkeys(first) if pid in raised]
    return seen + sorted(raised.difference(seen))


def format_roster(
    welcome: Welcome,
    roster: Sequence[ParticipantInfo],
    hands: Sequence[str],
) -> list[str]:
    """The lines ``who`` prints: the class, who is present, raised hands."""
    s = welcome.session
    day = dt.datetime.fromtimestamp(s.start).strftime("%Y-%m-%d")
    lines = [
        f'Class {s.id} "{clean_text(s.title)}", {day} '
        f"{clock(s.start)[:5]} to {clock(s.end)[:5]} (local time)",
        f"Present ({len(roster)}):",
    ]
    width = max((len(p.pid) for p in roster), default=0)
    for p in roster:
        notes = [f"on {p.machine}"] if p.machine else []
        if p.pid == welcome.you.pid:
            notes.append("you")
        lines.append(f"  {p.pid.ljust(width)}  {', '.join(notes)}".rstrip())
    if hands:
        lines.append(f"Raised hands ({len(hands)}, first raised first): {', '.join(hands)}")
    else:
        lines.append("Raised hands: none")
    return lines


# ---------------------------------------------------------------------------------------
# checks before sending (pure)
# ---------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_MAX_TEXT_BYTES = Limits().max_str_bytes


def check_text(text: str) -> str:
    """A chat text the relay can decode; :class:`ClientError` says what is wrong.

    The relay decides everything else (length in characters, content policy).
    """
    if not text.strip():
        raise ClientError("the message is empty; write some text")
    bad = _CONTROL.search(text)
    if bad is not None:
        raise ClientError(
            f"the message contains the control character U+{ord(bad.group()):04X}, "
            "which the relay does not accept; remove it (tabs and line breaks are fine)"
        )
    size = len(text.encode("utf-8"))
    if size > _MAX_TEXT_BYTES:
        raise ClientError(
            f"the message is {size} bytes long, the relay accepts at most "
            f"{_MAX_TEXT_BYTES} bytes (and by default 4000 characters); split it into "
            "several messages"
        )
    return text


def check_recipient(text: str, side: Side) -> str:
    """Check the form of a recipient before connecting (see :func:`resolve_recipient`)."""
    if side.role is ParticipantRole.LEARNER and text == "instructor":
        return text
    if parse_pid(text) is not None:
        return text
    if side.instructor and valid_name(text):
        return f"learner:{text}"
    example = "learner:l1001" if side.instructor else "instructor or instructor:NAME"
    raise ClientError(
        f"{text!r} is not a recipient: write a participant id such as {example} "
        "(ROLE:NAME, who lists who is present)"
    )


def resolve_recipient(text: str, side: Side, roster: Mapping[str, ParticipantInfo]) -> str:
    """The pid a message goes to: ``learner:ID``, ``instructor:NAME``; for an instructor a
    bare learner id; for a learner ``instructor`` (the instructor present in the class).
    """
    pid = check_recipient(text, side)
    if pid != "instructor":
        return pid
    present = [p.pid for p in roster.values() if p.role is ParticipantRole.INSTRUCTOR]
    if len(present) == 1:
        return present[0]
    if not present:
        raise ClientError(
            "the instructor is not in the class right now, so this client does not "
            "know their name; write to instructor:NAME (messages reach them when they join) "
            "or to the class"
        )
    raise ClientError(f"more than one instructor is present ({', '.join(present)}); name one")


def check_learner_pid(text: str, side: Side) -> str:
    pid = check_recipient(text, side)
    parsed = parse_pid(pid)
    if parsed is None or parsed[0] is not ParticipantRole.LEARNER:
        raise ClientError(
            f"{text!r} is not a learner: only learners raise hands; give a learner id such as "
            "learner:l1001 (who lists the raised hands)"
        )
    return pid


# ---------------------------------------------------------------------------------------
# lines typed in interactive mode (pure)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SayToClass:
    text: str


@dataclass(frozen=True, slots=True)
class SayDirect:
    to: str
    text: str


@dataclass(frozen=True, slots=True)
class SetHand:
    raised: bool


@dataclass(frozen=True, slots=True)
class LowerHand:
    who: str


@dataclass(frozen=True, slots=True)
class OpenFile:
    """Instructor: open ``file`` of ``ws`` for the class, the cursor on ``line``."""

    ws: str
    file: str
    line: int


@dataclass(frozen=True, slots=True)
class ShowOpen:
    """Instructor: print the file opened for the class around the cursor."""


@dataclass(frozen=True, slots=True)
class ShowWho:
    pass


@dataclass(frozen=True, slots=True)
class ShowHelp:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that is not a valid command; ``message`` says why and what to type."""

    message: str


Action = (
    SayToClass
    | SayDirect
    | SetHand
    | LowerHand
    | OpenFile
    | ShowOpen
    | ShowWho
    | ShowHelp
    | Quit
    | BadLine
)


def interactive_help(side: Side) -> list[str]:
    if side.instructor:
        specific = [
            "  /dm PID TEXT          a direct message to one learner, e.g. /dm learner:l1001 Hi",
            "  /lower PID            lower a learner's raised hand, e.g. /lower learner:l1002",
            "  /open WS FILE [LINE]  open a file for the class to follow (classroom-client",
            "                        follow), e.g. /open class loops.py 3",
            "  /show                 print the file opened for the class around the cursor",
        ]
    else:
        specific = [
            "  /dm instructor TEXT   a direct message to the instructor in the class",
            "  /dm PID TEXT          a direct message to a participant, e.g. instructor:alice",
            "  /hand up|down         raise or lower your hand",
        ]
    return [
        "Type a line and press Enter to send it to the whole class. Commands:",
        *specific,
        "  /who                  who is present and whose hand is raised",
        "  /help                 this list",
        "  /quit                 leave the class (the end of the input leaves too)",
        "  //TEXT                send a line that starts with /",
    ]


def parse_line(line: str, side: Side) -> Action | None:
    """What a line typed in interactive mode asks for (None: an empty line)."""
    text = line.rstrip("\r\n")
    if not text.strip():
        return None
    if text.startswith("//"):
        return SayToClass(text[1:])
    if not text.startswith("/"):
        return SayToClass(text)
    word, _, rest = text[1:].strip().partition(" ")
    word = word.lower()
    rest = rest.strip()
    if word in ("quit", "exit", "q"):
        return Quit()
    if word in ("help", "?", "h"):
        return ShowHelp()
    if word == "who":
        return ShowWho()
    if word in ("dm", "msg"):
        to, _, message = rest.partition(" ")
        if not to or not message.strip():
            return BadLine("usage: /dm PID TEXT, e.g. /dm learner:l1001 hello")
        return SayDirect(to, message.strip())
    if word == "hand":
        if side.instructor:
            return BadLine("only learners raise hands; /lower PID lowers a learner's hand")
        if rest.lower() in ("up", "down"):
            return SetHand(rest.lower() == "up")
        return BadLine("usage: /hand up or /hand down")
    if word == "lower":
        if not side.instructor:
            return BadLine("only the instructor lowers others' hands; /hand down lowers yours")
        if not rest or " " in rest:
            return BadLine("usage: /lower PID, e.g. /lower learner:l1002")
        return LowerHand(rest)
    if word in ("open", "show"):
        if not side.instructor:
            return BadLine(
                f"only the instructor uses /{word}; classroom-client follow shows where the "
                "instructor is"
            )
        if word == "show":
            return ShowOpen()
        return _open_file(rest)
    return BadLine(
        f"unknown command /{word}; type /help for the list (start a line with // to send "
        "a message that begins with /)"
    )


_OPEN_USAGE = "usage: /open WS FILE [LINE], e.g. /open class loops.py 3"


def _open_file(rest: str) -> Action:
    ws, _, more = rest.partition(" ")
    file, line = more.strip(), 1
    head, _, last = file.rpartition(" ")
    if head.strip() and last.isascii() and last.isdigit():
        file, line = head.strip(), int(last)
    if not ws or not file:
        return BadLine(_OPEN_USAGE)
    if line < 1:
        return BadLine(f"{_OPEN_USAGE} (lines are numbered from 1)")
    return OpenFile(ws, file, line)


# ---------------------------------------------------------------------------------------
# the terminal
# ---------------------------------------------------------------------------------------


def _write(stream: TextIO, line: str) -> None:
    try:
        stream.write(line + "\n")
    except UnicodeEncodeError:
        encoding = stream.encoding or "ascii"
        stream.write(line.encode(encoding, "backslashreplace").decode(encoding) + "\n")
    stream.flush()


@dataclass(frozen=True, slots=True)
class Terminal:
    """Where a front end writes: results on stdout, problems on stderr."""

    prog: str

    def out(self, line: str) -> None:
        _write(sys.stdout, line)

    def note(self, text: str) -> None:
        _write(sys.stderr, f"{self.prog}: {text}")

    def error(self, text: str) -> None:
        self.note(f"error: {text}")

    def problem(self, exc: RelayError) -> None:
        """``refused: <relay's text>`` when the relay said no, else ``error: <text>``."""
        if isinstance(exc, ClientError) and exc.code is not None:
            self.note(f"refused: {exc}")
        else:
            self.error(str(exc))

    def decision(self, ack: Ack) -> Exit:
        """Report the relay's decision on a message of a one-shot command."""
        if ack.status is AckStatus.DELIVERED:
            self.out(describe_ack(ack))
            return Exit.OK
        if ack.status is AckStatus.REDACTED:
            self.out(f"delivered redacted (seq {ack.seq}): {clean_text(ack.redacted or '')}")
            self.note(f"redacted: {ack.text}")
            return Exit.OK
        self.note(f"{ack.status.value}: {ack.text or ack.error}")
        return Exit.REFUSED


class _NoteHandler(logging.Handler):
    """Shows the client library's reconnect notices on stderr while a command runs."""

    def __init__(self, term: Terminal) -> None:
        super().__init__(logging.INFO)
        self.term = term

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.term.note(f"note: {record.getMessage()}")


@contextlib.contextmanager
def client_notes(term: Terminal) -> Iterator[None]:
    logger = logging.getLogger("relay.client")
    handler = _NoteHandler(term)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class StdinLines:
    """Lines of standard input, read without blocking the event loop.

    A terminal or a pipe is watched with ``loop.add_reader`` and read with one
    ``os.read`` per readiness (the descriptor stays blocking, so a shared terminal is not
    switched to non-blocking mode, and no thread is left blocked when the class ends).
    A regular file (``< lines.txt``), or a loop without ``add_reader``, is read line by
    line in a worker thread instead.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdin
        encoding = getattr(self._stream, "encoding", None) or "utf-8"
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._partial = ""
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._eof = False

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            fd = self._stream.fileno()
            loop.add_reader(fd, self._readable)
        except (OSError, ValueError, NotImplementedError):
            return  # read in a thread (see readline)
        self._fd, self._loop = fd, loop

    def close(self) -> None:
        self._eof = True
        if self._fd is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._fd = None

    async def readline(self) -> str | None:
        """The next line without its line break; None at the end of the input."""
        if self._fd is not None or not self._lines.empty():
            return await self._lines.get()
        if self._eof:
            return None
        line: str = await asyncio.to_thread(self._stream.readline)
        if not line:
            self._eof = True
            return None
        return line.rstrip("\r\n")

    def _readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            *lines, self._partial = (self._partial + self._decoder.decode(data)).split("\n")
            for line in lines:
                self._lines.put_nowait(line.rstrip("\r"))
            return
        rest = self._partial + self._decoder.decode(b"", final=True)
        if rest:
            self._lines.put_nowait(rest.rstrip("\r"))
        self._lines.put_nowait(None)
        self.close()


# ---------------------------------------------------------------------------------------
# running commands
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListenOptions:
    count: int | None = None
    timeout: float | None = None
    json: bool = False
    only: frozenset[EventType] = frozenset()
    history: bool = True


def _now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


def finished_exit(client: RelayClient, term: Terminal) -> Exit:
    """Why the client stopped (class ended, credential revoked, ...), reported."""
    if client.ended is not None:
        term.note(
            f"the class has ended (by {client.ended.by}): {clean_text(client.ended.reason)}. "
            "It cannot be joined again; the facility can schedule a new one."
        )
        return Exit.REFUSED
    error = client.error
    if error is None:
        return Exit.OK
    term.problem(error)
    return Exit.REFUSED if error.code is not None else Exit.FAILED


async def run_joined(
    term: Terminal, joining: Joining, body: Callable[[RelayClient], Awaitable[Exit]]
) -> Exit:
    """Join, run ``body``, leave. Join failures exit 2; refusals after joining exit 3."""
    try:
        client = await joining
    except ClientError as exc:
        term.problem(exc)
        return Exit.FAILED
    try:
        with client_notes(term):
            return await body(client)
    except ClientError as exc:
        term.problem(exc)
        return Exit.REFUSED if exc.code is not None else Exit.FAILED
    finally:
        await client.close()


async def _decided(term: Terminal, request: Awaitable[Ack], wait: float) -> Exit:
    try:
        ack = await asyncio.wait_for(request, wait)
    except TimeoutError:
        term.error(
            f"no decision from the relay within {wait:g} s (the connection is down or slow); "
            "the message may or may not have been delivered: check the class (listen, who) "
            "before sending it again"
        )
        return Exit.FAILED
    return term.decision(ack)


async def do_chat(
    client: RelayClient, term: Terminal, side: Side, text: str, to: str | None, wait: float
) -> Exit:
    pid = resolve_recipient(to, side, client.roster) if to is not None else None
    return await _decided(term, client.chat(text, to=pid), wait)


async def do_hand(
    client: RelayClient, term: Terminal, raised: bool, who: str | None, wait: float
) -> Exit:
    return await _decided(term, client.hand(raised, who=who), wait)


async def do_who(client: RelayClient, term: Terminal, as_json: bool) -> Exit:
    welcome = client.welcome
    assert welcome is not None
    if as_json:
        s = welcome.session
        term.out(
            json.dumps(
                {
                    "session": {
                        "id": s.id,
                        "title": s.title,
                        "start": utc_iso(s.start),
                        "end": utc_iso(s.end),
                    },
                    "you": participant_record(welcome.you),
                    "roster": [participant_record(p) for p in welcome.roster],
                    "hands": list(welcome.hands),
                    "last_seq": welcome.last_seq,
                },
                ensure_ascii=False,
            )
        )
        return Exit.OK
    for line in format_roster(welcome, welcome.roster, welcome.hands):
        term.out(line)
    return Exit.OK


async def do_listen(client: RelayClient, term: Terminal, opts: ListenOptions) -> Exit:
    welcome = client.welcome
    assert welcome is not None
    history_until = welcome.last_seq
    printed = 0
    if opts.count == 0:
        return Exit.OK
    try:
        async with asyncio.timeout(opts.timeout):
            async for event in client.events():
                if not shown_event(event):
                    continue
                seq = event_seq(event)
                history = seq is not None and seq <= history_until
                if history and not opts.history:
                    continue
                if opts.only and event_type(event) not in opts.only:
                    continue
                now = _now()
                if opts.json:
                    record = event_record(event, history=history, now=now)
                    term.out(json.dumps(record, ensure_ascii=False))
                else:
                    term.out(format_event(event, now))
                printed += 1
                if opts.count is not None and printed >= opts.count:
                    return Exit.OK
    except TimeoutError:
        return Exit.OK
    return finished_exit(client, term)


class _Ending(enum.Enum):
    QUIT = "quit"
    CLIENT_FINISHED = "client finished"


class _Shown:
    """The highest sequence number the event printer has shown, to wait on."""

    def __init__(self) -> None:
        self.seq = 0
        self.done = False
        self._changed = asyncio.Event()

    def show(self, seq: int | None) -> None:
        if seq is not None and seq > self.seq:
            self.seq = seq
            self._changed.set()

    def stop(self) -> None:
        self.done = True
        self._changed.set()

    async def reach(self, seq: int, wait: float = 2.0) -> None:
        """Wait (briefly) until the event ``seq`` was shown, so that a decision's event
        is on screen before the next typed line runs (``/hand up`` then ``/who``)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                while self.seq < seq and not self.done:
                    self._changed.clear()
                    await self._changed.wait()


async def _point(term: Terminal, pointer: Pointer, action: OpenFile | ShowOpen) -> None:
    """``/open`` and ``/show``: the instructor's view for the class (follow mode)."""
    from classroom_client.editor_cli import workspace_id
    from classroom_client.follow import Place

    if isinstance(action, ShowOpen):
        for shown in pointer.view():
            term.out(shown)
        return
    try:
        place = Place(workspace_id(action.ws), action.file, action.line)
        line = await pointer.point(place)
    except RelayError as exc:
        term.out(f"-> not opened: {exc}")
        return
    term.out(
        f"-> the class follows you at {clean_text(place.ws)}/{clean_text(place.file)} "
        f"line {line} (/show prints it)"
    )


async def _act(
    client: RelayClient,
    term: Terminal,
    side: Side,
    shown: _Shown,
    action: Action,
    pointer: Pointer | None = None,
) -> None:
    """Carry out one interactive action; problems are printed, never raised."""
    if isinstance(action, BadLine):
        term.note(action.message)
        return
    if isinstance(action, OpenFile | ShowOpen):
        if pointer is not None:
            await _point(term, pointer, action)
        return
    if isinstance(action, ShowHelp):
        for line in interactive_help(side):
            term.out(line)
        return
    if isinstance(action, ShowWho):
        assert client.welcome is not None
        hands = ordered_hands(client.welcome.hands, client.hands)
        for line in format_roster(client.welcome, list(client.roster.values()), hands):
            term.out(line)
        return
    try:
        if isinstance(action, SayToClass):
            ack = await client.chat(check_text(action.text))
        elif isinstance(action, SayDirect):
            to = resolve_recipient(action.to, side, client.roster)
            ack = await client.chat(check_text(action.text), to=to)
        elif isinstance(action, SetHand):
            ack = await client.hand(action.raised)
        elif isinstance(action, LowerHand):
            ack = await client.hand(False, who=check_learner_pid(action.who, side))
        else:
            return
    except ClientError as exc:
        if not client.finished:
            term.out(f"-> not sent: {exc}")
        return
    term.out(f"-> {describe_ack(ack)}")
    if ack.seq is not None:
        await shown.reach(ack.seq)


async def _read_actions(
    client: RelayClient,
    term: Terminal,
    side: Side,
    shown: _Shown,
    lines: StdinLines,
    pointer: Pointer | None,
) -> _Ending:
    while True:
        line = await lines.readline()
        if line is None:
            return _Ending.QUIT
        action = parse_line(line, side)
        if action is None:
            continue
        if isinstance(action, Quit):
            return _Ending.QUIT
        await _act(client, term, side, shown, action, pointer)
        if client.finished:
            return _Ending.CLIENT_FINISHED


async def _show_events(
    client: RelayClient, term: Terminal, shown: _Shown, pointer: Pointer | None
) -> None:
    from classroom_client.follow import someone_joined

    welcome = client.welcome
    assert welcome is not None
    skip = max(0, welcome.replay - INTERACTIVE_HISTORY)
    if skip:
        term.out(f"({skip} earlier events of this class are not shown; 'listen' shows them all)")
    try:
        async for event in client.events():
            if isinstance(event, EditorModeEvent):
                term.out(format_mode(event))
                continue
            if pointer is not None and someone_joined(client, event):
                pointer.joined()  # the relay does not tell joiners where the instructor is
            if not shown_event(event):
                continue
            seq = event_seq(event)
            if skip and seq is not None and seq <= welcome.last_seq:
                skip -= 1
            else:
                term.out(format_event(event, _now()))
            shown.show(seq)
    finally:
        shown.stop()


async def do_interactive(client: RelayClient, term: Terminal, side: Side) -> Exit:
    welcome = client.welcome
    assert welcome is not None
    where = f" on {welcome.you.machine}" if welcome.you.machine else ""
    term.out(
        f'Joined class {welcome.session.id} "{clean_text(welcome.session.title)}" as '
        f"{welcome.you.pid}{where}. Type a message and press Enter; /help lists commands, "
        "/quit leaves."
    )
    from classroom_client.follow import Pointer

    lines = StdinLines()
    lines.start()
    shown = _Shown()
    pointer = Pointer(client) if side.instructor else None
    shower = asyncio.create_task(_show_events(client, term, shown, pointer))
    reader = asyncio.create_task(_read_actions(client, term, side, shown, lines, pointer))
    try:
        await asyncio.wait({shower, reader}, return_when=asyncio.FIRST_COMPLETED)
        if reader.done() and reader.result() is _Ending.QUIT and not client.finished:
            await client.close()  # bye; the events that arrived are still shown
            await shower
            term.note("you left the class")
            return Exit.OK
        reader.cancel()
        await shower
        return finished_exit(client, term)
    finally:
        lines.close()
        if pointer is not None:
            await pointer.close()
        for task in (shower, reader):
            task.cancel()
        await asyncio.gather(shower, reader, return_exceptions=True)


# ---------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------


EXIT_CODES_HELP = """\
exit codes:
  0    done: the message was delivered; listen stopped after --count events or
       --timeout seconds; you left interactive mode (/quit or end of input)
  2    could not start: a usage error, an unusable bundle or --relay address, the
       relay could not be reached, or it refused to let you join (not your class,
       outside the class time, wrong PIN, revoked, ...); or no decision came in time
  3    refused after joining: the relay refused or held your message, or the class
       ended, or the relay closed your connection (credential revoked, ...)
  130  interrupted (Ctrl-C)
"""


def _epilog(side: Side) -> str:
    prog = side.prog
    text = f"""{EXIT_CODES_HELP}
Problems go to standard error, one line each:
  {prog}: refused: <the relay's reason>     the relay said no
  {prog}: error: <what went wrong>          anything else

Each command joins the class as you. A second connection of the same participant
replaces the first: running "chat" while "interactive" or "listen" runs elsewhere as
the same participant closes the older one.
"""
    if not side.instructor:
        text += f"""
The learner's PIN comes from --pin, else ${PIN_ENV}, else it is asked for
on the terminal. Prefer the variable or the prompt: command lines can be seen by
other users of this machine.
"""
    return text


_LISTEN_EPILOG = """\
--count N counts every event that is printed: chat messages, presence (joined, left),
hands, and notices (the class ended, relay errors), after filtering by --only and
--no-history. "--count 3 --only chat" stops after three chat messages.
--timeout S stops S seconds after joining. Both exit 0. With neither, listen runs until
Ctrl-C (exit 130) or until the class ends (exit 3).

When you join, the relay first replays the class's earlier events; --no-history skips
them (in --json output they carry "history": true).

--json prints one JSON object per line with the keys type (chat, presence, hand,
session_ended, error, held, reviewed, alert), from (participant id or null), channel
(class, direct or null), text (or null), time (ISO 8601 UTC), seq and to (or null),
history; and per type: chat id (and approved_by, sent for a message staff approved
after holding it); presence event (joined/left) and who (pid, role, name, machine);
hand who and raised; session_ended by; error code and error; held (shown to staff) hold,
id, rule, reason, categories, expires; reviewed (your held message was decided) hold,
id, outcome (approved, rejected, expired), seq; alert (shown to staff) id, rule,
categories.
"""


def _fmt(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=30)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _line_number(text: str) -> int:
    value = _positive_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: lines are numbered from 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value > 10**9:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def _connection_options(parser: argparse.ArgumentParser, side: Side, *, top: bool) -> None:
    """--bundle, --relay (and --learner, --pin): before or after the command."""
    default = None if top else argparse.SUPPRESS
    what = "your instructor bundle" if side.instructor else "this classroom machine's bundle"
    parser.add_argument("--bundle", metavar="FILE", default=default, help=f"{what} (required)")
    parser.add_argument(
        "--relay",
        metavar="URL",
        default=default,
        help="relay address wss://HOST:PORT, overriding the one in the bundle",
    )
    if not side.instructor:
        parser.add_argument(
            "--learner", metavar="ID", default=default, help="the learner signing in (required)"
        )
        parser.add_argument(
            "--pin",
            metavar="PIN",
            default=default,
            help=f"the learner's PIN (better: ${PIN_ENV} or the prompt)",
        )


def build_parser(side: Side = LEARNER_SIDE) -> argparse.ArgumentParser:
    """The command line of ``side``'s client."""
    parser = argparse.ArgumentParser(
        prog=side.prog,
        description=side.description,
        epilog=_epilog(side),
        formatter_class=_fmt,
    )
    _connection_options(parser, side, top=True)
    parser.set_defaults(command=None)
    shared = argparse.ArgumentParser(add_help=False)
    _connection_options(shared, side, top=False)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(cmd: Command, help_text: str, epilog: str | None = None) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            cmd.value,
            parents=[shared],
            help=help_text,
            description=help_text,
            epilog=f"{epilog}\n{EXIT_CODES_HELP}" if epilog else EXIT_CODES_HELP,
            formatter_class=_fmt,
        )
        p.set_defaults(command=cmd)
        p.add_argument("session", metavar="SESSION", help="the class id, e.g. py101")
        return p

    wait_help = (
        f"give up waiting for the relay's decision after S seconds (default {DEFAULT_WAIT_S:g})"
    )
    to_help = (
        "send a direct message to this participant (learner:ID, or just ID) instead of the class"
        if side.instructor
        else "send a direct message to the instructor ('instructor', or instructor:NAME) "
        "instead of the class"
    )
    p = command(Command.CHAT, "send one message, wait for the relay's decision, print it")
    p.add_argument("text", metavar="TEXT", help="the message")
    p.add_argument("--to", metavar="PID", help=to_help)
    p.add_argument("--wait", metavar="S", type=_seconds, default=DEFAULT_WAIT_S, help=wait_help)

    p = command(Command.LISTEN, "print the class's events as they arrive", _LISTEN_EPILOG)
    p.add_argument("--count", metavar="N", type=_positive_int, help="stop after N printed events")
    p.add_argument("--timeout", metavar="S", type=_seconds, help="stop S seconds after joining")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "--only",
        metavar="TYPE",
        action="append",
        choices=[t.value for t in EventType],
        help="print only events of this type: "
        + ", ".join(t.value for t in EventType)
        + " (repeatable)",
    )
    p.add_argument(
        "--no-history",
        dest="history",
        action="store_false",
        help="skip the events the relay replays from before you joined",
    )

    if side.instructor:
        p = command(Command.LOWER_HAND, "lower a learner's raised hand")
        p.add_argument("who", metavar="PID", help="the learner, e.g. learner:l1002")
    else:
        p = command(Command.HAND, "raise or lower your hand")
        p.add_argument("position", choices=["up", "down"], help="up raises, down lowers")
    p.add_argument("--wait", metavar="S", type=_seconds, default=DEFAULT_WAIT_S, help=wait_help)

    p = command(Command.WHO, "print who is present and whose hand is raised, then leave")
    p.add_argument("--json", action="store_true", help="one JSON object")

    command(
        Command.INTERACTIVE,
        "join and chat from the terminal (or a pipe): lines are messages, /help lists "
        "commands, /quit or end of input leaves",
    )
    from classroom_client.share_cli import add_share_commands

    add_share_commands(command, side, wait_help, (Command.SHARE, Command.SHARE_ASK, Command.WATCH))
    if side.instructor:
        _instructor_editor_commands(command, wait_help, shared)
    else:
        p = command(
            Command.SYNC,
            "mirror your editor workspace to a folder (and the class workspace, read-only, "
            "to its class/ folder); changes saved there are sent through the relay",
            _SYNC_EPILOG,
        )
        p.add_argument("dir", metavar="DIR", help="the folder (made if missing)")
        p.add_argument("--once", action="store_true", help="sync down, send local changes, exit")
        p.add_argument("--duration", metavar="S", type=_seconds, help="stop after S seconds")
        p.add_argument(
            "--interval",
            metavar="S",
            type=_seconds,
            default=DEFAULT_INTERVAL_S,
            help=f"look for changes on disk every S seconds (default {DEFAULT_INTERVAL_S:g})",
        )
        p = command(
            Command.FOLLOW,
            "follow the instructor in the shared editor: print the file the instructor has "
            "open around the cursor, again whenever it moves or the text changes",
            _FOLLOW_EPILOG,
        )
        p.add_argument(
            "--context",
            metavar="N",
            type=_positive_int,
            default=DEFAULT_CONTEXT,
            help=f"show N lines before and after the cursor line (default {DEFAULT_CONTEXT})",
        )
        p.add_argument("--duration", metavar="S", type=_seconds, help="stop after S seconds")
    return parser


_FOLLOW_EPILOG = """\
follow loads the workspaces you can see (the class workspace, yours, and those the
instructor shares), then prints a header such as "instructor is at class/loops.py
line 3" and the numbered lines around the instructor's cursor, the cursor line marked
with '>' (other selected lines with '|'). It prints again when the instructor opens
another file, moves, or the text changes. In lecture mode it says that the class is
pinned to the instructor's view. Characters that could disguise text (control,
invisible, direction-changing) are shown as escapes such as \\u200b.
Without --duration, follow runs until Ctrl-C or the end of the class.
"""


_SYNC_EPILOG = """\
DIR/NAME is file NAME of your workspace (learner:ID); DIR/class/NAME is a read-only
copy of file NAME of the class workspace. Files saved in DIR are sent as edits and go
through the facility's policy like typing does. A change the relay refuses is put back
on disk as the relay kept it, and a line on standard error says what was refused and
why; your refused version is kept in DIR/.classroom-sync-refused/ (never synced).
Changes others make to your workspace (the instructor helping) are written into DIR.
Hidden files (.git, editor swap files) and backups ending in ~ are not synced; file names
must be relative paths without '..', hidden parts, backslashes or drive letters.
Without --once or --duration, sync runs until Ctrl-C or the end of the class. The exit
code is 3 when a change was refused.
"""


def _instructor_editor_commands(
    command: Callable[..., argparse.ArgumentParser],
    wait_help: str,
    shared: argparse.ArgumentParser,
) -> None:
    p = command(
        Command.EXPORT,
        "save a learner's editor workspace into a folder",
        "Existing files that differ are not overwritten unless --force is given; nothing "
        "is written then.",
    )
    p.add_argument("--learner", metavar="ID", required=True, help="the learner, e.g. l1001")
    p.add_argument("dir", metavar="DIR", help="the folder (made if missing)")
    p.add_argument("--force", action="store_true", help="overwrite files that differ")
    p.add_argument("--wait", metavar="S", type=_seconds, default=DEFAULT_WAIT_S, help=wait_help)
    p = command(
        Command.EDITOR,
        "drive the shared editor: put a file, print one, list files, lecture mode, sharing, "
        "point the class at a file",
        _EDITOR_EPILOG,
    )
    p.add_argument("--wait", metavar="S", type=_seconds, default=DEFAULT_WAIT_S, help=wait_help)
    actions = p.add_subparsers(title="actions", metavar="ACTION", dest="action")
    actions.required = True
    # Options may also follow the action ("editor py101 lecture on --wait 5").
    after = argparse.ArgumentParser(add_help=False, parents=[shared])
    after.add_argument("--wait", metavar="S", type=_seconds, default=argparse.SUPPRESS)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, parents=[after], help=help_text, description=help_text)

    a = action("put", "write FILE of workspace WS (created if needed)")
    a.add_argument("ws", metavar="WS", help="'class', or a learner (l1001 or learner:l1001)")
    a.add_argument("file", metavar="FILE", help="the file name in the workspace")
    a.add_argument("--from", dest="source", metavar="PATH", help="read it from PATH (else stdin)")
    a = action("get", "print FILE of workspace WS")
    a.add_argument("ws", metavar="WS")
    a.add_argument("file", metavar="FILE")
    a = action("ls", "list the files of workspace WS")
    a.add_argument("ws", metavar="WS")
    a = action("lecture", "lecture mode: the class workspace read-only for learners")
    a.add_argument("state", choices=["on", "off"])
    a = action("share", "show a learner's workspace to the class, or stop")
    a.add_argument("learner", metavar="LEARNER", help="l1001 or learner:l1001")
    a.add_argument("state", choices=["on", "off"])
    a = action(
        "present",
        "open FILE of workspace WS for the class to follow (classroom-client follow) and "
        "stay connected holding it",
    )
    a.add_argument("ws", metavar="WS", help="'class', or a learner (l1001 or learner:l1001)")
    a.add_argument("file", metavar="FILE", help="the file name in the workspace")
    a.add_argument(
        "--line", metavar="N", type=_line_number, default=1, help="put the cursor on line N"
    )
    a.add_argument(
        "--duration", metavar="S", type=_seconds, help="leave after S seconds (else Ctrl-C)"
    )


_EDITOR_EPILOG = """\
examples:
  editor py101 put class hello.py --from hello.py
  editor py101 get learner:l1001 main.py
  editor py101 lecture on
  editor py101 share l1001 on
  editor py101 present class loops.py --line 3 --duration 600

present sends where the instructor is (the file, the cursor at the start of line N) and
sends it again whenever someone joins; learners running "classroom-client follow" see
that part of the file. It leaves after --duration S, or on Ctrl-C.
"""


class UsageError(RelayError):
    """A command line that cannot be carried out as given."""


Opener = Callable[[argparse.Namespace], Callable[[str], Joining]]
"""Builds, from the parsed command line, the function that joins a class."""

Body = Callable[[RelayClient], Awaitable[Exit]]


def plan(side: Side, args: argparse.Namespace, term: Terminal) -> Body:
    """Check what can be checked before connecting; what to do once joined."""
    cmd: Command = args.command
    check_class_id(args.session)
    if cmd is Command.CHAT:
        to = check_recipient(args.to, side) if args.to is not None else None
        return functools.partial(
            do_chat, term=term, side=side, text=check_text(args.text), to=to, wait=args.wait
        )
    if cmd is Command.HAND:
        return functools.partial(
            do_hand, term=term, raised=args.position == "up", who=None, wait=args.wait
        )
    if cmd is Command.LOWER_HAND:
        who = check_learner_pid(args.who, side)
        return functools.partial(do_hand, term=term, raised=False, who=who, wait=args.wait)
    if cmd is Command.WHO:
        return functools.partial(do_who, term=term, as_json=args.json)
    if cmd in (Command.SYNC, Command.FOLLOW, Command.EXPORT, Command.EDITOR):
        return plan_editor(side, args, term)
    if cmd in (Command.SHARE, Command.SHARE_ASK, Command.WATCH):
        from classroom_client import share_cli

        return share_cli.plan(side, args, term)
    if cmd is Command.LISTEN:
        opts = ListenOptions(
            count=args.count,
            timeout=args.timeout,
            json=args.json,
            only=frozenset(EventType(t) for t in args.only or ()),
            history=args.history,
        )
        return functools.partial(do_listen, term=term, opts=opts)
    return functools.partial(do_interactive, term=term, side=side)


def _silence_stdout() -> None:
    """After a broken pipe (``listen | head``), keep Python's exit flush from failing."""
    with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def run_main(side: Side, argv: list[str] | None, opener: Opener) -> int:
    """Parse ``argv``, run the command, map every expected problem to an exit code."""
    term = Terminal(side.prog)
    parser = build_parser(side)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else int(Exit.FAILED)
    if args.command is None:
        parser.print_help(sys.stderr)
        return int(Exit.FAILED)
    try:
        if args.bundle is None:
            raise UsageError(
                "--bundle FILE is required: the credential bundle the facility issued "
                + ("to you" if side.instructor else "to this classroom machine")
            )
        body = plan(side, args, term)
        join = opener(args)
        return int(asyncio.run(run_joined(term, join(args.session), body)))
    except RelayError as exc:
        term.problem(exc)
        return int(Exit.FAILED)
    except KeyboardInterrupt:
        term.note("interrupted")
        return int(Exit.INTERRUPTED)
    except BrokenPipeError:
        _silence_stdout()
        return int(Exit.OK)


def plan_editor(side: Side, args: argparse.Namespace, term: Terminal) -> Body:
    from classroom_client import editor_cli

    return editor_cli.plan(side.instructor, args, term)


# ---------------------------------------------------------------------------------------
# classroom-client
# ---------------------------------------------------------------------------------------


def read_pin(given: str | None, learner: str) -> str:
    """The PIN from --pin, else $CLASSROOM_CLIENT_PIN, else a prompt on the terminal."""
    if given is not None:
        return given
    env = os.environ.get(PIN_ENV)
    if env is not None:
        return env
    if not sys.stdin.isatty():
        raise UsageError(
            f"no PIN for learner {learner}: set ${PIN_ENV}, give --pin PIN, or run the command "
            "in a terminal to be asked for it"
        )
    try:
        pin = getpass.getpass(f"PIN of learner {learner}: ")
    except EOFError:
        pin = ""
    if not pin:
        raise UsageError(f"no PIN given for learner {learner}; run the command again")
    return pin


def _open_classroom(args: argparse.Namespace) -> Callable[[str], Joining]:
    if args.learner is None:
        raise UsageError(
            "--learner ID is required: the learner signing in on this machine "
            f"(a learner id is {NAME_RULE})"
        )
    # Refuse a wrong bundle, learner id or address before asking for the PIN.
    open_bundle(Path(args.bundle), Role.MACHINE, PROG)
    if not valid_name(args.learner):
        raise UsageError(f"{args.learner!r} is not a valid learner id: a learner id is {NAME_RULE}")
    if args.relay is not None:
        check_relay_address(args.relay)
    pin = read_pin(args.pin, args.learner)
    client = ClassroomClient(args.bundle, args.learner, pin, args.relay)
    return client.join


def main(argv: list[str] | None = None) -> int:
    """``classroom-client``: see ``classroom-client --help``."""
    return run_main(LEARNER_SIDE, argv, _open_classroom)


__all__ = [
    "LEARNER_SIDE",
    "Command",
    "EventType",
    "Exit",
    "ListenOptions",
    "Side",
    "build_parser",
    "check_text",
    "clean_text",
    "event_record",
    "format_event",
    "main",
    "parse_line",
    "plan",
    "resolve_recipient",
    "run_main",
]

if __name__ == "__main__":
    raise SystemExit(main())
