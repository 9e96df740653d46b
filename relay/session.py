"""The live state of one class: roster, presence, hands, chat history. Pure, no I/O.

A :class:`LiveSession` takes already-authorised, already-decided inputs (the choke point
in ``relay.chokepoint`` does the deciding) and returns an :class:`Outcome`: the audit
events to record and the frames to deliver, to which connections. The adapter records the
events first and delivers only after they are recorded.

Every delivered event carries a per-class sequence number and is kept in a bounded
history, so a participant who reconnects with ``resume_after`` gets what it missed.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from relay import wire
from relay.audit import AuditEvent, EventKind
from relay.errors import ErrorCode
from relay.frozen import quick_init
from relay.identity import Participant, ParticipantRole
from relay.limits import Limits
from relay.messages import (
    Ack,
    AckStatus,
    AlertNotice,
    Channel,
    ChatEvent,
    ErrorFrame,
    HandEvent,
    HeldNotice,
    ParticipantInfo,
    PresenceChange,
    PresenceEvent,
    Reviewed,
    ReviewOutcome,
    SequencedEvent,
    SessionEnded,
    SessionInfo,
    Welcome,
)
from relay.review import HeldMessage


class SessionState(enum.Enum):
    OPEN = "open"
    PAUSED = "paused"
    ENDED = "ended"


@quick_init
@dataclass(frozen=True, slots=True)
class Delivery:
    """One encoded frame for a set of connections (by connection id).

    ``more`` are frames sent right after ``frame``, in order, as one unit: a replay of
    history travels this way so that it counts once against a receiver's queue limit.
    """

    frame: bytes
    conns: tuple[int, ...]
    more: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class CloseRequest:
    conn: int
    code: ErrorCode
    detail: str


@quick_init
@dataclass(frozen=True, slots=True)
class Outcome:
    events: tuple[AuditEvent, ...] = ()
    deliveries: tuple[Delivery, ...] = ()
    closes: tuple[CloseRequest, ...] = ()

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome(
            self.events + other.events,
            self.deliveries + other.deliveries,
            self.closes + other.closes,
        )


@quick_init
@dataclass(frozen=True, slots=True)
class _HistoryItem:
    seq: int
    frame: bytes
    visible_to: frozenset[str] | None
    """None: everyone in the class; else these participant ids (and staff)."""


@dataclass(slots=True)
class _Member:
    participant: Participant
    conn: int


class Flag(enum.Enum):
    """How a delivered chat message differs from a plain one."""

    REDACTED = "redacted"
    """Parts were replaced; the audit record keeps the original."""
    ALERT = "alert"
    """Delivered as sent; security staff are notified."""


@dataclass(frozen=True, slots=True)
class PolicyNote:
    """What the policy said about a chat message that is delivered but not plainly."""

    flag: Flag
    reason: str
    categories: tuple[str, ...]
    rules: tuple[str, ...]
    original: str | None = None
    """REDACTED: the text as sent (the delivered text is the redacted one)."""

    def __post_init__(self) -> None:
        if (self.flag is Flag.REDACTED) != (self.original is not None):
            raise ValueError("a redacted message, and only it, keeps its original text")


def participant_info(p: Participant) -> ParticipantInfo:
    return ParticipantInfo(pid=p.pid, role=p.role, name=p.name, machine=p.machine)


@dataclass(slots=True)
class LiveSession:
    """One class in progress. Methods are pure state transitions returning outcomes."""

    info: SessionInfo
    instructor: str
    learners: frozenset[str]
    limits: Limits
    state: SessionState = SessionState.OPEN
    seq: int = 0
    ended_reason: str | None = None
    opened_recorded: bool = False
    paused_at: float | None = None
    paused_reason: str | None = None
    _members: dict[str, _Member] = field(default_factory=dict)
    _hands: dict[str, None] = field(default_factory=dict)
    _history: deque[_HistoryItem] = field(default_factory=deque)
    _acks: dict[str, OrderedDict[str, Ack]] = field(default_factory=dict)
    members_version: int = 0
    """Counts changes of who is present (for caches of recipients kept elsewhere)."""
    _everyone_but: dict[int, tuple[int, ...]] = field(default_factory=dict)
    """Class-wide recipients, by the connection left out; cleared when members change."""

    # -- queries -----------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.info.id

    def member_conn(self, pid: str) -> int | None:
        m = self._members.get(pid)
        return m.conn if m else None

    def is_current(self, pid: str, conn: int) -> bool:
        m = self._members.get(pid)
        return m is not None and m.conn == conn

    def roster(self) -> tuple[ParticipantInfo, ...]:
        return tuple(participant_info(m.participant) for m in self._members.values())

    def connections(self) -> tuple[int, ...]:
        return tuple(m.conn for m in self._members.values())

    def may_address(self, pid: str) -> ParticipantRole | None:
        """The role of ``pid`` if it belongs to this class (present or on the roster)."""
        if pid == f"instructor:{self.instructor}":
            return ParticipantRole.INSTRUCTOR
        role, _, name = pid.partition(":")
        if role == "learner" and name in self.learners:
            return ParticipantRole.LEARNER
        return None

    # -- helpers -----------------------------------------------------------------------

    def event(
        self, kind: EventKind, now: float, who: Participant | None, **kw: object
    ) -> AuditEvent:
        """A record of this class: what ``who`` (None: the class itself) did at ``now``."""
        if who is None:
            return AuditEvent(kind, now, self.info.id, **kw)  # type: ignore[arg-type]
        learner = who.name if who.machine is not None else None
        return AuditEvent(kind, now, self.info.id, who.pid, who.machine, learner, **kw)  # type: ignore[arg-type]

    def staff_conns(self) -> tuple[int, ...]:
        return tuple(
            m.conn for m in self._members.values() if m.participant.role is ParticipantRole.STAFF
        )

    def _recipients(self, visible_to: frozenset[str] | None, exclude: int) -> tuple[int, ...]:
        if visible_to is None:
            conns = self._everyone_but.get(exclude)
            if conns is None:
                conns = tuple(m.conn for m in self._members.values() if m.conn != exclude)
                self._everyone_but[exclude] = conns
            return conns
        return tuple(
            m.conn
            for pid, m in self._members.items()
            if (pid in visible_to or m.participant.role is ParticipantRole.STAFF)
            and m.conn != exclude
        )

    def _sequence(
        self, event: SequencedEvent, visible_to: frozenset[str] | None, exclude: int = 0
    ) -> Delivery:
        frame = wire.encode_server(event)
        self._history.append(_HistoryItem(event.seq, frame, visible_to))
        if len(self._history) > self.limits.history_limit:
            self._history.popleft()
        return Delivery(frame, self._recipients(visible_to, exclude))

    def _new_chat(
        self,
        sender: str,
        msg_id: str,
        channel: Channel,
        text: str,
        to: str | None,
        now: float,
        approved_by: str | None = None,
        sent: float | None = None,
    ) -> tuple[ChatEvent, frozenset[str] | None]:
        """The next chat event, and who may see it (None: the whole class)."""
        self.seq += 1
        event = ChatEvent(self.seq, msg_id, sender, channel, text, now, to, approved_by, sent)
        return event, (None if channel is Channel.CLASS else frozenset({sender, to or ""}))

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def conns_where(self, visible: Callable[[Participant], bool], exclude: int) -> tuple[int, ...]:
        """Connections of the members for whom ``visible`` holds, but ``exclude``."""
        return tuple(
            m.conn for m in self._members.values() if m.conn != exclude and visible(m.participant)
        )

    def answer(self, pid: str, conn: int, ack: Ack) -> Delivery:
        """``ack`` to ``pid`` on ``conn``, kept so that a resent duplicate gets it again."""
        acks = self._acks.get(pid)
        if acks is None:
            acks = self._acks[pid] = OrderedDict()
        acks[ack.ref] = ack
        if len(acks) > self.limits.dedup_window:
            acks.popitem(last=False)  # O(1), unlike deleting a plain dict's first key
        return Delivery(wire.encode_server(ack), (conn,))

    def previous_ack(self, pid: str, msg_id: str) -> Ack | None:
        """The ack already given for ``msg_id`` by ``pid`` (a resent duplicate), if any."""
        acks = self._acks.get(pid)
        return acks.get(msg_id) if acks else None

    def _replay(self, pid: str, role: ParticipantRole, after: int) -> list[bytes]:
        if after >= self.seq:
            return []
        return [
            item.frame
            for item in self._history
            if item.seq > after
            and (item.visible_to is None or pid in item.visible_to or role is ParticipantRole.STAFF)
        ]

    # -- transitions -------------------------------------------------------------------

    def join(
        self, who: Participant, conn: int, resume_after: int, now: float, peer: str | None
    ) -> Outcome:
        """``who`` joins on connection ``conn`` (replacing an older connection of theirs)."""
        outcome = Outcome()
        previous = self._members.get(who.pid)
        self._members[who.pid] = _Member(who, conn)
        self._everyone_but.clear()
        self.members_version += 1
        if previous is not None and previous.conn != conn:
            outcome += Outcome(
                closes=(CloseRequest(previous.conn, ErrorCode.REPLACED, "you joined again"),)
            )
        # A client that saw more than this class has (the relay restarted and its history
        # with it) gets everything there is: its old sequence numbers mean nothing here.
        replay = self._replay(who.pid, who.role, resume_after if resume_after <= self.seq else 0)
        welcome = Welcome(
            session=self.info,
            you=participant_info(who),
            roster=self.roster(),
            hands=tuple(self._hands),
            last_seq=self.seq,
            replay=len(replay),
        )
        deliveries = [Delivery(wire.encode_server(welcome), (conn,), tuple(replay))]
        events = [
            self.event(
                EventKind.JOINED,
                now,
                who,
                peer=peer,
                detail="rejoined"
                if previous
                else (f"resume after {resume_after}" if resume_after else None),
            )
        ]
        if previous is None:
            presence = PresenceChange(
                seq=self._next_seq(),
                event=PresenceEvent.JOINED,
                who=participant_info(who),
                time=now,
            )
            deliveries.append(self._sequence(presence, None, exclude=conn))
        return outcome + Outcome(tuple(events), tuple(deliveries))

    def leave(self, who: Participant, conn: int, now: float, reason: str) -> Outcome:
        """Connection ``conn`` of ``who`` is gone. No-op if a newer connection replaced it."""
        if not self.is_current(who.pid, conn):
            return Outcome()
        del self._members[who.pid]
        self._everyone_but.clear()
        self.members_version += 1
        deliveries: list[Delivery] = []
        if who.pid in self._hands:
            del self._hands[who.pid]
            hand = HandEvent(seq=self._next_seq(), who=who.pid, raised=False, time=now)
            deliveries.append(self._sequence(hand, None))
        presence = PresenceChange(
            seq=self._next_seq(), event=PresenceEvent.LEFT, who=participant_info(who), time=now
        )
        deliveries.append(self._sequence(presence, None))
        event = self.event(EventKind.LEFT, now, who, detail=reason)
        return Outcome((event,), tuple(deliveries))

    def refuse(
        self,
        who: Participant,
        conn: int,
        msg_id: str,
        code: ErrorCode,
        detail: str,
        now: float,
        *,
        rule: str | None = None,
        policy_version: str | None = None,
        content: str | None = None,
        channel: str | None = None,
        recipient: str | None = None,
    ) -> Outcome:
        """Refuse a message of ``who``: tell the sender why, record it, deliver nothing."""
        ack = Ack(
            ref=msg_id,
            status=AckStatus.REFUSED,
            code=code.number,
            error=code.slug,
            text=code.text(detail),
        )
        answer = self.answer(who.pid, conn, ack)
        event = self.event(
            EventKind.MESSAGE_REFUSED,
            now,
            who,
            msg_id=msg_id,
            decision="refused",
            rule=rule,
            error=code.slug,
            detail=detail,
            content=content,
            policy_version=policy_version,
            channel=channel,
            recipient=recipient,
        )
        return Outcome((event,), (answer,))

    def chat(
        self,
        who: Participant,
        conn: int,
        msg_id: str,
        channel: Channel,
        text: str,
        to: str | None,
        now: float,
        *,
        rule: str,
        policy_version: str,
        note: PolicyNote | None = None,
    ) -> Outcome:
        """Deliver an allowed chat message (``note``: redacted, or to be alerted)."""
        if note is not None:
            return self._noted_chat(
                who, conn, msg_id, channel, text, to, now, rule, policy_version, note
            )
        event, visible = self._new_chat(who.pid, msg_id, channel, text, to, now)
        seq = event.seq
        ack = Ack(ref=msg_id, status=AckStatus.DELIVERED, seq=seq, time=now)
        answer = self.answer(who.pid, conn, ack)
        record = AuditEvent(
            EventKind.MESSAGE_DELIVERED,
            now,
            self.info.id,
            who.pid,
            who.machine,
            who.name if who.machine is not None else None,
            msg_id=msg_id,
            seq=seq,
            channel=channel._value_,  # ``.value`` is a slower property
            recipient=to,
            decision="delivered",
            rule=rule,
            content=text,
            policy_version=policy_version,
        )
        # The sender gets the ack (with seq and time) instead of an echo of its own
        # message; everyone else the message is for gets the event.
        deliveries = (answer, self._sequence(event, visible, exclude=conn))
        return Outcome((record,), deliveries)

    def _noted_chat(
        self,
        who: Participant,
        conn: int,
        msg_id: str,
        channel: Channel,
        text: str,
        to: str | None,
        now: float,
        rule: str,
        policy_version: str,
        note: PolicyNote,
    ) -> Outcome:
        event, visible = self._new_chat(who.pid, msg_id, channel, text, to, now)
        seq = event.seq
        deliveries: list[Delivery] = []
        if note.flag is Flag.REDACTED:
            ack = Ack(
                ref=msg_id,
                status=AckStatus.REDACTED,
                seq=seq,
                time=now,
                text=f"Part of your message was replaced before delivery: {note.reason}. "
                "The others received the text with [redacted:...] in its place; "
                "rephrase without it if it mattered.",
                redacted=text,
            )
            kind, decision = EventKind.MESSAGE_REDACTED, "redacted"
        else:
            ack = Ack(ref=msg_id, status=AckStatus.DELIVERED, seq=seq, time=now)
            kind, decision = EventKind.MESSAGE_ALERT, "delivered, staff alerted"
            alert = AlertNotice(
                ref=msg_id,
                seq=seq,
                sender=who.pid,
                rule=rule,
                reason=note.reason,
                categories=note.categories,
                time=now,
            )
            staff = tuple(c for c in self.staff_conns() if c != conn)
            if staff:
                deliveries.append(Delivery(wire.encode_server(alert), staff))
        answer = self.answer(who.pid, conn, ack)
        record = self.event(
            kind,
            now,
            who,
            msg_id=msg_id,
            seq=seq,
            channel=channel.value,
            recipient=to,
            decision=decision,
            rule=rule,
            rules=",".join(note.rules) if len(note.rules) > 1 else None,
            categories=",".join(note.categories) or None,
            detail=note.reason,
            content=note.original if note.original is not None else text,
            delivered=text if note.original is not None else None,
            policy_version=policy_version,
        )
        deliveries[:0] = [answer, self._sequence(event, visible, exclude=conn)]
        return Outcome((record,), tuple(deliveries))

    def hold(self, held: HeldMessage, conn: int, now: float, ack_text: str) -> Outcome:
        """``held`` waits for review: its sender is told, staff present see it."""
        code = ErrorCode.HELD
        ack = Ack(
            ref=held.msg_id,
            status=AckStatus.HELD,
            code=code.number,
            error=code.slug,
            text=ack_text,
            hold=held.hold,
        )
        answer = self.answer(held.sender.pid, conn, ack)
        record = self.event(
            EventKind.MESSAGE_HELD,
            now,
            held.sender,
            msg_id=held.msg_id,
            channel=held.channel.value,
            recipient=held.to,
            decision="held",
            rule=held.rule,
            categories=",".join(held.categories) or None,
            detail=held.reason,
            content=held.text,
            hold=held.hold,
            policy_version=held.policy_version,
        )
        deliveries = [answer]
        staff = self.staff_conns()
        if staff:
            deliveries.append(Delivery(wire.encode_server(HeldNotice(held.info())), staff))
        return Outcome((record,), tuple(deliveries))

    def review(
        self, held: HeldMessage, outcome: ReviewOutcome, by: str, reason: str, now: float
    ) -> Outcome:
        """Staff decided ``held`` (or it expired). Approved: delivered now, marked late."""
        deliveries: list[Delivery] = []
        seq: int | None = None
        if outcome is ReviewOutcome.APPROVED:
            event, visible = self._new_chat(
                held.sender.pid,
                held.msg_id,
                held.channel,
                held.deliver,
                held.to,
                now,
                by,
                held.time,
            )
            seq = event.seq
            deliveries.append(self._sequence(event, visible))
        notice = Reviewed(
            hold=held.hold,
            ref=held.msg_id,
            outcome=outcome,
            by=by,
            reason=reason,
            time=now,
            seq=seq,
        )
        told = set(self.staff_conns())
        sender_conn = self.member_conn(held.sender.pid)
        if sender_conn is not None:
            told.add(sender_conn)
        if told:
            deliveries.append(Delivery(wire.encode_server(notice), tuple(sorted(told))))
        kind = {
            ReviewOutcome.APPROVED: EventKind.REVIEW_APPROVED,
            ReviewOutcome.REJECTED: EventKind.REVIEW_REJECTED,
            ReviewOutcome.EXPIRED: EventKind.REVIEW_EXPIRED,
        }[outcome]
        record = AuditEvent(
            kind=kind,
            time=now,
            session=self.id,
            actor=by,
            msg_id=held.msg_id,
            seq=seq,
            channel=held.channel.value,
            recipient=held.to,
            decision=outcome.value,
            rule=held.rule,
            detail=f"message of {held.sender.pid}: {reason}" if reason else None,
            hold=held.hold,
            delivered=held.deliver if seq is not None and held.deliver != held.text else None,
        )
        return Outcome((record,), tuple(deliveries))

    def hand(
        self, who: Participant, conn: int, msg_id: str, target: str, raised: bool, now: float
    ) -> Outcome:
        """Raise or lower ``target``'s hand (already authorised)."""
        changed = (target in self._hands) != raised
        if raised:
            self._hands[target] = None
        else:
            self._hands.pop(target, None)
        deliveries: list[Delivery] = []
        seq: int
        if changed:
            hand = HandEvent(seq=self._next_seq(), who=target, raised=raised, time=now)
            seq = hand.seq
            ack = Ack(ref=msg_id, status=AckStatus.DELIVERED, seq=seq)
            deliveries = [self.answer(who.pid, conn, ack), self._sequence(hand, None)]
        else:
            seq = self.seq
            ack = Ack(ref=msg_id, status=AckStatus.DELIVERED, seq=seq)
            deliveries = [self.answer(who.pid, conn, ack)]
        record = self.event(
            EventKind.HAND,
            now,
            who,
            msg_id=msg_id,
            seq=seq,
            recipient=target if target != who.pid else None,
            decision="delivered",
            detail="raised" if raised else "lowered",
        )
        return Outcome((record,), tuple(deliveries))

    def end(self, by: str, reason: str, now: float) -> Outcome:
        """End the class: everyone is told why and disconnected."""
        if self.state is SessionState.ENDED:
            return Outcome()
        self.state = SessionState.ENDED
        self.ended_reason = reason
        frame = wire.encode_server(SessionEnded(reason=reason, by=by, time=now))
        conns = self.connections()
        record = AuditEvent(
            kind=EventKind.SESSION_ENDED, time=now, session=self.id, actor=by, detail=reason
        )
        closes = tuple(CloseRequest(c, ErrorCode.SESSION_ENDED, reason) for c in conns)
        self._members.clear()
        self._everyone_but.clear()
        self.members_version += 1
        self._hands.clear()
        return Outcome((record,), (Delivery(frame, conns),), closes)

    def pause(self, reason: str, now: float) -> tuple[bytes, tuple[int, ...]]:
        """Fail closed: stop accepting messages. Returns a notice for everyone present.

        The notice is not recorded (the audit log is what failed); it carries no content.
        The pause itself is recorded when the class resumes (:meth:`resume`).
        """
        self.state = SessionState.PAUSED
        if self.paused_at is None:
            self.paused_at = now
            self.paused_reason = reason
        code = ErrorCode.AUDIT_UNAVAILABLE
        notice = ErrorFrame(code=code.number, error=code.slug, text=code.text(reason))
        return wire.encode_server(notice), self.connections()

    def resume(self, now: float) -> Outcome:
        """The audit log works again: accept messages, and record the pause that was."""
        if self.state is not SessionState.PAUSED:
            return Outcome()
        self.state = SessionState.OPEN
        since = self.paused_at if self.paused_at is not None else now
        record = AuditEvent(
            kind=EventKind.SESSION_PAUSED,
            time=now,
            session=self.id,
            detail=f"paused for {now - since:.1f} s from {since:.3f}: {self.paused_reason}; "
            "messages sent meanwhile were refused and not delivered",
        )
        self.paused_at = None
        self.paused_reason = None
        return Outcome((record,))
