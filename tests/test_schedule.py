"""relay.schedule: class values, join windows with grace, checks against the registry,
persistence and fail-closed reads."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from relay.errors import ScheduleError
from relay.home import FacilityHome, init_facility
from relay.identity import Role
from relay.registry import RegistryStore
from relay.schedule import ScheduledClass, ScheduleStore, WindowState, decode_schedule

START = dt.datetime(2026, 5, 9, 15, 0, tzinfo=dt.UTC)
END = START + dt.timedelta(hours=2)
EARLY = dt.timedelta(minutes=15)
LATE = dt.timedelta(minutes=5)
LOCAL = ["localhost"]


def make(**changes: Any) -> ScheduledClass:
    values: dict[str, Any] = {
        "id": "py-101",
        "title": "Python 101",
        "instructor": "alice",
        "classroom": "room-a",
        "learners": frozenset({"l1001", "l1002"}),
        "start": START,
        "end": END,
    }
    values.update(changes)
    return ScheduledClass(**values)


@pytest.fixture
def home(tmp_path: Path) -> FacilityHome:
    h = FacilityHome(tmp_path / "facility")
    init_facility(
        h,
        facility="Test",
        outside_names=LOCAL,
        inside_names=LOCAL,
        outside_bind=("127.0.0.1", 8443),
        inside_bind=("127.0.0.1", 8444),
        outside_url="wss://localhost:8443",
        inside_url="wss://localhost:8444",
        passphrase=None,
        now=START - dt.timedelta(days=1),
    )
    reg = RegistryStore(h)
    for name, role, classroom in (
        ("alice", Role.INSTRUCTOR, None),
        ("m1", Role.MACHINE, "room-a"),
        ("gary", Role.STAFF, None),
    ):
        reg.enroll(
            name=name,
            role=role,
            classroom=classroom,
            serial=1,
            not_after=END,
            now=START - dt.timedelta(days=1),
        )
    for learner in ("l1001", "l1002"):
        reg.add_learner(learner, pin="1234", display_name=None, now=START)
    return h


# ---------------------------------------------------------------------------------------
# values and windows
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "state"),
    [
        (-EARLY - dt.timedelta(seconds=1), WindowState.NOT_YET),
        (-EARLY, WindowState.OPEN),
        (dt.timedelta(0), WindowState.OPEN),
        (END - START, WindowState.OPEN),  # at the end, still inside the late grace
        (END - START + LATE - dt.timedelta(seconds=1), WindowState.OPEN),
        (END - START + LATE, WindowState.OVER),
        (dt.timedelta(days=1), WindowState.OVER),
    ],
)
def test_window_with_early_and_late_grace(offset: dt.timedelta, state: WindowState) -> None:
    assert make().window(START + offset, EARLY, LATE) is state


def test_window_without_grace_is_half_open() -> None:
    cls = make()
    zero = dt.timedelta(0)
    assert cls.window(START - dt.timedelta(microseconds=1), zero, zero) is WindowState.NOT_YET
    assert cls.window(START, zero, zero) is WindowState.OPEN
    assert cls.window(END, zero, zero) is WindowState.OVER
    assert cls.opens_at(EARLY) == START - EARLY
    assert cls.closes_at(LATE) == END + LATE


def test_window_compares_across_timezones() -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert make().window(dt.datetime(2026, 5, 9, 17, 30, tzinfo=plus2), EARLY, LATE) is (
        WindowState.OPEN
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        make().window(dt.datetime(2026, 5, 9, 15, 30), EARLY, LATE)


def test_times_are_normalised_to_utc() -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    cls = make(
        start=dt.datetime(2026, 5, 9, 17, 0, tzinfo=plus2),
        end=dt.datetime(2026, 5, 9, 19, 0, tzinfo=plus2),
        learners={"l1001"},
    )
    assert cls.start == START
    assert cls.start.tzinfo is dt.UTC
    assert cls.end.tzinfo is dt.UTC
    assert isinstance(cls.learners, frozenset)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"id": "Py 101"}, "class id"),
        ({"title": "  "}, "title"),
        ({"title": "a\nb"}, "title"),
        ({"instructor": "Alice"}, "instructor"),
        ({"classroom": "room a"}, "classroom"),
        ({"learners": frozenset({"L1"})}, "learner id"),
        ({"end": START}, "must be after the start"),
        ({"end": START - dt.timedelta(hours=1)}, "must be after the start"),
        ({"end": START + dt.timedelta(hours=25)}, "longer than"),
        ({"start": START.replace(tzinfo=None)}, "no timezone"),
    ],
)
def test_invalid_classes_are_refused(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ScheduleError, match=problem):
        make(**changes)


# ---------------------------------------------------------------------------------------
# the store
# ---------------------------------------------------------------------------------------


def test_add_persists_and_round_trips(home: FacilityHome) -> None:
    store = ScheduleStore(home)
    registry = RegistryStore(home).load()
    store.add(make(), registry, now=START - dt.timedelta(hours=1))
    loaded = ScheduleStore(home).load()
    assert dict(loaded) == {"py-101": make()}
    doc = json.loads(home.schedule_file.read_text())
    assert doc == {
        "format": 1,
        "classes": {
            "py-101": {
                "title": "Python 101",
                "instructor": "alice",
                "classroom": "room-a",
                "learners": ["l1001", "l1002"],
                "start": "2026-05-09T15:00:00Z",
                "end": "2026-05-09T17:00:00Z",
            }
        },
    }
    with pytest.raises(ScheduleError, match="already scheduled"):
        store.add(make(title="Again"), registry)
    removed = store.remove("py-101")
    assert removed == make()
    assert dict(store.load()) == {}
    with pytest.raises(ScheduleError, match="no such class"):
        store.remove("py-101")


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"instructor": "nobody"}, "not enrolled"),
        ({"instructor": "m1"}, "role machine, not instructor"),
        ({"instructor": "gary"}, "role staff"),
        ({"learners": frozenset({"l1001", "l9999"})}, "l9999 are not in the registry"),
    ],
)
def test_add_checks_the_registry(home: FacilityHome, changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ScheduleError, match=problem):
        ScheduleStore(home).add(make(**changes), RegistryStore(home).load())
    assert dict(ScheduleStore(home).load()) == {}


def test_add_refuses_a_revoked_instructor(home: FacilityHome) -> None:
    RegistryStore(home).revoke("alice", "gone")
    with pytest.raises(ScheduleError, match="revoked"):
        ScheduleStore(home).add(make(), RegistryStore(home).load())


def test_add_allows_a_classroom_without_machines_yet(home: FacilityHome) -> None:
    ScheduleStore(home).add(make(classroom="room-z"), RegistryStore(home).load())
    assert ScheduleStore(home).load()["py-101"].classroom == "room-z"


def test_add_refuses_a_class_that_is_already_over(home: FacilityHome) -> None:
    with pytest.raises(ScheduleError, match="already be over"):
        ScheduleStore(home).add(make(), RegistryStore(home).load(), now=END)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("nope", "not JSON"),
        ('{"format": 1}', "exactly 'format' and 'classes'"),
        ('{"format": 9, "classes": {}}', "format 9"),
        ('{"format": 1, "classes": {"x": {}}}', "must be an object with exactly"),
        (
            json.dumps(
                {
                    "format": 1,
                    "classes": {
                        "c1": {
                            "title": "T",
                            "instructor": "alice",
                            "classroom": "r",
                            "learners": [],
                            "start": "2026-05-09T17:00:00Z",
                            "end": "2026-05-09T15:00:00Z",
                        }
                    },
                }
            ),
            "must be after the start",
        ),
    ],
)
def test_corrupt_schedule_is_an_error_naming_the_file(
    home: FacilityHome, content: str, problem: str
) -> None:
    home.schedule_file.write_text(content)
    with pytest.raises(ScheduleError, match=problem) as info:
        ScheduleStore(home).load()
    assert str(home.schedule_file) in str(info.value)


def test_missing_schedule_fails_closed(home: FacilityHome) -> None:
    home.schedule_file.unlink()
    with pytest.raises(ScheduleError, match="missing"):
        ScheduleStore(home).load_if_changed()


def test_load_if_changed(home: FacilityHome) -> None:
    watcher = ScheduleStore(home)
    first = watcher.load_if_changed()
    assert watcher.load_if_changed() is first
    ScheduleStore(home).add(make(), RegistryStore(home).load())
    assert "py-101" in watcher.load_if_changed()
    home.schedule_file.write_text("{")
    with pytest.raises(ScheduleError):
        watcher.load_if_changed()


def test_decode_is_strict_about_types() -> None:
    text = json.dumps(
        {
            "format": 1,
            "classes": {
                "c1": {
                    "title": "T",
                    "instructor": "alice",
                    "classroom": "r",
                    "learners": "l1001",
                    "start": "2026-05-09T15:00:00Z",
                    "end": "2026-05-09T17:00:00Z",
                }
            },
        }
    )
    with pytest.raises(ScheduleError, match="list of learner ids"):
        decode_schedule(text, "schedule.json")
