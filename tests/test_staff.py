"""Security staff's live tools over the inside listener: watch a class, end it."""

from __future__ import annotations

import argparse
import asyncio
import json

import pytest

from relay.client import RelayClient
from relay.messages import AckStatus, SessionEnded
from relay.server import Relay
from tests.conftest import PINS, Facility

pytestmark = pytest.mark.integration


async def test_staff_watch_sees_direct_messages_and_end_the_class(
    facility: Facility, relay: Relay
) -> None:
    assert relay.addresses is not None
    inside, outside = relay.addresses.inside_url, relay.addresses.outside_url
    sam = str(facility.bundle("sam"))
    watch_args = ["watch", "py101", "--bundle", sam, "--relay", inside, "--json"]
    watch_args += ["--only", "chat", "--count", "2", "--timeout", "20", "--no-history"]
    watching = asyncio.create_task(asyncio.to_thread(facility.admin, *watch_args))
    async with (
        RelayClient(facility.bundle("alice"), "py101", relay_url=outside) as alice,
        RelayClient(
            facility.bundle("pc-01"), "py101", relay_url=inside, learner="l1001", pin=PINS["l1001"]
        ) as l1,
    ):
        for _ in range(50):  # wait until the watcher is in the class
            if "staff:sam" in alice.roster:
                break
            await asyncio.sleep(0.1)
        assert "staff:sam" in alice.roster
        assert (await alice.chat("class note")).status is AckStatus.DELIVERED
        assert (
            await l1.chat("private question", to="instructor:alice")
        ).status is AckStatus.DELIVERED
        code, out, err = await asyncio.wait_for(watching, 30)
        assert code == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        assert [x["text"] for x in lines] == ["class note", "private question"]
        assert lines[1]["to"] == "instructor:alice"

        end_args = ["session", "end", "py101", "--reason", "lockdown", "--bundle", sam]
        code, out, err = await asyncio.to_thread(facility.admin, *end_args, "--relay", inside)
        assert code == 0, err
        assert "ended by staff:sam: lockdown" in out
        for _ in range(20):
            event = await l1.next_event(5)
            if isinstance(event, SessionEnded):
                break
        assert isinstance(event, SessionEnded)
        assert event.by == "staff:sam"


async def test_staff_tools_refuse_other_bundles(facility: Facility, relay: Relay) -> None:
    assert relay.addresses is not None
    args = ["watch", "py101", "--bundle", str(facility.bundle("alice")), "--timeout", "1"]
    code, _, err = await asyncio.to_thread(facility.admin, *args)
    assert code == 2
    assert "staff" in err
    code, _, err = await asyncio.to_thread(
        facility.admin, "session", "end", "py101", "--reason", "x", "--relay", "wss://localhost:1"
    )
    assert code == 2
    assert "--relay goes with --bundle" in err


def test_watch_only_offers_every_event_type_the_clients_know() -> None:
    """``watch --only`` lists the types as words (the admin CLI does not import the client
    front end at start-up); they must stay those of ``EventType``."""
    from classroom_client.cli import EventType
    from relay.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    watch = sub.choices["watch"]
    only = next(a for a in watch._actions if a.dest == "only")
    assert set(only.choices or ()) == {t.value for t in EventType}
