"""A minimal raw WebSocket client for tests that must send what the real client never would."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

from relay import wire
from relay.bundle import load_bundle


def client_context(bundle_path: Path) -> ssl.SSLContext:
    return load_bundle(bundle_path).client_ssl_context(bundle_path)


class Raw:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, m: dict[str, Any]) -> None:
        await self.ws.send_bytes(msgpack.packb(m, use_bin_type=True))

    async def recv(self, wait_s: float = 5.0) -> dict[str, Any]:
        """The next frame as a map; ``{"t": "<closed>", "code": N}`` once the relay closed."""
        msg = await self.ws.receive(timeout=wait_s)
        if msg.type is aiohttp.WSMsgType.BINARY:
            out: dict[str, Any] = msgpack.unpackb(msg.data, raw=False)
            return out
        code = msg.data if msg.type is aiohttp.WSMsgType.CLOSE else self.ws.close_code
        return {"t": "<closed>", "code": code, "type": msg.type.name}

    async def recv_type(self, t: str, wait_s: float = 5.0) -> dict[str, Any]:
        for _ in range(200):
            m = await self.recv(wait_s)
            if m["t"] == t or m["t"] == "<closed>":
                return m
        raise AssertionError(f"no {t!r} frame")

    async def hello(self, session: str = "py101", **extra: Any) -> dict[str, Any]:
        await self.send({"t": "hello", "id": "h-1", "session": session, **extra})
        return await self.recv()


@contextlib.asynccontextmanager
async def raw_connect(
    url: str,
    bundle_path: Path | None,
    *,
    protocols: tuple[str, ...] = (wire.SUBPROTOCOL,),
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[Raw]:
    ctx = ssl_context or client_context(bundle_path) if bundle_path else ssl_context
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url + "/v1", protocols=protocols, ssl=ctx, autoping=True) as ws,
    ):
        yield Raw(ws)
