"""Python API of the instructor console: a remote instructor joins the classes they teach.

:class:`InstructorConsole` holds the instructor's credential bundle;
:meth:`InstructorConsole.join` gives a :class:`relay.client.RelayClient` in one class::

    console = InstructorConsole("alice.bundle")
    async with console.join("py101") as c:
        ack = await c.chat("Welcome! Open exercise 1.")
        await c.chat("Try a for loop here.", to="learner:l1001")
        await c.hand(False, who="learner:l1002")

The protocol (TLS, hello, acks, reconnect and resume) is :class:`RelayClient`'s job; this
module checks what can be checked before connecting (the bundle's role, the relay
address, the class id) so that mistakes are refused early and clearly.
"""

from __future__ import annotations

from pathlib import Path

from classroom_client.client import (
    Joining,
    check_relay_address,
    join_class,
    open_bundle,
)
from relay.bundle import Bundle
from relay.client import Backoff
from relay.identity import Role

PROG = "instructor-console"
CLIENT_NAME = "instructor-console/0.1"


class InstructorConsole:
    """An instructor's credential bundle, ready to join the classes scheduled for them.

    ``relay_url`` (``wss://HOST:PORT``) overrides the relay address the bundle carries.
    Raises :class:`relay.errors.ClientError` for an unusable bundle, a bundle that is not
    an instructor's, or an invalid relay address.
    """

    __slots__ = ("bundle", "bundle_path", "client_name", "relay_url")

    def __init__(
        self,
        bundle: Path | str,
        relay_url: str | None = None,
        *,
        client_name: str = CLIENT_NAME,
    ) -> None:
        self.bundle_path = Path(bundle)
        self.bundle: Bundle = open_bundle(self.bundle_path, Role.INSTRUCTOR, PROG)
        self.relay_url = check_relay_address(relay_url) if relay_url is not None else None
        self.client_name = client_name

    def __repr__(self) -> str:
        return f"InstructorConsole(name={self.name!r}, relay={self.address!r})"

    @property
    def name(self) -> str:
        """The instructor's name (from the bundle)."""
        return self.bundle.name

    @property
    def pid(self) -> str:
        """The participant id the instructor has in a class: ``instructor:NAME``."""
        return f"instructor:{self.bundle.name}"

    @property
    def address(self) -> str:
        """The relay address used: ``relay_url`` if given, else the bundle's."""
        return self.relay_url or self.bundle.relay_url

    def join(
        self, session: str, *, reconnect: bool = True, backoff: Backoff | None = None
    ) -> Joining:
        """Join class ``session`` (see :class:`classroom_client.client.Joining`)."""
        return join_class(
            self.bundle_path,
            session,
            relay_url=self.relay_url,
            reconnect=reconnect,
            backoff=backoff,
            client_name=self.client_name,
        )


__all__ = ["PROG", "InstructorConsole"]
