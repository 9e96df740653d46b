"""The review and policy-reload commands against a running relay, both ways: the
administrator through the control socket, and security staff with a bundle."""

from __future__ import annotations

import asyncio
import json

import pytest

from policy.engine import load_policy
from relay.messages import AckStatus, ChatEvent, Reviewed, ReviewOutcome
from relay.server import Relay
from tests.conftest import Facility
from tests.test_policy_actions import LINK
from tests.test_policy_actions import prelay as prelay  # the fixture
from tests.test_relay_integration import audited, drain, instructor, learner, next_of

pytestmark = pytest.mark.integration


async def admin(facility: Facility, *args: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(facility.admin, *args)


async def test_admin_lists_and_approves_from_the_command_line(
    facility: Facility, prelay: Relay
) -> None:
    async with (
        instructor(facility, prelay) as alice,
        learner(facility, prelay, "l1001", "pc-01") as l1,
    ):
        await drain(l1)
        ack = await alice.chat(LINK)
        assert ack.hold is not None
        code, out, err = await admin(facility, "review", "list")
        assert code == 0, err
        assert ack.hold in out
        assert LINK in out
        assert "link.instructor" in out
        code, out, _ = await admin(facility, "review", "list", "--json", "--session", "py101")
        (record,) = [json.loads(line) for line in out.splitlines()]
        assert record["hold"] == ack.hold
        assert record["session"] == "py101"
        assert record["from"] == "instructor:alice"
        code, out, err = await admin(facility, "review", "approve", ack.hold)
        assert code == 0, err
        assert "Approved" in out
        late = await next_of(l1, ChatEvent)
        assert isinstance(late, ChatEvent)
        assert late.approved_by == "admin:admin"
        code, out, _ = await admin(facility, "review", "list")
        assert "No messages wait for review." in out
        # Deciding it again: a clear refusal.
        code, _, err = await admin(facility, "review", "approve", ack.hold)
        assert code == 2
        assert "unknown_hold" in err or "no message of this class waits" in err
    assert audited(facility, "review.listed", actor="admin:admin")


async def test_reject_needs_a_reason_and_bad_hold_ids_are_refused(
    facility: Facility, prelay: Relay
) -> None:
    async with instructor(facility, prelay) as alice:
        ack = await alice.chat(LINK)
        assert ack.hold is not None
        code, _, err = await admin(facility, "review", "reject", ack.hold)
        assert code == 2
        assert "--reason" in err
        code, _, err = await admin(facility, "review", "reject", "no-such-thing", "--reason", "x")
        assert code == 2
        assert "not a hold id" in err
        code, _, err = await admin(facility, "review", "reject", ack.hold, "--reason", "no")
        assert code == 0, err
        told = await next_of(alice, Reviewed)
        assert isinstance(told, Reviewed)
        assert told.outcome is ReviewOutcome.REJECTED
        assert told.reason == "no"


async def test_staff_review_with_their_bundle(facility: Facility, prelay: Relay) -> None:
    assert prelay.addresses is not None
    inside = prelay.addresses.inside_url
    sam = ["--bundle", str(facility.bundle("sam")), "--relay", inside]
    async with (
        instructor(facility, prelay) as alice,
        learner(facility, prelay, "l1001", "pc-01") as l1,
    ):
        await drain(l1)
        ack = await alice.chat(LINK)
        assert ack.hold is not None
        code, _, err = await admin(facility, "review", "list", *sam)
        assert code == 2
        assert "--session" in err
        code, out, err = await admin(facility, "review", "list", "--session", "py101", *sam)
        assert code == 0, err
        assert ack.hold in out
        code, out, err = await admin(facility, "review", "approve", ack.hold, *sam)
        assert code == 0, err
        assert "approved" in out
        late = await next_of(l1, ChatEvent)
        assert isinstance(late, ChatEvent)
        assert late.approved_by == "staff:sam"
        # A learner's bundle is not a staff bundle.
        other = ["--bundle", str(facility.bundle("pc-01")), "--relay", inside]
        code, _, err = await admin(facility, "review", "list", "--session", "py101", *other)
        assert code != 0
        assert "staff" in err


async def test_review_without_a_running_relay_says_so(facility: Facility) -> None:
    code, _, err = await admin(facility, "review", "list")
    assert code == 2
    assert "running relay" in err


async def test_policy_reload_keeps_the_last_good_policy(facility: Facility, prelay: Relay) -> None:
    before = prelay.state.policy.version
    path = facility.home.policy_toml
    good = path.read_text()
    path.write_text(
        good + "\n[[rule]]\nid = 'broken'\ncategories = ['nonsense']\naction = 'block'\n"
        "reason = 'x'\n"
    )
    code, _, err = await admin(facility, "policy", "reload")
    assert code == 2
    assert "nonsense" in err
    assert "keeps the one in force" in err
    assert prelay.state.policy.version == before
    rejected = audited(facility, "policy.rejected")
    assert len(rejected) == 1
    assert rejected[0]["policy_version"] == before
    # The relay still decides with the old policy: the instructor's link is still held.
    async with instructor(facility, prelay) as alice:
        assert (await alice.chat(LINK)).status is AckStatus.HELD
        path.write_text(good.replace('action = "hold"', 'action = "block"'))
        code, out, err = await admin(facility, "policy", "reload")
        assert code == 0, err
        new = load_policy(path).version
        assert new in out
        assert prelay.state.policy.version == new
        assert (await alice.chat(LINK)).status is AckStatus.REFUSED
    reloaded = audited(facility, "policy.reloaded", policy_version=new)
    assert len(reloaded) == 1
    assert before in str(reloaded[0]["detail"])


async def test_policy_reload_without_a_relay_checks_the_file(facility: Facility) -> None:
    code, out, err = await admin(facility, "policy", "reload")
    assert code == 0, err
    assert "not running" in out
    assert "valid" in out
    facility.home.policy_toml.write_text("[routing]\nlearner_to_learner_direct = 'maybe'\n")
    code, _, err = await admin(facility, "policy", "reload")
    assert code == 2
    assert "learner_to_learner_direct" in err
