"""The policy engine: the facility's policy file, and the decision it makes per message.

The relay's choke point calls :meth:`PolicyEngine.decide` for every message. The
engine applies the routing rules (who may send direct messages to whom), then, for
messages that carry text, normalises the text (``policy.normalize``), runs the
detectors (``policy.detectors``) and the content rules (``policy.rules``), and turns the
verdict into a decision value (``policy.decisions``). The policy also carries the message
rate limits (``policy.rates``) and how long a held message waits for staff.
Pure: no I/O except :func:`load_policy`, which reads the files once.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from types import MappingProxyType
from typing import Any, Protocol

from policy.decisions import (
    Action,
    Alert,
    Allow,
    Block,
    Decision,
    Hit,
    Hold,
    Kind,
    Redact,
    Route,
    Subject,
)
from policy.detectors import (
    DEFAULT_ALLOWED_DOMAINS,
    Category,
    DetectorConfig,
    Detectors,
    Finding,
    LexiconTerm,
)
from policy.lexicon import CATEGORY_NAME, parse_lexicon
from policy.normalize import normalise
from policy.rates import DEFAULT_RATE_LIMITS, RateLimit
from policy.rules import Rule, judge, redact
from relay.errors import ConfigError
from relay.identity import ParticipantRole

__all__ = [
    "ALLOW_CONTENT",
    "DEFAULT_LEXICON_TXT",
    "DEFAULT_POLICY_TOML",
    "DEFAULT_REVIEW_EXPIRY_S",
    "MAX_REVIEW_EXPIRY_S",
    "ContentPolicy",
    "FileReader",
    "PolicyEngine",
    "RoutingRules",
    "default_policy",
    "default_policy_files",
    "load_policy",
    "parse_policy",
    "read_from",
]


class PolicyEngine(Protocol):
    """What the relay needs of a policy."""

    @property
    def version(self) -> str:
        """A short hash of the policy in force; every decision records it."""
        ...

    @property
    def rates(self) -> Mapping[Kind, RateLimit]:
        """Message rate limits per kind; a kind not in the mapping is not limited."""
        ...

    @property
    def review_expiry_s(self) -> float:
        """How long a held message waits for staff before it expires as rejected."""
        ...

    def decide(self, subject: Subject) -> Decision: ...

    def may_share_screen(self, role: ParticipantRole, asked: bool) -> Decision:
        """May someone of ``role`` publish their screen to the class (``asked``: the
        instructor asked this learner to)? Allow or Block, with the deciding rule."""
        ...


@dataclass(frozen=True, slots=True)
class RoutingRules:
    learner_to_learner_direct: bool = False
    learner_screen_share: bool = True
    """Learners may show their screen to the instructor when the instructor asks."""


ALLOW_CONTENT = Allow(rule="content.allow", reason="no content rule applies")

DEFAULT_REVIEW_EXPIRY_S = 30 * 60.0
MAX_REVIEW_EXPIRY_S = 7 * 24 * 3600.0

_LABEL_SEP = "/"
"""Joins a lexicon category and a term's own action in an internal finding label
(``watch/block``); category names cannot hold it."""


def _lexicon_category(label: str) -> str:
    return label.partition(_LABEL_SEP)[0]


@dataclass(frozen=True, slots=True)
class ContentPolicy:
    """Routing rules, detectors, content rules, rate limits and review settings of one
    policy file (and its lexicon file)."""

    routing: RoutingRules
    version: str
    rules: tuple[Rule, ...] = ()
    detector_config: DetectorConfig = field(default_factory=DetectorConfig)
    rates: Mapping[Kind, RateLimit] = field(default_factory=lambda: DEFAULT_RATE_LIMITS)
    review_expiry_s: float = DEFAULT_REVIEW_EXPIRY_S
    detectors: Detectors = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.review_expiry_s <= MAX_REVIEW_EXPIRY_S:
            raise ValueError("review_expiry_s must be above 0 and at most 7 days")
        object.__setattr__(self, "rates", MappingProxyType(dict(self.rates)))
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
        return self._content_decision(subject, findings)

    def may_share_screen(self, role: ParticipantRole, asked: bool) -> Decision:
        if role is ParticipantRole.INSTRUCTOR:
            return Allow(rule="routing.screen_share.instructor", reason="instructors may share")
        if role is ParticipantRole.LEARNER:
            if not self.routing.learner_screen_share:
                return Block(
                    rule="routing.learner_screen_share",
                    reason="this facility does not let learners share their screen",
                    route_refused=True,
                )
            if not asked:
                return Block(
                    rule="routing.screen_share.ask_first",
                    reason="a learner shares their screen only when the instructor asks",
                    route_refused=True,
                )
            return Allow(rule="routing.learner_screen_share", reason="the instructor asked")
        return Block(
            rule="routing.staff_observe_only",
            reason="staff observe classes and do not share a screen",
            route_refused=True,
        )

    def _content_decision(self, subject: Subject, findings: Iterable[Finding]) -> Decision:
        verdict = judge(subject, findings, self.rules)
        rule = verdict.deciding
        if rule is None:
            return ALLOW_CONTENT
        hits = tuple(
            Hit(
                rule=m.rule.id,
                category=m.finding.category.value,
                action=m.rule.action,
                start=m.finding.start,
                end=m.finding.end,
                label=(
                    _lexicon_category(m.finding.label)
                    if m.finding.category is Category.LEXICON
                    else ""
                ),
            )
            for m in verdict.matches
        )
        categories = ", ".join(c.value.replace("_", "-") for c in verdict.categories)
        reason = f"{rule.reason} ({categories})"
        action = verdict.action
        if action is Action.BLOCK:
            return Block(rule=rule.id, reason=reason, hits=hits)
        if action is Action.HOLD:
            return Hold(rule=rule.id, reason=reason, hits=hits)
        if action is Action.REDACT:
            text = redact(subject.text, verdict.matches)
            return Redact(rule=rule.id, reason=reason, text=text, hits=hits)
        return Alert(rule=rule.id, reason=reason, hits=hits)


def _version_of(data: bytes, lexicon: bytes | None) -> str:
    """``sha256:`` and 16 hex digits: of the policy file's bytes, or, with a lexicon
    file, of the two files' SHA-256 digests one after the other."""
    if lexicon is None:
        digest = hashlib.sha256(data).hexdigest()
    else:
        both = hashlib.sha256(data).digest() + hashlib.sha256(lexicon).digest()
        digest = hashlib.sha256(both).hexdigest()
    return "sha256:" + digest[:16]


# --- the built-in default policy ---------------------------------------------------------

DEFAULT_POLICY_TOML = """\
# Content policy of this facility. See docs/policy.md.
[routing]
# Learners may not write direct messages to each other unless this is true.
learner_to_learner_direct = false
# Learners may show their screen to the instructor when the instructor asks (false: never).
learner_screen_share = true

[detectors]
# Documentation sites a coding class may link to (their subdomains too). example.com,
# example.org, example.net, *.example, *.test, *.invalid and localhost are always allowed.
allowed_domains = ["docs.python.org", "developer.mozilla.org", "git-scm.com", "www.sqlite.org"]
# Phone numbers are recognised as written in these regions (ISO 3166 codes).
phone_regions = ["US", "GB"]
# Full names nobody in the classroom may contact or name, e.g. ["Jane Roe"].
do_not_contact = []
# The banned-term lexicon, next to this file: one "CATEGORY ACTION TERM" a line.
lexicon_file = "lexicon.txt"

# Lexicon categories: each one used in the lexicon file is declared here, with what the
# sender is told and the category's usual action. Terms may also be listed here (terms =
# [...]); they then take the category's action.
# Actions, least to most severe: allow, alert (deliver and tell security staff), redact
# (deliver with the term replaced), hold (wait for staff to approve), block.
[lexicon.contraband]
action = "block"
reason = "talk of contraband is not allowed"

[lexicon.threat]
action = "block"
reason = "threats are not allowed"

[lexicon.watch]
action = "alert"
reason = "this topic is passed on to security staff"

# Content rules. For each finding the first rule (in this order, lexicon categories
# first) whose selectors match decides its action; the message gets the most severe
# action of all its findings. Selectors, each optional (absent: any): roles (instructor,
# learner, staff), routes (class, direct), kinds (chat, hand, control, editor,
# file_name, screen_caption).
[[rule]]
id = "content.hidden"
categories = ["hidden"]
action = "block"
reason = "invisible or direction-changing characters are not allowed"

# An instructor's link to a site outside the allowed list waits for security staff, who
# may approve it (a documentation page the list lacks); anyone else's is refused.
[[rule]]
id = "contact.link.instructor"
categories = ["url"]
roles = ["instructor"]
action = "hold"
reason = "links to sites outside the allowed list wait for security staff to approve them"

[[rule]]
id = "contact.link"
categories = ["url"]
action = "block"
reason = "links to sites outside the allowed list are not allowed"

# Contact details in an instructor's message are cut out and the rest delivered;
# in anyone else's message they refuse it.
[[rule]]
id = "contact.details.instructor"
categories = ["email", "phone", "address", "social"]
roles = ["instructor"]
action = "redact"
reason = "contact details and other apps are removed from messages"

[[rule]]
id = "contact.details"
categories = ["email", "phone", "address", "social"]
action = "block"
reason = "contact details and other apps are not allowed"

[[rule]]
id = "content.encoded"
categories = ["blob"]
action = "hold"
reason = "encoded or scrambled data waits for security staff to approve it"

[[rule]]
id = "contact.do_not_contact"
categories = ["do_not_contact"]
action = "block"
reason = "this person may not be contacted or named"

# Message rates, per message kind. Each person has a bucket of person_burst messages
# that refills at person_rate a second; the whole class shares one of session_burst
# that refills at session_rate a second. A message that would fit within throttle_s
# seconds is delayed that long; later than that, it is refused with the wait.
[rate.chat]
person_rate = 1.0
person_burst = 8
session_rate = 20.0
session_burst = 100
throttle_s = 2.0

[rate.hand]
person_rate = 0.5
person_burst = 4
session_rate = 10.0
session_burst = 40
throttle_s = 0.0

[review]
# How long a held message waits for security staff before it expires as rejected
# (minutes; at most 7 days).
expire_after_minutes = 30
"""

DEFAULT_LEXICON_TXT = """\
# The facility's banned-term lexicon. See docs/policy.md.
# One term a line: CATEGORY ACTION TERM. The term is the rest of the line and is matched
# as whole words, also disguised (spaced out, leetspeak, look-alike letters); a one-word
# term also matches its -s, -ed and -ing forms. Each CATEGORY must be declared by a
# [lexicon.CATEGORY] table in policy.toml, which says what the sender is told.
# ACTION is allow, alert, redact, hold or block.

# Contraband: weapons, phones, drops, smuggling, home brew.
contraband block shank
contraband block shiv
contraband block burner phone
contraband block burner cell
contraband block drop spot
contraband block smuggle
contraband block smuggled
contraband block smuggling
contraband block contraband
contraband block pruno

# Threats. ("kill" alone is not a term: "kill -9" and "kill the server" are lessons.)
threat block kill you
threat block kill him
threat block kill her
threat block hurt you
threat block hurt him
threat block hurt her
threat block stab you
threat block stab him
threat block stab her
threat block you're dead
threat block watch your back
threat block snitches get stitches

# Delivered, and security staff are told: unrest, and a learner who may be at risk.
watch alert lockdown
watch alert riot
watch alert hostage
watch alert suicide
watch alert kill myself
watch alert hurt myself
watch alert self harm
"""


def default_policy_files() -> dict[str, str]:
    """The built-in default policy as files: name in the facility home -> text."""
    return {"policy.toml": DEFAULT_POLICY_TOML, "lexicon.txt": DEFAULT_LEXICON_TXT}


# --- parsing -----------------------------------------------------------------------------

FileReader = Callable[[str], bytes]
"""Reads a file the policy file names (as written there); raises OSError if it cannot."""


def read_from(files: Mapping[str, str | bytes]) -> FileReader:
    """A :data:`FileReader` over files held in memory (name -> text or bytes)."""

    def read(name: str) -> bytes:
        try:
            content = files[name]
        except KeyError:
            raise FileNotFoundError(f"no file {name!r}") from None
        return content.encode("utf-8") if isinstance(content, str) else content

    return read


_RATE_KEYS = ("person_rate", "person_burst", "session_rate", "session_burst", "throttle_s")
_TABLES = "[routing], [detectors], [lexicon.CATEGORY], [[rule]], [rate.KIND], [review]"


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
        return Action(value)
    except ValueError:
        raise ConfigError(
            f"{where}: action must be one of {', '.join(a.value for a in Action)}, not {value!r}"
        ) from None


def _text(table: Mapping[str, Any], key: str, where: str) -> str:
    value = table[key]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} {key} must be a non-empty string")
    return value


def _check_keys(table: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{where} has unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
        )


def _table(doc: Mapping[str, Any], key: str, source: str, what: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: '{key}' must be {what}")
    return value


def _lexicon_file_name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} lexicon_file must be a file name")
    posix, windows = PurePosixPath(value), PureWindowsPath(value)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in windows.parts:
        raise ConfigError(
            f"{where} lexicon_file must be a path relative to the policy file's folder, "
            f"without '..', not {value!r}"
        )
    return value


def _rates(doc: Mapping[str, Any], source: str) -> dict[Kind, RateLimit]:
    rates = dict(DEFAULT_RATE_LIMITS)
    tables = _table(doc, "rate", source, "one table per message kind, e.g. [rate.chat]")
    kinds = ", ".join(k.value for k in Kind)
    for name, table in tables.items():
        where = f"{source}: [rate.{name}]"
        try:
            kind = Kind(name)
        except ValueError:
            raise ConfigError(f"{where}: unknown message kind {name!r}; known: {kinds}") from None
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        _check_keys(table, _RATE_KEYS, where)
        base = DEFAULT_RATE_LIMITS.get(kind)
        values: dict[str, Any] = {}
        for key in _RATE_KEYS:
            if key in table:
                values[key] = table[key]
            elif base is not None:
                values[key] = getattr(base, key)
            elif key == "throttle_s":
                values[key] = 0.0
            else:
                raise ConfigError(
                    f"{where} needs '{key}': {kind.value} messages have no default limit"
                )
        try:
            rates[kind] = RateLimit(**values)
        except ValueError as exc:
            raise ConfigError(f"{where} {exc}") from None
    return rates


def _review_expiry_s(doc: Mapping[str, Any], source: str) -> float:
    review = _table(doc, "review", source, "a table")
    where = f"{source}: [review]"
    _check_keys(review, {"expire_after_minutes"}, where)
    minutes = review.get("expire_after_minutes", DEFAULT_REVIEW_EXPIRY_S / 60)
    max_minutes = MAX_REVIEW_EXPIRY_S / 60
    if (
        not isinstance(minutes, int | float)
        or isinstance(minutes, bool)
        or not math.isfinite(minutes)
        or not 0 < minutes <= max_minutes
    ):
        raise ConfigError(
            f"{where} expire_after_minutes must be a number of minutes above 0 and at most "
            f"{max_minutes:g} (7 days), not {minutes!r}"
        )
    return float(minutes) * 60


class _Lexicon:
    """Lexicon terms and their rules, gathered from the tables and the lexicon file."""

    def __init__(self) -> None:
        self.terms: list[LexiconTerm] = []
        self.actions: dict[str, Action] = {}
        """Category -> the action of its table."""
        self.reasons: dict[str, str] = {}
        self.overrides: dict[str, set[Action]] = {}
        """Category -> actions terms of the file give instead of the table's."""
        self.seen: dict[str, str] = {}
        """Term (folded) -> where it was listed."""

    def add(self, term: str, category: str, action: Action, where: str) -> None:
        key = " ".join(term.casefold().split())
        if key in self.seen:
            raise ConfigError(f"{where}: the term is already listed ({self.seen[key]})")
        self.seen[key] = where
        label = category
        if action is not self.actions[category]:
            label = f"{category}{_LABEL_SEP}{action.value}"
            self.overrides.setdefault(category, set()).add(action)
        try:
            self.terms.append(LexiconTerm(term, label))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def rules(self) -> list[Rule]:
        out: list[Rule] = []
        lexicon = frozenset({Category.LEXICON})
        for category, action in self.actions.items():
            rule_id, reason = f"lexicon.{category}", self.reasons[category]
            out.append(Rule(rule_id, lexicon, action, reason, labels=frozenset({category})))
            for other in sorted(self.overrides.get(category, ()), key=lambda a: a.severity):
                label = f"{category}{_LABEL_SEP}{other.value}"
                out.append(Rule(rule_id, lexicon, other, reason, labels=frozenset({label})))
        return out


def parse_policy(data: bytes, source: str, read: FileReader | None = None) -> ContentPolicy:
    """Parse policy file bytes. Raises :class:`ConfigError` naming the file and key.

    ``read`` reads the lexicon file the policy names (``[detectors] lexicon_file``), by
    its name as written; :func:`load_policy` passes one that reads next to the policy
    file, :func:`read_from` makes one over files in memory.
    """
    try:
        doc: dict[str, Any] = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc
    unknown = sorted(set(doc) - {"routing", "detectors", "lexicon", "rule", "rate", "review"})
    if unknown:
        raise ConfigError(f"{source}: unknown table(s) {', '.join(unknown)}; known: {_TABLES}")
    routing = _table(doc, "routing", source, "a table")
    _check_keys(
        routing, {"learner_to_learner_direct", "learner_screen_share"}, f"{source}: [routing]"
    )
    l2l = routing.get("learner_to_learner_direct", False)
    if not isinstance(l2l, bool):
        raise ConfigError(f"{source}: [routing] learner_to_learner_direct must be true or false")
    screen = routing.get("learner_screen_share", True)
    if not isinstance(screen, bool):
        raise ConfigError(f"{source}: [routing] learner_screen_share must be true or false")

    det = _table(doc, "detectors", source, "a table")
    where = f"{source}: [detectors]"
    _check_keys(det, {"allowed_domains", "phone_regions", "do_not_contact", "lexicon_file"}, where)
    domains = frozenset(
        d.lower()
        for d in _strings(
            det.get("allowed_domains", sorted(DEFAULT_ALLOWED_DOMAINS)), f"{where} allowed_domains"
        )
    )
    regions = _strings(det.get("phone_regions", ["US", "GB"]), f"{where} phone_regions")
    names = _strings(det.get("do_not_contact", []), f"{where} do_not_contact")
    lexicon_file = _lexicon_file_name(det["lexicon_file"], where) if "lexicon_file" in det else None

    lexicon = _Lexicon()
    lex = _table(doc, "lexicon", source, "one table per category, e.g. [lexicon.threat]")
    for category, table in lex.items():
        where = f"{source}: [lexicon.{category}]"
        if not CATEGORY_NAME.fullmatch(category):
            raise ConfigError(
                f"{where}: a category name is a lower-case letter, then up to 39 lower-case "
                "letters, digits, '_' or '-'"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        _check_keys(table, {"action", "reason", "terms"}, where)
        for key in ("action", "reason"):
            if key not in table:
                raise ConfigError(f"{where} needs '{key}'")
        lexicon.actions[category] = _action(table["action"], where)
        lexicon.reasons[category] = _text(table, "reason", where)
        for term in _strings(table.get("terms", []), f"{where} terms"):
            lexicon.add(term, category, lexicon.actions[category], f"{where} terms")

    lexicon_bytes: bytes | None = None
    if lexicon_file is not None:
        lex_source = str(PurePath(source).parent / lexicon_file)
        if read is None:
            raise ConfigError(
                f"{source}: [detectors] lexicon_file {lexicon_file!r}: no way to read it here"
            )
        try:
            lexicon_bytes = read(lexicon_file)
        except OSError as exc:
            raise ConfigError(
                f"{source}: [detectors] lexicon_file: cannot read {lex_source}: "
                f"{exc.strerror or exc}"
            ) from None
        for entry in parse_lexicon(lexicon_bytes, lex_source, lexicon.actions):
            lexicon.add(entry.term, entry.category, entry.action, f"{lex_source}:{entry.line}")
    rules = lexicon.rules()

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
        rule_id = _text(table, "id", where)
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
                    reason=_text(table, "reason", where),
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
            lexicon=tuple(lexicon.terms),
            do_not_contact=names,
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: [detectors]: {exc}") from None
    return ContentPolicy(
        routing=RoutingRules(learner_to_learner_direct=l2l, learner_screen_share=screen),
        version=_version_of(data, lexicon_bytes),
        rules=tuple(rules),
        detector_config=config,
        rates=_rates(doc, source),
        review_expiry_s=_review_expiry_s(doc, source),
    )


def load_policy(path: Path) -> ContentPolicy:
    """Read and parse the policy file at ``path`` and the lexicon file it names."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc}") from exc

    def read(name: str) -> bytes:
        return (path.parent / name).read_bytes()

    return parse_policy(data, str(path), read)


def default_policy() -> ContentPolicy:
    """The built-in default policy, parsed from :func:`default_policy_files`."""
    files = default_policy_files()
    return parse_policy(
        files["policy.toml"].encode("utf-8"), "built-in default policy", read_from(files)
    )
