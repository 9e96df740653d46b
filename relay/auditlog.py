"""The audit log's format: frames, the hash chain, signed checkpoints, encrypted contents,
tombstones, and the verifier. Pure: bytes in, values out; keys and randomness are passed in.

``docs/audit.md`` specifies every byte of it (an independent verifier needs only
``cryptography`` and ``msgpack``). In short:

* A log is a sequence of **segment files**. Each starts with :data:`MAGIC` and holds
  **frames**: ``u32 length | record | u32 CRC-32(record)``, where ``record`` is
  ``u64 seq | u8 type | msgpack body``. Sequence numbers start at 1 and increase by one
  across segments.
* The **hash chain**: ``leaf = SHA-256(0x00 | record)``,
  ``chain[n] = SHA-256(0x01 | chain[n-1] | leaf[n])``, and ``chain[0] =
  SHA-256(0x02 | "classroom-relay audit log v1" | log id)``. The prefixes keep leaf,
  chain and genesis hashes apart.
* Every segment starts with a SEGMENT record (log id, and the chain hash before it), then
  a KEY record: a fresh AES-256-GCM data key, wrapped to the staff's X25519 audit key.
  Message contents are encrypted with it; everything needed for search stays in clear.
* A CHECKPOINT record carries an Ed25519 signature over ``(log id, seq, chain[seq],
  time)`` of the record before it; the latest checkpoint is also kept outside the log
  (the checkpoint sink). Removed segments leave a signed **tombstone** behind.
"""

from __future__ import annotations

import enum
import hashlib
import math
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from relay.audit import AuditEvent
from relay.errors import AuditLogError

MAGIC = b"CRAUDIT\x01"
"""The first 8 bytes of every segment file (format version 1)."""
SEGMENT_SUFFIX = ".seg"
TOMBSTONE_SUFFIX = ".tomb"
LOG_ID_BYTES = 16
HASH_BYTES = 32
MAX_RECORD_BYTES = 16 << 20
"""A frame announcing a longer record is damage, not a record."""

_LEAF = b"\x00"
_CHAIN = b"\x01"
_GENESIS = b"\x02classroom-relay audit log v1"
_CHECKPOINT_CONTEXT = b"classroom-relay audit checkpoint v1\x00"
_TOMBSTONE_CONTEXT = b"classroom-relay audit tombstone v1\x00"
_WRAP_INFO = b"classroom-relay audit key wrap v1"
_WRAP_AAD = b"classroom-relay audit data key v1"
_CONTENT_AAD = b"classroom-relay audit content v1"
_LEN = struct.Struct(">I")
_HEAD = struct.Struct(">IQB")
"""length, seq, type: the first 13 bytes of a frame."""
_SEQ_TYPE = struct.Struct(">QB")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
_CRC = struct.Struct(">I")
FRAME_OVERHEAD = _LEN.size + _CRC.size


class FrameType(enum.IntEnum):
    """The ``type`` byte of a record."""

    EVENT = 0
    """An audit event (``relay.audit.AuditEvent``)."""
    SEGMENT = 1
    """First record of every segment: log id, chain hash before it, segment name."""
    KEY = 2
    """A new data key, wrapped to the staff audit key."""
    CHECKPOINT = 3
    """A signed checkpoint of the record before it."""


CONTENT_FIELDS = ("content", "delivered")
"""Event fields encrypted at rest; every other field stays in clear for search."""
_STORED_NAMES = {"seq": "class_seq"}
"""Event fields stored under another name: ``seq`` is the record's own number."""
CLEAR_FIELDS = tuple(
    (name, _STORED_NAMES.get(name, name))
    for name in AuditEvent.__dataclass_fields__
    if name not in (*CONTENT_FIELDS, "kind")
)
"""(event attribute, stored key) of every field kept in clear."""


# ---------------------------------------------------------------------------------------
# hashes
# ---------------------------------------------------------------------------------------


def genesis_hash(log_id: bytes) -> bytes:
    """``chain[0]``: the chain hash before the first record of the log ``log_id``."""
    return hashlib.sha256(_GENESIS + log_id).digest()


def leaf_hash(record: bytes) -> bytes:
    return hashlib.sha256(_LEAF + record).digest()


def chain_hash(previous: bytes, record: bytes) -> bytes:
    """``chain[n]`` from ``chain[n-1]`` and record ``n`` (its bytes, without length and CRC)."""
    return hashlib.sha256(_CHAIN + previous + hashlib.sha256(_LEAF + record).digest()).digest()


def key_fingerprint(public_raw: bytes) -> str:
    """Short name of a public key: the first 8 bytes of its SHA-256, in hex."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


def segment_first_seq(name: str) -> int | None:
    """The first sequence number from a segment file name; None if it is not one."""
    stem = name.removesuffix(SEGMENT_SUFFIX)
    if stem == name or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem)


# ---------------------------------------------------------------------------------------
# frames
# ---------------------------------------------------------------------------------------


def encode_frame(seq: int, ftype: FrameType, body: bytes) -> tuple[bytes, bytes]:
    """``(frame, record)``: the bytes to append, and the record the chain hashes."""
    record = _SEQ_TYPE.pack(seq, ftype) + body
    return _LEN.pack(len(record)) + record + _CRC.pack(zlib.crc32(record)), record


@dataclass(frozen=True, slots=True)
class Frame:
    seq: int
    ftype: int
    record: bytes
    """``seq | type | body``: what the chain hashes."""
    offset: int
    """Where the frame starts in its segment file."""
    end: int
    """Where the next frame starts."""

    @property
    def body(self) -> bytes:
        return self.record[_SEQ_TYPE.size :]

    def fields(self) -> dict[str, Any]:
        """The msgpack body as a map; :class:`AuditLogError` when it is not one."""
        return unpack_body(self.body, f"record {self.seq}")


@dataclass(frozen=True, slots=True)
class FrameDamage:
    """Bytes at ``offset`` that are not a complete, intact frame."""

    offset: int
    reason: str
    complete: bool
    """False when the file simply ends inside the frame (a torn write)."""


def read_frames(data: bytes | memoryview, start: int = len(MAGIC)) -> Iterator[Frame | FrameDamage]:
    """The frames of a segment's bytes from ``start``; stops after the first damage."""
    view = memoryview(data)
    size = len(view)
    offset = start
    head, crc_struct, crc32 = _HEAD.unpack_from, _CRC.unpack_from, zlib.crc32
    while offset < size:
        if size - offset < _HEAD.size:
            yield FrameDamage(offset, "the file ends inside a frame header", complete=False)
            return
        length, seq, ftype = head(view, offset)
        if length < _SEQ_TYPE.size or length > MAX_RECORD_BYTES:
            yield FrameDamage(offset, f"impossible record length {length}", complete=True)
            return
        end = offset + _LEN.size + length + _CRC.size
        if end > size:
            yield FrameDamage(offset, "the file ends inside a record", complete=False)
            return
        record = bytes(view[offset + _LEN.size : end - _CRC.size])
        if crc32(record) != crc_struct(view, end - _CRC.size)[0]:
            yield FrameDamage(offset, "checksum mismatch: the record's bytes were altered", True)
            return
        yield Frame(seq, ftype, record, offset, end)
        offset = end


def unpack_body(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise AuditLogError(f"{what} is not a readable msgpack map ({exc})") from None
    if not isinstance(value, dict):
        raise AuditLogError(f"{what} is not a msgpack map")
    return value


_packb = msgpack.Packer(use_bin_type=True).pack


def pack_body(fields: Mapping[str, Any]) -> bytes:
    packed: bytes = _packb(dict(fields))
    return packed


# ---------------------------------------------------------------------------------------
# keys, wrapping and contents
# ---------------------------------------------------------------------------------------


def raw_public(key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _kek(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=_WRAP_INFO + ephemeral + recipient
    ).derive(shared)


def wrap_data_key(
    data_key: bytes, staff_public: X25519PublicKey, key_seq: int, ephemeral: X25519PrivateKey
) -> dict[str, Any]:
    """The KEY record's fields: ``data_key`` encrypted so only the staff key opens it."""
    eph_raw = raw_public(ephemeral.public_key())
    staff_raw = raw_public(staff_public)
    kek = _kek(ephemeral.exchange(staff_public), eph_raw, staff_raw)
    wrapped = AESGCM(kek).encrypt(bytes(12), data_key, _WRAP_AAD + _U64.pack(key_seq))
    return {"to": key_fingerprint(staff_raw), "eph": eph_raw, "wrapped": wrapped}


def unwrap_data_key(
    fields: Mapping[str, Any], staff_private: X25519PrivateKey, key_seq: int
) -> bytes:
    """The data key of the KEY record ``key_seq``; :class:`AuditLogError` if it is not ours."""
    staff_raw = raw_public(staff_private.public_key())
    if fields.get("to") != key_fingerprint(staff_raw):
        raise AuditLogError(
            f"record {key_seq}: the contents are encrypted to audit key {fields.get('to')}, "
            f"not to this bundle's key {key_fingerprint(staff_raw)}; use the staff bundle "
            "of this facility"
        )
    eph, wrapped = fields.get("eph"), fields.get("wrapped")
    if not isinstance(eph, bytes) or not isinstance(wrapped, bytes) or len(eph) != 32:
        raise AuditLogError(f"record {key_seq}: the key record is malformed")
    shared = staff_private.exchange(X25519PublicKey.from_public_bytes(eph))
    try:
        key: bytes = AESGCM(_kek(shared, eph, staff_raw)).decrypt(
            bytes(12), wrapped, _WRAP_AAD + _U64.pack(key_seq)
        )
        return key
    except InvalidTag:
        raise AuditLogError(f"record {key_seq}: the data key does not open (altered?)") from None


def _content_nonce(seq: int) -> bytes:
    return bytes(4) + _U64.pack(seq)


def _content_aad(seq: int, key_seq: int) -> bytes:
    return _CONTENT_AAD + _U64.pack(seq) + _U64.pack(key_seq)


def decrypt_content(seq: int, enc: object, data_keys: Callable[[int], bytes]) -> dict[str, Any]:
    """The clear contents of record ``seq`` (``{"content": ..., "delivered": ...}``)."""
    if not (isinstance(enc, list) and len(enc) == 2 and isinstance(enc[0], int)):
        raise AuditLogError(f"record {seq}: the encrypted contents are malformed")
    key_seq, ciphertext = enc
    if not isinstance(ciphertext, bytes):
        raise AuditLogError(f"record {seq}: the encrypted contents are malformed")
    try:
        plain = AESGCM(data_keys(key_seq)).decrypt(
            _content_nonce(seq), ciphertext, _content_aad(seq, key_seq)
        )
    except InvalidTag:
        raise AuditLogError(f"record {seq}: the contents do not decrypt (altered?)") from None
    return unpack_body(plain, f"the contents of record {seq}")


# ---------------------------------------------------------------------------------------
# checkpoints and tombstones
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement: in log ``log_id``, record ``seq`` has chain hash ``chain``."""

    log_id: bytes
    seq: int
    chain: bytes
    time: float
    signer: str
    """Fingerprint of the relay's audit signing key."""
    signature: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.log_id) != LOG_ID_BYTES or len(self.chain) != HASH_BYTES:
            raise AuditLogError("a checkpoint has a malformed log id or chain hash")
        if self.seq < 0 or not math.isfinite(self.time):
            raise AuditLogError("a checkpoint has a malformed sequence number or time")

    @staticmethod
    def message(log_id: bytes, seq: int, chain: bytes, time: float) -> bytes:
        return _CHECKPOINT_CONTEXT + log_id + _U64.pack(seq) + chain + _F64.pack(time)

    @classmethod
    def sign(
        cls, key: Ed25519PrivateKey, log_id: bytes, seq: int, chain: bytes, time: float
    ) -> Checkpoint:
        signer = key_fingerprint(raw_public(key.public_key()))
        signature = key.sign(cls.message(log_id, seq, chain, time))
        return cls(log_id, seq, chain, time, signer, signature)

    def valid(self, public: Ed25519PublicKey) -> bool:
        try:
            public.verify(
                self.signature, self.message(self.log_id, self.seq, self.chain, self.time)
            )
        except InvalidSignature:
            return False
        return True

    def to_fields(self) -> dict[str, Any]:
        return {
            "log": self.log_id,
            "seq": self.seq,
            "chain": self.chain,
            "t": self.time,
            "signer": self.signer,
            "sig": self.signature,
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> Checkpoint:
        try:
            log_id, seq, chain = fields["log"], fields["seq"], fields["chain"]
            time, signer, sig = fields["t"], fields["signer"], fields["sig"]
        except KeyError as exc:
            raise AuditLogError(f"a checkpoint lacks its field {exc}") from None
        if not (
            isinstance(log_id, bytes)
            and isinstance(seq, int)
            and isinstance(chain, bytes)
            and isinstance(time, float)
            and isinstance(signer, str)
            and isinstance(sig, bytes)
        ):
            raise AuditLogError("a checkpoint has a field of the wrong type")
        return cls(log_id, seq, chain, time, signer, sig)

    def to_bytes(self) -> bytes:
        return pack_body(self.to_fields())

    @classmethod
    def from_bytes(cls, data: bytes, what: str) -> Checkpoint:
        return cls.from_fields(unpack_body(data, what))


@dataclass(frozen=True, slots=True)
class Tombstone:
    """Signed explanation of a gap: records ``first..last`` were removed by retention."""

    log_id: bytes
    first: int
    last: int
    before: bytes
    """``chain[first-1]``."""
    after: bytes
    """``chain[last]``: where verification resumes."""
    time: float
    reason: str
    segments: tuple[tuple[str, str], ...]
    """(segment file name, SHA-256 hex of its bytes) of every removed segment."""
    signer: str
    signature: bytes = field(repr=False)

    @staticmethod
    def message(
        log_id: bytes,
        first: int,
        last: int,
        before: bytes,
        after: bytes,
        time: float,
        reason: str,
        segments: Sequence[tuple[str, str]],
    ) -> bytes:
        listing = "\n".join(f"{name} {digest}" for name, digest in segments)
        return (
            _TOMBSTONE_CONTEXT
            + log_id
            + _U64.pack(first)
            + _U64.pack(last)
            + before
            + after
            + _F64.pack(time)
            + hashlib.sha256(reason.encode()).digest()
            + hashlib.sha256(listing.encode()).digest()
        )

    def _message(self) -> bytes:
        return self.message(
            self.log_id,
            self.first,
            self.last,
            self.before,
            self.after,
            self.time,
            self.reason,
            self.segments,
        )

    @classmethod
    def sign(
        cls,
        key: Ed25519PrivateKey,
        *,
        log_id: bytes,
        first: int,
        last: int,
        before: bytes,
        after: bytes,
        time: float,
        reason: str,
        segments: Sequence[tuple[str, str]],
    ) -> Tombstone:
        signer = key_fingerprint(raw_public(key.public_key()))
        message = cls.message(log_id, first, last, before, after, time, reason, segments)
        return cls(
            log_id, first, last, before, after, time, reason, tuple(segments), signer,
            key.sign(message),
        )  # fmt: skip

    def valid(self, public: Ed25519PublicKey) -> bool:
        try:
            public.verify(self.signature, self._message())
        except InvalidSignature:
            return False
        return True

    @property
    def file_name(self) -> str:
        return f"{self.first:020d}-{self.last:020d}{TOMBSTONE_SUFFIX}"

    def to_fields(self) -> dict[str, Any]:
        return {
            "log": self.log_id,
            "first": self.first,
            "last": self.last,
            "before": self.before,
            "after": self.after,
            "t": self.time,
            "reason": self.reason,
            "segments": [list(s) for s in self.segments],
            "signer": self.signer,
            "sig": self.signature,
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any], what: str) -> Tombstone:
        try:
            segments = tuple((str(n), str(d)) for n, d in fields["segments"])
            value = cls(
                fields["log"],
                fields["first"],
                fields["last"],
                fields["before"],
                fields["after"],
                fields["t"],
                fields["reason"],
                segments,
                fields["signer"],
                fields["sig"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AuditLogError(f"{what} is not a readable tombstone ({exc})") from None
        if not (
            isinstance(value.log_id, bytes)
            and isinstance(value.first, int)
            and isinstance(value.last, int)
            and isinstance(value.before, bytes)
            and isinstance(value.after, bytes)
            and isinstance(value.time, float)
            and isinstance(value.reason, str)
            and isinstance(value.signature, bytes)
        ):
            raise AuditLogError(f"{what} has a field of the wrong type")
        return value


# ---------------------------------------------------------------------------------------
# the writer's chain state
# ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class ChainState:
    """Where the log stands: the last sequence number and its chain hash."""

    log_id: bytes
    seq: int
    chain: bytes


class RecordEncoder:
    """Turns events into frames and advances the chain: the pure half of the writer.

    ``random_bytes`` and ``new_ephemeral`` are injected so tests can be deterministic.
    """

    def __init__(
        self,
        state: ChainState,
        *,
        staff_public: X25519PublicKey,
        random_bytes: Callable[[int], bytes] = os.urandom,
        new_ephemeral: Callable[[], X25519PrivateKey] = X25519PrivateKey.generate,
    ) -> None:
        self.state = state
        self.staff_public = staff_public
        self.random_bytes = random_bytes
        self.new_ephemeral = new_ephemeral
        self._aead: AESGCM | None = None
        self.key_seq = 0
        """Sequence number of the KEY record whose data key encrypts contents now."""
        self.key_time = 0.0
        self.key_uses = 0

    def _append(self, ftype: FrameType, body: bytes, out: list[bytes]) -> int:
        state = self.state
        seq = state.seq + 1
        frame, record = encode_frame(seq, ftype, body)
        state.chain = chain_hash(state.chain, record)
        state.seq = seq
        out.append(frame)
        return seq

    def segment_start(self, name: str, now: float, out: list[bytes]) -> None:
        """The two records that open a segment: SEGMENT, then a fresh KEY."""
        fields = {"log": self.state.log_id, "prev": self.state.chain, "segment": name, "t": now}
        self._append(FrameType.SEGMENT, pack_body(fields), out)
        self.new_key(now, out)

    def new_key(self, now: float, out: list[bytes]) -> None:
        data_key = self.random_bytes(32)
        key_seq = self.state.seq + 1
        fields = wrap_data_key(data_key, self.staff_public, key_seq, self.new_ephemeral())
        fields["t"] = now
        self._append(FrameType.KEY, pack_body(fields), out)
        self._aead = AESGCM(data_key)
        self.key_seq = key_seq
        self.key_time = now
        self.key_uses = 0

    def event(self, event: AuditEvent, out: list[bytes]) -> int:
        """Append one event; returns its sequence number."""
        fields: dict[str, Any] = {"kind": event.kind.name_, "code": event.kind.code}
        for name, key in CLEAR_FIELDS:
            value = getattr(event, name)
            if value is not None:
                fields[key] = value
        secret = {n: getattr(event, n) for n in CONTENT_FIELDS if getattr(event, n) is not None}
        if secret:
            aead = self._aead
            if aead is None:
                raise AuditLogError("no data key: a segment must start before events")
            seq = self.state.seq + 1
            ciphertext = aead.encrypt(
                _content_nonce(seq), _packb(secret), _content_aad(seq, self.key_seq)
            )
            fields["enc"] = [self.key_seq, ciphertext]
            self.key_uses += 1
        return self._append(FrameType.EVENT, _packb(fields), out)

    def checkpoint(self, key: Ed25519PrivateKey, now: float, out: list[bytes]) -> Checkpoint:
        """Sign where the chain stands and append the CHECKPOINT record."""
        state = self.state
        cp = Checkpoint.sign(key, state.log_id, state.seq, state.chain, now)
        self._append(FrameType.CHECKPOINT, cp.to_bytes(), out)
        return cp


# ---------------------------------------------------------------------------------------
# verification
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """The first thing wrong with the log, and where."""

    where: str
    """Segment file (or tombstone, or checkpoint sink) the problem is in."""
    seq: int | None
    """The record it concerns, when known."""
    offset: int | None
    what: str

    def __str__(self) -> str:
        place = self.where
        if self.seq is not None:
            place += f", record {self.seq}"
        if self.offset is not None:
            place += f", byte {self.offset}"
        return f"{place}: {self.what}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    records: int
    segments: int
    first_seq: int
    last_seq: int
    checkpoints: int
    """Signed checkpoints found in the log and checked."""
    last_checkpoint: Checkpoint | None
    sink: Checkpoint | None
    gaps: tuple[Tombstone, ...]
    problems: tuple[Problem, ...]
    unsigned_tail: int
    """Records after the last signed checkpoint (normal while the relay writes)."""
    leftovers: tuple[str, ...] = ()
    """Segments a valid tombstone says were removed, still present (a retention run was
    interrupted before it deleted them all); skipped, not verified."""
    in_flight: int = 0
    """Bytes of an unfinished frame at the very end of a log being written (``live_tail``)."""

    @property
    def ok(self) -> bool:
        return not self.problems


class SegmentSource:
    """A segment's bytes, read when the verifier reaches it."""

    def __init__(self, name: str, read: Callable[[], bytes]) -> None:
        self.name = name
        self.read = read
        self.first_seq = segment_first_seq(name)


@dataclass(slots=True)
class _Walk:
    log_id: bytes | None = None
    """The log being verified: pinned by the sink when there is one."""
    seq: int = 0
    chain: bytes = b""
    records: int = 0
    checkpoints: int = 0
    last_cp: Checkpoint | None = None
    sink_checked: bool = False
    in_flight: int = 0
    problems: list[Problem] = field(default_factory=list)

    def start(self, log_id: bytes) -> None:
        """Before record 1: the chain begins at the genesis hash of ``log_id``."""
        if self.log_id is None:
            self.log_id = log_id
        self.chain = genesis_hash(self.log_id)


def verify_log(
    segments: Sequence[SegmentSource],
    *,
    signing_key: Ed25519PublicKey,
    tombstones: Iterable[Tombstone] = (),
    sink: Checkpoint | None = None,
    sink_name: str = "checkpoint sink",
    sink_required: bool = True,
    live_tail: bool = False,
) -> VerifyReport:
    """Check a whole log: frames, sequence, chain, signatures, tombstones, the sink.

    Stops at the first problem (what follows it cannot be trusted), and reports it with
    its segment, record and byte offset. The sink's signature is checked first, and its
    log id pins the log: a segment of another log is refused where it appears.
    ``live_tail``: a writer is appending, so the last segment may end inside a frame.
    """
    walk = _Walk()
    signer = key_fingerprint(raw_public(signing_key))
    valid_tombs = [t for t in tombstones if t.signer == signer and t.valid(signing_key)]
    invalid_tombs = {t.first: t for t in tombstones if t not in valid_tombs}
    by_first = {**invalid_tombs, **{t.first: t for t in valid_tombs}}
    removed = {name for t in valid_tombs for name, _ in t.segments}
    ordered = sorted(segments, key=lambda s: (s.first_seq is None, s.first_seq or 0, s.name))
    leftovers = tuple(s.name for s in ordered if s.name in removed)
    ordered = [s for s in ordered if s.name not in removed]
    used: list[Tombstone] = []
    if sink is not None:
        if sink.signer != signer or not sink.valid(signing_key):
            walk.problems.append(
                Problem(
                    sink_name,
                    sink.seq,
                    None,
                    "the checkpoint's signature is not valid (forged, or signed by another "
                    "key than the relay's audit signing key)",
                )
            )
            ordered = []
        else:
            walk.log_id = sink.log_id
    for i, source in enumerate(ordered):
        if source.first_seq is None:
            walk.problems.append(Problem(source.name, None, None, "not a segment file name"))
            break
        if source.first_seq != walk.seq + 1:
            problem = _bridge(by_first, walk, source, signing_key, signer, used)
            if problem is not None:
                walk.problems.append(problem)
                break
        last = i == len(ordered) - 1
        if not _verify_segment(source, walk, signing_key, signer, sink, live_tail and last):
            break
    if not walk.problems and not ordered and sink is not None:
        walk.problems.append(
            Problem(sink_name, sink.seq, None, "the log is empty but the sink has a checkpoint")
        )
    if not walk.problems and sink is not None:
        _check_sink(sink, walk, sink_name, used)
    elif not walk.problems and sink is None and sink_required and walk.records:
        walk.problems.append(
            Problem(sink_name, None, None, "there is no checkpoint in the checkpoint sink")
        )
    first = ordered[0].first_seq if ordered and ordered[0].first_seq else 0
    last_cp = walk.last_cp
    return VerifyReport(
        records=walk.records,
        segments=len(ordered),
        first_seq=first,
        last_seq=walk.seq,
        checkpoints=walk.checkpoints,
        last_checkpoint=last_cp,
        sink=sink,
        gaps=tuple(used),
        problems=tuple(walk.problems),
        unsigned_tail=walk.seq - (last_cp.seq + 1 if last_cp else 0),
        leftovers=leftovers,
        in_flight=walk.in_flight,
    )


def _bridge(
    by_first: Mapping[int, Tombstone],
    walk: _Walk,
    source: SegmentSource,
    key: Ed25519PublicKey,
    signer: str,
    used: list[Tombstone],
) -> Problem | None:
    """Cross the gap before ``source`` with the tombstones that explain it."""
    assert source.first_seq is not None
    while walk.seq + 1 < source.first_seq:
        expected = walk.seq + 1
        gap = by_first.get(expected)
        if gap is None:
            return Problem(
                source.name,
                expected,
                None,
                (
                    f"the log starts at record {source.first_seq}"
                    if expected == 1
                    else f"this segment starts at record {source.first_seq}"
                )
                + f", and no tombstone explains records {expected}-{source.first_seq - 1}: "
                "they were removed",
            )
        where = gap.file_name
        if gap.last >= source.first_seq or gap.last < gap.first:
            return Problem(
                where, gap.last, None, f"the tombstone ends at record {gap.last}, but the next "
                f"segment ({source.name}) starts at record {source.first_seq}",
            )  # fmt: skip
        if gap.signer != signer or not gap.valid(key):
            return Problem(
                where, gap.first, None, "the tombstone's signature is not valid (forged)"
            )
        if walk.seq == 0:
            walk.start(gap.log_id)
        if gap.log_id != walk.log_id or gap.before != walk.chain:
            return Problem(
                where,
                gap.first,
                None,
                "the tombstone does not continue the chain (another log, or records before it "
                "were altered)",
            )
        walk.seq, walk.chain = gap.last, gap.after
        used.append(gap)
    if walk.seq + 1 > source.first_seq:
        return Problem(
            source.name,
            source.first_seq,
            None,
            f"the segment starts at record {source.first_seq}, but the records before it "
            f"already reach record {walk.seq}: segments overlap (copied or renamed)",
        )
    return None


def _verify_segment(
    source: SegmentSource,
    walk: _Walk,
    key: Ed25519PublicKey,
    signer: str,
    sink: Checkpoint | None,
    live_tail: bool,
) -> bool:
    name = source.name
    try:
        data = source.read()
    except OSError as exc:
        walk.problems.append(Problem(name, None, None, f"cannot be read ({exc.strerror or exc})"))
        return False
    if data[: len(MAGIC)] != MAGIC:
        walk.problems.append(Problem(name, None, 0, "not a classroom-relay audit segment"))
        return False
    if walk.seq == 0:
        # Record 1: the chain starts from the genesis hash of the log (pinned by the sink,
        # else named by this header).
        log_id = walk.log_id or _header_log_id(next(read_frames(data), None))
        if log_id is None:
            walk.problems.append(Problem(name, 1, len(MAGIC), "the segment header is unreadable"))
            return False
        walk.start(log_id)
    first = True
    seq, chain, records = walk.seq, walk.chain, 0
    sha256, chain_prefix, leaf_prefix = hashlib.sha256, _CHAIN, _LEAF
    sink_seq = sink.seq if sink is not None else -1
    previous_offset = -1
    for frame in read_frames(data):
        if isinstance(frame, FrameDamage):
            if live_tail and not frame.complete:
                walk.in_flight = len(data) - frame.offset
                break
            walk.problems.append(
                Problem(name, seq + 1, frame.offset, f"record cannot be read: {frame.reason}")
            )
            break
        if frame.seq != seq + 1:
            walk.problems.append(_out_of_sequence(name, frame, seq + 1, previous_offset))
            break
        prev = chain
        chain = sha256(chain_prefix + chain + sha256(leaf_prefix + frame.record).digest()).digest()
        seq = frame.seq
        records += 1
        previous_offset = frame.offset
        ftype = frame.ftype
        if first and ftype != FrameType.SEGMENT:
            walk.problems.append(
                Problem(name, seq, frame.offset, "the segment does not start with its header")
            )
            break
        if ftype == FrameType.EVENT:
            pass
        elif ftype == FrameType.SEGMENT:
            problem = _segment_header(frame, walk, prev, first, name, source.first_seq)
            if problem is not None:
                walk.problems.append(problem)
                break
        elif ftype == FrameType.CHECKPOINT:
            problem = _checkpoint_record(frame, walk, key, signer, seq - 1, prev, name)
            if problem is not None:
                walk.problems.append(problem)
                break
        elif ftype != FrameType.KEY:
            walk.problems.append(Problem(name, seq, frame.offset, f"unknown record type {ftype}"))
            break
        if seq == sink_seq and sink is not None and sink.chain != chain:
            walk.problems.append(
                Problem(
                    name,
                    seq,
                    frame.offset,
                    "the chain does not match the checkpoint in the sink: this record "
                    "or one before it was altered",
                )
            )
            break
        if seq == sink_seq + 1:
            # The writer appends a checkpoint record before it copies it to the sink.
            if ftype != FrameType.CHECKPOINT or frame.fields() != (sink and sink.to_fields()):
                walk.problems.append(
                    Problem(
                        name,
                        seq,
                        frame.offset,
                        "this record is not the checkpoint the sink holds (the writer "
                        "appends it here before copying it): the record was replaced",
                    )
                )
                break
            walk.sink_checked = True
        first = False
    walk.seq, walk.chain = seq, chain
    walk.records += records
    return not walk.problems


def _out_of_sequence(name: str, frame: Frame, expected: int, previous_offset: int) -> Problem:
    """A frame whose number is not the next one: name the record where order breaks."""
    if frame.seq == expected - 1:
        return Problem(
            name,
            frame.seq,
            frame.offset,
            f"a second record numbered {frame.seq} (the first is at byte {previous_offset}): "
            "a record was inserted",
        )
    if frame.seq < expected:
        what = (
            f"record {frame.seq} appears where record {expected} was expected: records were "
            "inserted or reordered"
        )
    else:
        what = (
            f"record {frame.seq} appears where record {expected} was expected: record "
            f"{expected} was removed, or records were reordered"
        )
    return Problem(name, expected, frame.offset, what)


def _segment_header(
    frame: Frame, walk: _Walk, prev: bytes, first: bool, name: str, first_seq: int | None
) -> Problem | None:
    try:
        fields = frame.fields()
    except AuditLogError as exc:
        return Problem(name, frame.seq, frame.offset, str(exc))
    log_id = fields.get("log")
    if not first:
        return Problem(name, frame.seq, frame.offset, "a segment header inside a segment")
    if frame.seq != first_seq or fields.get("segment") != name:
        return Problem(
            name, frame.seq, frame.offset, "the segment header names another segment (renamed?)"
        )
    if not isinstance(log_id, bytes) or len(log_id) != LOG_ID_BYTES:
        return Problem(name, frame.seq, frame.offset, "the segment header has no log id")
    if log_id != walk.log_id:
        return Problem(
            name,
            frame.seq,
            frame.offset,
            "the segment belongs to another log (its log id is not the one the checkpoint "
            "sink and the segments before it name): it was replaced",
        )
    if fields.get("prev") != prev:
        return Problem(
            name,
            frame.seq,
            frame.offset,
            "the segment does not continue the chain of the segment before it "
            "(replaced, or records before it were altered)",
        )
    return None


def _header_log_id(head: Frame | FrameDamage | None) -> bytes | None:
    if not isinstance(head, Frame) or head.ftype != FrameType.SEGMENT:
        return None
    try:
        log_id = head.fields().get("log")
    except AuditLogError:
        return None
    return log_id if isinstance(log_id, bytes) and len(log_id) == LOG_ID_BYTES else None


def _checkpoint_record(
    frame: Frame,
    walk: _Walk,
    key: Ed25519PublicKey,
    signer: str,
    covered: int,
    chain: bytes,
    name: str,
) -> Problem | None:
    try:
        cp = Checkpoint.from_fields(frame.fields())
    except AuditLogError as exc:
        return Problem(name, frame.seq, frame.offset, str(exc))
    if cp.signer != signer or not cp.valid(key):
        return Problem(
            name, frame.seq, frame.offset, "the checkpoint's signature is not valid (forged)"
        )
    if cp.seq != covered or cp.log_id != walk.log_id:
        return Problem(
            name, frame.seq, frame.offset, "the checkpoint does not sign the record before it"
        )
    if cp.chain != chain:
        since = walk.last_cp.seq + 1 if walk.last_cp is not None else 1
        return Problem(
            name,
            frame.seq,
            frame.offset,
            f"the chain does not match this signed checkpoint: a record in {since}-{covered} "
            "was altered",
        )
    walk.checkpoints += 1
    walk.last_cp = cp
    return None


def _check_sink(sink: Checkpoint, walk: _Walk, where: str, gaps: Sequence[Tombstone]) -> None:
    """After the walk: the sink's checkpoint (signature already checked) against the log."""
    held = sink.seq + 1  # the checkpoint record itself, right after the record it signs
    if held > walk.seq:
        walk.problems.append(
            Problem(
                where,
                walk.seq + 1,
                None,
                f"the log ends at record {walk.seq}, but the signed checkpoint shows it "
                f"reached record {held} (the checkpoint of record {sink.seq}): records "
                f"{walk.seq + 1}-{held} were cut off",
            )
        )
    elif not walk.sink_checked:
        removed = any(g.first <= held <= g.last for g in gaps)
        walk.problems.append(
            Problem(
                where,
                sink.seq,
                None,
                "the checkpoint is of a record inside a range removed by retention"
                if removed
                else "the checkpoint's record is missing from the log",
            )
        )


def load_public_ed25519(raw: bytes) -> Ed25519PublicKey:
    if len(raw) != 32:
        raise AuditLogError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)
