"""``classroom-relay bench editor`` runs end to end at a tiny size (no timing thresholds)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pycrdt import Doc, Map

from relay import bench
from relay.home import FacilityHome, init_facility

EDITOR_NUMBERS = (
    "updates_per_s",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "ack_p50_ms",
    "ack_p99_ms",
    "baseline_updates_per_s",
    "ratio",
    "full_load_p50_ms",
    "full_load_p99_ms",
    "cpu_us_per_update",
    "relay_cpu_us_per_update",
    "typing_updates_per_s",
    "update_bytes",
    "cpu_count",
)


CPU_FIGURES = frozenset({"cpu_us_per_update", "relay_cpu_us_per_update"})


@pytest.mark.integration
def test_editor_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["editor", "--json", "--learners", "3", "--updates", "30", "--repeat", "2"]
    argv += ["--typing-seconds", "0.6", "--baseline-updates", "60"]
    assert bench.main(argv) == 0
    report = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    assert report["scenario"] == "editor"
    for key in EDITOR_NUMBERS:
        assert isinstance(report[key], int | float), key
        if key in CPU_FIGURES:
            # Process CPU time counts in clock ticks (10 ms): a run this small may read 0.
            assert report[key] >= 0, key
        else:
            assert report[key] > 0, key
    assert report["learners"] == 3
    assert report["full_load_updates"] == 30
    assert report["typing_updates"] == 3 * 3  # 0.6 s at 5 characters a second, each
    assert report["typing_updates_per_s"] == 15
    assert len(report["updates_per_s_runs"]) == report["repeat"] == 2
    assert report["baseline_updates"] == 60
    assert report["target_updates_per_s"] == 5000
    assert report["target_p99_ms"] == 50
    assert isinstance(report["updates_ok"], bool)
    assert isinstance(report["p99_ok"], bool)
    assert report["rate_limit_raised"] is True
    assert "editor_msgs_per_second" in report["editor_rate_limit"]
    assert "instructor receives" in report["latency"]
    assert report["servers"] == "subprocess"
    # Every update was recorded: warm-up, full load, typing, the files created, joins.
    assert report["audit_records"] > 30 * 2 + 9 + 3


@pytest.mark.integration
def test_editor_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["editor", "--learners", "2", "--updates", "20", "--repeat", "1", "--window", "2"]
    argv += ["--typing-seconds", "0.4", "--baseline-updates", "20", "--servers", "in-process"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "ONE process" in out
    assert "target >= 5,000" in out
    assert "target p99 <= 50 ms" in out
    assert "baseline: bare pycrdt" in out
    assert "editor_msgs_per_second" in out
    assert "learner sends -> instructor receives" in out


def test_editor_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["editor", "--learners", "0"]) == 2
    assert bench.main(["editor", "--learners", "5", "--updates", "4"]) == 2
    assert "--updates" in capsys.readouterr().err
    assert bench.main(["editor", "--typing-seconds", "-1"]) == 2
    assert "editor" in bench.SCENARIOS


def test_typist_updates_rebuild_what_was_typed() -> None:
    typist = bench.Typist()
    doc: Doc[Map[object]] = Doc()
    doc.apply_update(typist.create())
    updates = typist.keystrokes(40)
    assert len(updates) == 40
    for update in updates:
        doc.apply_update(update)
    files = doc.get("files", type=Map)
    assert str(files[bench.EDITOR_FILE]) == bench.TYPED_CODE[:40]
    other = bench.Typist(text="ab", offset=1)
    replica: Doc[Map[object]] = Doc()
    replica.apply_update(other.create())
    for update in other.keystrokes(3):
        replica.apply_update(update)
    assert str(replica.get("files", type=Map)[bench.EDITOR_FILE]) == "bab"
    seconds, size = bench.pycrdt_baseline(30, docs=3)
    assert seconds > 0
    assert 0 < size < 100


def test_raise_editor_rate_limit(tmp_path: Path) -> None:
    home = FacilityHome(tmp_path / "facility")
    init_facility(
        home,
        facility="Test",
        outside_names=["localhost"],
        inside_names=["localhost"],
        outside_bind=("127.0.0.1", 8443),
        inside_bind=("127.0.0.1", 8444),
        outside_url="wss://localhost:8443",
        inside_url="wss://localhost:8444",
        passphrase=None,
        now=dt.datetime.now(dt.UTC).replace(microsecond=0),
    )
    bench.raise_editor_rate_limit(home)
    limits = home.load_config().limits
    assert limits.editor_msgs_per_second == 1_000_000.0
    assert limits.editor_msgs_burst == 1_000_000
