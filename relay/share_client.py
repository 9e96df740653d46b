"""The client's end of a screen share: WebRTC offers for ``share_start`` / ``share_watch``.

The client always offers and the relay answers (docs/protocol.md section 10). An offer is
complete when it is sent: aiortc gathers every ICE candidate inside
``setLocalDescription``, so there is no trickle ICE. No STUN or TURN server is used
(:func:`relay.screen_media.ice_configuration`); the media goes to the relay's own
addresses, which come in its answer over the authenticated WebSocket.

:class:`ShareHandle` is one share as this client takes part in it: as the one sharing
(``sending``) or as a viewer (``track`` is then the video received from the relay). It
ends when the relay says the share stopped, when its WebRTC connection fails, or when
the client closes it; :meth:`ShareHandle.ended` waits for that and says why.

:class:`relay.client.RelayClient` uses these (``share_start``, ``share_watch``); this
module holds no WebSocket logic.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from relay.screen_media import ice_configuration, prefer_vp8

DEFAULT_TRACK_WAIT_S = 10.0
"""How long a viewer waits for the relay's video track after applying its answer."""


@dataclass(frozen=True, slots=True)
class ShareEnd:
    """Why a share ended for this client."""

    by: str
    """Who ended it: a participant id, ``relay``, or ``client`` (closed here)."""
    reason: str


class ShareHandle:
    """One share this client sends or watches (see the module documentation)."""

    def __init__(
        self,
        pc: RTCPeerConnection,
        *,
        sending: bool,
        track: MediaStreamTrack | None = None,
    ) -> None:
        self.pc = pc
        self.sending = sending
        self.track = track
        """Sending: the source track; watching: the video received from the relay."""
        self.share = ""
        """The share id the relay gave (set once its answer is applied)."""
        self.end: ShareEnd | None = None
        self._ended: asyncio.Future[ShareEnd] = asyncio.get_running_loop().create_future()

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "failed":
                await self.close(ShareEnd("relay", "the media connection to the relay failed"))

    def __repr__(self) -> str:
        kind = "sending" if self.sending else "watching"
        return f"ShareHandle({self.share!r}, {kind}, ended={self.end is not None})"

    @property
    def is_ended(self) -> bool:
        return self.end is not None

    async def ended(self) -> ShareEnd:
        """Wait until the share ended for this client; why."""
        return await asyncio.shield(self._ended)

    async def close(self, end: ShareEnd | None = None) -> None:
        """End the share here: close the WebRTC connection (a viewer's track ends)."""
        if self.end is None:
            self.end = end or ShareEnd("client", "closed")
            if not self._ended.done():
                self._ended.set_result(self.end)
        with contextlib.suppress(Exception):
            await self.pc.close()
        if self.track is not None and not self.sending:
            self.track.stop()


async def publisher_offer(track: MediaStreamTrack) -> tuple[ShareHandle, str]:
    """A peer connection sending ``track`` (one send-only VP8 section) and its offer."""
    if track.kind != "video":
        raise ValueError(f"a screen share sends video, not {track.kind}")
    pc = RTCPeerConnection(ice_configuration())
    handle = ShareHandle(pc, sending=True, track=track)
    try:
        transceiver = pc.addTransceiver(track, direction="sendonly")
        prefer_vp8(transceiver)
        return handle, await _offer(pc)
    except BaseException:
        await handle.close()
        raise


async def viewer_offer() -> tuple[ShareHandle, str, asyncio.Future[MediaStreamTrack]]:
    """A peer connection receiving one video (one receive-only VP8 section), its offer,
    and a future for the track that arrives once the relay's answer is applied."""
    pc = RTCPeerConnection(ice_configuration())
    handle = ShareHandle(pc, sending=False)
    arrived: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "video" and not arrived.done():
            arrived.set_result(track)

    try:
        transceiver = pc.addTransceiver("video", direction="recvonly")
        prefer_vp8(transceiver)
        return handle, await _offer(pc), arrived
    except BaseException:
        await handle.close()
        raise


async def _offer(pc: RTCPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())  # gathers ICE: a complete offer
    local = pc.localDescription
    assert local is not None
    return str(local.sdp)


async def apply_answer(handle: ShareHandle, share: str, sdp: str) -> None:
    """Apply the relay's answer to ``handle``'s offer."""
    handle.share = share
    await handle.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))


__all__ = [
    "DEFAULT_TRACK_WAIT_S",
    "ShareEnd",
    "ShareHandle",
    "apply_answer",
    "publisher_offer",
    "viewer_offer",
]
