"""Messages held for security staff's review. Pure, no I/O.

The choke point puts a chat message the policy decides to *hold* into the
:class:`ReviewQueue` and tells its sender "held for review". Staff approve it (it is then
delivered, marked as approved late), reject it, or leave it until it expires, which
counts as rejected. The queue only keeps the pending messages; every step is recorded by
the choke point through the audit interface.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from relay.errors import AccessDenied, ErrorCode
from relay.identity import Participant
from relay.messages import Channel, HeldInfo


@dataclass(frozen=True, slots=True)
class HeldMessage:
    """One message waiting for review, with everything needed to deliver it later."""

    hold: str
    session: str
    sender: Participant
    msg_id: str
    channel: Channel
    to: str | None
    text: str
    time: float
    expires: float
    rule: str
    reason: str
    categories: tuple[str, ...]
    policy_version: str
    deliver: str
    """What is delivered if staff approve: ``text`` with the spans the policy redacts
    replaced (a held message may also contain parts that are always redacted)."""

    def info(self) -> HeldInfo:
        """As staff see it on the wire."""
        return HeldInfo(
            hold=self.hold,
            ref=self.msg_id,
            sender=self.sender.pid,
            channel=self.channel,
            to=self.to,
            text=self.text,
            time=self.time,
            expires=self.expires,
            rule=self.rule,
            reason=self.reason,
            categories=self.categories,
        )


def session_of_hold(hold: str) -> str:
    """The class id a hold id belongs to (hold ids are ``SESSION.hN-TAG``)."""
    session, dot, rest = hold.rpartition(".")
    if not dot or not session or not rest.startswith("h"):
        raise ValueError(f"{hold!r} is not a hold id (CLASS.hN-TAG, as 'review list' shows)")
    return session


@dataclass(slots=True)
class ReviewQueue:
    """Pending held messages, by hold id, in the order they were held."""

    max_per_session: int
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    """Distinguishes hold ids of this relay run from those of earlier runs."""
    _pending: dict[str, HeldMessage] = field(default_factory=dict)
    _count: int = 0

    def new_id(self, session: str) -> str:
        self._count += 1
        return f"{session}.h{self._count}-{self.tag}"

    def add(self, held: HeldMessage) -> None:
        """Queue ``held``; refused (:class:`AccessDenied`) when its class's queue is full."""
        waiting = sum(1 for h in self._pending.values() if h.session == held.session)
        if waiting >= self.max_per_session:
            raise AccessDenied(
                ErrorCode.REVIEW_QUEUE_FULL,
                f"{waiting} messages of this class already wait for review "
                f"(limit max_holds_per_session={self.max_per_session})",
            )
        self._pending[held.hold] = held

    def pending(self, session: str | None = None) -> tuple[HeldMessage, ...]:
        return tuple(h for h in self._pending.values() if session is None or h.session == session)

    def get(self, hold: str) -> HeldMessage | None:
        return self._pending.get(hold)

    def take(self, hold: str) -> HeldMessage | None:
        """Remove and return the pending message ``hold`` (None if it is not pending)."""
        return self._pending.pop(hold, None)

    def take_expired(self, now: float) -> list[HeldMessage]:
        """Remove and return every message whose review time is over."""
        return self._take(h for h in self._pending.values() if h.expires <= now)

    def take_session(self, session: str) -> list[HeldMessage]:
        """Remove and return every pending message of ``session`` (the class ended)."""
        return self._take(h for h in self._pending.values() if h.session == session)

    def take_all(self) -> list[HeldMessage]:
        return self._take(self._pending.values())

    def _take(self, chosen: Iterable[HeldMessage]) -> list[HeldMessage]:
        out = list(chosen)
        for h in out:
            del self._pending[h.hold]
        return out

    def __len__(self) -> int:
        return len(self._pending)
