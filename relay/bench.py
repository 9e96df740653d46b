"""``classroom-relay bench SCENARIO``: benchmarks, each with a baseline measured in the same run.

Scenarios register themselves in :data:`SCENARIOS`; ``classroom-relay bench`` without a
scenario lists them. ``policy`` times the content policy's decision per message on the
policy corpora and reports its recall and false-positive rate (no relay, no network).
``audit`` appends delivered-chat records to a fresh audit log with group commit (many
writers each awaiting its receipt, as the relay's classes do) and verifies the log; its
baselines are the same bytes written with as many write + fsync calls, one fsync per
record, and one SHA-256 per record over the same bytes. ``chat``:

* the *baseline* is a bare aiohttp WebSocket forwarder behind the same TLS set-up as the
  relay (TLS 1.3, the facility's outside server certificate, client certificates from the
  facility's credential bundles) that forwards every binary frame of the sender to every
  receiver, and nothing else;
* the *relay* is the real relay (:func:`relay.server.running_relay`): every message goes
  through the whole choke point (decode, authorise, policy, audit log, ordered delivery).

Both are driven by the same client code (raw aiohttp WebSockets, one connection per
participant, each with its own bundle) and the same flow control: the sender keeps at most
``--window`` messages in flight, where a message leaves the window once every receiver got
it (and, for the relay, once its ``ack`` arrived). Latency is measured from the moment the
sender hands the frame to its WebSocket to the moment a receiver's WebSocket returns it,
both on this process's monotonic clock.

Where the servers run (``--servers``): by default each in its own process (the relay as
``classroom-relay serve``, i.e. :func:`~relay.server.running_relay` on free loopback ports;
the forwarder as ``python -m relay.bench _serve-bare``), with all clients in this process;
or everything in this process and one event loop (how the design's measured facts were
taken). CPU time is reported too (this process plus the server process): it is steadier
than throughput on a shared machine.

The facility is a temporary one, built with the admin CLI in-process, with the per-participant
rate limit raised (the default 20 msg/s would measure the rate limiter, not the relay). It
has two classes: the 1 -> 1 runs use one, the fan-out runs the other, so that the fan-out
learners join a class without history (a join replays the class history).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import hashlib
import json
import math
import os
import platform
import random
import re
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

import aiohttp
import msgpack
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from policy.decisions import Action, Kind, Route, Subject
from policy.engine import ContentPolicy, default_policy, default_policy_files, load_policy
from relay import wire
from relay.audit import AuditEvent, EventKind
from relay.audit_store import AuditStore, CheckpointSink, list_segments
from relay.auditlog import MAGIC, Frame, SegmentSource, read_frames, verify_log
from relay.bundle import load_bundle
from relay.errors import AuditError, ConfigError
from relay.home import FacilityHome
from relay.identity import Listener, ParticipantRole
from relay.messages import Channel, Chat, Hello

PROG = "classroom-relay bench"

# ---------------------------------------------------------------------------------------
# the scenario registry
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scenario:
    """One benchmark: ``run`` takes the arguments after the scenario name, returns 0."""

    name: str
    summary: str
    run: Callable[[list[str]], int]


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, summary: str) -> Callable[[Callable[[list[str]], int]], Scenario]:
    """Register a benchmark under ``name`` (``classroom-relay bench NAME``)."""

    def register(run: Callable[[list[str]], int]) -> Scenario:
        if name in SCENARIOS:
            raise ValueError(f"benchmark scenario {name!r} registered twice")
        entry = Scenario(name, summary, run)
        SCENARIOS[name] = entry
        return entry

    return register


class BenchError(Exception):
    """The benchmark could not be carried out (set-up failed, a run did not complete)."""


# ---------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 < q <= 1)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True, slots=True)
class RunResult:
    """One measured run: ``messages`` sent, each to ``receivers`` receivers."""

    messages: int
    receivers: int
    received: int
    """Deliveries the receivers got (a run completes only when this is messages * receivers)."""
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_s: float = 0.0
    """CPU time used during the run: this process, plus the server's when it has its own."""
    offered_msgs_per_s: float | None = None
    """For a paced run: the rate the sender aimed at (None: as fast as the window allows)."""

    def __post_init__(self) -> None:
        if self.messages <= 0 or self.receivers <= 0 or self.seconds <= 0:
            raise ValueError("a run has messages, receivers and a positive duration")

    @property
    def deliveries(self) -> int:
        return self.messages * self.receivers

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds

    @property
    def deliveries_per_s(self) -> float:
        return self.deliveries / self.seconds

    @property
    def cpu_us_per_msg(self) -> float:
        return self.cpu_s / self.messages * 1e6

    @property
    def cpu_us_per_delivery(self) -> float:
        return self.cpu_s / self.deliveries * 1e6


@dataclass(frozen=True, slots=True)
class TargetResult:
    """What one system under test (bare forwarder or relay) achieved."""

    name: str
    one: RunResult
    """1 -> 1, as fast as the window allows (the median of ``one_runs``)."""
    half: RunResult
    """1 -> 1, paced at half of ``one``'s rate."""
    fanout: RunResult
    """1 -> N, as fast as the window allows (the median of ``fanout_runs``)."""
    one_runs: tuple[RunResult, ...]
    fanout_runs: tuple[RunResult, ...]

    @property
    def runs(self) -> tuple[RunResult, ...]:
        return (*self.one_runs, self.half, *self.fanout_runs)


def median_run(runs: Sequence[RunResult]) -> RunResult:
    """The run with the median throughput (the lower middle one of an even count)."""
    if not runs:
        raise ValueError("no runs")
    ordered = sorted(runs, key=lambda r: r.msgs_per_s)
    return ordered[(len(ordered) - 1) // 2]


# Targets from the issue.
TARGET_RATIO = 0.5
TARGET_P99_MS = 20.0


@dataclass(frozen=True, slots=True)
class ChatReport:
    bare: TargetResult
    relay: TargetResult
    messages: int
    fanout_messages: int
    fanout: int
    window: int
    repeat: int
    servers: str
    setup_s: float
    total_s: float
    audit_records: int

    @property
    def ratio(self) -> float:
        return self.relay.one.msgs_per_s / self.bare.one.msgs_per_s

    @property
    def fanout_ratio(self) -> float:
        return self.relay.fanout.deliveries_per_s / self.bare.fanout.deliveries_per_s

    def to_json(self) -> dict[str, Any]:
        r, b = self.relay, self.bare
        return {
            "scenario": "chat",
            "bare_msgs_per_s": round(b.one.msgs_per_s, 1),
            "relay_msgs_per_s": round(r.one.msgs_per_s, 1),
            "ratio": round(self.ratio, 3),
            "p50_ms": round(r.half.p50_ms, 3),
            "p99_ms": round(r.half.p99_ms, 3),
            "half_load_msgs_per_s": round(r.half.offered_msgs_per_s or 0.0, 1),
            "half_load_achieved_msgs_per_s": round(r.half.msgs_per_s, 1),
            "max_load_p50_ms": round(r.one.p50_ms, 3),
            "max_load_p99_ms": round(r.one.p99_ms, 3),
            "fanout_deliveries_per_s": round(r.fanout.deliveries_per_s, 1),
            "fanout_msgs_per_s": round(r.fanout.msgs_per_s, 1),
            "fanout_p50_ms": round(r.fanout.p50_ms, 3),
            "fanout_p99_ms": round(r.fanout.p99_ms, 3),
            "bare_fanout_deliveries_per_s": round(b.fanout.deliveries_per_s, 1),
            "bare_fanout_p50_ms": round(b.fanout.p50_ms, 3),
            "bare_fanout_p99_ms": round(b.fanout.p99_ms, 3),
            "fanout_ratio": round(self.fanout_ratio, 3),
            "bare_max_load_p50_ms": round(b.one.p50_ms, 3),
            "bare_max_load_p99_ms": round(b.one.p99_ms, 3),
            "bare_half_load_p50_ms": round(b.half.p50_ms, 3),
            "bare_half_load_p99_ms": round(b.half.p99_ms, 3),
            "target_ratio": TARGET_RATIO,
            "target_p99_ms": TARGET_P99_MS,
            "ratio_ok": self.ratio >= TARGET_RATIO,
            "p99_ok": r.half.p99_ms <= TARGET_P99_MS,
            "messages": self.messages,
            "fanout_messages": self.fanout_messages,
            "fanout": self.fanout,
            "window": self.window,
            "bare_cpu_us_per_msg": round(b.one.cpu_us_per_msg, 1),
            "relay_cpu_us_per_msg": round(r.one.cpu_us_per_msg, 1),
            "bare_fanout_cpu_us_per_delivery": round(b.fanout.cpu_us_per_delivery, 2),
            "relay_fanout_cpu_us_per_delivery": round(r.fanout.cpu_us_per_delivery, 2),
            "repeat": self.repeat,
            "relay_msgs_per_s_runs": [round(x.msgs_per_s, 1) for x in r.one_runs],
            "bare_msgs_per_s_runs": [round(x.msgs_per_s, 1) for x in b.one_runs],
            "fanout_deliveries_per_s_runs": [round(x.deliveries_per_s, 1) for x in r.fanout_runs],
            "bare_fanout_deliveries_per_s_runs": [
                round(x.deliveries_per_s, 1) for x in b.fanout_runs
            ],
            "deliveries": {
                t.name: {
                    "expected": sum(x.deliveries for x in t.runs),
                    "received": sum(x.received for x in t.runs),
                }
                for t in (b, r)
            },
            "audit_records": self.audit_records,
            "servers": self.servers,
            "rate_limit_raised": True,
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "cpu_count": os.cpu_count() or 0,
            "setup_s": round(self.setup_s, 2),
            "total_s": round(self.total_s, 2),
        }


# ---------------------------------------------------------------------------------------
# the temporary facility
# ---------------------------------------------------------------------------------------

CLASS_ONE = "bench-one"
CLASS_FANOUT = "bench-fanout"
CLASSROOM = "room-a"
INSTRUCTOR = "teacher"
PIN = "482913"
RAISED_LIMITS = "msgs_per_second = 1000000.0\nmsgs_burst = 1000000\n"
RAISED_POLICY_RATES = (
    "[rate.chat]\nperson_rate = 1000000.0\nperson_burst = 1000000\n"
    "session_rate = 1000000.0\nsession_burst = 1000000\nthrottle_s = 0.0\n\n"
)
# About 100 characters, like a learner's question.
CHAT_TEXT = (
    "Is it range(1, 10) or range(0, 10)? My loop prints nine numbers and I expected ten. Why?"
    " Thanks!"
)


@dataclass(frozen=True, slots=True)
class Facility:
    home: FacilityHome
    instructor_bundle: Path
    machine_bundles: tuple[Path, ...]
    learners: tuple[str, ...]


def _machine(i: int) -> str:
    return f"pc-{i + 1:02d}"


def _learner(i: int) -> str:
    return f"l{i + 1:03d}"


def build_facility(root: Path, learners: int, extra_classes: Sequence[str] = ()) -> Facility:
    """A facility with one instructor, ``learners`` machines and learners, and open
    classes: :data:`CLASS_ONE` (the first learner), :data:`CLASS_FANOUT` and each of
    ``extra_classes`` (every learner)."""
    from relay import cli  # the admin CLI, in-process (it imports this module lazily)

    home_dir = root / "facility"
    bundles = root / "bundles"
    bundles.mkdir()

    def admin(*args: str) -> None:
        code, _, err = cli.run_captured(home_dir, *args)
        if code != 0:
            raise BenchError(
                f"set-up failed: classroom-relay {' '.join(args)} exited with {code}: {err.strip()}"
            )

    admin("init", "--no-passphrase", "--facility", "Benchmark Facility")
    admin("enroll", "instructor", INSTRUCTOR, "--out", str(bundles / f"{INSTRUCTOR}.bundle"))
    machine_bundles = []
    names = []
    for i in range(learners):
        path = bundles / f"{_machine(i)}.bundle"
        admin("enroll", "machine", _machine(i), "--classroom", CLASSROOM, "--out", str(path))
        admin("learner", "add", _learner(i), "--pin", PIN)
        machine_bundles.append(path)
        names.append(_learner(i))
    # Two classes: the fan-out class starts with an empty history, so its learners join
    # without a replay of the 1 -> 1 runs.
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    classes = [(CLASS_ONE, names[:1]), (CLASS_FANOUT, names)]
    classes += [(class_id, names) for class_id in extra_classes]
    for class_id, learner_ids in classes:
        roster: list[str] = []
        for name in learner_ids:
            roster += ["--learner", name]
        admin(
            "schedule",
            "add",
            "--id",
            class_id,
            "--title",
            f"Benchmark class {class_id}",
            "--instructor",
            INSTRUCTOR,
            "--classroom",
            CLASSROOM,
            *roster,
            "--start",
            (now - dt.timedelta(minutes=5)).isoformat(),
            "--end",
            (now + dt.timedelta(hours=2)).isoformat(),
        )
    home = FacilityHome(home_dir)
    raise_rate_limit(home)
    return Facility(home, bundles / f"{INSTRUCTOR}.bundle", tuple(machine_bundles), tuple(names))


def raise_rate_limit(home: FacilityHome) -> None:
    """Raise the per-connection rate limit (relay.toml ``[limits]``) and the policy's chat
    rate limits (policy.toml ``[rate.chat]``) out of the benchmark's way."""
    text = home.relay_toml.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    try:
        at = next(i for i, line in enumerate(lines) if line.strip() == "[limits]")
    except StopIteration:
        raise BenchError(f"{home.relay_toml} has no [limits] table") from None
    lines.insert(at + 1, RAISED_LIMITS)
    home.relay_toml.write_text("".join(lines), encoding="utf-8")
    limits = home.load_config().limits
    if limits.msgs_per_second < 1e6 or limits.msgs_burst < 1e6:
        raise BenchError("the raised rate limit did not take effect")
    raise_policy_chat_rate(home)


def raise_policy_chat_rate(home: FacilityHome) -> None:
    """Replace the policy's per-person and per-class chat rate limits (policy.toml
    ``[rate.chat]``) with limits no benchmark or load test reaches."""
    policy = home.policy_toml.read_text(encoding="utf-8")
    policy, found = re.subn(
        r"(?ms)^\[rate\.chat\]\n.*?(?=^\[|\Z)", RAISED_POLICY_RATES, policy, count=1
    )
    if not found:
        policy += "\n" + RAISED_POLICY_RATES
    home.policy_toml.write_text(policy, encoding="utf-8")
    chat = load_policy(home.policy_toml).rates.get(Kind.CHAT)
    if chat is not None and (chat.person_rate < 1e6 or chat.session_burst < 1e6):
        raise BenchError("the raised policy rate limit did not take effect")


# ---------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------


class _Probe:
    """Book-keeping of one run: send times, outstanding receipts, latencies, the window."""

    def __init__(self, tag: str, count: int, receivers: int, acked: bool, window: int) -> None:
        self.prefix = f"{tag}-"
        self.count = count
        self.receivers = receivers
        self.sent = [0.0] * count
        self.outstanding = [receivers + (1 if acked else 0)] * count
        self.latencies: list[float] = []
        self.window = asyncio.Semaphore(window)
        self.finished = 0
        self.first_sent = 0.0
        self.last_done = 0.0
        self.done = asyncio.Event()
        self.failure: str | None = None

    def _index(self, msg_id: object) -> int | None:
        if not isinstance(msg_id, str) or not msg_id.startswith(self.prefix):
            return None
        try:
            i = int(msg_id[len(self.prefix) :])
        except ValueError:
            return None
        return i if 0 <= i < self.count else None

    def delivered(self, msg_id: object, now: float) -> bool:
        """A receiver got a message; False if it is not one of this run's."""
        i = self._index(msg_id)
        if i is None:
            return False
        self.latencies.append(now - self.sent[i])
        self._settle(i, now)
        return True

    def acked(self, ref: object, status: object, text: object, now: float) -> None:
        i = self._index(ref)
        if i is None:
            return
        if status != "delivered":
            self.fail(f"the relay answered {status}: {text}")
            return
        self._settle(i, now)

    def _settle(self, i: int, now: float) -> None:
        left = self.outstanding[i] - 1
        self.outstanding[i] = left
        if left == 0:
            self.finished += 1
            self.window.release()
            if self.finished == self.count:
                self.last_done = now
                self.done.set()
        elif left < 0:
            self.fail(f"message {i} was received more often than sent")

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
        self.done.set()


def _retrieve(fut: asyncio.Future[None]) -> None:
    """Mark a future's exception as seen (it is reported elsewhere)."""
    if not fut.cancelled():
        fut.exception()


class _Failing(Protocol):
    def fail(self, reason: str) -> None: ...


class _Reader:
    """One client WebSocket and its reader task: the welcome, relay errors and a lost
    connection are handled here; :meth:`_frame` (per benchmark) takes the rest."""

    def __init__(self, name: str, ws: aiohttp.ClientWebSocketResponse, bench: Any) -> None:
        self.name = name
        self.ws = ws
        self.bench = bench
        self.welcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.welcome.add_done_callback(_retrieve)
        self.reader = asyncio.get_running_loop().create_task(self._read())

    def _frame(self, kind: object, frame: dict[str, Any], now: float) -> None:
        """A frame other than ``welcome`` and ``error``."""

    def _run(self) -> _Failing | None:
        """The measured run in progress, told when this connection fails."""
        return None

    async def _read(self) -> None:
        unpack = msgpack.unpackb
        clock = time.perf_counter
        async for msg in self.ws:
            if msg.type is not aiohttp.WSMsgType.BINARY:
                continue
            now = clock()
            frame = unpack(msg.data)
            kind = frame.get("t")
            if kind == "welcome":
                if not self.welcome.done():
                    self.welcome.set_result(None)
            elif kind == "error":
                self._lost(f"{frame.get('error')}: {frame.get('text')}")
            else:
                self._frame(kind, frame, now)
        if not self.bench.closing:
            self._lost(f"the connection closed (code {self.ws.close_code})")

    def _lost(self, reason: str) -> None:
        text = f"{self.name}: {reason}"
        if not self.welcome.done():
            self.welcome.set_exception(BenchError(text))
        run = self._run()
        if run is not None:
            run.fail(text)
        self.bench.problems.append(text)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), timeout=2.0)
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader


class _Peer(_Reader):
    """A chat participant: counts this run's messages it receives, and the sender's acks."""

    def __init__(self, name: str, ws: aiohttp.ClientWebSocketResponse, bench: _Bench) -> None:
        self.received = 0
        """This run's messages this peer received (reset by :meth:`_Bench.run`)."""
        super().__init__(name, ws, bench)

    def _frame(self, kind: object, frame: dict[str, Any], now: float) -> None:
        probe = self.bench.probe
        if probe is None:
            return
        if kind == "chat":
            if self is not self.bench.sender and probe.delivered(frame.get("id"), now):
                self.received += 1
        elif kind == "ack":
            probe.acked(frame.get("ref"), frame.get("status"), frame.get("text"), now)

    def _run(self) -> _Failing | None:
        probe: _Probe | None = self.bench.probe
        return probe


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """Where and how one participant connects (URL, bundle, optional ``hello``)."""

    name: str
    url: str
    bundle: Path
    hello: bytes | None


async def _open_ws(http: aiohttp.ClientSession, ep: _Endpoint) -> aiohttp.ClientWebSocketResponse:
    """A WebSocket to ``ep.url`` with ``ep.bundle``'s client certificate (TLS 1.3)."""
    ctx = load_bundle(ep.bundle).client_ssl_context(ep.bundle)
    try:
        return await http.ws_connect(
            ep.url,
            protocols=(wire.SUBPROTOCOL,),
            ssl=ctx,
            compress=0,
            autoping=True,
            heartbeat=20.0,
            max_msg_size=wire.CLIENT_SIDE_LIMITS.max_frame_bytes,
            timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
        )
    except (aiohttp.ClientError, OSError) as exc:
        raise BenchError(f"{ep.name} could not connect to {ep.url}: {exc}") from exc


class _Bench:
    """Drives one system under test: connects peers, runs windowed and paced loads."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        acked: bool,
        window: int,
        cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self.http = http
        self.cpu = cpu
        self.acked = acked
        self.window = window
        self.sender: _Peer | None = None
        self.receivers: list[_Peer] = []
        self.probe: _Probe | None = None
        self.problems: list[str] = []
        self.closing = False
        self._runs = 0

    async def connect(self, ep: _Endpoint) -> _Peer:
        ws = await _open_ws(self.http, ep)
        peer = _Peer(ep.name, ws, self)
        if ep.hello is None:
            peer.welcome.set_result(None)
        else:
            await ws.send_bytes(ep.hello)
            try:
                await asyncio.wait_for(asyncio.shield(peer.welcome), timeout=30.0)
            except TimeoutError:
                await peer.close()
                raise BenchError(f"{ep.name}: no welcome within 30 s") from None
            except BaseException:
                await peer.close()
                raise
        return peer

    async def add_sender(self, ep: _Endpoint) -> None:
        self.sender = await self.connect(ep)

    async def add_receivers(self, eps: Sequence[_Endpoint]) -> None:
        results = await asyncio.gather(*(self.connect(ep) for ep in eps), return_exceptions=True)
        failures = []
        for result in results:
            if isinstance(result, _Peer):
                self.receivers.append(result)
            else:
                failures.append(result)
        if failures:
            raise BenchError(f"{len(failures)} receiver(s) failed to join: {failures[0]}")

    async def close(self) -> None:
        self.closing = True
        peers = [*self.receivers, *([self.sender] if self.sender else [])]
        await asyncio.gather(*(p.close() for p in peers))

    def _frames(self, tag: str, count: int) -> list[bytes]:
        return [
            wire.encode_client(Chat(id=f"{tag}-{i}", channel=Channel.CLASS, text=CHAT_TEXT))
            for i in range(count)
        ]

    async def run(self, count: int, rate: float | None = None) -> RunResult:
        """Send ``count`` messages: as fast as the window allows, or paced at ``rate``/s."""
        sender = self.sender
        if sender is None or not self.receivers:
            raise BenchError("connect a sender and receivers first")
        if self.problems:
            raise BenchError(f"{len(self.problems)} connection(s) lost: {self.problems[0]}")
        self._runs += 1
        tag = f"r{self._runs}"
        frames = self._frames(tag, count)
        for peer in self.receivers:
            peer.received = 0
        probe = _Probe(tag, count, len(self.receivers), self.acked, self.window)
        self.probe = probe
        timeout = 60.0 + (count / rate if rate else 0.0)
        cpu_start = self.cpu()
        task = asyncio.get_running_loop().create_task(self._send(sender.ws, probe, frames, rate))
        try:
            await asyncio.wait_for(probe.done.wait(), timeout=timeout)
        except TimeoutError:
            probe.fail(
                f"timed out after {timeout:g} s with {probe.finished} of {count} messages completed"
            )
        finally:
            self.probe = None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        cpu_s = self.cpu() - cpu_start
        if task.done() and not task.cancelled() and task.exception() is not None:
            probe.fail(f"sending failed: {task.exception()}")
        short = [p.name for p in self.receivers if p.received != count]
        if probe.failure is None and short:
            probe.fail(f"{len(short)} receiver(s) did not get every message, e.g. {short[0]}")
        if probe.failure is not None:
            raise BenchError(probe.failure)
        lat = sorted(probe.latencies)
        return RunResult(
            messages=count,
            receivers=len(self.receivers),
            received=len(lat),
            seconds=probe.last_done - probe.first_sent,
            p50_ms=percentile(lat, 0.50) * 1e3,
            p99_ms=percentile(lat, 0.99) * 1e3,
            max_ms=lat[-1] * 1e3,
            cpu_s=cpu_s,
            offered_msgs_per_s=rate,
        )

    @staticmethod
    async def _send(
        ws: aiohttp.ClientWebSocketResponse, probe: _Probe, frames: list[bytes], rate: float | None
    ) -> None:
        clock = time.perf_counter
        window = probe.window
        sent = probe.sent
        start = clock() + 0.005
        probe.first_sent = start if rate else clock()
        for i, frame in enumerate(frames):
            if rate:
                delay = start + i / rate - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
            await window.acquire()
            sent[i] = clock()
            await ws.send_bytes(frame)


# ---------------------------------------------------------------------------------------
# the systems under test
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Urls:
    sender: str
    receivers: str
    server_pid: int | None = None
    """The server's process when it runs in its own (its CPU time is counted too)."""


def _process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of another process (Linux /proc); 0.0 when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
        fields = stat.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    except (OSError, ValueError, IndexError):
        return 0.0
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_clock(server_pid: int | None) -> Callable[[], float]:
    """CPU seconds used by this process (clients, and in-process servers) and the server."""
    if server_pid is None:
        return time.process_time
    return lambda: time.process_time() + _process_cpu_seconds(server_pid)


class BareForwarder:
    """The baseline: forward every binary frame of a sender to every receiver. Nothing else."""

    def __init__(self) -> None:
        self.receivers: list[web.WebSocketResponse] = []

    def _ws(self) -> web.WebSocketResponse:
        # The same WebSocket settings as the relay's listener.
        return web.WebSocketResponse(
            protocols=(wire.SUBPROTOCOL,),
            compress=False,
            max_msg_size=65_536,
            heartbeat=20.0,
            autoping=True,
        )

    async def send_handler(self, request: web.Request) -> web.StreamResponse:
        ws = self._ws()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.BINARY:
                for r in tuple(self.receivers):
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await r.send_bytes(msg.data)
        return ws

    async def receive_handler(self, request: web.Request) -> web.StreamResponse:
        ws = self._ws()
        await ws.prepare(request)
        self.receivers.append(ws)
        try:
            async for _ in ws:
                pass
        finally:
            self.receivers.remove(ws)
        return ws


@contextlib.asynccontextmanager
async def bare_forwarder(home: FacilityHome) -> AsyncIterator[tuple[str, int]]:
    """Serve the bare forwarder on a free loopback port, with the relay's outside TLS."""
    fwd = BareForwarder()
    app = web.Application()
    app.router.add_get("/send", fwd.send_handler)
    app.router.add_get("/receive", fwd.receive_handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(
            runner, "127.0.0.1", 0, ssl_context=home.server_ssl_context(Listener.OUTSIDE)
        )
        await site.start()
        host, port = runner.addresses[0][:2]
        yield str(host), int(port)
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def _bare_inprocess(home: FacilityHome) -> AsyncIterator[_Urls]:
    async with bare_forwarder(home) as (host, port):
        base = f"wss://{host}:{port}"
        yield _Urls(f"{base}/send", f"{base}/receive")


@contextlib.asynccontextmanager
async def _relay_inprocess(home: FacilityHome) -> AsyncIterator[_Urls]:
    from relay.server import running_relay

    async with running_relay(home, outside=("127.0.0.1", 0), inside=("127.0.0.1", 0)) as relay:
        addrs = relay.addresses
        assert addrs is not None
        yield _Urls(
            f"wss://127.0.0.1:{addrs.outside[1]}{_RELAY_PATH}",
            f"wss://127.0.0.1:{addrs.inside[1]}{_RELAY_PATH}",
        )


_RELAY_PATH = "/v1"


async def _spawn_server(
    argv: list[str], stderr: TextIO, wanted: Sequence[str]
) -> tuple[asyncio.subprocess.Process, dict[str, int]]:
    """Start a server process and read ``LABEL ... HOST:PORT`` lines for each wanted label."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=stderr, stdin=asyncio.subprocess.DEVNULL
    )
    assert proc.stdout is not None
    ports: dict[str, int] = {}
    deadline = time.monotonic() + 60.0
    try:
        while len(ports) < len(wanted):
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{' '.join(argv[:4])}: no address within 60 s")
            line = (await asyncio.wait_for(proc.stdout.readline(), left)).decode()
            if not line:
                raise BenchError(f"{' '.join(argv[:4])} exited early: {_tail(Path(stderr.name))}")
            for label in wanted:
                if line.strip().startswith(label):
                    ports[label] = int(line.rsplit(":", 1)[1])
    except BaseException:
        await _stop_process(proc)
        raise
    return proc, ports


def _tail(path: Path, lines: int = 10) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(nothing on stderr)"


def _log_file(path: Path) -> TextIO:
    """Where a server process's stderr goes (a file: a full pipe would stall the server)."""
    return path.open("w", encoding="utf-8")


async def _stop_process(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=10.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def _bare_subprocess(home: FacilityHome) -> AsyncIterator[_Urls]:
    argv = [sys.executable, "-m", "relay.bench", _SERVE_BARE, str(home.root)]
    with _log_file(home.root / "bench-bare.log") as log:
        proc, ports = await _spawn_server(argv, log, ["bare:"])
        try:
            base = f"wss://127.0.0.1:{ports['bare:']}"
            yield _Urls(f"{base}/send", f"{base}/receive", proc.pid)
        finally:
            await _stop_process(proc)


@contextlib.asynccontextmanager
async def _relay_subprocess(home: FacilityHome) -> AsyncIterator[_Urls]:
    argv = [sys.executable, "-m", "relay.cli", "--home", str(home.root), "serve"]
    argv += ["--outside", "127.0.0.1:0", "--inside", "127.0.0.1:0"]
    with _log_file(home.root / "bench-relay.log") as log:
        proc, ports = await _spawn_server(argv, log, ["outside", "inside"])
        try:
            yield _Urls(
                f"wss://127.0.0.1:{ports['outside']}{_RELAY_PATH}",
                f"wss://127.0.0.1:{ports['inside']}{_RELAY_PATH}",
                proc.pid,
            )
        finally:
            await _stop_process(proc)


_SERVE_BARE = "_serve-bare"


def _serve_bare(root: str) -> int:
    """The bare forwarder as a process (``--servers subprocess``); stops on SIGTERM."""

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with bare_forwarder(FacilityHome(Path(root))) as (host, port):
            print(f"bare: {host}:{port}", flush=True)
            await stop.wait()

    asyncio.run(serve())
    return 0


# ---------------------------------------------------------------------------------------
# the chat scenario
# ---------------------------------------------------------------------------------------


DEFAULT_MESSAGES = 30_000
QUICK_MESSAGES = 600
DEFAULT_FANOUT = 30
MAX_FANOUT = 200
DEFAULT_REPEAT = 3


@dataclass(frozen=True, slots=True)
class ChatOptions:
    messages: int
    fanout: int
    window: int
    repeat: int
    servers: str
    json: bool

    def __post_init__(self) -> None:
        if self.messages < 10 or self.fanout < 1 or self.window < 1 or self.repeat < 1:
            raise ValueError("--messages >= 10, --fanout >= 1, --window >= 1, --repeat >= 1")
        if self.fanout > MAX_FANOUT:
            raise ValueError(f"--fanout <= {MAX_FANOUT}")

    @property
    def fanout_messages(self) -> int:
        """Fan-out runs send fewer messages: about 3 deliveries per 1 -> 1 message."""
        return max(10, 3 * self.messages // self.fanout)

    def warmup(self, count: int) -> int:
        return max(10, count // 5)


async def _measure(
    name: str,
    serve: Callable[[FacilityHome], contextlib.AbstractAsyncContextManager[_Urls]],
    facility: Facility,
    opts: ChatOptions,
    protocol: bool,
    say: Callable[[str], None],
) -> TargetResult:
    """Run the 1 -> 1, half-load and 1 -> N runs against one system under test.

    ``protocol``: speak classroom-relay.v1 (``hello``, wait for ``ack``) or just send frames.
    """

    def hello(class_id: str, learner: str | None) -> bytes | None:
        if not protocol:
            return None
        return wire.encode_client(
            Hello(
                id=f"hello-{learner or INSTRUCTOR}",
                session=class_id,
                learner=learner,
                pin=PIN if learner else None,
                client="classroom-relay-bench",
            )
        )

    def endpoints(class_id: str, urls: _Urls, count: int) -> tuple[_Endpoint, list[_Endpoint]]:
        sender = _Endpoint(
            INSTRUCTOR, urls.sender, facility.instructor_bundle, hello(class_id, None)
        )
        receivers = [
            _Endpoint(
                f"{_learner(i)}@{_machine(i)}",
                urls.receivers,
                path,
                hello(class_id, _learner(i)),
            )
            for i, path in enumerate(facility.machine_bundles[:count])
        ]
        return sender, receivers

    connector = aiohttp.TCPConnector(limit=0)
    async with serve(facility.home) as urls, aiohttp.ClientSession(connector=connector) as http:
        sender, receivers = endpoints(CLASS_ONE, urls, 1)
        bench = _Bench(http, acked=protocol, window=opts.window, cpu=cpu_clock(urls.server_pid))
        try:
            await bench.add_sender(sender)
            await bench.add_receivers(receivers)
            await bench.run(opts.warmup(opts.messages))
            one_runs = []
            for _ in range(opts.repeat):
                one_runs.append(await bench.run(opts.messages))
                say(f"  {name} 1 -> 1: {one_runs[-1].msgs_per_s:,.0f} msgs/s")
            one = median_run(one_runs)
            rate = one.msgs_per_s / 2
            half = await bench.run(max(10, opts.messages // 2), rate=rate)
            say(f"  {name} 1 -> 1 at {rate:,.0f} msgs/s: p99 {half.p99_ms:.2f} ms")
        finally:
            await bench.close()
        sender, receivers = endpoints(CLASS_FANOUT, urls, opts.fanout)
        bench = _Bench(http, acked=protocol, window=opts.window, cpu=cpu_clock(urls.server_pid))
        try:
            await bench.add_sender(sender)
            await bench.add_receivers(receivers)
            await bench.run(opts.warmup(opts.fanout_messages))
            fan_runs = []
            for _ in range(opts.repeat):
                fan_runs.append(await bench.run(opts.fanout_messages))
                rate = fan_runs[-1].deliveries_per_s
                say(f"  {name} 1 -> {opts.fanout}: {rate:,.0f} deliveries/s")
            fan = median_run(fan_runs)
        finally:
            await bench.close()
    return TargetResult(name, one, half, fan, tuple(one_runs), tuple(fan_runs))


async def _measure_both(
    facility: Facility, opts: ChatOptions, say: Callable[[str], None]
) -> tuple[TargetResult, TargetResult]:
    if opts.servers == "subprocess":
        bare_serve, relay_serve = _bare_subprocess, _relay_subprocess
    else:
        bare_serve, relay_serve = _bare_inprocess, _relay_inprocess
    bare = await _measure("bare", bare_serve, facility, opts, False, say)
    relay = await _measure("relay", relay_serve, facility, opts, True, say)
    return bare, relay


def run_chat(opts: ChatOptions, say: Callable[[str], None]) -> ChatReport:
    """Build a temporary facility, measure the forwarder and the relay, return the report."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        say(f"setting up a temporary facility with {opts.fanout} machines and learners ...")
        facility = build_facility(Path(tmp), opts.fanout)
        setup_s = time.perf_counter() - started
        bare, relay = asyncio.run(_measure_both(facility, opts, say))
        from relay.audit_read import AuditReader

        audit_records = sum(1 for _ in AuditReader(facility.home.audit_dir).records())
    return ChatReport(
        bare=bare,
        relay=relay,
        messages=opts.messages,
        fanout_messages=opts.fanout_messages,
        fanout=opts.fanout,
        window=opts.window,
        repeat=opts.repeat,
        servers=opts.servers,
        setup_s=setup_s,
        total_s=time.perf_counter() - started,
        audit_records=audit_records,
    )


def _verdict(ok: bool) -> str:
    return "ok" if ok else "below target"


def render_chat(report: ChatReport) -> str:
    b, r = report.bare, report.relay
    where = (
        "clients, bare forwarder and relay in ONE process and ONE event loop"
        if report.servers == "in-process"
        else "each server in its own process; all clients in this process"
    )
    rows = [
        ("", "bare", "relay", "relay/bare", "target"),
        (
            "1 -> 1 msgs/s",
            f"{b.one.msgs_per_s:,.0f}",
            f"{r.one.msgs_per_s:,.0f}",
            f"{report.ratio:.2f}",
            f">= {TARGET_RATIO} {_verdict(report.ratio >= TARGET_RATIO)}",
        ),
        (
            "  CPU us per message",
            f"{b.one.cpu_us_per_msg:,.0f}",
            f"{r.one.cpu_us_per_msg:,.0f}",
            f"{r.one.cpu_us_per_msg / b.one.cpu_us_per_msg:.2f}x",
            "",
        ),
        (
            "  p50 / p99 ms (max load)",
            f"{b.one.p50_ms:.2f} / {b.one.p99_ms:.2f}",
            f"{r.one.p50_ms:.2f} / {r.one.p99_ms:.2f}",
            "",
            "",
        ),
        (
            "  p50 / p99 ms (half load)",
            f"{b.half.p50_ms:.2f} / {b.half.p99_ms:.2f}",
            f"{r.half.p50_ms:.2f} / {r.half.p99_ms:.2f}",
            "",
            f"p99 <= {TARGET_P99_MS:g} ms {_verdict(r.half.p99_ms <= TARGET_P99_MS)}",
        ),
        (
            "  half load, msgs/s",
            f"{b.half.offered_msgs_per_s or 0:,.0f}",
            f"{r.half.offered_msgs_per_s or 0:,.0f}",
            "",
            "",
        ),
        (
            f"1 -> {report.fanout} deliveries/s",
            f"{b.fanout.deliveries_per_s:,.0f}",
            f"{r.fanout.deliveries_per_s:,.0f}",
            f"{report.fanout_ratio:.2f}",
            "",
        ),
        (
            "  CPU us per delivery",
            f"{b.fanout.cpu_us_per_delivery:,.1f}",
            f"{r.fanout.cpu_us_per_delivery:,.1f}",
            f"{r.fanout.cpu_us_per_delivery / b.fanout.cpu_us_per_delivery:.2f}x",
            "",
        ),
        (
            "  p50 / p99 ms",
            f"{b.fanout.p50_ms:.2f} / {b.fanout.p99_ms:.2f}",
            f"{r.fanout.p50_ms:.2f} / {r.fanout.p99_ms:.2f}",
            "",
            "",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    table = "\n".join(
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) if i < 4 else cell
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    )
    notes = [
        f"classroom-relay bench chat: Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU(s), loopback; {where}.",
        "TLS 1.3 with client certificates on every connection; rate limits raised for the "
        "benchmark (relay.toml msgs_per_second, policy.toml [rate.chat]); the default "
        "content policy decides every message; the relay's audit log "
        f"is written ({report.audit_records:,} records).",
        f"1 -> 1: {report.messages:,} messages; 1 -> {report.fanout}: "
        f"{report.fanout_messages:,} messages to {report.fanout} learners; "
        f"window {report.window} messages in flight; chat text {len(CHAT_TEXT)} characters; "
        f"full-load figures are the median of {report.repeat} run(s).",
        "The relay also sends the sender an ack (with sequence number and time) per message.",
        "Latency: sender's send to receiver's receive, same clock. Half load: paced at 50% of "
        "the 1 -> 1 maximum of the same system. At full load latency is mostly the window "
        "queue.",
        f"Took {report.total_s:.1f} s (set-up {report.setup_s:.1f} s).",
    ]
    return "\n".join([*notes, "", table])


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def chat_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{PROG} chat",
        description="Chat throughput and latency: a bare TLS WebSocket forwarder (baseline) "
        "and the relay through its whole choke point, 1 -> 1 and 1 -> N, on loopback.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quick", action="store_true", help="a small run (a few seconds; tests and CI)")
    p.add_argument(
        "--messages",
        type=_positive,
        metavar="N",
        help=f"messages per 1 -> 1 run (default {DEFAULT_MESSAGES}, --quick {QUICK_MESSAGES}); "
        "the 1 -> N runs send 3N/fanout",
    )
    p.add_argument(
        "--fanout",
        type=_positive,
        default=DEFAULT_FANOUT,
        metavar="N",
        help=f"receivers in the fan-out runs (default {DEFAULT_FANOUT})",
    )
    p.add_argument("--window", type=_positive, default=64, metavar="N", help="messages in flight")
    p.add_argument(
        "--repeat",
        type=_positive,
        metavar="N",
        help=f"measured runs at full load, the median is reported (default {DEFAULT_REPEAT}, "
        "--quick 1)",
    )
    p.add_argument(
        "--servers",
        choices=("in-process", "subprocess"),
        default="subprocess",
        help="run the bare forwarder and the relay each in its own process (default; the "
        "clients stay in this one), or everything in this process and event loop",
    )
    return p


@scenario("chat", "chat throughput and latency, relay vs a bare TLS WebSocket forwarder")
def chat_main(argv: list[str]) -> int:
    try:
        args = chat_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    messages = args.messages or (QUICK_MESSAGES if args.quick else DEFAULT_MESSAGES)
    try:
        opts = ChatOptions(
            messages=messages,
            fanout=args.fanout,
            window=args.window,
            repeat=args.repeat or (1 if args.quick else DEFAULT_REPEAT),
            servers=args.servers,
            json=args.json,
        )
    except ValueError as exc:
        print(f"{PROG} chat: error: {exc}", file=sys.stderr)
        return 2

    def say(text: str) -> None:
        if not opts.json:
            print(text, flush=True)

    try:
        report = run_chat(opts, say)
    except BenchError as exc:
        print(f"{PROG} chat: error: {exc}", file=sys.stderr)
        return 1
    if opts.json:
        print(json.dumps(report.to_json()), flush=True)
    else:
        print()
        print(render_chat(report), flush=True)
    return 0


# ---------------------------------------------------------------------------------------
# the policy scenario
# ---------------------------------------------------------------------------------------

POLICY_LINE_CHARS = 100
TARGET_POLICY_P50_US = 20.0
DEFAULT_POLICY_DECISIONS = 20_000
CORPUS_DO_NOT_CONTACT = ("Jane Roe", "Marisol Quintero", "Tobias Wrenfield")
"""The fictional people the evasion corpus hides (tests/policy/corpus/README.md)."""
CAUGHT = frozenset({Action.BLOCK, Action.HOLD, Action.REDACT})
"""Actions that keep an evasion from reaching anyone as written."""
_CORPUS_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}
_CORPUS_ESCAPE = re.compile(r"\\([nt\\])")


def default_corpus_dir() -> Path:
    """``tests/policy/corpus`` of the source tree this package runs from."""
    return Path(__file__).resolve().parent.parent / "tests" / "policy" / "corpus"


def read_corpus_file(path: Path) -> list[str]:
    """The messages of a corpus file: after the ``#`` header, one per line, unescaped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = 0
    while start < len(lines) and lines[start].startswith("#"):
        start += 1
    return lines[start:]


def _unescape(text: str) -> str:
    return _CORPUS_ESCAPE.sub(lambda m: _CORPUS_ESCAPES[m.group(1)], text)


@dataclass(frozen=True, slots=True)
class PolicyCorpus:
    clean: tuple[str, ...]
    evasion: tuple[tuple[str, str], ...]
    """(category, message)."""


def load_policy_corpus(directory: Path) -> PolicyCorpus:
    """``clean.txt`` and ``evasion.txt`` of ``directory``; :class:`BenchError` if absent."""
    clean_file, evasion_file = directory / "clean.txt", directory / "evasion.txt"
    if not clean_file.is_file() or not evasion_file.is_file():
        raise BenchError(
            f"no policy corpus in {directory} (looked for clean.txt and evasion.txt); "
            "pass --corpus DIR (the directory tests/policy/corpus of the source tree)"
        )
    try:
        clean = tuple(_unescape(line) for line in read_corpus_file(clean_file))
        evasion: list[tuple[str, str]] = []
        for n, line in enumerate(read_corpus_file(evasion_file), start=1):
            category, sep, message = line.partition("\t")
            if not sep:
                raise BenchError(f"{evasion_file}: data line {n} has no tab after the category")
            evasion.append((category, _unescape(message)))
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"cannot read the policy corpus in {directory}: {exc}") from None
    if not clean or not evasion:
        raise BenchError(f"the policy corpus in {directory} has no messages")
    return PolicyCorpus(clean, tuple(evasion))


def chat_lines(messages: Sequence[str], chars: int = POLICY_LINE_CHARS) -> list[str]:
    """Chat lines of ``chars`` characters: consecutive messages joined by a space until
    the line is long enough, then cut; the rest of a cut message is dropped."""
    lines: list[str] = []
    current = ""
    for message in messages:
        current = f"{current} {message}" if current else message
        if len(current) >= chars:
            lines.append(current[:chars])
            current = ""
    return lines


def corpus_policy() -> tuple[ContentPolicy, int]:
    """The built-in default policy with the corpus's people on its do-not-contact list
    (the default list is empty), and how many names were added (0 when the default
    policy file has no empty list to fill in)."""
    files = default_policy_files()
    names = ", ".join(f'"{name}"' for name in CORPUS_DO_NOT_CONTACT)
    files["policy.toml"], replaced = re.subn(
        r"^do_not_contact = \[\]$",
        f"do_not_contact = [{names}]",
        files["policy.toml"],
        flags=re.MULTILINE,
    )
    if replaced != 1:
        return default_policy(), 0
    with tempfile.TemporaryDirectory(prefix="relay-bench-policy-") as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        return load_policy(Path(tmp) / "policy.toml"), len(CORPUS_DO_NOT_CONTACT)


def _learner_chat(text: str) -> Subject:
    return Subject(
        kind=Kind.CHAT, sender_role=ParticipantRole.LEARNER, route=Route.CLASS, text=text
    )


def time_decisions(
    decide: Callable[[Subject], object], subjects: Sequence[Subject], count: int
) -> list[float]:
    """Microseconds per ``decide`` call, ``count`` calls cycling through ``subjects``,
    after one untimed pass over them (warm-up), sorted."""
    for subject in subjects:
        decide(subject)
    clock = time.perf_counter_ns
    samples: list[int] = []
    n = len(subjects)
    for i in range(count):
        subject = subjects[i % n]
        started = clock()
        decide(subject)
        samples.append(clock() - started)
    return sorted(ns / 1000 for ns in samples)


@dataclass(frozen=True, slots=True)
class PolicyReport:
    policy_source: str
    policy_version: str
    do_not_contact_names: int
    corpus: Path
    lines: int
    """Distinct chat lines of :data:`POLICY_LINE_CHARS` characters built from the clean corpus."""
    timings_us: tuple[float, ...]
    evasion_timings_us: tuple[float, ...]
    evasion_mean_chars: float
    clean_messages: int
    false_positives: int
    evasion_lines: int
    caught: int
    caught_by_category: dict[str, tuple[int, int]]
    """Category -> (caught, lines)."""
    total_s: float

    @property
    def p50_us(self) -> float:
        return percentile(self.timings_us, 0.50)

    @property
    def p99_us(self) -> float:
        return percentile(self.timings_us, 0.99)

    @property
    def recall(self) -> float:
        return self.caught / self.evasion_lines

    @property
    def false_positive_rate(self) -> float:
        return self.false_positives / self.clean_messages

    def to_json(self) -> dict[str, Any]:
        ev = self.evasion_timings_us
        return {
            "scenario": "policy",
            "p50_us": round(self.p50_us, 2),
            "p99_us": round(self.p99_us, 2),
            "mean_us": round(sum(self.timings_us) / len(self.timings_us), 2),
            "max_us": round(self.timings_us[-1], 2),
            "evasion_p50_us": round(percentile(ev, 0.50), 2),
            "evasion_p99_us": round(percentile(ev, 0.99), 2),
            "target_p50_us": TARGET_POLICY_P50_US,
            "p50_ok": self.p50_us <= TARGET_POLICY_P50_US,
            "recall": round(self.recall, 4),
            "recall_by_category": {
                category: round(caught / lines, 4)
                for category, (caught, lines) in sorted(self.caught_by_category.items())
            },
            "false_positive_rate": round(self.false_positive_rate, 4),
            "false_positives": self.false_positives,
            "clean_messages": self.clean_messages,
            "evasion_lines": self.evasion_lines,
            "lines": self.lines,
            "line_chars": POLICY_LINE_CHARS,
            "decisions": len(self.timings_us),
            "evasion_decisions": len(ev),
            "evasion_mean_chars": round(self.evasion_mean_chars, 1),
            "policy": self.policy_source,
            "policy_version": self.policy_version,
            "do_not_contact_names": self.do_not_contact_names,
            "corpus": str(self.corpus),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "cpu_count": os.cpu_count() or 0,
            "total_s": round(self.total_s, 2),
        }


def run_policy(
    policy: ContentPolicy,
    corpus: PolicyCorpus,
    *,
    decisions: int,
    policy_source: str,
    do_not_contact_names: int,
    corpus_dir: Path,
) -> PolicyReport:
    """Time ``policy.decide`` on 100-character learner chat lines and on the evasions;
    count the evasions it catches and the clean messages it does not allow."""
    started = time.perf_counter()
    lines = chat_lines(corpus.clean)
    if not lines:
        raise BenchError(
            f"the clean corpus in {corpus_dir} is too short for one "
            f"{POLICY_LINE_CHARS}-character line"
        )
    decide = policy.decide
    timings = time_decisions(decide, [_learner_chat(line) for line in lines], decisions)
    evasion_subjects = [_learner_chat(message) for _, message in corpus.evasion]
    evasion_timings = time_decisions(
        decide, evasion_subjects, max(len(evasion_subjects), decisions // 4)
    )
    false_positives = sum(
        decide(_learner_chat(message)).action is not Action.ALLOW for message in corpus.clean
    )
    by_category: dict[str, tuple[int, int]] = {}
    for (category, _), subject in zip(corpus.evasion, evasion_subjects, strict=True):
        hit = decide(subject).action in CAUGHT
        caught, total = by_category.get(category, (0, 0))
        by_category[category] = (caught + hit, total + 1)
    return PolicyReport(
        policy_source=policy_source,
        policy_version=policy.version,
        do_not_contact_names=do_not_contact_names,
        corpus=corpus_dir,
        lines=len(lines),
        timings_us=tuple(timings),
        evasion_timings_us=tuple(evasion_timings),
        evasion_mean_chars=sum(len(m) for _, m in corpus.evasion) / len(corpus.evasion),
        clean_messages=len(corpus.clean),
        false_positives=false_positives,
        evasion_lines=len(corpus.evasion),
        caught=sum(c for c, _ in by_category.values()),
        caught_by_category=by_category,
        total_s=time.perf_counter() - started,
    )


def render_policy(report: PolicyReport) -> str:
    r = report.to_json()
    met = "met" if r["p50_ok"] else "NOT met"
    categories = ", ".join(f"{c} {v:.3f}" for c, v in r["recall_by_category"].items())
    return "\n".join(
        [
            f"classroom-relay bench policy: Python {r['python']}, {r['cpu_count']} CPU(s); "
            f"policy {report.policy_source} ({report.policy_version}).",
            f"Learner chat on the class channel; corpus {report.corpus}.",
            "",
            f"{POLICY_LINE_CHARS}-character chat lines ({report.lines} lines from the clean "
            f"corpus, {r['decisions']:,} decisions):",
            f"  p50 {r['p50_us']:.1f} us   p99 {r['p99_us']:.1f} us   mean {r['mean_us']:.1f} us"
            f"   target p50 <= {TARGET_POLICY_P50_US:g} us: {met}",
            f"evasion lines (as written, {r['evasion_mean_chars']:.0f} characters on average, "
            f"{r['evasion_decisions']:,} decisions):",
            f"  p50 {r['evasion_p50_us']:.1f} us   p99 {r['evasion_p99_us']:.1f} us",
            f"recall: {report.caught} of {report.evasion_lines} evasions caught "
            f"(block, hold or redact) = {r['recall']:.4f}",
            f"  by category: {categories}",
            f"false positives: {report.false_positives} of {report.clean_messages} clean "
            f"messages not allowed = {r['false_positive_rate']:.4f}",
            f"Took {report.total_s:.1f} s.",
        ]
    )


def policy_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{PROG} policy",
        description="The content policy: microseconds per decision for "
        f"{POLICY_LINE_CHARS}-character learner chat lines built from the clean corpus "
        "(p50, p99; target p50 <= 20 us) and for the evasion corpus, the recall on the "
        "evasions (blocked, held or redacted) and the false-positive rate on the clean "
        "messages (anything but allowed).",
        epilog="Default policy: the built-in default with the corpus's three fictional "
        "people on its do-not-contact list (the evasion corpus hides their names).",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument(
        "--corpus",
        metavar="DIR",
        help=f"directory with clean.txt and evasion.txt (default {default_corpus_dir()})",
    )
    p.add_argument("--policy", metavar="FILE", help="measure this policy file instead")
    p.add_argument(
        "--decisions",
        type=_positive,
        default=DEFAULT_POLICY_DECISIONS,
        metavar="N",
        help=f"timed decisions on the chat lines (default {DEFAULT_POLICY_DECISIONS:,}); "
        "a quarter of that, at least one pass, on the evasions",
    )
    return p


@scenario("policy", "content policy: microseconds per decision, recall, false positives")
def policy_main(argv: list[str]) -> int:
    try:
        args = policy_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    corpus_dir = Path(args.corpus) if args.corpus else default_corpus_dir()
    try:
        corpus = load_policy_corpus(corpus_dir)
        if args.policy:
            policy, source, names = load_policy(Path(args.policy)), args.policy, 0
        else:
            policy, names = corpus_policy()
            extra = f" + the corpus's {names} do-not-contact names" if names else ""
            source = f"built-in default{extra}"
        report = run_policy(
            policy,
            corpus,
            decisions=args.decisions,
            policy_source=source,
            do_not_contact_names=names,
            corpus_dir=corpus_dir,
        )
    except (BenchError, ConfigError) as exc:
        print(f"{PROG} policy: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_json()), flush=True)
    else:
        print(render_policy(report), flush=True)
    return 0


# ---------------------------------------------------------------------------------------
# the audit scenario
# ---------------------------------------------------------------------------------------

DEFAULT_AUDIT_RECORDS = 50_000
QUICK_AUDIT_RECORDS = 2_000
DEFAULT_AUDIT_WINDOW = 64
DEFAULT_FSYNC_RECORDS = 1_000
QUICK_FSYNC_RECORDS = 100
DEFAULT_AUDIT_REPEAT = 5
TARGET_VERIFY_PER_S = 200_000.0
AUDIT_SESSION = "bench-audit"
AUDIT_POLICY_VERSION = "sha256:" + "0" * 64
"""What a policy version looks like in a record (its length is what matters here)."""


@dataclass(frozen=True, slots=True)
class AuditOptions:
    records: int
    """Events appended in the timed run."""
    window: int
    """Events in flight: each of this many writers submits one event and awaits its receipt."""
    fsync_records: int
    """Records written one fsync each for the fsync-per-record baseline."""
    repeat: int
    """Timed passes of the verifier (and of its baseline); the median is reported."""
    directory: Path | None
    """Where the log is written (None: a temporary directory); fsync costs depend on it."""
    json: bool

    def __post_init__(self) -> None:
        if self.records < 10 or self.window < 1 or self.fsync_records < 1 or self.repeat < 1:
            raise ValueError("--records >= 10, --window >= 1, --fsync-records >= 1, --repeat >= 1")


@dataclass(frozen=True, slots=True)
class AuditReport:
    records: int
    """Events appended (and acknowledged) in the timed run."""
    window: int
    commits: int
    """Commit groups the store made (one write and one fsync each)."""
    append_s: float
    append_cpu_s: float
    """CPU time of this process (event loop and the store's I/O thread) during the run."""
    raw_group_s: float
    """The same bytes in as many write + fsync calls as the store made, nothing else."""
    fsync_records: int
    fsync_per_record_s: float
    """``fsync_records`` records, one write + fsync each."""
    log_records: int
    """Every record in the log (events, segment headers, keys, checkpoints)."""
    log_bytes: int
    segments: int
    checkpoints: int
    verify_runs_s: tuple[float, ...]
    sha256_runs_s: tuple[float, ...]
    """One SHA-256 per record over the same record bytes, already in memory."""
    filesystem: str
    total_s: float

    @property
    def append_per_s(self) -> float:
        return self.records / self.append_s

    @property
    def raw_group_per_s(self) -> float:
        return self.records / self.raw_group_s

    @property
    def fsync_per_record_per_s(self) -> float:
        return self.fsync_records / self.fsync_per_record_s

    @property
    def verify_s(self) -> float:
        return sorted(self.verify_runs_s)[(len(self.verify_runs_s) - 1) // 2]

    @property
    def sha256_s(self) -> float:
        return sorted(self.sha256_runs_s)[(len(self.sha256_runs_s) - 1) // 2]

    @property
    def verify_per_s(self) -> float:
        return self.log_records / self.verify_s

    @property
    def sha256_per_s(self) -> float:
        return self.log_records / self.sha256_s

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": "audit",
            "append_per_s": round(self.append_per_s, 1),
            "verify_per_s": round(self.verify_per_s, 1),
            "raw_group_fsync_per_s": round(self.raw_group_per_s, 1),
            "append_vs_raw_ratio": round(self.append_per_s / self.raw_group_per_s, 3),
            "fsync_per_record_per_s": round(self.fsync_per_record_per_s, 1),
            "group_commit_speedup": round(self.append_per_s / self.fsync_per_record_per_s, 2),
            "sha256_per_s": round(self.sha256_per_s, 1),
            "verify_vs_sha256_ratio": round(self.verify_per_s / self.sha256_per_s, 3),
            "target_verify_per_s": TARGET_VERIFY_PER_S,
            "verify_ok": self.verify_per_s >= TARGET_VERIFY_PER_S,
            "records": self.records,
            "window": self.window,
            "commits": self.commits,
            "records_per_commit": round(self.records / max(1, self.commits), 1),
            "append_s": round(self.append_s, 3),
            "append_cpu_us_per_record": round(self.append_cpu_s / self.records * 1e6, 2),
            "fsync_records": self.fsync_records,
            "log_records": self.log_records,
            "log_bytes": self.log_bytes,
            "bytes_per_record": round(self.log_bytes / self.log_records, 1),
            "segments": self.segments,
            "checkpoints": self.checkpoints,
            "verify_s_runs": [round(s, 4) for s in self.verify_runs_s],
            "sha256_s_runs": [round(s, 4) for s in self.sha256_runs_s],
            "repeat": len(self.verify_runs_s),
            "filesystem": self.filesystem,
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "cpu_count": os.cpu_count() or 0,
            "total_s": round(self.total_s, 2),
        }


def filesystem_of(path: Path) -> str:
    """The type of the file system ``path`` is on (Linux ``/proc/mounts``), or "unknown"."""
    try:
        mounts = Path("/proc/mounts").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "unknown"
    target = str(path.resolve())
    best, kind = "", "unknown"
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, parts[2]
    return kind


def audit_events(count: int) -> list[AuditEvent]:
    """Delivered chat records as the choke point writes them (100-character messages)."""
    now = time.time()
    return [
        AuditEvent(
            EventKind.MESSAGE_DELIVERED,
            now + i * 1e-4,
            AUDIT_SESSION,
            f"instructor:{INSTRUCTOR}",
            msg_id=f"m-{i}",
            seq=i + 1,
            channel=Channel.CLASS.value,
            decision="delivered",
            rule="allow",
            content=CHAT_TEXT,
            policy_version=AUDIT_POLICY_VERSION,
        )
        for i in range(count)
    ]


async def _append(store: AuditStore, events: Sequence[AuditEvent], window: int) -> None:
    """``window`` writers, each submitting one event and awaiting its receipt, as the
    relay's classes do; the store gathers what arrives during one fsync into the next
    group."""
    it = iter(events)

    async def writer() -> None:
        for event in it:
            await store.submit((event,))

    await asyncio.gather(*(writer() for _ in range(window)))


def _time_writes(path: Path, chunks: Sequence[bytes]) -> float:
    """Seconds to append each chunk to a new file with one write and one fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
    try:
        started = time.perf_counter()
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        return time.perf_counter() - started
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def _split(data: bytes, parts: int) -> list[bytes]:
    size = max(1, math.ceil(len(data) / max(1, parts)))
    return [data[i : i + size] for i in range(0, len(data), size)]


def run_audit(opts: AuditOptions, say: Callable[[str], None]) -> AuditReport:
    """Append with group commit, then verify, on a fresh log with fresh keys."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="relay-bench-audit-", dir=opts.directory) as tmp:
        root = Path(tmp)
        (root / "sink").mkdir()
        signing = Ed25519PrivateKey.generate()
        staff = X25519PrivateKey.generate()
        sink_path = root / "sink" / "latest"
        events = audit_events(opts.records)

        async def append() -> tuple[float, float, int]:
            store = AuditStore(
                root / "audit",
                signing_key=signing,
                staff_public=staff.public_key(),
                sink_path=sink_path,
            )
            try:
                cpu, clock = time.process_time(), time.perf_counter()
                await _append(store, events, opts.window)
                seconds, cpu_s = time.perf_counter() - clock, time.process_time() - cpu
                return seconds, cpu_s, store.commits
            finally:
                await store.close()

        say(f"appending {opts.records:,} records, {opts.window} in flight ...")
        append_s, append_cpu_s, commits = asyncio.run(append())
        segments = list_segments(root / "audit")
        data = [p.read_bytes() for p in segments]
        log_bytes = sum(len(d) for d in data)
        frames = [(d, f) for d in data for f in read_frames(d) if isinstance(f, Frame)]
        raw = b"".join(d[len(MAGIC) :] for d in data)

        say(f"baselines: the same bytes in {commits:,} write + fsync calls; fsync per record ...")
        raw_group_s = _time_writes(root / "raw-groups", _split(raw, commits))
        fsync_records = min(opts.fsync_records, len(frames))
        one_by_one = [d[f.offset : f.end] for d, f in frames[:fsync_records]]
        fsync_s = _time_writes(root / "raw-records", one_by_one)

        say(f"verifying {len(frames):,} records, {opts.repeat} time(s) ...")
        # Verify as 'audit verify' does, in a process that holds no more than the log:
        # the appended events and their copies go first (a large heap of live objects
        # makes the collector's passes, which verifying triggers, much slower).
        log_records = len(frames)
        records = [f.record for _, f in frames]
        events, frames, raw, one_by_one, data = [], [], b"", [], []
        gc.collect()
        gc.freeze()
        sources = [SegmentSource(p.name, p.read_bytes) for p in segments]
        public = signing.public_key()
        verify_runs: list[float] = []
        checkpoints = 0
        for _ in range(opts.repeat):
            sink = CheckpointSink(sink_path).read()
            clock = time.perf_counter()
            report = verify_log(sources, signing_key=public, sink=sink)
            verify_runs.append(time.perf_counter() - clock)
            if not report.ok:
                raise BenchError(f"the benchmark's log does not verify: {report.problems[0]}")
            if report.records != log_records:
                raise BenchError(f"verified {report.records} records of {log_records}")
            checkpoints = report.checkpoints
        gc.unfreeze()
        sha256 = hashlib.sha256
        sha_runs: list[float] = []
        for _ in range(opts.repeat):
            clock = time.perf_counter()
            for record in records:
                sha256(record).digest()
            sha_runs.append(time.perf_counter() - clock)
        filesystem = filesystem_of(root)
    return AuditReport(
        records=opts.records,
        window=opts.window,
        commits=commits,
        append_s=append_s,
        append_cpu_s=append_cpu_s,
        raw_group_s=raw_group_s,
        fsync_records=fsync_records,
        fsync_per_record_s=fsync_s,
        log_records=log_records,
        log_bytes=log_bytes,
        segments=len(segments),
        checkpoints=checkpoints,
        verify_runs_s=tuple(verify_runs),
        sha256_runs_s=tuple(sha_runs),
        filesystem=filesystem,
        total_s=time.perf_counter() - started,
    )


def render_audit(report: AuditReport) -> str:
    r = report.to_json()
    met = "met" if r["verify_ok"] else "NOT met"
    note = (
        "  (fsync costs nothing on tmpfs: use --dir on the disk the relay's log is on)"
        if report.filesystem == "tmpfs"
        else ""
    )
    return "\n".join(
        [
            f"classroom-relay bench audit: Python {r['python']}, {r['cpu_count']} CPU(s); "
            f"file system {report.filesystem}.{note}",
            f"{report.records:,} delivered-chat records ({len(CHAT_TEXT)}-character contents, "
            f"encrypted), {report.window} in flight, default [audit] settings; "
            f"{r['bytes_per_record']:.0f} bytes per record on disk.",
            "",
            "append with group commit (hash chain, encryption, signed checkpoints, fsync):",
            f"  {r['append_per_s']:>12,.0f} records/s   {report.commits:,} commits, "
            f"{r['records_per_commit']:.1f} records each; "
            f"{r['append_cpu_us_per_record']:.1f} us CPU per record",
            f"  {r['raw_group_fsync_per_s']:>12,.0f} records/s   baseline: the same bytes in as "
            f"many write + fsync calls  -> ratio {r['append_vs_raw_ratio']:.2f}",
            f"  {r['fsync_per_record_per_s']:>12,.0f} records/s   baseline: one write + fsync per "
            f"record ({report.fsync_records:,} records)  -> group commit "
            f"{r['group_commit_speedup']:.1f}x",
            f"verify ({report.log_records:,} records, {report.segments} segment(s), "
            f"{report.checkpoints} signed checkpoints; median of {r['repeat']}):",
            f"  {r['verify_per_s']:>12,.0f} records/s   target >= {TARGET_VERIFY_PER_S:,.0f}: "
            f"{met}",
            f"  {r['sha256_per_s']:>12,.0f} records/s   baseline: one SHA-256 per record over the "
            f"same bytes in memory  -> ratio {r['verify_vs_sha256_ratio']:.2f}",
            f"Took {report.total_s:.1f} s.",
        ]
    )


def audit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{PROG} audit",
        description="The audit log: records appended per second with group commit (against "
        "the same bytes written with as many fsyncs, and against one fsync per record), "
        "and records verified per second (against one SHA-256 per record over the same "
        f"bytes; target >= {TARGET_VERIFY_PER_S:,.0f}/s). A fresh log with fresh keys.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quick", action="store_true", help="a small run (tests and CI)")
    p.add_argument(
        "--records",
        type=_positive,
        metavar="N",
        help=f"records appended (default {DEFAULT_AUDIT_RECORDS:,}, --quick "
        f"{QUICK_AUDIT_RECORDS:,})",
    )
    p.add_argument(
        "--window",
        type=_positive,
        default=DEFAULT_AUDIT_WINDOW,
        metavar="N",
        help=f"records in flight, each awaiting its receipt (default {DEFAULT_AUDIT_WINDOW})",
    )
    p.add_argument(
        "--fsync-records",
        type=_positive,
        metavar="N",
        help=f"records for the fsync-per-record baseline (default {DEFAULT_FSYNC_RECORDS:,}, "
        f"--quick {QUICK_FSYNC_RECORDS})",
    )
    p.add_argument(
        "--repeat",
        type=_positive,
        metavar="N",
        help=f"timed verifier passes, the median is reported (default {DEFAULT_AUDIT_REPEAT}, "
        "--quick 1)",
    )
    p.add_argument(
        "--dir",
        metavar="DIR",
        help="write the log under DIR (default: the system's temporary directory); fsync "
        "costs depend on the disk",
    )
    return p


@scenario("audit", "audit log: records appended per second (group commit) and verified per second")
def audit_main(argv: list[str]) -> int:
    try:
        args = audit_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    quick = bool(args.quick)
    try:
        opts = AuditOptions(
            records=args.records or (QUICK_AUDIT_RECORDS if quick else DEFAULT_AUDIT_RECORDS),
            window=args.window,
            fsync_records=args.fsync_records
            or (QUICK_FSYNC_RECORDS if quick else DEFAULT_FSYNC_RECORDS),
            repeat=args.repeat or (1 if quick else DEFAULT_AUDIT_REPEAT),
            directory=Path(args.dir) if args.dir else None,
            json=args.json,
        )
    except ValueError as exc:
        print(f"{PROG} audit: error: {exc}", file=sys.stderr)
        return 2
    if opts.directory is not None and not opts.directory.is_dir():
        print(f"{PROG} audit: error: --dir {opts.directory} is not a directory", file=sys.stderr)
        return 2

    def say(text: str) -> None:
        if not opts.json:
            print(text, flush=True)

    try:
        report = run_audit(opts, say)
    except (BenchError, AuditError, OSError) as exc:
        print(f"{PROG} audit: error: {exc}", file=sys.stderr)
        return 1
    if opts.json:
        print(json.dumps(report.to_json()), flush=True)
    else:
        print()
        print(render_audit(report), flush=True)
    return 0


# ---------------------------------------------------------------------------------------
# the editor scenario
# ---------------------------------------------------------------------------------------

CLASS_EDITOR = "bench-editor"
DEFAULT_EDITOR_LEARNERS = 30
DEFAULT_EDITOR_UPDATES = 30_000
QUICK_EDITOR_UPDATES = 600
DEFAULT_TYPING_S = 10.0
QUICK_TYPING_S = 2.0
DEFAULT_EDITOR_WINDOW = 8
TYPING_CHARS_PER_S = 5.0
"""How fast each learner types in the latency run (one update per character)."""
TARGET_UPDATES_PER_S = 5_000.0
TARGET_EDITOR_P99_MS = 50.0
DEFAULT_BASELINE_UPDATES = 20_000
EDITOR_FILE = "main.py"
RAISED_EDITOR_LIMITS = "editor_msgs_per_second = 1000000.0\neditor_msgs_burst = 1000000\n"
# What the learners type, a character per update: ordinary code the policy lets through.
TYPED_CODE = (
    "def greet(name):\n"
    "    message = 'Hello, ' + name + '!'\n"
    "    return message\n"
    "\n"
    "for learner in ['ada', 'grace', 'linus']:\n"
    "    print(greet(learner))\n"
    "\n"
)


def raise_editor_rate_limit(home: FacilityHome) -> None:
    """Raise the per-connection editor message rate (relay.toml ``[limits]``
    ``editor_msgs_per_second``, ``editor_msgs_burst``) out of the benchmark's way."""
    text = home.relay_toml.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    try:
        at = next(i for i, line in enumerate(lines) if line.strip() == "[limits]")
    except StopIteration:
        raise BenchError(f"{home.relay_toml} has no [limits] table") from None
    lines.insert(at + 1, RAISED_EDITOR_LIMITS)
    home.relay_toml.write_text("".join(lines), encoding="utf-8")
    limits = home.load_config().limits
    if limits.editor_msgs_per_second < 1e6 or limits.editor_msgs_burst < 1e6:
        raise BenchError("the raised editor rate limit did not take effect")


class Typist:
    """One learner's copy of their workspace: every character typed is one Yjs update,
    made the way an editor makes it (the update since the state before the keystroke)."""

    def __init__(self, text: str = TYPED_CODE, offset: int = 0) -> None:
        from pycrdt import Doc, Map, Text

        self.doc: Any = Doc()
        self.files: Any = self.doc.get("files", type=Map)
        self._text_type = Text
        self.source = text
        self.typed = offset

    def create(self) -> bytes:
        """The update that creates the file."""
        before = self.doc.get_state()
        self.files[EDITOR_FILE] = self._text_type()
        update: bytes = self.doc.get_update(before)
        return update

    def keystrokes(self, count: int) -> list[bytes]:
        doc, text, source = self.doc, self.files[EDITOR_FILE], self.source
        out: list[bytes] = []
        for _ in range(count):
            before = doc.get_state()
            text += source[self.typed % len(source)]
            self.typed += 1
            out.append(doc.get_update(before))
        return out


def pycrdt_baseline(updates: int, docs: int = 1) -> tuple[float, int]:
    """Seconds for bare pycrdt documents to apply ``updates`` keystroke updates, each
    encoded as the diff the relay would forward (state vector before, update since), in
    ``docs`` documents taking turns (as the relay's workspaces do); and the bytes of an
    average update."""
    from pycrdt import Doc

    per = max(1, updates // docs)
    typists = [Typist(offset=i * 7) for i in range(docs)]
    targets: list[Any] = [Doc() for _ in range(docs)]
    for typist, doc in zip(typists, targets, strict=True):
        doc.apply_update(typist.create())
    streams = [t.keystrokes(per) for t in typists]
    work = [(targets[i], streams[i][k]) for k in range(per) for i in range(docs)]
    clock = time.perf_counter()
    for doc, update in work:
        before = doc.get_state()
        doc.apply_update(update)
        doc.get_update(before)
    seconds = time.perf_counter() - clock
    return seconds * updates / len(work), sum(len(u) for _, u in work) // len(work)


class _Typing:
    """Book-keeping of one editor run: when each learner sent each update, its ack and
    the instructor's copy; an update is complete once both arrived."""

    def __init__(self, tag: str, learners: int, count: int, window: int) -> None:
        self.prefix = f"{tag}-"
        self.count = count
        self.total = learners * count
        self.sent = [[0.0] * count for _ in range(learners)]
        self.left = [[2] * count for _ in range(learners)]
        self.seen = [0] * learners
        self.windows = [asyncio.Semaphore(window) for _ in range(learners)]
        self.watch_latencies: list[float] = []
        self.ack_latencies: list[float] = []
        self.finished = 0
        self.first_sent = 0.0
        self.last_done = 0.0
        self.done = asyncio.Event()
        self.failure: str | None = None

    def acked(self, i: int, ref: object, status: object, text: object, now: float) -> None:
        if not isinstance(ref, str) or not ref.startswith(self.prefix):
            return
        if status != "delivered":
            self.fail(f"the relay answered {status} to an update of learner {i + 1}: {text}")
            return
        try:
            k = int(ref[len(self.prefix) :])
        except ValueError:
            return
        if 0 <= k < self.count:
            self.ack_latencies.append(now - self.sent[i][k])
            self._settle(i, k, now)

    def watched(self, i: int, now: float) -> None:
        """The instructor received the next update of learner ``i``'s workspace (the
        relay forwards one workspace's updates in the order it decided them)."""
        k = self.seen[i]
        self.seen[i] = k + 1
        if k >= self.count:
            self.fail(f"the instructor received more updates of learner {i + 1} than were sent")
            return
        self.watch_latencies.append(now - self.sent[i][k])
        self._settle(i, k, now)

    def _settle(self, i: int, k: int, now: float) -> None:
        left = self.left[i][k] - 1
        self.left[i][k] = left
        if left == 0:
            self.windows[i].release()
            self.finished += 1
            if self.finished == self.total:
                self.last_done = now
                self.done.set()

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
        self.done.set()


class _EditorPeer(_Reader):
    """A participant's WebSocket and its reader: the instructor watches every learner's
    workspace (``editor_update``); a learner reads its acks."""

    def __init__(
        self, name: str, ws: aiohttp.ClientWebSocketResponse, bench: _EditorBench, index: int
    ) -> None:
        self.index = index
        """The learner's number (-1: the instructor)."""
        super().__init__(name, ws, bench)

    def _frame(self, kind: object, frame: dict[str, Any], now: float) -> None:
        run = self.bench.run_state
        if run is None:
            return
        if kind == "editor_update":
            i = self.bench.workspaces.get(frame.get("ws"))
            if self.index < 0 and i is not None:
                run.watched(i, now)
        elif kind == "ack" and self.index >= 0:
            run.acked(self.index, frame.get("ref"), frame.get("status"), frame.get("text"), now)

    def _run(self) -> _Failing | None:
        run: _Typing | None = self.bench.run_state
        return run


@dataclass(frozen=True, slots=True)
class EditorRun:
    """One measured editor run."""

    result: RunResult
    """``messages``: updates sent (by all learners); latency: sent -> instructor received."""
    ack_p50_ms: float
    ack_p99_ms: float
    relay_cpu_s: float = 0.0
    """CPU time of the relay's process (0.0 when it runs in this one)."""

    @property
    def relay_cpu_us_per_update(self) -> float:
        return self.relay_cpu_s / self.result.messages * 1e6


class _EditorBench:
    """The instructor and the learners of the editor class, connected to one relay."""

    def __init__(
        self, http: aiohttp.ClientSession, facility: Facility, urls: _Urls, learners: int
    ) -> None:
        self.http = http
        self.facility = facility
        self.urls = urls
        self.cpu = cpu_clock(urls.server_pid)
        self.names = facility.learners[:learners]
        self.workspaces = {f"learner:{name}": i for i, name in enumerate(self.names)}
        self.typists = [Typist(offset=i * 7) for i in range(learners)]
        self.instructor: _EditorPeer | None = None
        self.learners: list[_EditorPeer] = []
        self.run_state: _Typing | None = None
        self.problems: list[str] = []
        self.closing = False
        self._runs = 0

    async def _join(self, ep: _Endpoint, index: int) -> _EditorPeer:
        ws = await _open_ws(self.http, ep)
        peer = _EditorPeer(ep.name, ws, self, index)
        assert ep.hello is not None
        await ws.send_bytes(ep.hello)
        try:
            await asyncio.wait_for(asyncio.shield(peer.welcome), timeout=30.0)
        except TimeoutError:
            await peer.close()
            raise BenchError(f"{ep.name}: no welcome within 30 s") from None
        except BaseException:
            await peer.close()
            raise
        return peer

    async def connect(self) -> None:
        def hello(learner: str | None) -> bytes:
            return wire.encode_client(
                Hello(
                    id=f"hello-{learner or INSTRUCTOR}",
                    session=CLASS_EDITOR,
                    learner=learner,
                    pin=PIN if learner else None,
                    client="classroom-relay-bench",
                )
            )

        f = self.facility
        self.instructor = await self._join(
            _Endpoint(INSTRUCTOR, self.urls.sender, f.instructor_bundle, hello(None)), -1
        )
        joined = await asyncio.gather(
            *(
                self._join(
                    _Endpoint(
                        f"{name}@{_machine(i)}",
                        self.urls.receivers,
                        f.machine_bundles[i],
                        hello(name),
                    ),
                    i,
                )
                for i, name in enumerate(self.names)
            ),
            return_exceptions=True,
        )
        failures = [j for j in joined if not isinstance(j, _EditorPeer)]
        self.learners = [j for j in joined if isinstance(j, _EditorPeer)]
        if failures:
            raise BenchError(f"{len(failures)} learner(s) failed to join: {failures[0]}")

    async def close(self) -> None:
        self.closing = True
        peers = [*self.learners, *([self.instructor] if self.instructor else [])]
        await asyncio.gather(*(p.close() for p in peers))

    def _frames(self, tag: str, updates: list[list[bytes]]) -> list[list[bytes]]:
        from relay.messages import EditorUpdate

        return [
            [
                wire.encode_client(EditorUpdate(id=f"{tag}-{k}", ws=f"learner:{name}", update=u))
                for k, u in enumerate(per)
            ]
            for name, per in zip(self.names, updates, strict=True)
        ]

    async def create_files(self) -> None:
        """Each learner creates the file it will type into (not measured)."""
        await self._run([[t.create()] for t in self.typists], window=1, rate=None)

    async def run(self, per_learner: int, window: int, rate: float | None) -> EditorRun:
        """Every learner types ``per_learner`` characters, as fast as ``window`` updates in
        flight allow, or ``rate`` characters a second each."""
        updates = [t.keystrokes(per_learner) for t in self.typists]
        return await self._run(updates, window, rate)

    async def _run(self, updates: list[list[bytes]], window: int, rate: float | None) -> EditorRun:
        if self.instructor is None or not self.learners:
            raise BenchError("connect the class first")
        if self.problems:
            raise BenchError(f"{len(self.problems)} connection(s) lost: {self.problems[0]}")
        self._runs += 1
        tag = f"r{self._runs}"
        frames = self._frames(tag, updates)
        count = len(updates[0])
        state = _Typing(tag, len(self.learners), count, window)
        self.run_state = state
        timeout = 60.0 + (count / rate if rate else 0.0)
        cpu_start, relay_cpu_start = self.cpu(), self.relay_cpu()
        start = time.perf_counter() + 0.02
        state.first_sent = start
        tasks = [
            asyncio.get_running_loop().create_task(
                self._type(peer.ws, state.windows[i], state.sent[i], frames[i], rate, start, i)
            )
            for i, peer in enumerate(self.learners)
        ]
        try:
            await asyncio.wait_for(state.done.wait(), timeout=timeout)
        except TimeoutError:
            state.fail(
                f"timed out after {timeout:g} s with {state.finished} of {state.total} "
                "updates completed"
            )
        finally:
            self.run_state = None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        cpu_s = self.cpu() - cpu_start
        relay_cpu_s = self.relay_cpu() - relay_cpu_start
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                state.fail(f"sending failed: {task.exception()}")
        if state.failure is not None:
            raise BenchError(state.failure)
        watch, acks = sorted(state.watch_latencies), sorted(state.ack_latencies)
        result = RunResult(
            messages=state.total,
            receivers=1,
            received=len(watch),
            seconds=max(1e-9, state.last_done - state.first_sent),
            p50_ms=percentile(watch, 0.50) * 1e3,
            p99_ms=percentile(watch, 0.99) * 1e3,
            max_ms=watch[-1] * 1e3,
            cpu_s=cpu_s,
            offered_msgs_per_s=rate * len(self.learners) if rate else None,
        )
        return EditorRun(
            result, percentile(acks, 0.50) * 1e3, percentile(acks, 0.99) * 1e3, relay_cpu_s
        )

    def relay_cpu(self) -> float:
        pid = self.urls.server_pid
        return _process_cpu_seconds(pid) if pid is not None else 0.0

    def _stagger(self, i: int, rate: float) -> float:
        """Learner ``i``'s first keystroke: the class's keystrokes spread evenly."""
        return i / (rate * len(self.learners))

    async def _type(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        window: asyncio.Semaphore,
        sent: list[float],
        frames: list[bytes],
        rate: float | None,
        start: float,
        i: int,
    ) -> None:
        clock = time.perf_counter
        first = start + (self._stagger(i, rate) if rate else 0.0)
        delay = first - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        for k, frame in enumerate(frames):
            if rate:
                delay = first + k / rate - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
            await window.acquire()
            sent[k] = clock()
            await ws.send_bytes(frame)


@dataclass(frozen=True, slots=True)
class EditorOptions:
    learners: int
    updates: int
    """Updates per full-load run, all learners together."""
    typing_s: float
    window: int
    repeat: int
    baseline_updates: int
    servers: str
    json: bool

    def __post_init__(self) -> None:
        if not 1 <= self.learners <= MAX_FANOUT:
            raise ValueError(f"--learners from 1 to {MAX_FANOUT}")
        if self.updates < self.learners or self.window < 1 or self.repeat < 1:
            raise ValueError("--updates >= --learners, --window >= 1, --repeat >= 1")
        if self.typing_s <= 0 or self.baseline_updates < 10:
            raise ValueError("--typing-seconds > 0, --baseline-updates >= 10")

    @property
    def per_learner(self) -> int:
        return max(1, self.updates // self.learners)

    @property
    def typing_per_learner(self) -> int:
        return max(1, round(self.typing_s * TYPING_CHARS_PER_S))


@dataclass(frozen=True, slots=True)
class EditorReport:
    learners: int
    window: int
    full: tuple[EditorRun, ...]
    """Full-load runs: every learner as fast as its window allows."""
    typing: EditorRun
    """The class typing: each learner 5 characters a second."""
    baseline_s: float
    baseline_updates: int
    update_bytes: int
    servers: str
    audit_records: int
    setup_s: float
    total_s: float

    @property
    def median(self) -> EditorRun:
        ordered = sorted(self.full, key=lambda r: r.result.msgs_per_s)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def updates_per_s(self) -> float:
        return self.median.result.msgs_per_s

    @property
    def baseline_per_s(self) -> float:
        return self.baseline_updates / self.baseline_s

    @property
    def p99_ms(self) -> float:
        return self.typing.result.p99_ms

    def to_json(self) -> dict[str, Any]:
        m, t = self.median, self.typing
        return {
            "scenario": "editor",
            "updates_per_s": round(self.updates_per_s, 1),
            "p50_ms": round(t.result.p50_ms, 3),
            "p99_ms": round(t.result.p99_ms, 3),
            "max_ms": round(t.result.max_ms, 3),
            "ack_p50_ms": round(t.ack_p50_ms, 3),
            "ack_p99_ms": round(t.ack_p99_ms, 3),
            "latency": "learner sends an update -> the instructor receives the relay's "
            "editor_update (ack_*: -> the learner receives its ack)",
            "baseline": "bare pycrdt: apply one keystroke update and encode the diff to "
            "forward, in one process, no network",
            "baseline_updates_per_s": round(self.baseline_per_s, 1),
            "ratio": round(self.updates_per_s / self.baseline_per_s, 4),
            "target_updates_per_s": TARGET_UPDATES_PER_S,
            "target_p99_ms": TARGET_EDITOR_P99_MS,
            "updates_ok": self.updates_per_s >= TARGET_UPDATES_PER_S,
            "p99_ok": self.p99_ms <= TARGET_EDITOR_P99_MS,
            "learners": self.learners,
            "typing_chars_per_s": TYPING_CHARS_PER_S,
            "typing_updates_per_s": round(t.result.offered_msgs_per_s or 0.0, 1),
            "typing_updates": t.result.messages,
            "typing_s": round(t.result.seconds, 2),
            "full_load_updates": m.result.messages,
            "full_load_p50_ms": round(m.result.p50_ms, 3),
            "full_load_p99_ms": round(m.result.p99_ms, 3),
            "full_load_ack_p99_ms": round(m.ack_p99_ms, 3),
            "updates_per_s_runs": [round(r.result.msgs_per_s, 1) for r in self.full],
            "cpu_us_per_update": round(m.result.cpu_us_per_msg, 1),
            "relay_cpu_us_per_update": round(m.relay_cpu_us_per_update, 1),
            "typing_cpu_us_per_update": round(t.result.cpu_us_per_msg, 1),
            "window": self.window,
            "repeat": len(self.full),
            "update_bytes": self.update_bytes,
            "baseline_updates": self.baseline_updates,
            "editor_rate_limit": "raised in relay.toml [limits] (editor_msgs_per_second, "
            "editor_msgs_burst); the default is 50/s per connection, burst 200",
            "rate_limit_raised": True,
            "audit_records": self.audit_records,
            "servers": self.servers,
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "cpu_count": os.cpu_count() or 0,
            "setup_s": round(self.setup_s, 2),
            "total_s": round(self.total_s, 2),
        }


async def _measure_editor(
    facility: Facility, opts: EditorOptions, say: Callable[[str], None]
) -> tuple[tuple[EditorRun, ...], EditorRun]:
    serve = _relay_subprocess if opts.servers == "subprocess" else _relay_inprocess
    connector = aiohttp.TCPConnector(limit=0)
    async with serve(facility.home) as urls, aiohttp.ClientSession(connector=connector) as http:
        bench = _EditorBench(http, facility, urls, opts.learners)
        try:
            await bench.connect()
            await bench.create_files()
            await bench.run(max(1, opts.per_learner // 5), opts.window, None)  # warm-up
            full: list[EditorRun] = []
            for _ in range(opts.repeat):
                full.append(await bench.run(opts.per_learner, opts.window, None))
                say(f"  full load: {full[-1].result.msgs_per_s:,.0f} updates/s")
            typing = await bench.run(opts.typing_per_learner, opts.window, TYPING_CHARS_PER_S)
            say(
                f"  {opts.learners} learners typing {TYPING_CHARS_PER_S:g} chars/s: "
                f"p99 {typing.result.p99_ms:.2f} ms"
            )
        finally:
            await bench.close()
    return tuple(full), typing


def run_editor(opts: EditorOptions, say: Callable[[str], None]) -> EditorReport:
    """Build a temporary facility, measure the relay's editor and the pycrdt baseline."""
    started = time.perf_counter()
    say(f"baseline: bare pycrdt, {opts.baseline_updates:,} keystroke updates ...")
    baseline_s, update_bytes = pycrdt_baseline(opts.baseline_updates, opts.learners)
    with tempfile.TemporaryDirectory(prefix="relay-bench-editor-") as tmp:
        say(f"setting up a temporary facility with {opts.learners} machines and learners ...")
        setup = time.perf_counter()
        facility = build_facility(Path(tmp), opts.learners, extra_classes=(CLASS_EDITOR,))
        raise_editor_rate_limit(facility.home)
        setup_s = time.perf_counter() - setup
        full, typing = asyncio.run(_measure_editor(facility, opts, say))
        from relay.audit_read import AuditReader

        audit_records = sum(1 for _ in AuditReader(facility.home.audit_dir).records())
    return EditorReport(
        learners=opts.learners,
        window=opts.window,
        full=full,
        typing=typing,
        baseline_s=baseline_s,
        baseline_updates=opts.baseline_updates,
        update_bytes=update_bytes,
        servers=opts.servers,
        audit_records=audit_records,
        setup_s=setup_s,
        total_s=time.perf_counter() - started,
    )


def render_editor(report: EditorReport) -> str:
    r = report.to_json()
    where = (
        "clients and relay in ONE process and ONE event loop"
        if report.servers == "in-process"
        else "the relay in its own process; all clients in this process"
    )
    ok_rate = "met" if r["updates_ok"] else "NOT met"
    ok_p99 = "met" if r["p99_ok"] else "NOT met"
    return "\n".join(
        [
            f"classroom-relay bench editor: Python {r['python']}, {r['cpu_count']} CPU(s), "
            f"loopback; {where}.",
            f"{report.learners} learners, each typing into their own workspace "
            f"(learner:ID, file {EDITOR_FILE}) one character per update (~{report.update_bytes}"
            " bytes); the instructor watches every workspace. TLS 1.3 with client "
            "certificates; every update is applied to the relay's document, judged by the "
            "default content policy and recorded in the audit log "
            f"({report.audit_records:,} records) before it is forwarded.",
            "Per-connection editor rate limit raised for the benchmark (relay.toml [limits] "
            "editor_msgs_per_second, editor_msgs_burst; default 50/s, burst 200).",
            "",
            f"full load ({r['full_load_updates']:,} updates, {report.window} in flight per "
            f"learner; median of {r['repeat']}):",
            f"  {r['updates_per_s']:>12,.0f} updates/s   target >= {TARGET_UPDATES_PER_S:,.0f}: "
            f"{ok_rate}",
            f"  CPU per update: {r['cpu_us_per_update']:.0f} us (clients and relay), of which "
            f"the relay's process {r['relay_cpu_us_per_update']:.0f} us",
            f"  {r['baseline_updates_per_s']:>12,.0f} updates/s   baseline: bare pycrdt apply + "
            f"encode per update, no network  -> ratio {r['ratio']:.3f}",
            f"  p50 / p99 {r['full_load_p50_ms']:.2f} / {r['full_load_p99_ms']:.2f} ms "
            "(mostly the window queue)",
            f"{report.learners} learners typing {TYPING_CHARS_PER_S:g} chars/s each "
            f"({r['typing_updates_per_s']:,.0f} updates/s, {r['typing_updates']:,} updates):",
            f"  p50 / p99 {r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms   target p99 <= "
            f"{TARGET_EDITOR_P99_MS:g} ms: {ok_p99}   (learner sends -> instructor receives)",
            f"  ack p50 / p99 {r['ack_p50_ms']:.2f} / {r['ack_p99_ms']:.2f} ms   "
            "(learner sends -> learner's ack)",
            f"Took {report.total_s:.1f} s (set-up {report.setup_s:.1f} s).",
        ]
    )


def editor_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{PROG} editor",
        description="The shared editor: keystroke-sized updates per second through the relay "
        "(policy, audit, forwarding to the instructor), and latency with learners each "
        f"typing {TYPING_CHARS_PER_S:g} characters a second in their own workspace while the "
        "instructor watches. Baseline: bare pycrdt apply + encode per update.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quick", action="store_true", help="a small run (a few seconds; tests and CI)")
    p.add_argument(
        "--learners",
        type=_positive,
        default=DEFAULT_EDITOR_LEARNERS,
        metavar="N",
        help=f"learners typing (default {DEFAULT_EDITOR_LEARNERS})",
    )
    p.add_argument(
        "--updates",
        type=_positive,
        metavar="N",
        help=f"updates per full-load run, all learners together (default "
        f"{DEFAULT_EDITOR_UPDATES:,}, --quick {QUICK_EDITOR_UPDATES})",
    )
    p.add_argument(
        "--typing-seconds",
        type=float,
        metavar="S",
        help=f"length of the typing run (default {DEFAULT_TYPING_S:g}, --quick {QUICK_TYPING_S:g})",
    )
    p.add_argument(
        "--window",
        type=_positive,
        default=DEFAULT_EDITOR_WINDOW,
        metavar="N",
        help=f"updates in flight per learner (default {DEFAULT_EDITOR_WINDOW})",
    )
    p.add_argument(
        "--repeat",
        type=_positive,
        metavar="N",
        help=f"full-load runs, the median is reported (default {DEFAULT_REPEAT}, --quick 1)",
    )
    p.add_argument(
        "--baseline-updates",
        type=_positive,
        metavar="N",
        help=f"updates for the pycrdt baseline (default {DEFAULT_BASELINE_UPDATES:,}, "
        "--quick 1,000)",
    )
    p.add_argument(
        "--servers",
        choices=("in-process", "subprocess"),
        default="subprocess",
        help="run the relay in its own process (default; the clients stay in this one), or "
        "everything in this process and event loop",
    )
    return p


@scenario("editor", "shared editor: updates per second and p99 latency with 30 learners typing")
def editor_main(argv: list[str]) -> int:
    try:
        args = editor_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    quick = bool(args.quick)
    try:
        opts = EditorOptions(
            learners=args.learners,
            updates=args.updates or (QUICK_EDITOR_UPDATES if quick else DEFAULT_EDITOR_UPDATES),
            typing_s=args.typing_seconds or (QUICK_TYPING_S if quick else DEFAULT_TYPING_S),
            window=args.window,
            repeat=args.repeat or (1 if quick else DEFAULT_REPEAT),
            baseline_updates=args.baseline_updates
            or (1_000 if quick else DEFAULT_BASELINE_UPDATES),
            servers=args.servers,
            json=args.json,
        )
    except ValueError as exc:
        print(f"{PROG} editor: error: {exc}", file=sys.stderr)
        return 2

    def say(text: str) -> None:
        if not opts.json:
            print(text, flush=True)

    try:
        report = run_editor(opts, say)
    except (BenchError, ConfigError) as exc:
        print(f"{PROG} editor: error: {exc}", file=sys.stderr)
        return 1
    if opts.json:
        print(json.dumps(report.to_json()), flush=True)
    else:
        print()
        print(render_editor(report), flush=True)
    return 0


# ---------------------------------------------------------------------------------------
# the screen scenario
# ---------------------------------------------------------------------------------------
#
# Processes: this one (orchestrating, and reading the CPU time of the server process from
# /proc), the server (the relay as ``classroom-relay serve``, or the baseline forwarder),
# the publisher (a TestPattern over WebRTC) and the viewers (up to VIEWERS_PER_PROCESS per
# process; their receivers count whole frames instead of decoding them). Commands and
# counts go over multiprocessing pipes; in the baseline the SDP offers go over them too.

CLASS_SCREEN = "bench-screen"
SCREEN_WIDTH = 1280
SCREEN_HEIGHT = 720
SCREEN_FPS = 10.0
DEFAULT_SCREEN_VIEWERS = (1, 10, 30)
DEFAULT_SCREEN_SECONDS = 10.0
SCREEN_SETTLE_S = 3.0
"""After the last viewer is connected, before the window opens (ICE, DTLS, first keyframe)."""
VIEWERS_PER_PROCESS = 10
TARGET_SCREEN_VIEWERS = 30
TARGET_SCREEN_CPU_FRACTION = 0.5
TARGET_SCREEN_DELIVERED = 0.95
DEFAULT_LATE_VIEWERS = 5
MAX_LATE_VIEWERS = 20
LATE_JOIN_GAP_S = (0.25, 2.0)
"""Bounds of the random wait before each late viewer joins (spread over the relay's 2 s
keyframe interval, so joins land at different moments of it)."""
LATE_JOIN_TIMEOUT_S = 20.0
"""A late viewer with no picture by then counts as missed."""
TARGET_LATE_JOIN_S = 2.0
_SETUP_TIMEOUT_S = 120.0


async def _screen_connect(
    url: str, bundle: str, hello: dict[str, Any], ssl_ctx: Any = None
) -> tuple[Any, Any]:
    """A session and WebSocket to the relay, joined to the screen class."""
    ctx = ssl_ctx or load_bundle(Path(bundle)).client_ssl_context(Path(bundle))
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(
        url, protocols=(wire.SUBPROTOCOL,), ssl=ctx, compress=0, autoping=True, heartbeat=20.0
    )
    await ws.send_bytes(msgpack.packb({"t": "hello", **hello}, use_bin_type=True))
    welcome = msgpack.unpackb(await ws.receive_bytes(timeout=30.0), raw=False)
    if welcome.get("t") != "welcome":
        raise BenchError(f"hello refused: {welcome}")
    return http, ws


async def _screen_ask(ws: Any, frame: bytes, ref: str) -> dict[str, Any]:
    """Send ``frame``; the relay's answer to it (``share_answer`` or a refusing ``ack``)."""
    await ws.send_bytes(frame)
    while True:
        m: dict[str, Any] = msgpack.unpackb(await ws.receive_bytes(timeout=30.0), raw=False)
        if m.get("ref") == ref and m.get("t") in ("share_answer", "ack"):
            return m


async def _drain(ws: Any) -> None:
    """Read (and drop) what the relay sends, so pings are answered."""
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass


def _screen_publisher_main(conn: Any, url: str | None, bundle: str) -> None:
    """The instructor: a 1280x720 test pattern at 10 fps to the relay (``url``) or to the
    baseline forwarder (``url`` None: the offer goes over ``conn``)."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from relay.messages import ShareStart, ShareStop
    from relay.screen_media import (
        TestPattern,
        ice_configuration,
        prefer_vp8,
        restrict_ice_addresses,
    )

    restrict_ice_addresses(["127.0.0.1"])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        pattern = TestPattern(SCREEN_WIDTH, SCREEN_HEIGHT, fps=SCREEN_FPS)
        pc = RTCPeerConnection(ice_configuration())
        prefer_vp8(pc.addTransceiver(pattern, direction="sendonly"))
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        http = ws = drain = None
        share = "baseline"
        if url is None:
            conn.send(("offer", offer))
            answer = await loop.run_in_executor(None, conn.recv)
        else:
            http, ws = await _screen_connect(url, bundle, {"id": "h-1", "session": CLASS_SCREEN})
            got = await _screen_ask(ws, wire.encode_client(ShareStart(id="p1", sdp=offer)), "p1")
            if got["t"] != "share_answer":
                raise BenchError(f"share_start refused: {got}")
            answer, share = got["sdp"], got["share"]
            drain = asyncio.ensure_future(_drain(ws))
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        conn.send(("ready", share))
        while await loop.run_in_executor(None, conn.recv) == "mark":
            conn.send(pattern.count)
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.send_bytes(wire.encode_client(ShareStop(id="p2", share=share)))
                await asyncio.sleep(0.2)
                await ws.close()
        if drain is not None:
            drain.cancel()
        if http is not None:
            await http.close()
        await pc.close()

    asyncio.run(main())


def _screen_viewers_main(
    conn: Any, url: str | None, share: str, viewers: Sequence[tuple[str, str]]
) -> None:
    """Viewers (``(bundle, learner)`` each) of ``share``, their receivers counting whole
    frames instead of decoding them (the viewers' CPU is not what is measured)."""
    import aiortc.rtcrtpreceiver as receiver_module
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from relay.messages import ShareWatch
    from relay.screen_media import ice_configuration, prefer_vp8, restrict_ice_addresses

    restrict_ice_addresses(["127.0.0.1"])
    counters: list[list[int]] = []

    class CountingDecoder:
        def __init__(self) -> None:
            self.count = [0]
            counters.append(self.count)

        def decode(self, encoded_frame: Any) -> list[Any]:
            self.count[0] += 1
            return []

    receiver_module.get_decoder = lambda codec: CountingDecoder()  # type: ignore[attr-defined,assignment,return-value]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        pcs, sockets, tasks = [], [], []
        for i, (bundle, learner) in enumerate(viewers):
            pc = RTCPeerConnection(ice_configuration())
            pcs.append(pc)
            prefer_vp8(pc.addTransceiver("video", direction="recvonly"))
            await pc.setLocalDescription(await pc.createOffer())
            offer = pc.localDescription.sdp
            if url is None:
                conn.send(("offer", offer))
                answer = await loop.run_in_executor(None, conn.recv)
            else:
                hello = {"id": "h-1", "session": CLASS_SCREEN, "learner": learner, "pin": PIN}
                http, ws = await _screen_connect(url, bundle, hello)
                sockets.append((http, ws))
                ref = f"w{i}"
                frame = wire.encode_client(ShareWatch(id=ref, share=share, sdp=offer))
                got = await _screen_ask(ws, frame, ref)
                if got["t"] != "share_answer":
                    raise BenchError(f"share_watch refused: {got}")
                answer = got["sdp"]
                tasks.append(asyncio.ensure_future(_drain(ws)))
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        conn.send(("ready", len(pcs)))
        while await loop.run_in_executor(None, conn.recv) == "mark":
            conn.send(sum(c[0] for c in counters))
        for task in tasks:
            task.cancel()
        for http, ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close()
            await http.close()
        await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)

    asyncio.run(main())


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _screen_late_main(conn: Any, url: str, share: str, viewers: Sequence[tuple[str, str]]) -> None:
    """Late viewers (``(bundle, learner)`` each) of ``share``: on ``"late"``, one at a time,
    after a random wait, each joins (peer connection and offer, TLS connection, hello,
    ``share_watch``), decodes until its first picture, and leaves. Sends back one
    ``(from_start_s, from_watch_s, width, height, counter)`` per viewer (None for a
    viewer with no picture within :data:`LATE_JOIN_TIMEOUT_S`)."""
    import aiortc.rtcrtpreceiver as receiver_module
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from relay.messages import ShareWatch
    from relay.screen_media import (
        ice_configuration,
        prefer_vp8,
        read_counter,
        restrict_ice_addresses,
    )

    restrict_ice_addresses(["127.0.0.1"])
    from aiortc.codecs import get_decoder as real_get_decoder

    loop: asyncio.AbstractEventLoop | None = None
    current: list[asyncio.Future[tuple[float, Any]] | None] = [None]

    class FirstPictureDecoder:
        """aiortc's decoder until the first picture (whose time is noted), then nothing."""

        def __init__(self, codec: Any) -> None:
            self.real: Any = real_get_decoder(codec)
            self.picture = current[0]

        def decode(self, encoded_frame: Any) -> list[Any]:
            got = self.picture
            if got is None or got.done():
                return []
            frames = self.real.decode(encoded_frame)
            if frames and loop is not None:
                at = time.monotonic()
                loop.call_soon_threadsafe(_settle, got, (at, frames[0]))
            return []  # the track is not read: nothing queues up behind it

    receiver_module.get_decoder = FirstPictureDecoder  # type: ignore[attr-defined,assignment]

    async def join(bundle: str, learner: str, ssl_ctx: Any, ref: str) -> tuple[Any, ...] | None:
        assert loop is not None
        picture: asyncio.Future[tuple[float, Any]] = loop.create_future()
        current[0] = picture
        http = ws = drain = None
        start = time.monotonic()
        pc = RTCPeerConnection(ice_configuration())
        try:
            prefer_vp8(pc.addTransceiver("video", direction="recvonly"))
            await pc.setLocalDescription(await pc.createOffer())
            hello = {"id": "h-1", "session": CLASS_SCREEN, "learner": learner, "pin": PIN}
            http, ws = await _screen_connect(url, bundle, hello, ssl_ctx)
            watch = time.monotonic()
            sdp = pc.localDescription.sdp
            frame = wire.encode_client(ShareWatch(id=ref, share=share, sdp=sdp))
            got = await _screen_ask(ws, frame, ref)
            if got["t"] != "share_answer":
                raise BenchError(f"share_watch refused: {got}")
            drain = asyncio.ensure_future(_drain(ws))
            await pc.setRemoteDescription(RTCSessionDescription(got["sdp"], "answer"))
            try:
                at, first = await asyncio.wait_for(picture, LATE_JOIN_TIMEOUT_S)
            except TimeoutError:
                return None
            return at - start, at - watch, first.width, first.height, read_counter(first)
        finally:
            current[0] = None
            if drain is not None:
                drain.cancel()
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close()
            if http is not None:
                await http.close()
            await pc.close()

    async def main() -> None:
        nonlocal loop
        loop = asyncio.get_running_loop()
        # Loaded before the clock starts, as a client holds its bundle before it joins.
        contexts = [load_bundle(Path(b)).client_ssl_context(Path(b)) for b, _ in viewers]
        conn.send(("ready", len(viewers)))
        pick = random.Random()
        while await loop.run_in_executor(None, conn.recv) == "late":
            results = []
            for i, ((bundle, learner), ctx) in enumerate(zip(viewers, contexts, strict=True)):
                await asyncio.sleep(pick.uniform(*LATE_JOIN_GAP_S))
                results.append(await join(bundle, learner, ctx, f"late{i}"))
            conn.send(results)

    asyncio.run(main())


def _screen_forwarder_main(conn: Any) -> None:
    """The baseline: a bare aiortc forwarder, aiortc's defaults: the publisher's track
    decoded once, and each viewer's sender encoding it again (``MediaRelay``)."""
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaRelay

    from relay.screen_media import ice_configuration, prefer_vp8, restrict_ice_addresses

    restrict_ice_addresses(["127.0.0.1"])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        pcs: list[Any] = []
        media_relay = MediaRelay()
        source: Any = None
        while True:
            cmd = await loop.run_in_executor(None, conn.recv)
            if cmd == "stop":
                break
            what, offer = cmd
            pc = RTCPeerConnection(ice_configuration())
            pcs.append(pc)
            got: asyncio.Future[Any] = loop.create_future()
            pc.on("track", lambda t, got=got: got.done() or got.set_result(t))
            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            if what == "watch":
                transceiver = pc.getTransceivers()[0]
                transceiver.direction = "sendonly"
                transceiver.sender.replaceTrack(media_relay.subscribe(source, buffered=False))
                prefer_vp8(transceiver)
            await pc.setLocalDescription(await pc.createAnswer())
            if what == "publish":
                source = await asyncio.wait_for(got, 20)
            conn.send(pc.localDescription.sdp)
        await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)

    asyncio.run(main())


@dataclass(frozen=True, slots=True)
class LateJoin:
    """One viewer who joined while the share ran: seconds to its first decoded picture."""

    from_start_s: float | None
    """From the start of joining (peer connection and offer, TLS connection with the
    client certificate, hello) to the first decoded picture; None: no picture in time."""
    from_watch_s: float | None
    """From sending ``share_watch`` to the first decoded picture."""
    picture_ok: bool
    """The picture was the source's size and carried a frame counter the source drew
    while the late viewers joined (a fresh picture, not a stale or broken one)."""

    def __post_init__(self) -> None:
        for value in (self.from_start_s, self.from_watch_s):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"a late join time must be a non-negative number, not {value}")


@dataclass(frozen=True, slots=True)
class ScreenRun:
    """One measured window: ``viewers`` watching, through the relay or the baseline."""

    viewers: int
    seconds: float
    cpu_s: float
    """CPU time (user + system) of the server process over the window."""
    source_frames: int
    frames_received: int
    """By all viewers together."""
    late_joins: tuple[LateJoin, ...] = ()
    """Viewers who joined one at a time after the window, while ``viewers`` watched."""

    @property
    def cpu_fraction(self) -> float:
        return self.cpu_s / self.seconds if self.seconds > 0 else 0.0

    @property
    def delivered_ratio(self) -> float:
        return self.frames_received / max(1, self.viewers * self.source_frames)


class _Pipe:
    """This end of a child process's pipe, awaited without blocking the loop."""

    def __init__(self, conn: Any, name: str) -> None:
        self.conn = conn
        self.name = name

    async def recv(self, within: float = _SETUP_TIMEOUT_S) -> Any:
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, self.conn.poll, within):
            raise BenchError(f"the {self.name} said nothing within {within:g} s")
        return self.conn.recv()

    def send(self, value: Any) -> None:
        self.conn.send(value)


async def _until_ready(pipe: _Pipe, answer: Callable[[str], Awaitable[str]] | None) -> Any:
    """Serve a client process's offers (baseline) until it says it is ready."""
    while True:
        try:
            kind, value = await pipe.recv()
        except (EOFError, OSError):
            raise BenchError(f"the {pipe.name} process ended during set-up") from None
        if kind == "ready":
            return value
        if answer is None:
            raise BenchError(f"the {pipe.name} sent an offer to a relay run")
        pipe.send(await answer(value))


async def _screen_run(
    viewers: int,
    seconds: float,
    server_pid: int,
    publisher_url: str | None,
    viewer_url: str | None,
    facility: Facility,
    forwarder: _Pipe | None,
    late: Sequence[tuple[str, str]] = (),
) -> ScreenRun:
    """Start a publisher and ``viewers`` viewers, measure one window; then, through the
    relay, the ``late`` viewers (``(bundle, learner)`` each) join one at a time while the
    others watch; stop them all."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs: list[Any] = []
    pipes: list[_Pipe] = []

    def start(target: Callable[..., None], name: str, *args: Any) -> _Pipe:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=target, args=(child, *args), daemon=True)
        proc.start()
        procs.append(proc)
        pipe = _Pipe(parent, name)
        pipes.append(pipe)
        return pipe

    async def answer_as(kind: str) -> Callable[[str], Awaitable[str]] | None:
        if forwarder is None:
            return None

        async def answer(offer: str) -> str:
            assert forwarder is not None
            forwarder.send((kind, offer))
            sdp: str = await forwarder.recv()
            return sdp

        return answer

    try:
        publisher = start(
            _screen_publisher_main, "publisher", publisher_url, str(facility.instructor_bundle)
        )
        share = await _until_ready(publisher, await answer_as("publish"))
        groups = []
        everyone = [
            (str(facility.machine_bundles[i]), facility.learners[i]) for i in range(viewers)
        ]
        for at in range(0, viewers, VIEWERS_PER_PROCESS):
            group = everyone[at : at + VIEWERS_PER_PROCESS]
            groups.append(start(_screen_viewers_main, "viewers", viewer_url, share, group))
            await _until_ready(groups[-1], await answer_as("watch"))
        latecomers = None
        if late and viewer_url is not None:
            latecomers = start(_screen_late_main, "late viewers", viewer_url, share, list(late))
            await _until_ready(latecomers, None)
        await asyncio.sleep(SCREEN_SETTLE_S)

        async def mark() -> tuple[float, float, int, int]:
            for pipe in (publisher, *groups):
                pipe.send("mark")
            t, cpu = time.monotonic(), _process_cpu_seconds(server_pid)
            sent = await publisher.recv(30.0)
            received = [await g.recv(30.0) for g in groups]
            return t, cpu, int(sent), sum(int(r) for r in received)

        t0, cpu0, sent0, got0 = await mark()
        await asyncio.sleep(seconds)
        t1, cpu1, sent1, got1 = await mark()
        joins: list[LateJoin] = []
        if latecomers is not None:
            latecomers.send("late")
            within = len(late) * (LATE_JOIN_GAP_S[1] + LATE_JOIN_TIMEOUT_S + 30.0)
            results = await latecomers.recv(within)
            publisher.send("mark")
            drawn = int(await publisher.recv(30.0))
            for result in results:
                if result is None:
                    joins.append(LateJoin(None, None, False))
                    continue
                from_start, from_watch, width, height, counter = result
                ok = (width, height) == (SCREEN_WIDTH, SCREEN_HEIGHT) and sent1 <= counter < drawn
                joins.append(LateJoin(from_start, from_watch, ok))
        return ScreenRun(viewers, t1 - t0, cpu1 - cpu0, sent1 - sent0, got1 - got0, tuple(joins))
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError, ValueError):
                pipe.send("stop")
        loop = asyncio.get_running_loop()
        for proc in procs:
            await loop.run_in_executor(None, proc.join, 20.0)
            if proc.is_alive():
                proc.kill()
                await loop.run_in_executor(None, proc.join, 5.0)


@contextlib.asynccontextmanager
async def _screen_forwarder() -> AsyncIterator[tuple[int, _Pipe]]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_screen_forwarder_main, args=(child,), daemon=True)
    proc.start()
    assert proc.pid is not None
    try:
        yield proc.pid, _Pipe(parent, "baseline forwarder")
    finally:
        with contextlib.suppress(OSError, ValueError):
            parent.send("stop")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, proc.join, 20.0)
        if proc.is_alive():
            proc.kill()
            await loop.run_in_executor(None, proc.join, 5.0)


@dataclass(frozen=True, slots=True)
class ScreenOptions:
    viewers: tuple[int, ...]
    seconds: float
    baseline: bool
    json: bool
    late_viewers: int = DEFAULT_LATE_VIEWERS

    def __post_init__(self) -> None:
        if not self.viewers or any(not 1 <= n <= MAX_FANOUT for n in self.viewers):
            raise ValueError(f"--viewers: numbers from 1 to {MAX_FANOUT}, comma-separated")
        if not 0.5 <= self.seconds <= 600:
            raise ValueError("--seconds from 0.5 to 600")
        if not 0 <= self.late_viewers <= MAX_LATE_VIEWERS:
            raise ValueError(f"--late-viewers from 0 to {MAX_LATE_VIEWERS}")


@dataclass(frozen=True, slots=True)
class ScreenReport:
    relay: tuple[ScreenRun, ...]
    baseline: tuple[ScreenRun, ...]
    """Empty with --no-baseline."""
    seconds: float
    audit_records: int
    setup_s: float
    total_s: float

    def _target_run(self) -> ScreenRun | None:
        return next((r for r in self.relay if r.viewers == TARGET_SCREEN_VIEWERS), None)

    def _late_run(self) -> ScreenRun | None:
        return next((r for r in self.relay if r.late_joins), None)

    @property
    def late_joins(self) -> tuple[LateJoin, ...]:
        run = self._late_run()
        return run.late_joins if run else ()

    @property
    def late_join_max_s(self) -> float | None:
        """The slowest late viewer, from the start of joining; None if one had no picture."""
        times = [j.from_start_s for j in self.late_joins]
        if not times or any(t is None for t in times):
            return None
        return max(t for t in times if t is not None)

    @property
    def late_join_target_met(self) -> bool | None:
        """Every late viewer saw a fresh picture within 2 s of starting to join (None when
        no late viewers were measured)."""
        if not self.late_joins:
            return None
        worst = self.late_join_max_s
        return (
            worst is not None
            and worst <= TARGET_LATE_JOIN_S
            and all(j.picture_ok for j in self.late_joins)
        )

    @property
    def target_met(self) -> bool | None:
        """None when 30 viewers were not measured."""
        run = self._target_run()
        if run is None:
            return None
        return (
            run.cpu_fraction <= TARGET_SCREEN_CPU_FRACTION
            and run.delivered_ratio >= TARGET_SCREEN_DELIVERED
        )

    def to_json(self) -> dict[str, Any]:
        base = {r.viewers: r for r in self.baseline}

        def num(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        runs = []
        for r in self.relay:
            b = base.get(r.viewers)
            runs.append(
                {
                    "viewers": r.viewers,
                    "relay_cpu_fraction": num(r.cpu_fraction),
                    "baseline_cpu_fraction": num(b.cpu_fraction if b else None),
                    "frames_delivered_ratio": num(r.delivered_ratio),
                    "baseline_frames_delivered_ratio": num(b.delivered_ratio if b else None),
                    "source_frames": r.source_frames,
                    "frames_received": r.frames_received,
                    "window_s": round(r.seconds, 3),
                    "baseline_source_frames": b.source_frames if b else None,
                    "baseline_frames_received": b.frames_received if b else None,
                }
            )
        late = self.late_joins
        from_watch = [j.from_watch_s for j in late]
        late_run = self._late_run()
        return {
            "scenario": "screen",
            "shape": "viewers, relay_cpu_fraction, baseline_cpu_fraction and "
            "frames_delivered_ratio are lists, one entry per viewer count (same order); "
            "runs has the same as one object per viewer count; late_join_s and "
            "late_join_from_watch_s have one entry per late viewer (null: no picture)",
            "viewers": [r["viewers"] for r in runs],
            "relay_cpu_fraction": [r["relay_cpu_fraction"] for r in runs],
            "baseline_cpu_fraction": [r["baseline_cpu_fraction"] for r in runs],
            "frames_delivered_ratio": [r["frames_delivered_ratio"] for r in runs],
            "baseline_frames_delivered_ratio": [r["baseline_frames_delivered_ratio"] for r in runs],
            "runs": runs,
            "cpu_fraction": "CPU time (user + system, all threads) of the server process "
            "over the window / the window's length: 1.0 is one core busy",
            "frames_delivered_ratio_is": "frames the viewers' receivers assembled / (viewers x "
            "frames the source sent), over the same window",
            "source": f"TestPattern {SCREEN_WIDTH}x{SCREEN_HEIGHT} at {SCREEN_FPS:g} fps over "
            "WebRTC (VP8) from its own process",
            "relay": "classroom-relay serve in its own process: decodes the share once, encodes "
            "it once, records every frame in the audit log, sends the same packets to every "
            "viewer",
            "baseline": "a bare aiortc forwarder in its own process: MediaRelay, one VP8 "
            "encoder per viewer (aiortc's default), no audit log, no policy, no signalling",
            "target_viewers": TARGET_SCREEN_VIEWERS,
            "target_cpu_fraction": TARGET_SCREEN_CPU_FRACTION,
            "target_frames_delivered_ratio": TARGET_SCREEN_DELIVERED,
            "target_met": self.target_met,
            "late_join_s": [num(j.from_start_s) for j in late],
            "late_join_max_s": num(self.late_join_max_s),
            "late_join_from_watch_s": [num(t) for t in from_watch],
            "late_join_from_watch_max_s": (
                num(max(t for t in from_watch if t is not None))
                if from_watch and None not in from_watch
                else None
            ),
            "late_join_pictures_ok": sum(1 for j in late if j.picture_ok),
            "late_join_viewers_watching": late_run.viewers if late_run else None,
            "late_join_is": "through the relay, after the measured window of the largest "
            "viewer count, while those viewers watch: late viewers join one at a time, each "
            f"after a random {LATE_JOIN_GAP_S[0]:g}-{LATE_JOIN_GAP_S[1]:g} s wait, and decode "
            "(aiortc's VP8 decoder) until their first picture. late_join_s counts from the "
            "start of joining: peer connection and offer, TLS connection with the client "
            "certificate, hello, share_watch, ICE, DTLS, the keyframe, the decode (the "
            "bundle is loaded before). late_join_from_watch_s counts from sending "
            "share_watch. A picture is ok when it is the source's size and carries a frame "
            "counter drawn during the late joins.",
            "target_late_join_s": TARGET_LATE_JOIN_S,
            "late_join_target_met": self.late_join_target_met,
            "seconds": self.seconds,
            "settle_s": SCREEN_SETTLE_S,
            "width": SCREEN_WIDTH,
            "height": SCREEN_HEIGHT,
            "fps": SCREEN_FPS,
            "audit_records": self.audit_records,
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "cpu_count": os.cpu_count() or 0,
            "setup_s": round(self.setup_s, 2),
            "total_s": round(self.total_s, 2),
        }


async def _measure_screen(
    facility: Facility, opts: ScreenOptions, say: Callable[[str], None]
) -> tuple[tuple[ScreenRun, ...], tuple[ScreenRun, ...]]:
    relay_runs: list[ScreenRun] = []
    most = max(opts.viewers)
    late = [
        (str(facility.machine_bundles[i]), facility.learners[i])
        for i in range(most, most + opts.late_viewers)
    ]
    async with _relay_subprocess(facility.home) as urls:
        assert urls.server_pid is not None
        for n in opts.viewers:
            run = await _screen_run(
                n,
                opts.seconds,
                urls.server_pid,
                urls.sender,
                urls.receivers,
                facility,
                None,
                late if n == most else (),
            )
            relay_runs.append(run)
            say(
                f"  relay, {n:>3} viewer(s): CPU {run.cpu_fraction:6.1%} of a core, "
                f"{run.delivered_ratio:6.1%} of frames delivered"
            )
            if run.late_joins:
                say(f"  relay, {len(run.late_joins)} late viewer(s): {_late_summary(run)}")
    baseline_runs: list[ScreenRun] = []
    if opts.baseline:
        for n in opts.viewers:
            async with _screen_forwarder() as (pid, pipe):
                run = await _screen_run(n, opts.seconds, pid, None, None, facility, pipe)
            baseline_runs.append(run)
            say(
                f"  baseline, {n:>3} viewer(s): CPU {run.cpu_fraction:6.1%} of a core, "
                f"{run.delivered_ratio:6.1%} of frames delivered"
            )
    return tuple(relay_runs), tuple(baseline_runs)


def run_screen(opts: ScreenOptions, say: Callable[[str], None]) -> ScreenReport:
    """Build a temporary facility; measure the relay's screen share and the baseline."""
    started = time.perf_counter()
    most = max(opts.viewers) + opts.late_viewers
    with tempfile.TemporaryDirectory(prefix="relay-bench-screen-") as tmp:
        say(f"setting up a temporary facility with {most} machines and learners ...")
        setup = time.perf_counter()
        facility = build_facility(Path(tmp), most, extra_classes=(CLASS_SCREEN,))
        setup_s = time.perf_counter() - setup
        relay_runs, baseline_runs = asyncio.run(_measure_screen(facility, opts, say))
        from relay.audit_read import AuditReader

        audit_records = sum(1 for _ in AuditReader(facility.home.audit_dir).records())
    return ScreenReport(
        relay=relay_runs,
        baseline=baseline_runs,
        seconds=opts.seconds,
        audit_records=audit_records,
        setup_s=setup_s,
        total_s=time.perf_counter() - started,
    )


def _late_summary(run: ScreenRun) -> str:
    """The late viewers' seconds to a first picture, as one line."""

    def secs(values: list[float | None]) -> str:
        return ", ".join("none" if v is None else f"{v:.2f}" for v in values)

    joins = run.late_joins
    ok = sum(1 for j in joins if j.picture_ok)
    return (
        f"first picture after {secs([j.from_start_s for j in joins])} s from the start of "
        f"joining (offer, TLS, hello, share_watch); {secs([j.from_watch_s for j in joins])} s from "
        f"share_watch; {ok} of {len(joins)} pictures fresh and whole"
    )


def render_screen(report: ScreenReport) -> str:
    r = report.to_json()
    lines = [
        f"classroom-relay bench screen: Python {r['python']}, {r['cpu_count']} CPU(s), loopback.",
        f"One {SCREEN_WIDTH}x{SCREEN_HEIGHT} {SCREEN_FPS:g} fps test pattern over WebRTC to N "
        "viewers; the relay (classroom-relay serve), the baseline forwarder, the publisher and "
        f"the viewers each in their own process(es); CPU of the server process over "
        f"{report.seconds:g} s windows (1.0 = one core). Every frame through the relay is "
        f"recorded in the audit log ({report.audit_records:,} records).",
        "",
        f"{'viewers':>8}  {'relay CPU':>10}  {'delivered':>10}  {'baseline CPU':>13}  "
        f"{'delivered':>10}",
    ]
    for run in r["runs"]:

        def pct(value: float | None) -> str:
            return "-" if value is None else f"{value:.1%}"

        lines.append(
            f"{run['viewers']:>8}  {pct(run['relay_cpu_fraction']):>10}  "
            f"{pct(run['frames_delivered_ratio']):>10}  {pct(run['baseline_cpu_fraction']):>13}"
            f"  {pct(run['baseline_frames_delivered_ratio']):>10}"
        )
    lines.append("")
    lines.append(
        "baseline: a bare aiortc forwarder (MediaRelay: one VP8 encoder per viewer, no audit)"
    )
    met = report.target_met
    verdict = "not measured" if met is None else "met" if met else "NOT met"
    lines.append(
        f"target: {TARGET_SCREEN_VIEWERS} viewers at <= {TARGET_SCREEN_CPU_FRACTION:.0%} of "
        f"one core with >= {TARGET_SCREEN_DELIVERED:.0%} of frames delivered: {verdict}"
    )
    late_run = report._late_run()
    if late_run is not None:
        lines.append(
            f"late join ({len(late_run.late_joins)} viewers joining one at a time while "
            f"{late_run.viewers} other(s) watch): {_late_summary(late_run)}"
        )
    met = report.late_join_target_met
    verdict = "not measured" if met is None else "met" if met else "NOT met"
    worst = report.late_join_max_s
    slowest = "" if worst is None else f" (slowest {worst:.2f} s)"
    lines.append(
        f"target: a late viewer sees a picture within {TARGET_LATE_JOIN_S:g} s of starting "
        f"to join, connecting included{slowest}: {verdict}"
    )
    lines.append(f"Took {report.total_s:.1f} s (set-up {report.setup_s:.1f} s).")
    return "\n".join(lines)


def _viewer_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated numbers: {text!r}") from None
    if not counts:
        raise argparse.ArgumentTypeError("give at least one viewer count")
    return counts


def screen_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{PROG} screen",
        description=f"Screen share: one {SCREEN_WIDTH}x{SCREEN_HEIGHT} {SCREEN_FPS:g} fps "
        "source to N viewers on loopback through the relay in its own process; the relay "
        "process's CPU and the share of frames delivered, against a bare aiortc forwarder "
        "that encodes per viewer (MediaRelay).",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument(
        "--viewers",
        type=_viewer_counts,
        default=DEFAULT_SCREEN_VIEWERS,
        metavar="N,N,...",
        help=f"viewer counts to measure (default {','.join(map(str, DEFAULT_SCREEN_VIEWERS))})",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_SCREEN_SECONDS,
        metavar="S",
        help=f"length of each measured window (default {DEFAULT_SCREEN_SECONDS:g})",
    )
    p.add_argument(
        "--late-viewers",
        type=int,
        default=DEFAULT_LATE_VIEWERS,
        metavar="K",
        help="viewers who join one at a time while the largest viewer count watches, timed "
        f"to their first decoded picture (default {DEFAULT_LATE_VIEWERS}; 0: none)",
    )
    p.add_argument("--no-baseline", action="store_true", help="measure the relay only")
    return p


@scenario(
    "screen",
    "screen share: relay CPU and frames delivered for 1, 10, 30 viewers; late-join time",
)
def screen_main(argv: list[str]) -> int:
    try:
        args = screen_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        opts = ScreenOptions(
            viewers=tuple(dict.fromkeys(args.viewers)),
            seconds=args.seconds,
            baseline=not args.no_baseline,
            json=args.json,
            late_viewers=args.late_viewers,
        )
    except ValueError as exc:
        print(f"{PROG} screen: error: {exc}", file=sys.stderr)
        return 2

    def say(text: str) -> None:
        if not opts.json:
            print(text, flush=True)

    try:
        report = run_screen(opts, say)
    except (BenchError, ConfigError) as exc:
        print(f"{PROG} screen: error: {exc}", file=sys.stderr)
        return 1
    if opts.json:
        print(json.dumps(report.to_json()), flush=True)
    else:
        print()
        print(render_screen(report), flush=True)
    return 0


# ---------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------


def list_scenarios(out: TextIO) -> None:
    out.write(f"usage: {PROG} SCENARIO [options]   ({PROG} SCENARIO --help for its options)\n")
    out.write("scenarios:\n")
    width = max(len(name) for name in SCENARIOS)
    for entry in SCENARIOS.values():
        out.write(f"  {entry.name.ljust(width)}  {entry.summary}\n")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "list"):
        list_scenarios(sys.stdout)
        return 0
    if args[0] == _SERVE_BARE and len(args) == 2:
        return _serve_bare(args[1])
    entry = SCENARIOS.get(args[0])
    if entry is None:
        print(f"{PROG}: error: no scenario {args[0]!r}", file=sys.stderr)
        list_scenarios(sys.stderr)
        return 2
    return entry.run(args[1:])


__all__ = [
    "SCENARIOS",
    "AuditOptions",
    "AuditReport",
    "BenchError",
    "ChatOptions",
    "ChatReport",
    "EditorOptions",
    "EditorReport",
    "LateJoin",
    "PolicyReport",
    "RunResult",
    "Scenario",
    "ScreenOptions",
    "ScreenReport",
    "ScreenRun",
    "TargetResult",
    "build_facility",
    "main",
    "percentile",
    "render_screen",
    "run_audit",
    "run_chat",
    "run_editor",
    "run_policy",
    "run_screen",
    "scenario",
]

if __name__ == "__main__":
    raise SystemExit(main())
