"""The policy engine with the built-in default policy, measured on the corpora."""

from __future__ import annotations

import pytest

from policy.decisions import Allow, Block, Kind, Route, Subject
from policy.engine import DEFAULT_POLICY_TOML, ContentPolicy, default_policy, parse_policy
from relay.errors import ConfigError
from relay.identity import ParticipantRole as R
from tests.policy.corpus_reader import read_clean, read_evasion

NAMES = '["Jane Roe", "Marisol Quintero", "Tobias Wrenfield"]'


def facility_policy() -> ContentPolicy:
    text = DEFAULT_POLICY_TOML.replace("do_not_contact = []", f"do_not_contact = {NAMES}")
    return parse_policy(text.encode(), "test policy")


def chat(text: str, sender: R = R.LEARNER) -> Subject:
    return Subject(kind=Kind.CHAT, sender_role=sender, route=Route.CLASS, text=text)


def test_default_policy_refuses_every_evasion() -> None:
    policy = facility_policy()
    missed = [
        s.message for s in read_evasion() if isinstance(policy.decide(chat(s.message)), Allow)
    ]
    assert missed == []


def test_default_policy_lets_the_classroom_talk() -> None:
    policy = facility_policy()
    clean = read_clean()
    refused = [s.message for s in clean if not isinstance(policy.decide(chat(s.message)), Allow)]
    assert len(refused) <= 0.005 * len(clean), refused


def test_a_refusal_names_the_rule_and_category_not_the_text() -> None:
    decision = default_policy().decide(chat("text me at (212) 555-0182 tonight"))
    assert isinstance(decision, Block)
    assert decision.rule == "contact.details"
    assert "phone" in decision.reason
    assert "555" not in decision.reason


def test_lexicon_categories_become_rules() -> None:
    decision = default_policy().decide(chat("I'll get you a burner phone"))
    assert isinstance(decision, Block)
    assert decision.rule == "lexicon.contraband"


def test_rules_select_by_role() -> None:
    text = DEFAULT_POLICY_TOML + (
        '\n[[rule]]\nid = "x"\ncategories = ["url"]\naction = "allow"\nreason = "r"\n'
    )
    # A later rule never overrides an earlier one for the same finding.
    policy = parse_policy(text.encode(), "t")
    assert isinstance(policy.decide(chat("see www.hotmail.com")), Block)
    # An earlier rule for instructors only lets them link; learners still may not.
    instructor_rule = (
        '[[rule]]\nid = "instructor.links"\ncategories = ["url"]\naction = "allow"\n'
        'reason = "instructors may link"\nroles = ["instructor"]\n\n'
    )
    anchor = '[[rule]]\nid = "content.hidden"'
    staff_ok = DEFAULT_POLICY_TOML.replace(anchor, instructor_rule + anchor, 1)
    policy = parse_policy(staff_ok.encode(), "t")
    assert isinstance(policy.decide(chat("see www.hotmail.com", R.INSTRUCTOR)), Allow)
    assert isinstance(policy.decide(chat("see www.hotmail.com", R.LEARNER)), Block)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            '[[rule]]\nid = "a"\ncategories = ["url"]\naction = "hold"\nreason = "r"\n',
            "not supported",
        ),
        (
            '[[rule]]\nid = "a"\ncategories = ["links"]\naction = "block"\nreason = "r"\n',
            "unknown value",
        ),
        ('[[rule]]\nid = "a"\ncategories = ["url"]\naction = "block"\n', "needs 'reason'"),
        ('[detectors]\nphone_regions = ["ZZ"]\n', "unknown phone region"),
        ("[detectors]\ncolour = 1\n", "unknown key"),
        ('[lexicon.threat]\naction = "block"\nreason = "r"\n', "needs 'terms'"),
        (
            '[[rule]]\nid = "a"\ncategories = ["url"]\naction = "block"\nreason = "r"\n'
            '[[rule]]\nid = "a"\ncategories = ["url"]\naction = "block"\nreason = "r"\n',
            "used twice",
        ),
    ],
)
def test_bad_policy_files_are_refused_clearly(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_policy(text.encode(), "/facility/policy.toml")
    assert needle in str(info.value)
    assert "/facility/policy.toml" in str(info.value)
