"""Reading the audit log: records in order, their clear metadata, and (with the staff
audit key) their decrypted contents.

Reading never changes the log. A reader may run while the relay appends: it reads
complete frames only, and stops quietly at an unfinished one at the very end.
Integrity is :func:`relay.auditlog.verify_log`'s job; the reader only refuses what it
cannot parse.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from relay.audit_store import list_segments
from relay.auditlog import (
    MAGIC,
    Frame,
    FrameDamage,
    FrameType,
    decrypt_content,
    read_frames,
    unwrap_data_key,
)
from relay.errors import AuditLogError


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One record of the log: where it is, and its fields."""

    seq: int
    ftype: FrameType
    segment: str
    offset: int
    fields: dict[str, Any] = field(repr=False)
    """The body as stored (``enc`` still encrypted)."""
    contents: dict[str, Any] | None = None
    """Decrypted ``content``/``delivered`` when read with the staff key; None otherwise."""

    @property
    def kind(self) -> str:
        value = self.fields.get("kind")
        return value if isinstance(value, str) else f"audit.{self.ftype.name.lower()}"

    @property
    def time(self) -> float:
        value = self.fields.get("time", self.fields.get("t"))
        return float(value) if isinstance(value, int | float) else 0.0

    @property
    def encrypted(self) -> bool:
        return "enc" in self.fields

    def to_dict(self) -> dict[str, Any]:
        """A flat map for JSON and CSV: record number, clear fields, decrypted contents.

        ``seq`` is the record's number in the log; the class sequence number of a
        delivered event is ``class_seq``. Contents that could not be read are absent
        (``encrypted`` is then true).
        """
        out: dict[str, Any] = {"seq": self.seq, "kind": self.kind}
        for key, value in self.fields.items():
            if key in ("enc", "kind"):
                continue
            out[key] = value.hex() if isinstance(value, bytes) else value
        if self.contents is not None:
            out.update(self.contents)
        elif self.encrypted:
            out["encrypted"] = True
        return out


class AuditReader:
    """The records of the audit log in ``directory``, in order."""

    def __init__(self, directory: Path, staff_key: X25519PrivateKey | None = None) -> None:
        self.directory = directory
        self.staff_key = staff_key
        self._key_fields: dict[int, dict[str, Any]] = {}
        self._data_keys: dict[int, bytes] = {}

    def segments(self) -> list[Path]:
        return list_segments(self.directory)

    def exists(self) -> bool:
        return bool(self.segments())

    def records(
        self, *, from_seq: int = 1, events_only: bool = True, decrypt: bool = True
    ) -> Iterator[StoredRecord]:
        """Every record from ``from_seq`` on; EVENT records only unless ``events_only`` is
        False. Contents are decrypted when the reader has the staff key and ``decrypt``."""
        segments = self.segments()
        starts = [_first(p) for p in segments]
        for i, path in enumerate(segments):
            nxt = starts[i + 1] if i + 1 < len(segments) else None
            if nxt is not None and nxt <= from_seq:
                continue
            yield from self._segment_records(path, from_seq, events_only, decrypt)

    def _segment_records(
        self, path: Path, from_seq: int, events_only: bool, decrypt: bool
    ) -> Iterator[StoredRecord]:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AuditLogError(f"segment {path.name} cannot be read: {exc}") from None
        if data[: len(MAGIC)] != MAGIC:
            raise AuditLogError(f"{path.name} is not an audit segment")
        for frame in read_frames(data):
            if isinstance(frame, FrameDamage):
                if frame.complete:
                    raise AuditLogError(
                        f"segment {path.name} is damaged at byte {frame.offset} "
                        f"({frame.reason}); run 'classroom-relay audit verify'"
                    )
                return  # being written right now
            ftype = _ftype(frame)
            if ftype is FrameType.KEY:
                self._key_fields[frame.seq] = frame.fields()
            if frame.seq < from_seq or (events_only and ftype is not FrameType.EVENT):
                continue
            yield self._record(frame, ftype, path.name, decrypt)

    def _record(self, frame: Frame, ftype: FrameType, segment: str, decrypt: bool) -> StoredRecord:
        fields = frame.fields()
        contents = None
        if decrypt and self.staff_key is not None and "enc" in fields:
            contents = decrypt_content(frame.seq, fields["enc"], self.data_key)
        return StoredRecord(frame.seq, ftype, segment, frame.offset, fields, contents)

    def data_key(self, key_seq: int) -> bytes:
        """The data key of KEY record ``key_seq`` (unwrapped once, then cached)."""
        key = self._data_keys.get(key_seq)
        if key is None:
            if self.staff_key is None:
                raise AuditLogError("reading contents needs the staff audit key (--bundle)")
            fields = self._key_fields.get(key_seq)
            if fields is None:
                fields = self._find_key(key_seq)
            key = unwrap_data_key(fields, self.staff_key, key_seq)
            self._data_keys[key_seq] = key
        return key

    def _find_key(self, key_seq: int) -> dict[str, Any]:
        for record in self.records(from_seq=key_seq, events_only=False, decrypt=False):
            if record.seq == key_seq and record.ftype is FrameType.KEY:
                return record.fields
            break
        raise AuditLogError(f"record {key_seq} is not a key record (the log is damaged)")

    def record_at(self, segment: str, offset: int, *, decrypt: bool = True) -> StoredRecord:
        """The record whose frame starts at ``offset`` in ``segment`` (as the index says)."""
        path = self.directory / "segments" / segment
        try:
            with path.open("rb") as f:
                f.seek(offset)
                head = f.read(4)
                length = int.from_bytes(head, "big")
                data = head + f.read(length + 4)
        except OSError as exc:
            raise AuditLogError(f"segment {segment} cannot be read: {exc}") from None
        for frame in read_frames(data, 0):
            if isinstance(frame, FrameDamage):
                break
            shifted = Frame(frame.seq, frame.ftype, frame.record, offset, offset + frame.end)
            return self._record(shifted, _ftype(frame), segment, decrypt)
        raise AuditLogError(f"no record at byte {offset} of segment {segment} (index stale?)")


def _first(path: Path) -> int:
    return int(path.name.split(".", 1)[0])


def _ftype(frame: Frame) -> FrameType:
    try:
        return FrameType(frame.ftype)
    except ValueError:
        raise AuditLogError(f"record {frame.seq} has an unknown type {frame.ftype}") from None


__all__ = ["AuditReader", "StoredRecord"]
