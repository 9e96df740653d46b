"""`classroom-relay serve` as a real process: it serves, answers the control socket, and
stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys

import pytest

from relay.client import RelayClient
from relay.messages import AckStatus
from tests.conftest import Facility

pytestmark = pytest.mark.integration


async def start_serve(facility: Facility) -> tuple[asyncio.subprocess.Process, str]:
    """``classroom-relay serve`` in a subprocess, on free loopback ports; and its banner."""
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
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    banner = ""
    for _ in range(20):
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        banner += line
        if "Stop with Ctrl-C" in line:
            break
    return proc, banner


async def test_serve_runs_until_sigterm(facility: Facility) -> None:
    proc, banner = await start_serve(facility)
    try:
        outside = re.search(r"outside \(instructors\): 127\.0\.0\.1:(\d+)", banner)
        assert outside is not None, banner
        url = f"wss://localhost:{outside.group(1)}"
        async with RelayClient(facility.bundle("alice"), "py101", relay_url=url) as alice:
            assert (await alice.chat("served")).status is AckStatus.DELIVERED
        code, out, _ = await asyncio.to_thread(facility.admin, "status")
        assert code == 0
        assert "py101" in out
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert "stopped" in rest.decode()
    kinds = [r["kind"] for r in facility.audit_records()]
    # Before it: the administrator's enrolments and schedule, recorded when made.
    assert {k for k in kinds[: kinds.index("relay.started")]} == {
        "admin.enrolment",
        "admin.schedule",
    }
    assert kinds[-1] == "relay.stopped"
    assert "message.delivered" in kinds
    assert not facility.home.control_socket.exists()


async def test_sighup_reloads_the_policy_and_a_bad_one_is_refused(facility: Facility) -> None:
    from policy.engine import load_policy

    proc, _ = await start_serve(facility)
    path = facility.home.policy_toml
    first = load_policy(path).version

    async def policy_in_force() -> str:
        code, out, err = await asyncio.to_thread(facility.admin, "status", "--json")
        assert code == 0, err
        return str(json.loads(out)["policy"])

    async def hang_up_until(version: str) -> None:
        proc.send_signal(signal.SIGHUP)
        for _ in range(100):  # bounded: 10 s
            if await policy_in_force() == version:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"policy {version} did not come into force")

    try:
        assert await policy_in_force() == first
        path.write_text(
            path.read_text().replace(
                "learner_to_learner_direct = false", "learner_to_learner_direct = true"
            )
        )
        second = load_policy(path).version
        assert second != first
        await hang_up_until(second)
        good = path.read_text()
        path.write_text(good + "\n[surprise]\n")
        proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if any(r["kind"] == "policy.rejected" for r in facility.audit_records()):
                break
            await asyncio.sleep(0.1)
        assert await policy_in_force() == second
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    rejected = [r for r in facility.audit_records() if r["kind"] == "policy.rejected"]
    assert len(rejected) == 1
    assert "surprise" in rejected[0]["detail"]
    assert "surprise" in err.decode()
