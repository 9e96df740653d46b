"""The relay's I/O adapter: TLS listeners, WebSocket pumps, ordered delivery, control socket.

Everything here is plumbing around :class:`relay.chokepoint.ChokePoint`:

* each listener accepts TCP, performs the TLS 1.3 handshake itself (so that refused
  handshakes are audited with their reason) and hands the TLS stream to aiohttp;
* each WebSocket is a pump: receive frame -> ``ChokePoint.process`` -> nothing else;
* each class has an outbox worker that waits for the audit receipt of each decided
  outcome, in order, and only then queues the frames to the receivers' writers;
* each connection has a writer task with a bounded queue, so one slow receiver never
  stalls a class (it is disconnected and resumes from history when it reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
import ssl
import struct
import time
from asyncio import sslproto
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from policy.engine import PolicyEngine, load_policy
from relay import authz, wire
from relay.audit import AuditEvent, AuditSink, EventKind
from relay.audit_keys import load_signing_key, load_staff_public
from relay.audit_store import AuditStore, SegmentOpener
from relay.chokepoint import ChokePoint, Connection, RelayState, next_connection_id
from relay.errors import (
    AccessDenied,
    AuditError,
    AuditLogError,
    ConfigError,
    ErrorCode,
    RelayError,
)
from relay.home import FacilityHome, RelayConfig
from relay.identity import Listener
from relay.messages import ErrorFrame
from relay.pki import identity_from_der
from relay.registry import RegistrySnapshot, RegistryStore
from relay.review import HeldMessage
from relay.schedule import ScheduledClass, ScheduleStore
from relay.screen_media import restrict_ice_addresses
from relay.screen_session import ice_addresses
from relay.session import CloseRequest, Delivery, LiveSession, Outcome, SessionState

log = logging.getLogger("relay.server")

RELAY_KEY: web.AppKey[Relay] = web.AppKey("relay")
LISTENER_KEY: web.AppKey[Listener] = web.AppKey("listener", Listener)

WS_PATH = "/v1"
TICK_SECONDS = 1.0

_TLS_VERIFY_CODES = {
    9: ErrorCode.CERT_EXPIRED,  # certificate is not yet valid
    10: ErrorCode.CERT_EXPIRED,  # certificate has expired
}


def classify_tls_failure(exc: BaseException) -> tuple[ErrorCode, str]:
    """Map a server-side handshake failure to the refusal it means."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = _TLS_VERIFY_CODES.get(exc.verify_code, ErrorCode.UNKNOWN_CA)
        return code, exc.verify_message or str(exc)
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if "PEER_DID_NOT_RETURN_A_CERTIFICATE" in reason or "CERTIFICATE_REQUIRED" in reason:
            return ErrorCode.NO_CERTIFICATE, "no client certificate presented"
        return ErrorCode.TLS_FAILED, reason or str(exc)
    if isinstance(exc, TimeoutError):
        return ErrorCode.TLS_FAILED, "the TLS handshake did not finish in time"
    return ErrorCode.TLS_FAILED, f"{type(exc).__name__}: {exc}"


class _AlertingSSLProtocol(sslproto.SSLProtocol):
    """asyncio's server-side TLS, except that a refused handshake still sends its alert.

    asyncio drops the alert OpenSSL produces when it refuses a client certificate, so
    the client would see only a closed connection. Flushing it first lets the client
    say *why* (certificate required, unknown CA, expired).
    """

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            with contextlib.suppress(Exception):
                self._process_outgoing()  # type: ignore[attr-defined]
        super()._on_handshake_complete(handshake_exc)


async def _start_tls_server(
    transport: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    ctx: ssl.SSLContext,
    handshake_timeout: float,
) -> asyncio.Transport:
    """``loop.start_tls(server_side=True)`` with :class:`_AlertingSSLProtocol`."""
    loop = asyncio.get_running_loop()
    if not hasattr(sslproto.SSLProtocol, "_process_outgoing"):  # pragma: no cover
        tls = await loop.start_tls(
            transport, protocol, ctx, server_side=True, ssl_handshake_timeout=handshake_timeout
        )
        assert tls is not None
        return tls
    waiter: asyncio.Future[None] = loop.create_future()
    ssl_protocol = _AlertingSSLProtocol(
        loop,
        protocol,
        ctx,
        waiter,
        server_side=True,
        ssl_handshake_timeout=handshake_timeout,  # type: ignore[arg-type]
        call_connection_made=False,
    )
    transport.pause_reading()
    transport.set_protocol(ssl_protocol)
    made = loop.call_soon(ssl_protocol.connection_made, transport)
    resume = loop.call_soon(transport.resume_reading)
    try:
        await waiter
    except BaseException:
        made.cancel()
        resume.cancel()
        raise
    app_transport: asyncio.Transport = ssl_protocol._app_transport
    return app_transport


class _TLSAcceptor(asyncio.Protocol):
    """Accepts TCP, runs the TLS handshake, then hands the connection to aiohttp."""

    def __init__(
        self, relay: Relay, listener: Listener, ctx: ssl.SSLContext, web_server: web.Server
    ) -> None:
        self.relay = relay
        self.listener = listener
        self.ctx = ctx
        self.web_server = web_server
        self._early: list[bytes] = []
        self._early_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        self.relay._spawn(self._handshake(transport))

    async def _handshake(self, transport: asyncio.Transport) -> None:
        peername = transport.get_extra_info("peername")
        peer = _peer_text(peername)
        try:
            tls = await _start_tls_server(
                transport, self, self.ctx, self.relay.config.limits.tls_handshake_timeout_s
            )
        except (OSError, TimeoutError, ConnectionError, EOFError) as exc:
            transport.close()
            code, detail = classify_tls_failure(exc)
            await self.relay.record_tls_refusal(self.listener, peer, code, detail)
            return
        proto = self.web_server()
        tls.set_protocol(proto)
        proto.connection_made(tls)
        # With TLS 1.3 the client may send its request in the same flight as its
        # Finished message: hand over what arrived before aiohttp took over.
        for chunk in self._early:
            proto.data_received(chunk)
        self._early.clear()
        if self._early_eof:
            proto.eof_received()

    def data_received(self, data: bytes) -> None:
        self._early.append(data)

    def eof_received(self) -> bool | None:
        self._early_eof = True
        return None


def _peer_text(peername: Any) -> str:
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = peername[0], peername[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peername)


_FRAME_HEAD_SHORT = struct.Struct("!BB").pack
_FRAME_HEAD_MEDIUM = struct.Struct("!BBH").pack
_FRAME_HEAD_LONG = struct.Struct("!BBQ").pack
_BINARY_FIN = 0x82
_COALESCE_BYTES = 1 << 16
"""Most bytes of queued frames the writer hands to TLS in one write."""


def _binary_frame(payload: bytes) -> bytes:
    """One unmasked, uncompressed, final binary WebSocket frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        return _FRAME_HEAD_SHORT(_BINARY_FIN, n) + payload
    if n < 65536:
        return _FRAME_HEAD_MEDIUM(_BINARY_FIN, 126, n) + payload
    return _FRAME_HEAD_LONG(_BINARY_FIN, 127, n) + payload


class _CoalescingSender:
    """Writes several queued frames of one connection with a single TLS write.

    Why: sent one by one through ``WebSocketResponse.send_bytes``, every frame costs a
    TLS record and a ``send`` system call on the relay, and a record to decrypt and a
    read on the client; a receiver of a busy class gets many frames per turn of the
    event loop. The frames are the same bytes aiohttp would produce (server frames are
    never masked; the relay's WebSockets have compression off), only written together.

    This reaches into aiohttp's private writer (``ws._writer``: ``transport``,
    ``protocol``, ``_closing``) and flow control (``protocol._drain_helper``), so
    :meth:`detect` checks every attribute it uses and returns None when one is missing
    or the WebSocket compresses or masks; the writer then sends frame by frame through
    the public API. Flow control is kept: nothing is written while the transport is
    paused (the writer waits for it to drain, frames wait in the bounded queue), and a
    closing WebSocket is never written to.
    """

    __slots__ = ("protocol", "transport", "writer", "ws")

    def __init__(self, ws: web.WebSocketResponse, writer: Any, transport: Any, protocol: Any):
        self.ws = ws
        self.writer = writer
        self.transport = transport
        self.protocol = protocol

    @classmethod
    def detect(cls, ws: web.WebSocketResponse) -> _CoalescingSender | None:
        writer = getattr(ws, "_writer", None)
        if writer is None or ws.compress:
            return None
        transport = getattr(writer, "transport", None)
        protocol = getattr(writer, "protocol", None)
        if (
            getattr(writer, "use_mask", True) is not False
            or getattr(writer, "compress", 1) != 0
            or not isinstance(getattr(writer, "_closing", None), bool)
            or not callable(getattr(transport, "write", None))
            or not callable(getattr(transport, "is_closing", None))
            or not isinstance(getattr(protocol, "writing_paused", None), bool)
            or not callable(getattr(protocol, "_drain_helper", None))
        ):
            return None
        return cls(ws, writer, transport, protocol)

    async def send(self, frames: list[bytes]) -> None:
        """Send ``frames`` in order, after any backpressure has eased."""
        if self.protocol.writing_paused:
            await self.protocol._drain_helper()
        if self.ws.closed or self.writer._closing or self.transport.is_closing():
            raise ConnectionResetError("the WebSocket is closing")
        if len(frames) == 1:
            self.transport.write(_binary_frame(frames[0]))
        else:
            self.transport.write(b"".join([_binary_frame(f) for f in frames]))


_WriterItem = bytes | tuple[bytes, ...] | CloseRequest


@dataclass(eq=False, slots=True)
class _ConnIO:
    """One connection's bounded send queue and the writer task that drains it.

    A plain deque with a wake-up future rather than :class:`asyncio.Queue`: it is on the
    path of every delivered frame, and the writer takes everything queued at once.
    """

    conn: Connection
    ws: web.WebSocketResponse
    limit: int
    """``send_queue_limit``: queued items beyond it disconnect the receiver."""
    items: deque[_WriterItem] = field(default_factory=deque)
    wakeup: asyncio.Future[None] | None = None
    writer: asyncio.Task[None] | None = None
    closing: bool = False

    def enqueue(self, item: _WriterItem) -> None:
        if self.closing:
            return
        items = self.items
        if len(items) >= self.limit:
            # A receiver too slow to keep up: disconnect it; it resumes from history.
            items.clear()
            item = CloseRequest(self.conn.id, ErrorCode.LIMIT_EXCEEDED, "receiver too slow")
        if isinstance(item, CloseRequest):
            self.closing = True
        items.append(item)
        wakeup = self.wakeup
        if wakeup is not None:
            self.wakeup = None
            if not wakeup.done():
                wakeup.set_result(None)

    async def write(self) -> None:
        ws = self.ws
        items = self.items
        fast = _CoalescingSender.detect(ws)
        loop = asyncio.get_running_loop()
        while True:
            if not items:
                self.wakeup = wakeup = loop.create_future()
                await wakeup
                continue
            # Take what is queued now, up to _COALESCE_BYTES, and send it together;
            # the rest stays queued (and counts against the limit).
            frames: list[bytes] = []
            size = 0
            close: CloseRequest | None = None
            while items and size < _COALESCE_BYTES:
                item = items.popleft()
                if isinstance(item, CloseRequest):
                    close = item
                    break
                if isinstance(item, tuple):
                    frames.extend(item)
                    size += sum(len(f) for f in item)
                else:
                    frames.append(item)
                    size += len(item)
            try:
                if fast is not None:
                    if frames:
                        await fast.send(frames)
                else:
                    for frame in frames:
                        await ws.send_bytes(frame)
            except (ConnectionError, RuntimeError):
                return
            if close is not None:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.close(code=close.code.number, message=close.code.slug.encode())
                return


_Decided = tuple[Awaitable[None], Outcome]


@dataclass(eq=False, slots=True)
class _SessionIO:
    """One class's outbox: decided outcomes, in order, waiting for their audit receipts."""

    session: LiveSession
    limit: int
    """``outbox_limit``: a sender waits while this many outcomes are undelivered."""
    items: deque[_Decided] = field(default_factory=deque)
    wakeup: asyncio.Future[None] | None = None
    room: asyncio.Future[None] | None = None
    """Senders waiting for the outbox to drain to the limit."""
    worker: asyncio.Task[None] | None = None

    def append(self, decided: _Decided) -> None:
        self.items.append(decided)
        wakeup = self.wakeup
        if wakeup is not None:
            self.wakeup = None
            if not wakeup.done():
                wakeup.set_result(None)

    async def drained(self) -> None:
        """Wait until no more than ``limit`` outcomes are undelivered."""
        while len(self.items) > self.limit:
            if self.room is None or self.room.done():
                self.room = asyncio.get_running_loop().create_future()
            await asyncio.shield(self.room)

    async def get(self) -> _Decided:
        items = self.items
        while not items:
            self.wakeup = wakeup = asyncio.get_running_loop().create_future()
            await wakeup
        decided = items.popleft()
        room = self.room
        if room is not None and len(items) <= self.limit:
            self.room = None
            if not room.done():
                room.set_result(None)
        return decided


@dataclass(slots=True)
class BoundAddresses:
    outside: tuple[str, int]
    inside: tuple[str, int]

    @property
    def outside_url(self) -> str:
        return f"wss://{_url_host(self.outside[0])}:{self.outside[1]}"

    @property
    def inside_url(self) -> str:
        return f"wss://{_url_host(self.inside[0])}:{self.inside[1]}"


def _url_host(host: str) -> str:
    if host in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::"):  # noqa: S104
        return "localhost"
    return f"[{host}]" if ":" in host else host


class Relay:
    """One running relay. Use :func:`running_relay` or :func:`serve`."""

    def __init__(
        self,
        home: FacilityHome,
        config: RelayConfig,
        *,
        audit: AuditSink | None = None,
        policy: PolicyEngine | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.home = home
        self.config = config
        self.clock = clock
        self.registry_store = RegistryStore(home)
        self.schedule_store = ScheduleStore(home)
        policy = policy or load_policy(home.policy_toml)
        # Opened last: it takes the log's writer lock, released by stop().
        self.audit: AuditSink = audit or open_audit_store(home, config, clock)
        self.state = RelayState(
            limits=config.limits,
            registry=self._registry,
            schedule=self._schedule,
            policy=policy,
            join_early=config.join_early,
            join_late=config.join_late,
            screen_settings=config.screen,
        )
        self.chokepoint = ChokePoint(self.state, self.audit, self, clock=clock)
        self.conns: dict[int, _ConnIO] = {}
        self.session_io: dict[str, _SessionIO] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._servers: list[asyncio.Server] = []
        self._runners: list[web.AppRunner] = []
        self._registry_seen: RegistrySnapshot | None = None
        self.addresses: BoundAddresses | None = None
        self._stopping = False

    # -- snapshots -----------------------------------------------------------------------

    def _registry(self) -> RegistrySnapshot:
        return self.registry_store.load_if_changed()

    def _schedule(self) -> dict[str, ScheduledClass]:
        return dict(self.schedule_store.load_if_changed())

    # -- lifecycle -----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def start(
        self, outside: tuple[str, int] | None = None, inside: tuple[str, int] | None = None
    ) -> BoundAddresses:
        self._registry_seen = self._registry()
        self._schedule()
        bound = []
        for listener, addr in (
            (Listener.OUTSIDE, outside or self.config.outside_bind),
            (Listener.INSIDE, inside or self.config.inside_bind),
        ):
            bound.append(await self._listen(listener, addr))
        self.addresses = BoundAddresses(bound[0], bound[1])
        # Screen-share media goes only through the listener addresses (no STUN/TURN).
        media_addresses = ice_addresses(bound)
        if media_addresses is not None:
            restrict_ice_addresses(media_addresses)
        self._spawn(self._ticker())
        await self.record(
            AuditEvent(
                kind=EventKind.RELAY_STARTED,
                time=self.clock(),
                detail=f"outside {bound[0]}, inside {bound[1]}, policy {self.state.policy.version}",
            )
        )
        return self.addresses

    async def _listen(self, listener: Listener, addr: tuple[str, int]) -> tuple[str, int]:
        app = web.Application()
        app[RELAY_KEY] = self
        app[LISTENER_KEY] = listener
        app.router.add_get(WS_PATH, _ws_handler)
        app.router.add_get("/", _index_handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        web_server = runner.server
        assert web_server is not None
        ctx = self.home.server_ssl_context(listener)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _TLSAcceptor(self, listener, ctx, web_server), addr[0], addr[1]
        )
        self._servers.append(server)
        sockname = server.sockets[0].getsockname()
        return (str(sockname[0]), int(sockname[1]))

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        for server in self._servers:
            server.close()
        for io in list(self.conns.values()):
            io.enqueue(CloseRequest(io.conn.id, ErrorCode.SHUTTING_DOWN, "the relay is stopping"))
        writers = [io.writer for io in self.conns.values() if io.writer is not None]
        if writers:
            await asyncio.wait(writers, timeout=2.0)
        for runner in self._runners:
            await runner.cleanup()
        with contextlib.suppress(AuditError):
            await self.chokepoint.screens.close()
        with contextlib.suppress(AuditError):
            await self.chokepoint.expire_all_holds("the relay stopped before review")
            await self.record(AuditEvent(kind=EventKind.RELAY_STOPPED, time=self.clock()))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sio in self.session_io.values():
            if sio.worker is not None:
                sio.worker.cancel()
        await self.audit.close()

    async def record(self, event: AuditEvent) -> None:
        await self.audit.submit((event,))

    async def record_tls_refusal(
        self, listener: Listener, peer: str, code: ErrorCode, detail: str
    ) -> None:
        log.info("TLS refused on %s from %s: %s (%s)", listener.value, peer, code.slug, detail)
        with contextlib.suppress(AuditError):
            await self.record(
                AuditEvent(
                    kind=EventKind.TLS_REFUSED,
                    time=self.clock(),
                    peer=peer,
                    decision="refused",
                    error=code.slug,
                    detail=f"{listener.value} listener: {detail}",
                )
            )

    # -- delivery (the choke point's Deliverer) -----------------------------------------------

    def deliver(
        self, session: LiveSession | None, receipt: Awaitable[None], outcome: Outcome
    ) -> Awaitable[None] | None:
        if session is None:
            return self._deliver_direct(receipt, outcome)
        sio = self.session_io.get(session.id)
        if sio is None or sio.session is not session:
            sio = self._session_io(session)
        # Queued at once, so outcomes reach the outbox in the order they were decided;
        # a sender that filled it then waits until it drains.
        sio.append((receipt, outcome))
        return sio.drained() if len(sio.items) > sio.limit else None

    async def _deliver_direct(self, receipt: Awaitable[None], outcome: Outcome) -> None:
        try:
            await receipt
        except AuditError as exc:
            self._audit_failed(outcome, exc)
            return
        self._apply(outcome)

    def _session_io(self, session: LiveSession) -> _SessionIO:
        sio = self.session_io.get(session.id)
        if sio is None or sio.session is not session:
            sio = _SessionIO(session, self.config.limits.outbox_limit)
            sio.worker = self._spawn(self._outbox_worker(sio))
            self.session_io[session.id] = sio
        return sio

    async def _outbox_worker(self, sio: _SessionIO) -> None:
        while True:
            receipt, outcome = await sio.get()
            try:
                await receipt
            except AuditError as exc:
                self._fail_closed(sio.session, exc)
                continue
            self._apply(outcome)

    def _apply(self, outcome: Outcome) -> None:
        conns = self.conns
        for d in outcome.deliveries:
            for cid in d.conns:
                io = conns.get(cid)
                if io is not None:
                    io.enqueue((d.frame, *d.more) if d.more else d.frame)
        for close in outcome.closes:
            io = conns.get(close.conn)
            if io is not None:
                io.enqueue(close)

    def _fail_closed(self, session: LiveSession, exc: AuditError) -> None:
        if session.state is SessionState.OPEN:
            log.critical("class %s paused: %s", session.id, exc)
            frame, conns = session.pause(str(exc), self.clock())
            self._apply(Outcome(deliveries=(Delivery(frame, conns),)))
            # Its screen shares stop too: their video could not be recorded.
            self._spawn(self._stop_shares(session, f"the audit log failed: {exc}"))

    async def _stop_shares(self, session: LiveSession, reason: str) -> None:
        with contextlib.suppress(AuditError):
            await self.chokepoint.screens.stop_session(session, reason)

    def _audit_failed(self, outcome: Outcome, exc: AuditError) -> None:
        """Nothing of ``outcome`` is delivered; its receivers are told why and cut off."""
        conns = sorted({c for d in outcome.deliveries for c in d.conns})
        log.critical("audit failure, %d connection(s) refused: %s", len(conns), exc)
        code = ErrorCode.AUDIT_UNAVAILABLE
        notice = ErrorFrame(code=code.number, error=code.slug, text=code.text(str(exc)))
        frame = wire.encode_server(notice)
        self._apply(
            Outcome(
                deliveries=(Delivery(frame, tuple(conns)),),
                closes=tuple(CloseRequest(c, code, str(exc)) for c in conns),
            )
        )

    # -- administration --------------------------------------------------------------------

    async def revoke(self, name: str, reason: str) -> int:
        """Re-read the registry and cut off every live connection of ``name``."""
        self._registry_seen = self._registry()
        cut = 0
        for io in list(self.conns.values()):
            if io.conn.ident.name == name:
                await self.chokepoint.disconnect(
                    io.conn, ErrorCode.REVOKED, reason, EventKind.REVOKED
                )
                cut += 1
        if cut == 0:
            await self.record(
                AuditEvent(
                    kind=EventKind.REVOKED,
                    time=self.clock(),
                    actor=name,
                    detail=reason or "revoked",
                )
            )
        return cut

    async def reload(self) -> str:
        """Re-read registry, schedule and policy (``reload``, SIGHUP)."""
        self._registry_seen = self._registry()
        self._schedule()
        await self._recheck_connections()
        try:
            version = await self.reload_policy()
            policy = f"policy {version}"
        except ConfigError as exc:
            policy = f"the policy was NOT reloaded ({exc}); policy {self.state.policy.version} "
            policy += "stays in force"
        detail = f"registry and schedule reloaded; {policy}"
        await self.record(AuditEvent(kind=EventKind.RELOADED, time=self.clock(), detail=detail))
        return detail

    async def reload_policy(self) -> str:
        """Re-read policy.toml. An invalid file is refused (:class:`ConfigError`, recorded)
        and the policy in force stays: the relay never runs without a good policy."""
        old = self.state.policy.version
        try:
            policy = load_policy(self.home.policy_toml)
        except ConfigError as exc:
            log.error("policy reload refused, policy %s stays in force: %s", old, exc)
            await self.record(
                AuditEvent(
                    kind=EventKind.POLICY_REJECTED,
                    time=self.clock(),
                    decision="refused",
                    policy_version=old,
                    detail=f"{exc}; policy {old} stays in force",
                )
            )
            raise
        self.state.use_policy(policy)
        log.info("policy %s in force (was %s)", policy.version, old)
        await self.record(
            AuditEvent(
                kind=EventKind.POLICY_RELOADED,
                time=self.clock(),
                policy_version=policy.version,
                detail=f"policy {policy.version} replaces {old}"
                if policy.version != old
                else f"policy {old} re-read, unchanged",
            )
        )
        return policy.version

    async def list_holds(self, session: str | None, by: str) -> tuple[HeldMessage, ...]:
        """The administrator reads the held messages (of one class, or all).

        Shown only once the read is recorded (raises :class:`AuditError` otherwise).
        """
        holds = self.state.holds.pending(session)
        await self.record(self.chokepoint.listed(session, len(holds), by))
        return holds

    async def end_session(self, session_id: str, by: str, reason: str) -> bool:
        session = self.state.sessions.get(session_id)
        if session is None or session.state is SessionState.ENDED:
            return False
        await self.chokepoint.end_session(session, by, reason)
        return True

    def status(self) -> dict[str, Any]:
        return {
            "addresses": {
                "outside": self.addresses.outside_url if self.addresses else None,
                "inside": self.addresses.inside_url if self.addresses else None,
            },
            "connections": len(self.conns),
            "policy": self.state.policy.version,
            "audit_healthy": self.audit.healthy,
            "sessions": {
                sid: {"state": s.state.value, "present": [p.pid for p in s.roster()], "seq": s.seq}
                for sid, s in self.state.sessions.items()
            },
        }

    async def _recheck_connections(self) -> None:
        """Cut connections whose credential is no longer admitted (revoked, removed, expired)."""
        snapshot = self._registry()
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        for io in list(self.conns.values()):
            try:
                authz.check_connection(io.conn.ident, io.conn.listener, snapshot, now)
            except AccessDenied as refusal:
                kind = (
                    EventKind.REVOKED
                    if refusal.code is ErrorCode.REVOKED
                    else EventKind.CONNECTION_REFUSED
                )
                await self.chokepoint.disconnect(io.conn, refusal.code, refusal.detail, kind)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                await self._tick()
            except RelayError as exc:
                log.error("periodic check failed: %s", exc)
            except Exception:
                log.exception("periodic check failed")

    async def _tick(self) -> None:
        snapshot = self._registry()
        if snapshot is not self._registry_seen:
            self._registry_seen = snapshot
            await self._recheck_connections()
        else:
            # Certificates also expire while connected.
            now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
            for io in list(self.conns.values()):
                if now > io.conn.ident.not_after:
                    await self.chokepoint.disconnect(
                        io.conn,
                        ErrorCode.CERT_EXPIRED,
                        "the certificate expired",
                        EventKind.CONNECTION_CLOSED,
                    )
        await self.chokepoint.expire_holds()
        now_ts = self.clock()
        late = self.config.join_late.total_seconds()
        for session in list(self.state.sessions.values()):
            if session.state is SessionState.ENDED:
                continue
            if now_ts > session.info.end + late:
                await self.chokepoint.end_session(
                    session, "relay", "the scheduled class time is over"
                )
            elif session.state is SessionState.PAUSED and await self.audit.recover():
                log.warning("class %s resumed: the audit log is writable again", session.id)
                await self.chokepoint.resume_session(session)


async def _index_handler(request: web.Request) -> web.Response:
    return web.Response(
        text="classroom-relay: connect a client over WebSocket at /v1 "
        f"(subprotocol {wire.SUBPROTOCOL}); see docs/protocol.md\n"
    )


async def _ws_handler(request: web.Request) -> web.StreamResponse:
    relay = request.app[RELAY_KEY]
    listener = request.app[LISTENER_KEY]
    limits = relay.config.limits
    transport = request.transport
    peer = _peer_text(transport.get_extra_info("peername") if transport else None)
    ssl_object = transport.get_extra_info("ssl_object") if transport else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if der is None:  # pragma: no cover - the TLS context requires a certificate
        raise web.HTTPForbidden(text=ErrorCode.NO_CERTIFICATE.text())
    try:
        ident = identity_from_der(der)
    except AccessDenied as refusal:
        await relay.record_tls_refusal(listener, peer, refusal.code, refusal.detail)
        raise web.HTTPForbidden(text=refusal.code.text(refusal.detail)) from None
    ws = web.WebSocketResponse(
        protocols=(wire.SUBPROTOCOL,),
        compress=False,
        # Frames up to 4x the limit are read so the sender gets a clear refusal; larger
        # ones make aiohttp drop the connection before buffering them.
        max_msg_size=4 * limits.max_frame_bytes,
        heartbeat=limits.ping_interval_s,
        autoping=True,
    )
    await ws.prepare(request)
    conn = Connection(id=next_connection_id(), listener=listener, ident=ident, peer=peer)
    io = _ConnIO(conn, ws, limits.send_queue_limit)
    io.writer = asyncio.get_running_loop().create_task(io.write())
    relay.conns[conn.id] = io
    reason = "closed by the client"
    chokepoint = relay.chokepoint
    try:
        refused = await chokepoint.admit(conn, protocol=ws.ws_protocol)
        if refused is not None:
            reason = f"refused: {refused.slug}"
            return ws
        try:
            first = await ws.receive(timeout=limits.hello_timeout_s)
        except TimeoutError:
            await chokepoint.refuse_frame(
                conn, ErrorCode.IDLE_TIMEOUT, f"no 'hello' within {limits.hello_timeout_s:g} s"
            )
            reason = "no hello"
            return ws
        msg = first
        while True:
            if msg.type is WSMsgType.BINARY:
                await chokepoint.process(conn, msg.data)
            elif msg.type is WSMsgType.TEXT:
                await chokepoint.refuse_frame(conn, ErrorCode.TEXT_FRAME, "a text frame was sent")
            elif msg.type is WSMsgType.ERROR:
                exc = ws.exception()
                if getattr(exc, "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
                    await chokepoint.refuse_frame(
                        conn,
                        ErrorCode.LIMIT_EXCEEDED,
                        f"frame larger than max_frame_bytes={limits.max_frame_bytes}",
                    )
                reason = f"connection error: {exc}"
                break
            else:  # CLOSE, CLOSING, CLOSED
                if conn.leaving:
                    reason = "left the class"
                break
            if io.closing:
                break
            msg = await ws.receive()
    finally:
        with contextlib.suppress(AuditError, RelayError):
            await chokepoint.closed(conn, reason)
        if not io.closing:
            io.enqueue(CloseRequest(conn.id, ErrorCode.SHUTTING_DOWN, reason))
        if io.writer is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(io.writer), timeout=2.0)
            io.writer.cancel()
        relay.conns.pop(conn.id, None)
    return ws


def open_audit_store(
    home: FacilityHome,
    config: RelayConfig,
    clock: Callable[[], float] = time.time,
    opener: SegmentOpener | None = None,
) -> AuditStore:
    """The facility's audit log, opened for writing (repairs a torn tail; see audit_store)."""
    try:
        signing, staff = load_signing_key(home.root), load_staff_public(home.root)
    except AuditLogError as exc:
        raise AuditError(f"the audit log cannot be opened: {exc}") from None
    return AuditStore(
        home.audit_dir,
        signing_key=signing,
        staff_public=staff,
        sink_path=home.checkpoint_sink(config),
        settings=config.audit,
        clock=clock,
        **({"opener": opener} if opener is not None else {}),
    )


@contextlib.asynccontextmanager
async def running_relay(
    home: FacilityHome,
    *,
    outside: tuple[str, int] | None = None,
    inside: tuple[str, int] | None = None,
    audit: AuditSink | None = None,
    control: bool = True,
) -> AsyncIterator[Relay]:
    """Start a relay (and its control socket) for the duration of the ``async with``."""
    from relay.control import control_server

    relay = Relay(home, home.load_config(), audit=audit)
    try:
        await relay.start(outside, inside)
        if control:
            async with control_server(relay):
                yield relay
        else:
            yield relay
    finally:
        await relay.stop()


def serve(
    home: FacilityHome, *, outside: tuple[str, int] | None, inside: tuple[str, int] | None
) -> int:
    """Run the relay until SIGINT or SIGTERM. Returns the process exit code."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    home.require()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with running_relay(home, outside=outside, inside=inside) as relay:
            reloads: set[asyncio.Task[None]] = set()

            async def reload_on_hangup() -> None:
                try:
                    log.info("SIGHUP: %s", await relay.reload())
                except RelayError as exc:
                    log.error("SIGHUP: reload failed: %s", exc)

            def hangup() -> None:
                task = loop.create_task(reload_on_hangup())
                reloads.add(task)
                task.add_done_callback(reloads.discard)

            loop.add_signal_handler(signal.SIGHUP, hangup)
            addrs = relay.addresses
            assert addrs is not None
            print(
                f"classroom-relay: serving {relay.config.facility}\n"
                f"  outside (instructors): {addrs.outside[0]}:{addrs.outside[1]}\n"
                f"  inside (machines, staff): {addrs.inside[0]}:{addrs.inside[1]}\n"
                f"  control socket: {home.control_socket}\n"
                f"  policy: {relay.state.policy.version} (reload: SIGHUP or "
                "'classroom-relay policy reload')\n"
                "Stop with Ctrl-C.",
                flush=True,
            )
            await stop.wait()
        print("classroom-relay: stopped", flush=True)

    asyncio.run(main())
    return 0


__all__ = ["BoundAddresses", "Relay", "classify_tls_failure", "running_relay", "serve"]
