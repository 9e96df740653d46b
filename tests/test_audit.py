"""The JSON-lines audit sink: record format and group commit with shared receipts."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
from pathlib import Path

import pytest

from relay.audit import AuditEvent, EventKind, JsonlAuditSink, _line
from relay.errors import AuditError

TEXTS = [
    "plain",
    "",
    'quote " and backslash \\ and slash /',
    "new\nline\ttab\rreturn",
    "\x00\x01\x1f\x7f\x85 controls",
    "é ü 漢字 🙂 \u2028\u2029 \ud800",
    "</script>",
]


class Str(str):
    """A str subclass: left to the json encoder."""


def _expected(event: AuditEvent) -> str:
    return json.dumps(event.to_record(), ensure_ascii=False, separators=(",", ":")) + "\n"


def test_lines_are_what_json_dumps_makes() -> None:
    times: list[float] = [0.0, 1.5, 1763884800.123456, 1e300, -2.5, float("nan"), float("inf")]
    seqs: list[int | None] = [None, 0, 7, 2**63 - 1, 10**30]
    count = 0
    for kind, time, seq, text in itertools.product(EventKind, times, seqs, TEXTS):
        event = AuditEvent(
            kind,
            time,
            session="py101",
            actor=text or None,
            msg_id="m-1",
            seq=seq,
            content=text,
            detail=None if seq is None else text[::-1],
        )
        assert _line(event) == _expected(event), event
        count += 1
    odd = AuditEvent(EventKind.RELOADED, 1.0, detail=Str("sub"), seq=True)  # type: ignore[arg-type]
    assert _line(odd) == _expected(odd)
    bare = AuditEvent(EventKind.RELAY_STARTED, 2.0)
    assert _line(bare) == '{"time":2.0,"kind":"relay.started","code":"CR001I"}\n'
    assert count > 1000


async def test_one_receipt_per_turn_after_the_records_are_written(tmp_path: Path) -> None:
    sink = JsonlAuditSink(tmp_path / "events.jsonl")
    first = sink.submit([AuditEvent(EventKind.RELOADED, 1.0, detail="a")])
    second = sink.submit([AuditEvent(EventKind.RELOADED, 2.0, detail="b")])
    assert first is second  # one commit, one receipt
    assert not (tmp_path / "events.jsonl").read_text()
    await first
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert [json.loads(x)["detail"] for x in lines] == ["a", "b"]
    third = sink.submit([AuditEvent(EventKind.RELOADED, 3.0, detail="c")])
    assert third is not first
    await third
    assert sink.records_written == 3
    await sink.close()


class BrokenWriter(io.StringIO):
    def flush(self) -> None:
        raise OSError("disk full")


async def test_a_failed_commit_fails_every_submission_of_the_turn(tmp_path: Path) -> None:
    sink = JsonlAuditSink(tmp_path / "events.jsonl", writer=BrokenWriter())
    receipts = [sink.submit([AuditEvent(EventKind.RELOADED, float(i))]) for i in range(3)]
    for receipt in receipts:
        with pytest.raises(AuditError):
            await receipt
    assert not sink.healthy
    with pytest.raises(AuditError):
        await sink.submit([AuditEvent(EventKind.RELOADED, 9.0)])
    sink.replace_writer(io.StringIO())
    await sink.submit([AuditEvent(EventKind.RELOADED, 10.0)])
    assert sink.healthy
    await asyncio.sleep(0)
