"""The wire codec of ``classroom-relay.v1``: bytes <-> typed messages. Pure, no I/O.

Each binary WebSocket frame carries exactly one msgpack map (the envelope) whose ``t``
key names the message type. Untrusted input is unpacked once, with the explicit
limits of :class:`relay.limits.Limits`; ext types (including timestamps) are refused;
strings must be valid UTF-8 without control characters; then the map is checked
against the type's schema and turned into a frozen dataclass.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

import msgpack

from relay.errors import ErrorCode, ProtocolError
from relay.identity import ParticipantRole, valid_name
from relay.limits import Limits
from relay.messages import (
    CLIENT_TYPES,
    FORBIDDEN_CONTROLS,
    MAX_SDP_CHARS,
    Ack,
    AckStatus,
    AlertNotice,
    Bye,
    Channel,
    Chat,
    ChatEvent,
    ClientMessage,
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
    ServerMessage,
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

SUBPROTOCOL = "classroom-relay.v1"
PROTOCOL_VERSION = 1

MESSAGE_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

E = TypeVar("E")


def _refuse(code: ErrorCode, detail: str) -> NoReturn:
    raise ProtocolError(code, detail)


def _no_ext(code: int, data: bytes) -> NoReturn:
    _refuse(ErrorCode.LIMIT_EXCEEDED, f"msgpack ext type {code} is not allowed")


def unpack_frame(data: bytes, limits: Limits) -> dict[str, Any]:
    """Unpack one frame into a checked map, within limits. Raises :class:`ProtocolError`."""
    obj = _unpack_map(data, limits)
    _check_tree(obj, limits, 1)
    return obj


def _unpack_map(data: bytes, limits: Limits) -> dict[str, Any]:
    """msgpack-level unpacking with the container and size limits; no content checks."""
    if len(data) > limits.max_frame_bytes:
        _refuse(
            ErrorCode.LIMIT_EXCEEDED,
            f"frame of {len(data)} bytes exceeds max_frame_bytes={limits.max_frame_bytes}",
        )
    if not data:
        _refuse(ErrorCode.MALFORMED, "empty frame")
    first = data[0]
    if not (0x80 <= first <= 0x8F or first in (0xDE, 0xDF)):
        _refuse(ErrorCode.MALFORMED, "the envelope must be a msgpack map")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=limits.max_str_bytes,
            max_bin_len=limits.max_bin_bytes,
            max_array_len=limits.max_array_len,
            max_map_len=limits.max_map_len,
            max_ext_len=0,
            ext_hook=_no_ext,
        )
    except ProtocolError:
        raise
    except msgpack.ExtraData:
        _refuse(ErrorCode.MALFORMED, "more than one msgpack object in the frame")
    except UnicodeDecodeError:
        _refuse(ErrorCode.INVALID_FIELD, "a string is not valid UTF-8")
    except ValueError as exc:
        # msgpack reports exceeded limits and truncated input as ValueError.
        text = str(exc)
        if "exceeds max" in text or "_len" in text:
            _refuse(ErrorCode.LIMIT_EXCEEDED, text)
        _refuse(ErrorCode.MALFORMED, text or "invalid msgpack")
    except Exception as exc:  # msgpack raises several types for corrupt input
        _refuse(ErrorCode.MALFORMED, f"invalid msgpack ({type(exc).__name__})")
    if not isinstance(obj, dict):
        _refuse(ErrorCode.MALFORMED, "the envelope must be a msgpack map")
    return obj


def _check_tree(obj: object, limits: Limits, depth: int) -> None:
    if depth > limits.max_depth:
        _refuse(ErrorCode.LIMIT_EXCEEDED, f"nesting deeper than max_depth={limits.max_depth}")
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                _refuse(ErrorCode.INVALID_FIELD, "map keys must be strings")
            _check_tree(value, limits, depth + 1)
    elif isinstance(obj, list):
        for item in obj:
            _check_tree(item, limits, depth + 1)
    elif isinstance(obj, str):
        if FORBIDDEN_CONTROLS.search(obj):
            _refuse(ErrorCode.INVALID_FIELD, "strings must not contain control characters")
    elif obj is None or isinstance(obj, bool | int | float | bytes):
        return
    else:
        _refuse(ErrorCode.INVALID_FIELD, f"values of type {type(obj).__name__} are not allowed")


class _Reader:
    """Typed field access over an unpacked map, refusing with a precise reason."""

    def __init__(self, m: Mapping[str, Any], kind: str, limits: Limits, allowed: set[str]):
        self.m = m
        self.kind = kind
        self.limits = limits
        extra = set(m) - allowed - {"t"}
        if extra:
            _refuse(
                ErrorCode.INVALID_FIELD,
                f"'{kind}' has unknown field(s) {', '.join(sorted(extra))}",
            )

    def _missing(self, key: str) -> NoReturn:
        _refuse(ErrorCode.INVALID_FIELD, f"'{self.kind}' needs field '{key}'")

    def _wrong(self, key: str, want: str) -> NoReturn:
        _refuse(ErrorCode.INVALID_FIELD, f"'{self.kind}.{key}' must be {want}")

    def str_(self, key: str, *, max_chars: int, required: bool = True) -> str | None:
        if key not in self.m or self.m[key] is None:
            if required:
                self._missing(key)
            return None
        value = self.m[key]
        if not isinstance(value, str):
            self._wrong(key, "a string")
        if len(value) > max_chars:
            _refuse(
                ErrorCode.LIMIT_EXCEEDED,
                f"'{self.kind}.{key}' is {len(value)} characters; the limit is {max_chars}",
            )
        return value

    def req_str(self, key: str, max_chars: int) -> str:
        value = self.str_(key, max_chars=max_chars)
        assert value is not None
        return value

    def msg_id(self, key: str = "id") -> str:
        value = self.req_str(key, self.limits.max_id_chars)
        if not MESSAGE_ID_PATTERN.match(value):
            self._wrong(key, "1-64 characters from A-Z a-z 0-9 . _ : -")
        return value

    def name(self, key: str, *, required: bool = True) -> str | None:
        value = self.str_(key, max_chars=self.limits.max_id_chars, required=required)
        if value is not None and not valid_name(value):
            self._wrong(key, "a lower-case name (letters, digits, '.', '_', '-')")
        return value

    def int_(self, key: str, *, required: bool = True, default: int = 0) -> int:
        if key not in self.m or self.m[key] is None:
            if required:
                self._missing(key)
            return default
        value = self.m[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self._wrong(key, "an integer")
        if not 0 <= value < 2**63:
            self._wrong(key, "a non-negative 64-bit integer")
        return value

    def opt_int(self, key: str) -> int | None:
        if key not in self.m or self.m[key] is None:
            return None
        return self.int_(key)

    def float_(self, key: str) -> float:
        if key not in self.m:
            self._missing(key)
        value = self.m[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._wrong(key, "a number")
        result = float(value)
        if not math.isfinite(result):
            self._wrong(key, "a finite number")
        return result

    def bool_(self, key: str) -> bool:
        if key not in self.m:
            self._missing(key)
        value = self.m[key]
        if not isinstance(value, bool):
            self._wrong(key, "true or false")
        return value

    def enum_(self, key: str, enum_type: type[E]) -> E:
        raw = self.req_str(key, 32)
        try:
            return enum_type(raw)  # type: ignore[call-arg]
        except ValueError:
            values = ", ".join(repr(e.value) for e in enum_type)  # type: ignore[attr-defined]
            self._wrong(key, f"one of {values}")

    def map_(self, key: str) -> Mapping[str, Any]:
        if key not in self.m:
            self._missing(key)
        value = self.m[key]
        if not isinstance(value, dict):
            self._wrong(key, "a map")
        return value

    def bin_(self, key: str, *, required: bool = True) -> bytes | None:
        if key not in self.m:
            if required:
                self._missing(key)
            return None
        value = self.m[key]
        if not isinstance(value, bytes):
            self._wrong(key, "binary (msgpack bin)")
        return value

    def list_(self, key: str) -> list[Any]:
        if key not in self.m:
            self._missing(key)
        value = self.m[key]
        if not isinstance(value, list):
            self._wrong(key, "an array")
        return value


def _build(kind: str, factory: Callable[[], E]) -> E:
    try:
        return factory()
    except ValueError as exc:
        _refuse(ErrorCode.INVALID_FIELD, f"'{kind}': {exc}")


def _type_of(m: Mapping[str, Any]) -> str:
    t = m.get("t")
    if not isinstance(t, str):
        _refuse(ErrorCode.INVALID_FIELD, "the envelope needs a string field 't' (message type)")
    return t


# ---------------------------------------------------------------------------------------
# client -> relay
# ---------------------------------------------------------------------------------------


def decode_client(data: bytes, limits: Limits) -> ClientMessage:
    """Decode one frame a client sent. Raises :class:`ProtocolError`.

    When the frame unpacks but fails its schema, the error's ``ref`` carries the frame's
    message id (if it has a well-formed one) so the sender can match the refusal.
    """
    m = _unpack_map(data, limits)
    t = m.get("t")
    if t == "chat":
        chat = _plain_chat(m, limits)
        if chat is not None:
            return chat
    elif t == "editor_update":
        update = _plain_editor_update(m, limits)
        if update is not None:
            return update
    return _decode_client_checked(m, limits)


def _decode_client_checked(m: dict[str, Any], limits: Limits) -> ClientMessage:
    """The general path: tree check, then the type's schema, refusing with a reason."""
    try:
        _check_tree(m, limits, 1)
        return _decode_client_map(m, limits)
    except ProtocolError as err:
        ref = m.get("id")
        if isinstance(ref, str) and MESSAGE_ID_PATTERN.match(ref):
            err.ref = ref
        raise


_CHAT_FIELDS = frozenset({"t", "id", "channel", "text", "to"})
_CHANNELS = {c.value: c for c in Channel}


def _plain_chat(m: dict[str, Any], limits: Limits) -> Chat | None:
    """The common chat frame, checked in one pass; None: leave it to the general path.

    Chat is nearly all of the traffic. This accepts a map only when every check of the
    general path (:func:`_check_tree`, the ``chat`` schema of :func:`_decode_client_map`,
    ``Chat.__post_init__``) would pass, and builds the same value; anything else, valid
    or not, goes the general way, so refusals and their reasons are those of the
    general path. The strings need no separate control-character scan: ``id`` matches
    :data:`MESSAGE_ID_PATTERN`, ``channel`` is one of two words, ``to`` is checked as a
    participant id and ``text`` by ``Chat`` itself, none of which admit them.
    """
    if not m.keys() <= _CHAT_FIELDS:
        return None
    msg_id = m.get("id")
    word = m.get("channel")
    channel = _CHANNELS.get(word) if type(word) is str else None
    text = m.get("text")
    to = m.get("to")
    if (
        channel is None
        or type(msg_id) is not str
        or len(msg_id) > limits.max_id_chars
        or not MESSAGE_ID_PATTERN.match(msg_id)
        or type(text) is not str
        or len(text) > limits.max_text_chars
        or not (to is None or (type(to) is str and len(to) <= limits.max_id_chars + 12))
    ):
        return None
    try:
        return Chat(id=msg_id, channel=channel, to=to, text=text)
    except ValueError:
        return None


_EDITOR_UPDATE_FIELDS = frozenset({"t", "id", "ws", "update"})


def _plain_editor_update(m: dict[str, Any], limits: Limits) -> EditorUpdate | None:
    """The keystroke frame, checked in one pass (like :func:`_plain_chat`); None: leave
    it to the general path, whose refusals and reasons then apply."""
    if not m.keys() <= _EDITOR_UPDATE_FIELDS:
        return None
    msg_id, ws, update = m.get("id"), m.get("ws"), m.get("update")
    if (
        type(msg_id) is not str
        or len(msg_id) > limits.max_id_chars
        or not MESSAGE_ID_PATTERN.match(msg_id)
        or type(ws) is not str
        or len(ws) > limits.max_id_chars + 12
        or type(update) is not bytes
    ):
        return None
    try:
        return EditorUpdate(id=msg_id, ws=ws, update=update)
    except ValueError:
        return None


def _decode_client_map(m: dict[str, Any], limits: Limits) -> ClientMessage:
    kind = _type_of(m)
    if kind not in CLIENT_TYPES:
        _refuse(ErrorCode.UNKNOWN_TYPE, f"message type {kind[:40]!r} is unknown")
    L = limits
    if kind == "hello":
        r = _Reader(m, kind, L, {"id", "session", "learner", "pin", "resume_after", "client"})
        return _build(
            kind,
            lambda: Hello(
                id=r.msg_id(),
                session=r.name("session") or "",
                learner=r.name("learner", required=False),
                pin=r.str_("pin", max_chars=64, required=False),
                resume_after=r.int_("resume_after", required=False),
                client=r.str_("client", max_chars=100, required=False) or "",
            ),
        )
    if kind == "chat":
        r = _Reader(m, kind, L, {"id", "channel", "to", "text"})
        return _build(
            kind,
            lambda: Chat(
                id=r.msg_id(),
                channel=r.enum_("channel", Channel),
                to=r.str_("to", max_chars=L.max_id_chars + 12, required=False),
                text=r.req_str("text", L.max_text_chars),
            ),
        )
    if kind == "hand":
        r = _Reader(m, kind, L, {"id", "raised", "who"})
        return _build(
            kind,
            lambda: Hand(
                id=r.msg_id(),
                raised=r.bool_("raised"),
                who=r.str_("who", max_chars=L.max_id_chars + 12, required=False),
            ),
        )
    if kind == "end_session":
        r = _Reader(m, kind, L, {"id", "reason"})
        return _build(
            kind,
            lambda: EndSession(id=r.msg_id(), reason=r.req_str("reason", L.max_reason_chars)),
        )
    if kind == "review":
        r = _Reader(m, kind, L, {"id", "hold", "approve", "reason"})
        return _build(
            kind,
            lambda: Review(
                id=r.msg_id(),
                hold=r.req_str("hold", 100),
                approve=r.bool_("approve"),
                reason=r.str_("reason", max_chars=L.max_reason_chars, required=False) or "",
            ),
        )
    if kind.startswith("editor_"):
        return _decode_editor(m, kind, L)
    if kind.startswith("share_"):
        return _decode_share(m, kind, L)
    r = _Reader(m, kind, L, {"id"})
    if kind == "review_list":
        return _build(kind, lambda: ReviewList(id=r.msg_id()))
    return _build(kind, lambda: Bye(id=r.msg_id()))


_FILE_NAME_CHARS = 200
"""Longest file name the wire accepts (the editor's own limit may be lower)."""


def _decode_editor(m: dict[str, Any], kind: str, L: Limits) -> ClientMessage:
    if kind == "editor_sync":
        r = _Reader(m, kind, L, {"id", "ws", "sv"})
        return _build(
            kind,
            lambda: EditorSync(
                id=r.msg_id(), ws=r.req_str("ws", L.max_id_chars + 12), sv=r.bin_("sv") or b""
            ),
        )
    if kind == "editor_update":
        r = _Reader(m, kind, L, {"id", "ws", "update"})
        return _build(
            kind,
            lambda: EditorUpdate(
                id=r.msg_id(),
                ws=r.req_str("ws", L.max_id_chars + 12),
                update=r.bin_("update") or b"",
            ),
        )
    if kind == "editor_presence":
        r = _Reader(m, kind, L, {"id", "ws", "file", "anchor", "head"})
        return _build(
            kind,
            lambda: EditorPresence(
                id=r.msg_id(),
                ws=r.req_str("ws", L.max_id_chars + 12),
                file=r.str_("file", max_chars=_FILE_NAME_CHARS, required=False),
                anchor=r.int_("anchor", required=False),
                head=r.int_("head", required=False),
            ),
        )
    if kind == "editor_lecture":
        r = _Reader(m, kind, L, {"id", "on"})
        return _build(kind, lambda: EditorLecture(id=r.msg_id(), on=r.bool_("on")))
    r = _Reader(m, kind, L, {"id", "learner", "shared"})
    return _build(
        kind,
        lambda: EditorShare(
            id=r.msg_id(), learner=r.name("learner") or "", shared=r.bool_("shared")
        ),
    )


def _decode_share(m: dict[str, Any], kind: str, L: Limits) -> ClientMessage:
    if kind == "share_start":
        r = _Reader(m, kind, L, {"id", "sdp"})
        return _build(kind, lambda: ShareStart(id=r.msg_id(), sdp=r.req_str("sdp", MAX_SDP_CHARS)))
    if kind == "share_watch":
        r = _Reader(m, kind, L, {"id", "share", "sdp"})
        return _build(
            kind,
            lambda: ShareWatch(
                id=r.msg_id(), share=r.req_str("share", 100), sdp=r.req_str("sdp", MAX_SDP_CHARS)
            ),
        )
    if kind == "share_stop":
        r = _Reader(m, kind, L, {"id", "share", "reason"})
        return _build(
            kind,
            lambda: ShareStop(
                id=r.msg_id(),
                share=r.req_str("share", 100),
                reason=r.str_("reason", max_chars=L.max_reason_chars, required=False) or "",
            ),
        )
    r = _Reader(m, kind, L, {"id", "learner"})
    return _build(kind, lambda: ShareAsk(id=r.msg_id(), learner=r.name("learner") or ""))


def _share_client_map(msg: ClientMessage) -> dict[str, Any] | None:
    if isinstance(msg, ShareStart):
        return {"t": "share_start", "id": msg.id, "sdp": msg.sdp}
    if isinstance(msg, ShareWatch):
        return {"t": "share_watch", "id": msg.id, "share": msg.share, "sdp": msg.sdp}
    if isinstance(msg, ShareStop):
        out: dict[str, Any] = {"t": "share_stop", "id": msg.id, "share": msg.share}
        if msg.reason:
            out["reason"] = msg.reason
        return out
    if isinstance(msg, ShareAsk):
        return {"t": "share_ask", "id": msg.id, "learner": msg.learner}
    return None


def _editor_client_map(msg: ClientMessage) -> dict[str, Any] | None:
    if isinstance(msg, EditorUpdate):
        return {"t": "editor_update", "id": msg.id, "ws": msg.ws, "update": msg.update}
    if isinstance(msg, EditorSync):
        return {"t": "editor_sync", "id": msg.id, "ws": msg.ws, "sv": msg.sv}
    if isinstance(msg, EditorPresence):
        out: dict[str, Any] = {"t": "editor_presence", "id": msg.id, "ws": msg.ws}
        if msg.file is not None:
            out.update(file=msg.file, anchor=msg.anchor, head=msg.head)
        return out
    if isinstance(msg, EditorLecture):
        return {"t": "editor_lecture", "id": msg.id, "on": msg.on}
    if isinstance(msg, EditorShare):
        return {"t": "editor_share", "id": msg.id, "learner": msg.learner, "shared": msg.shared}
    return None


def client_to_map(msg: ClientMessage) -> dict[str, Any]:
    editor = _editor_client_map(msg) or _share_client_map(msg)
    if editor is not None:
        return editor
    if isinstance(msg, Hello):
        out: dict[str, Any] = {"t": "hello", "id": msg.id, "session": msg.session}
        if msg.learner is not None:
            out["learner"] = msg.learner
            out["pin"] = msg.pin
        if msg.resume_after:
            out["resume_after"] = msg.resume_after
        if msg.client:
            out["client"] = msg.client
        return out
    if isinstance(msg, Chat):
        out = {"t": "chat", "id": msg.id, "channel": msg.channel.value, "text": msg.text}
        if msg.to is not None:
            out["to"] = msg.to
        return out
    if isinstance(msg, Hand):
        out = {"t": "hand", "id": msg.id, "raised": msg.raised}
        if msg.who is not None:
            out["who"] = msg.who
        return out
    if isinstance(msg, EndSession):
        return {"t": "end_session", "id": msg.id, "reason": msg.reason}
    if isinstance(msg, Review):
        out = {"t": "review", "id": msg.id, "hold": msg.hold, "approve": msg.approve}
        if msg.reason:
            out["reason"] = msg.reason
        return out
    if isinstance(msg, ReviewList):
        return {"t": "review_list", "id": msg.id}
    return {"t": "bye", "id": msg.id}


def encode_client(msg: ClientMessage) -> bytes:
    return pack(client_to_map(msg))


# ---------------------------------------------------------------------------------------
# relay -> client
# ---------------------------------------------------------------------------------------


def _participant_map(p: ParticipantInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"pid": p.pid, "role": p.role.value, "name": p.name}
    if p.machine is not None:
        out["machine"] = p.machine
    return out


def server_to_map(msg: ServerMessage) -> dict[str, Any]:
    if isinstance(msg, EditorUpdateEvent):
        out: dict[str, Any] = {
            "t": "editor_update",
            "ws": msg.ws,
            "update": msg.update,
            "by": msg.by,
            "time": msg.time,
        }
        if msg.ref is not None:
            out["ref"] = msg.ref
        return out
    if isinstance(msg, EditorPresenceEvent):
        out = {"t": "editor_presence", "ws": msg.ws, "who": msg.who, "time": msg.time}
        if msg.file is not None:
            out.update(file=msg.file, anchor=msg.anchor, head=msg.head)
        return out
    if isinstance(msg, EditorState):
        return {
            "t": "editor_state",
            "ref": msg.ref,
            "ws": msg.ws,
            "update": msg.update,
            "sv": msg.sv,
        }
    if isinstance(msg, ShareAnswer):
        return {"t": "share_answer", "ref": msg.ref, "share": msg.share, "sdp": msg.sdp}
    if isinstance(msg, ShareStarted):
        return {
            "t": "share_started",
            "share": msg.share,
            "by": msg.by,
            "time": msg.time,
            "width": msg.width,
            "height": msg.height,
        }
    if isinstance(msg, ShareStopped):
        return {
            "t": "share_stopped",
            "share": msg.share,
            "by": msg.by,
            "reason": msg.reason,
            "time": msg.time,
        }
    if isinstance(msg, ShareAsked):
        return {"t": "share_asked", "by": msg.by, "time": msg.time, "until": msg.until}
    if isinstance(msg, EditorModeEvent):
        return {
            "t": "editor_mode",
            "lecture": msg.lecture,
            "shared": list(msg.shared),
            "by": msg.by,
            "time": msg.time,
        }
    if isinstance(msg, ChatEvent):
        out = {
            "t": "chat",
            "seq": msg.seq,
            "id": msg.id,
            "from": msg.sender,
            "channel": msg.channel._value_,  # ``.value`` is a slower property
            "text": msg.text,
            "time": msg.time,
        }
        if msg.to is not None:
            out["to"] = msg.to
        if msg.approved_by is not None:
            out["approved_by"] = msg.approved_by
            out["sent"] = msg.sent
        return out
    if isinstance(msg, Ack):
        out = {"t": "ack", "ref": msg.ref, "status": msg.status._value_}
        if msg.seq is not None:
            out["seq"] = msg.seq
        if msg.code is not None:
            out["code"] = msg.code
        if msg.error is not None:
            out["error"] = msg.error
        if msg.text is not None:
            out["text"] = msg.text
        if msg.time is not None:
            out["time"] = msg.time
        if msg.redacted is not None:
            out["redacted"] = msg.redacted
        if msg.hold is not None:
            out["hold"] = msg.hold
        return out
    if isinstance(msg, PresenceChange):
        return {
            "t": "presence",
            "seq": msg.seq,
            "event": msg.event.value,
            "who": _participant_map(msg.who),
            "time": msg.time,
        }
    if isinstance(msg, HandEvent):
        return {"t": "hand", "seq": msg.seq, "who": msg.who, "raised": msg.raised, "time": msg.time}
    if isinstance(msg, Welcome):
        s = msg.session
        return {
            "t": "welcome",
            "version": PROTOCOL_VERSION,
            "session": {"id": s.id, "title": s.title, "start": s.start, "end": s.end},
            "you": _participant_map(msg.you),
            "roster": [_participant_map(p) for p in msg.roster],
            "hands": list(msg.hands),
            "last_seq": msg.last_seq,
            "replay": msg.replay,
        }
    if isinstance(msg, ErrorFrame):
        out = {"t": "error", "code": msg.code, "error": msg.error, "text": msg.text}
        if msg.ref is not None:
            out["ref"] = msg.ref
        return out
    if isinstance(msg, HeldNotice):
        return {"t": "held", **_held_map(msg.held)}
    if isinstance(msg, Holds):
        return {"t": "holds", "ref": msg.ref, "holds": [_held_map(h) for h in msg.holds]}
    if isinstance(msg, Reviewed):
        out = {
            "t": "reviewed",
            "hold": msg.hold,
            "ref": msg.ref,
            "outcome": msg.outcome.value,
            "by": msg.by,
            "reason": msg.reason,
            "time": msg.time,
        }
        if msg.seq is not None:
            out["seq"] = msg.seq
        return out
    if isinstance(msg, AlertNotice):
        return {
            "t": "alert",
            "ref": msg.ref,
            "seq": msg.seq,
            "from": msg.sender,
            "rule": msg.rule,
            "reason": msg.reason,
            "categories": list(msg.categories),
            "time": msg.time,
        }
    return {"t": "session_ended", "reason": msg.reason, "by": msg.by, "time": msg.time}


def _held_map(h: HeldInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "hold": h.hold,
        "ref": h.ref,
        "from": h.sender,
        "channel": h.channel.value,
        "text": h.text,
        "time": h.time,
        "expires": h.expires,
        "rule": h.rule,
        "reason": h.reason,
        "categories": list(h.categories),
    }
    if h.to is not None:
        out["to"] = h.to
    return out


_packer = msgpack.Packer(use_bin_type=True)
"""Reused: ``msgpack.packb`` builds a Packer per call. ``pack`` runs in C without
releasing the GIL and resets the buffer after each object, so sharing it is safe."""


def pack(m: Mapping[str, Any]) -> bytes:
    data: bytes = _packer.pack(m)
    return data


def encode_server(msg: ServerMessage) -> bytes:
    return pack(server_to_map(msg))


CLIENT_SIDE_LIMITS = Limits(
    max_frame_bytes=8 * 1024 * 1024,
    max_array_len=100_000,
    max_map_len=64,
    max_depth=5,
    max_str_bytes=65_536,
    max_text_chars=65_536,
    max_bin_bytes=8 * 1024 * 1024,
)
"""Limits a client applies to what the relay sends (a welcome can list a big roster; a
``holds`` answer nests one level deeper than anything a client may send)."""


def _participant(m: Any, limits: Limits) -> ParticipantInfo:
    if not isinstance(m, dict):
        _refuse(ErrorCode.INVALID_FIELD, "a participant must be a map")
    r = _Reader(m, "participant", limits, {"pid", "role", "name", "machine"})
    return _build(
        "participant",
        lambda: ParticipantInfo(
            pid=r.req_str("pid", 80),
            role=r.enum_("role", ParticipantRole),
            name=r.name("name") or "",
            machine=r.name("machine", required=False),
        ),
    )


def _strs(items: list[Any], where: str) -> tuple[str, ...]:
    if not all(isinstance(i, str) for i in items):
        _refuse(ErrorCode.INVALID_FIELD, f"'{where}' must list strings")
    return tuple(items)


def _held(m: Any, kind: str, limits: Limits) -> HeldInfo:
    if not isinstance(m, dict):
        _refuse(ErrorCode.INVALID_FIELD, f"'{kind}' must be a map")
    keys = {"t", "hold", "ref", "from", "channel", "to", "text", "time", "expires", "rule"}
    r = _Reader(m, kind, limits, keys | {"reason", "categories"})
    return _build(
        kind,
        lambda: HeldInfo(
            hold=r.req_str("hold", 100),
            ref=r.msg_id("ref"),
            sender=r.req_str("from", 80),
            channel=r.enum_("channel", Channel),
            to=r.str_("to", max_chars=80, required=False),
            text=r.req_str("text", limits.max_text_chars),
            time=r.float_("time"),
            expires=r.float_("expires"),
            rule=r.req_str("rule", 100),
            reason=r.req_str("reason", 2000),
            categories=_strs(r.list_("categories"), f"{kind}.categories"),
        ),
    )


def decode_server(data: bytes, limits: Limits = CLIENT_SIDE_LIMITS) -> ServerMessage:
    """Decode one frame the relay sent (used by clients). Raises :class:`ProtocolError`."""
    m = unpack_frame(data, limits)
    kind = _type_of(m)
    L = limits
    if kind == "chat":
        r = _Reader(
            m,
            kind,
            L,
            {"seq", "id", "from", "channel", "to", "text", "time", "approved_by", "sent"},
        )
        return _build(
            kind,
            lambda: ChatEvent(
                seq=r.int_("seq"),
                id=r.msg_id(),
                sender=r.req_str("from", 80),
                channel=r.enum_("channel", Channel),
                to=r.str_("to", max_chars=80, required=False),
                text=r.req_str("text", L.max_text_chars),
                time=r.float_("time"),
                approved_by=r.str_("approved_by", max_chars=80, required=False),
                sent=r.float_("sent") if "sent" in m else None,
            ),
        )
    if kind == "ack":
        r = _Reader(
            m,
            kind,
            L,
            {"ref", "status", "seq", "code", "error", "text", "time", "redacted", "hold"},
        )
        return _build(
            kind,
            lambda: Ack(
                ref=r.msg_id("ref"),
                status=r.enum_("status", AckStatus),
                seq=r.opt_int("seq"),
                code=r.opt_int("code"),
                error=r.str_("error", max_chars=64, required=False),
                text=r.str_("text", max_chars=2000, required=False),
                time=r.float_("time") if "time" in m else None,
                redacted=r.str_("redacted", max_chars=L.max_text_chars, required=False),
                hold=r.str_("hold", max_chars=100, required=False),
            ),
        )
    if kind == "presence":
        r = _Reader(m, kind, L, {"seq", "event", "who", "time"})
        return _build(
            kind,
            lambda: PresenceChange(
                seq=r.int_("seq"),
                event=r.enum_("event", PresenceEvent),
                who=_participant(r.map_("who"), L),
                time=r.float_("time"),
            ),
        )
    if kind == "hand":
        r = _Reader(m, kind, L, {"seq", "who", "raised", "time"})
        return _build(
            kind,
            lambda: HandEvent(
                seq=r.int_("seq"),
                who=r.req_str("who", 80),
                raised=r.bool_("raised"),
                time=r.float_("time"),
            ),
        )
    if kind == "welcome":
        r = _Reader(
            m, kind, L, {"version", "session", "you", "roster", "hands", "last_seq", "replay"}
        )

        def welcome() -> Welcome:
            sm = r.map_("session")
            sr = _Reader(sm, "welcome.session", L, {"id", "title", "start", "end"})
            hands = r.list_("hands")
            if not all(isinstance(h, str) for h in hands):
                _refuse(ErrorCode.INVALID_FIELD, "'welcome.hands' must list participant ids")
            return Welcome(
                session=SessionInfo(
                    id=sr.name("id") or "",
                    title=sr.req_str("title", 200),
                    start=sr.float_("start"),
                    end=sr.float_("end"),
                ),
                you=_participant(r.map_("you"), L),
                roster=tuple(_participant(p, L) for p in r.list_("roster")),
                hands=tuple(hands),
                last_seq=r.int_("last_seq"),
                replay=r.int_("replay"),
            )

        return _build(kind, welcome)
    if kind == "error":
        r = _Reader(m, kind, L, {"code", "error", "text", "ref"})
        return _build(
            kind,
            lambda: ErrorFrame(
                code=r.int_("code"),
                error=r.req_str("error", 64),
                text=r.req_str("text", 2000),
                ref=r.str_("ref", max_chars=64, required=False),
            ),
        )
    if kind == "held":
        return _build(kind, lambda: HeldNotice(held=_held(m, kind, L)))
    if kind == "holds":
        r = _Reader(m, kind, L, {"ref", "holds"})
        return _build(
            kind,
            lambda: Holds(
                ref=r.msg_id("ref"),
                holds=tuple(_held(h, "holds.hold", L) for h in r.list_("holds")),
            ),
        )
    if kind == "reviewed":
        r = _Reader(m, kind, L, {"hold", "ref", "outcome", "by", "reason", "time", "seq"})
        return _build(
            kind,
            lambda: Reviewed(
                hold=r.req_str("hold", 100),
                ref=r.msg_id("ref"),
                outcome=r.enum_("outcome", ReviewOutcome),
                by=r.req_str("by", 80),
                reason=r.str_("reason", max_chars=2000, required=False) or "",
                time=r.float_("time"),
                seq=r.opt_int("seq"),
            ),
        )
    if kind == "alert":
        r = _Reader(m, kind, L, {"ref", "seq", "from", "rule", "reason", "categories", "time"})
        return _build(
            kind,
            lambda: AlertNotice(
                ref=r.msg_id("ref"),
                seq=r.int_("seq"),
                sender=r.req_str("from", 80),
                rule=r.req_str("rule", 100),
                reason=r.req_str("reason", 2000),
                categories=_strs(r.list_("categories"), "alert.categories"),
                time=r.float_("time"),
            ),
        )
    if kind.startswith("editor_"):
        return _decode_editor_server(m, kind, L)
    if kind.startswith("share_"):
        return _decode_share_server(m, kind, L)
    if kind == "session_ended":
        r = _Reader(m, kind, L, {"reason", "by", "time"})
        return _build(
            kind,
            lambda: SessionEnded(
                reason=r.req_str("reason", 2000), by=r.req_str("by", 80), time=r.float_("time")
            ),
        )
    _refuse(ErrorCode.UNKNOWN_TYPE, f"message type {kind[:40]!r} is unknown")


def _decode_editor_server(m: dict[str, Any], kind: str, L: Limits) -> ServerMessage:
    if kind == "editor_update":
        r = _Reader(m, kind, L, {"ws", "update", "by", "time", "ref"})
        return _build(
            kind,
            lambda: EditorUpdateEvent(
                ws=r.req_str("ws", 80),
                update=r.bin_("update") or b"",
                by=r.req_str("by", 80),
                time=r.float_("time"),
                ref=r.str_("ref", max_chars=64, required=False),
            ),
        )
    if kind == "editor_presence":
        r = _Reader(m, kind, L, {"ws", "who", "file", "anchor", "head", "time"})
        return _build(
            kind,
            lambda: EditorPresenceEvent(
                ws=r.req_str("ws", 80),
                who=r.req_str("who", 80),
                file=r.str_("file", max_chars=_FILE_NAME_CHARS, required=False),
                anchor=r.int_("anchor", required=False),
                head=r.int_("head", required=False),
                time=r.float_("time"),
            ),
        )
    if kind == "editor_state":
        r = _Reader(m, kind, L, {"ref", "ws", "update", "sv"})
        return _build(
            kind,
            lambda: EditorState(
                ref=r.msg_id("ref"),
                ws=r.req_str("ws", 80),
                update=r.bin_("update") or b"",
                sv=r.bin_("sv") or b"",
            ),
        )
    if kind == "editor_mode":
        r = _Reader(m, kind, L, {"lecture", "shared", "by", "time"})
        return _build(
            kind,
            lambda: EditorModeEvent(
                lecture=r.bool_("lecture"),
                shared=_strs(r.list_("shared"), "editor_mode.shared"),
                by=r.req_str("by", 80),
                time=r.float_("time"),
            ),
        )
    _refuse(ErrorCode.UNKNOWN_TYPE, f"message type {kind[:40]!r} is unknown")


def _decode_share_server(m: dict[str, Any], kind: str, L: Limits) -> ServerMessage:
    if kind == "share_answer":
        r = _Reader(m, kind, L, {"ref", "share", "sdp"})
        return _build(
            kind,
            lambda: ShareAnswer(
                ref=r.msg_id("ref"), share=r.req_str("share", 100), sdp=r.req_str("sdp", 65_536)
            ),
        )
    if kind == "share_started":
        r = _Reader(m, kind, L, {"share", "by", "time", "width", "height"})
        return _build(
            kind,
            lambda: ShareStarted(
                share=r.req_str("share", 100),
                by=r.req_str("by", 80),
                time=r.float_("time"),
                width=r.int_("width", required=False),
                height=r.int_("height", required=False),
            ),
        )
    if kind == "share_stopped":
        r = _Reader(m, kind, L, {"share", "by", "reason", "time"})
        return _build(
            kind,
            lambda: ShareStopped(
                share=r.req_str("share", 100),
                by=r.req_str("by", 80),
                reason=r.str_("reason", max_chars=2000, required=False) or "",
                time=r.float_("time"),
            ),
        )
    if kind == "share_asked":
        r = _Reader(m, kind, L, {"by", "time", "until"})
        return _build(
            kind,
            lambda: ShareAsked(
                by=r.req_str("by", 80), time=r.float_("time"), until=r.float_("until")
            ),
        )
    _refuse(ErrorCode.UNKNOWN_TYPE, f"message type {kind[:40]!r} is unknown")
