"""The routing policy and its file (pure)."""

from __future__ import annotations

import pytest

from policy.decisions import Allow, Block, Kind, Route, Subject
from policy.engine import DEFAULT_POLICY_TOML, default_policy, parse_policy
from relay.errors import ConfigError
from relay.identity import ParticipantRole as R


def subject(sender: R, recipient: R | None, kind: Kind = Kind.CHAT) -> Subject:
    route = Route.CLASS if recipient is None else Route.DIRECT
    return Subject(kind=kind, sender_role=sender, route=route, text="x", recipient_role=recipient)


def test_default_policy_routes() -> None:
    p = default_policy()
    assert isinstance(p.decide(subject(R.LEARNER, R.LEARNER)), Block)
    assert isinstance(p.decide(subject(R.LEARNER, R.INSTRUCTOR)), Allow)
    assert isinstance(p.decide(subject(R.INSTRUCTOR, R.LEARNER)), Allow)
    assert isinstance(p.decide(subject(R.LEARNER, None)), Allow)
    blocked = p.decide(subject(R.STAFF, R.LEARNER))
    assert isinstance(blocked, Block)
    assert blocked.route_refused


def test_learner_to_learner_can_be_allowed() -> None:
    p = parse_policy(b"[routing]\nlearner_to_learner_direct = true\n", "test")
    assert isinstance(p.decide(subject(R.LEARNER, R.LEARNER)), Allow)
    assert p.version != default_policy().version


def test_the_version_is_a_hash_of_the_file() -> None:
    assert default_policy().version == parse_policy(DEFAULT_POLICY_TOML.encode(), "x").version
    assert default_policy().version.startswith("sha256:")


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
