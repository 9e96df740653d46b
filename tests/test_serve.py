"""`classroom-relay serve` as a real process: it serves, answers the control socket, and
stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys

import pytest

from relay.client import RelayClient
from relay.messages import AckStatus
from tests.conftest import Facility

pytestmark = pytest.mark.integration


async def test_serve_runs_until_sigterm(facility: Facility) -> None:
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
    try:
        banner = ""
        for _ in range(20):
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            banner += line
            if "Stop with Ctrl-C" in line:
                break
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
    assert kinds[0] == "relay.started"
    assert kinds[-1] == "relay.stopped"
    assert "message.delivered" in kinds
    assert not facility.home.control_socket.exists()
