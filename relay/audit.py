"""The choke point's audit interface, and a structured-log sink behind it.

The choke point hands every decision to an :class:`AuditSink` as :class:`AuditEvent`
values and delivers nothing until the sink says the events are recorded (invariant 4 of
the design). ``submit`` returns an awaitable that completes when the batch is recorded,
or raises :class:`relay.errors.AuditError`; the relay then fails closed.

:class:`relay.audit_store.AuditStore` is the sink the relay runs with: the
tamper-evident, encrypted log of ``docs/audit.md``.
"""

from __future__ import annotations

import enum
import logging
import operator
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

from relay.frozen import quick_init

log = logging.getLogger("relay.audit")


class Severity(enum.Enum):
    INFO = "I"
    WARNING = "W"
    ERROR = "E"


class EventKind(enum.Enum):
    """Every kind of audit event, with its stable code and severity (see docs/audit.md)."""

    RELAY_STARTED = ("relay.started", "CR001", Severity.INFO)
    RELAY_STOPPED = ("relay.stopped", "CR002", Severity.INFO)
    TLS_REFUSED = ("connection.tls_refused", "CR100", Severity.WARNING)
    CONNECTION_REFUSED = ("connection.refused", "CR101", Severity.WARNING)
    CONNECTION_ACCEPTED = ("connection.accepted", "CR102", Severity.INFO)
    CONNECTION_CLOSED = ("connection.closed", "CR103", Severity.INFO)
    PROTOCOL_ERROR = ("connection.protocol_error", "CR104", Severity.WARNING)
    JOIN_REFUSED = ("session.join_refused", "CR200", Severity.WARNING)
    JOINED = ("session.joined", "CR201", Severity.INFO)
    LEFT = ("session.left", "CR202", Severity.INFO)
    SESSION_OPENED = ("session.opened", "CR203", Severity.INFO)
    SESSION_ENDED = ("session.ended", "CR204", Severity.WARNING)
    SESSION_PAUSED = ("session.paused", "CR205", Severity.ERROR)
    MESSAGE_DELIVERED = ("message.delivered", "CR300", Severity.INFO)
    MESSAGE_REFUSED = ("message.refused", "CR301", Severity.WARNING)
    HAND = ("message.hand", "CR302", Severity.INFO)
    MESSAGE_REDACTED = ("message.redacted", "CR303", Severity.WARNING)
    MESSAGE_ALERT = ("message.alert", "CR304", Severity.WARNING)
    MESSAGE_HELD = ("message.held", "CR305", Severity.WARNING)
    REVIEW_APPROVED = ("review.approved", "CR310", Severity.INFO)
    REVIEW_REJECTED = ("review.rejected", "CR311", Severity.INFO)
    REVIEW_EXPIRED = ("review.expired", "CR312", Severity.WARNING)
    REVIEW_LISTED = ("review.listed", "CR313", Severity.INFO)
    EDITOR_UPDATE = ("editor.update", "CR320", Severity.INFO)
    EDITOR_REFUSED = ("editor.refused", "CR321", Severity.WARNING)
    EDITOR_REDACTED = ("editor.redacted", "CR322", Severity.WARNING)
    EDITOR_ALERT = ("editor.alert", "CR323", Severity.WARNING)
    EDITOR_SNAPSHOT = ("editor.snapshot", "CR324", Severity.INFO)
    EDITOR_SYNC = ("editor.sync", "CR325", Severity.INFO)
    EDITOR_PRESENCE = ("editor.presence", "CR326", Severity.INFO)
    EDITOR_MODE = ("editor.mode", "CR327", Severity.INFO)
    SCREEN_STARTED = ("screen.started", "CR330", Severity.INFO)
    SCREEN_WATCHED = ("screen.watched", "CR331", Severity.INFO)
    SCREEN_STOPPED = ("screen.stopped", "CR332", Severity.INFO)
    SCREEN_ASKED = ("screen.asked", "CR333", Severity.INFO)
    SCREEN_MEDIA = ("screen.media", "CR334", Severity.INFO)
    SCREEN_THUMBNAIL = ("screen.thumbnail", "CR335", Severity.INFO)
    REVOKED = ("admin.revoked", "CR400", Severity.WARNING)
    RELOADED = ("admin.reloaded", "CR401", Severity.INFO)
    POLICY_RELOADED = ("policy.reloaded", "CR402", Severity.INFO)
    POLICY_REJECTED = ("policy.rejected", "CR403", Severity.ERROR)
    ENROLMENT_CHANGED = ("admin.enrolment", "CR404", Severity.INFO)
    SCHEDULE_CHANGED = ("admin.schedule", "CR405", Severity.INFO)
    AUDIT_REPAIRED = ("audit.repaired", "CR500", Severity.WARNING)
    AUDIT_RECOVERED = ("audit.recovered", "CR501", Severity.ERROR)
    AUDIT_REMOVED = ("audit.removed", "CR502", Severity.WARNING)
    LEGAL_HOLD = ("audit.legal_hold", "CR503", Severity.INFO)
    AUDIT_READ = ("audit.read", "CR510", Severity.INFO)

    @property
    def name_(self) -> str:
        return self.value[0]

    @property
    def code(self) -> str:
        """Stable event code with severity suffix, e.g. ``CR301W``."""
        return f"{self.value[1]}{self.value[2].value}"

    @property
    def severity(self) -> Severity:
        return self.value[2]


@quick_init
@dataclass(frozen=True, slots=True)
class AuditEvent:
    kind: EventKind
    time: float
    session: str | None = None
    actor: str | None = None
    """Participant id (``learner:l1001``) or principal name for connection events."""
    machine: str | None = None
    learner: str | None = None
    peer: str | None = None
    """Network address of the connection."""
    msg_id: str | None = None
    seq: int | None = None
    channel: str | None = None
    recipient: str | None = None
    decision: str | None = None
    rule: str | None = None
    error: str | None = None
    """The refusal's error slug (``docs/protocol.md``)."""
    detail: str | None = None
    content: str | None = None
    policy_version: str | None = None
    categories: str | None = None
    """Categories the policy found, comma-separated (``phone,url``)."""
    rules: str | None = None
    """Every rule that matched, comma-separated, when more than the deciding ``rule``."""
    delivered: str | None = None
    """A redacted message: the text as delivered (``content`` is what was sent)."""
    hold: str | None = None
    """The hold id, on a held message and on its review."""

    def to_record(self) -> dict[str, Any]:
        """The event as a flat map: fields that are set, plus kind and code."""
        values = _record_values(self)
        record = {k: v for k, v in zip(_RECORD_FIELDS, values, strict=True) if v is not None}
        record["kind"], record["code"] = _KIND_NAME_CODE[self.kind._name_]
        return record


_RECORD_FIELDS = tuple(f.name for f in fields(AuditEvent) if f.name != "kind")
_record_values = operator.attrgetter(*_RECORD_FIELDS)
_KIND_NAME_CODE = {kind._name_: (kind.name_, kind.code) for kind in EventKind}
"""By member name: hashing a string is cheaper than hashing an enum member."""


class AuditSink(Protocol):
    def submit(self, events: Sequence[AuditEvent]) -> Awaitable[None]:
        """Queue ``events``; the awaitable completes once they are recorded.

        Raises :class:`AuditError` (from the awaitable) when they could not be recorded.
        """
        ...

    @property
    def healthy(self) -> bool: ...

    async def recover(self) -> bool:
        """After a failure, try the storage again; True once events are accepted again."""
        ...

    async def close(self) -> None: ...
