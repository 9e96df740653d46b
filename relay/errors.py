"""The one error tree of classroom-relay.

Every refusal the relay makes has an :class:`ErrorCode`: a number (also used as the
WebSocket close code when the refusal ends the connection), a stable slug, and a
human text that says what was refused, why, and what to do. ``docs/protocol.md``
lists them all; a test keeps that table and this enum in step.

Exceptions raised by the library all derive from :class:`RelayError`. Wire refusals
carry their :class:`ErrorCode`; administrative errors (configuration, enrolment,
schedule) carry a message written for the administrator.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class _CodeInfo:
    number: int
    slug: str
    summary: str
    remedy: str


class ErrorCode(enum.Enum):
    """Refusal codes sent on the wire (``error`` frames, ``ack`` refusals, close codes)."""

    # -- the frame itself ------------------------------------------------------------
    MALFORMED = _CodeInfo(
        4400,
        "malformed",
        "the frame is not a valid msgpack map",
        "send exactly one msgpack map per binary WebSocket frame (see docs/protocol.md)",
    )
    LIMIT_EXCEEDED = _CodeInfo(
        4401,
        "limit_exceeded",
        "the frame exceeds a protocol limit",
        "keep frames, strings and containers within the limits in docs/protocol.md",
    )
    UNKNOWN_TYPE = _CodeInfo(
        4402,
        "unknown_type",
        "the message type is not part of this protocol version",
        "use only the message types listed in docs/protocol.md",
    )
    INVALID_FIELD = _CodeInfo(
        4403,
        "invalid_field",
        "a field is missing, has the wrong type, or holds a forbidden value",
        "check the message against its schema in docs/protocol.md",
    )
    UNSUPPORTED_VERSION = _CodeInfo(
        4404,
        "unsupported_version",
        "the client did not offer a protocol version this relay speaks",
        "offer the WebSocket subprotocol 'classroom-relay.v1'",
    )
    OUT_OF_ORDER = _CodeInfo(
        4405,
        "out_of_order",
        "the message is not allowed at this point of the conversation",
        "send 'hello' first and only once per connection",
    )
    TEXT_FRAME = _CodeInfo(
        4406,
        "text_frame",
        "text frames are not accepted",
        "send binary frames carrying msgpack",
    )
    # -- who you are -----------------------------------------------------------------
    NO_CERTIFICATE = _CodeInfo(
        4410,
        "no_certificate",
        "the connection presented no client certificate",
        "connect with the credential bundle your facility issued (--bundle FILE)",
    )
    UNKNOWN_CA = _CodeInfo(
        4411,
        "unknown_ca",
        "the client certificate was not issued by this facility's certificate authority",
        "use a bundle issued by this facility (classroom-relay enroll ...)",
    )
    CERT_EXPIRED = _CodeInfo(
        4412,
        "cert_expired",
        "the client certificate has expired or is not yet valid",
        "ask the facility administrator for a new bundle (classroom-relay enroll ...)",
    )
    REVOKED = _CodeInfo(
        4413,
        "revoked",
        "this credential has been revoked by the facility",
        "contact the facility administrator; a revoked credential cannot be used again",
    )
    NOT_REGISTERED = _CodeInfo(
        4414,
        "not_registered",
        "this certificate is not in the facility's registry",
        "ask the facility administrator to enrol you or this machine",
    )
    WRONG_LISTENER = _CodeInfo(
        4415,
        "wrong_listener",
        "this kind of credential is not accepted on this listener",
        "instructors connect to the outside address; machines and staff to the inside address",
    )
    TOO_MANY_CONNECTIONS = _CodeInfo(
        4416,
        "too_many_connections",
        "this credential already has the maximum number of open connections",
        "close another connection of this credential and try again",
    )
    TLS_FAILED = _CodeInfo(
        4417,
        "tls_failed",
        "the TLS handshake failed",
        "connect with TLS 1.3 using the facility's bundle and the relay address it names",
    )
    # -- which class -----------------------------------------------------------------
    UNKNOWN_SESSION = _CodeInfo(
        4420,
        "unknown_session",
        "no class with this id is scheduled",
        "check the class id with the facility administrator (classroom-relay schedule list)",
    )
    OUTSIDE_WINDOW = _CodeInfo(
        4421,
        "outside_window",
        "the class is not open at this time",
        "join during the scheduled class time",
    )
    NOT_YOUR_CLASS = _CodeInfo(
        4422,
        "not_your_class",
        "this class is scheduled for another instructor",
        "join only classes scheduled for you",
    )
    WRONG_CLASSROOM = _CodeInfo(
        4423,
        "wrong_classroom",
        "this machine is not in the classroom where the class takes place",
        "join from a machine in the class's classroom",
    )
    NOT_ON_ROSTER = _CodeInfo(
        4424,
        "not_on_roster",
        "this learner is not on the class roster",
        "ask the facility administrator to add the learner to the class",
    )
    BAD_PIN = _CodeInfo(
        4425,
        "bad_pin",
        "the learner id or PIN is wrong",
        "check the learner id and PIN; repeated failures lock the learner out for a while",
    )
    LEARNER_LOCKED = _CodeInfo(
        4426,
        "learner_locked",
        "this learner is locked out after too many wrong PINs",
        "wait for the lockout to end or ask staff to check the learner's PIN",
    )
    LEARNER_REQUIRED = _CodeInfo(
        4427,
        "learner_required",
        "a classroom machine joins a class only with a learner signed in",
        "sign in with --learner ID --pin PIN",
    )
    MACHINE_LOCKED = _CodeInfo(
        4429,
        "machine_locked",
        "too many wrong PINs were entered on this machine recently",
        "wait a few minutes; if it keeps happening, tell security staff",
    )
    SESSION_ENDED = _CodeInfo(
        4428,
        "session_ended",
        "the class has been ended",
        "the class is over; the facility can schedule a new one",
    )
    # -- what you asked for ----------------------------------------------------------
    NOT_PERMITTED = _CodeInfo(
        4430,
        "not_permitted",
        "your role may not send this message",
        "see docs/protocol.md for what each role may send",
    )
    ROUTE_REFUSED = _CodeInfo(
        4431,
        "route_refused",
        "the facility's policy does not allow this direct message",
        "write to the class channel or to the instructor instead",
    )
    UNKNOWN_RECIPIENT = _CodeInfo(
        4432,
        "unknown_recipient",
        "the recipient is not part of this class",
        "address a participant listed in the class roster",
    )
    RATE_LIMITED = _CodeInfo(
        4433,
        "rate_limited",
        "too many messages in a short time",
        "slow down and send the message again in a moment",
    )
    POLICY_BLOCKED = _CodeInfo(
        4434,
        "policy_blocked",
        "the facility's content policy does not allow this message",
        "rephrase the message without the refused content",
    )
    HELD = _CodeInfo(
        4435,
        "held_for_review",
        "the message is held for review by security staff",
        "wait for the staff decision; you will be told the outcome",
    )
    REVIEW_QUEUE_FULL = _CodeInfo(
        4436,
        "review_queue_full",
        "the message would be held for review, but too many messages already wait",
        "wait until security staff have reviewed the waiting messages, then send it again",
    )
    UNKNOWN_HOLD = _CodeInfo(
        4437,
        "unknown_hold",
        "no message of this class waits for review under this hold id",
        "list the waiting messages ('review list') and use a hold id shown there; "
        "it may already have been decided or have expired",
    )
    # -- the relay's own state -------------------------------------------------------
    REPLACED = _CodeInfo(
        4440,
        "replaced",
        "a newer connection of the same participant took over",
        "use one connection per participant and class",
    )
    IDLE_TIMEOUT = _CodeInfo(
        4441,
        "idle_timeout",
        "the connection sent nothing in time (hello, or pong to the relay's ping)",
        "send 'hello' right after connecting and answer WebSocket pings",
    )
    # -- the shared editor -------------------------------------------------------------
    UNKNOWN_WORKSPACE = _CodeInfo(
        4460,
        "unknown_workspace",
        "the workspace does not exist in this class or is not yours to see",
        "use 'class' or your own 'learner:NAME' workspace (the instructor: any learner's)",
    )
    READ_ONLY = _CodeInfo(
        4461,
        "read_only",
        "the workspace is read-only for you now",
        "wait for the instructor to end lecture mode, or edit your own workspace",
    )
    BAD_UPDATE = _CodeInfo(
        4462,
        "bad_update",
        "the editor update could not be read or holds content the editor does not allow",
        "send Yjs v1 updates of plain text files in the map 'files' (docs/protocol.md)",
    )
    OUT_OF_SYNC = _CodeInfo(
        4463,
        "out_of_sync",
        "the editor update depends on changes the relay does not have",
        "send 'editor_sync' with your state vector, apply the answer, then edit again",
    )
    EDITOR_LIMIT = _CodeInfo(
        4464,
        "editor_limit",
        "the change would exceed a size limit of the workspace",
        "keep files and workspaces within the limits in docs/protocol.md",
    )
    # -- screen share ----------------------------------------------------------------
    UNKNOWN_SHARE = _CodeInfo(
        4470,
        "unknown_share",
        "there is no such screen share in this class, or it is not yours to watch or stop",
        "watch a share named by a 'share_started' of your class",
    )
    SHARE_BUSY = _CodeInfo(
        4471,
        "share_busy",
        "this class already has as many screen shares as it may",
        "stop a running share first",
    )
    BAD_OFFER = _CodeInfo(
        4472,
        "bad_offer",
        "the WebRTC offer cannot be used",
        "offer exactly one video track (VP8), no data channels, as docs/protocol.md says",
    )
    AUDIT_UNAVAILABLE = _CodeInfo(
        4450,
        "audit_unavailable",
        "the audit log could not record the message, so it was not delivered",
        "wait for the facility to restore the audit log; the class resumes then",
    )
    SHUTTING_DOWN = _CodeInfo(
        4451,
        "shutting_down",
        "the relay is shutting down",
        "reconnect in a moment",
    )
    INTERNAL = _CodeInfo(
        4452,
        "internal",
        "the relay failed to process the message and refused it to stay safe",
        "try again; if it persists, tell the facility administrator",
    )

    @property
    def number(self) -> int:
        return self.value.number

    @property
    def slug(self) -> str:
        return self.value.slug

    @property
    def summary(self) -> str:
        return self.value.summary

    @property
    def remedy(self) -> str:
        return self.value.remedy

    def text(self, detail: str = "") -> str:
        """The sentence a person sees: what was refused and why, then what to do."""
        why = f"{self.summary} ({detail})" if detail else self.summary
        return f"Refused: {why}. What to do: {self.remedy}."

    @classmethod
    def by_number(cls, number: int) -> ErrorCode | None:
        return _BY_NUMBER.get(number)

    @classmethod
    def by_slug(cls, slug: str) -> ErrorCode | None:
        return _BY_SLUG.get(slug)


_BY_NUMBER: dict[int, ErrorCode] = {c.number: c for c in ErrorCode}
_BY_SLUG: dict[str, ErrorCode] = {c.slug: c for c in ErrorCode}


class RelayError(Exception):
    """Base of every error classroom-relay raises on purpose."""


class Refusal(RelayError):
    """A refusal with a wire :class:`ErrorCode` (decode, identity, authorisation)."""

    def __init__(self, code: ErrorCode, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(code.text(detail))


class ProtocolError(Refusal):
    """A frame that could not be decoded or does not match its schema.

    ``ref`` is the message id of the refused frame when it could be read.
    """

    def __init__(self, code: ErrorCode, detail: str = "", ref: str | None = None) -> None:
        super().__init__(code, detail)
        self.ref = ref


class AccessDenied(Refusal):
    """Identity or whitelisting refused the connection or the join."""


class ConfigError(RelayError):
    """The facility home or ``relay.toml`` is missing or invalid."""


class CredentialError(RelayError):
    """A CA key, certificate or credential bundle is missing, invalid or locked."""


class RegistryError(RelayError):
    """An enrolment, learner or revocation request cannot be carried out."""


class ScheduleError(RelayError):
    """A schedule entry is invalid or conflicts with the registry."""


class AuditError(RelayError):
    """The audit sink could not durably record events; the relay fails closed."""


class AuditLogError(RelayError):
    """The audit log cannot be read as asked: a damaged file, a missing or wrong key."""


class ControlError(RelayError):
    """The running relay could not be reached on its local control socket."""


class ControlRefused(ControlError):
    """The running relay answered on its control socket and refused the request."""


class ClientError(RelayError):
    """A client could not connect, or the relay refused what it asked."""

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        self.code = code
        super().__init__(message)
