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
    assert "rate limits raised for the benchmark" in out
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


# ---------------------------------------------------------------------------------------
# bench policy
# ---------------------------------------------------------------------------------------

POLICY_NUMBERS = ("p50_us", "p99_us", "mean_us", "max_us", "evasion_p50_us", "evasion_p99_us")


def test_policy_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["policy", "--json", "--decisions", "300"]) == 0
    report = json.loads(capsys.readouterr().out)  # one JSON object, nothing else
    assert report["scenario"] == "policy"
    for key in POLICY_NUMBERS:
        assert isinstance(report[key], int | float), key
        assert report[key] > 0, key
    assert report["p50_us"] <= report["p99_us"] <= report["max_us"]
    for key in ("recall", "false_positive_rate"):
        assert 0.0 <= report[key] <= 1.0, key
    assert all(0.0 <= v <= 1.0 for v in report["recall_by_category"].values())
    assert "do_not_contact" in report["recall_by_category"]
    assert report["target_p50_us"] == 20
    assert isinstance(report["p50_ok"], bool)
    assert report["decisions"] == 300
    assert report["evasion_decisions"] >= report["evasion_lines"] > 0
    assert report["lines"] > 0
    assert report["clean_messages"] > 0
    assert report["line_chars"] == 100
    assert report["policy_version"].startswith("sha256:")
    assert report["do_not_contact_names"] == 3


def test_policy_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["policy", "--decisions", "100"]) == 0
    out = capsys.readouterr().out
    assert "target p50 <= 20 us" in out
    assert "recall:" in out
    assert "false positives:" in out


def test_policy_corpus_and_policy_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["policy", "--corpus", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "none") in err
    assert "--corpus" in err
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "clean.txt").write_text("# header\n" + "print('hello, world')\\nx = 1\n" * 12)
    (corpus / "evasion.txt").write_text("# header\nurl\tsee evil.com\nphone\t415 555 0134\n")
    policy = tmp_path / "policy.toml"
    policy.write_text("[routing]\nlearner_to_learner_direct = false\n")  # no content rules
    argv = [
        "policy",
        "--json",
        "--decisions",
        "20",
        "--corpus",
        str(corpus),
        "--policy",
        str(policy),
    ]
    assert bench.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["recall"] == 0.0
    assert report["false_positive_rate"] == 0.0
    assert report["evasion_lines"] == 2
    assert report["clean_messages"] == 12
    assert report["do_not_contact_names"] == 0
    policy.write_text("[nonsense]\n")
    assert bench.main(argv) == 2
    assert str(policy) in capsys.readouterr().err


def test_chat_lines_are_cut_to_length() -> None:
    lines = bench.chat_lines(["a" * 30, "b" * 50, "c" * 40, "d" * 250, "e"], chars=100)
    assert lines == [("a" * 30 + " " + "b" * 50 + " " + "c" * 40)[:100], "d" * 100]


# ---------------------------------------------------------------------------------------
# bench audit
# ---------------------------------------------------------------------------------------

AUDIT_NUMBERS = (
    "append_per_s",
    "verify_per_s",
    "raw_group_fsync_per_s",
    "append_vs_raw_ratio",
    "fsync_per_record_per_s",
    "group_commit_speedup",
    "sha256_per_s",
    "verify_vs_sha256_ratio",
    "append_cpu_us_per_record",
    "bytes_per_record",
    "records_per_commit",
)


def test_audit_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["audit", "--json", "--records", "300", "--fsync-records", "20", "--repeat", "2"]
    assert bench.main([*argv, "--window", "8", "--dir", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)  # one JSON object, nothing else
    assert report["scenario"] == "audit"
    for key in AUDIT_NUMBERS:
        assert isinstance(report[key], int | float), key
        assert report[key] > 0, key
    assert report["records"] == 300
    assert report["window"] == 8
    assert report["fsync_records"] == 20
    assert 1 <= report["commits"] <= 300
    # Every event, plus at least a segment header, a key and the checkpoints.
    assert report["log_records"] >= 300 + 2 + report["checkpoints"]
    assert report["checkpoints"] >= 2  # opening and closing
    assert report["segments"] == 1
    assert report["log_bytes"] > 300 * 100  # 100-character contents, encrypted
    assert report["repeat"] == 2
    assert len(report["verify_s_runs"]) == len(report["sha256_s_runs"]) == 2
    assert report["target_verify_per_s"] == 200_000
    assert isinstance(report["verify_ok"], bool)
    assert isinstance(report["filesystem"], str)
    assert list(tmp_path.iterdir()) == []  # the temporary log is removed


def test_audit_human_output_and_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["audit", "--quick", "--records", "100", "--fsync-records", "10"]) == 0
    out = capsys.readouterr().out
    assert "append with group commit" in out
    assert "one write + fsync per record" in out
    assert "target >= 200,000" in out
    assert "one SHA-256 per record" in out
    assert bench.main(["audit", "--records", "5"]) == 2
    assert "--records" in capsys.readouterr().err
    assert bench.main(["audit", "--dir", "/nonexistent/relay-bench"]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert "audit" in bench.SCENARIOS
