"""The administrator's policy tools behind ``classroom-relay policy test|replay``.

* ``policy test`` asks a policy about sample lines (``--text`` or standard input, one
  decision per line) and shows each decision: action, rules, categories and the line
  with the matched spans marked.
* ``policy replay`` re-decides the messages recorded in the audit log under a new policy
  file and shows the ones it would decide differently.

The functions here return values and strings; ``relay.cli`` does the printing. The audit
log is read in one place only, :class:`AuditLogReader`, through
:class:`relay.audit_read.AuditReader`; the contents it replays are decrypted with the
staff audit key.
"""

from __future__ import annotations

import datetime as dt
import json
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policy.decisions import Action, Decision, Kind, Redact, Route, Subject
from policy.engine import ContentPolicy, default_policy, load_policy
from relay.audit_access import AuditAccess
from relay.auditlog import decrypt_content
from relay.errors import AuditLogError, CredentialError
from relay.home import FacilityHome, utc_text
from relay.identity import ParticipantRole, parse_pid

# ---------------------------------------------------------------------------------------
# which policy
# ---------------------------------------------------------------------------------------

BUILT_IN = "the built-in default policy"


@dataclass(frozen=True, slots=True)
class ChosenPolicy:
    """A policy and where it came from (a file, or the built-in default)."""

    policy: ContentPolicy
    source: str
    """The policy file, or :data:`BUILT_IN`."""
    why: str = ""
    """Why this one was taken, when that is not obvious."""

    def describe(self) -> str:
        """``/srv/fac/policy.toml (sha256:…)``, for a note on standard error."""
        text = f"{self.source} ({self.policy.version})"
        return f"{text}: {self.why}" if self.why else text


def choose_policy(
    policy_file: Path | None, home: FacilityHome, *, home_given: bool
) -> ChosenPolicy:
    """The policy ``policy test`` uses.

    ``--policy FILE`` if given; else the facility home's ``policy.toml``; else, when no
    home was named (``--home`` or the environment) and there is none at the default
    place, the built-in default policy. Raises :class:`relay.errors.ConfigError` for a
    file that cannot be read or parsed (and for a named home that does not exist).
    """
    if policy_file is not None:
        return ChosenPolicy(load_policy(policy_file), str(policy_file))
    if home.exists() or home_given:
        home.require()
        return ChosenPolicy(load_policy(home.policy_toml), str(home.policy_toml))
    return ChosenPolicy(default_policy(), BUILT_IN, f"there is no facility home at {home.root}")


# ---------------------------------------------------------------------------------------
# policy test
# ---------------------------------------------------------------------------------------


def default_recipient(sender: ParticipantRole) -> ParticipantRole:
    """The recipient of a direct test message: the instructor, or a learner when the
    instructor sends."""
    if sender is ParticipantRole.INSTRUCTOR:
        return ParticipantRole.LEARNER
    return ParticipantRole.INSTRUCTOR


def sample_subject(text: str, *, kind: Kind, role: ParticipantRole, route: Route) -> Subject:
    """What ``policy test`` asks the engine about one line."""
    recipient = default_recipient(role) if route is Route.DIRECT else None
    return Subject(kind=kind, sender_role=role, route=route, text=text, recipient_role=recipient)


def shown_rules(decision: Decision) -> tuple[str, ...]:
    """The rules behind a decision: those that matched, else the one that decided."""
    return decision.rules or (decision.rule,)


def merged_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans sorted, with overlapping and touching ones joined (for marking)."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


MARK_OPEN = "⟦"
MARK_CLOSE = "⟧"
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_NAMED_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def visible_char(ch: str) -> str:
    """One character as a terminal can show it: controls, invisible and direction-changing
    characters as escapes (``\\n``, ``\\u200b``), so they neither hide nor reorder text."""
    if ch in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[ch]
    if unicodedata.category(ch) in _INVISIBLE:
        code = ord(ch)
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return ch


def mark(text: str, spans: Iterable[tuple[int, int]] = ()) -> str:
    """``text`` with every span between ⟦ and ⟧, invisible characters escaped."""
    merged = merged_spans(spans)
    opens = {start for start, _ in merged}
    closes = {end for _, end in merged}
    parts: list[str] = []
    for i, ch in enumerate(text):
        if i in closes:
            parts.append(MARK_CLOSE)
        if i in opens:
            parts.append(MARK_OPEN)
        parts.append(visible_char(ch))
    if len(text) in closes:
        parts.append(MARK_CLOSE)
    return "".join(parts)


ACTION_WIDTH = max(len(a.value) for a in Action)
RULES_WIDTH = 22
CATEGORIES_WIDTH = 12


def format_decision(text: str, decision: Decision) -> str:
    """One line: action, rules, categories, the text with its spans marked (and, for a
    redaction, what would be delivered)::

        block   contact.details         phone         "call me at ⟦415 555 0134⟧"
    """
    rules = ",".join(shown_rules(decision))
    categories = ",".join(decision.categories) or "-"
    line = (
        f"{decision.action.value:<{ACTION_WIDTH}}  {rules:<{RULES_WIDTH}}  "
        f'{categories:<{CATEGORIES_WIDTH}}  "{mark(text, decision.spans)}"'
    )
    if isinstance(decision, Redact):
        line += f'  ->  "{mark(decision.text)}"'
    return line


def decision_json(decision: Decision, text: str | None = None) -> dict[str, Any]:
    """A decision as JSON values; spans are ``[start, end]`` code-point offsets of ``text``."""
    out: dict[str, Any] = {
        "action": decision.action.value,
        "rule": decision.rule,
        "rules": list(shown_rules(decision)),
        "categories": list(decision.categories),
        "spans": [list(span) for span in decision.spans],
        "reason": decision.reason,
    }
    out["hits"] = [
        {
            "rule": h.rule,
            "category": f"{h.category}:{h.label}" if h.label else h.category,
            "action": h.action.value,
            "start": h.start,
            "end": h.end,
        }
        for h in decision.hits
    ]
    if text is not None:
        out["text"] = text
    if isinstance(decision, Redact):
        out["redacted"] = decision.text
    return out


def _json_line(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def decide_lines(
    policy: ContentPolicy,
    lines: Iterable[str],
    *,
    kind: Kind = Kind.CHAT,
    role: ParticipantRole = ParticipantRole.LEARNER,
    route: Route = Route.CLASS,
    as_json: bool = False,
) -> Iterator[str]:
    """One output line per input line (its line ending removed), as they come."""
    for raw in lines:
        text = raw.removesuffix("\n").removesuffix("\r")
        decision = policy.decide(sample_subject(text, kind=kind, role=role, route=route))
        yield (
            _json_line(decision_json(decision, text))
            if as_json
            else format_decision(text, decision)
        )


# ---------------------------------------------------------------------------------------
# the recorded messages (the one reader of the audit log)
# ---------------------------------------------------------------------------------------

OLD_ACTIONS = {
    "message.delivered": Action.ALLOW,
    "message.alert": Action.ALERT,
    "message.alerted": Action.ALERT,
    "message.redacted": Action.REDACT,
    "message.held": Action.HOLD,
    "message.refused": Action.BLOCK,
}
"""What the policy decided, by the kind of the record (when ``decision`` is not itself
an action)."""


@dataclass(frozen=True, slots=True)
class RecordedMessage:
    """A message as the audit log recorded it, with what was decided then."""

    time: float
    """UNIX seconds, UTC."""
    session: str
    msg_id: str
    sender: str
    """Participant id, ``learner:l1001``."""
    sender_role: ParticipantRole
    route: Route
    recipient: str | None
    recipient_role: ParticipantRole | None
    kind: Kind
    content: str
    old_action: Action | None
    """None when the record does not say (an unknown record kind)."""
    old_rule: str | None
    old_policy_version: str | None
    record_kind: str

    def subject(self) -> Subject:
        return Subject(
            kind=self.kind,
            sender_role=self.sender_role,
            route=self.route,
            text=self.content,
            recipient_role=self.recipient_role,
        )


class AuditLogReader:
    """Reads the recorded messages of a facility's audit log (``docs/audit.md``).

    The log's clear fields say which records are messages (those with a message id and
    encrypted contents), of which class and when; only those selected are decrypted,
    with the staff audit key of ``access``. Every such record is a message, whatever its
    kind, so records of kinds added later are read too; review outcomes (``review.*``)
    are not messages of their own and are left out. Messages whose sender, time, channel
    or recipient cannot be understood, or whose contents do not decrypt, are counted in
    :attr:`unreadable` and skipped.

    This class is the only code of the policy tools that knows the log's format.
    """

    def __init__(self, home: FacilityHome, access: AuditAccess) -> None:
        if access.staff_key is None:
            raise CredentialError(
                "replaying recorded messages reads their contents: it needs the staff audit key"
            )
        self.path = home.audit_dir
        self._reader = access.reader(home)
        self.records = 0
        self.unreadable = 0

    def exists(self) -> bool:
        return self._reader.exists()

    def messages(
        self, *, session: str | None = None, since: float | None = None
    ) -> Iterator[RecordedMessage]:
        """The recorded messages in log order, of one class and/or since a time.

        Streams the log; raises :class:`relay.errors.AuditLogError` when a segment
        cannot be read or is damaged."""
        reader = self._reader
        for stored in reader.records(decrypt=False):
            self.records += 1
            fields = stored.fields
            # Cheap checks on the clear fields first: most records are not messages.
            if "enc" not in fields or "msg_id" not in fields:
                continue
            if session is not None and fields.get("session") != session:
                continue
            if since is not None and stored.time < since:
                continue
            if stored.kind.startswith("review."):
                continue
            try:
                contents = decrypt_content(stored.seq, fields["enc"], reader.data_key)
            except AuditLogError:
                self.unreadable += 1
                continue
            message = recorded_message({**stored.to_dict(), **contents})
            if message is None:
                self.unreadable += 1
                continue
            yield message


def recorded_message(record: dict[str, Any]) -> RecordedMessage | None:
    """A JSON record as a :class:`RecordedMessage`; None when it is not a readable one."""
    content, msg_id, actor = record.get("content"), record.get("msg_id"), record.get("actor")
    when, session = record.get("time"), record.get("session")
    if not (isinstance(content, str) and isinstance(msg_id, str) and isinstance(actor, str)):
        return None
    record_kind = str(record.get("kind", ""))
    if not isinstance(when, int | float) or isinstance(when, bool) or not isinstance(session, str):
        return None
    sender = parse_pid(actor)
    if sender is None:
        return None
    channel, recipient = record.get("channel", "class"), record.get("recipient")
    recipient_role: ParticipantRole | None = None
    if channel == Route.DIRECT.value:
        target = parse_pid(recipient) if isinstance(recipient, str) else None
        if target is None:
            return None
        recipient_role = target[0]
    elif channel != Route.CLASS.value:
        return None
    decision, rule, version = (
        record.get("decision"),
        record.get("rule"),
        record.get("policy_version"),
    )
    old_action = _action_of(decision) or OLD_ACTIONS.get(record_kind)
    return RecordedMessage(
        time=float(when),
        session=session,
        msg_id=msg_id,
        sender=actor,
        sender_role=sender[0],
        route=Route(channel),
        recipient=recipient if isinstance(recipient, str) else None,
        recipient_role=recipient_role,
        kind=Kind.CHAT,  # every recorded message with content is a chat message today
        content=content,
        old_action=old_action,
        old_rule=rule if isinstance(rule, str) else None,
        old_policy_version=version if isinstance(version, str) else None,
        record_kind=record_kind,
    )


def _action_of(value: object) -> Action | None:
    try:
        return Action(value)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------
# policy replay
# ---------------------------------------------------------------------------------------


def decided_differently(message: RecordedMessage, new: Decision) -> bool:
    """Another action, or another rule behind a refusal, redaction, hold or alert.

    Two allows count as the same decision even if the name of the allowing rule
    differs. When the record does not say what was decided, the rules are compared.
    """
    if message.old_action is None:
        return message.old_rule != new.rule
    if message.old_action is not new.action:
        return True
    return new.action is not Action.ALLOW and message.old_rule != new.rule


@dataclass(frozen=True, slots=True)
class Difference:
    message: RecordedMessage
    new: Decision


@dataclass(slots=True)
class ReplayCount:
    messages: int = 0
    different: int = 0


def replay(
    policy: ContentPolicy, messages: Iterable[RecordedMessage], count: ReplayCount
) -> Iterator[Difference]:
    """Re-decide each message under ``policy``; yield those decided differently."""
    for message in messages:
        count.messages += 1
        new = policy.decide(message.subject())
        if decided_differently(message, new):
            count.different += 1
            yield Difference(message, new)


def local_time(seconds: float) -> str:
    """UNIX seconds as this host's local time with its offset, to the second."""
    when = dt.datetime.fromtimestamp(seconds, dt.UTC).astimezone()
    return when.isoformat(sep=" ", timespec="seconds")


def _where(m: RecordedMessage) -> str:
    return f"{m.sender} -> {m.recipient}" if m.route is Route.DIRECT else f"{m.sender} -> class"


def format_difference(diff: Difference) -> str:
    """A few lines per message: when, class, message id, who to whom; what was decided
    then and what would be now; the content with the new decision's spans marked."""
    m, new = diff.message, diff.new
    old_action = m.old_action.value if m.old_action is not None else "?"
    old_version = f"  (policy {m.old_policy_version})" if m.old_policy_version else ""
    lines = [
        f"{local_time(m.time)}  class {m.session}  message {m.msg_id}  {_where(m)}",
        f"    was  {old_action:<{ACTION_WIDTH}}  {m.old_rule or '-'}{old_version}",
        f"    now  {new.action.value:<{ACTION_WIDTH}}  {','.join(shown_rules(new))}"
        + (f"  [{','.join(new.categories)}]" if new.categories else ""),
        f'    "{mark(m.content, new.spans)}"',
    ]
    if isinstance(new, Redact):
        lines.append(f'    ->  "{mark(new.text)}"')
    return "\n".join(lines)


def difference_json(diff: Difference) -> dict[str, Any]:
    m = diff.message
    return {
        "time": utc_text(dt.datetime.fromtimestamp(m.time, dt.UTC)),
        "session": m.session,
        "msg_id": m.msg_id,
        "sender": m.sender,
        "channel": m.route.value,
        "recipient": m.recipient,
        "content": m.content,
        "old": {
            "action": m.old_action.value if m.old_action is not None else None,
            "rule": m.old_rule,
            "policy_version": m.old_policy_version,
            "record": m.record_kind,
        },
        "new": decision_json(diff.new),
    }


def difference_line(diff: Difference, *, as_json: bool) -> str:
    return _json_line(difference_json(diff)) if as_json else format_difference(diff)


def replay_summary(count: ReplayCount, chosen: ChosenPolicy, unreadable: int = 0) -> str:
    noun = "message" if count.messages == 1 else "messages"
    text = (
        f"{count.messages} {noun} re-evaluated with {chosen.describe()}, "
        f"{count.different} would be decided differently."
    )
    if unreadable:
        text += f" {unreadable} record(s) of the audit log could not be read and were skipped."
    return text


__all__ = [
    "BUILT_IN",
    "AuditLogReader",
    "ChosenPolicy",
    "Difference",
    "RecordedMessage",
    "ReplayCount",
    "choose_policy",
    "decide_lines",
    "decided_differently",
    "decision_json",
    "default_recipient",
    "difference_line",
    "format_decision",
    "mark",
    "recorded_message",
    "replay",
    "replay_summary",
    "sample_subject",
]
