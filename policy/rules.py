"""From findings to one decision: the facility's content rules. Pure.

A rule says what to do (a :class:`policy.decisions.Action`) when a detector finds content
of some categories, optionally only for some sender roles, routes and message kinds. For
each finding the first rule that applies decides its action; the message then gets the most
severe action of all its findings (block > hold > redact > alert > allow). Redaction
replaces each redacted span of the original text with ``[redacted:CATEGORY]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from policy.decisions import Action, Hit, Kind, Route, Subject
from policy.detectors import Category, Finding
from relay.identity import ParticipantRole


@dataclass(frozen=True, slots=True)
class Rule:
    """One content rule of the policy file. Empty selectors match everything."""

    id: str
    categories: frozenset[Category]
    action: Action
    reason: str
    roles: frozenset[ParticipantRole] = frozenset()
    routes: frozenset[Route] = frozenset()
    kinds: frozenset[Kind] = frozenset()
    labels: frozenset[str] = frozenset()
    """Lexicon term categories (e.g. ``threat``) this rule is limited to; empty: any."""

    def __post_init__(self) -> None:
        if not self.id or not self.reason:
            raise ValueError("a rule needs an id and a reason")
        if not self.categories:
            raise ValueError(f"rule {self.id} names no category")

    def applies(self, subject: Subject, finding: Finding) -> bool:
        return (
            finding.category in self.categories
            and (not self.labels or finding.label in self.labels)
            and (not self.roles or subject.sender_role in self.roles)
            and (not self.routes or subject.route in self.routes)
            and (not self.kinds or subject.kind in self.kinds)
        )


@dataclass(frozen=True, slots=True)
class Match:
    """A finding and the rule that decided it."""

    finding: Finding
    rule: Rule


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of the rules for one message, before it becomes a decision value."""

    action: Action
    matches: tuple[Match, ...]
    """Every finding a rule applied to, in text order."""
    deciding: Rule | None
    """The first rule (in text order) with the verdict's action; None for allow."""

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.rule.id for m in self.matches))

    @property
    def categories(self) -> tuple[Category, ...]:
        return tuple(dict.fromkeys(m.finding.category for m in self.matches))

    @property
    def spans(self) -> tuple[tuple[int, int], ...]:
        return tuple((m.finding.start, m.finding.end) for m in self.matches)


def judge(subject: Subject, findings: Iterable[Finding], rules: Sequence[Rule]) -> Verdict:
    """Apply ``rules`` (in order, first applicable rule per finding) to ``findings``."""
    matches: list[Match] = []
    for finding in findings:
        for rule in rules:
            if rule.applies(subject, finding):
                if rule.action is not Action.ALLOW:
                    matches.append(Match(finding, rule))
                break
    if not matches:
        return Verdict(Action.ALLOW, (), None)
    action = max((m.rule.action for m in matches), key=lambda a: a.severity)
    deciding = next(m.rule for m in matches if m.rule.action is action)
    return Verdict(action, tuple(matches), deciding)


def redact(text: str, matches: Iterable[Match]) -> str:
    """``text`` with every redacted finding's span replaced by ``[redacted:CATEGORY]``.

    Overlapping or touching spans are merged; the merged span is labelled with the
    category of its first finding.
    """
    return _redact_spans(
        text,
        (
            (m.finding.start, m.finding.end, m.finding.category.value)
            for m in matches
            if m.rule.action is Action.REDACT
        ),
    )


def redact_hits(text: str, hits: Iterable[Hit]) -> str:
    """Like :func:`redact`, from a decision's hits: ``text`` (the original the hits were
    found in) with the span of every hit whose action is redact replaced. For a message
    that is held and also has redacted findings, this is what to deliver on approval."""
    return _redact_spans(
        text, ((h.start, h.end, h.category) for h in hits if h.action is Action.REDACT)
    )


def _redact_spans(text: str, spans: Iterable[tuple[int, int, str]]) -> str:
    merged: list[tuple[int, int, str]] = []
    for start, end, category in sorted(spans):
        if merged and start <= merged[-1][1]:
            first, last_end, label = merged[-1]
            merged[-1] = (first, max(last_end, end), label)
        else:
            merged.append((start, end, category))
    out: list[str] = []
    last = 0
    for start, end, category in merged:
        out.append(text[last:start])
        out.append(f"[redacted:{category}]")
        last = end
    out.append(text[last:])
    return "".join(out)
