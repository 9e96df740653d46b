"""The choke point's audit interface, and a structured-log sink behind it.

The choke point hands every decision to an :class:`AuditSink` as :class:`AuditEvent`
values and delivers nothing until the sink says the events are recorded (invariant 4 of
the design). ``submit`` returns an awaitable that completes when the batch is recorded,
or raises :class:`relay.errors.AuditError`; the relay then fails closed.

:class:`JsonlAuditSink` writes one JSON object per line with group commit: every batch
submitted during one turn of the event loop is written and flushed together. It is a
structured log, not yet the tamper-evident encrypted store (docs/audit.md).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import math
import operator
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any, Protocol

from relay.errors import AuditError
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
    REVOKED = ("admin.revoked", "CR400", Severity.WARNING)
    RELOADED = ("admin.reloaded", "CR401", Severity.INFO)
    POLICY_RELOADED = ("policy.reloaded", "CR402", Severity.INFO)
    POLICY_REJECTED = ("policy.rejected", "CR403", Severity.ERROR)

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

    async def close(self) -> None: ...


class JsonlAuditSink:
    """Structured audit log, one JSON object per line, with group commit per loop turn."""

    def __init__(self, path: Path, *, writer: IO[str] | None = None) -> None:
        self.path = path
        if writer is None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            writer = os.fdopen(fd, "a", encoding="utf-8", buffering=1 << 16)
        self._file: IO[str] = writer
        self._pending: list[AuditEvent] = []
        self._receipt: asyncio.Future[None] | None = None
        """Shared by every batch submitted before the next commit (one per loop turn)."""
        self._failed: AuditError | None = None
        self.records_written = 0

    @property
    def healthy(self) -> bool:
        return self._failed is None

    def replace_writer(self, writer: IO[str]) -> None:
        """Swap the storage adapter (used when the operator restores the log)."""
        self._file = writer
        self._failed = None

    def submit(self, events: Sequence[AuditEvent]) -> Awaitable[None]:
        receipt = self._receipt
        if receipt is None:
            loop = asyncio.get_running_loop()
            receipt = loop.create_future()
            if self._failed is not None:
                receipt.set_exception(self._failed)
                return receipt
            self._receipt = receipt
            loop.call_soon(self._commit)
        self._pending.extend(events)
        return receipt

    def _commit(self) -> None:
        events, self._pending = self._pending, []
        receipt, self._receipt = self._receipt, None
        if receipt is None:
            return  # already committed (by close)
        try:
            self._file.write("".join([_line(e) for e in events]))
            self._file.flush()
        except Exception as exc:
            self._failed = AuditError(
                f"the audit log {self.path} could not be written ({exc}); "
                "the relay refuses to deliver until it is fixed"
            )
            log.critical("AUDIT LOG FAILURE: %s", self._failed)
            if not receipt.done():
                receipt.set_exception(self._failed)
            return
        self.records_written += len(events)
        if not receipt.done():
            receipt.set_result(None)

    async def close(self) -> None:
        if self._receipt is not None:
            self._commit()
        try:
            self._file.close()
        except OSError as exc:
            log.error("closing the audit log failed: %s", exc)


_encode_record = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
"""``json.dumps(record, ensure_ascii=False, separators=(",", ":"))``, without a new
encoder per call."""
_encode_str = json.encoder.encode_basestring
_FIELD_KEYS = tuple(f'"{name}":' for name in _RECORD_FIELDS)
_KIND_SUFFIXES = {
    kind._name_: f',"kind":{_encode_str(kind.name_)},"code":{_encode_str(kind.code)}}}\n'
    for kind in EventKind
}


def _finite_float(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError("json writes NaN and Infinity its own way")
    return float.__repr__(value)


_FORMATS: dict[type, Callable[[Any], str]] = {
    str: _encode_str,
    int: int.__repr__,
    float: _finite_float,
}
"""How ``json`` writes values of exactly these types (not subclasses, not bool)."""


def _line(event: AuditEvent) -> str:
    """One record as a JSON line: exactly ``_encode_record(event.to_record()) + "\\n"``.

    Every record is written before its message is delivered, so this is on the path of
    every message: the fields are formatted directly, the way ``json`` formats them
    (strings with its own escaping function, integers and finite floats with their
    ``repr``), without building the intermediate map. A value of any other type is left
    to the ``json`` encoder.
    """
    values = _record_values(event)
    try:
        body = ",".join(
            [
                key + _FORMATS[type(value)](value)
                for key, value in zip(_FIELD_KEYS, values, strict=True)
                if value is not None
            ]
        )
    except (KeyError, ValueError):
        body = ""
    if not body:
        return _encode_record(event.to_record()) + "\n"
    return "{" + body + _KIND_SUFFIXES[event.kind._name_]
