"""Policy decisions are values, not exceptions.

The relay's choke point asks the policy engine about every message and acts on the
:data:`Decision` it gets back: :class:`Allow`, :class:`Alert` (deliver, and notify
staff), :class:`Redact` (deliver the text with the matched spans replaced),
:class:`Hold` (keep it for staff review) or :class:`Block`. Each decision names the rule
that made it and a reason a person can read; the reason never quotes the matched
content. ``hits`` say which rules matched which spans of the original text, so that the
administrator's tools can show them; the choke point never sends them to anyone but
the sender's own tools.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from relay.identity import ParticipantRole


class Kind(enum.Enum):
    """What a message is, for rule selection (and rate limits)."""

    CHAT = "chat"
    HAND = "hand"
    CONTROL = "control"
    EDITOR = "editor"
    FILE_NAME = "file_name"
    SCREEN_CAPTION = "screen_caption"


class Route(enum.Enum):
    CLASS = "class"
    DIRECT = "direct"


@dataclass(frozen=True, slots=True)
class Subject:
    """What the policy engine is asked about: who sends what kind of content where."""

    kind: Kind
    sender_role: ParticipantRole
    route: Route
    text: str = ""
    recipient_role: ParticipantRole | None = None

    def __post_init__(self) -> None:
        if (self.route is Route.DIRECT) != (self.recipient_role is not None):
            raise ValueError("a direct subject names the recipient's role; a class one does not")


class Action(enum.Enum):
    """What a rule does with a message, in increasing severity."""

    ALLOW = "allow"
    ALERT = "alert"
    REDACT = "redact"
    HOLD = "hold"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {a: i for i, a in enumerate(Action)}


@dataclass(frozen=True, slots=True)
class Hit:
    """One finding a rule acted on: where, what category, which rule, what action."""

    rule: str
    category: str
    """The detector category (``phone``, ``url``, ``lexicon`` ...)."""
    action: Action
    start: int
    end: int
    """Span in the original text (``text[start:end]``)."""
    label: str = ""
    """For lexicon terms, the lexicon category (``threat``); else empty."""


class _Explained:
    """What every decision can say about itself (for tools and audit records)."""

    __slots__ = ()
    hits: tuple[Hit, ...]

    @property
    def rules(self) -> tuple[str, ...]:
        """Ids of the rules that matched, in text order, each once."""
        return tuple(dict.fromkeys(h.rule for h in self.hits))

    @property
    def categories(self) -> tuple[str, ...]:
        """Categories found, in text order, each once (lexicon ones as ``lexicon:LABEL``)."""
        return tuple(
            dict.fromkeys(f"{h.category}:{h.label}" if h.label else h.category for h in self.hits)
        )

    @property
    def spans(self) -> tuple[tuple[int, int], ...]:
        return tuple((h.start, h.end) for h in self.hits)


@dataclass(frozen=True, slots=True)
class Allow(_Explained):
    rule: str = "content.allow"
    reason: str = "no content rule applies"
    hits: tuple[Hit, ...] = ()

    @property
    def action(self) -> Action:
        return Action.ALLOW


@dataclass(frozen=True, slots=True)
class Alert(_Explained):
    """Deliver as sent, and notify security staff."""

    rule: str
    reason: str
    hits: tuple[Hit, ...] = ()

    @property
    def action(self) -> Action:
        return Action.ALERT


@dataclass(frozen=True, slots=True)
class Redact(_Explained):
    """Deliver ``text``: the original with each redacted span replaced."""

    rule: str
    reason: str
    text: str
    hits: tuple[Hit, ...] = ()

    @property
    def action(self) -> Action:
        return Action.REDACT


@dataclass(frozen=True, slots=True)
class Hold(_Explained):
    """Keep the message for security staff to approve or reject."""

    rule: str
    reason: str
    hits: tuple[Hit, ...] = ()

    @property
    def action(self) -> Action:
        return Action.HOLD


@dataclass(frozen=True, slots=True)
class Block(_Explained):
    rule: str
    reason: str
    hits: tuple[Hit, ...] = ()
    route_refused: bool = False
    """True when the refusal is about who may talk to whom, not about the content."""

    @property
    def action(self) -> Action:
        return Action.BLOCK


Decision = Allow | Alert | Redact | Hold | Block
