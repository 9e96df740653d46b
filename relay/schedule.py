"""The class schedule: which class runs when, taught by whom, in which classroom, for
which learners. A class can only be joined inside its window (start minus the early
grace to end plus the late grace, from relay.toml [sessions]).

``schedule.json`` in the facility home, version 1::

    {"format": 1,
     "classes": {"py-101-w3": {"title": "Python 101, week 3", "instructor": "alice",
                               "classroom": "room-a", "learners": ["l1001", "l1002"],
                               "start": "2026-05-09T15:00:00Z",
                               "end": "2026-05-09T17:00:00Z"}}}

Times are stored in UTC. Changes are made under the home's lock and written atomically;
an unreadable schedule is an error, never an empty schedule (the relay fails closed).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from relay.errors import ScheduleError
from relay.home import FacilityHome, atomic_write, parse_utc_text, utc_text
from relay.identity import NAME_RULE, Role, valid_name
from relay.registry import RegistrySnapshot

SCHEDULE_FORMAT = 1
MAX_TITLE_CHARS = 200
MAX_CLASS_DURATION = dt.timedelta(hours=24)
MAX_LEARNERS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class WindowState(enum.Enum):
    NOT_YET = "not_yet"
    OPEN = "open"
    OVER = "over"


def _utc(when: dt.datetime, what: str, class_id: str) -> dt.datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ScheduleError(f"class {class_id}: the {what} time has no timezone")
    return when.astimezone(dt.UTC)


@dataclass(frozen=True, slots=True)
class ScheduledClass:
    """One class. Times are aware and normalised to UTC when the value is built."""

    id: str
    title: str
    instructor: str
    classroom: str
    learners: frozenset[str]
    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if not valid_name(self.id):
            raise ScheduleError(f"refused class id {self.id!r}: a class id is {NAME_RULE}")
        title = self.title.strip()
        if not title or len(title) > MAX_TITLE_CHARS or _CONTROL.search(title):
            raise ScheduleError(
                f"class {self.id}: the title must be 1 to {MAX_TITLE_CHARS} characters of "
                "plain text"
            )
        if not valid_name(self.instructor):
            raise ScheduleError(
                f"class {self.id}: instructor {self.instructor!r} is not a valid name"
            )
        if not valid_name(self.classroom):
            raise ScheduleError(
                f"class {self.id}: refused classroom {self.classroom!r}: a classroom name is "
                f"{NAME_RULE}"
            )
        if not isinstance(self.learners, frozenset):
            object.__setattr__(self, "learners", frozenset(self.learners))
        if len(self.learners) > MAX_LEARNERS:
            raise ScheduleError(f"class {self.id}: at most {MAX_LEARNERS} learners per class")
        bad = sorted(x for x in self.learners if not valid_name(x))
        if bad:
            raise ScheduleError(f"class {self.id}: learner id(s) {', '.join(bad)} are not valid")
        start = _utc(self.start, "start", self.id)
        end = _utc(self.end, "end", self.id)
        object.__setattr__(self, "title", title)
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        if end <= start:
            raise ScheduleError(
                f"class {self.id}: the end ({utc_text(end)}) must be after the start "
                f"({utc_text(start)})"
            )
        if end - start > MAX_CLASS_DURATION:
            raise ScheduleError(
                f"class {self.id}: lasts {end - start}, longer than {MAX_CLASS_DURATION}; "
                "check the dates, or schedule one class per day"
            )

    def window(self, now: dt.datetime, early: dt.timedelta, late: dt.timedelta) -> WindowState:
        """NOT_YET before ``start - early``; OPEN from then until ``end + late`` (exclusive);
        OVER after."""
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("window() needs a timezone-aware time")
        if now < self.start - early:
            return WindowState.NOT_YET
        if now >= self.end + late:
            return WindowState.OVER
        return WindowState.OPEN

    def opens_at(self, early: dt.timedelta) -> dt.datetime:
        return self.start - early

    def closes_at(self, late: dt.timedelta) -> dt.datetime:
        return self.end + late


def check_against_registry(cls: ScheduledClass, registry: RegistrySnapshot) -> None:
    """Refuse a class whose instructor is not an active instructor or whose learners are
    not in the registry. (Machines of the classroom may be enrolled later.)"""
    record = registry.principals.get(cls.instructor)
    if record is None:
        raise ScheduleError(
            f"class {cls.id}: instructor {cls.instructor} is not enrolled; enrol them first "
            f"('classroom-relay enroll instructor {cls.instructor}')"
        )
    if record.role is not Role.INSTRUCTOR:
        raise ScheduleError(
            f"class {cls.id}: {cls.instructor} is enrolled with role {record.role.value}, not "
            "instructor; name an instructor"
        )
    if not record.active:
        raise ScheduleError(
            f"class {cls.id}: instructor {cls.instructor} is revoked; enrol them again with "
            "--renew or name another instructor"
        )
    unknown = sorted(x for x in cls.learners if x not in registry.learners)
    if unknown:
        raise ScheduleError(
            f"class {cls.id}: learner(s) {', '.join(unknown)} are not in the registry; add them "
            "first ('classroom-relay learner add ID')"
        )


# ---------------------------------------------------------------------------------------
# the file
# ---------------------------------------------------------------------------------------


def encode_schedule(classes: Iterable[ScheduledClass]) -> str:
    out: dict[str, Any] = {}
    for cls in sorted(classes, key=lambda c: (c.start, c.id)):
        out[cls.id] = {
            "title": cls.title,
            "instructor": cls.instructor,
            "classroom": cls.classroom,
            "learners": sorted(cls.learners),
            "start": utc_text(cls.start),
            "end": utc_text(cls.end),
        }
    return (
        json.dumps({"format": SCHEDULE_FORMAT, "classes": out}, indent=2, ensure_ascii=False) + "\n"
    )


def empty_schedule_text() -> str:
    return encode_schedule(())


_CLASS_KEYS = {"title", "instructor", "classroom", "learners", "start", "end"}


def decode_schedule(text: str, source: str) -> Mapping[str, ScheduledClass]:
    """Parse schedule.json; any problem is a :class:`ScheduleError` naming ``source``."""

    def bad(problem: str) -> ScheduleError:
        return ScheduleError(
            f"the schedule {source} is invalid: {problem}; the relay admits nobody to any class "
            "until it is fixed: correct it or restore it from the backup"
        )

    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise bad(f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or set(doc) != {"format", "classes"}:
        raise bad("the document must be an object with exactly 'format' and 'classes'")
    if doc["format"] != SCHEDULE_FORMAT:
        raise bad(f"format {doc['format']!r} is not {SCHEDULE_FORMAT}")
    raw_classes = doc["classes"]
    if not isinstance(raw_classes, dict):
        raise bad("'classes' must be an object")
    classes: dict[str, ScheduledClass] = {}
    for class_id, raw in raw_classes.items():
        what = f"class {class_id!r}"
        if not isinstance(raw, dict) or set(raw) != _CLASS_KEYS:
            raise bad(f"{what} must be an object with exactly {', '.join(sorted(_CLASS_KEYS))}")
        strings = ("title", "instructor", "classroom")
        if not all(isinstance(raw[k], str) for k in strings):
            raise bad(f"{what}: title, instructor and classroom must be strings")
        learners = raw["learners"]
        if not isinstance(learners, list) or not all(isinstance(x, str) for x in learners):
            raise bad(f"{what}: learners must be a list of learner ids")
        try:
            classes[class_id] = ScheduledClass(
                id=class_id,
                title=raw["title"],
                instructor=raw["instructor"],
                classroom=raw["classroom"],
                learners=frozenset(learners),
                start=parse_utc_text(raw["start"], f"{what} start"),
                end=parse_utc_text(raw["end"], f"{what} end"),
            )
        except (ValueError, ScheduleError) as exc:
            raise bad(str(exc)) from None
    return MappingProxyType(classes)


_FileKey = tuple[int, int, int]


class ScheduleStore:
    """schedule.json of one facility home: cached reads and locked, atomic changes."""

    def __init__(self, home: FacilityHome) -> None:
        self.home = home
        self._cached: tuple[_FileKey, Mapping[str, ScheduledClass]] | None = None

    @property
    def path(self) -> Path:
        return self.home.schedule_file

    def _missing(self) -> ScheduleError:
        return ScheduleError(
            f"the schedule {self.path} is missing; the relay admits nobody to any class until "
            "it is restored from the backup (or the home is created with 'classroom-relay init')"
        )

    def load(self) -> Mapping[str, ScheduledClass]:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            raise self._missing() from None
        except OSError as exc:
            raise ScheduleError(f"cannot read the schedule {self.path}: {exc}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ScheduleError(f"the schedule {self.path} is not UTF-8 text") from None
        classes = decode_schedule(text, str(self.path))
        self._cached = ((st.st_mtime_ns, st.st_size, st.st_ino), classes)
        return classes

    def load_if_changed(self) -> Mapping[str, ScheduledClass]:
        """The cached schedule unless the file's (mtime, size, inode) changed; a corrupt or
        missing file raises every time."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise self._missing() from None
        cached = self._cached
        if cached is not None and cached[0] == (st.st_mtime_ns, st.st_size, st.st_ino):
            return cached[1]
        return self.load()

    def add(
        self,
        cls: ScheduledClass,
        registry: RegistrySnapshot,
        *,
        now: dt.datetime | None = None,
    ) -> None:
        """Add ``cls`` after checking it against ``registry``; with ``now``, also refuse a
        class that would already be over."""
        check_against_registry(cls, registry)
        if now is not None and cls.end <= now:
            raise ScheduleError(
                f"class {cls.id}: it would already be over (it ends {utc_text(cls.end)}); "
                "check the date"
            )
        with self.home.lock():
            classes = dict(self.load())
            if cls.id in classes:
                raise ScheduleError(
                    f"a class with id {cls.id} is already scheduled; choose another id or "
                    f"remove the old one ('classroom-relay schedule remove {cls.id}')"
                )
            classes[cls.id] = cls
            atomic_write(self.path, encode_schedule(classes.values()).encode("utf-8"))
            self._cached = None

    def remove(self, class_id: str) -> ScheduledClass:
        with self.home.lock():
            classes = dict(self.load())
            cls = classes.pop(class_id, None)
            if cls is None:
                raise ScheduleError(
                    f"cannot remove class {class_id!r}: no such class is scheduled "
                    "(see 'classroom-relay schedule list')"
                )
            atomic_write(self.path, encode_schedule(classes.values()).encode("utf-8"))
            self._cached = None
            return cls


__all__ = [
    "MAX_CLASS_DURATION",
    "ScheduleStore",
    "ScheduledClass",
    "WindowState",
    "check_against_registry",
    "decode_schedule",
    "empty_schedule_text",
    "encode_schedule",
]
