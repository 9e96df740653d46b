"""The running relay's local control socket, and the client the CLI uses to reach it.

The socket is a Unix domain socket at ``<home>/run/control.sock`` (directory mode 0700,
socket mode 0600): only the relay's own account on the relay host can use it. It speaks
HTTP with JSON bodies: ``POST /v1/<op>`` where op is ``revoke``, ``reload``,
``reload_policy``, ``end_session``, ``status``, ``review_list``, ``review`` or
``audit_append`` (events of the kinds ``relay.audit_append.APPENDABLE``). See
docs/operations.md.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from relay.errors import ControlError, ControlRefused, RelayError
from relay.home import FacilityHome
from relay.messages import HeldInfo

if TYPE_CHECKING:
    from relay.server import Relay

CONTROL_RELAY_KEY: web.AppKey[Relay] = web.AppKey("control_relay")
MAX_SOCKET_PATH = 100


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=json.dumps({"ok": False, "message": message}), content_type="application/json"
    )


def _arg(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _bad_request(f"'{key}' is required (a non-empty string)")
    return value


async def _revoke(relay: Relay, body: dict[str, Any]) -> dict[str, Any]:
    name = _arg(body, "name")
    reason = str(body.get("reason") or "revoked by the facility administrator")
    cut = await relay.revoke(name, reason)
    return {
        "ok": True,
        "closed": cut,
        "message": f"'{name}' revoked; {cut} live connection(s) closed",
    }


async def _reload(relay: Relay, body: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "message": await relay.reload()}


async def _end_session(relay: Relay, body: dict[str, Any]) -> dict[str, Any]:
    session = _arg(body, "session")
    reason = _arg(body, "reason")
    by = str(body.get("by") or "admin")
    if not await relay.end_session(session, f"admin:{by}" if ":" not in by else by, reason):
        return {
            "ok": False,
            "message": f"class '{session}' is not live on this relay "
            "(nobody joined it yet, or it already ended)",
        }
    return {"ok": True, "message": f"class '{session}' ended: {reason}"}


async def _status(relay: Relay, body: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, **relay.status()}


async def _reload_policy(relay: Relay, body: dict[str, Any]) -> dict[str, Any]:
    version = await relay.reload_policy()
    return {"ok": True, "version": version, "message": f"policy {version} in force"}


async def _review_list(relay: Relay, body: dict[str, Any]) -> dict[str, Any]:
    session = body.get("session")
    if session is not None and not isinstance(session, str):
        raise _bad_request("'session' must be a string")
    holds = await relay.list_holds(session, _by(body))
    return {"ok": True, "holds": [held_record(h.info(), h.session) for h in holds]}


async def _review(relay: Relay, body: dict[str, Any]) -> dict[str, Any]:
    hold = _arg(body, "hold")
    approve = body.get("approve")
    if not isinstance(approve, bool):
        raise _bad_request("'approve' must be true or false")
    reason = str(body.get("reason") or "")
    if not approve and not reason.strip():
        return {"ok": False, "message": "a reason is required to reject a held message"}
    message = await relay.chokepoint.review(hold, approve, _by(body), reason)
    return {"ok": True, "message": message}


async def _audit_append(relay: Relay, body: dict[str, Any]) -> dict[str, Any]:
    from relay.audit_append import event_from_json

    raw = body.get("events")
    if not isinstance(raw, list) or not raw or len(raw) > 100:
        raise _bad_request("'events' must be a list of 1 to 100 events")
    try:
        events = [event_from_json(e) for e in raw]
    except ValueError as exc:
        raise _bad_request(f"refused to record: {exc}") from None
    await relay.audit.submit(events)
    return {"ok": True, "message": f"{len(events)} event(s) recorded"}


def _by(body: dict[str, Any]) -> str:
    by = str(body.get("by") or "admin")
    return f"admin:{by}" if ":" not in by else by


def held_record(h: HeldInfo, session: str) -> dict[str, Any]:
    """A held message as JSON (``review list --json``, the control socket)."""
    return {
        "hold": h.hold,
        "session": session,
        "ref": h.ref,
        "from": h.sender,
        "channel": h.channel.value,
        "to": h.to,
        "text": h.text,
        "time": h.time,
        "expires": h.expires,
        "rule": h.rule,
        "reason": h.reason,
        "categories": list(h.categories),
    }


_OPS: dict[str, Callable[[Relay, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "revoke": _revoke,
    "reload": _reload,
    "end_session": _end_session,
    "status": _status,
    "reload_policy": _reload_policy,
    "review_list": _review_list,
    "review": _review,
    "audit_append": _audit_append,
}


async def _handle(request: web.Request) -> web.Response:
    op = request.match_info["op"]
    handler = _OPS.get(op)
    if handler is None:
        return web.json_response(
            {"ok": False, "message": f"unknown control operation '{op}'; known: {', '.join(_OPS)}"},
            status=404,
        )
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        return web.json_response({"ok": False, "message": "the body must be JSON"}, status=400)
    if not isinstance(body, dict):
        return web.json_response(
            {"ok": False, "message": "the body must be a JSON object"}, status=400
        )
    try:
        result = await handler(request.app[CONTROL_RELAY_KEY], body)
    except RelayError as exc:
        return web.json_response({"ok": False, "message": str(exc)}, status=409)
    return web.json_response(result, status=200 if result.get("ok") else 409)


@contextlib.asynccontextmanager
async def control_server(relay: Relay) -> AsyncIterator[str]:
    """Serve the control socket of ``relay`` while the context is open."""
    path = relay.home.control_socket
    if len(str(path)) > MAX_SOCKET_PATH:
        raise ControlError(
            f"the control socket path {path} is too long for a Unix socket; "
            "use a shorter --home path"
        )
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    if path.exists():
        if _answers(str(path)):
            raise ControlError(
                f"another relay is already running with this facility home ({path} answers); "
                "stop it first"
            )
        path.unlink()
    app = web.Application()
    app[CONTROL_RELAY_KEY] = relay
    app.router.add_post("/v1/{op}", _handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.UnixSite(runner, str(path))
    old_umask = os.umask(0o177)
    try:
        await site.start()
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    try:
        yield str(path)
    finally:
        await runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(path)
        except OSError:
            return False
    return True


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def request_control(
    home: FacilityHome, op: str, args: dict[str, object], *, timeout: float = 10.0
) -> dict[str, object]:
    """Ask the running relay of ``home`` to carry out ``op``. Raises :class:`ControlError`."""
    path = home.control_socket
    if not path.exists():
        raise ControlError(f"no relay is running for {home.root} (no control socket at {path})")
    conn = _UnixHTTPConnection(str(path), timeout)
    try:
        conn.request(
            "POST", f"/v1/{op}", body=json.dumps(args), headers={"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        raw = response.read()
    except OSError as exc:
        raise ControlError(
            f"the relay for {home.root} did not answer on {path} ({exc}); is it running?"
        ) from exc
    finally:
        conn.close()
    try:
        result = json.loads(raw)
    except ValueError as exc:
        raise ControlError(f"the relay answered {response.status} with invalid JSON") from exc
    if not isinstance(result, dict):
        raise ControlError(f"the relay answered {response.status} with {result!r}")
    if not result.get("ok", False):
        raise ControlRefused(str(result.get("message") or f"the relay refused '{op}'"))
    return result
