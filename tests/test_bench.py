"""relay.bench: the benchmark tool runs end to end at a tiny size (no timing thresholds)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from relay import bench
from relay.home import FacilityHome, init_facility

NUMBERS = (
    "bare_msgs_per_s",
    "relay_msgs_per_s",
    "ratio",
    "p50_ms",
    "p99_ms",
    "fanout_deliveries_per_s",
    "bare_fanout_deliveries_per_s",
    "fanout_ratio",
    "max_load_p50_ms",
    "max_load_p99_ms",
    "half_load_msgs_per_s",
    "cpu_count",
)


@pytest.mark.integration
def test_chat_quick_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["chat", "--json", "--quick"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)  # exactly one JSON object on stdout, nothing else
    for key in NUMBERS:
        assert isinstance(report[key], int | float), key
        assert report[key] > 0, key
    assert report["messages"] == bench.QUICK_MESSAGES
    assert report["fanout"] == bench.DEFAULT_FANOUT
    assert isinstance(report["python"], str)
    assert report["rate_limit_raised"] is True
    assert report["servers"] == "subprocess"
    for target in ("bare", "relay"):
        counts = report["deliveries"][target]
        assert counts["expected"] > 0
        assert counts["received"] == counts["expected"], target
    # Every relayed message was audited (plus connection and join records).
    relayed = report["deliveries"]["relay"]["expected"]
    assert report["audit_records"] > relayed // 3


@pytest.mark.integration
def test_chat_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["chat", "--messages", "40", "--fanout", "2", "--repeat", "1", "--servers", "in-process"]
    code = bench.main(argv)
    assert code == 0
    out = capsys.readouterr().out
    assert "rate limit raised for the benchmark" in out
    assert "ONE process" in out
    assert "relay/bare" in out
    assert "p99 <= 20 ms" in out


def test_list_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main([]) == 0
    assert "chat" in capsys.readouterr().out
    assert "chat" in bench.SCENARIOS


def test_unknown_scenario_and_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["nonsense"]) == 2
    assert "chat" in capsys.readouterr().err
    assert bench.main(["chat", "--messages", "0"]) == 2
    assert bench.main(["chat", "--messages", "5"]) == 2


def test_percentile_and_median() -> None:
    values = [float(i) for i in range(1, 101)]
    assert bench.percentile(values, 0.50) == 50.0
    assert bench.percentile(values, 0.99) == 99.0
    assert bench.percentile([3.0], 0.99) == 3.0
    runs = [
        bench.RunResult(
            messages=n, receivers=1, received=n, seconds=1.0, p50_ms=1, p99_ms=2, max_ms=3
        )
        for n in (30, 10, 20)
    ]
    assert bench.median_run(runs).messages == 20


def test_raise_rate_limit(tmp_path: Path) -> None:
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
    bench.raise_rate_limit(home)
    limits = home.load_config().limits
    assert limits.msgs_per_second == 1_000_000.0
    assert limits.msgs_burst == 1_000_000
