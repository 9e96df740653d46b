"""Screen shares of the running relay: who may share and watch, and the WebRTC ends.

The choke point (``relay.chokepoint``) hands every ``share_*`` message here after
decoding and the class checks; :class:`ScreenShares` authorises it (role, the policy's
``may_share_screen``, whether the instructor asked, the class's share limit), makes the
relay's end of the WebRTC connection and returns an :class:`~relay.session.Outcome` (its
records first, then the frames to deliver). Media never goes around the relay: the
publisher's track ends at the relay, a :class:`relay.screen_media.Fanout` encodes it once
and every viewer's connection gets the same packets.

What the shares do by themselves later (a limit broken, the publisher gone, recording)
goes through ``submit``: the same audit-then-deliver path as everything else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import msgpack
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from policy.decisions import Allow
from policy.engine import PolicyEngine
from relay import wire
from relay.audit import AuditEvent, EventKind
from relay.errors import AccessDenied, ErrorCode
from relay.identity import Participant, ParticipantRole
from relay.messages import (
    Ack,
    AckStatus,
    ShareAnswer,
    ShareAsk,
    ShareAsked,
    ShareStart,
    ShareStarted,
    ShareStop,
    ShareStopped,
    ShareWatch,
)
from relay.screen_media import (
    CODEC,
    EncodedFrame,
    Fanout,
    FanoutStop,
    Thumbnail,
    ViewerTrack,
    ice_configuration,
    prefer_vp8,
    watch_keyframe_requests,
)
from relay.screen_settings import ScreenSettings
from relay.session import Delivery, LiveSession, Outcome

log = logging.getLogger("relay.screen")

ShareMessage = ShareStart | ShareWatch | ShareStop | ShareAsk
RELAY = "relay"


def check_offer(sdp: str, *, sending: bool) -> None:
    """Deny by default: exactly one video section, nothing else (no audio, no data)."""
    sections = [line.split()[0][2:] for line in sdp.splitlines() if line.startswith("m=")]
    if sections != ["video"]:
        found = ", ".join(sections) or "none"
        raise AccessDenied(
            ErrorCode.BAD_OFFER, f"the offer has media sections [{found}]; one video only"
        )
    directions = {"a=sendonly", "a=sendrecv", "a=recvonly", "a=inactive"}
    said = [line.strip() for line in sdp.splitlines() if line.strip() in directions]
    allowed = {"a=sendonly", "a=sendrecv"} if sending else {"a=recvonly", "a=sendrecv"}
    if said and not set(said) <= allowed:
        want = "send" if sending else "receive"
        raise AccessDenied(ErrorCode.BAD_OFFER, f"the video section must {want} video")


@dataclass(slots=True)
class _Viewer:
    pid: str
    conn: int
    pc: RTCPeerConnection
    track: ViewerTrack


@dataclass(slots=True)
class Share:
    id: str
    session: LiveSession
    publisher: Participant
    conn: int
    pc: RTCPeerConnection
    started: float
    for_class: bool
    """True: everyone in the class may watch; False: the instructor and staff only."""
    fanout: Fanout | None = None
    viewers: dict[int, _Viewer] = field(default_factory=dict)
    width: int = 0
    height: int = 0
    stopping: bool = False

    def may_watch(self, who: Participant) -> bool:
        if who.role is not ParticipantRole.LEARNER:
            return True
        return self.for_class and who.pid != self.publisher.pid


Submit = Callable[[LiveSession, Outcome], Awaitable[None]]


class ScreenShares:
    """Every screen share of the relay."""

    def __init__(
        self,
        settings: ScreenSettings,
        submit: Submit,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.submit = submit
        self.clock = clock
        self.shares: dict[str, Share] = {}
        self.asked: dict[tuple[str, str], float] = {}
        """(class, learner pid) -> until when the learner may start a share."""
        self._ids = itertools.count(1)
        self._tag = os.urandom(2).hex()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- queries ------------------------------------------------------------------------

    def of_session(self, session_id: str) -> list[Share]:
        return [s for s in self.shares.values() if s.session.id == session_id]

    def running_for(self, session: LiveSession, who: Participant) -> tuple[bytes, ...]:
        """``share_started`` frames of the running shares ``who`` may watch."""
        return tuple(
            wire.encode_server(ShareStarted(s.id, s.publisher.pid, s.started, s.width, s.height))
            for s in self.of_session(session.id)
            if s.may_watch(who) and s.publisher.pid != who.pid and not s.stopping
        )

    def _audience(self, share: Share, exclude: int = 0) -> tuple[int, ...]:
        return share.session.conns_where(share.may_watch, exclude=exclude)

    def _ack(self, session: LiveSession, who: Participant, conn: int, ref: str) -> Delivery:
        ack = Ack(ref=ref, status=AckStatus.DELIVERED, seq=session.seq, time=self.clock())
        return session.answer(who.pid, conn, ack)

    # -- messages -----------------------------------------------------------------------

    async def handle(
        self,
        session: LiveSession,
        who: Participant,
        conn: int,
        msg: ShareMessage,
        policy: PolicyEngine,
    ) -> Outcome:
        """The outcome of one share message. Raises :class:`AccessDenied` to refuse it."""
        if isinstance(msg, ShareStart):
            return await self._start(session, who, conn, msg, policy)
        if isinstance(msg, ShareWatch):
            return await self._watch(session, who, conn, msg)
        if isinstance(msg, ShareStop):
            return await self._stop_asked(session, who, conn, msg)
        return self._ask(session, who, conn, msg)

    def _ask(self, session: LiveSession, who: Participant, conn: int, msg: ShareAsk) -> Outcome:
        if who.role is not ParticipantRole.INSTRUCTOR:
            raise AccessDenied(ErrorCode.NOT_PERMITTED, "only the instructor asks to see a screen")
        pid = f"learner:{msg.learner}"
        target = session.member_conn(pid)
        if msg.learner not in session.learners or target is None:
            raise AccessDenied(ErrorCode.UNKNOWN_RECIPIENT, f"'{pid}' is not in the class now")
        now = self.clock()
        until = now + self.settings.ask_valid_s
        self.asked[(session.id, pid)] = until
        record = session.event(
            EventKind.SCREEN_ASKED,
            now,
            who,
            recipient=pid,
            msg_id=msg.id,
            detail=f"asked {pid} to show their screen",
        )
        asked = ShareAsked(by=who.pid, time=now, until=until)
        deliveries = (
            self._ack(session, who, conn, msg.id),
            Delivery(wire.encode_server(asked), (target,)),
        )
        return Outcome((record,), deliveries)

    async def _start(
        self,
        session: LiveSession,
        who: Participant,
        conn: int,
        msg: ShareStart,
        policy: PolicyEngine,
    ) -> Outcome:
        now = self.clock()
        asked = self.asked.get((session.id, who.pid), 0.0) > now
        decision = policy.may_share_screen(who.role, asked)
        if not isinstance(decision, Allow):
            raise AccessDenied(ErrorCode.ROUTE_REFUSED, decision.reason)
        running = self.of_session(session.id)
        if any(s.publisher.pid == who.pid for s in running):
            raise AccessDenied(ErrorCode.SHARE_BUSY, "you are already sharing; stop that first")
        if len(running) >= self.settings.max_shares_per_session:
            limit = self.settings.max_shares_per_session
            raise AccessDenied(ErrorCode.SHARE_BUSY, f"max_shares_per_session={limit}")
        check_offer(msg.sdp, sending=True)
        share_id = f"{session.id}.s{next(self._ids)}-{self._tag}"
        pc = RTCPeerConnection(ice_configuration())
        share = Share(
            id=share_id,
            session=session,
            publisher=who,
            conn=conn,
            pc=pc,
            started=now,
            for_class=who.role is ParticipantRole.INSTRUCTOR,
        )
        arrived: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and not arrived.done():
                arrived.set_result(track)

        answer = cap_bitrate(await self._answer(pc, msg.sdp), self.settings.bitrate)
        self.shares[share_id] = share
        self.asked.pop((session.id, who.pid), None)
        if not arrived.done():
            await self._close_pc(pc)
            del self.shares[share_id]
            raise AccessDenied(ErrorCode.BAD_OFFER, "the offer carries no video track")
        self._start_fanout(share, arrived.result())
        audience = "the class" if share.for_class else "the instructor and staff"
        record = session.event(
            EventKind.SCREEN_STARTED,
            now,
            who,
            msg_id=msg.id,
            decision="delivered",
            rule=decision.rule,
            detail=f"share {share_id}; watched by {audience}; VP8",
        )
        started = ShareStarted(share=share_id, by=who.pid, time=now)
        frames = [Delivery(wire.encode_server(ShareAnswer(msg.id, share_id, answer)), (conn,))]
        audience_conns = self._audience(share, exclude=conn)
        if audience_conns:
            frames.append(Delivery(wire.encode_server(started), audience_conns))
        return Outcome((record,), tuple(frames))

    async def _answer(self, pc: RTCPeerConnection, offer: str) -> str:
        """The relay's answer to ``offer`` (ICE gathered on its own addresses only)."""
        try:
            async with asyncio.timeout(self.settings.answer_timeout_s):
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
                await pc.setLocalDescription(await pc.createAnswer())
        except (ValueError, TimeoutError, Exception) as exc:  # aiortc raises several types
            await self._close_pc(pc)
            if isinstance(exc, AccessDenied):
                raise
            raise AccessDenied(ErrorCode.BAD_OFFER, _short(exc)) from exc
        local = pc.localDescription
        assert local is not None
        return str(local.sdp)

    def _start_fanout(self, share: Share, track: MediaStreamTrack) -> None:
        settings = self.settings

        async def record_frame(frame: EncodedFrame) -> None:
            await self._record_frame(share, frame)

        def on_thumbnail(thumb: Thumbnail) -> None:
            self._spawn(self._record_thumbnail(share, thumb))

        def on_stop(stop: FanoutStop) -> None:
            self._spawn(self._stopped_by_media(share, stop))

        share.fanout = Fanout(
            track,
            settings.media_limits(),
            record_frame=record_frame,
            on_thumbnail=on_thumbnail,
            on_stop=on_stop,
            thumbnail_every_s=settings.thumbnail_every_s,
            clock=self.clock,
        )
        self._spawn(share.fanout.start())

        @share.pc.on("connectionstatechange")
        async def on_state() -> None:
            if share.pc.connectionState in ("failed", "closed"):
                await self.stop(share, RELAY, "the sharer's connection to the relay ended")

    async def _watch(
        self, session: LiveSession, who: Participant, conn: int, msg: ShareWatch
    ) -> Outcome:
        share = self.shares.get(msg.share)
        if share is None or share.session is not session or not share.may_watch(who):
            raise AccessDenied(ErrorCode.UNKNOWN_SHARE, f"'{msg.share}'")
        if who.pid == share.publisher.pid:
            raise AccessDenied(ErrorCode.UNKNOWN_SHARE, "you are the one sharing it")
        fanout = share.fanout
        if fanout is None or fanout.stopped is not None:
            raise AccessDenied(ErrorCode.UNKNOWN_SHARE, f"'{msg.share}' has ended")
        check_offer(msg.sdp, sending=False)
        old = share.viewers.pop(conn, None)
        if old is not None:
            await self._drop_viewer(share, old)
        pc = RTCPeerConnection(ice_configuration())
        await pc.setRemoteDescription(RTCSessionDescription(sdp=msg.sdp, type="offer"))
        transceivers = pc.getTransceivers()
        if len(transceivers) != 1:
            await self._close_pc(pc)
            raise AccessDenied(ErrorCode.BAD_OFFER, "the offer must have one video section")
        track = fanout.add_viewer()
        transceiver = transceivers[0]
        transceiver.direction = "sendonly"
        transceiver.sender.replaceTrack(track)
        prefer_vp8(transceiver)
        watch_keyframe_requests(transceiver.sender, fanout)
        try:
            async with asyncio.timeout(self.settings.answer_timeout_s):
                await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            fanout.remove_viewer(track)
            await self._close_pc(pc)
            raise AccessDenied(ErrorCode.BAD_OFFER, _short(exc)) from exc
        share.viewers[conn] = _Viewer(who.pid, conn, pc, track)
        local = pc.localDescription
        assert local is not None
        now = self.clock()
        record = session.event(
            EventKind.SCREEN_WATCHED,
            now,
            who,
            msg_id=msg.id,
            detail=f"share {share.id}",
        )
        answer = ShareAnswer(ref=msg.id, share=share.id, sdp=str(local.sdp))
        return Outcome((record,), (Delivery(wire.encode_server(answer), (conn,)),))

    async def _stop_asked(
        self, session: LiveSession, who: Participant, conn: int, msg: ShareStop
    ) -> Outcome:
        share = self.shares.get(msg.share)
        if share is None or share.session is not session:
            raise AccessDenied(ErrorCode.UNKNOWN_SHARE, f"'{msg.share}'")
        own = who.pid == share.publisher.pid
        if not own and who.role is ParticipantRole.LEARNER:
            raise AccessDenied(ErrorCode.NOT_PERMITTED, "only its sharer, the instructor or staff")
        reason = msg.reason or ("stopped by its sharer" if own else f"stopped by {who.pid}")
        outcome = await self._ending(share, who.pid, reason)
        return Outcome(deliveries=(self._ack(session, who, conn, msg.id),)) + outcome

    # -- ending -------------------------------------------------------------------------

    async def _ending(self, share: Share, by: str, reason: str) -> Outcome:
        """Stop ``share`` (its media and connections); the records and notices to send."""
        if share.stopping:
            return Outcome()
        share.stopping = True
        self.shares.pop(share.id, None)
        if share.fanout is not None:
            await share.fanout.stop(reason)
        for viewer in list(share.viewers.values()):
            await self._drop_viewer(share, viewer)
        await self._close_pc(share.pc)
        now = self.clock()
        record = AuditEvent(
            EventKind.SCREEN_STOPPED,
            now,
            share.session.id,
            by,
            detail=f"share {share.id}: {reason}",
        )
        stopped = ShareStopped(share=share.id, by=by, reason=reason, time=now)
        conns = set(self._audience(share)) | {share.conn}
        conns = {c for c in conns if c in share.session.connections()}
        deliveries = (Delivery(wire.encode_server(stopped), tuple(sorted(conns))),) if conns else ()
        return Outcome((record,), deliveries)

    async def stop(self, share: Share, by: str, reason: str) -> None:
        outcome = await self._ending(share, by, reason)
        if outcome.events:
            await self.submit(share.session, outcome)

    async def stop_session(self, session: LiveSession, reason: str) -> None:
        for share in self.of_session(session.id):
            await self.stop(share, RELAY, reason)

    async def stop_all(self, reason: str) -> None:
        for share in list(self.shares.values()):
            await self.stop(share, RELAY, reason)

    async def left(self, session: LiveSession, who: Participant, conn: int) -> None:
        """``who`` left the class on ``conn``: their share ends, their viewing too."""
        for share in self.of_session(session.id):
            if share.publisher.pid == who.pid and share.conn == conn:
                await self.stop(share, RELAY, f"{who.pid} left the class")
                continue
            viewer = share.viewers.pop(conn, None)
            if viewer is not None:
                await self._drop_viewer(share, viewer)

    async def _drop_viewer(self, share: Share, viewer: _Viewer) -> None:
        if share.fanout is not None:
            share.fanout.remove_viewer(viewer.track)
        await self._close_pc(viewer.pc)

    async def _close_pc(self, pc: RTCPeerConnection) -> None:
        with contextlib.suppress(Exception):
            await pc.close()

    async def _stopped_by_media(self, share: Share, stop: FanoutStop) -> None:
        await self.stop(share, RELAY, stop.reason)

    # -- recording ----------------------------------------------------------------------

    async def _record_frame(self, share: Share, frame: EncodedFrame) -> None:
        """Record one encoded frame; the fan-out sends it to viewers only afterwards."""
        share.width, share.height = frame.width, frame.height
        body = msgpack.packb([frame.time, frame.keyframe, frame.data], use_bin_type=True)
        record = AuditEvent(
            EventKind.SCREEN_MEDIA,
            frame.time,
            share.session.id,
            share.publisher.pid,
            detail=(
                f"share {share.id}: {CODEC} {frame.width}x{frame.height}, "
                f"{len(frame.data)} bytes" + (", keyframe" if frame.keyframe else "")
            ),
            content=base64.b64encode(body).decode("ascii"),
        )
        await self.submit(share.session, Outcome((record,)))

    async def _record_thumbnail(self, share: Share, thumb: Thumbnail) -> None:
        record = AuditEvent(
            EventKind.SCREEN_THUMBNAIL,
            thumb.time,
            share.session.id,
            share.publisher.pid,
            detail=f"share {share.id}: thumbnail {thumb.width}x{thumb.height} PNG",
            content=base64.b64encode(thumb.png).decode("ascii"),
        )
        await self._submit_record(share, record)

    async def _submit_record(self, share: Share, record: AuditEvent) -> None:
        try:
            await self.submit(share.session, Outcome((record,)))
        except Exception:
            log.exception("recording share %s failed; the share is stopped", share.id)
            await self.stop(share, RELAY, "the share could not be recorded")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        await self.stop_all("the relay is stopping")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def cap_bitrate(sdp: str, bits_per_s: int) -> str:
    """Ask the sharer to send at most ``bits_per_s``: ``b=AS`` (kbit/s) and ``b=TIAS``
    (bit/s) in the video section of the relay's answer (browsers obey them; the relay's
    own encoder enforces the limit on what viewers get either way)."""
    lines = sdp.split("\r\n")
    out: list[str] = []
    in_video = False
    for line in lines:
        if line.startswith("m="):
            in_video = line.startswith("m=video")
        if in_video and line.startswith("b="):
            continue  # ours replace any the answer had
        out.append(line)
        if in_video and line.startswith("c="):
            out.append(f"b=AS:{max(1, bits_per_s // 1000)}")
            out.append(f"b=TIAS:{bits_per_s}")
    return "\r\n".join(out)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def ice_addresses(binds: Sequence[tuple[str, int]]) -> list[str] | None:
    """The host addresses to gather ICE candidates on: the listeners' own, or None when a
    listener binds every address (then every host address is used)."""
    import ipaddress

    out: list[str] = []
    for host, _port in binds:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None  # a host name: let aioice enumerate
        if ip.is_unspecified:
            return None
        out.append(str(ip))
    return sorted(set(out))
