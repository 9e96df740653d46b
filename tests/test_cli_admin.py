"""The administrator's commands, end to end through ``relay.cli.main`` on a real home."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import stat
import sys
import time
import types
from pathlib import Path

import pytest
from cryptography import x509

from relay import cli
from relay.bundle import load_bundle
from relay.errors import ControlError
from relay.home import FacilityHome
from relay.identity import Role
from relay.registry import PrincipalStatus, RegistryStore
from relay.schedule import ScheduleStore

PASS = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in (cli.PASSPHRASE_ENV, cli.PIN_ENV, "CLASSROOM_RELAY_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)

    def no_prompt(prompt: str = "") -> str:
        raise AssertionError(f"unexpected prompt: {prompt}")

    monkeypatch.setattr("getpass.getpass", no_prompt)


class Runner:
    def __init__(self, capsys: pytest.CaptureFixture[str], home: Path) -> None:
        self.capsys = capsys
        self.root = home

    @property
    def home(self) -> FacilityHome:
        return FacilityHome(self.root)

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = cli.main(["--home", str(self.root), *args])
        out, err = self.capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    def ok(self, *args: str) -> str:
        code, out, err = self(*args)
        assert code == 0, err
        return out

    def refused(self, *args: str) -> str:
        code, out, err = self(*args)
        assert code == 2, out
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("classroom-relay: error: "), err
        return lines[0]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Runner:
    return Runner(capsys, tmp_path / "facility")


@pytest.fixture
def demo_home(run: Runner) -> Runner:
    run.ok("init", "--no-passphrase")
    return run


@pytest.fixture
def control_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, object]]]:
    """Stand in for the running relay's control socket and record what it is asked."""
    calls: list[tuple[str, dict[str, object]]] = []

    def fake(home: FacilityHome, op: str, args: dict[str, object]) -> dict[str, object]:
        calls.append((op, args))
        return {"ok": True, "message": f"relay did {op}"}

    monkeypatch.setattr(cli, "_control", fake)
    return calls


@pytest.fixture
def relay_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(home: FacilityHome, op: str, args: dict[str, object]) -> dict[str, object]:
        raise ControlError(f"no relay is running for {home.root}")

    monkeypatch.setattr(cli, "_control", fake)


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------------------------
# init
# ---------------------------------------------------------------------------------------


def test_init_without_passphrase_warns(run: Runner) -> None:
    code, out, err = run("init", "--no-passphrase", "--facility", "San Quentin")
    assert code == 0
    assert "WITHOUT a passphrase" in err
    assert "demos" in err
    assert "SHA-256" in out
    assert "wss://localhost:8443" in out
    assert "wss://localhost:8444" in out
    home = run.home
    assert home.load_config().facility == "San Quentin"
    assert mode(home.root) == 0o700
    assert mode(home.ca_key_file) == 0o600
    assert not home.ca_key_encrypted()


def test_init_refuses_existing_home(demo_home: Runner) -> None:
    line = demo_home.refused("init", "--no-passphrase")
    assert "relay.toml already exists" in line
    assert "another --home" in line


def test_init_with_passphrase_from_env(run: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.PASSPHRASE_ENV, PASS)
    run.ok("init")
    assert run.home.ca_key_encrypted()
    assert PASS.encode() not in run.home.ca_key_file.read_bytes()
    run.home.load_ca(PASS.encode())


def test_init_asks_the_passphrase_twice(run: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([PASS, PASS + "x"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert "differ" in run.refused("init")
    assert not run.root.exists()
    answers = iter([PASS, PASS])
    run.ok("init")
    run.home.load_ca(PASS.encode())


def test_init_refuses_a_short_passphrase(run: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.PASSPHRASE_ENV, "short")
    assert "at least 12" in run.refused("init")
    assert not run.root.exists()


def test_init_listener_options(run: Runner) -> None:
    out = run.ok(
        "init",
        "--no-passphrase",
        "--outside",
        "0.0.0.0:9443",
        "--outside-url",
        "wss://relay.example.org:443",
        "--inside",
        "[::1]:9444",
        "--inside-name",
        "localhost",
    )
    config = run.home.load_config()
    assert config.outside_bind == ("0.0.0.0", 9443)  # noqa: S104
    assert config.outside_url == "wss://relay.example.org:443"
    assert config.inside_bind == ("::1", 9444)
    assert config.inside_url == "wss://localhost:9444"
    assert "relay.example.org" in out
    from cryptography.x509 import DNSName, SubjectAlternativeName

    from relay.identity import Listener

    outside = run.home.server_certificate(Listener.OUTSIDE)
    names = outside.extensions.get_extension_for_class(SubjectAlternativeName).value
    assert "relay.example.org" in names.get_values_for_type(DNSName)
    inside = run.home.server_certificate(Listener.INSIDE)
    names = inside.extensions.get_extension_for_class(SubjectAlternativeName).value
    assert names.get_values_for_type(DNSName) == ["localhost"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--outside", "0.0.0.0:9443"], "--outside-url"),
        (["--outside", "nope"], "HOST:PORT"),
        (["--inside-url", "https://x"], "wss://"),
        (["--outside-url", "wss://relay.org:1", "--outside-name", "10.0.0.5"], "--outside-name"),
        (["--outside-name", "*.example.org"], "DNS name"),
    ],
)
def test_init_refuses_bad_listener_options(run: Runner, args: list[str], expected: str) -> None:
    assert expected in run.refused("init", "--no-passphrase", *args)
    assert not run.root.exists()


# ---------------------------------------------------------------------------------------
# enroll
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "extra", "listener_url", "lifetime"),
    [
        ("instructor", [], "wss://localhost:8443", dt.timedelta(hours=12)),
        ("machine", ["--classroom", "room-a"], "wss://localhost:8444", dt.timedelta(days=365)),
        ("staff", [], "wss://localhost:8444", dt.timedelta(days=90)),
    ],
)
def test_enroll_writes_one_private_bundle(
    demo_home: Runner,
    tmp_path: Path,
    role: str,
    extra: list[str],
    listener_url: str,
    lifetime: dt.timedelta,
) -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    out = demo_home.ok("enroll", role, "pat", *extra)
    path = tmp_path / "pat.bundle"  # default: NAME.bundle in the current directory
    assert mode(path) == 0o600
    assert str(path.name) in out
    bundle = load_bundle(path)
    assert bundle.role is Role(role)
    assert bundle.relay_url == listener_url
    assert bundle.facility == "Demo Facility"
    assert bundle.classroom == ("room-a" if role == "machine" else None)
    cert = bundle.certificate
    assert (
        before + lifetime <= cert.not_valid_after_utc <= before + lifetime + dt.timedelta(seconds=5)
    )
    cert.verify_directly_issued_by(demo_home.home.load_ca_certificate())
    record = RegistryStore(demo_home.home).load().principals["pat"]
    assert record.serials == (cert.serial_number,)
    assert record.expires_at == cert.not_valid_after_utc


def test_enroll_out_directory_must_exist(demo_home: Runner, tmp_path: Path) -> None:
    line = demo_home.refused("enroll", "instructor", "alice", "--out", "keys/a.bundle")
    assert "directory keys does not exist" in line
    assert not (tmp_path / "keys").exists()
    assert "alice" not in RegistryStore(demo_home.home).load().principals


def test_enroll_valid_duration(demo_home: Runner, tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    demo_home.ok("enroll", "instructor", "alice", "--valid", "1h30m", "--out", "keys/a.bundle")
    cert = load_bundle(tmp_path / "keys" / "a.bundle").certificate
    span = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert span == dt.timedelta(hours=1, minutes=35)  # plus the 5-minute clock-skew allowance


def test_enroll_never_overwrites(demo_home: Runner, tmp_path: Path) -> None:
    (tmp_path / "alice.bundle").write_text("precious")
    line = demo_home.refused("enroll", "instructor", "alice")
    assert "exists" in line
    assert "--out" in line
    assert (tmp_path / "alice.bundle").read_text() == "precious"
    assert "alice" not in RegistryStore(demo_home.home).load().principals


def test_enroll_renew_rules(demo_home: Runner, tmp_path: Path) -> None:
    demo_home.ok("enroll", "instructor", "alice")
    line = demo_home.refused("enroll", "instructor", "alice", "--out", "a2.bundle")
    assert "already enrolled" in line
    assert "--renew" in line
    assert not (tmp_path / "a2.bundle").exists()
    code, out, err = demo_home("enroll", "instructor", "alice", "--out", "a2.bundle", "--renew")
    assert code == 0
    assert "Renewed" in out
    assert "stay valid until they expire" in err
    record = RegistryStore(demo_home.home).load().principals["alice"]
    assert len(record.serials) == 2
    assert record.serials[1] == load_bundle(tmp_path / "a2.bundle").certificate.serial_number
    line = demo_home.refused("enroll", "staff", "alice", "--out", "a3.bundle", "--renew")
    assert "unique across" in line
    assert "no staff of that name" in demo_home.refused(
        "enroll", "staff", "zed", "--out", "z.bundle", "--renew"
    )


def test_enroll_refuses_bad_input(demo_home: Runner) -> None:
    assert "name" in demo_home.refused("enroll", "instructor", "Alice Smith")
    assert "classroom" in demo_home.refused("enroll", "machine", "pc1", "--classroom", "Room A")
    assert "duration" in demo_home.refused("enroll", "staff", "sam", "--valid", "3 days")
    assert "longer than zero" in demo_home.refused("enroll", "staff", "sam", "--valid", "0h")
    assert "outlive the facility CA" in demo_home.refused(
        "enroll", "staff", "sam", "--valid", "600w"
    )
    assert RegistryStore(demo_home.home).load().principals == {}


def test_enroll_needs_the_right_passphrase(
    run: Runner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(cli.PASSPHRASE_ENV, PASS)
    run.ok("init")
    monkeypatch.setenv(cli.PASSPHRASE_ENV, "wrong passphrase here")
    line = run.refused("enroll", "instructor", "alice")
    assert "passphrase is wrong" in line
    assert not (tmp_path / "alice.bundle").exists()
    assert RegistryStore(run.home).load().principals == {}
    monkeypatch.setenv(cli.PASSPHRASE_ENV, PASS)
    run.ok("enroll", "instructor", "alice")
    assert (tmp_path / "alice.bundle").exists()


def test_enroll_prompts_for_the_passphrase(
    run: Runner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(cli.PASSPHRASE_ENV, PASS)
    run.ok("init")
    monkeypatch.delenv(cli.PASSPHRASE_ENV)
    prompts: list[str] = []

    def answer(prompt: str = "") -> str:
        prompts.append(prompt)
        return PASS

    monkeypatch.setattr("getpass.getpass", answer)
    run.ok("enroll", "staff", "sam")
    assert len(prompts) == 1
    assert "Passphrase" in prompts[0]
    assert (tmp_path / "sam.bundle").exists()


def test_passphrase_never_comes_from_argv(run: Runner) -> None:
    code, _, err = run("init", "--passphrase", PASS)
    assert code == 2
    assert "unrecognized arguments" in err


# ---------------------------------------------------------------------------------------
# --home and registry list
# ---------------------------------------------------------------------------------------


def test_home_after_the_subcommand_and_from_env(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "elsewhere"
    assert cli.main(["init", "--home", str(home), "--no-passphrase"]) == 0
    assert FacilityHome(home).exists()
    assert cli.main(["enroll", "instructor", "alice", "--home", str(home)]) == 0
    assert cli.main(["registry", "list", "--home", str(home)]) == 0
    assert "alice" in capsys.readouterr().out
    monkeypatch.setenv("CLASSROOM_RELAY_HOME", str(home))
    assert cli.main(["registry", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["principals"][0]["name"] == "alice"
    # An empty --home falls back to the environment, then to ./facility.
    assert cli.main(["--home", "", "registry", "list"]) == 0
    monkeypatch.delenv("CLASSROOM_RELAY_HOME")
    assert cli.main(["registry", "list"]) == 2
    assert "no facility at" in capsys.readouterr().err


def test_registry_list(demo_home: Runner, relay_down: None) -> None:
    demo_home.ok("enroll", "instructor", "alice")
    demo_home.ok("enroll", "machine", "pc-01", "--classroom", "room-a")
    demo_home.ok("learner", "add", "l1001", "--pin", "1234", "--name", "Sam S.")
    demo_home.ok("revoke", "pc-01", "--reason", "stolen")
    out = demo_home.ok("registry", "list")
    assert "NAME" in out
    assert "CLASSROOM" in out
    assert "EXPIRES" in out
    assert "ENROLLED" in out
    alice = next(line for line in out.splitlines() if line.startswith("alice"))
    assert "instructor" in alice
    assert "active" in alice
    pc = next(line for line in out.splitlines() if line.startswith("pc-01"))
    assert "room-a" in pc
    assert "revoked" in pc
    assert "l1001" in out
    assert "Sam S." in out
    doc = json.loads(demo_home.ok("registry", "list", "--json"))
    by_name = {p["name"]: p for p in doc["principals"]}
    assert by_name["pc-01"]["status"] == "revoked"
    assert by_name["pc-01"]["revoked_reason"] == "stolen"
    assert by_name["alice"]["classroom"] is None
    assert doc["learners"] == [
        {
            "id": "l1001",
            "name": "Sam S.",
            "status": "active",
            "added_at": doc["learners"][0]["added_at"],
        }
    ]
    assert "pin" not in json.dumps(doc).lower().replace("pinned", "")


# ---------------------------------------------------------------------------------------
# revoke
# ---------------------------------------------------------------------------------------


def test_revoke_tells_the_running_relay(
    demo_home: Runner, control_calls: list[tuple[str, dict[str, object]]]
) -> None:
    demo_home.ok("enroll", "instructor", "alice")
    out = demo_home.ok("revoke", "alice", "--reason", "laptop stolen")
    assert "Revoked instructor alice" in out
    assert "relay did revoke" in out
    assert control_calls == [("revoke", {"name": "alice", "reason": "laptop stolen"})]
    record = RegistryStore(demo_home.home).load().principals["alice"]
    assert record.status is PrincipalStatus.REVOKED
    assert record.revoked_serials == record.serials
    out = demo_home.ok("revoke", "alice")
    assert "already revoked" in out


def test_revoke_when_the_relay_is_not_running(demo_home: Runner, relay_down: None) -> None:
    demo_home.ok("enroll", "staff", "sam")
    code, out, _ = demo_home("revoke", "sam")
    assert code == 0
    assert "registry is updated" in out
    assert "refuses this credential" in out
    assert not RegistryStore(demo_home.home).load().principals["sam"].active


def test_revoke_with_the_real_control_client_and_no_relay(demo_home: Runner) -> None:
    pytest.importorskip("relay.control")
    demo_home.ok("enroll", "staff", "sam")
    code, out, _ = demo_home("revoke", "sam", "--reason", "left")
    assert code == 0
    assert "registry is updated" in out


def test_revoke_unknown_name(demo_home: Runner, relay_down: None) -> None:
    assert "nobody of that name" in demo_home.refused("revoke", "ghost")


# ---------------------------------------------------------------------------------------
# learners
# ---------------------------------------------------------------------------------------


def test_learner_commands(
    demo_home: Runner, monkeypatch: pytest.MonkeyPatch, relay_down: None
) -> None:
    demo_home.ok("learner", "add", "l1001", "--pin", "1234", "--name", "Sam S.")
    monkeypatch.setenv(cli.PIN_ENV, "55555")
    demo_home.ok("learner", "add", "l1002")
    monkeypatch.delenv(cli.PIN_ENV)
    answers = iter(["424242", "424242"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    demo_home.ok("learner", "add", "l1003")
    snap = RegistryStore(demo_home.home).load()
    assert snap.check_learner_pin("l1001", "1234")
    assert snap.check_learner_pin("l1002", "55555")
    assert snap.check_learner_pin("l1003", "424242")
    assert "1234" not in demo_home.home.registry_file.read_text()

    assert "already exists" in demo_home.refused("learner", "add", "l1001", "--pin", "9999")
    assert "4 to 12 digits" in demo_home.refused("learner", "add", "l1004", "--pin", "12")
    assert "4 to 12 digits" in demo_home.refused("learner", "add", "l1004", "--pin", "abcd")

    out = demo_home.ok("learner", "list")
    assert "l1001" in out
    assert "Sam S." in out
    assert "l1003" in out
    listed = json.loads(demo_home.ok("learner", "list", "--json"))
    assert [x["id"] for x in listed] == ["l1001", "l1002", "l1003"]
    assert all("pin" not in key for x in listed for key in x)

    demo_home.ok("learner", "set-pin", "l1001", "--pin", "8765")
    snap = RegistryStore(demo_home.home).load()
    assert snap.check_learner_pin("l1001", "8765")
    assert not snap.check_learner_pin("l1001", "1234")
    assert "no such learner" in demo_home.refused("learner", "set-pin", "l9", "--pin", "1111")

    demo_home.ok("learner", "remove", "l1002")
    assert "l1002" not in RegistryStore(demo_home.home).load().learners
    assert "no such learner" in demo_home.refused("learner", "remove", "l1002")


def test_removing_a_rostered_learner_notes_the_classes(demo_home: Runner, relay_down: None) -> None:
    demo_home.ok("enroll", "instructor", "alice")
    demo_home.ok("learner", "add", "l1001", "--pin", "1234")
    now = dt.datetime.now(dt.UTC)
    demo_home.ok(
        "schedule", "add", "--id", "c1", "--title", "T", "--instructor", "alice",
        "--classroom", "room-a", "--learner", "l1001",
        "--start", iso(now + dt.timedelta(hours=1)), "--end", iso(now + dt.timedelta(hours=2)),
    )  # fmt: skip
    code, _, err = demo_home("learner", "remove", "l1001")
    assert code == 0
    assert "roster of class(es) c1" in err


# ---------------------------------------------------------------------------------------
# schedule
# ---------------------------------------------------------------------------------------


def _schedule_args(class_id: str, start: str, end: str, *learners: str) -> list[str]:
    args = ["schedule", "add", "--id", class_id, "--title", "Python 101"]
    args += ["--instructor", "alice", "--classroom", "room-a"]
    for learner in learners or ("l1001",):
        args += ["--learner", learner]
    return [*args, "--start", start, "--end", end]


@pytest.fixture
def school(demo_home: Runner) -> Runner:
    demo_home.ok("enroll", "instructor", "alice")
    demo_home.ok("enroll", "staff", "sam")
    demo_home.ok("learner", "add", "l1001", "--pin", "1234")
    demo_home.ok("learner", "add", "l1002", "--pin", "2345")
    return demo_home


def test_schedule_add_list_remove(
    school: Runner, control_calls: list[tuple[str, dict[str, object]]]
) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start, end = now + dt.timedelta(hours=1), now + dt.timedelta(hours=3)
    code, out, err = school(*_schedule_args("py-101", iso(start), iso(end), "l1001", "l1002"))
    assert code == 0, err
    assert "Scheduled class py-101" in out
    assert "relay did reload" in out
    assert "no machine is enrolled in classroom room-a" in err
    assert control_calls == [("reload", {})]
    cls = ScheduleStore(school.home).load()["py-101"]
    assert (cls.start, cls.end) == (start, end)
    assert cls.learners == {"l1001", "l1002"}

    listed = json.loads(school.ok("schedule", "list", "--json"))
    assert listed == [
        {
            "id": "py-101",
            "title": "Python 101",
            "instructor": "alice",
            "classroom": "room-a",
            "learners": ["l1001", "l1002"],
            "start": iso(start),
            "end": iso(end),
            "state": "not_yet",
        }
    ]
    assert "py-101" in school.ok("schedule", "list")

    assert "already scheduled" in school.refused(*_schedule_args("py-101", iso(start), iso(end)))
    school.ok("schedule", "remove", "py-101")
    assert control_calls[-1] == ("reload", {})
    assert dict(ScheduleStore(school.home).load()) == {}
    assert "no such class" in school.refused("schedule", "remove", "py-101")


def test_schedule_add_when_the_relay_is_not_running(school: Runner, relay_down: None) -> None:
    now = dt.datetime.now(dt.UTC)
    out = school.ok(
        *_schedule_args("c1", iso(now + dt.timedelta(hours=1)), iso(now + dt.timedelta(hours=2)))
    )
    assert "not running" in out


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"--instructor": "bob"}, "bob is not enrolled"),
        ({"--instructor": "sam"}, "role staff"),
        ({"--learner": "l9999"}, "l9999 are not in the registry"),
        ({"--id": "Py 101"}, "class id"),
        ({"--classroom": "Room A"}, "classroom"),
        ({"--end": "START"}, "must be after the start"),
        ({"--start": "tomorrow"}, "ISO 8601"),
    ],
)
def test_schedule_add_refusals(
    school: Runner, relay_down: None, change: dict[str, str], expected: str
) -> None:
    now = dt.datetime.now(dt.UTC)
    args = _schedule_args("c1", iso(now + dt.timedelta(hours=1)), iso(now + dt.timedelta(hours=2)))
    for option, value in change.items():
        index = args.index(option) + 1
        args[index] = args[args.index("--start") + 1] if value == "START" else value
    assert expected in school.refused(*args)
    assert dict(ScheduleStore(school.home).load()) == {}


def test_schedule_refuses_a_revoked_instructor_and_a_past_class(
    school: Runner, relay_down: None
) -> None:
    now = dt.datetime.now(dt.UTC)
    past = _schedule_args("old", iso(now - dt.timedelta(hours=3)), iso(now - dt.timedelta(hours=1)))
    assert "already be over" in school.refused(*past)
    school.ok("revoke", "alice")
    future = _schedule_args(
        "c1", iso(now + dt.timedelta(hours=1)), iso(now + dt.timedelta(hours=2))
    )
    assert "revoked" in school.refused(*future)


def test_naive_times_are_local_time_of_the_relay_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Etc/GMT-2")  # POSIX sign: two hours *ahead* of UTC
    time.tzset()
    try:
        assert cli.parse_time("2026-05-09T15:00") == dt.datetime(2026, 5, 9, 13, 0, tzinfo=dt.UTC)
        assert cli.parse_time("2026-05-09T15:00Z") == dt.datetime(2026, 5, 9, 15, 0, tzinfo=dt.UTC)
        assert cli.parse_time("2026-05-09T15:00-05:00") == dt.datetime(
            2026, 5, 9, 20, 0, tzinfo=dt.UTC
        )
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12h", dt.timedelta(hours=12)),
        ("30m", dt.timedelta(minutes=30)),
        ("90d", dt.timedelta(days=90)),
        ("2w", dt.timedelta(weeks=2)),
        ("1h30m", dt.timedelta(hours=1, minutes=30)),
        ("45s", dt.timedelta(seconds=45)),
    ],
)
def test_parse_duration(text: str, expected: dt.timedelta) -> None:
    assert cli.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "12", "h", "1.5h", "-1h", "1y", "1h 30m", "0m"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(cli.UsageError):
        cli.parse_duration(text)


# ---------------------------------------------------------------------------------------
# session end, serve, demo, bench, usage
# ---------------------------------------------------------------------------------------


def test_session_end(demo_home: Runner, control_calls: list[tuple[str, dict[str, object]]]) -> None:
    out = demo_home.ok("session", "end", "py-101", "--reason", "fire drill")
    assert "relay did end_session" in out
    assert control_calls == [("end_session", {"session": "py-101", "reason": "fire drill"})]


def test_session_end_needs_a_running_relay(demo_home: Runner, relay_down: None) -> None:
    line = demo_home.refused("session", "end", "py-101", "--reason", "fire drill")
    assert "cannot end class py-101" in line
    assert "schedule remove py-101" in line


def test_session_end_with_the_real_control_client_and_no_relay(demo_home: Runner) -> None:
    pytest.importorskip("relay.control")
    line = demo_home.refused("session", "end", "py-101", "--reason", "fire drill")
    assert "cannot end class py-101" in line


def test_session_end_needs_a_reason(demo_home: Runner, relay_down: None) -> None:
    code, _, err = demo_home("session", "end", "py-101")
    assert code == 2
    assert "--reason" in err
    assert "empty" in demo_home.refused("session", "end", "py-101", "--reason", "  ")


def test_reload_and_status(
    demo_home: Runner, control_calls: list[tuple[str, dict[str, object]]]
) -> None:
    assert "relay did reload" in demo_home.ok("reload")
    assert "message: relay did status" in demo_home.ok("status")
    assert json.loads(demo_home.ok("status", "--json")) == {"message": "relay did status"}
    assert control_calls == [("reload", {}), ("status", {}), ("status", {})]


def test_reload_and_status_need_a_running_relay(demo_home: Runner, relay_down: None) -> None:
    assert "nothing reloaded" in demo_home.refused("reload")
    assert "classroom-relay serve" in demo_home.refused("status")


def test_serve_calls_the_server(demo_home: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[FacilityHome, object, object]] = []

    def fake_serve(home: FacilityHome, *, outside: object, inside: object) -> int:
        calls.append((home, outside, inside))
        return 0

    fake = types.ModuleType("relay.server")
    fake.serve = fake_serve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "relay.server", fake)
    demo_home.ok("serve", "--outside", "0.0.0.0:9443")
    demo_home.ok("serve", "--inside", "[::1]:0")
    assert calls == [
        (demo_home.home, ("0.0.0.0", 9443), None),  # noqa: S104
        (demo_home.home, None, ("::1", 0)),
    ]
    assert "HOST:PORT" in demo_home.refused("serve", "--outside", "9443")


def test_serve_without_a_home(run: Runner) -> None:
    assert "classroom-relay init --home" in run.refused("serve")


def test_demo_and_bench_are_wired(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[object] = []

    def demo_main(args: argparse.Namespace) -> int:
        seen.append(args)
        return 0

    def bench_main(argv: list[str]) -> int:
        seen.append(argv)
        return 3

    demo = types.ModuleType("relay.demo")
    demo.main = demo_main  # type: ignore[attr-defined]
    bench = types.ModuleType("relay.bench")
    bench.main = bench_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "relay.demo", demo)
    monkeypatch.setitem(sys.modules, "relay.bench", bench)

    assert cli.main(["demo", "--headless", "--duration", "2.5"]) == 0
    ns = seen.pop()
    assert isinstance(ns, argparse.Namespace)
    assert (ns.headless, ns.duration, ns.home) == (True, 2.5, None)
    assert cli.main(["demo", "--home", "d"]) == 0
    ns = seen.pop()
    assert isinstance(ns, argparse.Namespace)
    assert (ns.headless, ns.duration) == (False, None)
    assert ns.home == FacilityHome(tmp_path / "d")

    assert cli.main(["bench", "chat", "--json"]) == 3
    assert seen.pop() == ["chat", "--json"]
    assert cli.main(["--home", "x", "bench", "--help"]) == 3
    assert seen.pop() == ["--help"]


def test_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("init", "enroll", "registry", "revoke", "learner", "schedule", "session"):
        assert command in out
    assert cli.main([]) == 2
    assert cli.main(["enroll"]) == 2
    assert "instructor" in capsys.readouterr().err
    assert cli.main(["frobnicate"]) == 2
    assert cli.main(["enroll", "machine", "pc1"]) == 2  # --classroom is required
    assert "--classroom" in capsys.readouterr().err


def test_tls_renew_keeps_names_and_bundles(demo_home: Runner, tmp_path: Path) -> None:
    from relay.identity import Listener

    demo_home.ok("enroll", "instructor", "alice")
    old = demo_home.home.server_certificate(Listener.OUTSIDE)
    out = demo_home.ok("tls", "renew", "outside")
    new = demo_home.home.server_certificate(Listener.OUTSIDE)
    assert new.serial_number != old.serial_number
    san = x509.SubjectAlternativeName
    assert (
        new.extensions.get_extension_for_class(san).value
        == old.extensions.get_extension_for_class(san).value
    )
    assert "Restart the relay" in out
    line = demo_home.refused("tls", "renew", "outside", "--name", "relay.example.org")
    assert "not among its names (relay.example.org); add --name localhost" in line
    # The bundle issued before still verifies against the (unchanged) CA.
    load_bundle(tmp_path / "alice.bundle").certificate.verify_directly_issued_by(
        demo_home.home.load_ca_certificate()
    )
