"""Policy decisions are values, not exceptions.

The relay's choke point asks the policy engine about every message and acts on the
:data:`Decision` it gets back. Each decision names the rule that made it and a reason a
person can read; the reason never quotes the refused content.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from relay.identity import ParticipantRole


class Kind(enum.Enum):
    """What a message is, for rule selection."""

    CHAT = "chat"
    HAND = "hand"
    CONTROL = "control"


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
    ALLOW = "allow"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class Allow:
    rule: str = "default.allow"
    reason: str = "allowed"

    @property
    def action(self) -> Action:
        return Action.ALLOW


@dataclass(frozen=True, slots=True)
class Block:
    rule: str
    reason: str
    route_refused: bool = False
    """True when the refusal is about who may talk to whom, not about the content."""

    @property
    def action(self) -> Action:
        return Action.BLOCK


Decision = Allow | Block
