"""Message rate limits: token buckets per person and per class session. Pure.

Each message of a rate-limited :class:`~policy.decisions.Kind` takes one token from the
sender's bucket (one per session, person and kind) and one from the session's bucket (one
per session and kind). A bucket holds at most ``burst`` tokens and refills at ``rate``
tokens per second. When both buckets have a token the message passes. Otherwise the
limiter works out how long until both would have one: if that wait is at most
``throttle_s`` the tokens are reserved now (the buckets go into debt) and the message is
delayed by the wait, so a flood is slowed down rather than cut off; a longer wait refuses
the message and takes nothing.

Nothing here reads a clock: the caller passes ``now`` (seconds, monotonic) to every
:meth:`RateLimiter.check`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from policy.decisions import Kind

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "MAX_THROTTLE_S",
    "Delay",
    "Pass",
    "RateLimit",
    "RateLimiter",
    "RateScope",
    "RateVerdict",
    "Refuse",
]

MAX_THROTTLE_S = 60.0
"""The longest a message may be delayed instead of refused."""


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """How fast one person, and one class session as a whole, may send one kind of message."""

    person_rate: float
    """Tokens per second refilled into each person's bucket (> 0)."""
    person_burst: int
    """Most tokens a person's bucket holds: messages they may send at once (>= 1)."""
    session_rate: float
    """Tokens per second refilled into the session's bucket (> 0)."""
    session_burst: int
    """Most tokens the session's bucket holds (>= 1)."""
    throttle_s: float = 0.0
    """A message that would be admitted within this many seconds is delayed, not refused."""

    def __post_init__(self) -> None:
        for name in ("person_rate", "session_rate"):
            value = getattr(self, name)
            if not _number(value) or value <= 0:
                raise ValueError(f"{name} must be a number above 0 (per second), not {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("person_burst", "session_burst"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
        if not _number(self.throttle_s) or not 0 <= self.throttle_s <= MAX_THROTTLE_S:
            raise ValueError(
                f"throttle_s must be a number of seconds from 0 to {MAX_THROTTLE_S:g}, "
                f"not {self.throttle_s!r}"
            )
        object.__setattr__(self, "throttle_s", float(self.throttle_s))


DEFAULT_RATE_LIMITS: Mapping[Kind, RateLimit] = MappingProxyType(
    {
        Kind.CHAT: RateLimit(
            person_rate=1.0, person_burst=8, session_rate=20.0, session_burst=100, throttle_s=2.0
        ),
        Kind.HAND: RateLimit(
            person_rate=0.5, person_burst=4, session_rate=10.0, session_burst=40, throttle_s=0.0
        ),
    }
)
"""The limits of a policy file without ``[rate.KIND]`` tables; other kinds are unlimited."""


class RateScope(enum.Enum):
    """Which bucket is short: the sender's own, or the whole session's."""

    PERSON = "person"
    SESSION = "session"


@dataclass(frozen=True, slots=True)
class Pass:
    """Admit the message now."""


@dataclass(frozen=True, slots=True)
class Delay:
    """Admit the message after ``seconds``; its tokens are already taken."""

    seconds: float

    def __post_init__(self) -> None:
        if not _number(self.seconds) or self.seconds < 0:
            raise ValueError(f"a delay is a number of seconds >= 0, not {self.seconds!r}")


_NOUNS = {
    Kind.CHAT: "chat messages",
    Kind.HAND: "hand signals",
    Kind.CONTROL: "control messages",
    Kind.EDITOR: "editor changes",
    Kind.FILE_NAME: "file names",
    Kind.SCREEN_CAPTION: "screen captions",
}


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refuse the message; nothing was taken. ``retry_after_s``: when both buckets would
    have a token again (if nobody else sends meanwhile)."""

    retry_after_s: float
    scope: RateScope
    kind: Kind | None = None
    rate: float = 0.0
    """The refill rate of the bucket that is short (for :attr:`reason`)."""
    burst: int = 0

    def __post_init__(self) -> None:
        if not _number(self.retry_after_s) or self.retry_after_s < 0:
            raise ValueError(f"retry_after_s must be >= 0, not {self.retry_after_s!r}")

    @property
    def reason(self) -> str:
        """A sentence for the sender, e.g. "you are sending chat messages faster than 1 per
        second (8 at once); wait 3 s"."""
        what = "messages" if self.kind is None else _NOUNS[self.kind]
        wait = max(1, math.ceil(self.retry_after_s))
        who = "you are" if self.scope is RateScope.PERSON else "the class is"
        if self.rate <= 0:
            return f"{who} sending {what} too fast; wait {wait} s"
        burst = f" ({self.burst} at once)" if self.scope is RateScope.PERSON and self.burst else ""
        return f"{who} sending {what} faster than {self.rate:g} per second{burst}; wait {wait} s"


RateVerdict = Pass | Delay | Refuse

_PASS = Pass()


class _Bucket:
    """Tokens at time ``at``; ``level`` may be negative (reserved by a delayed message).

    ``throttled_since``: when the current run of delayed messages began (None: the last
    message found a token). A run may last ``throttle_s``; later messages that would
    still need a delay are refused, so that a sender who keeps flooding is told to stop
    rather than slowed down for ever (the relay reads nothing more from a connection
    while one of its messages is delayed, so the delays alone would never refuse).
    """

    __slots__ = ("at", "level", "throttled_since")

    def __init__(self, level: float, at: float) -> None:
        self.level = level
        self.at = at
        self.throttled_since: float | None = None

    def level_at(self, now: float, rate: float, burst: int) -> float:
        elapsed = now - self.at
        if elapsed <= 0:
            return self.level
        return min(float(burst), self.level + elapsed * rate)

    def full_at(self, now: float, rate: float, burst: int) -> bool:
        return self.level_at(now, rate, burst) >= burst


def _run(bucket: _Bucket, now: float, wait: float) -> float:
    """Seconds from the start of ``bucket``'s run of delays to the end of this delay."""
    start = bucket.throttled_since
    return wait if start is None else now + wait - start


def _mark(bucket: _Bucket, wait: float, now: float) -> None:
    if not wait:
        bucket.throttled_since = None
    elif bucket.throttled_since is None:
        bucket.throttled_since = now


class _SessionBuckets:
    __slots__ = ("people", "shared")

    def __init__(self) -> None:
        self.shared: dict[Kind, _Bucket] = {}
        self.people: dict[tuple[str, Kind], _Bucket] = {}


class RateLimiter:
    """Token buckets for every (session, person, kind) and (session, kind) in use.

    A bucket that has refilled to its burst is the same as no bucket, so such buckets are
    dropped now and then (after ``prune_every`` checks, or after as many checks as there
    were buckets left by the last prune if that is more): memory stays proportional to
    the people who sent recently, and pruning costs O(1) per check on average.
    """

    def __init__(self, limits: Mapping[Kind, RateLimit], *, prune_every: int = 1024) -> None:
        if prune_every < 1:
            raise ValueError("prune_every must be at least 1")
        self._limits: dict[Kind, RateLimit] = dict(limits)
        self._sessions: dict[str, _SessionBuckets] = {}
        self._buckets = 0
        self._since_prune = 0
        self._prune_every = prune_every
        self._prune_after = prune_every

    @property
    def limits(self) -> Mapping[Kind, RateLimit]:
        return MappingProxyType(self._limits)

    @property
    def bucket_count(self) -> int:
        """How many buckets are held (for tests and metrics)."""
        return self._buckets

    def configure(self, limits: Mapping[Kind, RateLimit]) -> None:
        """Use new limits from now on. Bucket levels are kept, cut down to the new bursts;
        buckets of kinds no longer limited are dropped."""
        self._limits = dict(limits)
        for buckets in self._sessions.values():
            for kind in [k for k in buckets.shared if k not in self._limits]:
                del buckets.shared[kind]
                self._buckets -= 1
            for key in [k for k in buckets.people if k[1] not in self._limits]:
                del buckets.people[key]
                self._buckets -= 1
            for kind, bucket in buckets.shared.items():
                bucket.level = min(bucket.level, float(self._limits[kind].session_burst))
            for key, bucket in buckets.people.items():
                bucket.level = min(bucket.level, float(self._limits[key[1]].person_burst))
        self._sessions = {s: b for s, b in self._sessions.items() if b.shared or b.people}

    def check(self, person: str, session: str, kind: Kind, now: float) -> RateVerdict:
        """May ``person`` send a message of ``kind`` in ``session`` at ``now``?"""
        limit = self._limits.get(kind)
        if limit is None:
            return _PASS
        self._since_prune += 1
        if self._since_prune >= self._prune_after:
            self.prune(now)
        buckets = self._sessions.get(session)
        if buckets is None:
            buckets = self._sessions[session] = _SessionBuckets()
        mine = buckets.people.get((person, kind))
        shared = buckets.shared.get(kind)
        p_level = (
            float(limit.person_burst)
            if mine is None
            else mine.level_at(now, limit.person_rate, limit.person_burst)
        )
        s_level = (
            float(limit.session_burst)
            if shared is None
            else shared.level_at(now, limit.session_rate, limit.session_burst)
        )
        p_wait = 0.0 if p_level >= 1 else (1 - p_level) / limit.person_rate
        s_wait = 0.0 if s_level >= 1 else (1 - s_level) / limit.session_rate
        wait = max(p_wait, s_wait)
        # How long the run of delays each short bucket is in would last with this one.
        p_run = 0.0 if not p_wait or mine is None else _run(mine, now, wait)
        s_run = 0.0 if not s_wait or shared is None else _run(shared, now, wait)
        if max(wait, p_run, s_run) > limit.throttle_s:
            if (p_wait, p_run) >= (s_wait, s_run):
                return Refuse(p_wait, RateScope.PERSON, kind, limit.person_rate, limit.person_burst)
            return Refuse(s_wait, RateScope.SESSION, kind, limit.session_rate, limit.session_burst)
        if mine is None:
            buckets.people[(person, kind)] = mine = _Bucket(p_level - 1, now)
            self._buckets += 1
        else:
            mine.level, mine.at = p_level - 1, max(now, mine.at)
        if shared is None:
            buckets.shared[kind] = shared = _Bucket(s_level - 1, now)
            self._buckets += 1
        else:
            shared.level, shared.at = s_level - 1, max(now, shared.at)
        _mark(mine, p_wait, now)
        _mark(shared, s_wait, now)
        return _PASS if wait == 0 else Delay(wait)

    def forget_session(self, session: str) -> None:
        """Drop the buckets of ``session`` and of its people (when the session ends)."""
        buckets = self._sessions.pop(session, None)
        if buckets is not None:
            self._buckets -= len(buckets.shared) + len(buckets.people)

    def prune(self, now: float) -> None:
        """Drop every bucket that has refilled to its burst by ``now``."""
        self._since_prune = 0
        limits = self._limits
        for session in list(self._sessions):
            buckets = self._sessions[session]
            full_kinds = [
                kind
                for kind, b in buckets.shared.items()
                if b.full_at(now, limits[kind].session_rate, limits[kind].session_burst)
            ]
            for kind in full_kinds:
                del buckets.shared[kind]
            full_people = [
                key
                for key, b in buckets.people.items()
                if b.full_at(now, limits[key[1]].person_rate, limits[key[1]].person_burst)
            ]
            for key in full_people:
                del buckets.people[key]
            self._buckets -= len(full_kinds) + len(full_people)
            if not buckets.shared and not buckets.people:
                del self._sessions[session]
        # The next prune comes after as many checks as there are buckets left (at least
        # prune_every), so pruning costs O(1) per check on average.
        self._prune_after = max(self._prune_every, self._buckets)
