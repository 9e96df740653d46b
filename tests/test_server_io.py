"""The relay's send path: per-connection queues, the coalescing writer and its fallback,
flow control, and slow receivers (they are cut off; the class goes on)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest
from aiohttp import WSMsgType
from aiohttp._websocket.writer import WebSocketWriter

from relay.chokepoint import Connection
from relay.errors import ErrorCode
from relay.identity import Listener
from relay.server import Relay, _binary_frame, _CoalescingSender, _ConnIO
from relay.session import CloseRequest
from tests.conftest import PINS, Facility
from tests.rawclient import raw_connect


class FakeTransport:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.chunks.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing


class FakeProtocol:
    """aiohttp's BaseProtocol flow control, reduced to what the writer looks at."""

    def __init__(self) -> None:
        self.writing_paused = False
        self.resumed = asyncio.Event()

    async def _drain_helper(self) -> None:
        if self.writing_paused:
            await self.resumed.wait()

    def resume(self) -> None:
        self.writing_paused = False
        self.resumed.set()


class FakeWriter:
    def __init__(self) -> None:
        self.transport = FakeTransport()
        self.protocol = FakeProtocol()
        self.use_mask = False
        self.compress = 0
        self._closing = False


class FakeWS:
    """Enough of a WebSocketResponse: the private writer, plus the public send API."""

    def __init__(self, writer: Any = None) -> None:
        self._writer = writer
        self.compress = False
        self.closed = False
        self.sent: list[bytes] = []
        self.close_code: int | None = None

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)

    async def close(self, *, code: int, message: bytes) -> None:
        self.closed = True
        self.close_code = code


def _conn_io(ws: Any, limit: int = 100) -> _ConnIO:
    conn = Connection(id=7, listener=Listener.INSIDE, ident=None, peer="test")  # type: ignore[arg-type]
    return _ConnIO(conn, ws, limit)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
async def test_frames_are_the_bytes_aiohttp_would_write(size: int) -> None:
    transport = FakeTransport()
    writer = WebSocketWriter(FakeProtocol(), transport)  # type: ignore[arg-type]
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    await writer.send_frame(payload, WSMsgType.BINARY)
    assert _binary_frame(payload) == b"".join(transport.chunks)


def test_detection_needs_every_private_attribute() -> None:
    assert _CoalescingSender.detect(FakeWS(FakeWriter())) is not None  # type: ignore[arg-type]
    assert _CoalescingSender.detect(FakeWS(None)) is None  # type: ignore[arg-type]
    for attr in ("transport", "protocol", "_closing", "use_mask", "compress"):
        writer = FakeWriter()
        delattr(writer, attr)
        assert _CoalescingSender.detect(FakeWS(writer)) is None, attr  # type: ignore[arg-type]
    masking = FakeWriter()
    masking.use_mask = True
    assert _CoalescingSender.detect(FakeWS(masking)) is None  # type: ignore[arg-type]
    compressing = FakeWS(FakeWriter())
    compressing.compress = True
    assert _CoalescingSender.detect(compressing) is None  # type: ignore[arg-type]


async def test_queued_frames_go_out_in_order_in_one_write() -> None:
    writer = FakeWriter()
    io = _conn_io(FakeWS(writer))
    for item in (b"a", (b"b", b"c"), b"d"):
        io.enqueue(item)
    io.writer = asyncio.get_running_loop().create_task(io.write())
    await _settle()
    assert writer.transport.chunks == [b"".join(_binary_frame(f) for f in (b"a", b"b", b"c", b"d"))]
    io.enqueue(CloseRequest(7, ErrorCode.SHUTTING_DOWN, "bye"))
    await asyncio.wait_for(io.writer, 1)


async def test_without_the_private_writer_frames_go_through_send_bytes() -> None:
    ws = FakeWS(None)
    io = _conn_io(ws)
    io.writer = asyncio.get_running_loop().create_task(io.write())
    io.enqueue(b"a")
    io.enqueue((b"b", b"c"))
    io.enqueue(CloseRequest(7, ErrorCode.SHUTTING_DOWN, "bye"))
    await asyncio.wait_for(io.writer, 1)
    assert ws.sent == [b"a", b"b", b"c"]
    assert ws.close_code == ErrorCode.SHUTTING_DOWN.number


async def test_nothing_is_written_while_the_transport_is_paused() -> None:
    writer = FakeWriter()
    writer.protocol.writing_paused = True
    io = _conn_io(FakeWS(writer), limit=3)
    io.writer = asyncio.get_running_loop().create_task(io.write())
    io.enqueue(b"a")
    await _settle()
    assert writer.transport.chunks == []  # waiting for the transport to drain
    io.enqueue(b"b")
    io.enqueue(b"c")
    await _settle()
    assert writer.transport.chunks == []
    writer.protocol.resume()
    await _settle()
    assert b"".join(writer.transport.chunks) == b"".join(
        _binary_frame(f) for f in (b"a", b"b", b"c")
    )
    io.enqueue(CloseRequest(7, ErrorCode.SHUTTING_DOWN, "bye"))
    await asyncio.wait_for(io.writer, 1)


async def test_a_full_queue_disconnects_the_receiver() -> None:
    writer = FakeWriter()
    writer.protocol.writing_paused = True
    ws = FakeWS(writer)
    io = _conn_io(ws, limit=3)
    io.writer = asyncio.get_running_loop().create_task(io.write())
    io.enqueue(b"taken")  # the writer holds it while it waits for the transport
    await _settle()
    for frame in (b"1", b"2", b"3", b"4"):
        io.enqueue(frame)
    assert io.closing
    assert list(io.items) == [CloseRequest(7, ErrorCode.LIMIT_EXCEEDED, "receiver too slow")]
    io.enqueue(b"more")  # refused once closing
    writer.protocol.resume()
    await asyncio.wait_for(io.writer, 1)
    assert writer.transport.chunks == [_binary_frame(b"taken")]
    assert ws.close_code == ErrorCode.LIMIT_EXCEEDED.number


async def test_a_closing_websocket_is_not_written_to() -> None:
    writer = FakeWriter()
    writer._closing = True
    io = _conn_io(FakeWS(writer))
    io.writer = asyncio.get_running_loop().create_task(io.write())
    io.enqueue(b"late")
    await asyncio.wait_for(io.writer, 1)
    assert writer.transport.chunks == []


@pytest.mark.integration
async def test_the_relay_uses_the_coalescing_writer(facility: Facility, relay: Relay) -> None:
    assert relay.addresses is not None
    async with raw_connect(relay.addresses.outside_url, facility.bundle("alice")) as raw:
        assert (await raw.hello())["t"] == "welcome"
        (io,) = relay.conns.values()
        assert _CoalescingSender.detect(io.ws) is not None


@pytest.mark.integration
async def test_a_receiver_that_stops_reading_is_cut_off_and_the_class_goes_on(
    facility: Facility,
) -> None:
    from relay.server import running_relay

    facility.set_limits(send_queue_limit=20, msgs_per_second=1e6, msgs_burst=10**6)
    facility.raise_policy_chat_rate()
    text = "x" * 3000
    async with running_relay(
        facility.home, outside=("127.0.0.1", 0), inside=("127.0.0.1", 0), control=False
    ) as r:
        assert r.addresses is not None
        async with (
            raw_connect(r.addresses.inside_url, facility.bundle("pc-01")) as slow,
            raw_connect(r.addresses.inside_url, facility.bundle("pc-02")) as fast,
            raw_connect(r.addresses.outside_url, facility.bundle("alice")) as alice,
        ):
            assert (await slow.hello(learner="l1001", pin=PINS["l1001"]))["t"] == "welcome"
            assert (await fast.hello(learner="l1002", pin=PINS["l1002"]))["t"] == "welcome"
            assert (await alice.hello())["t"] == "welcome"
            slow_io = next(io for io in r.conns.values() if io.conn.ident.name == "pc-01")
            # ``slow`` never reads from here on: its socket buffers fill, the relay's
            # transport pauses, its queue fills, and it is cut off.
            received = 0

            async def read_fast() -> None:
                nonlocal received
                while True:
                    m = await fast.recv(10)
                    if m["t"] == "chat":
                        received += 1
                    elif m["t"] == "<closed>":
                        return

            reader = asyncio.get_running_loop().create_task(read_fast())
            sent = 0
            for batch in range(2000):  # stops as soon as it is cut off
                for i in range(20):
                    chat = {"t": "chat", "id": f"m{batch}-{i}", "channel": "class", "text": text}
                    await alice.send(chat)
                    sent += 1
                while True:  # every message is acked: the class is not stalled
                    m = await alice.recv(10)
                    if m["t"] == "ack" and m["ref"] == f"m{batch}-19":
                        break
                if slow_io.closing and batch >= 10:
                    break
            assert slow_io.closing, "the slow receiver was never cut off"
            for _ in range(100):
                if received == sent:
                    break
                await asyncio.sleep(0.05)
            assert received == sent
            reader.cancel()
            # Once it reads again, the slow receiver learns why it was cut off.
            for _ in range(10_000):
                m = await slow.recv(10)
                if m["t"] == "<closed>":
                    break
            assert m["t"] == "<closed>"
            assert m["code"] == ErrorCode.LIMIT_EXCEEDED.number


def test_frame_payloads_round_trip_through_msgpack() -> None:
    # A sanity check that the frame helper does not touch the payload.
    payload = msgpack.packb({"t": "ack", "ref": "x"})
    assert _binary_frame(payload).endswith(payload)


async def test_the_outbox_keeps_decision_order_and_slows_senders_when_full() -> None:
    from relay.server import _SessionIO
    from relay.session import Outcome

    sio = _SessionIO(None, limit=2)  # type: ignore[arg-type]
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    outcomes = [Outcome(closes=(CloseRequest(i, ErrorCode.SHUTTING_DOWN, ""),)) for i in range(4)]
    for outcome in outcomes[:3]:
        sio.append((done, outcome))
    waiting = asyncio.get_running_loop().create_task(sio.drained())
    await _settle()
    assert not waiting.done()  # three undelivered, the limit is two
    sio.append((done, outcomes[3]))  # queued behind, never ahead of, the earlier ones
    got = [(await sio.get())[1]]
    await _settle()
    assert not waiting.done()
    got.append((await sio.get())[1])
    await asyncio.wait_for(waiting, 1)
    got += [(await sio.get())[1], (await sio.get())[1]]
    assert got == outcomes
