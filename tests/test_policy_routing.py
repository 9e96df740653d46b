"""The routing policy and its file (pure)."""

from __future__ import annotations

import hashlib

import pytest

from policy.decisions import Allow, Block, Kind, Route, Subject
from policy.engine import (
    DEFAULT_POLICY_TOML,
    default_policy,
    default_policy_files,
    parse_policy,
    read_from,
)
from relay.errors import ConfigError
from relay.identity import ParticipantRole as R


def subject(sender: R, recipient: R | None, kind: Kind = Kind.CHAT) -> Subject:
    route = Route.CLASS if recipient is None else Route.DIRECT
    return Subject(kind=kind, sender_role=sender, route=route, text="x", recipient_role=recipient)


def test_default_policy_routes() -> None:
    p = default_policy()
    refused = p.decide(subject(R.LEARNER, R.LEARNER))
    assert isinstance(refused, Block)
    assert refused.route_refused
    assert refused.rule == "routing.learner_to_learner_direct"
    assert refused.hits == ()
    assert isinstance(p.decide(subject(R.LEARNER, R.INSTRUCTOR)), Allow)
    assert isinstance(p.decide(subject(R.INSTRUCTOR, R.LEARNER)), Allow)
    assert isinstance(p.decide(subject(R.LEARNER, None)), Allow)
    blocked = p.decide(subject(R.STAFF, R.LEARNER))
    assert isinstance(blocked, Block)
    assert blocked.route_refused
    assert blocked.rule == "routing.staff_observe_only"


def test_routing_comes_before_content() -> None:
    # A direct message between learners is refused for its route, whatever it says.
    p = default_policy()
    text = "I'll get you a burner phone"
    subj = Subject(
        kind=Kind.CHAT,
        sender_role=R.LEARNER,
        route=Route.DIRECT,
        text=text,
        recipient_role=R.LEARNER,
    )
    decision = p.decide(subj)
    assert isinstance(decision, Block)
    assert decision.route_refused
    # To the instructor it is a content refusal.
    to_instructor = Subject(
        kind=Kind.CHAT,
        sender_role=R.LEARNER,
        route=Route.DIRECT,
        text=text,
        recipient_role=R.INSTRUCTOR,
    )
    decision = p.decide(to_instructor)
    assert isinstance(decision, Block)
    assert not decision.route_refused
    assert decision.rule == "lexicon.contraband"


def test_staff_may_raise_hands_directly() -> None:
    # Only direct chat is refused to staff; other kinds are not routing-refused.
    assert isinstance(default_policy().decide(subject(R.STAFF, R.LEARNER, Kind.HAND)), Allow)


def test_learner_to_learner_can_be_allowed() -> None:
    p = parse_policy(b"[routing]\nlearner_to_learner_direct = true\n", "test")
    assert isinstance(p.decide(subject(R.LEARNER, R.LEARNER)), Allow)
    assert p.version != default_policy().version


def test_the_version_is_a_hash_of_the_files() -> None:
    files = default_policy_files()
    parsed = parse_policy(DEFAULT_POLICY_TOML.encode(), "x", read_from(files))
    assert default_policy().version == parsed.version
    # With a lexicon file: the hash of the two files' hashes.
    both = hashlib.sha256(files["policy.toml"].encode()).digest()
    both += hashlib.sha256(files["lexicon.txt"].encode()).digest()
    assert default_policy().version == "sha256:" + hashlib.sha256(both).hexdigest()[:16]
    # Without one: the hash of the policy file.
    data = b"[routing]\nlearner_to_learner_direct = true\n"
    assert parse_policy(data, "x").version == "sha256:" + hashlib.sha256(data).hexdigest()[:16]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b"[routing\n", "invalid TOML"),
        (b"[routing]\nlearner_to_learner_direct = 'yes'\n", "true or false"),
        (b"[routing]\nteleport = true\n", "unknown key"),
        (b"[colours]\n", "unknown table"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_bad_policy_files_are_refused_clearly(text: bytes, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_policy(text, "/facility/policy.toml")
    assert needle in str(info.value)
    assert "/facility/policy.toml" in str(info.value)


def test_subject_checks_itself() -> None:
    with pytest.raises(ValueError, match="direct"):
        Subject(kind=Kind.CHAT, sender_role=R.LEARNER, route=Route.DIRECT)


def test_who_may_share_a_screen() -> None:
    p = default_policy()
    assert isinstance(p.may_share_screen(R.INSTRUCTOR, asked=False), Allow)
    unasked = p.may_share_screen(R.LEARNER, asked=False)
    assert isinstance(unasked, Block)
    assert unasked.rule == "routing.screen_share.ask_first"
    assert isinstance(p.may_share_screen(R.LEARNER, asked=True), Allow)
    staff = p.may_share_screen(R.STAFF, asked=True)
    assert isinstance(staff, Block)
    assert staff.rule == "routing.staff_observe_only"
    never = parse_policy(b"[routing]\nlearner_screen_share = false\n", "test")
    refused = never.may_share_screen(R.LEARNER, asked=True)
    assert isinstance(refused, Block)
    assert refused.rule == "routing.learner_screen_share"
    assert "does not let learners share" in refused.reason
    with pytest.raises(ConfigError, match="learner_screen_share must be true or false"):
        parse_policy(b'[routing]\nlearner_screen_share = "yes"\n', "test")
