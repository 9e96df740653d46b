"""The choke point: the one function every inbound message passes through.

    decode (with limits) -> authorise -> policy -> audit -> deliver

:meth:`ChokePoint.process` is called by the adapter for every binary frame of every
connection, and :meth:`ChokePoint.admit` for every new connection. Nothing else in the
relay produces deliveries: the session core (``relay.session``) only returns
:class:`~relay.session.Outcome` values, and this module hands each outcome to the audit
sink first and to the :class:`Deliverer` with the sink's receipt, which delivers only
once the receipt says the records are durable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from policy.decisions import Alert, Allow, Block, Decision, Hold, Kind, Redact, Route, Subject
from policy.engine import PolicyEngine
from policy.rates import Delay, RateLimiter, Refuse
from policy.rules import redact_hits
from relay import authz, wire
from relay.audit import AuditEvent, AuditSink, EventKind
from relay.editor_session import ClassEditor, EditorSettings
from relay.errors import AccessDenied, ErrorCode, ProtocolError, RelayError
from relay.identity import Listener, Participant, ParticipantRole
from relay.limits import Limits
from relay.messages import (
    Ack,
    AckStatus,
    Bye,
    Chat,
    ClientMessage,
    EditorLecture,
    EditorPresence,
    EditorShare,
    EditorSync,
    EditorUpdate,
    EndSession,
    ErrorFrame,
    Hand,
    Hello,
    Holds,
    Review,
    ReviewList,
    ReviewOutcome,
    SessionInfo,
    ShareAsk,
    ShareStart,
    ShareStop,
    ShareWatch,
)
from relay.pki import CertIdentity
from relay.registry import RegistrySnapshot
from relay.review import HeldMessage, ReviewQueue
from relay.schedule import ScheduledClass
from relay.screen_session import ScreenShares
from relay.screen_settings import DEFAULT_SCREEN_SETTINGS, ScreenSettings
from relay.session import (
    CloseRequest,
    Delivery,
    Flag,
    LiveSession,
    Outcome,
    PolicyNote,
    SessionState,
)

log = logging.getLogger("relay.chokepoint")

_conn_ids = itertools.count(1)


def next_connection_id() -> int:
    return next(_conn_ids)


@dataclass(slots=True)
class TokenBucket:
    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(slots=True)
class Connection:
    """What the relay knows about one authenticated connection."""

    id: int
    listener: Listener
    ident: CertIdentity
    peer: str
    participant: Participant | None = None
    session: LiveSession | None = None
    bucket: TokenBucket | None = None
    editor_bucket: TokenBucket | None = None
    leaving: bool = False
    """Set once the participant said ``bye``: the connection ends without reconnect."""


class Deliverer(Protocol):
    """The adapter side of delivery. It sends only after ``receipt`` completes."""

    def deliver(
        self, session: LiveSession | None, receipt: Awaitable[None], outcome: Outcome
    ) -> Awaitable[None] | None:
        """Deliver ``outcome`` once ``receipt`` completes; in order per class.

        Returns None when the caller may go on at once, else what it must await first
        (backpressure: the class's outbox is full; or a delivery outside any class).
        """
        ...


@dataclass(slots=True)
class RelayState:
    """Everything the choke point decides against. Snapshots are swapped on reload."""

    limits: Limits
    registry: Callable[[], RegistrySnapshot]
    schedule: Callable[[], dict[str, ScheduledClass]]
    policy: PolicyEngine
    join_early: dt.timedelta
    join_late: dt.timedelta
    sessions: dict[str, LiveSession] = field(default_factory=dict)
    connections_by_principal: dict[str, set[int]] = field(default_factory=dict)
    editor_settings: EditorSettings = field(default_factory=EditorSettings)
    screen_settings: ScreenSettings = DEFAULT_SCREEN_SETTINGS
    editors: dict[str, ClassEditor] = field(default_factory=dict)
    """The shared editor of each class, made when first used."""
    holds: ReviewQueue = field(init=False)
    rates: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.holds = ReviewQueue(self.limits.max_holds_per_session)
        self.rates = RateLimiter(self.policy.rates)

    def use_policy(self, policy: PolicyEngine) -> None:
        """Decide with ``policy`` from now on (rate-limit levels carry over)."""
        self.policy = policy
        self.rates.configure(policy.rates)


_RATE_KINDS: dict[type, Kind] = {Chat: Kind.CHAT, Hand: Kind.HAND, EditorUpdate: Kind.EDITOR}
"""Message types the policy's rate limits ([rate.KIND]) apply to."""


_EDITOR_TYPES = (EditorSync, EditorUpdate, EditorPresence, EditorLecture, EditorShare)
"""Messages of the shared editor (``relay.editor_session``)."""


_SHARE_TYPES = (ShareStart, ShareWatch, ShareStop, ShareAsk)
"""Messages of screen sharing (``relay.screen_session``): answered after WebRTC work."""


_FATAL = frozenset(
    {
        ErrorCode.MALFORMED,
        ErrorCode.OUT_OF_ORDER,
        ErrorCode.TEXT_FRAME,
        ErrorCode.IDLE_TIMEOUT,
    }
)
"""Protocol errors after which the stream cannot be trusted: the connection is closed."""


def _iso(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


class ChokePoint:
    def __init__(
        self,
        state: RelayState,
        audit: AuditSink,
        deliverer: Deliverer,
        *,
        clock: Callable[[], float],
        pin_guard: authz.PinGuard | None = None,
    ) -> None:
        self.state = state
        self.audit = audit
        self.deliverer = deliverer
        self.clock = clock
        self.screens = ScreenShares(state.screen_settings, self._submit_live, clock)
        self.pins = pin_guard or authz.PinGuard(
            state.limits.pin_failures_before_lockout,
            state.limits.lockout_seconds,
            state.limits.pin_failures_per_machine,
        )

    def editor(self, session: LiveSession) -> ClassEditor:
        """The shared editor of ``session`` (made when first used)."""
        editor = self.state.editors.get(session.id)
        if editor is None:
            editor = ClassEditor(session, self.state.editor_settings)
            self.state.editors[session.id] = editor
        return editor

    def _editor_snapshots(self, session: LiveSession, now: float, why: str) -> Outcome:
        editor = self.state.editors.get(session.id)
        return Outcome(editor.snapshots(now, why)) if editor is not None else Outcome()

    # -- the two entry points ------------------------------------------------------------

    async def admit(self, conn: Connection, protocol: str | None) -> ErrorCode | None:
        """A TLS-authenticated connection arrived: may it stay? Audited either way.

        ``protocol`` is the WebSocket subprotocol the handshake agreed on, if any.
        """
        now = self.clock()
        ident = conn.ident
        refusal: AccessDenied | None = None
        try:
            if protocol != wire.SUBPROTOCOL:
                raise AccessDenied(
                    ErrorCode.UNSUPPORTED_VERSION, f"offered {protocol or 'no subprotocol'}"
                )
            authz.check_connection(ident, conn.listener, self.state.registry(), _iso(now))
            open_conns = self.state.connections_by_principal.get(ident.name, set())
            limit = self.state.limits.max_connections_per_principal
            if len(open_conns) >= limit:
                raise AccessDenied(
                    ErrorCode.TOO_MANY_CONNECTIONS, f"limit max_connections_per_principal={limit}"
                )
        except AccessDenied as denied:
            refusal = denied
        except RelayError as exc:
            # The registry could not be read: fail closed.
            refusal = AccessDenied(ErrorCode.INTERNAL, f"registry unreadable: {exc}")
        if refusal is not None:
            event = self._conn_event(EventKind.CONNECTION_REFUSED, conn, now, refusal)
            close = CloseRequest(conn.id, refusal.code, refusal.detail)
            await self._send_direct(conn, Outcome((event,), self._error(conn, refusal), (close,)))
            return refusal.code
        self.state.connections_by_principal.setdefault(ident.name, set()).add(conn.id)
        event = self._conn_event(EventKind.CONNECTION_ACCEPTED, conn, now, None)
        await self._send_direct(conn, Outcome((event,)))
        return None

    async def process(self, conn: Connection, data: bytes) -> None:
        """Every inbound frame of every connection goes through here, and only here."""
        now = self.clock()
        # 1. decode, with limits
        try:
            msg = wire.decode_client(data, self.state.limits)
        except ProtocolError as err:
            await self._protocol_error(conn, err, now)
            return
        # 2-5. authorise, policy, audit, deliver
        if isinstance(msg, Hello):
            await self._hello(conn, msg, now)
            return
        session, who = conn.session, conn.participant
        if session is None or who is None:
            early = ProtocolError(
                ErrorCode.OUT_OF_ORDER, f"'{type(msg).__name__.lower()}' before 'hello'"
            )
            await self._protocol_error(conn, early, now)
            return
        if session.state is SessionState.ENDED:
            close = CloseRequest(conn.id, ErrorCode.SESSION_ENDED, session.ended_reason or "")
            await self._send_direct(conn, Outcome(closes=(close,)))
            return
        previous = session.previous_ack(who.pid, msg.id)
        if previous is not None:
            # A resent duplicate (the client reconnected before seeing its ack).
            ack = Delivery(wire.encode_server(previous), (conn.id,))
            await self._submit(session, Outcome(deliveries=(ack,)))
            return
        kind = _RATE_KINDS.get(type(msg))
        if kind is not None and session.state is SessionState.OPEN:
            verdict = self.state.rates.check(who.pid, session.id, kind, now)
            if isinstance(verdict, Delay):
                # Throttled: this connection's next frames wait too (read side paused).
                await asyncio.sleep(verdict.seconds)
                now = self.clock()
            elif isinstance(verdict, Refuse):
                refused = session.refuse(
                    who, conn.id, msg.id, ErrorCode.RATE_LIMITED, verdict.reason, now
                )
                await self._submit(session, refused)
                return
        if isinstance(msg, _SHARE_TYPES):
            await self._share(conn, session, who, msg, now)
            return
        outcome = self._decide(conn, session, who, msg, now)
        waiting = self._hand_over(session, outcome)
        if waiting is not None:
            await waiting

    def connection_closed(self, conn: Connection, reason: str) -> Outcome:
        """The adapter reports a closed connection; returns the leave outcome to deliver."""
        conns = self.state.connections_by_principal.get(conn.ident.name)
        if conns is not None:
            conns.discard(conn.id)
            if not conns:
                del self.state.connections_by_principal[conn.ident.name]
        now = self.clock()
        outcome = Outcome(
            (
                AuditEvent(
                    kind=EventKind.CONNECTION_CLOSED,
                    time=now,
                    actor=conn.ident.name,
                    peer=conn.peer,
                    session=conn.session.id if conn.session else None,
                    detail=reason,
                ),
            )
        )
        session, who = conn.session, conn.participant
        if session is not None and who is not None and session.state is not SessionState.ENDED:
            outcome += session.leave(who, conn.id, now, reason)
        return outcome

    async def closed(self, conn: Connection, reason: str) -> None:
        outcome = self.connection_closed(conn, reason)
        await self._submit(conn.session, outcome)
        if conn.session is not None and conn.participant is not None:
            await self.screens.left(conn.session, conn.participant, conn.id)

    async def refuse_frame(self, conn: Connection, code: ErrorCode, detail: str) -> None:
        """A frame the adapter could not hand over (text, too large) or a missing hello."""
        await self._protocol_error(conn, ProtocolError(code, detail), self.clock())

    async def disconnect(
        self, conn: Connection, code: ErrorCode, detail: str, kind: EventKind
    ) -> None:
        """Cut a live connection (revoked, expired): recorded, then the client is told why."""
        refusal = AccessDenied(code, detail)
        event = self._conn_event(kind, conn, self.clock(), refusal)
        if conn.session is not None:
            event = dataclasses.replace(event, session=conn.session.id)
        close = CloseRequest(conn.id, code, detail)
        await self._send_direct(conn, Outcome((event,), self._error(conn, refusal), (close,)))

    async def resume_session(self, session: LiveSession) -> None:
        """The audit log recovered: the class accepts messages again (the pause is recorded)."""
        now = self.clock()
        # Editor changes decided while the log failed may sit in the relay's documents:
        # they are recorded (as snapshots) before anything else is delivered.
        resumed = session.resume(now)
        if resumed.events:
            resumed = (
                self._editor_snapshots(session, now, "after the audit log recovered") + resumed
            )
        await self._submit(session, resumed)

    async def end_session(self, session: LiveSession, by: str, reason: str) -> None:
        """Staff, the administrator or the schedule end a class."""
        await self._retire_holds(
            self.state.holds.take_session(session.id),
            ReviewOutcome.REJECTED,
            f"the class ended before review ({reason})",
        )
        now = self.clock()
        await self._submit(
            session,
            self._editor_snapshots(session, now, "class ended") + session.end(by, reason, now),
        )

    # -- screen share ---------------------------------------------------------------------

    async def _share(
        self,
        conn: Connection,
        session: LiveSession,
        who: Participant,
        msg: ShareStart | ShareWatch | ShareStop | ShareAsk,
        now: float,
    ) -> None:
        """Share messages: checked like every message, then the relay's WebRTC end is
        made (awaited: this connection's next frames wait), then recorded and delivered."""
        try:
            self._flow(conn, session, now, editor=False)
            outcome = await self.screens.handle(session, who, conn.id, msg, self.state.policy)
        except AccessDenied as refusal:
            outcome = session.refuse(who, conn.id, msg.id, refusal.code, refusal.detail, now)
        except Exception:
            log.exception("share message %s of %s failed; refused", msg.id, who.pid)
            outcome = session.refuse(
                who, conn.id, msg.id, ErrorCode.INTERNAL, "the share could not be set up", now
            )
        await self._submit(session, outcome)

    async def _submit_live(self, session: LiveSession, outcome: Outcome) -> None:
        """What a running share records and sends by itself; raises when not recorded."""
        receipts: list[Awaitable[None]] = []
        waiting = self._hand_over(session, outcome, receipts)
        if waiting is not None:
            await waiting
        await receipts[0]

    # -- review of held messages ------------------------------------------------------------

    async def review(self, hold: str, approve: bool, by: str, reason: str) -> str:
        """The administrator decides a held message. Returns what happened.

        Raises :class:`AccessDenied` (``unknown_hold``) when nothing waits under ``hold``.
        """
        session, held = self._take_hold(hold, approve)
        outcome = ReviewOutcome.APPROVED if approve else ReviewOutcome.REJECTED
        await self._submit(session, session.review(held, outcome, by, reason, self.clock()))
        sender = held.sender.pid
        if approve:
            return f"Approved: the message of {sender} was delivered to class {session.id}."
        return f"Rejected: the message of {sender} was not delivered; its sender was told."

    def listed(
        self, session: str | None, count: int, by: str, ref: str | None = None
    ) -> AuditEvent:
        """The record of a read of the held messages (staff reads are recorded too)."""
        return AuditEvent(
            kind=EventKind.REVIEW_LISTED,
            time=self.clock(),
            session=session,
            actor=by,
            msg_id=ref,
            detail=f"{count} message(s) waiting" + ("" if session else " (all classes)"),
        )

    def _take_hold(
        self, hold: str, approve: bool, session: LiveSession | None = None
    ) -> tuple[LiveSession, HeldMessage]:
        """Take ``hold`` out of the queue to decide it (within ``session``, if given).

        Raises :class:`AccessDenied`: ``unknown_hold`` when nothing waits under that id
        (in that class), ``audit_unavailable`` to approve while the class is paused (the
        message would be taken and could not be delivered).
        """
        held = self.state.holds.get(hold)
        live = self.state.sessions.get(held.session) if held else None
        if (
            held is None
            or live is None
            or live.state is SessionState.ENDED
            or (session is not None and live is not session)
        ):
            where = f" in class {session.id}" if session is not None else ""
            raise AccessDenied(ErrorCode.UNKNOWN_HOLD, f"'{hold}'{where}")
        if approve and live.state is SessionState.PAUSED:
            raise AccessDenied(ErrorCode.AUDIT_UNAVAILABLE, "the class is paused")
        self.state.holds.take(hold)
        return live, held

    async def expire_holds(self) -> int:
        """Held messages nobody reviewed in time are rejected as expired (the ticker)."""
        expired = self.state.holds.take_expired(self.clock())
        minutes = self.state.policy.review_expiry_s / 60
        await self._retire_holds(
            expired, ReviewOutcome.EXPIRED, f"not reviewed within {minutes:g} minutes"
        )
        return len(expired)

    async def expire_all_holds(self, reason: str) -> None:
        """The relay stops: every pending hold is recorded as expired."""
        await self._retire_holds(self.state.holds.take_all(), ReviewOutcome.EXPIRED, reason)

    async def _retire_holds(
        self, holds: list[HeldMessage], outcome: ReviewOutcome, reason: str
    ) -> None:
        """Record ``holds`` (already out of the queue) as decided by the relay, class by class."""
        now = self.clock()
        for session_id in dict.fromkeys(h.session for h in holds):
            session = self.state.sessions.get(session_id)
            if session is None:
                continue
            result = Outcome()
            for held in holds:
                if held.session == session_id:
                    result += session.review(held, outcome, "relay", reason, now)
            await self._submit(session, result)

    # -- deciding ---------------------------------------------------------------------------

    def _decide(
        self,
        conn: Connection,
        session: LiveSession,
        who: Participant,
        msg: ClientMessage,
        now: float,
    ) -> Outcome:
        try:
            return self._decide_unchecked(conn, session, who, msg, now)
        except AccessDenied as refusal:
            return session.refuse(who, conn.id, msg.id, refusal.code, refusal.detail, now)
        except Exception:
            # Fail closed: a bug or a failing policy engine refuses the message.
            log.exception("deciding message %s of %s failed; refused", msg.id, who.pid)
            return session.refuse(
                who, conn.id, msg.id, ErrorCode.INTERNAL, "the decision could not be made", now
            )

    def _decide_unchecked(
        self,
        conn: Connection,
        session: LiveSession,
        who: Participant,
        msg: ClientMessage,
        now: float,
    ) -> Outcome:
        if isinstance(msg, Bye):
            conn.leaving = True
            return session.leave(who, conn.id, now, "left the class")
        if isinstance(msg, EndSession):
            if who.role is not ParticipantRole.STAFF:
                raise AccessDenied(ErrorCode.NOT_PERMITTED, "only security staff end a class")
            ack = Ack(ref=msg.id, status=AckStatus.DELIVERED, seq=session.seq)
            acked = Outcome(deliveries=(Delivery(wire.encode_server(ack), (conn.id,)),))
            snapshots = self._editor_snapshots(session, now, "class ended")
            return acked + snapshots + session.end(who.pid, msg.reason, now)
        if isinstance(msg, ReviewList | Review):
            return self._staff_review(conn, session, who, msg, now)
        if isinstance(msg, _EDITOR_TYPES):
            self._flow(conn, session, now, editor=True)
            return self.editor(session).handle(who, conn.id, msg, now, self.state.policy)
        self._flow(conn, session, now, editor=False)
        if isinstance(msg, Chat):
            return self._chat(conn, session, who, msg, now)
        if isinstance(msg, Hand):
            return self._hand(conn, session, who, msg, now)
        raise AccessDenied(ErrorCode.UNKNOWN_TYPE, type(msg).__name__)  # pragma: no cover

    def _flow(self, conn: Connection, session: LiveSession, now: float, *, editor: bool) -> None:
        """Refuse a message while the class is paused, or over the connection's rate (its
        editor messages have their own bucket)."""
        if session.state is SessionState.PAUSED:
            raise AccessDenied(ErrorCode.AUDIT_UNAVAILABLE, "the class is paused")
        limits = self.state.limits
        if editor:
            bucket, rate, what = conn.editor_bucket, limits.editor_msgs_per_second, "editor "
        else:
            bucket, rate, what = conn.bucket, limits.msgs_per_second, ""
        if bucket is not None and not bucket.take(now):
            raise AccessDenied(
                ErrorCode.RATE_LIMITED, f"more than {rate:g} {what}messages per second"
            )

    def _chat(
        self, conn: Connection, session: LiveSession, who: Participant, msg: Chat, now: float
    ) -> Outcome:
        recipient_role: ParticipantRole | None = None
        if msg.to is not None:
            recipient_role = session.may_address(msg.to)
            if recipient_role is None:
                raise AccessDenied(ErrorCode.UNKNOWN_RECIPIENT, f"'{msg.to}'")
            if msg.to == who.pid:
                raise AccessDenied(ErrorCode.UNKNOWN_RECIPIENT, "a message to yourself")
        elif who.role is ParticipantRole.STAFF:
            raise AccessDenied(ErrorCode.NOT_PERMITTED, "staff observe classes and do not chat")
        subject = Subject(
            kind=Kind.CHAT,
            sender_role=who.role,
            route=Route.DIRECT if msg.to is not None else Route.CLASS,
            text=msg.text,
            recipient_role=recipient_role,
        )
        policy = self.state.policy
        decision = policy.decide(subject)
        if isinstance(decision, Allow):
            return session.chat(
                who,
                conn.id,
                msg.id,
                msg.channel,
                msg.text,
                msg.to,
                now,
                rule=decision.rule,
                policy_version=policy.version,
            )
        return self._chat_decided(conn, session, who, msg, now, decision)

    def _chat_decided(
        self,
        conn: Connection,
        session: LiveSession,
        who: Participant,
        msg: Chat,
        now: float,
        decision: Decision,
    ) -> Outcome:
        """A chat message the policy did not simply allow."""
        policy = self.state.policy
        if isinstance(decision, Redact | Alert):
            redacted = isinstance(decision, Redact)
            if not redacted:
                log.warning(
                    "alert in class %s: message %s of %s matched %s (%s)",
                    session.id,
                    msg.id,
                    who.pid,
                    decision.rule,
                    ", ".join(decision.categories),
                )
            note = PolicyNote(
                flag=Flag.REDACTED if redacted else Flag.ALERT,
                reason=decision.reason,
                categories=decision.categories,
                rules=decision.rules,
                original=msg.text if redacted else None,
            )
            return session.chat(
                who,
                conn.id,
                msg.id,
                msg.channel,
                decision.text if isinstance(decision, Redact) else msg.text,
                msg.to,
                now,
                rule=decision.rule,
                policy_version=policy.version,
                note=note,
            )
        if isinstance(decision, Hold):
            return self._hold(conn, session, who, msg, now, decision)
        # Deny by default: a Block, and anything that is not one of the decisions above.
        route = isinstance(decision, Block) and decision.route_refused
        return session.refuse(
            who,
            conn.id,
            msg.id,
            ErrorCode.ROUTE_REFUSED if route else ErrorCode.POLICY_BLOCKED,
            decision.reason,
            now,
            rule=decision.rule,
            policy_version=policy.version,
            content=msg.text,
            channel=msg.channel.value,
            recipient=msg.to,
        )

    def _hold(
        self,
        conn: Connection,
        session: LiveSession,
        who: Participant,
        msg: Chat,
        now: float,
        decision: Hold,
    ) -> Outcome:
        policy = self.state.policy
        expiry = policy.review_expiry_s
        held = HeldMessage(
            hold=self.state.holds.new_id(session.id),
            session=session.id,
            sender=who,
            msg_id=msg.id,
            channel=msg.channel,
            to=msg.to,
            text=msg.text,
            time=now,
            expires=now + expiry,
            rule=decision.rule,
            reason=decision.reason,
            categories=decision.categories,
            policy_version=policy.version,
            deliver=redact_hits(msg.text, decision.hits),
        )
        self.state.holds.add(held)  # AccessDenied when the class's queue is full
        ack_text = (
            f"Held for review: {decision.reason}. Security staff will approve or reject it "
            f"within {expiry / 60:g} minutes (unreviewed, it is not delivered); "
            "you will be told the outcome."
        )
        return session.hold(held, conn.id, now, ack_text)

    def _staff_review(
        self,
        conn: Connection,
        session: LiveSession,
        who: Participant,
        msg: ReviewList | Review,
        now: float,
    ) -> Outcome:
        if who.role is not ParticipantRole.STAFF:
            raise AccessDenied(ErrorCode.NOT_PERMITTED, "only security staff review held messages")
        if isinstance(msg, ReviewList):
            holds = self.state.holds.pending(session.id)
            listed = Holds(ref=msg.id, holds=tuple(h.info() for h in holds))
            record = self.listed(session.id, len(holds), who.pid, msg.id)
            return Outcome((record,), (Delivery(wire.encode_server(listed), (conn.id,)),))
        session, held = self._take_hold(msg.hold, msg.approve, session)
        outcome = ReviewOutcome.APPROVED if msg.approve else ReviewOutcome.REJECTED
        reviewed = session.review(held, outcome, who.pid, msg.reason, now)
        ack = Ack(ref=msg.id, status=AckStatus.DELIVERED, seq=session.seq, time=now)
        return Outcome(deliveries=(Delivery(wire.encode_server(ack), (conn.id,)),)) + reviewed

    def _hand(
        self, conn: Connection, session: LiveSession, who: Participant, msg: Hand, now: float
    ) -> Outcome:
        target = msg.who or who.pid
        if who.role is ParticipantRole.LEARNER:
            if target != who.pid:
                raise AccessDenied(
                    ErrorCode.NOT_PERMITTED, "learners raise or lower only their own hand"
                )
        elif who.role is ParticipantRole.INSTRUCTOR:
            if msg.raised or session.may_address(target) is not ParticipantRole.LEARNER:
                raise AccessDenied(
                    ErrorCode.NOT_PERMITTED, "the instructor may only lower a learner's hand"
                )
        else:
            raise AccessDenied(ErrorCode.NOT_PERMITTED, "staff do not raise hands")
        decision = self.state.policy.decide(
            Subject(kind=Kind.HAND, sender_role=who.role, route=Route.CLASS)
        )
        if not isinstance(decision, Allow):
            raise AccessDenied(ErrorCode.POLICY_BLOCKED, decision.reason)
        return session.hand(who, conn.id, msg.id, target, msg.raised, now)

    async def _hello(self, conn: Connection, hello: Hello, now: float) -> None:
        if conn.participant is not None:
            err = ProtocolError(ErrorCode.OUT_OF_ORDER, "'hello' was already sent")
            await self._protocol_error(conn, err, now)
            return
        try:
            live = self.state.sessions.get(hello.session)
            if live is not None and live.state is SessionState.ENDED:
                raise AccessDenied(ErrorCode.SESSION_ENDED, f"class '{hello.session}'")
            request = authz.check_join(
                conn.ident,
                hello,
                self.state.registry(),
                self.state.schedule(),
                _iso(now),
                self.state.join_early,
                self.state.join_late,
            )
            if request.pin is not None:
                await self._check_pin(request, now)
                authz.check_roster(request)
            session = self._open_session(request.cls, now)
        except RelayError as exc:
            refusal = (
                exc if isinstance(exc, AccessDenied) else AccessDenied(ErrorCode.INTERNAL, str(exc))
            )
            event = self._conn_event(EventKind.JOIN_REFUSED, conn, now, refusal, hello=hello)
            close = CloseRequest(conn.id, refusal.code, refusal.detail)
            errors = self._error(conn, refusal, hello.id)
            await self._send_direct(conn, Outcome((event,), errors, (close,)))
            return
        now = self.clock()
        conn.participant = request.participant
        conn.session = session
        limits = self.state.limits
        conn.bucket = TokenBucket(limits.msgs_per_second, limits.msgs_burst)
        conn.editor_bucket = TokenBucket(limits.editor_msgs_per_second, limits.editor_msgs_burst)
        outcome = session.join(request.participant, conn.id, hello.resume_after, now, conn.peer)
        running = self.screens.running_for(session, request.participant)
        if running:
            # Shares already running: the joiner learns of them right after welcome.
            first, *rest = running
            outcome += Outcome(deliveries=(Delivery(first, (conn.id,), tuple(rest)),))
        editor = self.state.editors.get(session.id)
        if editor is not None and not editor.default_mode:
            # Lecture mode or shared workspaces: the joiner learns it right after welcome.
            mode = Delivery(editor.mode_frame(editor.instructor_pid, now), (conn.id,))
            outcome += Outcome(deliveries=(mode,))
        if not session.opened_recorded:
            session.opened_recorded = True
            opened = AuditEvent(
                kind=EventKind.SESSION_OPENED,
                time=now,
                session=session.id,
                actor=request.participant.pid,
                detail=f"'{session.info.title}', instructor {session.instructor}, "
                f"{len(session.learners)} learner(s) on the roster",
            )
            outcome = Outcome((opened,)) + outcome
        await self._submit(session, outcome)

    async def _check_pin(self, request: authz.JoinRequest, now: float) -> None:
        learner = request.participant.name
        machine = request.participant.machine
        self.pins.check(learner, now, machine)
        assert request.pin is not None
        registry = self.state.registry()
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, registry.check_learner_pin, learner, request.pin)
        if not ok:
            self.pins.failed(learner, self.clock(), machine)
            raise AccessDenied(ErrorCode.BAD_PIN, f"learner '{learner}'")
        self.pins.succeeded(learner)

    def _open_session(self, cls: ScheduledClass, now: float) -> LiveSession:
        session = self.state.sessions.get(cls.id)
        if session is None:
            session = LiveSession(
                info=SessionInfo(
                    id=cls.id, title=cls.title, start=cls.start.timestamp(), end=cls.end.timestamp()
                ),
                instructor=cls.instructor,
                learners=frozenset(cls.learners),
                limits=self.state.limits,
            )
            self.state.sessions[cls.id] = session
        else:
            # The administrator may have edited the roster while the class runs.
            session.learners = frozenset(cls.learners)
        return session

    # -- audit, then deliver ----------------------------------------------------------------

    def _hand_over(
        self,
        session: LiveSession | None,
        outcome: Outcome,
        receipts: list[Awaitable[None]] | None = None,
    ) -> Awaitable[None] | None:
        """Submit the outcome's records, then hand it to the deliverer with the receipt
        (also appended to ``receipts``, for a caller that must know it was recorded)."""
        receipt: Awaitable[None] = self.audit.submit(outcome.events)
        if receipts is not None:
            receipt = asyncio.ensure_future(receipt)
            # Shielded: the receipt is shared by a whole commit group, and cancelling a
            # task that awaits it (a share being stopped) must not cancel it for others.
            receipts.append(asyncio.shield(receipt))
        return self.deliverer.deliver(session, receipt, outcome)

    async def _submit(self, session: LiveSession | None, outcome: Outcome) -> None:
        waiting = self._hand_over(session, outcome)
        if waiting is not None:
            await waiting

    async def _send_direct(self, conn: Connection, outcome: Outcome) -> None:
        """Deliver outside any class's ordering (refusals before or instead of a join)."""
        await self._submit(None, outcome)

    def _error(
        self, conn: Connection, refusal: AccessDenied | ProtocolError, ref: str | None = None
    ) -> tuple[Delivery, ...]:
        code = refusal.code
        frame = ErrorFrame(
            code=code.number, error=code.slug, text=code.text(refusal.detail), ref=ref
        )
        return (Delivery(wire.encode_server(frame), (conn.id,)),)

    def _conn_event(
        self,
        kind: EventKind,
        conn: Connection,
        now: float,
        refusal: AccessDenied | ProtocolError | None,
        hello: Hello | None = None,
    ) -> AuditEvent:
        return AuditEvent(
            kind=kind,
            time=now,
            session=hello.session if hello else None,
            actor=conn.ident.name,
            machine=conn.ident.name if conn.ident.role.value == "machine" else None,
            learner=hello.learner if hello else None,
            peer=conn.peer,
            decision="refused" if refusal else "accepted",
            error=refusal.code.slug if refusal else None,
            detail=(
                refusal.detail if refusal else f"{conn.ident.role.value} on {conn.listener.value}"
            ),
        )

    async def _protocol_error(self, conn: Connection, err: ProtocolError, now: float) -> None:
        # A frame that could not be read as a message leaves the stream suspect: close.
        # One that was read but breaks a rule is refused by its id; the connection stays.
        fatal = err.code in _FATAL or (err.code is ErrorCode.LIMIT_EXCEEDED and err.ref is None)
        event = self._conn_event(EventKind.PROTOCOL_ERROR, conn, now, err)
        if conn.session is not None:
            actor = conn.participant.pid if conn.participant else conn.ident.name
            event = dataclasses.replace(event, session=conn.session.id, actor=actor)
        closes = (CloseRequest(conn.id, err.code, err.detail),) if fatal else ()
        await self._send_direct(conn, Outcome((event,), self._error(conn, err, err.ref), closes))
