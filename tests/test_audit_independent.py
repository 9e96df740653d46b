"""An independent audit log verifier, written only from ``docs/audit.md``, with only
``cryptography``, ``msgpack`` and the standard library: if the document were incomplete
or wrong, this could not check (or read) a log the relay wrote.

Nothing from ``relay`` is imported here except to write the log under test (through
``tests.audit_logs``), and the golden vectors are read as plain files.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VECTORS = Path(__file__).parent / "audit_vectors"

# -- constants, from the document -------------------------------------------------------------

MAGIC = bytes.fromhex("4352415544495401")
MAX_RECORD = 16 * 1024 * 1024
EVENT, SEGMENT, KEY, CHECKPOINT = 0, 1, 2, 3


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def f64(x: float) -> bytes:
    return struct.pack(">d", x)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def fingerprint(raw: bytes) -> str:
    return sha(raw)[:8].hex()


def genesis(log_id: bytes) -> bytes:
    return sha(b"\x02" + b"classroom-relay audit log v1" + log_id)


def chain_next(previous: bytes, record: bytes) -> bytes:
    return sha(b"\x01" + previous + sha(b"\x00" + record))


def checkpoint_message(cp: dict[str, Any]) -> bytes:
    return (
        b"classroom-relay audit checkpoint v1\x00"
        + cp["log"]
        + u64(cp["seq"])
        + cp["chain"]
        + f64(cp["t"])
    )


def tombstone_message(t: dict[str, Any]) -> bytes:
    listing = "\n".join(f"{name} {digest}" for name, digest in t["segments"])
    return (
        b"classroom-relay audit tombstone v1\x00"
        + t["log"]
        + u64(t["first"])
        + u64(t["last"])
        + t["before"]
        + t["after"]
        + f64(t["t"])
        + sha(t["reason"].encode("utf-8"))
        + sha(listing.encode("utf-8"))
    )


def signed(key: Ed25519PublicKey, item: dict[str, Any], message: bytes) -> bool:
    if item.get("signer") != fingerprint(key.public_bytes_raw()):
        return False
    try:
        key.verify(item["sig"], message)
    except (InvalidSignature, KeyError, TypeError):
        return False
    return True


def unpack(data: bytes) -> dict[str, Any]:
    value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    assert isinstance(value, dict)
    return value


# -- the verifier ----------------------------------------------------------------------------


class Bad(Exception):
    def __init__(self, where: str, seq: int | None, offset: int | None, what: str) -> None:
        super().__init__(f"{where}, record {seq}, byte {offset}: {what}")
        self.where, self.seq, self.offset = where, seq, offset


@dataclass
class Result:
    records: int = 0
    checkpoints: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    """Every EVENT body, in order, with ``seq`` (the record's) and contents decrypted."""


def read_log(
    audit_dir: Path,
    sink_file: Path,
    signing: Ed25519PublicKey,
    staff: X25519PrivateKey | None = None,
    sink_name: str = "sink",
) -> Result:
    result = Result()
    log_id: bytes | None = None
    # 1. the sink, first
    sink: dict[str, Any] | None = None
    if sink_file.exists():
        sink = unpack(sink_file.read_bytes())
        if not signed(signing, sink, checkpoint_message(sink)):
            raise Bad(sink_name, sink["seq"], None, "forged sink")
        log_id = sink["log"]
    # 2. tombstones
    tombs: dict[int, tuple[str, dict[str, Any]]] = {}
    removed: set[str] = set()
    tomb_dir = audit_dir / "tombstones"
    for path in sorted(tomb_dir.glob("*.tomb")) if tomb_dir.is_dir() else []:
        t = unpack(path.read_bytes())
        tombs[t["first"]] = (path.name, t)
        if signed(signing, t, tombstone_message(t)):
            removed.update(name for name, _ in t["segments"])
    # 3. segments in order
    seg_dir = audit_dir / "segments"
    names = sorted(
        (p.name for p in seg_dir.glob("*.seg") if p.name not in removed),
        key=lambda n: int(n[:20]),
    )
    n, chain = 0, b""
    data_keys: dict[int, bytes] = {}
    for name in names:
        first = int(name[:20])
        while n + 1 < first:
            if n + 1 not in tombs:
                raise Bad(name, n + 1, None, "unexplained gap")
            tname, t = tombs[n + 1]
            if t["last"] >= first:
                raise Bad(tname, t["last"], None, "tombstone does not fit")
            if not signed(signing, t, tombstone_message(t)):
                raise Bad(tname, t["first"], None, "forged tombstone")
            if n == 0:
                log_id = log_id or t["log"]
                chain = genesis(log_id)
            if t["log"] != log_id or t["before"] != chain:
                raise Bad(tname, t["first"], None, "tombstone does not continue the chain")
            n, chain = t["last"], t["after"]
            result.gaps.append((t["first"], t["last"]))
        if n + 1 > first:
            raise Bad(name, first, None, "overlap")
        data = (seg_dir / name).read_bytes()
        if data[:8] != MAGIC:
            raise Bad(name, None, 0, "not a segment")
        pos = 8
        head = True
        # 4. the frames
        while pos < len(data):
            if len(data) - pos < 13:
                raise Bad(name, n + 1, pos, "ends inside a frame header")
            (length,) = struct.unpack_from(">I", data, pos)
            if length < 9 or length > MAX_RECORD:
                raise Bad(name, n + 1, pos, "impossible length")
            end = pos + 4 + length + 4
            if end > len(data):
                raise Bad(name, n + 1, pos, "ends inside a record")
            record = data[pos + 4 : pos + 4 + length]
            (crc,) = struct.unpack_from(">I", data, end - 4)
            if zlib.crc32(record) != crc:
                raise Bad(name, n + 1, pos, "CRC mismatch")
            seq, rtype = struct.unpack_from(">QB", record)
            if seq != n + 1:
                raise Bad(name, seq if seq == n else n + 1, pos, "out of order")
            before = chain if n else None
            if n == 0:
                if log_id is None:
                    log_id = unpack(record[9:])["log"]
                before = genesis(log_id)
            assert before is not None
            assert log_id is not None
            chain = chain_next(before, record)
            n = seq
            body = unpack(record[9:])
            if head != (rtype == SEGMENT):
                raise Bad(name, seq, pos, "header misplaced")
            if rtype == SEGMENT and (
                body["segment"] != name or body["log"] != log_id or body["prev"] != before
            ):
                raise Bad(name, seq, pos, "bad header")
            if rtype == CHECKPOINT:
                if not signed(signing, body, checkpoint_message(body)):
                    raise Bad(name, seq, pos, "forged checkpoint")
                if body["seq"] != seq - 1 or body["log"] != log_id or body["chain"] != before:
                    raise Bad(name, seq, pos, "checkpoint does not match")
                result.checkpoints += 1
            elif rtype == KEY and staff is not None:
                data_keys[seq] = unwrap(body, seq, staff)
            elif rtype == EVENT:
                event = dict(body, seq=seq)
                if "enc" in body and staff is not None:
                    key_seq, ciphertext = body["enc"]
                    plain = AESGCM(data_keys[key_seq]).decrypt(
                        bytes(4) + u64(seq),
                        ciphertext,
                        b"classroom-relay audit content v1" + u64(seq) + u64(key_seq),
                    )
                    event.update(unpack(plain))
                    del event["enc"]
                result.events.append(event)
            elif rtype not in (SEGMENT, KEY):
                raise Bad(name, seq, pos, "unknown type")
            # 5. the sink's record and its checkpoint
            if sink is not None and seq == sink["seq"] and chain != sink["chain"]:
                raise Bad(name, seq, pos, "chain does not match the sink")
            if sink is not None and seq == sink["seq"] + 1 and (rtype, body) != (CHECKPOINT, sink):
                raise Bad(name, seq, pos, "not the sink's checkpoint")
            result.records += 1
            head = False
            pos = end
    if sink is not None and n < sink["seq"] + 1:
        raise Bad(sink_name, n + 1, None, "cut off")
    if sink is None and result.records:
        raise Bad(sink_name, None, None, "no sink")
    return result


def unwrap(body: dict[str, Any], key_seq: int, staff: X25519PrivateKey) -> bytes:
    staff_raw = staff.public_key().public_bytes_raw()
    assert body["to"] == fingerprint(staff_raw)
    eph = body["eph"]
    shared = staff.exchange(X25519PublicKey.from_public_bytes(eph))
    kek = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"classroom-relay audit key wrap v1" + eph + staff_raw,
    ).derive(shared)
    key: bytes = AESGCM(kek).decrypt(
        bytes(12), body["wrapped"], b"classroom-relay audit data key v1" + u64(key_seq)
    )
    assert len(key) == 32
    return key


# -- tests -----------------------------------------------------------------------------------


def _keys() -> tuple[Ed25519PublicKey, X25519PrivateKey]:
    # The test keys of tests/audit_logs.py, as raw bytes: no relay object crosses over.
    from tests.audit_logs import SIGNING, STAFF

    signing_raw = SIGNING.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    staff_raw = STAFF.private_bytes_raw()
    return Ed25519PublicKey.from_public_bytes(signing_raw), X25519PrivateKey.from_private_bytes(
        staff_raw
    )


def test_a_log_the_store_wrote_verifies_and_decrypts(tmp_path: Path) -> None:
    from tests.audit_logs import chat_events, write_log

    events = chat_events(300)
    log = write_log(tmp_path / "log", events)
    signing, staff = _keys()
    result = read_log(log.audit, log.sink, signing, staff)
    assert len(list((log.audit / "segments").glob("*.seg"))) >= 3
    assert result.checkpoints >= 6
    assert len(result.events) == len(events)
    for got, sent in zip(result.events, events, strict=True):
        assert got["kind"] == "message.delivered"
        assert got["code"] == "CR300I"
        assert got["content"] == sent.content
        assert got["class_seq"] == sent.seq
        assert got["session"] == sent.session
        assert got["msg_id"] == sent.msg_id
        assert got["time"] == sent.time
        assert "delivered" not in got


def test_a_tampered_log_the_store_wrote_fails(tmp_path: Path) -> None:
    from tests.audit_logs import chat_events, write_log

    log = write_log(tmp_path / "log", chat_events(100))
    signing, _ = _keys()
    seg = sorted((log.audit / "segments").glob("*.seg"))[1]
    data = bytearray(seg.read_bytes())
    data[200] ^= 0x01
    seg.write_bytes(bytes(data))
    with pytest.raises(Bad) as bad:
        read_log(log.audit, log.sink, signing)
    assert bad.value.where == seg.name


def _vector_keys() -> tuple[Ed25519PublicKey, X25519PrivateKey]:
    keys = json.loads((VECTORS / "keys.json").read_text())
    return (
        Ed25519PublicKey.from_public_bytes(base64.b64decode(keys["signing_public"])),
        X25519PrivateKey.from_private_bytes(bytes.fromhex(keys["staff_private_hex"])),
    )


def _expected() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((VECTORS / "expected.json").read_text())
    return loaded


@pytest.mark.parametrize("case", sorted(_expected()))
def test_the_golden_vectors_agree_with_the_document(case: str) -> None:
    want = _expected()[case]
    signing, staff = _vector_keys()
    directory = VECTORS / case
    if want["ok"]:
        result = read_log(directory, directory / "sink", signing, staff)
        assert all(e["content"].startswith("message ") for e in result.events)
        assert len(result.gaps) == (1 if case.startswith("gap") else 0)
        return
    with pytest.raises(Bad) as bad:
        read_log(directory, directory / "sink", signing, staff)
    got = {"where": bad.value.where, "seq": bad.value.seq, "offset": bad.value.offset}
    assert got == want["problem"], bad.value
