"""The pure class state machine: joins, visibility, replay, duplicates, ending (no I/O)."""

from __future__ import annotations

from relay import wire
from relay.audit import EventKind
from relay.errors import ErrorCode
from relay.identity import Participant, ParticipantRole
from relay.limits import Limits
from relay.messages import (
    Ack,
    AckStatus,
    Channel,
    ChatEvent,
    PresenceChange,
    SessionEnded,
    SessionInfo,
    Welcome,
)
from relay.session import LiveSession, Outcome, SessionState

ALICE = Participant(ParticipantRole.INSTRUCTOR, "alice")
L1 = Participant(ParticipantRole.LEARNER, "l1", machine="pc-01")
L2 = Participant(ParticipantRole.LEARNER, "l2", machine="pc-02")
SAM = Participant(ParticipantRole.STAFF, "sam")


def new_session(**limits: int) -> LiveSession:
    return LiveSession(
        info=SessionInfo(id="py101", title="Python", start=0.0, end=100.0),
        instructor="alice",
        learners=frozenset({"l1", "l2"}),
        limits=Limits(**limits),  # type: ignore[arg-type]
    )


def frames_for(outcome: Outcome, conn: int) -> list[object]:
    return [
        wire.decode_server(frame)
        for d in outcome.deliveries
        if conn in d.conns
        for frame in (d.frame, *d.more)
    ]


def test_join_welcomes_and_announces() -> None:
    s = new_session()
    s.join(ALICE, 1, 0, 1.0, None)
    out = s.join(L1, 2, 0, 2.0, "127.0.0.1:5")
    welcome = frames_for(out, 2)[0]
    assert isinstance(welcome, Welcome)
    assert [p.pid for p in welcome.roster] == ["instructor:alice", "learner:l1"]
    announce = frames_for(out, 1)
    assert len(announce) == 1
    assert isinstance(announce[0], PresenceChange)
    assert out.events[0].kind is EventKind.JOINED
    assert out.events[0].machine == "pc-01"
    assert out.events[0].learner == "l1"


def test_direct_messages_are_seen_by_the_pair_and_staff_only() -> None:
    s = new_session()
    for i, p in enumerate((ALICE, L1, L2, SAM), start=1):
        s.join(p, i, 0, 1.0, None)
    out = s.chat(
        ALICE, 1, "m1", Channel.DIRECT, "see me", "learner:l1", 2.0, rule="r", policy_version="v"
    )
    receivers = {c for d in out.deliveries for c in d.conns}
    assert receivers == {1, 2, 4}
    assert out.events[0].content == "see me"
    assert out.events[0].recipient == "learner:l1"


def test_replay_after_reconnect_gives_only_what_was_missed_and_visible() -> None:
    s = new_session()
    s.join(ALICE, 1, 0, 1.0, None)
    s.join(L1, 2, 0, 1.0, None)
    s.join(L2, 3, 0, 1.0, None)
    seen = s.seq
    s.chat(ALICE, 1, "a", Channel.CLASS, "one", None, 2.0, rule="r", policy_version="v")
    s.chat(
        ALICE,
        1,
        "b",
        Channel.DIRECT,
        "for l2 only",
        "learner:l2",
        2.0,
        rule="r",
        policy_version="v",
    )
    s.chat(ALICE, 1, "c", Channel.CLASS, "two", None, 2.0, rule="r", policy_version="v")
    out = s.join(L1, 9, seen, 3.0, None)  # l1 reconnects on connection 9
    frames = frames_for(out, 9)
    welcome = frames[0]
    assert isinstance(welcome, Welcome)
    replayed = [f.text for f in frames[1:] if isinstance(f, ChatEvent)]
    assert replayed == ["one", "two"]
    assert welcome.replay == len(frames) - 1
    # The old connection is closed as replaced; nobody sees l1 join twice.
    assert [c.code for c in out.closes] == [ErrorCode.REPLACED]
    assert not [f for f in frames_for(out, 1) if isinstance(f, PresenceChange)]


def test_history_is_bounded() -> None:
    s = new_session(history_limit=3)
    s.join(ALICE, 1, 0, 1.0, None)
    for i in range(10):
        s.chat(ALICE, 1, f"m{i}", Channel.CLASS, f"t{i}", None, 2.0, rule="r", policy_version="v")
    out = s.join(L1, 2, 0, 3.0, None)
    texts = [f.text for f in frames_for(out, 2) if isinstance(f, ChatEvent)]
    assert texts == ["t7", "t8", "t9"]


def test_acks_are_remembered_for_duplicates() -> None:
    s = new_session(dedup_window=2)
    s.join(ALICE, 1, 0, 1.0, None)
    s.chat(ALICE, 1, "m1", Channel.CLASS, "x", None, 2.0, rule="r", policy_version="v")
    first = s.previous_ack("instructor:alice", "m1")
    assert isinstance(first, Ack)
    assert first.status is AckStatus.DELIVERED
    s.refuse(ALICE, 1, "m2", ErrorCode.RATE_LIMITED, "slow", 2.0)
    refused = s.previous_ack("instructor:alice", "m2")
    assert refused is not None
    assert refused.error == "rate_limited"
    s.chat(ALICE, 1, "m3", Channel.CLASS, "y", None, 2.0, rule="r", policy_version="v")
    assert s.previous_ack("instructor:alice", "m1") is None  # fell out of the window


def test_leaving_lowers_the_hand_and_stale_connections_are_ignored() -> None:
    s = new_session()
    s.join(ALICE, 1, 0, 1.0, None)
    s.join(L1, 2, 0, 1.0, None)
    s.hand(L1, 2, "h", "learner:l1", True, 2.0)
    s.join(L1, 3, s.seq, 2.5, None)  # reconnect
    assert s.leave(L1, 2, 3.0, "old connection closed") == Outcome()
    out = s.leave(L1, 3, 3.0, "closed")
    kinds = [type(wire.decode_server(d.frame)).__name__ for d in out.deliveries]
    assert kinds == ["HandEvent", "PresenceChange"]
    assert "learner:l1" not in [p.pid for p in s.roster()]


def test_end_tells_everyone_and_closes_them() -> None:
    s = new_session()
    s.join(ALICE, 1, 0, 1.0, None)
    s.join(L1, 2, 0, 1.0, None)
    out = s.end("staff:sam", "incident", 5.0)
    assert s.state is SessionState.ENDED
    ended = frames_for(out, 2)[0]
    assert isinstance(ended, SessionEnded)
    assert ended.reason == "incident"
    assert {c.conn for c in out.closes} == {1, 2}
    assert s.end("staff:sam", "again", 6.0) == Outcome()


def test_pause_notice_carries_no_content() -> None:
    s = new_session()
    s.join(ALICE, 1, 0, 1.0, None)
    frame, conns = s.pause("disk full", 2.0)
    notice = wire.decode_server(frame)
    assert conns == (1,)
    assert s.state is SessionState.PAUSED
    assert "audit" in getattr(notice, "text", "")
    out = s.resume(5.0)
    assert s.state is SessionState.OPEN
    assert out.events[0].kind is EventKind.SESSION_PAUSED
    assert "3.0 s" in (out.events[0].detail or "")


def test_class_messages_reach_whoever_is_present_now() -> None:
    s = new_session()
    s.join(ALICE, 1, 0, 1.0, None)
    s.join(L1, 2, 0, 1.0, None)

    def chat_receivers(msg_id: str) -> set[int]:
        out = s.chat(ALICE, 1, msg_id, Channel.CLASS, "hi", None, 2.0, rule="r", policy_version="v")
        return {c for d in out.deliveries[1:] for c in d.conns}

    assert chat_receivers("m1") == {2}
    s.join(L2, 3, 0, 3.0, None)
    assert chat_receivers("m2") == {2, 3}
    s.join(L1, 4, 0, 4.0, None)  # l1 reconnects on a new connection
    assert chat_receivers("m3") == {3, 4}
    s.leave(L2, 3, 5.0, "gone")
    assert chat_receivers("m4") == {4}
    s.join(SAM, 5, 0, 6.0, None)
    assert chat_receivers("m5") == {4, 5}


def test_a_client_ahead_of_a_restarted_history_gets_everything() -> None:
    s = new_session()
    s.join(ALICE, 1, 0, 1.0, None)
    s.chat(ALICE, 1, "a", Channel.CLASS, "after restart", None, 2.0, rule="r", policy_version="v")
    out = s.join(L1, 2, 500, 3.0, None)  # l1 had seen seq 500 before the relay restarted
    texts = [f.text for f in frames_for(out, 2) if isinstance(f, ChatEvent)]
    assert texts == ["after restart"]
