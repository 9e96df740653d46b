"""The async client both classroom-relay clients are built on.

:class:`RelayClient` holds one participant's place in one class: it connects over
WebSocket + mutual TLS 1.3 with a credential bundle, sends ``hello``, keeps the class
state (roster, raised hands, last sequence number), and reconnects with exponential
backoff when the connection drops, resuming from the last event it saw. Messages sent
while disconnected, or whose decision was not received, are resent with the same id
after reconnecting; the relay answers a resent id with its first decision, so nothing
is delivered twice. Events are deduplicated by sequence number.

Refusals that reconnecting cannot fix (revoked, not on the roster, class ended, ...)
end the client with a :class:`relay.errors.ClientError` carrying the relay's code and text.

The shared editor: :attr:`RelayClient.editor` is an :class:`relay.editor_client.EditorReplica`
kept in step with the relay. ``editor_sync`` loads a workspace; ``write_file``, ``insert``,
``delete``, ``create_file``, ``rename_file``, ``delete_file`` (or ``edit`` with any change)
send local changes and return the relay's acks. The relay's correction of a refused or
redacted change arrives before its ack and is applied to the replica, so after the call
the replica shows what the relay kept. A refused change leaves the replica holding what
no one else has, so the workspace is then reloaded from the relay. Editor updates,
presence and mode changes are also emitted as events (``next_event``).

Screen share (docs/protocol.md section 10): ``share_start(track)`` shares a video track
with the class (WebRTC through the relay, :mod:`relay.share_client`), ``share_watch``
receives a share, ``share_stop`` ends one, ``share_ask`` (instructor) asks a learner to
show their screen. ``share_started``, ``share_stopped`` and ``share_asked`` are emitted as
events and tracked in :attr:`RelayClient.shares` and :attr:`RelayClient.asked_until`.
aiortc is imported only when a share is first used.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import os
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from relay import wire
from relay.bundle import Bundle, load_bundle
from relay.editor_client import EditorReplica
from relay.errors import ClientError, ErrorCode, ProtocolError
from relay.limits import DEFAULT_LIMITS
from relay.messages import (
    Ack,
    AckStatus,
    AlertNotice,
    Bye,
    Channel,
    Chat,
    ChatEvent,
    ClientMessage,
    EditorLecture,
    EditorModeEvent,
    EditorPresence,
    EditorPresenceEvent,
    EditorShare,
    EditorState,
    EditorSync,
    EditorUpdate,
    EditorUpdateEvent,
    EndSession,
    ErrorFrame,
    Hand,
    HandEvent,
    HeldNotice,
    Hello,
    Holds,
    ParticipantInfo,
    PresenceChange,
    PresenceEvent,
    Review,
    Reviewed,
    ReviewList,
    ServerMessage,
    SessionEnded,
    ShareAnswer,
    ShareAsk,
    ShareAsked,
    ShareStart,
    ShareStarted,
    ShareStop,
    ShareStopped,
    ShareWatch,
    Welcome,
)

if TYPE_CHECKING:
    from aiortc.mediastreams import MediaStreamTrack

    from relay.share_client import ShareHandle

log = logging.getLogger("relay.client")

RETRYABLE = frozenset(
    {
        ErrorCode.SHUTTING_DOWN,
        ErrorCode.IDLE_TIMEOUT,
        ErrorCode.AUDIT_UNAVAILABLE,
        ErrorCode.LIMIT_EXCEEDED,
        ErrorCode.INTERNAL,
        ErrorCode.TOO_MANY_CONNECTIONS,
    }
)
"""Close codes after which the client reconnects; any other refusal is final."""

_TLS_ALERTS = {
    "CERTIFICATE_REQUIRED": ErrorCode.NO_CERTIFICATE,
    "UNKNOWN_CA": ErrorCode.UNKNOWN_CA,
    "CERTIFICATE_EXPIRED": ErrorCode.CERT_EXPIRED,
    "BAD_CERTIFICATE": ErrorCode.UNKNOWN_CA,
    "CERTIFICATE_UNKNOWN": ErrorCode.UNKNOWN_CA,
    "CERTIFICATE_REVOKED": ErrorCode.REVOKED,
}


def tls_refusal(exc: BaseException) -> ClientError | None:
    """Translate a TLS alert from the relay into the refusal it means, if it is one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return ClientError(
                "Refused: the relay's certificate could not be verified with the facility CA "
                f"in your bundle ({current.verify_message}). What to do: check the relay "
                "address (--relay) and that the bundle comes from this facility.",
                ErrorCode.TLS_FAILED,
            )
        if isinstance(current, ssl.SSLError):
            reason = (current.reason or str(current)).upper()
            for marker, code in _TLS_ALERTS.items():
                if marker in reason:
                    return ClientError(code.text("the relay refused the TLS handshake"), code)
        current = current.__cause__ or current.__context__ or getattr(current, "os_error", None)
    return None


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: exponential from ``initial`` to ``maximum``, with jitter."""

    initial: float = 0.2
    maximum: float = 10.0
    factor: float = 2.0
    attempts: int = 0
    """Give up after this many failed attempts in a row; 0 means never give up."""

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        return base * (0.5 + random.random() / 2)


class RelayClient:
    """One participant in one class. Use as ``async with RelayClient(...) as c:``."""

    def __init__(
        self,
        bundle_path: Path | str,
        session: str,
        *,
        relay_url: str | None = None,
        learner: str | None = None,
        pin: str | None = None,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        client_name: str = "classroom-relay-client",
        event_queue_limit: int = 100_000,
    ) -> None:
        self.bundle_path = Path(bundle_path)
        self.bundle: Bundle = load_bundle(self.bundle_path)
        self.session_id = session
        self.url = (relay_url or self.bundle.relay_url).rstrip("/") + "/v1"
        if not self.url.startswith("wss://"):
            raise ClientError(f"relay address {relay_url!r} must start with wss://")
        self.learner = learner
        self.pin = pin
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self.client_name = client_name
        try:
            Hello(id="check", session=session, learner=learner, pin=pin)
        except ValueError as exc:
            raise ClientError(f"cannot join class {session!r}: {exc}") from exc
        self._ssl = self.bundle.client_ssl_context(self.bundle_path)
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()
        self._pending: dict[str, tuple[ClientMessage, asyncio.Future[_Answer]]] = {}
        self._events: asyncio.Queue[ServerMessage] = asyncio.Queue(event_queue_limit)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._http: aiohttp.ClientSession | None = None
        self._runner: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._first_welcome: asyncio.Future[Welcome] | None = None
        self._closing = False
        self.welcome: Welcome | None = None
        self.last_seq = 0
        self.roster: dict[str, ParticipantInfo] = {}
        self.hands: set[str] = set()
        self.error: ClientError | None = None
        self.ended: SessionEnded | None = None
        self.reconnects = 0
        self._last_error: ClientError | None = None
        self.editor = EditorReplica()
        """The workspaces of the shared editor as this participant holds them."""
        self.editor_mode: EditorModeEvent | None = None
        """The last lecture mode and sharing the relay announced (None: off, nothing shared)."""
        self.editor_presence: dict[tuple[str, str], EditorPresenceEvent] = {}
        """(workspace, participant) -> where that participant's cursor last was."""
        self._synced: set[str] = set()
        self._editor_tasks: set[asyncio.Task[None]] = set()
        self.shares: dict[str, ShareStarted] = {}
        """Running shares this participant may watch (share id -> its share_started)."""
        self.asked_until: float | None = None
        """A learner: until when the instructor's ask to share the screen holds (or None)."""
        self.share_handles: dict[str, ShareHandle] = {}
        """The shares this client sends or watches now (share id -> handle)."""

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> RelayClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def me(self) -> ParticipantInfo | None:
        return self.welcome.you if self.welcome else None

    async def connect(self) -> Welcome:
        """Connect and join; returns the first welcome or raises :class:`ClientError`."""
        not_after = self.bundle.not_after
        if dt.datetime.now(dt.UTC) > not_after:
            code = ErrorCode.CERT_EXPIRED
            raise ClientError(code.text(f"your bundle expired {not_after.isoformat()}"), code)
        loop = asyncio.get_running_loop()
        self._http = aiohttp.ClientSession()
        self._first_welcome = loop.create_future()
        self._runner = loop.create_task(self._run())
        try:
            return await asyncio.shield(self._first_welcome)
        except BaseException:
            await self._shutdown()
            raise

    async def close(self, *, say_bye: bool = True) -> None:
        """Leave the class (``bye``) and close the connection."""
        if self._closing:
            return
        self._closing = True
        ws = self._ws
        if say_bye and ws is not None and not ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                await ws.send_bytes(wire.encode_client(Bye(id=self._new_id())))
                await asyncio.wait_for(ws.close(), timeout=2.0)
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._closing = True
        for task in list(self._editor_tasks):
            task.cancel()
        await self._end_handles("client", "the client closed")
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._http is not None:
            await self._http.close()
        failure = self.error or ClientError("the client was closed before the relay answered")
        for _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(failure)

    async def drop_connection(self) -> None:
        """Abruptly drop the current connection (the client reconnects and resumes).

        Meant for the demo and tests of resume; a real network drop does the same.
        """
        ws = self._ws
        if ws is not None:
            connection = ws._response.connection
            transport = connection.transport if connection is not None else None
            if transport is not None:
                transport.abort()

    # -- sending ---------------------------------------------------------------------------

    def _new_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    async def _request(self, msg: ClientMessage) -> Ack:
        answer = await self._ask(msg)
        if not isinstance(answer, Ack):
            raise ClientError(f"the relay answered '{msg.id}' with an unexpected frame")
        return answer

    async def _ask(self, msg: ClientMessage) -> _Answer:
        """Send ``msg`` (again after each reconnect) until the relay answers it."""
        if self.error is not None:
            raise self.error
        size = len(wire.encode_client(msg))
        if size > DEFAULT_LIMITS.max_frame_bytes:
            raise ClientError(
                f"the message was not sent: it is {size} bytes encoded and the protocol "
                f"limit is {DEFAULT_LIMITS.max_frame_bytes}. What to do: send it in parts."
            )
        fut: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        self._pending[msg.id] = (msg, fut)
        ws = self._ws
        if ws is not None and self._connected.is_set():
            with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                await ws.send_bytes(wire.encode_client(msg))
        return await fut

    async def chat(self, text: str, *, to: str | None = None) -> Ack:
        """Send a chat message; returns the relay's decision (delivered, refused, held)."""
        channel = Channel.DIRECT if to is not None else Channel.CLASS
        try:
            msg = Chat(id=self._new_id(), channel=channel, text=text, to=to)
        except ValueError as exc:
            raise ClientError(f"the message was not sent: {exc}") from exc
        if len(text) > DEFAULT_LIMITS.max_text_chars:
            raise ClientError(
                f"the message was not sent: it has {len(text)} characters and the limit is "
                f"{DEFAULT_LIMITS.max_text_chars}. What to do: send it in parts."
            )
        return await self._request(msg)

    async def hand(self, raised: bool, *, who: str | None = None) -> Ack:
        return await self._request(Hand(id=self._new_id(), raised=raised, who=who))

    async def end_session(self, reason: str) -> Ack:
        """Staff only: end the class for everyone."""
        return await self._request(EndSession(id=self._new_id(), reason=reason))

    async def review_list(self) -> Holds:
        """Staff only: the class's messages that wait for review.

        Raises :class:`ClientError` with the relay's reason when it refuses.
        """
        answer = await self._ask(ReviewList(id=self._new_id()))
        if isinstance(answer, Ack):
            raise ClientError(answer.text or "the relay refused to list held messages")
        if not isinstance(answer, Holds):
            raise ClientError("the relay answered the review list with an unexpected frame")
        return answer

    async def review(self, hold: str, *, approve: bool, reason: str = "") -> Ack:
        """Staff only: approve (deliver, marked as approved late) or reject a held message."""
        try:
            msg = Review(id=self._new_id(), hold=hold, approve=approve, reason=reason)
        except ValueError as exc:
            raise ClientError(f"nothing was decided: {exc}") from exc
        return await self._request(msg)

    # -- the shared editor -------------------------------------------------------------

    def synced(self, ws: str) -> bool:
        """True once ``ws`` was loaded from the relay (``editor_sync``)."""
        return ws in self._synced

    async def editor_sync(self, ws: str, *, fresh: bool = False) -> EditorState:
        """Load ``ws`` from the relay (Yjs sync): send the local state vector, apply what
        the relay answers, then send what the relay lacks of our changes, if anything.

        ``fresh`` (or a workspace whose last update could not be applied) reloads it
        from an empty document. Raises :class:`ClientError` when the relay refuses.
        """
        if fresh or self.editor.stale(ws):
            self.editor.reset(ws)
            self._synced.discard(ws)
        try:
            msg = EditorSync(id=self._new_id(), ws=ws, sv=self.editor.state_vector(ws))
        except ValueError as exc:
            raise ClientError(f"nothing was synced: {exc}") from exc
        answer = await self._ask(msg)
        if isinstance(answer, Ack):
            code = ErrorCode.by_number(answer.code) if answer.code is not None else None
            raise ClientError(answer.text or f"the relay refused to sync '{ws}'", code)
        if not isinstance(answer, EditorState):
            raise ClientError(f"the relay answered the sync of '{ws}' with an unexpected frame")
        # The state itself was applied when it arrived (in order with later updates).
        self._synced.add(ws)
        missing = self.editor.missing_at(ws, answer.sv)
        if missing is not None and len(missing) <= DEFAULT_LIMITS.max_bin_bytes:
            await self._send_update(ws, missing)
        elif missing is not None:
            log.warning(
                "changes of %s the relay lacks are too large to send (%d bytes); reloading",
                ws,
                len(missing),
            )
            self.editor.reset(ws)
            return await self.editor_sync(ws)
        return answer

    async def _send_update(self, ws: str, update: bytes) -> Ack:
        return await self._request(EditorUpdate(id=self._new_id(), ws=ws, update=update))

    async def send_updates(self, ws: str, updates: list[bytes]) -> list[Ack]:
        """Send updates already applied to the replica, one by one, in order.

        At the first refusal the rest are not sent (they depend on it) and the
        workspace is reloaded from the relay; the acks so far are returned.
        """
        acks: list[Ack] = []
        for update in updates:
            ack = await self._send_update(ws, update)
            acks.append(ack)
            if ack.status is AckStatus.REFUSED:
                await self._reload_after_refusal(ws)
                break
        return acks

    async def _reload_after_refusal(self, ws: str) -> None:
        try:
            await self.editor_sync(ws, fresh=True)
        except ClientError as exc:
            log.info("could not reload %s after a refused change: %s", ws, exc)

    async def edit(self, ws: str, change: Callable[[EditorReplica], list[bytes]]) -> list[Ack]:
        """Make ``change`` on the replica (e.g. ``lambda r: r.insert(ws, "a.py", 0, "x")``)
        and send the updates it returns; the relay's acks, in order.

        A workspace not loaded yet is synced first. Raises :class:`ClientError` (and
        :class:`relay.editor_client.ReplicaError` for an impossible change).
        """
        if self.error is not None:
            raise self.error
        if ws not in self._synced:
            await self.editor_sync(ws)
        return await self.send_updates(ws, change(self.editor))

    async def write_file(self, ws: str, name: str, text: str) -> list[Ack]:
        """Make file ``name`` of ``ws`` hold ``text`` (created if needed; minimal diff)."""
        return await self.edit(ws, lambda r: r.write_file(ws, name, text))

    async def create_file(self, ws: str, name: str, text: str = "") -> list[Ack]:
        return await self.edit(ws, lambda r: r.create_file(ws, name, text))

    async def insert(self, ws: str, name: str, index: int, text: str) -> list[Ack]:
        """Insert ``text`` at code point ``index`` of file ``name``."""
        return await self.edit(ws, lambda r: r.insert(ws, name, index, text))

    async def delete(self, ws: str, name: str, index: int, length: int) -> list[Ack]:
        return await self.edit(ws, lambda r: r.delete(ws, name, index, length))

    async def rename_file(self, ws: str, old: str, new: str) -> list[Ack]:
        return await self.edit(ws, lambda r: r.rename_file(ws, old, new))

    async def delete_file(self, ws: str, name: str) -> list[Ack]:
        return await self.edit(ws, lambda r: r.delete_file(ws, name))

    async def presence(self, ws: str, file: str | None, anchor: int = 0, head: int = 0) -> None:
        """Tell the others where the cursor is (fire and forget: no ack unless refused)."""
        try:
            msg = EditorPresence(id=self._new_id(), ws=ws, file=file, anchor=anchor, head=head)
        except ValueError as exc:
            raise ClientError(f"presence was not sent: {exc}") from exc
        ws_conn = self._ws
        if ws_conn is not None and self._connected.is_set():
            with contextlib.suppress(ConnectionError, RuntimeError, aiohttp.ClientError):
                await ws_conn.send_bytes(wire.encode_client(msg))

    async def lecture(self, on: bool) -> Ack:
        """Instructor: lecture mode on (class workspace read-only for learners) or off."""
        return await self._request(EditorLecture(id=self._new_id(), on=on))

    async def share(self, learner: str, shared: bool) -> Ack:
        """Instructor: show learner ``learner``'s workspace to the class, or stop."""
        name = learner.removeprefix("learner:")
        try:
            msg = EditorShare(id=self._new_id(), learner=name, shared=shared)
        except ValueError as exc:
            raise ClientError(f"nothing was changed: {exc}") from exc
        return await self._request(msg)

    # -- screen share ----------------------------------------------------------------

    async def share_start(self, track: MediaStreamTrack) -> ShareHandle:
        """Share ``track`` (video) through the relay; the handle of the running share.

        Raises :class:`ClientError` with the relay's reason when it refuses (a learner
        not asked, a share already running, ...).
        """
        from relay.share_client import apply_answer, publisher_offer

        handle, sdp = await publisher_offer(track)
        try:
            answer = await self._ask(ShareStart(id=self._new_id(), sdp=sdp))
            share = self._share_answer(answer, "share your screen")
            await apply_answer(handle, share.share, share.sdp)
        except BaseException:
            await handle.close()
            raise
        self.share_handles[share.share] = handle
        return handle

    async def share_watch(
        self, share_id: str, *, track_wait_s: float | None = None
    ) -> tuple[ShareHandle, MediaStreamTrack]:
        """Watch share ``share_id``: its handle and the video track received from the relay.

        Raises :class:`ClientError` when the relay refuses, or when no track arrives
        within ``track_wait_s`` seconds (default 10).
        """
        from relay.share_client import DEFAULT_TRACK_WAIT_S, apply_answer, viewer_offer

        handle, sdp, arrived = await viewer_offer()
        try:
            try:
                msg = ShareWatch(id=self._new_id(), share=share_id, sdp=sdp)
            except ValueError as exc:
                raise ClientError(f"nothing was watched: {exc}") from exc
            answer = await self._ask(msg)
            share = self._share_answer(answer, f"watch share '{share_id}'")
            await apply_answer(handle, share.share, share.sdp)
            wait = DEFAULT_TRACK_WAIT_S if track_wait_s is None else track_wait_s
            try:
                track = await asyncio.wait_for(arrived, wait)
            except TimeoutError:
                raise ClientError(
                    f"the relay answered but sent no video for share '{share_id}' within {wait:g} s"
                ) from None
        except BaseException:
            await handle.close()
            raise
        handle.track = track
        old = self.share_handles.pop(share.share, None)
        if old is not None:
            await old.close()
        self.share_handles[share.share] = handle
        return handle, track

    async def share_stop(self, share_id: str, reason: str = "") -> Ack:
        """End share ``share_id`` (your own; the instructor or staff: any in the class)."""
        try:
            msg = ShareStop(id=self._new_id(), share=share_id, reason=reason)
        except ValueError as exc:
            raise ClientError(f"nothing was stopped: {exc}") from exc
        ack = await self._request(msg)
        if ack.status is AckStatus.DELIVERED:
            await self._end_handle(share_id, self.me.pid if self.me else "client", reason)
        return ack

    async def share_ask(self, learner: str) -> Ack:
        """Instructor: ask learner ``learner`` (l1001 or learner:l1001) to share their screen."""
        name = learner.removeprefix("learner:")
        try:
            msg = ShareAsk(id=self._new_id(), learner=name)
        except ValueError as exc:
            raise ClientError(f"nothing was asked: {exc}") from exc
        return await self._request(msg)

    @staticmethod
    def _share_answer(answer: _Answer, what: str) -> ShareAnswer:
        if isinstance(answer, Ack):
            code = ErrorCode.by_number(answer.code) if answer.code is not None else None
            raise ClientError(answer.text or f"the relay refused to let you {what}", code)
        if not isinstance(answer, ShareAnswer):
            raise ClientError(f"the relay answered the request to {what} with an unexpected frame")
        return answer

    async def _end_handle(self, share_id: str, by: str, reason: str) -> None:
        from relay.share_client import ShareEnd

        handle = self.share_handles.pop(share_id, None)
        if handle is not None:
            await handle.close(ShareEnd(by, reason))

    async def _end_handles(self, by: str, reason: str) -> None:
        for share_id in list(self.share_handles):
            await self._end_handle(share_id, by, reason)

    async def _share_event(self, event: ShareStarted | ShareStopped | ShareAsked) -> None:
        if isinstance(event, ShareStarted):
            self.shares[event.share] = event
        elif isinstance(event, ShareStopped):
            self.shares.pop(event.share, None)
            await self._end_handle(event.share, event.by, event.reason)
        else:
            self.asked_until = event.until
        await self._emit(event)

    def _spawn(self, coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = asyncio.get_running_loop().create_task(coro())
        self._editor_tasks.add(task)
        task.add_done_callback(self._editor_tasks.discard)

    async def _resync_all(self) -> None:
        for ws in self.editor.workspaces():
            try:
                await self.editor_sync(ws)
            except ClientError as exc:
                log.info("could not re-sync %s after reconnecting: %s", ws, exc)

    def _resync_later(self, ws: str) -> None:
        async def again() -> None:
            try:
                await self.editor_sync(ws, fresh=True)
            except ClientError as exc:
                log.info("could not reload %s: %s", ws, exc)

        self._spawn(again)

    def _editor_event(self, event: ServerMessage) -> bool:
        """Apply an editor frame; False if it should not be shown (nothing changed)."""
        if isinstance(event, EditorUpdateEvent):
            try:
                ok = self.editor.apply(event.ws, event.update)
            except ValueError:
                return False
            if not ok:
                log.warning("an update of %s could not be applied; reloading it", event.ws)
                self._resync_later(event.ws)
            return True
        if isinstance(event, EditorPresenceEvent):
            self.editor_presence[(event.ws, event.who)] = event
            return True
        if isinstance(event, EditorModeEvent):
            before = self.editor_mode
            self.editor_mode = event
            if before is None:
                return event.lecture or bool(event.shared)
            return (before.lecture, before.shared) != (event.lecture, event.shared)
        return False

    # -- receiving -------------------------------------------------------------------------

    async def next_event(self, wait_s: float | None = None) -> ServerMessage:
        """The next chat, presence, hand, error or end event (each seq at most once).

        Raises :class:`TimeoutError` when nothing arrives within ``wait_s`` seconds.
        """
        if wait_s is None:
            return await self._events.get()
        return await asyncio.wait_for(self._events.get(), wait_s)

    def drain_events(self) -> list[ServerMessage]:
        """The events that have arrived and were not taken yet (without waiting)."""
        out: list[ServerMessage] = []
        while not self._events.empty():
            out.append(self._events.get_nowait())
        return out

    async def events(self) -> AsyncIterator[ServerMessage]:
        while True:
            if self._events.empty() and self._runner is not None and self._runner.done():
                return
            get = asyncio.ensure_future(self._events.get())
            waiters: set[asyncio.Future[object]] = {get}  # type: ignore[arg-type]
            if self._runner is not None:
                waiters.add(self._runner)  # type: ignore[arg-type]
            try:
                done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not get.done():
                    # Cancelled while waiting: do not let the pending get swallow an event.
                    get.cancel()
            if get in done:
                yield get.result()
            else:
                get.cancel()
                while not self._events.empty():
                    yield self._events.get_nowait()
                return

    @property
    def finished(self) -> bool:
        return self._runner is not None and self._runner.done()

    # -- the connection loop ---------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._closing:
                try:
                    await self._session_once()
                    attempt = 0
                except ClientError as exc:
                    if exc.code is not None and exc.code not in RETRYABLE:
                        self._fail(exc)
                        return
                    last: ClientError = exc
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    refusal = tls_refusal(exc)
                    if refusal is not None:
                        self._fail(refusal)
                        return
                    last = ClientError(
                        f"could not reach the relay at {self.url}: {exc}. What to do: check "
                        "the address and that the relay is running."
                    )
                if self._closing or not self.reconnect or self.ended is not None:
                    if self.ended is None and self.error is None:
                        self._fail(last)
                    return
                attempt += 1
                if self.backoff.attempts and attempt > self.backoff.attempts:
                    self._fail(last)
                    return
                if (
                    self._first_welcome is not None
                    and not self._first_welcome.done()
                    and attempt > 1
                ):
                    # Never connected yet and failing again: report instead of retrying forever.
                    self._fail(last)
                    return
                delay = self.backoff.delay(attempt)
                log.info("connection lost (%s); reconnecting in %.1f s", last, delay)
                await asyncio.sleep(delay)
                self.reconnects += 1
        finally:
            self._connected.clear()

    def _fail(self, error: ClientError) -> None:
        self.error = error
        if self._first_welcome is not None and not self._first_welcome.done():
            self._first_welcome.set_exception(error)
        for _, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error)
        self._pending.clear()

    async def _session_once(self) -> None:
        assert self._http is not None
        async with self._http.ws_connect(
            self.url,
            protocols=(wire.SUBPROTOCOL,),
            ssl=self._ssl,
            compress=0,
            autoping=True,
            heartbeat=20.0,
            max_msg_size=wire.CLIENT_SIDE_LIMITS.max_frame_bytes,
        ) as ws:
            self._ws = ws
            try:
                await ws.send_bytes(
                    wire.encode_client(
                        Hello(
                            id=self._new_id(),
                            session=self.session_id,
                            learner=self.learner,
                            pin=self.pin,
                            resume_after=self.last_seq,
                            client=self.client_name,
                        )
                    )
                )
                await self._read(ws)
            finally:
                self._connected.clear()
                self._ws = None

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        close_code = None
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.CLOSE:
                # The code in the close frame itself: ws.close_code may already read 1006
                # when the relay dropped the connection right after its close frame.
                close_code = msg.data
                break
            if msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                break
            if msg.type is aiohttp.WSMsgType.ERROR:
                break
            if msg.type is not aiohttp.WSMsgType.BINARY:
                continue
            try:
                event = wire.decode_server(msg.data)
            except ProtocolError as exc:
                log.warning("ignored a frame the relay sent: %s", exc)
                continue
            if isinstance(event, ErrorFrame) and event.ref is None:
                # A notice about the connection or the class; a close usually follows.
                self._last_error = ClientError(event.text, ErrorCode.by_number(event.code))
                await self._emit(event)
                continue
            await self._handle(event, ws)
        if close_code is None:
            close_code = ws.close_code
        code = ErrorCode.by_number(close_code) if close_code else None
        if self.ended is not None:
            raise ClientError(self.ended.reason, ErrorCode.SESSION_ENDED)
        if code is not None:
            last = self._last_error
            text = str(last) if last is not None and last.code is code else code.text()
            raise ClientError(text, code)
        raise ClientError(f"the connection to the relay closed (code {close_code})")

    async def _handle(self, event: ServerMessage, ws: aiohttp.ClientWebSocketResponse) -> None:
        if isinstance(event, Welcome):
            if event.last_seq < self.last_seq:
                # The relay's history restarted (the relay was restarted): it replays all
                # it has, and sequence numbers count from there.
                log.warning(
                    "the relay's class history restarted (seq %d < %d)",
                    event.last_seq,
                    self.last_seq,
                )
                self.last_seq = 0
            resumed = self.welcome is not None
            if resumed:
                # The relay ended our shares and viewing when the old connection went; it
                # sends share_started again for the shares still running.
                self.shares.clear()
                await self._end_handles("relay", "the connection to the relay was lost")
            self.welcome = event
            self.roster = {p.pid: p for p in event.roster}
            self.hands = set(event.hands)
            if self._first_welcome is not None and not self._first_welcome.done():
                self._first_welcome.set_result(event)
            self._connected.set()
            # Resend everything that has no decision yet, with the same ids.
            for msg, fut in list(self._pending.values()):
                if not fut.done():
                    await ws.send_bytes(wire.encode_client(msg))
            if resumed and self.editor.workspaces():
                # Reconnected: catch up on what changed in the editor meanwhile.
                self._spawn(self._resync_all)
            return
        if isinstance(event, ShareAnswer):
            entry = self._pending.pop(event.ref, None)
            if entry is not None and not entry[1].done():
                entry[1].set_result(event)
            return
        if isinstance(event, ShareStarted | ShareStopped | ShareAsked):
            await self._share_event(event)
            return
        if isinstance(event, EditorState):
            entry = self._pending.pop(event.ref, None)
            with contextlib.suppress(ValueError):
                if not self.editor.apply(event.ws, event.update):
                    log.warning("the state of %s could not be applied", event.ws)
            if entry is not None and not entry[1].done():
                entry[1].set_result(event)
            return
        if isinstance(event, EditorUpdateEvent | EditorPresenceEvent | EditorModeEvent):
            if self._editor_event(event):
                await self._emit(event)
            return
        if isinstance(event, Ack | Holds):
            entry = self._pending.pop(event.ref, None)
            if entry is not None:
                if isinstance(event, Ack):
                    await self._own_message(entry[0], event)
                if not entry[1].done():
                    entry[1].set_result(event)
            return
        if isinstance(event, ErrorFrame):
            entry = self._pending.pop(event.ref or "", None)
            ack = Ack(
                ref=event.ref or "",
                status=AckStatus.REFUSED,
                code=event.code,
                error=event.error,
                text=event.text,
            )
            if entry is not None and not entry[1].done():
                entry[1].set_result(ack)
            return
        if isinstance(event, SessionEnded):
            self.ended = event
            await self._emit(event)
            return
        if isinstance(event, ChatEvent | PresenceChange | HandEvent):
            if event.seq <= self.last_seq:
                return  # already seen before a reconnect
            self.last_seq = event.seq
            welcome_seq = self.welcome.last_seq if self.welcome is not None else 0
            if event.seq <= welcome_seq:
                pass  # replayed history: the welcome already gave the current roster and hands
            elif isinstance(event, PresenceChange):
                if event.event is PresenceEvent.JOINED:
                    self.roster[event.who.pid] = event.who
                else:
                    self.roster.pop(event.who.pid, None)
            elif isinstance(event, HandEvent):
                (self.hands.add if event.raised else self.hands.discard)(event.who)
            await self._emit(event)
            return
        if isinstance(event, HeldNotice | Reviewed | AlertNotice):
            # Review traffic: not sequenced (a reconnect does not replay it).
            await self._emit(event)

    async def _own_message(self, msg: ClientMessage, ack: Ack) -> None:
        """The relay sends no echo of our own chat messages: show them from the ack."""
        if not isinstance(msg, Chat) or ack.status not in _SHOWN_OWN:
            return
        if ack.seq is None or ack.seq <= self.last_seq or self.me is None:
            return  # already seen, in a replay after a reconnect
        self.last_seq = ack.seq
        event = ChatEvent(
            seq=ack.seq,
            id=msg.id,
            sender=self.me.pid,
            channel=msg.channel,
            text=ack.redacted if ack.redacted is not None else msg.text,
            time=ack.time if ack.time is not None else time.time(),
            to=msg.to,
        )
        await self._emit(event)

    async def _emit(self, event: ServerMessage) -> None:
        await self._events.put(event)


_Answer = Ack | Holds | EditorState | ShareAnswer
"""What answers a request: an ack, the review list, a workspace's state, a share's answer."""

_SHOWN_OWN = frozenset({AckStatus.DELIVERED, AckStatus.REDACTED})
"""Acks of own chat messages that the others received (as sent, or redacted)."""


def describe_ack(ack: Ack) -> str:
    """One line for a person: what the relay decided about a message."""
    if ack.status is AckStatus.DELIVERED:
        return f"delivered (seq {ack.seq})"
    if ack.status is AckStatus.REDACTED:
        return f"delivered redacted (seq {ack.seq}): {ack.text}"
    if ack.status is AckStatus.HELD:
        return f"held for review (hold {ack.hold}): {ack.text}"
    return f"{ack.status.value}: {ack.text or ack.error}"
