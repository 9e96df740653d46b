"""A real relay over real TLS on loopback, with real clients."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization

from relay import pki
from relay.bundle import Bundle, load_bundle, write_bundle
from relay.client import RelayClient
from relay.errors import ClientError, ErrorCode
from relay.identity import Role
from relay.messages import (
    AckStatus,
    ChatEvent,
    ErrorFrame,
    HandEvent,
    PresenceChange,
    PresenceEvent,
    SessionEnded,
)
from relay.server import Relay
from tests.conftest import PINS, Facility
from tests.rawclient import raw_connect

pytestmark = pytest.mark.integration


def instructor(f: Facility, r: Relay, name: str = "alice", session: str = "py101") -> RelayClient:
    assert r.addresses is not None
    return RelayClient(f.bundle(name), session, relay_url=r.addresses.outside_url)


def learner(
    f: Facility,
    r: Relay,
    learner_id: str,
    machine: str,
    session: str = "py101",
    pin: str | None = None,
) -> RelayClient:
    assert r.addresses is not None
    return RelayClient(
        f.bundle(machine),
        session,
        relay_url=r.addresses.inside_url,
        learner=learner_id,
        pin=pin or PINS[learner_id],
    )


async def next_of(client: RelayClient, kind: type, wait_s: float = 5.0) -> object:
    for _ in range(100):
        event = await client.next_event(wait_s)
        if isinstance(event, kind):
            return event
    raise AssertionError(f"no {kind.__name__}")


async def drain(client: RelayClient, wait_s: float = 0.3) -> list[object]:
    out: list[object] = []
    while True:
        try:
            out.append(await client.next_event(wait_s))
        except TimeoutError:
            return out


async def refusal_of(client: RelayClient) -> ClientError:
    with pytest.raises(ClientError) as info:
        await client.connect()
    await client.close(say_bye=False)
    return info.value


def audited(f: Facility, kind: str, **match: object) -> list[dict[str, object]]:
    return [
        rec
        for rec in f.audit_records()
        if rec["kind"] == kind and all(rec.get(k) == v for k, v in match.items())
    ]


# -- chat, direct messages, hands, presence ------------------------------------------------


async def test_class_chat_reaches_everyone_and_is_recorded(
    facility: Facility, relay: Relay
) -> None:
    async with (
        instructor(facility, relay) as alice,
        learner(facility, relay, "l1001", "pc-01") as l1,
        learner(facility, relay, "l1002", "pc-02") as l2,
    ):
        ack = await alice.chat("Open hello.py and print your name")
        assert ack.status is AckStatus.DELIVERED
        assert ack.seq is not None
        for c in (l1, l2, alice):
            event = await next_of(c, ChatEvent)
            assert isinstance(event, ChatEvent)
            assert event.text == "Open hello.py and print your name"
            assert event.sender == "instructor:alice"
            assert event.seq == ack.seq
        records = audited(facility, "message.delivered", class_seq=ack.seq)
        assert len(records) == 1
        assert records[0]["content"] == "Open hello.py and print your name"
        assert records[0]["actor"] == "instructor:alice"
        reply = await l1.chat("done!")
        assert reply.status is AckStatus.DELIVERED
        rec = audited(facility, "message.delivered", class_seq=reply.seq)[0]
        assert rec["machine"] == "pc-01"
        assert rec["learner"] == "l1001"


async def test_direct_messages_reach_only_the_two_people(facility: Facility, relay: Relay) -> None:
    async with (
        instructor(facility, relay) as alice,
        learner(facility, relay, "l1001", "pc-01") as l1,
        learner(facility, relay, "l1002", "pc-02") as l2,
    ):
        await drain(l2)
        ack = await alice.chat("see me after class", to="learner:l1001")
        assert ack.status is AckStatus.DELIVERED
        event = await next_of(l1, ChatEvent)
        assert isinstance(event, ChatEvent)
        assert event.to == "learner:l1001"
        back = await l1.chat("ok", to="instructor:alice")
        assert back.status is AckStatus.DELIVERED
        assert not [e for e in await drain(l2) if isinstance(e, ChatEvent)]


async def test_learner_to_learner_direct_is_refused_and_not_delivered(
    facility: Facility, relay: Relay
) -> None:
    async with (
        learner(facility, relay, "l1001", "pc-01") as l1,
        learner(facility, relay, "l1002", "pc-02") as l2,
    ):
        await drain(l2)
        ack = await l1.chat("psst, answer is 42", to="learner:l1002")
        assert ack.status is AckStatus.REFUSED
        assert ack.error == "route_refused"
        assert ack.text is not None
        assert "42" not in ack.text
        assert not [e for e in await drain(l2) if isinstance(e, ChatEvent)]
        rec = audited(facility, "message.refused", rule="routing.learner_to_learner_direct")
        assert len(rec) == 1


async def test_unknown_recipient_and_staff_chat_are_refused(
    facility: Facility, relay: Relay
) -> None:
    async with instructor(facility, relay) as alice:
        ack = await alice.chat("hi", to="learner:l1009")
        assert ack.error == "unknown_recipient"
        assert relay.addresses is not None
        async with RelayClient(
            facility.bundle("sam"), "py101", relay_url=relay.addresses.inside_url
        ) as sam:
            ack = await sam.chat("staff here")
            assert ack.error == "not_permitted"


async def test_hands_and_presence(facility: Facility, relay: Relay) -> None:
    async with instructor(facility, relay) as alice:
        async with learner(facility, relay, "l1001", "pc-01") as l1:
            joined = await next_of(alice, PresenceChange)
            assert isinstance(joined, PresenceChange)
            assert joined.event is PresenceEvent.JOINED
            assert joined.who.pid == "learner:l1001"
            assert joined.who.machine == "pc-01"
            assert (await l1.hand(True)).status is AckStatus.DELIVERED
            raised = await next_of(alice, HandEvent)
            assert isinstance(raised, HandEvent)
            assert raised.raised
            assert "learner:l1001" in alice.hands
            # Learners may not touch other hands; the instructor may lower one.
            assert (await l1.hand(False, who="learner:l1002")).error == "not_permitted"
            assert (await alice.hand(True)).error == "not_permitted"
            assert (await alice.hand(False, who="learner:l1001")).status is AckStatus.DELIVERED
            lowered = await next_of(alice, HandEvent)
            assert isinstance(lowered, HandEvent)
            assert not lowered.raised
        left = await next_of(alice, PresenceChange)
        assert isinstance(left, PresenceChange)
        assert left.event is PresenceEvent.LEFT
        assert "learner:l1001" not in alice.roster


# -- refusals --------------------------------------------------------------------------


async def test_not_your_class_wrong_classroom_roster_and_pin(
    facility: Facility, relay: Relay
) -> None:
    err = await refusal_of(instructor(facility, relay, "bob"))
    assert err.code is ErrorCode.NOT_YOUR_CLASS
    err = await refusal_of(learner(facility, relay, "l1001", "pc-09"))
    assert err.code is ErrorCode.WRONG_CLASSROOM
    err = await refusal_of(learner(facility, relay, "l1009", "pc-01"))
    assert err.code is ErrorCode.NOT_ON_ROSTER
    err = await refusal_of(learner(facility, relay, "l1001", "pc-01", pin="0000"))
    assert err.code is ErrorCode.BAD_PIN
    err = await refusal_of(learner(facility, relay, "l1001", "pc-01", session="nope"))
    assert err.code is ErrorCode.UNKNOWN_SESSION
    for slug in (
        "not_your_class",
        "wrong_classroom",
        "not_on_roster",
        "bad_pin",
        "unknown_session",
    ):
        assert audited(facility, "session.join_refused", error=slug), slug
    assert "Refused:" in str(err)
    assert "What to do:" in str(err)


async def test_wrong_pins_lock_the_learner_out(facility: Facility, relay: Relay) -> None:
    limit = relay.config.limits.pin_failures_before_lockout
    for _ in range(limit):
        err = await refusal_of(learner(facility, relay, "l1002", "pc-02", pin="0000"))
        assert err.code is ErrorCode.BAD_PIN
    err = await refusal_of(learner(facility, relay, "l1002", "pc-02"))
    assert err.code is ErrorCode.LEARNER_LOCKED


async def test_outside_the_class_window(facility: Facility, relay: Relay) -> None:
    # Off the event loop: the command tells the running relay over its control socket.
    await asyncio.to_thread(
        facility.schedule,
        "later",
        start=dt.timedelta(hours=5),
        end=dt.timedelta(hours=6),
        learners=("l1001",),
    )
    err = await refusal_of(instructor(facility, relay, session="later"))
    assert err.code is ErrorCode.OUTSIDE_WINDOW
    assert audited(facility, "session.join_refused", error="outside_window")


async def test_wrong_listener(facility: Facility, relay: Relay) -> None:
    assert relay.addresses is not None
    client = RelayClient(facility.bundle("alice"), "py101", relay_url=relay.addresses.inside_url)
    assert (await refusal_of(client)).code is ErrorCode.WRONG_LISTENER
    client = RelayClient(
        facility.bundle("pc-01"),
        "py101",
        relay_url=relay.addresses.outside_url,
        learner="l1001",
        pin="1234",
    )
    assert (await refusal_of(client)).code is ErrorCode.WRONG_LISTENER
    assert audited(facility, "connection.refused", error="wrong_listener")


async def test_machine_without_learner(facility: Facility, relay: Relay) -> None:
    assert relay.addresses is not None
    client = RelayClient(facility.bundle("pc-01"), "py101", relay_url=relay.addresses.inside_url)
    assert (await refusal_of(client)).code is ErrorCode.LEARNER_REQUIRED


def _issue_bundle(
    facility: Facility,
    path: Path,
    *,
    name: str,
    ca: tuple[pki.CaKey, object] | None = None,
    now: dt.datetime | None = None,
    valid: dt.timedelta = dt.timedelta(hours=12),
) -> Path:
    """A bundle outside the registry: from the facility CA or another one."""
    facility_ca = facility.home.load_ca(None)
    ca_key, ca_cert = ca or facility_ca
    key_pem, cert_pem, _ = pki.issue_client_certificate(
        ca_key,
        ca_cert,  # type: ignore[arg-type]
        name=name,
        role=Role.INSTRUCTOR,
        facility="Test Facility",
        valid=valid,
        now=now or dt.datetime.now(dt.UTC),
    )
    real_ca_pem = facility_ca[1].public_bytes(serialization.Encoding.PEM).decode()
    bundle = Bundle(
        name=name,
        role=Role.INSTRUCTOR,
        relay_url="wss://localhost:1",
        facility="Test Facility",
        cert_pem=cert_pem,
        key_pem=key_pem,
        ca_pem=real_ca_pem,
    )
    write_bundle(path, bundle)
    return path


async def _tls_refusal(url: str, ctx: ssl.SSLContext) -> BaseException:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(
                url + "/v1", ssl=ctx, protocols=("classroom-relay.v1",)
            ) as ws:
                msg = await ws.receive(timeout=5)
                raise AssertionError(f"the relay accepted the connection: {msg}")
        except (aiohttp.ClientError, OSError) as exc:
            return exc


async def test_tls_refusals_no_certificate_other_ca_expired(
    facility: Facility, relay: Relay
) -> None:
    from relay.client import tls_refusal

    assert relay.addresses is not None
    url = relay.addresses.outside_url
    ca_pem = load_bundle(facility.bundle("alice")).ca_pem
    # No client certificate at all.
    bare = ssl.create_default_context(cadata=ca_pem)
    refusal = tls_refusal(await _tls_refusal(url, bare))
    assert refusal is not None
    assert refusal.code is ErrorCode.NO_CERTIFICATE
    # A certificate from another CA.
    other_ca = pki.create_ca("Elsewhere", now=dt.datetime.now(dt.UTC))
    path = _issue_bundle(facility, facility.root / "other.bundle", name="alice", ca=other_ca)
    refusal = tls_refusal(await _tls_refusal(url, load_bundle(path).client_ssl_context(path)))
    assert refusal is not None
    assert refusal.code is ErrorCode.UNKNOWN_CA
    # An expired certificate from the right CA.
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    path = _issue_bundle(
        facility, facility.root / "old.bundle", name="alice", now=past, valid=dt.timedelta(hours=1)
    )
    refusal = tls_refusal(await _tls_refusal(url, load_bundle(path).client_ssl_context(path)))
    assert refusal is not None
    assert refusal.code is ErrorCode.CERT_EXPIRED
    # The real client refuses an expired bundle before connecting, with the reason.
    client = RelayClient(path, "py101", relay_url=url)
    assert (await refusal_of(client)).code is ErrorCode.CERT_EXPIRED
    await asyncio.sleep(0.2)
    slugs = {rec.get("error") for rec in audited(facility, "connection.tls_refused")}
    assert {"no_certificate", "unknown_ca", "cert_expired"} <= slugs


async def test_certificate_not_in_registry(facility: Facility, relay: Relay) -> None:
    assert relay.addresses is not None
    path = _issue_bundle(facility, facility.root / "ghost.bundle", name="ghost")
    client = RelayClient(path, "py101", relay_url=relay.addresses.outside_url)
    assert (await refusal_of(client)).code is ErrorCode.NOT_REGISTERED
    assert audited(facility, "connection.refused", error="not_registered")


async def test_protocol_refusals(facility: Facility, relay: Relay) -> None:
    assert relay.addresses is not None
    url = relay.addresses.outside_url
    alice = facility.bundle("alice")
    # No subprotocol offered.
    async with raw_connect(url, alice, protocols=()) as raw:
        m = await raw.recv()
        assert m["error"] == "unsupported_version"
        assert (await raw.recv())["code"] == ErrorCode.UNSUPPORTED_VERSION.number
    # Something other than hello first.
    async with raw_connect(url, alice) as raw:
        await raw.send({"t": "chat", "id": "x1", "channel": "class", "text": "hi"})
        m = await raw.recv()
        assert m["error"] == "out_of_order"
    # Unknown type after joining: refused with its id; the connection stays usable.
    async with raw_connect(url, alice) as raw:
        assert (await raw.hello())["t"] == "welcome"
        await raw.send({"t": "teleport", "id": "x2"})
        m = await raw.recv_type("error")
        assert m["error"] == "unknown_type"
        assert m["ref"] == "x2"
        await raw.send({"t": "chat", "id": "x3", "channel": "class", "text": "still here"})
        ack = await raw.recv_type("ack")
        assert ack["status"] == "delivered"
        # An unknown field is refused, not ignored.
        await raw.send({"t": "chat", "id": "x4", "channel": "class", "text": "a", "color": "red"})
        m = await raw.recv_type("error")
        assert m["error"] == "invalid_field"
        assert m["ref"] == "x4"
    # A text frame closes the connection.
    async with raw_connect(url, alice) as raw:
        assert (await raw.hello())["t"] == "welcome"
        await raw.ws.send_str("hello")
        assert (await raw.recv_type("error"))["error"] == "text_frame"
    assert audited(facility, "connection.protocol_error", error="unknown_type")
    assert audited(facility, "connection.refused", error="unsupported_version")


async def test_limits_close_the_connection(facility: Facility, relay: Relay) -> None:
    assert relay.addresses is not None
    url = relay.addresses.outside_url
    alice = facility.bundle("alice")
    limits = relay.config.limits
    async with raw_connect(url, alice) as raw:
        assert (await raw.hello())["t"] == "welcome"
        await raw.ws.send_bytes(b"\x81\xa1t" + b"\xa4chat" + b"x" * limits.max_frame_bytes)
        m = await raw.recv_type("error")
        assert m["error"] == "limit_exceeded"
        assert (await raw.recv_type("<closed>"))["code"] == ErrorCode.LIMIT_EXCEEDED.number
    async with raw_connect(url, alice) as raw:
        assert (await raw.hello())["t"] == "welcome"
        await raw.ws.send_bytes(b"\x81\xa1t" + b"\xa4chat" + b"x" * 5 * limits.max_frame_bytes)
        m = await raw.recv_type("<closed>")
        assert m["code"] in (1006, 1009)
    async with raw_connect(url, alice) as raw:
        assert (await raw.hello())["t"] == "welcome"
        # Readable, with an id, but too deep: that message is refused, the connection stays.
        await raw.send({"t": "chat", "id": "d", "channel": "class", "text": [[[["deep"]]]]})
        m = await raw.recv_type("error")
        assert m["error"] == "limit_exceeded"
        assert m["ref"] == "d"
        await raw.send({"t": "chat", "id": "e", "channel": "class", "text": "fine"})
        assert (await raw.recv_type("ack"))["status"] == "delivered"
        # Not readable within the limits (a string over max_str_bytes): closed.
        await raw.send({"t": "chat", "id": "f", "channel": "class", "text": "x" * 20000})
        m = await raw.recv_type("error")
        assert m["error"] == "limit_exceeded"
        assert "ref" not in m
        assert (await raw.recv_type("<closed>"))["code"] == ErrorCode.LIMIT_EXCEEDED.number
    async with raw_connect(url, alice) as raw:
        assert (await raw.hello())["t"] == "welcome"
        await raw.send(
            {"t": "chat", "id": "l", "channel": "class", "text": "x" * (limits.max_text_chars + 1)}
        )
        assert (await raw.recv_type("error"))["error"] == "limit_exceeded"


async def test_rate_limit(facility: Facility, relay: Relay) -> None:
    async with instructor(facility, relay) as alice:
        acks = await asyncio.gather(*(alice.chat(f"m{i}") for i in range(60)))
        errors = {a.error for a in acks}
        assert "rate_limited" in errors
        assert AckStatus.DELIVERED in {a.status for a in acks}


# -- resume, duplicates ----------------------------------------------------------------


async def test_resume_after_a_dropped_connection(facility: Facility, relay: Relay) -> None:
    async with (
        instructor(facility, relay) as alice,
        learner(facility, relay, "l1001", "pc-01") as l1,
    ):
        await drain(l1)
        await l1.drop_connection()
        # While l1 is away, the instructor keeps teaching.
        sent = [await alice.chat(f"step {i}") for i in range(3)]
        assert all(a.status is AckStatus.DELIVERED for a in sent)
        # l1 also sends while disconnected: held in the client and sent after resume.
        ack = await asyncio.wait_for(l1.chat("I am back"), 10)
        assert ack.status is AckStatus.DELIVERED
        texts = [e.text for e in await drain(l1, 1.0) if isinstance(e, ChatEvent)]
        assert [t for t in texts if t.startswith("step")] == ["step 0", "step 1", "step 2"]
        assert texts.count("I am back") == 1
        assert l1.reconnects >= 1
        assert len(audited(facility, "message.delivered", content="I am back")) == 1


async def test_a_late_joiner_gets_a_history_longer_than_its_send_queue(
    facility: Facility,
) -> None:
    from relay.server import running_relay

    facility.set_limits(
        send_queue_limit=50, history_limit=400, msgs_per_second=1e6, msgs_burst=10**6
    )
    facility.raise_policy_chat_rate()
    async with running_relay(
        facility.home, outside=("127.0.0.1", 0), inside=("127.0.0.1", 0), control=False
    ) as r:
        async with instructor(facility, r) as alice:
            for start in range(0, 300, 10):
                acks = await asyncio.gather(
                    *(alice.chat(f"line {i}") for i in range(start, start + 10))
                )
                assert all(a.status is AckStatus.DELIVERED for a in acks)
            assert alice.reconnects == 0
        async with learner(facility, r, "l1001", "pc-01") as late:
            assert late.welcome is not None
            assert late.welcome.replay >= 300
            events = await drain(late, 0.5)
            texts = [e.text for e in events if isinstance(e, ChatEvent)]
            assert texts == [f"line {i}" for i in range(300)]
            assert late.reconnects == 0


async def test_replayed_history_does_not_change_the_current_roster(
    facility: Facility, relay: Relay
) -> None:
    async with learner(facility, relay, "l1001", "pc-01"):
        pass  # l1001 joined and left: both are in the class history
    async with (
        learner(facility, relay, "l1002", "pc-02") as l2,
        instructor(facility, relay) as alice,
    ):
        await drain(alice)
        assert set(alice.roster) == {"learner:l1002", "instructor:alice"}
        assert set(l2.roster) == {"learner:l1002", "instructor:alice"}


async def test_a_resent_message_id_is_delivered_once(facility: Facility, relay: Relay) -> None:
    assert relay.addresses is not None
    async with (
        learner(facility, relay, "l1001", "pc-01") as l1,
        raw_connect(relay.addresses.outside_url, facility.bundle("alice")) as raw,
    ):
        assert (await raw.hello())["t"] == "welcome"
        await drain(l1)
        chat = {"t": "chat", "id": "same-1", "channel": "class", "text": "only once"}
        await raw.send(chat)
        first = await raw.recv_type("ack")
        await raw.send(chat)
        second = await raw.recv_type("ack")
        assert first == second
        texts = [e.text for e in await drain(l1, 0.5) if isinstance(e, ChatEvent)]
        assert texts == ["only once"]


async def test_a_new_connection_replaces_the_old(facility: Facility, relay: Relay) -> None:
    assert relay.addresses is not None
    async with raw_connect(relay.addresses.outside_url, facility.bundle("alice")) as old:
        assert (await old.hello())["t"] == "welcome"
        async with instructor(facility, relay):
            m = await old.recv_type("<closed>")
            assert m["code"] == ErrorCode.REPLACED.number


# -- revocation and ending a class ------------------------------------------------------


async def test_revocation_cuts_a_live_connection_at_once(facility: Facility, relay: Relay) -> None:
    async with (
        instructor(facility, relay) as alice,
        learner(facility, relay, "l1001", "pc-01") as l1,
    ):
        out = await asyncio.to_thread(
            facility.must, "revoke", "alice", "--reason", "contract ended"
        )
        assert "1 live connection" in out
        event = await next_of(alice, ErrorFrame)
        assert isinstance(event, ErrorFrame)
        assert event.error == "revoked"
        for _ in range(50):
            if alice.finished:
                break
            await asyncio.sleep(0.1)
        assert alice.error is not None
        assert alice.error.code is ErrorCode.REVOKED
        for _ in range(10):
            left = await next_of(l1, PresenceChange)
            assert isinstance(left, PresenceChange)
            if left.event is PresenceEvent.LEFT:
                break
        assert left.who.pid == "instructor:alice"
    # And the credential cannot come back.
    err = await refusal_of(instructor(facility, relay))
    assert err.code is ErrorCode.REVOKED
    assert audited(facility, "admin.revoked", actor="alice")


async def test_staff_end_a_class(facility: Facility, relay: Relay) -> None:
    assert relay.addresses is not None
    async with (
        instructor(facility, relay) as alice,
        learner(facility, relay, "l1001", "pc-01") as l1,
        RelayClient(facility.bundle("sam"), "py101", relay_url=relay.addresses.inside_url) as sam,
    ):
        assert (await l1.end_session("nope")).error == "not_permitted"
        await sam.end_session("security incident in room-a")
        for c in (alice, l1):
            ended = await next_of(c, SessionEnded)
            assert isinstance(ended, SessionEnded)
            assert ended.reason == "security incident in room-a"
            assert ended.by == "staff:sam"
    err = await refusal_of(instructor(facility, relay))
    assert err.code is ErrorCode.SESSION_ENDED
    assert audited(facility, "session.ended", actor="staff:sam")


async def test_admin_ends_a_class_from_the_command_line(facility: Facility, relay: Relay) -> None:
    async with instructor(facility, relay) as alice:
        out = await asyncio.to_thread(facility.must, "session", "end", "py101", "--reason", "fire")
        assert "py101" in out
        ended = await next_of(alice, SessionEnded)
        assert isinstance(ended, SessionEnded)
        assert ended.reason == "fire"
    code, _, err = await asyncio.to_thread(
        facility.admin, "session", "end", "py101", "--reason", "x"
    )
    assert code == 2
    assert "not live" in err


# -- fail closed -----------------------------------------------------------------------


class FullDisk:
    """A segment file that fails, like a full disk, while ``full`` is set."""

    def __init__(self, path: Path, create: bool) -> None:
        from relay.audit_store import DiskSegment

        self.disk = DiskSegment(path, create=create)
        self.full = False

    def _check(self) -> None:
        if self.full:
            raise OSError(28, "No space left on device")

    def append(self, data: bytes) -> None:
        self._check()
        self.disk.append(data)

    def sync(self) -> None:
        self._check()
        self.disk.sync()

    def truncate(self, size: int) -> None:
        self._check()
        self.disk.truncate(size)

    def close(self) -> None:
        self.disk.close()


async def test_audit_failure_delivers_nothing(facility: Facility) -> None:
    from relay.server import open_audit_store, running_relay

    disks: list[FullDisk] = []

    def opener(path: Path, create: bool) -> FullDisk:
        disks.append(FullDisk(path, create))
        return disks[-1]

    store = open_audit_store(facility.home, facility.home.load_config(), opener=opener)
    async with (
        running_relay(
            facility.home, outside=("127.0.0.1", 0), inside=("127.0.0.1", 0), audit=store
        ) as relay,
        instructor(facility, relay) as alice,
        learner(facility, relay, "l1001", "pc-01") as l1,
    ):
        await drain(l1)
        disks[-1].full = True
        send = asyncio.ensure_future(alice.chat("this must not arrive"))
        events = await drain(l1, 1.0)
        assert not [e for e in events if isinstance(e, ChatEvent)]
        notices = [e for e in events if isinstance(e, ErrorFrame)]
        assert notices
        assert notices[0].error == "audit_unavailable"
        assert "could not be written (No space left on device)" in notices[0].text
        assert not send.done() or send.result().status is not AckStatus.DELIVERED
        send.cancel()
        assert not store.healthy
        # The disk has room again: the class resumes and the outage is on record.
        disks[-1].full = False
        for _ in range(40):
            await asyncio.sleep(0.1)
            if audited(facility, "session.paused"):
                break
        assert audited(facility, "session.paused", session="py101")
        assert audited(facility, "audit.recovered")
        assert not audited(facility, "message.delivered", content="this must not arrive")
        ack = await alice.chat("back to work")
        assert ack.status is AckStatus.DELIVERED
        texts = [e.text for e in await drain(l1, 0.5) if isinstance(e, ChatEvent)]
        assert texts == ["back to work"]


async def test_clients_come_back_after_the_relay_restarts(facility: Facility) -> None:
    from relay.client import Backoff
    from relay.server import running_relay

    first = running_relay(facility.home, outside=("127.0.0.1", 0), inside=("127.0.0.1", 0))
    r1 = await first.__aenter__()
    assert r1.addresses is not None
    outside, inside = r1.addresses.outside, r1.addresses.inside
    fast = Backoff(initial=0.1, maximum=0.5)
    alice = RelayClient(
        facility.bundle("alice"), "py101", relay_url=r1.addresses.outside_url, backoff=fast
    )
    l1 = RelayClient(
        facility.bundle("pc-01"),
        "py101",
        relay_url=r1.addresses.inside_url,
        learner="l1001",
        pin=PINS["l1001"],
        backoff=fast,
    )
    await alice.connect()
    await l1.connect()
    for i in range(5):
        assert (await alice.chat(f"before {i}")).status is AckStatus.DELIVERED
    await drain(l1)
    await first.__aexit__(None, None, None)
    async with running_relay(facility.home, outside=outside, inside=inside):
        ack = await asyncio.wait_for(alice.chat("after the restart"), 20)
        assert ack.status is AckStatus.DELIVERED
        texts = [e.text for e in await drain(l1, 1.0) if isinstance(e, ChatEvent)]
        assert "after the restart" in texts
        assert alice.reconnects >= 1
        assert l1.reconnects >= 1
        await alice.close()
        await l1.close()


async def test_a_machine_guessing_pins_is_stopped(facility: Facility) -> None:
    from relay.server import running_relay

    facility.set_limits(pin_failures_per_machine=3)
    async with running_relay(
        facility.home, outside=("127.0.0.1", 0), inside=("127.0.0.1", 0), control=False
    ) as r:
        for who in ("l1001", "l1002", "l1003"):
            err = await refusal_of(learner(facility, r, who, "pc-01", pin="0000"))
            assert err.code is ErrorCode.BAD_PIN
        err = await refusal_of(learner(facility, r, "l1001", "pc-01"))
        assert err.code is ErrorCode.MACHINE_LOCKED
        async with learner(facility, r, "l1001", "pc-02") as ok:  # other machines still work
            assert ok.welcome is not None


async def test_contact_details_are_refused_and_never_forwarded(
    facility: Facility, relay: Relay
) -> None:
    async with (
        learner(facility, relay, "l1001", "pc-01") as l1,
        learner(facility, relay, "l1002", "pc-02") as l2,
    ):
        await drain(l2)
        ack = await l1.chat("is it for i in range(1, 11): print(i) ?")
        assert ack.status is AckStatus.DELIVERED
        secret = "text me: (212) 555-0182"
        ack = await l1.chat(secret)
        assert ack.status is AckStatus.REFUSED
        assert ack.error == "policy_blocked"
        assert ack.text is not None
        assert "555" not in ack.text
        assert "phone" in ack.text
        seen = [e.text for e in await drain(l2, 0.5) if isinstance(e, ChatEvent)]
        assert secret not in seen
        rec = audited(facility, "message.refused", rule="contact.details")
        assert len(rec) == 1
        assert rec[0]["content"] == secret
