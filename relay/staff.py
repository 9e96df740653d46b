"""Security staff's live tools: watch a class, end a class, review held messages.

Staff connect to the relay's inside listener with their own credential bundle (role
``staff``) and join a class as observers: they see everything in it, direct messages
included, may end it, and decide the messages held for their review. The commands
(``classroom-relay watch``, ``session end --bundle`` and ``review ... --bundle``) reuse
the clients' terminal front end for output and exit codes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from classroom_client.cli import (
    Exit,
    ListenOptions,
    Terminal,
    clean_text,
    do_listen,
    run_joined,
)
from classroom_client.client import (
    Joining,
    check_relay_address,
    join_class,
    open_bundle,
)
from relay.client import RelayClient
from relay.control import held_record
from relay.errors import ClientError, RelayError
from relay.identity import Role
from relay.messages import AckStatus, SessionEnded
from relay.review import session_of_hold

PROG = "classroom-relay"
CLIENT_NAME = "classroom-relay-staff/0.1"
END_WAIT_S = 10.0


def join_as_staff(bundle: Path, relay_url: str | None, session: str) -> Joining:
    """Join ``session`` as an observer with a staff bundle (checked before connecting)."""
    open_bundle(bundle, Role.STAFF, f"{PROG} (staff tools)")
    return join_class(
        bundle,
        session,
        relay_url=check_relay_address(relay_url) if relay_url is not None else None,
        client_name=CLIENT_NAME,
    )


def _run_as_staff(
    term: Terminal,
    bundle: Path,
    relay_url: str | None,
    session: str,
    body: Callable[[RelayClient], Awaitable[Exit]],
) -> int:
    """Join ``session`` as staff, run ``body``, leave; exit codes as the clients'."""
    try:
        joining = join_as_staff(bundle, relay_url, session)
    except RelayError as exc:
        term.problem(exc)
        return int(Exit.FAILED)
    try:
        return int(asyncio.run(run_joined(term, joining, body)))
    except KeyboardInterrupt:
        return int(Exit.INTERRUPTED)


def watch(bundle: Path, relay_url: str | None, session: str, opts: ListenOptions) -> int:
    """Print the class as it happens (and its history)."""
    term = Terminal(PROG)

    async def body(client: RelayClient) -> Exit:
        return await do_listen(client, term, opts)

    return _run_as_staff(term, bundle, relay_url, session, body)


def end_class(bundle: Path, relay_url: str | None, session: str, reason: str) -> int:
    """End ``session`` for everyone, as the staff member the bundle names."""
    term = Terminal(PROG)

    async def body(client: RelayClient) -> Exit:
        ack = await asyncio.wait_for(client.end_session(reason), END_WAIT_S)
        if ack.status is not AckStatus.DELIVERED:
            return term.decision(ack)
        async with asyncio.timeout(END_WAIT_S):
            async for event in client.events():
                if isinstance(event, SessionEnded):
                    term.out(f"Class {session} ended by {event.by}: {event.reason}")
                    return Exit.OK
        term.error(f"the relay accepted the request but class {session} did not report ending")
        return Exit.FAILED

    return _run_as_staff(term, bundle, relay_url, session, body)


def stop_share(bundle: Path, relay_url: str | None, share: str, reason: str) -> int:
    """Stop screen share ``share`` (``CLASS.sN-TAG``) as the staff member the bundle names."""
    term = Terminal(PROG)
    session = share.rpartition(".s")[0]
    if not session:
        term.error(
            f"'{share}' is not a share id (CLASS.sN-TAG, as 'share_started' and "
            f"'{PROG} audit search --kind screen.started' show it)"
        )
        return Exit.FAILED

    async def body(client: RelayClient) -> Exit:
        ack = await asyncio.wait_for(client.share_stop(share, reason), END_WAIT_S)
        if ack.status is not AckStatus.DELIVERED:
            return term.decision(ack)
        term.out(f"Share {share} of class {session} stopped: {reason}")
        return Exit.OK

    return _run_as_staff(term, bundle, relay_url, session, body)


REVIEW_WAIT_S = 10.0


def format_holds(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Held messages (as :func:`relay.control.held_record` gives them) for a person."""
    if not records:
        return ["No messages wait for review."]
    lines: list[str] = []
    for r in records:
        sent = dt.datetime.fromtimestamp(float(r["time"])).strftime("%H:%M:%S")
        expires = dt.datetime.fromtimestamp(float(r["expires"])).strftime("%H:%M:%S")
        where = f"-> {r['to']}" if r.get("to") else "-> #class"
        lines.append(f"{r['hold']}  class {r['session']}  {sent}  {r['from']} {where}")
        lines.append(f"    {clean_text(str(r['text']), '    ')}")
        lines.append(
            f"    held by rule {r['rule']}: {clean_text(str(r['reason']))}; "
            f"expires {expires} as rejected unless decided"
        )
    lines.append(
        f"{len(records)} message(s) wait. Decide with '{PROG} review approve HOLD' "
        f"or '{PROG} review reject HOLD --reason TEXT'."
    )
    return lines


def print_holds(term: Terminal, records: Sequence[Mapping[str, Any]], as_json: bool) -> None:
    if as_json:
        for r in records:
            term.out(json.dumps(r, ensure_ascii=False, sort_keys=True))
        return
    for line in format_holds(records):
        term.out(line)


def list_holds(bundle: Path, relay_url: str | None, session: str, as_json: bool) -> int:
    """List the messages of ``session`` that wait for review, as staff."""
    term = Terminal(PROG)

    async def body(client: RelayClient) -> Exit:
        try:
            holds = await asyncio.wait_for(client.review_list(), REVIEW_WAIT_S)
        except ClientError as exc:
            term.problem(exc)
            return Exit.REFUSED
        print_holds(term, [held_record(h, session) for h in holds.holds], as_json)
        return Exit.OK

    return _run_as_staff(term, bundle, relay_url, session, body)


def decide_hold(
    bundle: Path, relay_url: str | None, hold: str, *, approve: bool, reason: str
) -> int:
    """Approve or reject the held message ``hold``, as staff (its class is in the id)."""
    term = Terminal(PROG)
    try:
        session = session_of_hold(hold)
    except ValueError as exc:
        term.error(str(exc))
        return int(Exit.FAILED)

    async def body(client: RelayClient) -> Exit:
        ack = await asyncio.wait_for(
            client.review(hold, approve=approve, reason=reason), REVIEW_WAIT_S
        )
        if ack.status is not AckStatus.DELIVERED:
            return term.decision(ack)
        verb = "approved: delivered to the class" if approve else "rejected: not delivered"
        term.out(f"Held message {hold} {verb}; its sender was told.")
        return Exit.OK

    return _run_as_staff(term, bundle, relay_url, session, body)
