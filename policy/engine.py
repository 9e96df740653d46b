"""The policy engine: the facility's policy file, and the decision it makes per message.

The relay's choke point calls :meth:`PolicyEngine.decide` for every message. The
engine applies the routing rules (who may send direct messages to whom), then, for
messages that carry text, normalises the text (``policy.normalize``), runs the
detectors (``policy.detectors``) and the content rules (``policy.rules``).
Pure: no I/O except :func:`load_policy`, which reads the file once.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from policy.decisions import Action, Allow, Block, Decision, Kind, Route, Subject
from policy.detectors import (
    DEFAULT_ALLOWED_DOMAINS,
    Category,
    DetectorConfig,
    Detectors,
    LexiconTerm,
)
from policy.normalize import normalise
from policy.rules import Rule, judge
from relay.errors import ConfigError
from relay.identity import ParticipantRole


class PolicyEngine(Protocol):
    @property
    def version(self) -> str:
        """A short hash of the policy in force; every decision records it."""
        ...

    def decide(self, subject: Subject) -> Decision: ...


@dataclass(frozen=True, slots=True)
class RoutingRules:
    learner_to_learner_direct: bool = False


ALLOW_CONTENT = Allow(rule="content.allow", reason="no content rule applies")

_CONTENT_ACTIONS = (Action.ALLOW, Action.BLOCK)
"""Actions a rule may have in this version; redact, hold and alert need the relay's
support for changed, held and flagged messages, which is being built."""


@dataclass(frozen=True, slots=True)
class ContentPolicy:
    """Routing rules, detectors and content rules of one policy file."""

    routing: RoutingRules
    version: str
    rules: tuple[Rule, ...] = ()
    detector_config: DetectorConfig = field(default_factory=DetectorConfig)
    detectors: Detectors = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "detectors", Detectors(self.detector_config))

    def decide(self, subject: Subject) -> Decision:
        if (
            subject.route is Route.DIRECT
            and subject.sender_role is ParticipantRole.LEARNER
            and subject.recipient_role is ParticipantRole.LEARNER
            and not self.routing.learner_to_learner_direct
        ):
            return Block(
                rule="routing.learner_to_learner_direct",
                reason="learners may not send direct messages to other learners",
                route_refused=True,
            )
        if (
            subject.kind is Kind.CHAT
            and subject.route is Route.DIRECT
            and subject.sender_role is ParticipantRole.STAFF
        ):
            return Block(
                rule="routing.staff_observe_only",
                reason="staff observe classes and do not send direct messages",
                route_refused=True,
            )
        if not subject.text or not self.rules:
            return ALLOW_CONTENT
        findings = self.detectors.find(normalise(subject.text))
        if not findings:
            return ALLOW_CONTENT
        verdict = judge(subject, findings, self.rules)
        if verdict.deciding is None or verdict.action is Action.ALLOW:
            return ALLOW_CONTENT
        rule = verdict.deciding
        categories = ", ".join(c.value.replace("_", "-") for c in verdict.categories)
        return Block(rule=rule.id, reason=f"{rule.reason} ({categories})")


def _version_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


DEFAULT_POLICY_TOML = """\
# Content policy of this facility. See docs/policy.md.
[routing]
# Learners may not write direct messages to each other unless this is true.
learner_to_learner_direct = false

[detectors]
# Documentation sites a coding class may link to (their subdomains too). example.com,
# example.org, example.net, *.example, *.test, *.invalid and localhost are always allowed.
allowed_domains = ["docs.python.org", "developer.mozilla.org", "git-scm.com", "www.sqlite.org"]
# Phone numbers are recognised as written in these regions (ISO 3166 codes).
phone_regions = ["US", "GB"]
# Full names nobody in the classroom may contact or name, e.g. ["Jane Roe"].
do_not_contact = []

# The banned-term lexicon: one table per category, with the action for its terms.
[lexicon.contraband]
action = "block"
reason = "talk of contraband is not allowed"
terms = ["shank", "shiv", "burner phone", "burner cell", "drop spot", "smuggle", "smuggled",
         "smuggling", "contraband", "pruno"]

[lexicon.threat]
action = "block"
reason = "threats are not allowed"
terms = ["kill you", "kill him", "kill her", "hurt you", "hurt him", "hurt her", "stab you",
         "stab him", "stab her", "you're dead", "watch your back", "snitches get stitches"]

# Content rules, first applicable rule per finding; the most severe action wins.
# action: allow or block (redact, hold and alert are not supported yet).
[[rule]]
id = "content.hidden"
categories = ["hidden"]
action = "block"
reason = "invisible or direction-changing characters are not allowed"

[[rule]]
id = "contact.link"
categories = ["url"]
action = "block"
reason = "links to sites outside the allowed list are not allowed"

[[rule]]
id = "contact.details"
categories = ["email", "phone", "address", "social"]
action = "block"
reason = "contact details and other apps are not allowed"

[[rule]]
id = "content.encoded"
categories = ["blob"]
action = "block"
reason = "encoded or scrambled data is not allowed"

[[rule]]
id = "contact.do_not_contact"
categories = ["do_not_contact"]
action = "block"
reason = "this person may not be contacted or named"
"""


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return tuple(value)


def _enum_set(values: object, enum_type: Any, where: str) -> frozenset[Any]:
    out = set()
    for v in _strings(values, where):
        try:
            out.add(enum_type(v))
        except ValueError:
            known = ", ".join(e.value for e in enum_type)
            raise ConfigError(f"{where}: unknown value {v!r}; known: {known}") from None
    return frozenset(out)


def _action(value: object, where: str) -> Action:
    try:
        action = Action(value)
    except ValueError:
        raise ConfigError(
            f"{where}: action must be one of {', '.join(a.value for a in _CONTENT_ACTIONS)}"
        ) from None
    if action not in _CONTENT_ACTIONS:
        raise ConfigError(
            f"{where}: action {action.value!r} is not supported by this version of the relay; "
            "use allow or block"
        )
    return action


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(
            f"{where} has unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
        )


def parse_policy(data: bytes, source: str) -> ContentPolicy:
    """Parse policy file bytes. Raises :class:`ConfigError` naming the file and key."""
    try:
        doc: dict[str, Any] = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc
    unknown = sorted(set(doc) - {"routing", "detectors", "lexicon", "rule"})
    if unknown:
        raise ConfigError(
            f"{source}: unknown table(s) {', '.join(unknown)}; "
            "known: [routing], [detectors], [lexicon.CATEGORY], [[rule]]"
        )
    routing = doc.get("routing", {})
    if not isinstance(routing, dict):
        raise ConfigError(f"{source}: 'routing' must be a table")
    _check_keys(routing, {"learner_to_learner_direct"}, f"{source}: [routing]")
    l2l = routing.get("learner_to_learner_direct", False)
    if not isinstance(l2l, bool):
        raise ConfigError(f"{source}: [routing] learner_to_learner_direct must be true or false")

    det = doc.get("detectors", {})
    if not isinstance(det, dict):
        raise ConfigError(f"{source}: 'detectors' must be a table")
    _check_keys(
        det, {"allowed_domains", "phone_regions", "do_not_contact"}, f"{source}: [detectors]"
    )
    where = f"{source}: [detectors]"
    domains = frozenset(
        d.lower()
        for d in _strings(
            det.get("allowed_domains", sorted(DEFAULT_ALLOWED_DOMAINS)), f"{where} allowed_domains"
        )
    )
    regions = _strings(det.get("phone_regions", ["US", "GB"]), f"{where} phone_regions")
    names = _strings(det.get("do_not_contact", []), f"{where} do_not_contact")

    rules: list[Rule] = []
    lexicon: list[LexiconTerm] = []
    lex = doc.get("lexicon", {})
    if not isinstance(lex, dict):
        raise ConfigError(f"{source}: 'lexicon' must hold one table per category")
    for category, table in lex.items():
        where = f"{source}: [lexicon.{category}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        _check_keys(table, {"action", "reason", "terms"}, where)
        for key in ("action", "reason", "terms"):
            if key not in table:
                raise ConfigError(f"{where} needs '{key}'")
        try:
            lexicon += [
                LexiconTerm(t, category) for t in _strings(table["terms"], f"{where} terms")
            ]
            rules.append(
                Rule(
                    id=f"lexicon.{category}",
                    categories=frozenset({Category.LEXICON}),
                    action=_action(table["action"], where),
                    reason=str(table["reason"]),
                    labels=frozenset({category}),
                )
            )
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    raw_rules = doc.get("rule", [])
    if not isinstance(raw_rules, list):
        raise ConfigError(f"{source}: rules are written as [[rule]] tables")
    seen: set[str] = {r.id for r in rules}
    for n, table in enumerate(raw_rules, start=1):
        where = f"{source}: [[rule]] #{n}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        _check_keys(
            table, {"id", "categories", "action", "reason", "roles", "routes", "kinds"}, where
        )
        for key in ("id", "categories", "action", "reason"):
            if key not in table:
                raise ConfigError(f"{where} needs '{key}'")
        rule_id = str(table["id"])
        if rule_id in seen:
            raise ConfigError(f"{where}: rule id {rule_id!r} is used twice")
        seen.add(rule_id)
        where = f"{source}: rule {rule_id!r}"
        try:
            rules.append(
                Rule(
                    id=rule_id,
                    categories=_enum_set(table["categories"], Category, f"{where} categories"),
                    action=_action(table["action"], where),
                    reason=str(table["reason"]),
                    roles=_enum_set(table.get("roles", []), ParticipantRole, f"{where} roles"),
                    routes=_enum_set(table.get("routes", []), Route, f"{where} routes"),
                    kinds=_enum_set(table.get("kinds", []), Kind, f"{where} kinds"),
                )
            )
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    try:
        config = DetectorConfig(
            allowed_domains=domains,
            phone_regions=regions,
            lexicon=tuple(lexicon),
            do_not_contact=names,
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: [detectors]: {exc}") from None
    return ContentPolicy(
        routing=RoutingRules(learner_to_learner_direct=l2l),
        version=_version_of(data),
        rules=tuple(rules),
        detector_config=config,
    )


def load_policy(path: Path) -> ContentPolicy:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc}") from exc
    return parse_policy(data, str(path))


def default_policy() -> ContentPolicy:
    return parse_policy(DEFAULT_POLICY_TOML.encode(), "built-in default policy")
