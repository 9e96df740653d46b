"""The administrator's changes are recorded in the audit log, whether the relay runs or not."""

from __future__ import annotations

import asyncio

import pytest

from relay.audit import EventKind
from relay.audit_append import admin_event, event_from_json, record_events
from relay.control import request_control
from relay.errors import ControlRefused
from relay.server import Relay
from tests.conftest import Facility


def test_enrolment_and_schedule_changes_are_recorded_with_the_relay_stopped(
    facility: Facility,
) -> None:
    records = facility.audit_records()
    enrolled = [r["detail"] for r in records if r["kind"] == "admin.enrolment"]
    assert any(d.startswith("enrolled instructor alice") for d in enrolled)
    assert any(d.startswith("enrolled machine pc-01 in classroom room-a") for d in enrolled)
    assert "added learner l1001" in enrolled
    scheduled = [r for r in records if r["kind"] == "admin.schedule"]
    assert scheduled[0]["session"] == "py101"
    assert scheduled[0]["actor"].startswith("admin:")
    facility.must("revoke", "bob", "--reason", "left the program")
    facility.must("learner", "remove", "l1003")
    details = [r["detail"] for r in facility.audit_records() if r["kind"] == "admin.enrolment"]
    assert any(d.startswith("revoked instructor bob") and "left the program" in d for d in details)
    assert "removed learner l1003" in details


async def test_changes_go_through_the_running_relay(facility: Facility, relay: Relay) -> None:
    before = len(facility.audit_records())
    await asyncio.to_thread(facility.must, "schedule", "remove", "py101")
    after = facility.audit_records()[before:]
    # Recorded by the running relay (it holds the log), then the relay reloaded.
    assert [(r["kind"], r.get("session")) for r in after] == [
        ("admin.schedule", "py101"),
        ("policy.reloaded", None),
        ("admin.reloaded", None),
    ]
    assert after[0]["detail"] == "removed from the schedule"


async def test_the_control_socket_appends_only_appendable_kinds(
    facility: Facility, relay: Relay
) -> None:
    forged = {"kind": "message.delivered", "time": 1.0, "detail": "never said"}
    with pytest.raises(ControlRefused, match="cannot be appended"):
        await asyncio.to_thread(
            request_control, facility.home, "audit_append", {"events": [forged]}
        )
    event = admin_event(EventKind.AUDIT_READ, "search --session py101", actor="staff:sam")
    assert await asyncio.to_thread(record_events, facility.home, [event]) == "relay"
    reads = [r for r in facility.audit_records() if r["kind"] == "audit.read"]
    assert reads[-1]["actor"] == "staff:sam"


def test_appendable_events_are_checked() -> None:
    with pytest.raises(ValueError, match="'time' must be a number"):
        event_from_json({"kind": "audit.read", "time": "now"})
    with pytest.raises(ValueError, match="unknown field"):
        event_from_json({"kind": "audit.read", "time": 1.0, "content": "x"})
    with pytest.raises(ValueError, match="recorded by the relay itself"):
        admin_event(EventKind.MESSAGE_DELIVERED, "x")
