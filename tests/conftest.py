"""Shared fixtures: a real facility built with the admin CLI, and a real relay on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from relay import cli
from relay.home import FacilityHome
from relay.server import Relay, running_relay
from tests.rawclient import Raw, raw_connect

PINS = {"l1001": "1234", "l1002": "2345", "l1003": "3456", "l1009": "9999"}


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Facility:
    """A facility home made by the real admin commands, in a short temporary path."""

    root: Path

    @property
    def home(self) -> FacilityHome:
        return FacilityHome(self.root / "fac")

    def admin(self, *args: str) -> tuple[int, str, str]:
        return cli.run_captured(self.home.root, *args)

    def must(self, *args: str) -> str:
        code, out, err = self.admin(*args)
        assert code == 0, f"classroom-relay {' '.join(args)} failed: {err}{out}"
        return out

    def bundle(self, name: str) -> Path:
        return self.root / f"{name}.bundle"

    def enroll(self, role: str, name: str, *extra: str) -> Path:
        self.must("enroll", role, name, "--out", str(self.bundle(name)), *extra)
        return self.bundle(name)

    def schedule(
        self,
        class_id: str,
        *,
        instructor: str = "alice",
        classroom: str = "room-a",
        learners: tuple[str, ...] = ("l1001", "l1002", "l1003"),
        start: dt.timedelta = dt.timedelta(minutes=-5),
        end: dt.timedelta = dt.timedelta(hours=1),
    ) -> None:
        now = dt.datetime.now(dt.UTC)
        args = ["schedule", "add", "--id", class_id, "--title", f"Class {class_id}"]
        args += ["--instructor", instructor, "--classroom", classroom]
        for learner in learners:
            args += ["--learner", learner]
        args += ["--start", iso(now + start), "--end", iso(now + end)]
        self.must(*args)

    def set_limits(self, **limits: float) -> None:
        """Write ``limits`` into the [limits] table of relay.toml (before the relay starts)."""
        path = self.home.relay_toml
        lines = path.read_text().splitlines(keepends=True)
        at = next(i for i, line in enumerate(lines) if line.strip() == "[limits]")
        lines.insert(at + 1, "".join(f"{k} = {v!r}\n" for k, v in limits.items()))
        path.write_text("".join(lines))

    def raise_policy_chat_rate(self) -> None:
        """Lift the policy's chat rate limits (policy.toml [rate.chat]) for load tests."""
        from relay.bench import raise_policy_chat_rate

        raise_policy_chat_rate(self.home)

    def audit_records(self) -> list[dict[str, Any]]:
        """Every event of the audit log, contents decrypted (this home keeps the staff
        audit key in clear: it was made with --no-passphrase). ``seq`` is the record's
        number in the log, ``class_seq`` the class sequence number."""
        from relay.audit_keys import load_staff_private
        from relay.audit_read import AuditReader

        reader = AuditReader(self.home.audit_dir, load_staff_private(self.home.root, None))
        return [r.to_dict() for r in reader.records()]


def build_facility(root: Path) -> Facility:
    f = Facility(root)
    f.must("init", "--no-passphrase", "--facility", "Test Facility")
    f.enroll("instructor", "alice")
    f.enroll("instructor", "bob")
    for machine in ("pc-01", "pc-02", "pc-03"):
        f.enroll("machine", machine, "--classroom", "room-a")
    f.enroll("machine", "pc-09", "--classroom", "room-b")
    f.enroll("staff", "sam")
    for learner, pin in PINS.items():
        f.must("learner", "add", learner, "--pin", pin)
    f.schedule("py101")
    return f


@pytest.fixture(scope="session")
def _facility_template() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="crt-"))
    build_facility(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def facility(_facility_template: Path) -> Iterator[Facility]:
    """A fresh copy of a prepared facility: instructors alice and bob, machines pc-01..03
    (room-a) and pc-09 (room-b), staff sam, learners l1001-l1003 (+ l1009 not on the
    roster), class py101 (alice, room-a) open now."""
    root = Path(tempfile.mkdtemp(prefix="crf-"))
    shutil.copytree(_facility_template, root, dirs_exist_ok=True)
    (root / "fac" / "run" / "control.sock").unlink(missing_ok=True)
    yield Facility(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def relay(facility: Facility) -> AsyncIterator[Relay]:
    async with running_relay(facility.home, outside=("127.0.0.1", 0), inside=("127.0.0.1", 0)) as r:
        yield r


@contextlib.asynccontextmanager
async def raw_joined(
    f: Facility, r: Relay, who: str, machine: str | None = None
) -> AsyncIterator[Raw]:
    """A raw connection of ``who`` (``instructor:alice``, ``learner:l1001`` on
    ``machine``, ``staff:sam``) that has joined py101: the welcome is already read."""
    assert r.addresses is not None
    role, _, name = who.partition(":")
    if role == "learner":
        assert machine is not None
        url, bundle = r.addresses.inside_url, f.bundle(machine)
        extra: dict[str, Any] = {"learner": name, "pin": PINS[name]}
    elif role == "staff":
        url, bundle, extra = r.addresses.inside_url, f.bundle(name), {}
    else:
        url, bundle, extra = r.addresses.outside_url, f.bundle(name), {}
    async with raw_connect(url, bundle) as raw:
        welcome = await raw.hello(**extra)
        assert welcome["t"] == "welcome", welcome
        yield raw


async def eventually(check: Callable[[], bool], wait_s: float = 10.0) -> None:
    """Wait (polling) until ``check()`` holds; fail the test after ``wait_s`` seconds."""
    for _ in range(int(wait_s / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    assert check(), "condition not reached in time"


def console_argv(f: Facility, r: Relay, *argv: str) -> list[str]:
    """``instructor-console`` arguments for alice on the outside listener."""
    assert r.addresses is not None
    return ["--bundle", str(f.bundle("alice")), "--relay", r.addresses.outside_url, *argv]
