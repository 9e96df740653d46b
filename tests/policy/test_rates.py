"""Rate limits: token buckets per person and per session, delay before refusal."""

from __future__ import annotations

import math
import random

import pytest

from policy.decisions import Kind
from policy.rates import (
    DEFAULT_RATE_LIMITS,
    Delay,
    Pass,
    RateLimit,
    RateLimiter,
    RateScope,
    RateVerdict,
    Refuse,
)

STRICT = RateLimit(person_rate=1.0, person_burst=3, session_rate=100.0, session_burst=100)
"""Three at once per person, one more a second, never delayed; the session is generous."""


def send(
    limiter: RateLimiter,
    n: int,
    now: float,
    person: str = "ana",
    session: str = "s1",
    kind: Kind = Kind.CHAT,
) -> list[RateVerdict]:
    return [limiter.check(person, session, kind, now) for _ in range(n)]


def passes(verdicts: list[RateVerdict]) -> int:
    return sum(isinstance(v, Pass) for v in verdicts)


# --- RateLimit ----------------------------------------------------------------------------


def test_limits_are_numbers_stored_as_floats() -> None:
    limit = RateLimit(person_rate=2, person_burst=5, session_rate=10, session_burst=50)
    assert isinstance(limit.person_rate, float)
    assert isinstance(limit.session_rate, float)
    assert limit.throttle_s == 0.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("person_rate", 0),
        ("person_rate", -1.0),
        ("person_rate", math.nan),
        ("person_rate", math.inf),
        ("person_rate", True),
        ("person_rate", "1"),
        ("session_rate", 0.0),
        ("person_burst", 0),
        ("person_burst", 1.5),
        ("person_burst", True),
        ("session_burst", -3),
        ("throttle_s", -0.1),
        ("throttle_s", 61.0),
        ("throttle_s", math.nan),
    ],
)
def test_a_bad_limit_is_refused_naming_the_field(field: str, value: object) -> None:
    values: dict[str, object] = {
        "person_rate": 1.0,
        "person_burst": 2,
        "session_rate": 5.0,
        "session_burst": 10,
        "throttle_s": 0.0,
    }
    values[field] = value
    with pytest.raises(ValueError, match=field):
        RateLimit(**values)  # type: ignore[arg-type]


def test_the_defaults_limit_chat_and_hand_only() -> None:
    assert set(DEFAULT_RATE_LIMITS) == {Kind.CHAT, Kind.HAND}
    chat = DEFAULT_RATE_LIMITS[Kind.CHAT]
    assert (chat.person_rate, chat.person_burst, chat.session_rate, chat.session_burst) == (
        1.0,
        8,
        20.0,
        100,
    )
    assert chat.throttle_s == 2.0
    hand = DEFAULT_RATE_LIMITS[Kind.HAND]
    assert (hand.person_rate, hand.person_burst, hand.session_rate, hand.session_burst) == (
        0.5,
        4,
        10.0,
        40,
    )
    assert hand.throttle_s == 0.0


# --- burst and refill -------------------------------------------------------------------


def test_a_burst_passes_then_the_next_is_refused() -> None:
    limiter = RateLimiter({Kind.CHAT: STRICT})
    verdicts = send(limiter, 4, now=10.0)
    assert verdicts[:3] == [Pass(), Pass(), Pass()]
    refused = verdicts[3]
    assert isinstance(refused, Refuse)
    assert refused.scope is RateScope.PERSON
    assert refused.retry_after_s == pytest.approx(1.0)


def test_tokens_refill_at_the_rate_up_to_the_burst() -> None:
    limiter = RateLimiter({Kind.CHAT: STRICT})
    send(limiter, 3, now=0.0)
    assert isinstance(limiter.check("ana", "s1", Kind.CHAT, 0.5), Refuse)
    assert limiter.check("ana", "s1", Kind.CHAT, 1.0) == Pass()
    assert isinstance(limiter.check("ana", "s1", Kind.CHAT, 1.0), Refuse)
    # A long pause refills the bucket to its burst, never beyond.
    assert passes(send(limiter, 10, now=1000.0)) == 3


def test_retry_after_is_when_a_token_is_back() -> None:
    limiter = RateLimiter({Kind.CHAT: STRICT})
    send(limiter, 3, now=0.0)
    refused = limiter.check("ana", "s1", Kind.CHAT, 0.25)
    assert isinstance(refused, Refuse)
    assert refused.retry_after_s == pytest.approx(0.75)
    assert limiter.check("ana", "s1", Kind.CHAT, 0.25 + refused.retry_after_s) == Pass()


def test_a_clock_going_backwards_adds_no_tokens() -> None:
    limiter = RateLimiter({Kind.CHAT: STRICT})
    send(limiter, 3, now=100.0)
    assert isinstance(limiter.check("ana", "s1", Kind.CHAT, 50.0), Refuse)
    assert limiter.check("ana", "s1", Kind.CHAT, 101.0) == Pass()


# --- throttling: delay, then refuse ------------------------------------------------------


def test_a_flood_is_delayed_while_the_wait_is_short_then_refused() -> None:
    limiter = RateLimiter(DEFAULT_RATE_LIMITS)
    verdicts = send(limiter, 12, now=0.0)
    assert verdicts[:8] == [Pass()] * 8
    assert verdicts[8] == Delay(1.0)
    assert verdicts[9] == Delay(2.0)
    for refused in verdicts[10:]:
        assert isinstance(refused, Refuse)
        assert refused.scope is RateScope.PERSON
        # A refusal takes nothing, so the wait does not grow.
        assert refused.retry_after_s == pytest.approx(3.0)
    # One second later one more token is free for reservation, but the run of delays
    # that began at 0 s would then last 3 s, more than throttle_s: still refused.
    assert isinstance(limiter.check("ana", "s1", Kind.CHAT, 1.0), Refuse)


def test_a_sender_that_waits_out_each_delay_is_refused_after_throttle_s() -> None:
    """The relay reads a connection's next message only after the delay of the last one,
    so debt never builds up; the run of delays is what ends in refusals."""
    limiter = RateLimiter(DEFAULT_RATE_LIMITS)  # chat: 1/s, burst 8, throttle 2 s
    now = 0.0
    assert send(limiter, 8, now=now) == [Pass()] * 8
    delays = []
    while True:
        verdict = limiter.check("ana", "s1", Kind.CHAT, now)
        if not isinstance(verdict, Delay):
            break
        delays.append(verdict.seconds)
        now += verdict.seconds
    assert delays == [pytest.approx(1.0), pytest.approx(1.0)]
    assert isinstance(verdict, Refuse)
    assert verdict.scope is RateScope.PERSON
    # Refused until a token is back; then the message passes and a new run may begin.
    assert isinstance(limiter.check("ana", "s1", Kind.CHAT, now + 0.5), Refuse)
    assert limiter.check("ana", "s1", Kind.CHAT, now + 1.0) == Pass()
    assert limiter.check("ana", "s1", Kind.CHAT, now + 1.0) == Delay(1.0)


def test_a_delayed_message_has_used_its_token_when_it_is_processed() -> None:
    limiter = RateLimiter({Kind.CHAT: RateLimit(2.0, 1, 50.0, 50, throttle_s=1.0)})
    assert limiter.check("ana", "s1", Kind.CHAT, 0.0) == Pass()
    delayed = limiter.check("ana", "s1", Kind.CHAT, 0.0)
    assert delayed == Delay(0.5)
    # At 0.5 s the reserved token is spent: the next one comes at 1.0 s.
    assert limiter.check("ana", "s1", Kind.CHAT, 0.5) == Delay(0.5)


def test_throttle_zero_never_delays() -> None:
    limiter = RateLimiter({Kind.HAND: DEFAULT_RATE_LIMITS[Kind.HAND]})
    verdicts = send(limiter, 6, now=0.0, kind=Kind.HAND)
    assert verdicts[:4] == [Pass()] * 4
    assert all(isinstance(v, Refuse) for v in verdicts[4:])


def test_admitted_messages_never_exceed_burst_plus_refill() -> None:
    limit = RateLimit(2.0, 5, 1000.0, 1000, throttle_s=1.5)
    limiter = RateLimiter({Kind.CHAT: limit})
    rng = random.Random(3)
    now = 0.0
    admitted_by: list[float] = []
    for _ in range(2000):
        now += rng.expovariate(10.0)
        verdict = limiter.check("ana", "s1", Kind.CHAT, now)
        if isinstance(verdict, Delay):
            assert verdict.seconds <= limit.throttle_s
            admitted_by.append(now + verdict.seconds)
        elif isinstance(verdict, Pass):
            admitted_by.append(now)
    # Processed by time t: at most burst + rate * t messages.
    admitted_by.sort()
    for i, t in enumerate(admitted_by, start=1):
        assert i <= limit.person_burst + limit.person_rate * t + 1e-6


# --- person, session, kind -------------------------------------------------------------


def test_people_have_their_own_buckets() -> None:
    limiter = RateLimiter({Kind.CHAT: STRICT})
    send(limiter, 3, now=0.0, person="ana")
    assert isinstance(limiter.check("ana", "s1", Kind.CHAT, 0.0), Refuse)
    assert passes(send(limiter, 3, now=0.0, person="ben")) == 3


def test_the_session_bucket_is_shared_by_its_people() -> None:
    limit = RateLimit(person_rate=1.0, person_burst=2, session_rate=4.0, session_burst=5)
    limiter = RateLimiter({Kind.CHAT: limit})
    verdicts = [limiter.check(p, "s1", Kind.CHAT, 0.0) for p in ("a", "a", "b", "b", "c")]
    assert verdicts == [Pass()] * 5
    refused = limiter.check("d", "s1", Kind.CHAT, 0.0)
    assert isinstance(refused, Refuse)
    assert refused.scope is RateScope.SESSION
    assert refused.retry_after_s == pytest.approx(0.25)
    # Another session is not affected.
    assert limiter.check("d", "s2", Kind.CHAT, 0.0) == Pass()


def test_a_refusal_takes_no_token_from_the_other_bucket() -> None:
    limit = RateLimit(person_rate=0.01, person_burst=1, session_rate=0.01, session_burst=3)
    limiter = RateLimiter({Kind.CHAT: limit})
    assert limiter.check("a", "s1", Kind.CHAT, 0.0) == Pass()
    for _ in range(5):
        refused = limiter.check("a", "s1", Kind.CHAT, 0.0)
        assert isinstance(refused, Refuse)
        assert refused.scope is RateScope.PERSON
    assert limiter.check("b", "s1", Kind.CHAT, 0.0) == Pass()
    assert limiter.check("c", "s1", Kind.CHAT, 0.0) == Pass()
    refused = limiter.check("d", "s1", Kind.CHAT, 0.0)
    assert isinstance(refused, Refuse)
    assert refused.scope is RateScope.SESSION


def test_the_longer_wait_names_the_scope() -> None:
    limit = RateLimit(person_rate=1.0, person_burst=1, session_rate=0.1, session_burst=1)
    limiter = RateLimiter({Kind.CHAT: limit})
    assert limiter.check("a", "s1", Kind.CHAT, 0.0) == Pass()
    refused = limiter.check("a", "s1", Kind.CHAT, 0.0)
    assert isinstance(refused, Refuse)
    assert refused.scope is RateScope.SESSION
    assert refused.retry_after_s == pytest.approx(10.0)


def test_kinds_are_independent_and_unlimited_kinds_always_pass() -> None:
    limiter = RateLimiter({Kind.CHAT: STRICT, Kind.HAND: STRICT})
    send(limiter, 3, now=0.0, kind=Kind.CHAT)
    assert isinstance(limiter.check("ana", "s1", Kind.CHAT, 0.0), Refuse)
    assert passes(send(limiter, 3, now=0.0, kind=Kind.HAND)) == 3
    held = limiter.bucket_count
    assert passes(send(limiter, 1000, now=0.0, kind=Kind.EDITOR)) == 1000
    assert limiter.bucket_count == held


def test_sessions_are_independent() -> None:
    limiter = RateLimiter({Kind.CHAT: STRICT})
    send(limiter, 3, now=0.0, session="s1")
    assert isinstance(limiter.check("ana", "s1", Kind.CHAT, 0.0), Refuse)
    assert passes(send(limiter, 3, now=0.0, session="s2")) == 3


# --- reasons -----------------------------------------------------------------------------


def test_reasons_say_how_fast_and_how_long_to_wait() -> None:
    limiter = RateLimiter(DEFAULT_RATE_LIMITS)
    refused = send(limiter, 11, now=0.0)[-1]
    assert isinstance(refused, Refuse)
    assert refused.reason == (
        "you are sending chat messages faster than 1 per second (8 at once); wait 3 s"
    )
    session = Refuse(0.2, RateScope.SESSION, Kind.CHAT, 20.0, 100)
    assert (
        session.reason == "the class is sending chat messages faster than 20 per second; wait 1 s"
    )
    hand = send(limiter, 5, now=0.0, kind=Kind.HAND)[-1]
    assert isinstance(hand, Refuse)
    assert hand.reason == (
        "you are sending hand signals faster than 0.5 per second (4 at once); wait 2 s"
    )
    assert Refuse(2.5, RateScope.PERSON).reason == "you are sending messages too fast; wait 3 s"


def test_verdicts_check_themselves() -> None:
    with pytest.raises(ValueError, match="delay"):
        Delay(-1.0)
    with pytest.raises(ValueError, match="retry_after_s"):
        Refuse(math.nan, RateScope.PERSON)


# --- reconfiguration and forgetting ------------------------------------------------------


def test_reconfiguring_keeps_levels_and_clamps_to_the_new_burst() -> None:
    limiter = RateLimiter({Kind.CHAT: STRICT, Kind.HAND: STRICT})
    send(limiter, 3, now=0.0, person="ana")  # ana is out of tokens
    send(limiter, 1, now=0.0, person="ben")  # ben has two left
    send(limiter, 1, now=0.0, kind=Kind.HAND)
    smaller = RateLimit(person_rate=1.0, person_burst=1, session_rate=100.0, session_burst=100)
    limiter.configure({Kind.CHAT: smaller, Kind.EDITOR: STRICT})
    assert limiter.limits == {Kind.CHAT: smaller, Kind.EDITOR: STRICT}
    assert isinstance(limiter.check("ana", "s1", Kind.CHAT, 0.0), Refuse)
    assert limiter.check("ben", "s1", Kind.CHAT, 0.0) == Pass()
    assert isinstance(limiter.check("ben", "s1", Kind.CHAT, 0.0), Refuse)
    # Hand signals are no longer limited; editor changes start with a full bucket.
    assert passes(send(limiter, 50, now=0.0, kind=Kind.HAND)) == 50
    assert passes(send(limiter, 4, now=0.0, kind=Kind.EDITOR)) == 3
    # A larger burst does not hand out tokens: the bucket refills to it at the rate.
    limiter.configure({Kind.CHAT: RateLimit(1.0, 10, 100.0, 100)})
    assert isinstance(limiter.check("ana", "s1", Kind.CHAT, 0.0), Refuse)
    assert passes(send(limiter, 20, now=100.0, person="ana")) == 10


def test_forgetting_a_session_drops_its_buckets_only() -> None:
    limiter = RateLimiter({Kind.CHAT: STRICT})
    send(limiter, 3, now=0.0, session="s1")
    send(limiter, 3, now=0.0, session="s2")
    assert limiter.bucket_count == 4
    limiter.forget_session("s1")
    limiter.forget_session("never-seen")
    assert limiter.bucket_count == 2
    assert passes(send(limiter, 3, now=0.0, session="s1")) == 3
    assert isinstance(limiter.check("ana", "s2", Kind.CHAT, 0.0), Refuse)


# --- bounded memory ---------------------------------------------------------------------


def test_full_buckets_are_dropped_so_memory_stays_bounded() -> None:
    limit = RateLimit(person_rate=1.0, person_burst=2, session_rate=1000.0, session_burst=1000)
    limiter = RateLimiter({Kind.CHAT: limit}, prune_every=64)
    now = 0.0
    peak = 0
    for i in range(20_000):
        now += 0.01  # 100 messages a second, each from a new person in one of 50 sessions
        assert limiter.check(f"p{i}", f"s{i % 50}", Kind.CHAT, now) == Pass()
        peak = max(peak, limiter.bucket_count)
    # Only people who sent in the last two seconds (until refilled) can be held, plus
    # what accumulates between prunes.
    assert peak < 600
    limiter.prune(now + 1000.0)
    assert limiter.bucket_count == 0


def test_pruning_never_changes_a_verdict() -> None:
    rng = random.Random(11)
    limit = RateLimit(0.5, 2, 3.0, 4, throttle_s=1.0)
    eager = RateLimiter({Kind.CHAT: limit}, prune_every=1)
    lazy = RateLimiter({Kind.CHAT: limit}, prune_every=10**9)
    now = 0.0
    for _ in range(5000):
        now += rng.expovariate(2.0)
        person, session = f"p{rng.randrange(6)}", f"s{rng.randrange(3)}"
        assert eager.check(person, session, Kind.CHAT, now) == lazy.check(
            person, session, Kind.CHAT, now
        )
    assert eager.bucket_count <= lazy.bucket_count


def test_prune_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="prune_every"):
        RateLimiter({}, prune_every=0)
