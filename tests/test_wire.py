"""The wire codec: golden vectors, round trips, and every limit (pure, no event loop)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from relay import wire
from relay.errors import ErrorCode, ProtocolError
from relay.identity import ParticipantRole
from relay.limits import DEFAULT_LIMITS, Limits
from relay.messages import (
    Ack,
    AckStatus,
    AlertNotice,
    Bye,
    Channel,
    Chat,
    ChatEvent,
    EditorLecture,
    EditorModeEvent,
    EditorPresence,
    EditorPresenceEvent,
    EditorShare,
    EditorState,
    EditorSync,
    EditorUpdate,
    EditorUpdateEvent,
    EndSession,
    ErrorFrame,
    Hand,
    HandEvent,
    HeldInfo,
    HeldNotice,
    Hello,
    Holds,
    ParticipantInfo,
    PresenceChange,
    PresenceEvent,
    Review,
    Reviewed,
    ReviewList,
    ReviewOutcome,
    SessionEnded,
    SessionInfo,
    ShareAnswer,
    ShareAsk,
    ShareAsked,
    ShareStart,
    ShareStarted,
    ShareStop,
    ShareStopped,
    ShareWatch,
    Welcome,
)

L = DEFAULT_LIMITS

# Golden vectors: these bytes are what docs/protocol.md describes. If one changes, the
# protocol changed: bump the subprotocol version instead.
GOLDEN_CLIENT = [
    (
        Hello(id="a1b2-1", session="py101", learner="l1001", pin="4321", client="my-client/1.0"),
        "86a174a568656c6c6fa26964a661316232"
        "2d31a773657373696f6ea5707931303"
        "1a76c6561726e6572a56c31303031a370696ea434333231a6636c69656e74ad6d792d636c69656e74"
        "2f312e30",
    ),
    (
        Chat(id="a1b2-2", channel=Channel.CLASS, text="Is it range(1, 10)?"),
        "84a174a463686174a26964a6613162322d32a76368616e6e656ca5636c617373a474657874b3"
        "49732069742072616e676528312c203130293f",
    ),
]


@pytest.mark.parametrize(("msg", "hexbytes"), GOLDEN_CLIENT)
def test_golden_client_frames(msg: Hello | Chat, hexbytes: str) -> None:
    data = bytes.fromhex(hexbytes)
    assert wire.encode_client(msg) == data
    assert wire.decode_client(data, L) == msg


def test_golden_vector_matches_the_document() -> None:
    # docs/protocol.md shows the first bytes of the hello example.
    assert (
        wire.encode_client(GOLDEN_CLIENT[0][0])
        .hex(" ")
        .startswith("86 a1 74 a5 68 65 6c 6c 6f a2 69 64 a6 61 31 62 32 2d 31")
    )


CLIENT_MESSAGES = [
    Hello(id="h1", session="py101"),
    Hello(id="h2", session="py101", learner="l1", pin="1234", resume_after=42, client="x"),
    Chat(id="c1", channel=Channel.CLASS, text="print('hi')\n\tindent"),
    Chat(id="c2", channel=Channel.DIRECT, text="see me", to="learner:l1001"),
    Hand(id="k1", raised=True),
    Hand(id="k2", raised=False, who="learner:l1001"),
    EndSession(id="e1", reason="incident"),
    Bye(id="b1"),
    ReviewList(id="r1"),
    Review(id="r2", hold="py101.h3-ab12", approve=True),
    Review(id="r3", hold="py101.h4-ab12", approve=False, reason="not a documentation site"),
    EditorSync(id="y1", ws="class", sv=b"\x00"),
    EditorUpdate(id="y2", ws="learner:l1001", update=b"\x01\x02\x00\xff"),
    EditorPresence(id="y3", ws="class", file="src/main.py", anchor=3, head=7),
    EditorPresence(id="y4", ws="class"),
    EditorLecture(id="y5", on=True),
    EditorShare(id="y6", learner="l1001", shared=False),
    ShareStart(id="v1", sdp="v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"),
    ShareWatch(id="v2", share="py101.s1-ab12", sdp="v=0\r\n"),
    ShareStop(id="v3", share="py101.s1-ab12", reason="done"),
    ShareStop(id="v4", share="py101.s1-ab12"),
    ShareAsk(id="v5", learner="l1001"),
]


@pytest.mark.parametrize("msg", CLIENT_MESSAGES, ids=lambda m: type(m).__name__)
def test_client_round_trip(msg: object) -> None:
    assert wire.decode_client(wire.encode_client(msg), L) == msg  # type: ignore[arg-type]


def test_every_client_type_has_a_round_trip_case() -> None:
    from relay.messages import CLIENT_TYPES

    assert {type(m) for m in CLIENT_MESSAGES} == set(CLIENT_TYPES.values())


HELD = HeldInfo(
    hold="py101.h1-ab12",
    ref="c5",
    sender="instructor:alice",
    channel=Channel.CLASS,
    text="https://realpython.com",
    time=7.5,
    expires=1807.5,
    rule="contact.link.instructor",
    reason="links wait for review (url)",
    categories=("url",),
)
HELD_DIRECT = HeldInfo(
    hold="py101.h2-ab12",
    ref="c6",
    sender="learner:l1",
    channel=Channel.DIRECT,
    to="instructor:alice",
    text="aGVsbG8gd29ybGQgaGVsbG8gd29ybGQ=",
    time=8.0,
    expires=1808.0,
    rule="content.encoded",
    reason="encoded data waits for review (blob)",
    categories=("blob",),
)
ALICE = ParticipantInfo(pid="instructor:alice", role=ParticipantRole.INSTRUCTOR, name="alice")
L1 = ParticipantInfo(pid="learner:l1", role=ParticipantRole.LEARNER, name="l1", machine="pc-01")
SERVER_MESSAGES = [
    Welcome(
        session=SessionInfo(id="py101", title="Python", start=1.0, end=2.5),
        you=L1,
        roster=(ALICE, L1),
        hands=("learner:l1",),
        last_seq=7,
        replay=3,
    ),
    Ack(ref="c1", status=AckStatus.DELIVERED, seq=9),
    Ack(ref="c2", status=AckStatus.REFUSED, code=4431, error="route_refused", text="no"),
    ChatEvent(
        seq=9, id="c1", sender="instructor:alice", channel=Channel.CLASS, text="hi", time=3.0
    ),
    ChatEvent(
        seq=10,
        id="c3",
        sender="learner:l1",
        channel=Channel.DIRECT,
        text="q",
        time=3.5,
        to="instructor:alice",
    ),
    PresenceChange(seq=11, event=PresenceEvent.LEFT, who=L1, time=4.0),
    HandEvent(seq=12, who="learner:l1", raised=True, time=5.0),
    ErrorFrame(code=4402, error="unknown_type", text="Refused: ...", ref="x"),
    SessionEnded(reason="over", by="relay", time=6.0),
    Ack(
        ref="c4",
        status=AckStatus.REDACTED,
        seq=13,
        time=7.0,
        text="Part of your message was replaced",
        redacted="mail [redacted:email]",
    ),
    Ack(
        ref="c5",
        status=AckStatus.HELD,
        code=4435,
        error="held_for_review",
        text="Held for review",
        hold="py101.h1-ab12",
    ),
    ChatEvent(
        seq=14,
        id="c5",
        sender="instructor:alice",
        channel=Channel.CLASS,
        text="https://realpython.com",
        time=9.0,
        approved_by="staff:sam",
        sent=7.5,
    ),
    HeldNotice(HELD),
    Holds(ref="r1", holds=(HELD, HELD_DIRECT)),
    Holds(ref="r1", holds=()),
    Reviewed(
        hold="py101.h1-ab12",
        ref="c5",
        outcome=ReviewOutcome.APPROVED,
        by="staff:sam",
        reason="",
        time=9.0,
        seq=14,
    ),
    Reviewed(
        hold="py101.h2-ab12",
        ref="c6",
        outcome=ReviewOutcome.EXPIRED,
        by="relay",
        reason="not reviewed within 30 minutes",
        time=9.0,
    ),
    AlertNotice(
        ref="c7",
        seq=15,
        sender="learner:l1",
        rule="lexicon.watch",
        reason="passed on",
        categories=("lexicon:watch",),
        time=10.0,
    ),
    EditorState(ref="y1", ws="class", update=b"\x00\x00", sv=b"\x00"),
    EditorUpdateEvent(ws="class", update=b"\x01\x02", by="instructor:alice", time=11.0),
    EditorUpdateEvent(ws="learner:l1", update=b"\x01", by="relay", time=12.0, ref="y2"),
    EditorPresenceEvent(ws="class", who="learner:l1", file="a.py", anchor=1, head=2, time=13.0),
    EditorPresenceEvent(ws="class", who="learner:l1", file=None, anchor=0, head=0, time=14.0),
    EditorModeEvent(lecture=True, shared=("learner:l1",), by="instructor:alice", time=15.0),
    ShareAnswer(ref="v1", share="py101.s1-ab12", sdp="v=0\r\n"),
    ShareStarted(share="py101.s1-ab12", by="instructor:alice", time=16.0, width=1280, height=720),
    ShareStopped(share="py101.s1-ab12", by="relay", reason="the class ended", time=17.0),
    ShareAsked(by="instructor:alice", time=18.0, until=618.0),
]


@pytest.mark.parametrize("msg", SERVER_MESSAGES, ids=lambda m: type(m).__name__)
def test_server_round_trip(msg: object) -> None:
    assert wire.decode_server(wire.encode_server(msg)) == msg  # type: ignore[arg-type]


def refused(data: bytes, limits: Limits = L) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        wire.decode_client(data, limits)
    return info.value


def pack(obj: object) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", ErrorCode.MALFORMED),
        (b"\xc1", ErrorCode.MALFORMED),
        (pack([1, 2]), ErrorCode.MALFORMED),
        (pack("hello"), ErrorCode.MALFORMED),
        (pack({"t": "chat"})[:-2], ErrorCode.MALFORMED),
        (pack({"t": "bye", "id": "x"}) + b"\x00", ErrorCode.MALFORMED),
        (pack({"t": "teleport", "id": "x"}), ErrorCode.UNKNOWN_TYPE),
        (pack({"id": "x"}), ErrorCode.INVALID_FIELD),
        (pack({1: "x", "t": "bye"}), ErrorCode.MALFORMED),
        (pack({"t": "bye"}), ErrorCode.INVALID_FIELD),
        (pack({"t": "bye", "id": "has space"}), ErrorCode.INVALID_FIELD),
        (pack({"t": "bye", "id": "x", "extra": 1}), ErrorCode.INVALID_FIELD),
        (pack({"t": "hand", "id": "x", "raised": 1}), ErrorCode.INVALID_FIELD),
        (
            pack({"t": "chat", "id": "x", "channel": "class", "text": "   "}),
            ErrorCode.INVALID_FIELD,
        ),
        (pack({"t": "chat", "id": "x", "channel": "shout", "text": "a"}), ErrorCode.INVALID_FIELD),
        (pack({"t": "chat", "id": "x", "channel": "direct", "text": "a"}), ErrorCode.INVALID_FIELD),
        (
            pack({"t": "chat", "id": "x", "channel": "class", "text": "a", "to": "learner:l1"}),
            ErrorCode.INVALID_FIELD,
        ),
        (
            pack({"t": "chat", "id": "x", "channel": "direct", "text": "a", "to": "nobody"}),
            ErrorCode.INVALID_FIELD,
        ),
        (
            pack({"t": "chat", "id": "x", "channel": "class", "text": "a\x00b"}),
            ErrorCode.INVALID_FIELD,
        ),
        (
            pack({"t": "chat", "id": "x", "channel": "class", "text": "a\x1bb"}),
            ErrorCode.INVALID_FIELD,
        ),
        (pack({"t": "hello", "id": "x", "session": "Py 101"}), ErrorCode.INVALID_FIELD),
        (
            pack({"t": "hello", "id": "x", "session": "py", "learner": "l1"}),
            ErrorCode.INVALID_FIELD,
        ),
        (
            pack({"t": "hello", "id": "x", "session": "py", "resume_after": -1}),
            ErrorCode.INVALID_FIELD,
        ),
        (pack({"t": "end_session", "id": "x", "reason": ""}), ErrorCode.INVALID_FIELD),
        (pack({"t": "bye", "id": "x", "blob": b"\x00"}), ErrorCode.INVALID_FIELD),
        (
            pack({"t": "editor_update", "id": "x", "ws": "class", "update": b"\x00" * 60_001}),
            ErrorCode.LIMIT_EXCEEDED,
        ),
        (
            pack({"t": "editor_update", "id": "x", "ws": "class", "update": "text"}),
            ErrorCode.INVALID_FIELD,
        ),
        (
            pack({"t": "editor_update", "id": "x", "ws": "class", "update": b""}),
            ErrorCode.INVALID_FIELD,
        ),
        (pack({"t": "editor_sync", "id": "x", "ws": "learner:"}), ErrorCode.INVALID_FIELD),
        (pack({"t": "editor_sync", "id": "x", "ws": "staff:sam"}), ErrorCode.INVALID_FIELD),
        (
            pack({"t": "editor_presence", "id": "x", "ws": "class", "anchor": -1}),
            ErrorCode.INVALID_FIELD,
        ),
        (
            pack({"t": "editor_share", "id": "x", "learner": "Bad Name", "shared": True}),
            ErrorCode.INVALID_FIELD,
        ),
        (pack({"t": "bye", "id": "x", "when": msgpack.Timestamp(1, 0)}), ErrorCode.LIMIT_EXCEEDED),
        (pack({"t": "bye", "id": "x", "e": msgpack.ExtType(5, b"ab")}), ErrorCode.LIMIT_EXCEEDED),
        (pack({"t": "bye", "id": "x", "a": [[[["deep"]]]]}), ErrorCode.LIMIT_EXCEEDED),
        (pack({"t": "bye", "id": "x", "a": list(range(65))}), ErrorCode.LIMIT_EXCEEDED),
        (pack({str(i): i for i in range(33)}), ErrorCode.LIMIT_EXCEEDED),
        (pack({"t": "bye", "id": "x" * 20000}), ErrorCode.LIMIT_EXCEEDED),
    ],
)
def test_refusals(data: bytes, code: ErrorCode) -> None:
    assert refused(data).code is code


def test_frame_size_limit_comes_first() -> None:
    small = Limits(max_frame_bytes=16)
    err = refused(pack({"t": "chat", "id": "x", "channel": "class", "text": "a" * 20}), small)
    assert err.code is ErrorCode.LIMIT_EXCEEDED
    assert "max_frame_bytes=16" in err.detail


def test_text_length_limit_counts_code_points() -> None:
    ok = pack({"t": "chat", "id": "x", "channel": "class", "text": "é" * L.max_text_chars})
    assert isinstance(wire.decode_client(ok, L), Chat)
    too_long = pack(
        {"t": "chat", "id": "x", "channel": "class", "text": "é" * (L.max_text_chars + 1)}
    )
    assert refused(too_long).code is ErrorCode.LIMIT_EXCEEDED


def test_invalid_utf8_is_refused() -> None:
    data = b"\x83\xa1t\xa3bye\xa2id\xa1x\xa1s\xa2\xff\xfe"
    assert refused(data).code is ErrorCode.INVALID_FIELD


def test_schema_errors_carry_the_message_id() -> None:
    err = refused(pack({"t": "chat", "id": "m-7", "channel": "nope", "text": "a"}))
    assert err.ref == "m-7"
    assert refused(pack({"t": "teleport", "id": "m-8"})).ref == "m-8"


def test_a_flood_of_empty_containers_stays_small() -> None:
    # 64 KiB of empty arrays is refused by the container length limit, not expanded.
    data = b"\xdc" + (65000).to_bytes(2, "big") + b"\x90" * 65000
    assert refused(b"\x81\xa1a" + data).code is ErrorCode.LIMIT_EXCEEDED


def test_error_texts_say_what_why_and_what_to_do() -> None:
    for code in ErrorCode:
        text = code.text("detail")
        assert text.startswith("Refused: ")
        assert "What to do: " in text
        assert ErrorCode.by_number(code.number) is code
        assert ErrorCode.by_slug(code.slug) is code


def test_every_error_code_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
    for code in ErrorCode:
        assert f"| {code.number} | `{code.slug}` |" in doc, code


def test_every_limit_is_documented() -> None:
    from dataclasses import fields
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
    for f in fields(Limits):
        assert f"`{f.name}`" in doc, f.name


def _outcome(decode: Any, data: bytes, limits: Limits) -> tuple[object, ...]:
    try:
        return ("decoded", decode(data, limits))
    except ProtocolError as err:
        return ("refused", err.code, err.detail, err.ref)


def _general(data: bytes, limits: Limits) -> object:
    return wire._decode_client_checked(wire._unpack_map(data, limits), limits)


_MISSING = object()


@pytest.mark.parametrize("limits", [L, Limits(max_id_chars=8, max_text_chars=5)])
def test_the_chat_fast_path_decides_exactly_like_the_general_path(limits: Limits) -> None:
    """``decode_client`` takes a shortcut for plain chat frames: it must accept exactly
    what the general path accepts, build the same value, and leave every refusal (code,
    reason and ref) to the general path."""
    ids = [_MISSING, None, "m-1", "abcdefghi", "has space", "", "x" * 65, "m\n", 5, ["m"]]
    channels = [_MISSING, None, "class", "direct", "shout", "CLASS", 1, ["class"], {"a": 1}]
    texts = [
        _MISSING, None, "hi", "hello", "hello!", "   ", "a\x00b", "a\x1bb", "a\x85b",
        "tab\tand\nnew line", "é" * 4001, 7, ["x"],
    ]  # fmt: skip
    tos = [_MISSING, None, "learner:l1001", "nobody", "learner:L1", "x" * 80, 3, "learner:a\x01"]
    extras: list[dict[str, object]] = [{}, {"extra": 1}, {"x": [[[[1]]]]}, {"t2": "a\x00"}]
    fast = 0
    for msg_id in ids:
        for channel in channels:
            for text in texts:
                for to in tos:
                    for extra in extras:
                        m: dict[str, object] = {"t": "chat"}
                        for key, value in (
                            ("id", msg_id), ("channel", channel), ("text", text), ("to", to)
                        ):  # fmt: skip
                            if value is not _MISSING:
                                m[key] = value
                        m.update(extra)
                        data = pack(m)
                        got = _outcome(wire.decode_client, data, limits)
                        assert got == _outcome(_general, data, limits), m
                        fast += got[0] == "decoded"
    assert fast > 0


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        ({"t": "review", "id": "r", "hold": "py101.h1-a", "approve": False}, "reason is required"),
        ({"t": "review", "id": "r", "hold": "../../etc", "approve": True}, "hold id"),
        ({"t": "review", "id": "r", "hold": "py101.h1-a", "approve": "yes"}, "approve"),
        ({"t": "review_list", "id": "r", "session": "py101"}, "unknown field"),
    ],
)
def test_review_frames_are_checked(frame: dict[str, Any], needle: str) -> None:
    err = refused(pack(frame))
    assert err.code is ErrorCode.INVALID_FIELD
    assert needle in err.detail
    assert err.ref == "r"


def test_acks_say_what_their_status_needs() -> None:
    with pytest.raises(ValueError, match="redacted text"):
        Ack(ref="a", status=AckStatus.REDACTED, seq=1, text="why")
    with pytest.raises(ValueError, match="names the hold"):
        Ack(ref="a", status=AckStatus.HELD, text="why")
    with pytest.raises(ValueError, match="approver"):
        ChatEvent(
            seq=1,
            id="a",
            sender="learner:l1",
            channel=Channel.CLASS,
            text="x",
            time=1.0,
            approved_by="staff:sam",
        )


@pytest.mark.parametrize(
    "frame",
    [
        {"t": "editor_update", "id": "u1", "ws": "class", "update": b"\x00\x00"},
        {"t": "editor_update", "id": "u2", "ws": "learner:l1001", "update": b"\x01" * 100},
        {"t": "editor_update", "id": "u3", "ws": "learner:", "update": b"\x00"},
        {"t": "editor_update", "id": "u4", "ws": "staff:sam", "update": b"\x00"},
        {"t": "editor_update", "id": "u5", "ws": "class", "update": b""},
        {"t": "editor_update", "id": "bad id!", "ws": "class", "update": b"\x00"},
        {"t": "editor_update", "id": "u6", "ws": "class", "update": "text"},
        {"t": "editor_update", "id": "u7", "ws": 5, "update": b"\x00"},
        {"t": "editor_update", "id": "u8", "ws": "class", "update": b"\x00", "x": 1},
        {"t": "editor_update", "id": "u9", "ws": "class"},
    ],
)
def test_the_keystroke_fast_path_decides_like_the_general_path(frame: dict[str, Any]) -> None:
    """``editor_update`` is decoded by a one-pass fast path; it must accept exactly what
    the general path accepts, build the same value, and leave refusals to it."""
    data = pack(frame)
    try:
        general: object = wire._decode_client_checked(wire._unpack_map(data, L), L)
    except ProtocolError as err:
        general = (err.code, err.detail, err.ref)
    try:
        fast: object = wire.decode_client(data, L)
    except ProtocolError as err:
        fast = (err.code, err.detail, err.ref)
    assert fast == general
