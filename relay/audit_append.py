"""Recording what happens outside the relay's message path: enrolment and schedule
changes, staff reads of the audit log, legal holds, retention.

The log has one writer at a time. When the relay runs, it is the writer: these events go
to it over the control socket (op ``audit_append``) and into its group commit. When it
does not run, the command opens the log itself (taking the writer lock), appends, signs a
checkpoint and closes it. Either way the caller learns only once the events are durable;
if they cannot be recorded, :class:`~relay.errors.AuditError` says why and the caller
must not go on as if they were (fail closed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from relay.audit import AuditEvent, EventKind
from relay.errors import AuditError, ControlError, ControlRefused
from relay.home import FacilityHome

APPENDABLE = frozenset(
    {
        EventKind.ENROLMENT_CHANGED,
        EventKind.SCHEDULE_CHANGED,
        EventKind.AUDIT_READ,
        EventKind.LEGAL_HOLD,
        EventKind.AUDIT_REMOVED,
    }
)
"""The kinds a command may append; everything else only the relay itself records."""
_KINDS_BY_NAME = {kind.name_: kind for kind in APPENDABLE}
_TEXT_FIELDS = ("session", "actor", "machine", "learner", "decision", "detail", "rule")


def event_to_json(event: AuditEvent) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": event.kind.name_, "time": event.time}
    for name in _TEXT_FIELDS:
        value = getattr(event, name)
        if value is not None:
            out[name] = value
    return out


def event_from_json(data: object, limit_chars: int = 2_000) -> AuditEvent:
    """An appendable event from the control socket; ValueError says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("each event must be a JSON object")
    kind = _KINDS_BY_NAME.get(str(data.get("kind")))
    if kind is None:
        raise ValueError(
            f"kind {data.get('kind')!r} cannot be appended; "
            f"appendable kinds: {', '.join(sorted(_KINDS_BY_NAME))}"
        )
    when = data.get("time")
    if isinstance(when, bool) or not isinstance(when, int | float):
        raise ValueError("'time' must be a number (UNIX seconds)")
    values: dict[str, str] = {}
    for name in _TEXT_FIELDS:
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > limit_chars:
            raise ValueError(f"'{name}' must be a string of at most {limit_chars} characters")
        values[name] = value
    unknown = set(data) - {"kind", "time", *_TEXT_FIELDS}
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
    return AuditEvent(
        kind=kind,
        time=float(when),
        session=values.get("session"),
        actor=values.get("actor"),
        machine=values.get("machine"),
        learner=values.get("learner"),
        decision=values.get("decision"),
        rule=values.get("rule"),
        detail=values.get("detail"),
    )


def admin_event(
    kind: EventKind,
    detail: str,
    *,
    actor: str | None = None,
    session: str | None = None,
    decision: str | None = None,
    now: float | None = None,
) -> AuditEvent:
    if kind not in APPENDABLE:
        raise ValueError(f"{kind.name_} is recorded by the relay itself")
    return AuditEvent(
        kind=kind,
        time=time.time() if now is None else now,
        actor=actor,
        session=session,
        decision=decision,
        detail=detail,
    )


def record_events(home: FacilityHome, events: Sequence[AuditEvent]) -> str:
    """Record ``events`` durably; returns ``"relay"`` or ``"direct"`` (who wrote them).

    Raises :class:`AuditError` when they could not be recorded.
    """
    from relay.control import request_control

    payload: dict[str, object] = {"events": [event_to_json(e) for e in events]}
    try:
        request_control(home, "audit_append", payload)
        return "relay"
    except ControlRefused as exc:
        raise AuditError(f"the relay could not record it: {exc}") from None
    except ControlError:
        pass  # no relay running: write the log ourselves
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_append_direct(home, events))
    else:
        # Called from inside an event loop (the demo builds its facility in one): the
        # log is written from a thread of its own, with a loop of its own.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, _append_direct(home, events)).result()
    return "direct"


async def _append_direct(home: FacilityHome, events: Sequence[AuditEvent]) -> None:
    from relay.server import open_audit_store

    store = open_audit_store(home, home.load_config())
    try:
        await store.submit(events)
    finally:
        await store.close()


__all__ = ["APPENDABLE", "admin_event", "event_from_json", "event_to_json", "record_events"]
