"""Kill -9 under load: a real ``classroom-relay serve`` process is killed with SIGKILL while
an instructor sends chat as fast as the acks come back. Every message acknowledged to its
sender (and every message a learner received) must be in the audit log, the log must
verify, and the next start must cut a torn tail, record the repair, and go on."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from relay.audit_keys import load_signing_public, load_staff_private
from relay.audit_read import AuditReader
from relay.audit_store import CheckpointSink, list_segments
from relay.auditlog import Frame, SegmentSource, VerifyReport, read_frames, verify_log
from relay.client import RelayClient
from relay.errors import ClientError
from relay.messages import AckStatus, ChatEvent
from tests.conftest import PINS, Facility

pytestmark = pytest.mark.integration

KILL_AFTER_ACKS = 300
"""Acknowledged messages before the kill (the kill lands while more are in flight)."""
MAX_MESSAGES = 20_000
"""Bounds the sending loop should the kill never come."""
WINDOW = 32
"""Chat messages in flight at once."""


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    outside_url: str
    inside_url: str
    log: Path


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def serve(facility: Facility, log: Path) -> Served:
    """``classroom-relay serve`` on free loopback ports; stderr to ``log`` (a file: an
    unread pipe could stall the relay under load)."""
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "relay.cli",
            "--home",
            str(facility.home.root),
            "serve",
            "--outside",
            "127.0.0.1:0",
            "--inside",
            "127.0.0.1:0",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    assert proc.stdout is not None
    banner = ""
    try:
        for _ in range(20):
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            banner += line
            if not line or "Stop with Ctrl-C" in line:
                break
        outside = re.search(r"outside \(instructors\): 127\.0\.0\.1:(\d+)", banner)
        inside = re.search(r"inside \(machines, staff\): 127\.0\.0\.1:(\d+)", banner)
        assert outside is not None, banner + tail(log)
        assert inside is not None, banner
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return Served(
        proc, f"wss://localhost:{outside.group(1)}", f"wss://localhost:{inside.group(1)}", log
    )


async def stop(served: Served) -> None:
    if served.proc.returncode is None:
        served.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(served.proc.communicate(), 30)
    assert served.proc.returncode == 0, tail(served.log)


@contextlib.asynccontextmanager
async def lesson(facility: Facility, served: Served) -> AsyncIterator[Lesson]:
    """alice (instructor) and l1001 at pc-01 in py101; neither reconnects."""
    teacher = RelayClient(
        facility.bundle("alice"), "py101", relay_url=served.outside_url, reconnect=False
    )
    learner = RelayClient(
        facility.bundle("pc-01"),
        "py101",
        relay_url=served.inside_url,
        learner="l1001",
        pin=PINS["l1001"],
        reconnect=False,
    )
    await asyncio.wait_for(teacher.connect(), 30)
    try:
        await asyncio.wait_for(learner.connect(), 30)
        try:
            current = Lesson(teacher, learner)
            readers = [
                asyncio.create_task(current.read_learner()),
                asyncio.create_task(current.drain(teacher)),
            ]
            try:
                yield current
            finally:
                for task in readers:
                    task.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
        finally:
            await learner.close(say_bye=False)
    finally:
        await teacher.close(say_bye=False)


@dataclass
class Lesson:
    teacher: RelayClient
    learner: RelayClient
    acked: list[str] = field(default_factory=list)
    """Texts whose ack said delivered."""
    received: list[str] = field(default_factory=list)
    """Texts the learner received from the teacher."""
    others: list[str] = field(default_factory=list)
    """Acks that said anything else (there should be none)."""
    enough: asyncio.Event = field(default_factory=asyncio.Event)

    async def read_learner(self) -> None:
        async for event in self.learner.events():
            if isinstance(event, ChatEvent):
                self.received.append(event.text)

    @staticmethod
    async def drain(client: RelayClient) -> None:
        async for _ in client.events():
            pass

    async def send(self, worker: int, count: int, kill_after: int | None) -> None:
        """Send ``text-W-N`` messages one after another, each once its ack came back;
        stop at the first error (the relay is gone)."""
        for n in range(count):
            text = f"loop lesson line {worker}-{n}: for i in range(3): print(i)"
            try:
                ack = await asyncio.wait_for(self.teacher.chat(text), 30)
            except (ClientError, TimeoutError):
                return
            if ack.status is AckStatus.DELIVERED:
                self.acked.append(text)
            else:
                self.others.append(f"{ack.status}: {ack.text}")
            if kill_after is not None and len(self.acked) >= kill_after:
                self.enough.set()


def delivered_contents(facility: Facility) -> list[str]:
    reader = AuditReader(facility.home.audit_dir, load_staff_private(facility.home.root, None))
    return [
        str(r.contents["content"])
        for r in reader.records()
        if r.kind == "message.delivered" and r.contents is not None
    ]


def verify(facility: Facility) -> VerifyReport:
    home = facility.home
    sources = [
        SegmentSource(p.name, lambda p=p: p.read_bytes())  # type: ignore[misc]
        for p in list_segments(home.audit_dir)
    ]
    return verify_log(
        sources,
        signing_key=load_signing_public(home.root),
        tombstones=(),
        sink=CheckpointSink(home.checkpoint_sink(home.load_config())).read(),
    )


def tear_last_frame(facility: Facility) -> int:
    """Append the first half of the last segment's last frame again: what a write cut
    short by the crash leaves behind. Returns how many bytes were appended."""
    last = list_segments(facility.home.audit_dir)[-1]
    data = last.read_bytes()
    frames = [f for f in read_frames(data) if isinstance(f, Frame)]
    frame = data[frames[-1].offset : frames[-1].end]
    torn = frame[: len(frame) // 2]
    with last.open("ab") as f:
        f.write(torn)
    return len(torn)


async def test_sigkill_under_load_loses_no_acknowledged_message(
    facility: Facility, tmp_path: Path
) -> None:
    facility.raise_policy_chat_rate()
    facility.set_limits(msgs_per_second=1_000_000.0, msgs_burst=1_000_000)
    log = tmp_path / "relay.log"

    served = await serve(facility, log)
    try:
        async with lesson(facility, served) as live:
            per_worker = MAX_MESSAGES // WINDOW
            senders = [
                asyncio.create_task(live.send(w, per_worker, KILL_AFTER_ACKS))
                for w in range(WINDOW)
            ]
            try:
                await asyncio.wait_for(live.enough.wait(), 120)
            finally:
                # Mid-stream: WINDOW messages are in flight, some in an unfinished group.
                served.proc.send_signal(signal.SIGKILL)
                await asyncio.wait_for(served.proc.wait(), 30)
            await asyncio.wait_for(asyncio.gather(*senders), 60)
    finally:
        if served.proc.returncode is None:
            served.proc.kill()
            await served.proc.wait()
    assert served.proc.returncode == -signal.SIGKILL
    assert live.others == []
    assert len(live.acked) >= KILL_AFTER_ACKS
    assert len(live.acked) < MAX_MESSAGES  # the kill came mid-stream

    # The log as the kill left it: every acknowledged and every received message is in it.
    logged = set(delivered_contents(facility))
    missing = [t for t in live.acked if t not in logged]
    assert missing == [], f"{len(missing)} acknowledged message(s) not in the log"
    unlogged = [t for t in live.received if t not in logged]
    assert unlogged == [], f"{len(unlogged)} received message(s) not in the log"
    report = verify(facility)
    if not report.ok:
        # A kill can leave an unfinished frame at the very end, nothing else.
        (problem,) = report.problems
        assert problem.where == list_segments(facility.home.audit_dir)[-1].name
        assert "ends inside" in problem.what, str(problem)

    # What a write cut short leaves (a kill rarely does it; a power cut may): the next
    # start cuts it back to the last complete record and records the repair.
    torn = tear_last_frame(facility)
    assert not verify(facility).ok

    served = await serve(facility, log)
    try:
        async with lesson(facility, served) as live_again:
            await live_again.send(WINDOW, 3, None)  # texts not sent before
    finally:
        await stop(served)
    assert len(live_again.acked) == 3

    report = verify(facility)
    assert report.ok, [str(p) for p in report.problems]
    assert report.unsigned_tail == 0  # a clean stop signs everything
    reader = AuditReader(facility.home.audit_dir)
    repaired = [r for r in reader.records() if r.kind == "audit.repaired"]
    assert len(repaired) >= 1
    assert f"{torn} bytes" in repaired[-1].fields["detail"]
    logged_after = delivered_contents(facility)
    assert set(live.acked) <= set(logged_after)
    assert set(live_again.acked) <= set(logged_after)
    assert len(logged_after) == len(set(logged_after))  # nothing recorded twice
