"""A client written from docs/protocol.md alone, with the `websockets` library, msgpack and
the standard ssl module: nothing from this project but the bundle files it is given."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import msgpack
import pytest
import websockets

from relay.server import Relay
from tests.conftest import PINS, Facility

pytestmark = pytest.mark.integration


def context_from_bundle(path: Path) -> ssl.SSLContext:
    """Section 1: the bundle is PEM after its header; the third PEM block is the CA."""
    text = path.read_text()
    blocks = text.split("-----BEGIN ")
    ca_pem = "-----BEGIN " + blocks[3]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cadata=ca_pem)
    ctx.load_cert_chain(str(path))
    return ctx


def header(path: Path, key: str) -> str:
    for line in path.read_text().splitlines():
        if line.startswith(f"{key}:"):
            return line.split(":", 1)[1].strip()
    raise KeyError(key)


class ThirdPartyClient:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.n = 0

    def next_id(self) -> str:
        self.n += 1
        return f"tp-{self.n}"

    async def send(self, **fields: Any) -> str:
        fields.setdefault("id", self.next_id())
        await self.ws.send(msgpack.packb(fields))
        return str(fields["id"])

    async def recv(self) -> dict[str, Any]:
        frame = await self.ws.recv()
        assert isinstance(frame, bytes), "the relay sends binary frames only"
        out: dict[str, Any] = msgpack.unpackb(frame, raw=False)
        return out

    async def until(self, t: str) -> dict[str, Any]:
        for _ in range(100):
            m = await self.recv()
            if m["t"] == t:
                return m
        raise AssertionError(t)


async def test_a_client_written_from_the_document(facility: Facility, relay: Relay) -> None:
    assert relay.addresses is not None
    alice_bundle = facility.bundle("alice")
    assert header(alice_bundle, "Role") == "instructor"
    machine_bundle = facility.bundle("pc-01")
    assert header(machine_bundle, "Classroom") == "room-a"
    inside = relay.addresses.inside_url + "/v1"
    outside = relay.addresses.outside_url + "/v1"
    async with (
        websockets.connect(
            outside,
            ssl=context_from_bundle(alice_bundle),
            subprotocols=["classroom-relay.v1"],  # type: ignore[list-item]
            compression=None,
        ) as a_ws,
        websockets.connect(
            inside,
            ssl=context_from_bundle(machine_bundle),
            subprotocols=["classroom-relay.v1"],  # type: ignore[list-item]
            compression=None,
        ) as l_ws,
    ):
        alice, learner = ThirdPartyClient(a_ws), ThirdPartyClient(l_ws)
        await alice.send(t="hello", session="py101", client="third-party/1")
        welcome = await alice.recv()
        assert welcome["t"] == "welcome"
        assert welcome["version"] == 1
        assert welcome["you"]["pid"] == "instructor:alice"
        await learner.send(t="hello", session="py101", learner="l1001", pin=PINS["l1001"])
        lw = await learner.recv()
        assert lw["t"] == "welcome"
        assert lw["you"] == {
            "pid": "learner:l1001",
            "role": "learner",
            "name": "l1001",
            "machine": "pc-01",
        }
        for _ in range(lw["replay"]):
            assert "seq" in await learner.recv()
        joined = await alice.until("presence")
        assert joined["event"] == "joined"
        # Section 4: chat, answered by an ack, then the event to everyone.
        mid = await alice.send(t="chat", channel="class", text="Hello from a third-party client")
        ack = await alice.until("ack")
        assert ack == {
            "t": "ack",
            "ref": mid,
            "status": "delivered",
            "seq": ack["seq"],
            "time": ack["time"],
        }
        event = await learner.until("chat")
        assert event["seq"] == ack["seq"]
        assert event["from"] == "instructor:alice"
        assert event["text"] == "Hello from a third-party client"
        assert event["time"] == ack["time"]
        # A refusal has a code, a slug and a text; the connection stays open.
        rid = await learner.send(t="chat", channel="direct", to="learner:l1002", text="psst")
        refusal = await learner.until("ack")
        assert refusal["ref"] == rid
        assert refusal["status"] == "refused"
        assert refusal["code"] == 4431
        assert refusal["error"] == "route_refused"
        assert refusal["text"].startswith("Refused:")
        hid = await learner.send(t="hand", raised=True)
        assert (await learner.until("ack"))["ref"] == hid
        hand = await alice.until("hand")
        assert hand["who"] == "learner:l1001"
        assert hand["raised"] is True
        await learner.send(t="bye")
        left = await alice.until("presence")
        assert left["event"] == "left"
