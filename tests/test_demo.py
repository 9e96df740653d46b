"""The demo is the product's main job on embedded defaults: it must keep working."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_headless_demo_runs_the_whole_lesson() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "relay.cli", "demo", "--headless"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr + out
    assert "Demo completed: every step behaved as expected." in out
    # The refusals a facility must see, each with its reason.
    assert "direct to l1003 -> refused" in out
    assert "pc-99        refused at the TLS handshake" in out
    assert "eve          cut off: Refused: this credential has been revoked" in out
    # The content policy: refused (also spelled out), redacted, held and approved, alerted.
    assert 'call 415-555-0134" -> refused' in out
    assert 'oh one three four" -> refused' in out
    assert "the class received: 'Questions after class? Write to [redacted:email]'" in out
    assert "python-for-loop/' -> held (py101.h1-" in out
    assert "[held, approved late by staff:sam]" in out
    assert "and security staff were alerted" in out
    assert "alert: message" in out
    for kind in ("message.redacted", "message.held", "review.approved", "message.alert"):
        assert kind in out
    # The audit summary lists the refusals it recorded.
    assert "connection.tls_refused" in out
    assert "admin.revoked" in out
    assert "message.refused" in out
    # Staff verify the log with their bundle, and read the class back as a transcript.
    assert "$ classroom-relay audit verify --bundle" in out
    assert "The audit log verifies:" in out
    assert "chain, frames and signatures are intact" in out
    assert "checkpoint sink" in out
    assert "matches the log" in out
    assert "$ classroom-relay audit show py101 --bundle" in out
    # Contents are decrypted on the staff side only: the transcript quotes the lesson.
    assert '"Welcome! Today: for loops.' in out
    assert "[refused; rule routing.learner_to_learner_direct;" in out
    # The shared editor: code reaches the class, a typed phone number is undone.
    assert "wrote loops.py in the class workspace -> delivered" in out
    assert out.count("sees loops.py (3 lines)") == 3
    assert "edits loops.py during lecture -> refused" in out
    assert "key by key into notes.py -> refused at the key" in out
    assert "notes.py now ends ' me 415 555 01'" in out
    assert "as the instructor sees it ends ' me 415 555 01'" in out
    assert "After class: the instructor exports l1002's workspace" in out
    assert "export-l1002/answer.py (61 characters)" in out
    # Screen share: every learner sees the instructor's test pattern through the relay.
    assert "shares a 640x360 test pattern at 10 fps -> share py101.s1-" in out
    assert out.count("sees the instructor's screen: 640x360") == 3
    assert "stops the share -> delivered" in out
    assert "CR334I screen.media" in out
    # The recording is listed for staff.
    assert "$ classroom-relay audit search --session py101 --kind screen.started" in out
    assert "watched by the class; VP8" in out
