"""Content rules: first applicable rule per finding, most severe action wins, redaction."""

from __future__ import annotations

import pytest

from policy.decisions import Action, Hit, Kind, Route, Subject
from policy.detectors import Category, Finding
from policy.rules import Rule, judge, redact, redact_hits
from relay.identity import ParticipantRole as R

TEXT = "call 555 0134 or mail jo@mail.test, burner phone"
PHONE = Finding(Category.PHONE, "phone.number", 5, 13)
EMAIL = Finding(Category.EMAIL, "email.address", 22, 34)
TERM = Finding(Category.LEXICON, "lexicon.term", 36, 48, label="contraband")

RULES = (
    Rule(
        "instructor.phone_ok",
        frozenset({Category.PHONE}),
        Action.ALLOW,
        "staff line",
        roles=frozenset({R.INSTRUCTOR}),
    ),
    Rule("contact.phone", frozenset({Category.PHONE}), Action.REDACT, "no phone numbers"),
    Rule("contact.email", frozenset({Category.EMAIL}), Action.HOLD, "emails are reviewed"),
    Rule(
        "lexicon.contraband",
        frozenset({Category.LEXICON}),
        Action.BLOCK,
        "contraband",
        labels=frozenset({"contraband"}),
    ),
    Rule("lexicon.other", frozenset({Category.LEXICON}), Action.ALERT, "watch this"),
)


def subject(role: R = R.LEARNER, route: Route = Route.CLASS) -> Subject:
    recipient = R.INSTRUCTOR if route is Route.DIRECT else None
    return Subject(
        kind=Kind.CHAT, sender_role=role, route=route, text=TEXT, recipient_role=recipient
    )


def test_nothing_found_is_allowed() -> None:
    verdict = judge(subject(), (), RULES)
    assert verdict.action is Action.ALLOW
    assert verdict.deciding is None
    assert verdict.rules == ()


def test_most_severe_action_wins_and_all_rules_are_reported() -> None:
    verdict = judge(subject(), (PHONE, EMAIL, TERM), RULES)
    assert verdict.action is Action.BLOCK
    assert verdict.deciding is not None
    assert verdict.deciding.id == "lexicon.contraband"
    assert verdict.rules == ("contact.phone", "contact.email", "lexicon.contraband")
    assert verdict.categories == (Category.PHONE, Category.EMAIL, Category.LEXICON)
    assert verdict.spans == ((5, 13), (22, 34), (36, 48))


def test_first_applicable_rule_decides_each_finding() -> None:
    assert judge(subject(R.INSTRUCTOR), (PHONE,), RULES).action is Action.ALLOW
    assert judge(subject(R.LEARNER), (PHONE,), RULES).action is Action.REDACT
    other = Finding(Category.LEXICON, "lexicon.term", 0, 4, label="slang")
    assert judge(subject(), (other,), RULES).action is Action.ALERT


def test_unruled_categories_are_allowed() -> None:
    blob = Finding(Category.BLOB, "blob.base64", 0, 40)
    assert judge(subject(), (blob,), RULES).action is Action.ALLOW


def test_redaction_replaces_only_redacted_spans() -> None:
    verdict = judge(subject(), (PHONE, EMAIL), RULES)
    assert redact(TEXT, verdict.matches) == (
        "call [redacted:phone] or mail jo@mail.test, burner phone"
    )


def test_overlapping_redactions_merge() -> None:
    rules = (Rule("r", frozenset({Category.PHONE, Category.URL}), Action.REDACT, "x"),)
    a = Finding(Category.PHONE, "p", 2, 8)
    b = Finding(Category.URL, "u", 6, 12)
    verdict = judge(subject(), (a, b), rules)
    assert redact("0123456789abcdef", verdict.matches) == "01[redacted:phone]cdef"


def test_rules_check_themselves() -> None:
    with pytest.raises(ValueError, match="category"):
        Rule("r", frozenset(), Action.BLOCK, "reason")
    with pytest.raises(ValueError, match="reason"):
        Rule("r", frozenset({Category.URL}), Action.BLOCK, "")


def test_redaction_from_hits_matches_redaction_from_matches() -> None:
    verdict = judge(subject(), (PHONE, EMAIL, TERM), RULES)
    hits = tuple(
        Hit(m.rule.id, m.finding.category.value, m.rule.action, m.finding.start, m.finding.end)
        for m in verdict.matches
    )
    assert redact_hits(TEXT, hits) == redact(TEXT, verdict.matches)
    assert redact_hits(TEXT, ()) == TEXT


def test_every_action_orders_by_severity() -> None:
    order = [Action.ALLOW, Action.ALERT, Action.REDACT, Action.HOLD, Action.BLOCK]
    assert sorted(Action, key=lambda a: a.severity) == order
    for action in order[1:]:
        finding = Finding(Category.URL, "url.www", 0, 4)
        rules = (
            Rule("low", frozenset({Category.PHONE}), Action.ALERT, "x"),
            Rule("r", frozenset({Category.URL}), action, "x"),
        )
        verdict = judge(subject(), (PHONE, finding), rules)
        assert verdict.action is max(action, Action.ALERT, key=lambda a: a.severity)
