"""Redact, hold (with staff review), alert and rate limits through a real relay."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest

from relay.client import RelayClient
from relay.errors import ClientError
from relay.messages import (
    AckStatus,
    AlertNotice,
    ChatEvent,
    HeldNotice,
    Reviewed,
    ReviewOutcome,
)
from relay.server import Relay, running_relay
from tests.conftest import Facility
from tests.test_relay_integration import audited, drain, instructor, learner, next_of

pytestmark = pytest.mark.integration

TEST_POLICY = """\
[detectors]
allowed_domains = ["docs.python.org"]

[lexicon.watch]
action = "alert"
reason = "staff follow talk of lockdowns"
terms = ["lockdown"]

[[rule]]
id = "link.instructor"
categories = ["url"]
roles = ["instructor"]
action = "hold"
reason = "links outside the allowed list wait for staff review"

[[rule]]
id = "link"
categories = ["url"]
action = "block"
reason = "links are not allowed"

[[rule]]
id = "contact.instructor"
categories = ["email", "phone"]
roles = ["instructor"]
action = "redact"
reason = "contact details are removed"

[[rule]]
id = "contact"
categories = ["email", "phone"]
action = "block"
reason = "contact details are not allowed"

[rate.chat]
person_rate = 0.5
person_burst = 3
session_rate = 100.0
session_burst = 100
throttle_s = 1.0

[review]
expire_after_minutes = 30
"""

LINK = "see https://realpython.com/python-lists/ for more"


@pytest.fixture
async def prelay(facility: Facility) -> AsyncIterator[Relay]:
    """A relay running the test policy above."""
    facility.home.policy_toml.write_text(TEST_POLICY)
    async with running_relay(facility.home, outside=("127.0.0.1", 0), inside=("127.0.0.1", 0)) as r:
        yield r


def staff(f: Facility, r: Relay) -> RelayClient:
    assert r.addresses is not None
    return RelayClient(f.bundle("sam"), "py101", relay_url=r.addresses.inside_url)


async def test_redacted_for_everyone_but_the_audit_log(facility: Facility, prelay: Relay) -> None:
    async with (
        instructor(facility, prelay) as alice,
        learner(facility, prelay, "l1001", "pc-01") as l1,
    ):
        await drain(l1)
        ack = await alice.chat("mail me at alice.smith@gmail.com after class")
        assert ack.status is AckStatus.REDACTED
        assert ack.redacted == "mail me at [redacted:email] after class"
        assert ack.text is not None
        assert "gmail" not in ack.text
        assert "email" in ack.text
        got = await next_of(l1, ChatEvent)
        assert isinstance(got, ChatEvent)
        assert got.text == "mail me at [redacted:email] after class"
        # The sender's own view (synthesised from the ack) shows what the others saw.
        own = await next_of(alice, ChatEvent)
        assert isinstance(own, ChatEvent)
        assert own.text == ack.redacted
        rec = audited(facility, "message.redacted", rule="contact.instructor")
        assert len(rec) == 1
        assert rec[0]["content"] == "mail me at alice.smith@gmail.com after class"
        assert rec[0]["delivered"] == ack.redacted
        assert rec[0]["categories"] == "email"
    # Replayed history holds only the redacted text.
    async with learner(facility, prelay, "l1002", "pc-02") as l2:
        texts = [e.text for e in await drain(l2) if isinstance(e, ChatEvent)]
        assert texts == ["mail me at [redacted:email] after class"]


async def test_learner_contact_details_are_blocked_not_redacted(
    facility: Facility, prelay: Relay
) -> None:
    async with learner(facility, prelay, "l1001", "pc-01") as l1:
        ack = await l1.chat("my sister is at 212 555 0182")
        assert ack.status is AckStatus.REFUSED
        assert ack.error == "policy_blocked"
        assert ack.text is not None
        assert "555" not in ack.text
        assert "phone" in ack.text


async def test_held_message_is_approved_by_staff_and_delivered_late(
    facility: Facility, prelay: Relay
) -> None:
    async with (
        instructor(facility, prelay) as alice,
        learner(facility, prelay, "l1001", "pc-01") as l1,
        staff(facility, prelay) as sam,
    ):
        await drain(l1)
        await drain(sam)
        ack = await alice.chat(LINK)
        assert ack.status is AckStatus.HELD
        assert ack.hold is not None
        assert ack.hold.startswith("py101.h")
        assert ack.error == "held_for_review"
        assert ack.text is not None
        assert "review" in ack.text
        assert "realpython" not in ack.text
        # Staff present see the held message at once; the learner sees nothing.
        notice = await next_of(sam, HeldNotice)
        assert isinstance(notice, HeldNotice)
        assert notice.held.hold == ack.hold
        assert notice.held.text == LINK
        assert notice.held.rule == "link.instructor"
        assert not [e for e in await drain(l1, 0.5) if isinstance(e, ChatEvent)]
        held = await sam.review_list()
        assert [h.hold for h in held.holds] == [ack.hold]
        decided = await sam.review(ack.hold, approve=True)
        assert decided.status is AckStatus.DELIVERED
        late = await next_of(l1, ChatEvent)
        assert isinstance(late, ChatEvent)
        assert late.text == LINK
        assert late.approved_by == "staff:sam"
        assert late.sent is not None
        assert late.sent <= late.time
        told = await next_of(alice, Reviewed)
        assert isinstance(told, Reviewed)
        assert told.outcome is ReviewOutcome.APPROVED
        assert told.seq == late.seq
        assert (await sam.review_list()).holds == ()
    held_rec = audited(facility, "message.held", hold=ack.hold)
    assert len(held_rec) == 1
    assert held_rec[0]["content"] == LINK
    approved = audited(facility, "review.approved", hold=ack.hold)
    assert len(approved) == 1
    assert approved[0]["actor"] == "staff:sam"
    assert audited(facility, "review.listed", actor="staff:sam")


async def test_an_approved_message_keeps_its_redactions(facility: Facility, prelay: Relay) -> None:
    text = "slides: https://realpython.com/loops/ questions: alice.smith@gmail.com"
    async with (
        instructor(facility, prelay) as alice,
        learner(facility, prelay, "l1001", "pc-01") as l1,
        staff(facility, prelay) as sam,
    ):
        await drain(l1)
        ack = await alice.chat(text)
        assert ack.status is AckStatus.HELD
        assert ack.hold is not None
        assert (await sam.review_list()).holds[0].text == text  # staff see all of it
        await sam.review(ack.hold, approve=True)
        late = await next_of(l1, ChatEvent)
        assert isinstance(late, ChatEvent)
        assert late.text == "slides: https://realpython.com/loops/ questions: [redacted:email]"
    rec = audited(facility, "review.approved", hold=ack.hold)
    assert rec[0]["delivered"] == late.text


async def test_rejected_message_is_never_delivered(facility: Facility, prelay: Relay) -> None:
    async with (
        instructor(facility, prelay) as alice,
        learner(facility, prelay, "l1001", "pc-01") as l1,
        staff(facility, prelay) as sam,
    ):
        await drain(l1)
        ack = await alice.chat(LINK)
        assert ack.hold is not None
        with pytest.raises(ClientError, match="reason is required"):
            await sam.review(ack.hold, approve=False)
        decided = await sam.review(ack.hold, approve=False, reason="not a documentation site")
        assert decided.status is AckStatus.DELIVERED
        told = await next_of(alice, Reviewed)
        assert isinstance(told, Reviewed)
        assert told.outcome is ReviewOutcome.REJECTED
        assert told.reason == "not a documentation site"
        assert told.seq is None
        assert not [e for e in await drain(l1, 0.5) if isinstance(e, ChatEvent)]
        again = await sam.review(ack.hold, approve=True)
        assert again.status is AckStatus.REFUSED
        assert again.error == "unknown_hold"
    assert audited(facility, "review.rejected", hold=ack.hold)


async def test_only_staff_review(facility: Facility, prelay: Relay) -> None:
    async with instructor(facility, prelay) as alice:
        ack = await alice.chat(LINK)
        assert ack.hold is not None
        mine = await alice.review(ack.hold, approve=True)
        assert mine.status is AckStatus.REFUSED
        assert mine.error == "not_permitted"
        with pytest.raises(ClientError, match="only security staff"):
            await alice.review_list()


async def test_unreviewed_messages_expire_as_rejected(facility: Facility, prelay: Relay) -> None:
    async with instructor(facility, prelay) as alice:
        ack = await alice.chat(LINK)
        assert ack.hold is not None
        held = prelay.state.holds.get(ack.hold)
        assert held is not None
        # Let the review time run out (the relay's ticker expires it within a second).
        prelay.state.holds._pending[ack.hold] = dataclasses.replace(held, expires=time.time())
        told = await next_of(alice, Reviewed, 5)
        assert isinstance(told, Reviewed)
        assert told.outcome is ReviewOutcome.EXPIRED
        assert "not reviewed within 30" in told.reason
    assert audited(facility, "review.expired", hold=ack.hold)


async def test_ending_the_class_rejects_what_waits(facility: Facility, prelay: Relay) -> None:
    async with instructor(facility, prelay) as alice:
        ack = await alice.chat(LINK)
        assert ack.hold is not None
        await prelay.end_session("py101", "admin:root", "drill")
    rec = audited(facility, "review.rejected", hold=ack.hold)
    assert len(rec) == 1
    assert "class ended" in str(rec[0]["detail"])
    assert len(prelay.state.holds) == 0


async def test_alert_delivers_and_tells_staff(facility: Facility, prelay: Relay) -> None:
    async with (
        learner(facility, prelay, "l1001", "pc-01") as l1,
        learner(facility, prelay, "l1002", "pc-02") as l2,
        staff(facility, prelay) as sam,
    ):
        await drain(l2)
        await drain(sam)
        ack = await l1.chat("is there a lockdown today?")
        assert ack.status is AckStatus.DELIVERED
        got = await next_of(l2, ChatEvent)
        assert isinstance(got, ChatEvent)
        assert got.text == "is there a lockdown today?"
        alert = await next_of(sam, AlertNotice)
        assert isinstance(alert, AlertNotice)
        assert alert.seq == ack.seq
        assert alert.rule == "lexicon.watch"
        assert alert.sender == "learner:l1001"
        # The learners are not told about the alert.
        assert not [e for e in await drain(l2, 0.3) if isinstance(e, AlertNotice)]
    rec = audited(facility, "message.alert", msg_id=got.id)
    assert len(rec) == 1
    assert rec[0]["code"] == "CR304W"


async def test_a_flood_is_throttled_then_refused(facility: Facility, prelay: Relay) -> None:
    async with learner(facility, prelay, "l1001", "pc-01") as l1:
        started = time.monotonic()
        # Burst of 3, then one more within the 1 s throttle (0.5 tokens/s => 2 s wait: refused).
        acks = [await l1.chat(f"line {n}") for n in range(3)]
        assert all(a.status is AckStatus.DELIVERED for a in acks)
        refused = await l1.chat("line 3")
        assert refused.status is AckStatus.REFUSED
        assert refused.error == "rate_limited"
        assert refused.text is not None
        assert "per second" in refused.text
        assert time.monotonic() - started < 30
    assert audited(facility, "message.refused", error="rate_limited")


async def test_a_short_wait_is_a_delay_not_a_refusal(facility: Facility) -> None:
    facility.home.policy_toml.write_text(
        TEST_POLICY.replace("person_rate = 0.5", "person_rate = 4.0")
    )
    async with (
        running_relay(facility.home, outside=("127.0.0.1", 0), inside=("127.0.0.1", 0)) as r,
        learner(facility, r, "l1001", "pc-01") as l1,
    ):
        acks = await asyncio.gather(*(l1.chat(f"line {n}") for n in range(6)))
        # 3 at once, then 3 more each delayed about 0.25 s: all delivered, none refused.
        assert [a.status for a in acks] == [AckStatus.DELIVERED] * 6
