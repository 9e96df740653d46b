"""The shared editor of one class: workspaces, who may see and edit them, and the
outcome of every editor message. Pure, no I/O.

The choke point (``relay.chokepoint``) authorises nothing here by itself: it hands each
decoded editor message with its sender to :class:`ClassEditor`, which returns an
:class:`~relay.session.Outcome` (records first, then deliveries) exactly like
:class:`~relay.session.LiveSession` does for chat.

Workspaces of a class:

- ``class``: the instructor's; everyone in the class sees it. Learners may edit it
  unless the instructor turned lecture mode on.
- ``learner:NAME``: one per learner on the roster; that learner, the instructor and
  security staff see it and the learner and the instructor edit it. When the instructor
  shares it, the whole class sees it (still only its owner and the instructor edit).

Every incoming update is applied to the relay's authoritative document
(:class:`relay.editor.Workspace`) and judged by the content policy
(:func:`relay.editor.judge`). Others receive the relay's own diff of what it kept,
never the author's bytes: a refused change reaches them only as length-only deleted
structures, so they stay in step without ever holding the refused text.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from policy.decisions import Decision, Kind, Route, Subject
from policy.engine import PolicyEngine
from relay import wire
from relay.audit import AuditEvent, EventKind
from relay.editor import (
    Applied,
    EditorError,
    EditorLimits,
    EditRefusal,
    EditVerdict,
    EditVerdictKind,
    Workspace,
    judge,
)
from relay.errors import AccessDenied, ErrorCode
from relay.identity import Participant, ParticipantRole
from relay.messages import (
    CLASS_WORKSPACE,
    Ack,
    AckStatus,
    AlertNotice,
    EditorLecture,
    EditorModeEvent,
    EditorPresence,
    EditorPresenceEvent,
    EditorShare,
    EditorState,
    EditorSync,
    EditorUpdate,
    EditorUpdateEvent,
)
from relay.session import Delivery, LiveSession, Outcome

log = logging.getLogger("relay.editor")

RELAY_AUTHOR = "relay"
"""``by`` of the updates the relay itself authors (compensations, redactions)."""

EditorMessage = EditorSync | EditorUpdate | EditorPresence | EditorLecture | EditorShare

_REFUSAL_CODES: dict[EditRefusal, ErrorCode] = {
    EditRefusal.MALFORMED: ErrorCode.BAD_UPDATE,
    EditRefusal.UNSUPPORTED: ErrorCode.BAD_UPDATE,
    EditRefusal.BAD_FILE_NAME: ErrorCode.BAD_UPDATE,
    EditRefusal.OUT_OF_SYNC: ErrorCode.OUT_OF_SYNC,
    EditRefusal.FILE_TOO_LARGE: ErrorCode.EDITOR_LIMIT,
    EditRefusal.WORKSPACE_TOO_LARGE: ErrorCode.EDITOR_LIMIT,
    EditRefusal.TOO_MANY_FILES: ErrorCode.EDITOR_LIMIT,
}


@dataclass(frozen=True, slots=True)
class EditorSettings:
    """Limits of the shared editor (``relay.toml`` has none yet: these are the values)."""

    limits: EditorLimits = field(default_factory=EditorLimits)
    snapshot_every_updates: int = 500
    """A workspace's whole state is recorded after this many changes ..."""
    snapshot_every_s: float = 60.0
    """... or when this long has passed since its last snapshot and it changed."""

    def __post_init__(self) -> None:
        if self.snapshot_every_updates < 1 or self.snapshot_every_s <= 0:
            raise ValueError("editor snapshot intervals must be positive")


_VIEWER_CACHE_LIMIT = 4096
"""Most (workspace, connection) recipient lists kept between membership changes."""

_RELOAD = "; reload the workspace: drop your copy and send editor_sync with an empty state vector"
"""Added to a refusal after which the author's copy cannot be merged back in step."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(slots=True)
class _Tracked:
    ws: Workspace
    changes: int = 0
    last_snapshot: float = 0.0


@dataclass(slots=True)
class ClassEditor:
    """The editor state of one class."""

    session: LiveSession
    settings: EditorSettings = field(default_factory=EditorSettings)
    lecture: bool = False
    shared: dict[str, None] = field(default_factory=dict)
    """Learner participant ids whose workspace the whole class sees, in sharing order."""
    _spaces: dict[str, _Tracked] = field(default_factory=dict)
    _viewer_cache: dict[tuple[str, int], tuple[int, ...]] = field(default_factory=dict)
    _viewer_version: tuple[int, int] = (-1, -1)
    _shares: int = 0
    """Counts changes of sharing (part of the viewer cache's key)."""

    # -- who may do what ----------------------------------------------------------------

    @property
    def instructor_pid(self) -> str:
        return f"instructor:{self.session.instructor}"

    def _owner_known(self, ws: str) -> bool:
        if ws == CLASS_WORKSPACE:
            return True
        _, _, name = ws.partition(":")
        return name in self.session.learners

    def may_see(self, pid: str, role: ParticipantRole, ws: str) -> bool:
        if ws == CLASS_WORKSPACE or role is not ParticipantRole.LEARNER:
            return True
        return ws == pid or ws in self.shared

    def _may_edit(self, who: Participant, ws: str) -> None:
        """Raises :class:`AccessDenied` unless ``who`` may change ``ws`` now."""
        if who.role is ParticipantRole.STAFF:
            raise AccessDenied(ErrorCode.NOT_PERMITTED, "security staff observe the editor")
        if who.role is ParticipantRole.INSTRUCTOR:
            return
        if ws == CLASS_WORKSPACE:
            if self.lecture:
                raise AccessDenied(
                    ErrorCode.READ_ONLY, "lecture mode: the class workspace is the instructor's"
                )
            return
        if ws != who.pid:
            raise AccessDenied(
                ErrorCode.READ_ONLY, f"'{ws}' belongs to another learner; edit your own"
            )

    def _space(self, who: Participant, ws: str) -> _Tracked:
        if not self._owner_known(ws) or not self.may_see(who.pid, who.role, ws):
            raise AccessDenied(ErrorCode.UNKNOWN_WORKSPACE, f"'{ws}'")
        tracked = self._spaces.get(ws)
        if tracked is None:
            tracked = self._spaces[ws] = _Tracked(Workspace(ws, self.settings.limits))
        return tracked

    def workspace(self, ws: str) -> Workspace | None:
        tracked = self._spaces.get(ws)
        return tracked.ws if tracked else None

    def _viewers(self, ws: str, exclude: int) -> tuple[int, ...]:
        """Connections of those who see ``ws``, but ``exclude`` (cached until someone
        joins or leaves or sharing changes: this runs for every keystroke)."""
        version = (self.session.members_version, self._shares)
        if version != self._viewer_version:
            self._viewer_cache.clear()
            self._viewer_version = version
        key = (ws, exclude)
        conns = self._viewer_cache.get(key)
        if conns is None:
            conns = self.session.conns_where(
                lambda p: self.may_see(p.pid, p.role, ws), exclude=exclude
            )
            if len(self._viewer_cache) > _VIEWER_CACHE_LIMIT:
                self._viewer_cache.clear()
            self._viewer_cache[key] = conns
        return conns

    # -- messages -----------------------------------------------------------------------

    def handle(
        self,
        who: Participant,
        conn: int,
        msg: EditorMessage,
        now: float,
        policy: PolicyEngine,
    ) -> Outcome:
        """The outcome of one editor message. Raises :class:`AccessDenied` to refuse it."""
        if isinstance(msg, EditorUpdate):
            return self._update(who, conn, msg, now, policy)
        if isinstance(msg, EditorPresence):
            return self._presence(who, conn, msg, now)
        if isinstance(msg, EditorSync):
            return self._sync(who, conn, msg, now)
        return self._mode(who, conn, msg, now)

    def _sync(self, who: Participant, conn: int, msg: EditorSync, now: float) -> Outcome:
        ws = self._space(who, msg.ws).ws
        try:
            missing = ws.diff(msg.sv)
        except EditorError as err:
            raise AccessDenied(ErrorCode.BAD_UPDATE, err.detail) from err
        state = EditorState(ref=msg.id, ws=msg.ws, update=missing, sv=ws.state_vector())
        record = self.session.event(
            EventKind.EDITOR_SYNC,
            now,
            who,
            channel=msg.ws,
            msg_id=msg.id,
            detail=f"sent {len(missing)} bytes of state",
        )
        return Outcome((record,), (Delivery(wire.encode_server(state), (conn,)),))

    def _presence(self, who: Participant, conn: int, msg: EditorPresence, now: float) -> Outcome:
        ws = self._space(who, msg.ws).ws
        anchor = head = 0
        if msg.file is not None:
            files = ws.files()
            text = files.get(msg.file)
            if text is None:
                raise AccessDenied(ErrorCode.INVALID_FIELD, "no such file in the workspace")
            anchor, head = min(msg.anchor, len(text)), min(msg.head, len(text))
        event = EditorPresenceEvent(
            ws=msg.ws, who=who.pid, file=msg.file, anchor=anchor, head=head, time=now
        )
        record = self.session.event(
            EventKind.EDITOR_PRESENCE,
            now,
            who,
            channel=msg.ws,
            msg_id=msg.id,
            detail=f"{msg.file} {anchor}-{head}" if msg.file is not None else "no file open",
        )
        viewers = self._viewers(msg.ws, conn)
        deliveries = (Delivery(wire.encode_server(event), viewers),) if viewers else ()
        return Outcome((record,), deliveries)

    def _mode(
        self, who: Participant, conn: int, msg: EditorLecture | EditorShare, now: float
    ) -> Outcome:
        if who.role is not ParticipantRole.INSTRUCTOR:
            raise AccessDenied(
                ErrorCode.NOT_PERMITTED, "only the instructor sets lecture mode and sharing"
            )
        if isinstance(msg, EditorLecture):
            self.lecture = msg.on
            detail = "lecture mode on" if msg.on else "lecture mode off"
        else:
            if msg.learner not in self.session.learners:
                raise AccessDenied(
                    ErrorCode.UNKNOWN_WORKSPACE, f"'learner:{msg.learner}' is not on the roster"
                )
            pid = f"learner:{msg.learner}"
            if msg.shared:
                self.shared[pid] = None
            else:
                self.shared.pop(pid, None)
            self._shares += 1
            detail = f"{pid} {'shared with' if msg.shared else 'no longer shown to'} the class"
        record = self.session.event(
            EventKind.EDITOR_MODE, now, who, channel=CLASS_WORKSPACE, msg_id=msg.id, detail=detail
        )
        ack = Ack(ref=msg.id, status=AckStatus.DELIVERED, seq=self.session.seq, time=now)
        mode = self.mode_frame(who.pid, now)
        everyone = self.session.conns_where(lambda p: True, exclude=0)
        return Outcome(
            (record,), (self.session.answer(who.pid, conn, ack), Delivery(mode, everyone))
        )

    def mode_frame(self, by: str, now: float) -> bytes:
        event = EditorModeEvent(lecture=self.lecture, shared=tuple(self.shared), by=by, time=now)
        return wire.encode_server(event)

    @property
    def default_mode(self) -> bool:
        """Lecture off and nothing shared: what a client assumes without an editor_mode."""
        return not self.lecture and not self.shared

    # -- updates ------------------------------------------------------------------------

    def _subject(
        self, who: Participant, ws: str, policy: PolicyEngine
    ) -> Callable[[Kind, str], Decision]:
        """How the policy sees a change of ``ws`` by ``who``: the class, or one person."""
        shared = ws == CLASS_WORKSPACE or ws in self.shared
        if shared:
            route, recipient = Route.CLASS, None
        elif who.role is ParticipantRole.LEARNER:
            route, recipient = Route.DIRECT, ParticipantRole.INSTRUCTOR
        else:
            route, recipient = Route.DIRECT, ParticipantRole.LEARNER

        def ask(kind: Kind, text: str) -> Decision:
            return policy.decide(Subject(kind, who.role, route, text, recipient))

        return ask

    def _update(
        self, who: Participant, conn: int, msg: EditorUpdate, now: float, policy: PolicyEngine
    ) -> Outcome:
        tracked = self._space(who, msg.ws)
        self._may_edit(who, msg.ws)
        ws = tracked.ws
        before = ws.state_vector()
        try:
            applied = ws.apply(msg.update)
        except EditorError as err:
            return self._refused_update(who, conn, msg, now, err, before, policy)
        verdict = judge(ws, applied, self._subject(who, msg.ws, policy))
        return self._decided(who, conn, msg, now, tracked, applied, verdict, policy.version)

    def _refused_update(
        self,
        who: Participant,
        conn: int,
        msg: EditorUpdate,
        now: float,
        err: EditorError,
        before: bytes,
        policy: PolicyEngine,
    ) -> Outcome:
        """An update the editor could not take: the author is put back, others kept in step."""
        code = _REFUSAL_CODES[err.refusal]
        ws = self._spaces[msg.ws].ws
        forward = ws.diff(before) if ws.state_vector() != before else b""
        ack = _refused(msg.id, code, err.detail + (_RELOAD if err.resync else ""))
        deliveries = self._to_author(who, conn, msg, now, err.compensation, ack)
        if forward:
            deliveries.extend(self._to_others(msg.ws, forward, RELAY_AUTHOR, now, conn))
        record = self.session.event(
            EventKind.EDITOR_REFUSED,
            now,
            who,
            channel=msg.ws,
            msg_id=msg.id,
            decision="refused",
            error=code.slug,
            detail=err.detail,
            delivered=b64(forward) if forward else None,
            policy_version=policy.version,
        )
        return Outcome((record,), tuple(deliveries))

    def _to_author(
        self,
        who: Participant,
        conn: int,
        msg: EditorUpdate,
        now: float,
        correction: bytes,
        ack: Ack,
    ) -> list[Delivery]:
        """To the author: the relay's correction of its copy (if any), then the ack."""
        out: list[Delivery] = []
        if correction:
            fix = EditorUpdateEvent(msg.ws, correction, RELAY_AUTHOR, now, ref=msg.id)
            out.append(Delivery(wire.encode_server(fix), (conn,)))
        out.append(self.session.answer(who.pid, conn, ack))
        return out

    def _to_others(
        self, ws: str, update: bytes, by: str, now: float, conn: int
    ) -> tuple[Delivery, ...]:
        viewers = self._viewers(ws, conn)
        if not viewers or not update:
            return ()
        frame = wire.encode_server(EditorUpdateEvent(ws, update, by, now))
        return (Delivery(frame, viewers),)

    def _decided(
        self,
        who: Participant,
        conn: int,
        msg: EditorUpdate,
        now: float,
        tracked: _Tracked,
        applied: Applied,
        verdict: EditVerdict,
        policy_version: str,
    ) -> Outcome:
        ws = msg.ws
        kind = verdict.kind
        to_staff: list[Delivery] = []
        seq = self.session.seq
        categories = ",".join(verdict.categories) or None
        rules = ",".join(verdict.rules) if len(verdict.rules) > 1 else None
        rule = verdict.decision.rule if verdict.decision is not None else None
        if kind is EditVerdictKind.BLOCK:
            code = ErrorCode.POLICY_BLOCKED
            ack = _refused(
                msg.id,
                code,
                f"{verdict.reason}; the relay undid your change and no one else received it"
                + (_RELOAD if verdict.resync else ""),
            )
            record_kind, decision = EventKind.EDITOR_REFUSED, "refused"
            error: str | None = code.slug
        elif kind is EditVerdictKind.REDACT:
            ack = Ack(
                ref=msg.id,
                status=AckStatus.REDACTED,
                seq=seq,
                time=now,
                text=f"Part of your change was replaced: {verdict.reason}. The others see "
                "[redacted:...] in its place; your editor was updated the same way.",
                redacted=_redacted_excerpt(tracked.ws, applied),
            )
            record_kind, decision, error = EventKind.EDITOR_REDACTED, "redacted", None
        else:
            ack = Ack(ref=msg.id, status=AckStatus.DELIVERED, seq=seq, time=now)
            record_kind, decision, error = EventKind.EDITOR_UPDATE, "delivered", None
            if kind is EditVerdictKind.ALERT:
                record_kind, decision = EventKind.EDITOR_ALERT, "delivered, staff alerted"
                log.warning(
                    "alert in class %s: editor change %s of %s matched %s (%s)",
                    self.session.id,
                    msg.id,
                    who.pid,
                    rule,
                    categories,
                )
                alert = AlertNotice(
                    ref=msg.id,
                    seq=seq,
                    sender=who.pid,
                    rule=rule or "",
                    reason=verdict.reason,
                    categories=verdict.categories,
                    time=now,
                )
                staff = tuple(c for c in self.session.staff_conns() if c != conn)
                if staff:
                    to_staff.append(Delivery(wire.encode_server(alert), staff))
        deliveries = self._to_author(who, conn, msg, now, verdict.author_update, ack) + to_staff
        forward = verdict.forward
        deliveries.extend(self._to_others(ws, forward, who.pid, now, conn))
        record = self.session.event(
            record_kind,
            now,
            who,
            channel=ws,
            msg_id=msg.id,
            decision=decision,
            rule=rule,
            rules=rules,
            categories=categories,
            error=error,
            detail=_describe(applied, verdict),
            content=verdict.inserted or None,
            delivered=b64(forward) if forward else None,
            policy_version=policy_version,
        )
        records = [record]
        tracked.changes += 1
        if tracked.last_snapshot == 0.0:
            tracked.last_snapshot = now
        if (
            tracked.changes >= self.settings.snapshot_every_updates
            or now - tracked.last_snapshot >= self.settings.snapshot_every_s
        ):
            records.append(self._snapshot(tracked, now, "periodic"))
        return Outcome(tuple(records), tuple(deliveries))

    # -- snapshots ----------------------------------------------------------------------

    def _snapshot(self, tracked: _Tracked, now: float, why: str) -> AuditEvent:
        tracked.changes = 0
        tracked.last_snapshot = now
        ws = tracked.ws
        files = ws.files()
        return AuditEvent(
            EventKind.EDITOR_SNAPSHOT,
            now,
            self.session.id,
            RELAY_AUTHOR,
            channel=ws.ws_id,
            detail=f"{why}: {len(files)} file(s), {sum(len(t) for t in files.values())} chars",
            delivered=b64(ws.snapshot()),
        )

    def snapshots(self, now: float, why: str) -> tuple[AuditEvent, ...]:
        """A snapshot record of every workspace that changed since its last one."""
        return tuple(self._snapshot(t, now, why) for t in self._spaces.values() if t.changes > 0)


def _refused(ref: str, code: ErrorCode, detail: str) -> Ack:
    return Ack(
        ref=ref, status=AckStatus.REFUSED, code=code.number, error=code.slug, text=code.text(detail)
    )


def _describe(applied: Applied, verdict: EditVerdict) -> str:
    """A line for the record's clear ``detail``: what changed where (no contents).

    File names of a refused change are left out: a name may itself be what was refused.
    """
    if verdict.kind is EditVerdictKind.BLOCK:
        inserted = sum(len(i.text) for i in applied.insertions)
        return (
            f"refused change of {len(applied.files)} file entry(ies), +{inserted} chars; "
            f"{verdict.reason}"
        )
    parts: list[str] = []
    for change in applied.files:
        old = f" (was {change.old_name})" if change.old_name else ""
        parts.append(f"{change.op.value} {change.name}{old}")
    touched = dict.fromkeys(
        [i.file for i in applied.insertions] + [r.file for r in applied.removals]
    )
    inserted = sum(len(i.text) for i in applied.insertions)
    removed = sum(len(r.text) for r in applied.removals)
    if touched:
        parts.append(f"{', '.join(touched)}: +{inserted} -{removed} chars")
    if verdict.kind is not EditVerdictKind.ALLOW and verdict.reason:
        parts.append(verdict.reason)
    return "; ".join(parts) or "no visible change"


def _redacted_excerpt(ws: Workspace, applied: Applied) -> str:
    """The changed lines as they now are (after the redaction), for the author's ack."""
    files = ws.files()
    lines: list[str] = []
    for ex in applied.excerpts:
        text = files.get(ex.file, "")
        start = text.rfind("\n", 0, min(ex.start, len(text))) + 1
        end = text.find("\n", min(ex.start, len(text)))
        lines.append(text[start : end if end >= 0 else len(text)])
    return "\n".join(lines)
