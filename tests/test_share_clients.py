"""Screen share from the clients' side: RelayClient's share API and the share / watch
commands of instructor-console and classroom-client, against a real relay over TLS on
loopback, with real WebRTC media (aiortc) to and from the relay."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiortc.mediastreams import MediaStreamTrack

from relay.client import RelayClient
from relay.errors import ClientError, ErrorCode
from relay.messages import AckStatus, ShareAsked, ShareStarted, ShareStopped
from relay.screen_media import TestPattern
from relay.server import Relay
from tests.conftest import PINS, Facility

pytestmark = pytest.mark.integration

SESSION = "py101"


def _client(f: Facility, r: Relay, who: str, machine: str | None = None) -> RelayClient:
    assert r.addresses is not None
    role, _, name = who.partition(":")
    if role == "learner":
        assert machine is not None
        return RelayClient(
            f.bundle(machine),
            SESSION,
            relay_url=r.addresses.inside_url,
            learner=name,
            pin=PINS[name],
            reconnect=False,
        )
    url = r.addresses.inside_url if role == "staff" else r.addresses.outside_url
    return RelayClient(f.bundle(name), SESSION, relay_url=url, reconnect=False)


@contextlib.asynccontextmanager
async def joined(
    f: Facility, r: Relay, who: str, machine: str | None = None
) -> AsyncIterator[RelayClient]:
    async with _client(f, r, who, machine) as client:
        yield client


async def event_of(client: RelayClient, kind: type, wait: float = 10.0) -> object:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        event = await client.next_event(max(0.01, deadline - loop.time()))
        if isinstance(event, kind):
            return event


async def drain(track: MediaStreamTrack) -> None:
    """Receive until the track ends (frames already queued may still come out first)."""
    for _ in range(100):
        await asyncio.wait_for(track.recv(), 10)


async def test_two_learners_watch_the_instructors_test_pattern(
    facility: Facility, relay: Relay
) -> None:
    async with (
        joined(facility, relay, "instructor:alice") as alice,
        joined(facility, relay, "learner:l1001", "pc-01") as ada,
        joined(facility, relay, "learner:l1002", "pc-02") as bo,
    ):
        handle = await alice.share_start(TestPattern(320, 240, fps=10))
        assert handle.share
        for learner in (ada, bo):
            started = await event_of(learner, ShareStarted)
            assert isinstance(started, ShareStarted)
            assert started.share == handle.share
            assert started.by == "instructor:alice"
            assert handle.share in learner.shares
        for learner in (ada, bo):
            _view, track = await learner.share_watch(handle.share)
            frame = await asyncio.wait_for(track.recv(), 10)
            assert (frame.width, frame.height) == (320, 240)
        ack = await alice.share_stop(handle.share, "end of demo")
        assert ack.status is AckStatus.DELIVERED
        stopped = await event_of(ada, ShareStopped)
        assert isinstance(stopped, ShareStopped)
        assert stopped.reason == "end of demo"
        assert handle.share not in ada.shares
        assert handle.is_ended


async def test_a_late_joiner_learns_of_the_running_share_and_sees_it_within_2_s(
    facility: Facility, relay: Relay
) -> None:
    async with joined(facility, relay, "instructor:alice") as alice:
        handle = await alice.share_start(TestPattern(320, 240, fps=10))
        await asyncio.sleep(1.0)  # the share runs for a while before the learner comes
        loop = asyncio.get_running_loop()
        async with joined(facility, relay, "learner:l1003", "pc-03") as late:
            t0 = loop.time()
            started = await event_of(late, ShareStarted, wait=2.0)
            assert isinstance(started, ShareStarted)
            assert started.share == handle.share
            assert set(late.shares) == {handle.share}
            _view, track = await late.share_watch(handle.share)
            frame = await asyncio.wait_for(track.recv(), 2.0)
            assert (frame.width, frame.height) == (320, 240)
            assert loop.time() - t0 < 2.0 + 1.0  # joining and signalling included


async def test_a_learner_shares_only_when_asked(facility: Facility, relay: Relay) -> None:
    async with (
        joined(facility, relay, "instructor:alice") as alice,
        joined(facility, relay, "learner:l1001", "pc-01") as ada,
        joined(facility, relay, "learner:l1002", "pc-02") as bo,
    ):
        pattern = TestPattern(160, 120, fps=10)
        with pytest.raises(ClientError) as refused:
            await ada.share_start(pattern)
        assert refused.value.code is ErrorCode.ROUTE_REFUSED
        assert "only when the instructor asks" in str(refused.value)
        assert not ada.share_handles
        assert (await alice.share_ask("l1001")).status is AckStatus.DELIVERED
        asked = await event_of(ada, ShareAsked)
        assert isinstance(asked, ShareAsked)
        assert ada.asked_until == asked.until
        assert asked.until > asked.time
        handle = await ada.share_start(TestPattern(160, 120, fps=10))
        started = await event_of(alice, ShareStarted)
        assert isinstance(started, ShareStarted)
        assert started.by == "learner:l1001"
        assert handle.share not in bo.shares  # only the instructor and staff may watch
        _view, track = await alice.share_watch(handle.share)
        frame = await asyncio.wait_for(track.recv(), 10)
        assert (frame.width, frame.height) == (160, 120)
        with pytest.raises(ClientError) as other:
            await bo.share_watch(handle.share)
        assert other.value.code is ErrorCode.UNKNOWN_SHARE
        # The instructor may ask only learners in the class; learners may not ask.
        assert (await alice.share_ask("l1003")).status is AckStatus.REFUSED
        assert (await bo.share_ask("l1001")).status is AckStatus.REFUSED


async def test_share_stop_ends_the_viewers_tracks(facility: Facility, relay: Relay) -> None:
    from aiortc.mediastreams import MediaStreamError

    async with (
        joined(facility, relay, "instructor:alice") as alice,
        joined(facility, relay, "learner:l1001", "pc-01") as ada,
        joined(facility, relay, "staff:sam") as sam,
    ):
        handle = await alice.share_start(TestPattern(320, 240, fps=10))
        await event_of(ada, ShareStarted)
        view, track = await ada.share_watch(handle.share)
        await asyncio.wait_for(track.recv(), 10)
        # Staff stop any share; everyone watching learns why and their video ends.
        assert (await sam.share_stop(handle.share, "not now")).status is AckStatus.DELIVERED
        end = await asyncio.wait_for(view.ended(), 10)
        assert (end.by, end.reason) == ("staff:sam", "not now")
        with pytest.raises(MediaStreamError):
            await drain(track)
        assert (await asyncio.wait_for(handle.ended(), 10)).by == "staff:sam"
        assert not ada.shares
        assert not alice.share_handles
        assert not ada.share_handles
