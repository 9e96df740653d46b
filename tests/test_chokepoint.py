"""Invariant 2: one choke point. Every inbound message type passes decode -> authorise ->
policy -> audit -> deliver, and nothing is delivered before its audit record is written."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map, Text

from relay.messages import CLIENT_TYPES
from relay.server import Relay
from tests.conftest import PINS, Facility
from tests.rawclient import Raw, raw_connect

pytestmark = pytest.mark.integration

RELAY_DIR = Path(__file__).parent.parent / "relay"


def _first_file() -> bytes:
    doc = Doc()
    doc.get("files", type=Map)["main.py"] = Text("x = 1\n")
    return doc.get_update()


# One representative frame per client message type, and the role that sends it.
SAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "hello": ("instructor", {"t": "hello", "id": "s-hello", "session": "py101"}),
    "chat": ("instructor", {"t": "chat", "id": "s-chat", "channel": "class", "text": "hi"}),
    "hand": ("learner", {"t": "hand", "id": "s-hand", "raised": True}),
    "end_session": ("staff", {"t": "end_session", "id": "s-end", "reason": "drill"}),
    "bye": ("learner", {"t": "bye", "id": "s-bye"}),
    "review_list": ("staff", {"t": "review_list", "id": "s-list"}),
    "review": (
        "staff",
        {"t": "review", "id": "s-review", "hold": "py101.h1-0000", "approve": True},
    ),
    "editor_sync": ("learner", {"t": "editor_sync", "id": "s-sync", "ws": "class", "sv": b"\0"}),
    "editor_update": (
        "instructor",
        {"t": "editor_update", "id": "s-update", "ws": "class", "update": _first_file()},
    ),
    "editor_presence": ("instructor", {"t": "editor_presence", "id": "s-pres", "ws": "class"}),
    "editor_lecture": ("instructor", {"t": "editor_lecture", "id": "s-lect", "on": True}),
    "editor_share": (
        "instructor",
        {"t": "editor_share", "id": "s-share", "learner": "l1002", "shared": True},
    ),
    "share_start": (
        "instructor",
        {"t": "share_start", "id": "s-pub", "sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"},
    ),
    "share_watch": (
        "learner",
        {"t": "share_watch", "id": "s-watch", "share": "py101.s9-0000", "sdp": "v=0\r\n"},
    ),
    "share_stop": ("staff", {"t": "share_stop", "id": "s-stop", "share": "py101.s9-0000"}),
    "share_ask": ("instructor", {"t": "share_ask", "id": "s-ask", "learner": "l1002"}),
}
ANSWERED_TO_SENDER = {
    "review_list": "review.listed",
    "review": "message.refused",
    "editor_sync": "editor.sync",
    "share_start": "message.refused",
    "share_watch": "message.refused",
    "share_stop": "message.refused",
}
"""Types whose effect only the sender sees: its answer, recorded before it arrives."""


def test_every_message_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(CLIENT_TYPES)


class AuditSpy:
    """Reads the audit log file at the moment a frame reaches a client."""

    def __init__(self, facility: Facility) -> None:
        self.facility = facility

    def records(self) -> list[dict[str, Any]]:
        return self.facility.audit_records()


async def _joined(relay: Relay, facility: Facility, role: str) -> tuple[Any, Raw]:
    assert relay.addresses is not None
    if role == "instructor":
        ctx = raw_connect(relay.addresses.outside_url, facility.bundle("alice"))
        extra: dict[str, Any] = {}
    elif role == "staff":
        ctx = raw_connect(relay.addresses.inside_url, facility.bundle("sam"))
        extra = {}
    else:
        ctx = raw_connect(relay.addresses.inside_url, facility.bundle("pc-02"))
        extra = {"learner": "l1002", "pin": PINS["l1002"]}
    raw = await ctx.__aenter__()
    welcome = await raw.hello(**extra)
    assert welcome["t"] == "welcome", welcome
    return ctx, raw


@pytest.mark.parametrize("kind", sorted(SAMPLES))
async def test_each_type_is_recorded_before_anything_is_delivered(
    kind: str, facility: Facility, relay: Relay
) -> None:
    spy = AuditSpy(facility)
    role, frame = SAMPLES[kind]
    # An observer in the class: whatever it receives must already be in the audit log.
    observer_ctx, observer = await _joined(
        relay, facility, "learner" if role != "learner" else "instructor"
    )
    await asyncio.sleep(0.1)
    while True:
        try:
            await observer.recv(0.2)
        except TimeoutError:
            break
    if kind == "hello":
        assert relay.addresses is not None
        sender_ctx = raw_connect(relay.addresses.outside_url, facility.bundle("alice"))
        sender = await sender_ctx.__aenter__()
        await sender.send(frame)
    else:
        sender_ctx, sender = await _joined(relay, facility, role)
        await asyncio.sleep(0.1)
        while True:
            try:
                await observer.recv(0.2)
            except TimeoutError:
                break
        before = len(spy.records())
        await sender.send(frame)
    if kind in ANSWERED_TO_SENDER:
        answer = await sender.recv(5)
        while answer["t"] not in ("holds", "ack", "editor_state", "<closed>"):
            answer = await sender.recv(5)  # replayed history first
        assert answer["t"] in ("holds", "ack", "editor_state"), answer
        assert answer.get("ref") == frame["id"], answer
        assert any(r["kind"] == ANSWERED_TO_SENDER[kind] for r in spy.records()[before:])
        await sender_ctx.__aexit__(None, None, None)
        await observer_ctx.__aexit__(None, None, None)
        return
    # The observer sees the effect (chat, presence, hand, end); at that moment the
    # record of the message that caused it is already in the log.
    got = await observer.recv(5)
    records = spy.records()
    if kind == "hello":
        assert got["t"] == "presence"
        assert any(
            r["kind"] == "session.joined" and r["actor"] == "instructor:alice" for r in records
        )
    else:
        assert len(records) > before
        new = records[before:]
        expected = {
            "chat": "message.delivered",
            "hand": "message.hand",
            "end_session": "session.ended",
            "bye": "session.left",
            "editor_update": "editor.update",
            "editor_presence": "editor.presence",
            "editor_lecture": "editor.mode",
            "editor_share": "editor.mode",
            "share_ask": "screen.asked",
        }[kind]
        assert any(r["kind"] == expected for r in new), (kind, new)
        if kind.startswith("editor_"):
            assert got["t"] == {"editor_lecture": "editor_mode", "editor_share": "editor_mode"}.get(
                kind, kind
            )
        if kind == "share_ask":
            assert got["t"] == "share_asked"
        if kind == "chat":
            assert got["t"] == "chat"
            assert any(r.get("msg_id") == "s-chat" for r in new)
    await sender_ctx.__aexit__(None, None, None)
    await observer_ctx.__aexit__(None, None, None)


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == name)
            or (isinstance(node.func, ast.Name) and node.func.id == name)
        )
    ]


def _enclosing_functions(tree: ast.AST, name: str) -> set[str]:
    found: set[str] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and _calls(fn, name):
            found.add(fn.name)
    return found


def test_no_code_path_sends_around_the_choke_point() -> None:
    """Only the connection writer sends frames, and it only sends what the deliverer queued;
    the deliverer only runs after the audit receipt; only the choke point calls it."""
    relay_sources = {p.name: ast.parse(p.read_text()) for p in RELAY_DIR.glob("*.py")}
    server = relay_sources.pop("server.py")
    assert _enclosing_functions(server, "send_bytes") == {"write"}
    # The coalescing fast path writes frames to the transport only in its ``send``,
    # which only the connection writer calls.
    assert _enclosing_functions(server, "_binary_frame") == {"send"}
    assert _enclosing_functions(server, "send") == {"write"}
    assert not _calls(server, "send_str")
    assert not _calls(server, "send_json")
    assert _enclosing_functions(server, "enqueue") <= {"_apply", "enqueue", "stop", "_ws_handler"}
    assert _enclosing_functions(server, "_apply") == {
        "_deliver_direct",
        "_outbox_worker",
        "_fail_closed",
        "_audit_failed",
    }
    chokepoint = relay_sources["chokepoint.py"]
    assert _enclosing_functions(chokepoint, "deliver") == {"_hand_over"}
    assert _enclosing_functions(chokepoint, "submit") == {"_hand_over"}
    # The ws handler hands every received frame to the choke point and nothing else.
    handler = next(
        n
        for n in ast.walk(server)
        if isinstance(n, ast.AsyncFunctionDef) and n.name == "_ws_handler"
    )
    assert _calls(handler, "process")
    # No other module of the relay talks to a socket or a WebSocket directly.
    for name, tree in relay_sources.items():
        if name in ("client.py", "control.py", "bench.py"):
            continue  # clients and the local control socket
        assert not _calls(tree, "send_bytes"), name
