"""The policy engine interface and the facility's routing policy.

The relay's choke point calls :meth:`PolicyEngine.decide` for every message. This
module provides :class:`RoutingPolicy`: it applies the routing rules of the facility
policy file (who may send direct messages to whom) and allows all content. The content
rules (contact details, links, banned terms, ...) extend it in the content-policy work.
Pure: no I/O except :func:`load_policy`, which reads the file once.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from policy.decisions import Allow, Block, Decision, Kind, Route, Subject
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


ALLOW_CONTENT = Allow(rule="content.allow_all", reason="no content rule applies")


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    rules: RoutingRules
    version: str

    def decide(self, subject: Subject) -> Decision:
        if (
            subject.route is Route.DIRECT
            and subject.sender_role is ParticipantRole.LEARNER
            and subject.recipient_role is ParticipantRole.LEARNER
            and not self.rules.learner_to_learner_direct
        ):
            return Block(
                rule="routing.learner_to_learner_direct",
                reason="learners may not send direct messages to other learners",
                route_refused=True,
            )
        if (
            subject.kind is Kind.CHAT
            and subject.route is Route.DIRECT
            and (subject.sender_role is ParticipantRole.STAFF)
        ):
            return Block(
                rule="routing.staff_observe_only",
                reason="staff observe classes and do not send direct messages",
                route_refused=True,
            )
        return ALLOW_CONTENT


def _version_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


DEFAULT_POLICY_TOML = """\
# Content policy of this facility. See docs/policy.md.
[routing]
# Learners may not write direct messages to each other unless this is true.
learner_to_learner_direct = false
"""


def parse_policy(data: bytes, source: str) -> RoutingPolicy:
    """Parse policy file bytes. Raises :class:`ConfigError` naming the file and key."""
    try:
        doc: dict[str, Any] = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc
    unknown = sorted(set(doc) - {"routing"})
    if unknown:
        raise ConfigError(
            f"{source}: unknown table(s) {', '.join(unknown)}; this version knows [routing]"
        )
    routing = doc.get("routing", {})
    if not isinstance(routing, dict):
        raise ConfigError(f"{source}: 'routing' must be a table")
    unknown = sorted(set(routing) - {"learner_to_learner_direct"})
    if unknown:
        raise ConfigError(f"{source}: [routing] has unknown key(s) {', '.join(unknown)}")
    l2l = routing.get("learner_to_learner_direct", False)
    if not isinstance(l2l, bool):
        raise ConfigError(f"{source}: [routing] learner_to_learner_direct must be true or false")
    return RoutingPolicy(RoutingRules(learner_to_learner_direct=l2l), _version_of(data))


def load_policy(path: Path) -> RoutingPolicy:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc}") from exc
    return parse_policy(data, str(path))


def default_policy() -> RoutingPolicy:
    return parse_policy(DEFAULT_POLICY_TOML.encode(), "built-in default policy")
