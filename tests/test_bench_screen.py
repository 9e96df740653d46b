"""``classroom-relay bench screen`` runs end to end at a tiny size (no timing thresholds)."""

from __future__ import annotations

import json

import pytest

from relay import bench


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_screen_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["screen", "--json", "--viewers", "1", "--seconds", "2", "--late-viewers", "2"]
    assert bench.main(argv) == 0
    report = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    assert report["scenario"] == "screen"
    assert report["viewers"] == [1]
    for key in ("relay_cpu_fraction", "baseline_cpu_fraction", "frames_delivered_ratio"):
        (value,) = report[key]
        assert isinstance(value, float), key
        assert 0 < value < 10, key
    # The viewer got the source's frames through the relay, and through the baseline.
    (run,) = report["runs"]
    assert run["viewers"] == 1
    assert run["source_frames"] > 0
    assert run["frames_received"] > 0
    assert run["baseline_frames_received"] > 0
    assert run["frames_delivered_ratio"] == report["frames_delivered_ratio"][0]
    assert report["target_met"] is None  # 30 viewers were not measured
    assert report["target_viewers"] == 30
    assert report["target_cpu_fraction"] == 0.5
    assert report["target_frames_delivered_ratio"] == 0.95
    assert (report["width"], report["height"], report["fps"]) == (1280, 720, 10)
    # Every frame through the relay was recorded.
    assert report["audit_records"] > run["source_frames"]
    # Two late viewers joined while the one watched, and each decoded a fresh picture.
    assert report["late_join_viewers_watching"] == 1
    assert report["target_late_join_s"] == 2.0
    assert report["late_join_pictures_ok"] == 2
    for key in ("late_join_s", "late_join_from_watch_s"):
        assert len(report[key]) == 2, key
        assert all(isinstance(v, float) and v > 0 for v in report[key]), key
    assert report["late_join_max_s"] == max(report["late_join_s"])
    assert report["late_join_from_watch_max_s"] == max(report["late_join_from_watch_s"])
    # Joining includes connecting, so it is never shorter than from share_watch.
    pairs = zip(report["late_join_s"], report["late_join_from_watch_s"], strict=True)
    for whole, from_watch in pairs:
        assert whole >= from_watch
    assert isinstance(report["late_join_target_met"], bool)
    assert "connection" in report["late_join_is"]


def test_screen_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["screen", "--viewers", "0"]) == 2
    assert "--viewers" in capsys.readouterr().err
    assert bench.main(["screen", "--viewers", "a,b"]) == 2
    assert bench.main(["screen", "--seconds", "0.1"]) == 2
    assert bench.main(["screen", "--late-viewers", "-1"]) == 2
    assert "--late-viewers" in capsys.readouterr().err


def test_the_target_is_judged_at_thirty_viewers() -> None:
    def run(viewers: int, cpu: float, received: int) -> bench.ScreenRun:
        return bench.ScreenRun(viewers, 10.0, cpu * 10.0, 100, received)

    met = bench.ScreenReport((run(1, 0.2, 100), run(30, 0.45, 2900)), (), 10.0, 0, 0.0, 0.0)
    assert met.target_met is True
    doc = met.to_json()
    assert doc["viewers"] == [1, 30]
    assert doc["baseline_cpu_fraction"] == [None, None]
    assert doc["frames_delivered_ratio"] == [1.0, 0.967]
    slow = bench.ScreenReport((run(30, 0.6, 3000),), (), 10.0, 0, 0.0, 0.0)
    assert slow.target_met is False
    lossy = bench.ScreenReport((run(30, 0.3, 2000),), (), 10.0, 0, 0.0, 0.0)
    assert lossy.target_met is False
    assert "NOT met" in bench.render_screen(lossy)


def test_late_joins_are_judged_on_the_slowest_viewer_connecting_included() -> None:
    def run(*joins: bench.LateJoin) -> bench.ScreenRun:
        return bench.ScreenRun(30, 10.0, 3.0, 100, 3000, joins)

    quick = bench.LateJoin(0.8, 0.5, True)
    none = bench.ScreenReport((run(),), (), 10.0, 0, 0.0, 0.0)
    assert none.late_join_target_met is None
    assert none.to_json()["late_join_s"] == []
    assert "late viewer sees a picture within 2 s" in bench.render_screen(none)
    met = bench.ScreenReport((run(quick, bench.LateJoin(1.9, 1.2, True)),), (), 10.0, 0, 0.0, 0.0)
    assert met.late_join_target_met is True
    doc = met.to_json()
    assert doc["late_join_s"] == [0.8, 1.9]
    assert doc["late_join_max_s"] == 1.9
    assert doc["late_join_from_watch_max_s"] == 1.2
    assert doc["late_join_viewers_watching"] == 30
    # Within 2 s from share_watch is not enough: connecting counts.
    slow = bench.ScreenReport((run(quick, bench.LateJoin(2.4, 1.5, True)),), (), 10.0, 0, 0.0, 0.0)
    assert slow.late_join_target_met is False
    assert "slowest 2.40 s): NOT met" in bench.render_screen(slow)
    missed = bench.ScreenReport(
        (run(quick, bench.LateJoin(None, None, False)),), (), 10.0, 0, 0.0, 0.0
    )
    assert missed.late_join_target_met is False
    assert missed.to_json()["late_join_max_s"] is None
    stale = bench.ScreenReport(
        (run(quick, bench.LateJoin(0.9, 0.6, False)),), (), 10.0, 0, 0.0, 0.0
    )
    assert stale.late_join_target_met is False
    with pytest.raises(ValueError, match="non-negative"):
        bench.LateJoin(-1.0, 0.5, True)
