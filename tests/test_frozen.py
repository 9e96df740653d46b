"""relay.frozen: the faster __init__ builds the same values, as frozen as before."""

from __future__ import annotations

import dataclasses
from dataclasses import InitVar, dataclass, field
from typing import Any

import pytest

from relay.audit import AuditEvent, EventKind
from relay.errors import ErrorCode
from relay.frozen import STOCK_INITS, quick_init
from relay.messages import Ack, AckStatus, Channel, Chat, ChatEvent
from relay.session import CloseRequest, Delivery, Outcome, _HistoryItem

EVENT = AuditEvent(EventKind.RELOADED, 1.0)
SAMPLES: dict[type, list[tuple[tuple[Any, ...], dict[str, Any]]]] = {
    Chat: [
        (("m1", Channel.CLASS, "hi"), {}),
        ((), {"id": "m2", "channel": Channel.DIRECT, "text": "x", "to": "learner:l1"}),
    ],
    Ack: [
        (("m1", AckStatus.DELIVERED, 3), {}),
        ((), {"ref": "m1", "status": AckStatus.REFUSED, "code": 1, "error": "e", "text": "t"}),
    ],
    ChatEvent: [((1, "m1", "instructor:a", Channel.CLASS, "hi", 2.0), {"to": None})],
    AuditEvent: [
        ((EventKind.RELOADED, 1.0), {}),
        ((EventKind.MESSAGE_DELIVERED, 2.0, "py101", "instructor:a"), {"seq": 4, "content": "c"}),
    ],
    Delivery: [((b"f", (1, 2)), {}), ((b"f", (1,), (b"g",)), {})],
    Outcome: [
        ((), {}),
        (((EVENT,), (Delivery(b"f", (1,)),), (CloseRequest(1, ErrorCode.REVOKED, "r"),)), {}),
    ],
    _HistoryItem: [((1, b"f", None), {}), ((2, b"g", frozenset({"learner:l1"})), {})],
}


def test_every_quick_class_has_samples() -> None:
    assert set(STOCK_INITS) == set(SAMPLES)


@pytest.mark.parametrize("cls", sorted(SAMPLES, key=lambda c: c.__name__))
def test_quick_init_builds_what_the_dataclass_init_builds(cls: type) -> None:
    for args, kwargs in SAMPLES[cls]:
        quick = cls(*args, **kwargs)
        stock = object.__new__(cls)
        STOCK_INITS[cls](stock, *args, **kwargs)
        assert quick == stock
        assert repr(quick) == repr(stock)
        assert hash(quick) == hash(stock)
        name = dataclasses.fields(cls)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(quick, name, None)


def test_checks_in_post_init_still_run() -> None:
    with pytest.raises(ValueError, match="direct message"):
        Chat("m1", Channel.DIRECT, "hi")
    with pytest.raises(ValueError, match="sequence number"):
        Ack("m1", AckStatus.DELIVERED)
    with pytest.raises(TypeError):
        Ack("m1")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Delivery(b"f", (1,), (), "extra")  # type: ignore[call-arg]


def test_only_plain_frozen_slotted_dataclasses_qualify() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = field(default_factory=list)

    @dataclass(frozen=True, slots=True, kw_only=True)
    class KwOnly:
        a: int

    @dataclass(frozen=True, slots=True)
    class WithInitVar:
        a: int
        b: InitVar[int]

    @dataclass(frozen=True, slots=True)
    class NotInInit:
        a: int
        b: int = field(init=False, default=0)

    for cls in (NoSlots, NotFrozen, Factory, KwOnly, WithInitVar, NotInInit):
        with pytest.raises(TypeError):
            quick_init(cls)
