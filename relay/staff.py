"""Security staff's live tools: watch a class, end a class, from a staff workstation.

Staff connect to the relay's inside listener with their own credential bundle (role
``staff``) and join a class as observers: they see everything in it, direct messages
included, and may end it. The commands (``classroom-relay watch`` and ``classroom-relay
session end --bundle``) reuse the clients' terminal front end for output and exit codes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from classroom_client.cli import (
    Exit,
    ListenOptions,
    Terminal,
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
from relay.errors import RelayError
from relay.identity import Role
from relay.messages import AckStatus, SessionEnded

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
