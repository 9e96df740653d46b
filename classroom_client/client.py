"""Python API of the classroom client: a classroom machine signs a learner in to a class.

:class:`ClassroomClient` holds the machine's credential bundle and the learner's id and
PIN; :meth:`ClassroomClient.join` gives a :class:`relay.client.RelayClient` in one class::

    client = ClassroomClient("pc-01.bundle", "l1001", pin)
    async with client.join("py101") as c:
        ack = await c.chat("Is it range(1, 10)?")
        async for event in c.events():
            ...

The protocol (TLS, hello, acks, reconnect and resume) is :class:`RelayClient`'s job; this
module only checks what can be checked before connecting (the bundle's role, the relay
address, the class and learner ids) so that mistakes are refused early and clearly.

The helpers :func:`check_relay_address`, :func:`open_bundle`, :func:`check_class_id` and
:class:`Joining` are shared with :mod:`instructor_console.console`.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relay.bundle import Bundle, load_bundle
from relay.client import Backoff, RelayClient
from relay.errors import ClientError, CredentialError
from relay.identity import NAME_RULE, Role, valid_name

PROG = "classroom-client"
CLIENT_NAME = "classroom-client/0.1"
MAX_PIN_CHARS = 64
"""The longest PIN the protocol carries (``hello.pin``)."""

_ADDRESS_EXAMPLE = "write it as wss://HOST:PORT, e.g. wss://relay.example.org:8444"


def check_relay_address(url: str) -> str:
    """Check a relay address given by a person (``--relay``): ``wss://HOST:PORT``.

    Returns it without a trailing slash. Raises :class:`ClientError` saying what is wrong.
    The client adds the protocol path (``/v1``) itself, so a path is refused.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ClientError(
            f"the relay address {url!r} is not a valid address ({exc}); {_ADDRESS_EXAMPLE}"
        ) from None
    if parts.scheme != "wss":
        raise ClientError(
            f"the relay address {url!r} must start with wss:// (the relay only "
            f"accepts TLS); {_ADDRESS_EXAMPLE}"
        )
    if not parts.hostname:
        raise ClientError(f"the relay address {url!r} names no host; {_ADDRESS_EXAMPLE}")
    if port is None or port == 0:
        raise ClientError(
            f"the relay address {url!r} names no port; {_ADDRESS_EXAMPLE} "
            "(the port is in the address your bundle carries, or ask the facility)"
        )
    if (
        parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
        or parts.password is not None
    ):
        raise ClientError(
            f"the relay address {url!r} must be only wss://HOST:PORT, without a path, user, "
            "query or fragment (the client adds the protocol path itself)"
        )
    return f"wss://{parts.netloc}"


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


_BUNDLE_HINT: dict[Role, str] = {
    Role.INSTRUCTOR: "pass the bundle the facility issued to you "
    "(classroom-relay enroll instructor NAME) with --bundle FILE",
    Role.MACHINE: "pass this classroom machine's own bundle "
    "(classroom-relay enroll machine NAME --classroom ROOM) with --bundle FILE",
    Role.STAFF: "pass your staff bundle (classroom-relay enroll staff NAME) with --bundle FILE",
}


def open_bundle(path: Path, expected: Role, prog: str) -> Bundle:
    """Load a credential bundle and check that it is meant for ``prog``.

    Raises :class:`ClientError` when the file cannot be used, e.g. ``this bundle belongs to
    machine 'pc-01'; instructor-console needs an instructor bundle``.
    """
    try:
        bundle = load_bundle(path)
    except CredentialError as exc:
        raise ClientError(str(exc)) from exc
    if bundle.role is not expected:
        raise ClientError(
            f"{path}: this bundle belongs to {bundle.role.value} '{bundle.name}'; {prog} needs "
            f"{_article(expected.value)} {expected.value} bundle. What to do: "
            f"{_BUNDLE_HINT[expected]}."
        )
    return bundle


def check_class_id(session: str) -> str:
    """A class id as the schedule has it; :class:`ClientError` otherwise."""
    if not valid_name(session):
        raise ClientError(
            f"{session!r} is not a valid class id: a class id is {NAME_RULE} "
            "(the facility's schedule lists them)"
        )
    return session


def join_class(bundle_path: Path, session: str, **options: Any) -> Joining:
    """Join class ``session`` with a :class:`RelayClient` (``options`` are its keywords).

    The class id is checked first; setup errors are :class:`ClientError` too.
    """
    session = check_class_id(session)
    try:
        return Joining(RelayClient(bundle_path, session, **options))
    except CredentialError as exc:
        raise ClientError(str(exc)) from exc


class Joining:
    """A class being joined: await it, or use it as an async context manager.

    ``client = await joining`` connects and returns the :class:`RelayClient` (the caller
    closes it with ``await client.close()``); ``async with joining as client:`` connects,
    and leaves the class (``bye``) at the end of the block. Either raises
    :class:`ClientError` when the relay cannot be reached or refuses the join.
    """

    __slots__ = ("client",)

    def __init__(self, client: RelayClient) -> None:
        self.client = client

    async def _connect(self) -> RelayClient:
        await self.client.connect()
        return self.client

    def __await__(self) -> Generator[Any, None, RelayClient]:
        return self._connect().__await__()

    async def __aenter__(self) -> RelayClient:
        return await self._connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()


class ClassroomClient:
    """A classroom machine (its bundle) with one learner signed in (id and PIN).

    ``relay_url`` (``wss://HOST:PORT``) overrides the relay address the bundle carries.
    Raises :class:`ClientError` for an unusable bundle, a bundle that is not a machine's,
    an invalid learner id, PIN or relay address.
    """

    __slots__ = ("_pin", "bundle", "bundle_path", "client_name", "learner", "relay_url")

    def __init__(
        self,
        bundle: Path | str,
        learner: str,
        pin: str,
        relay_url: str | None = None,
        *,
        client_name: str = CLIENT_NAME,
    ) -> None:
        self.bundle_path = Path(bundle)
        self.bundle: Bundle = open_bundle(self.bundle_path, Role.MACHINE, PROG)
        if not valid_name(learner):
            raise ClientError(f"{learner!r} is not a valid learner id: a learner id is {NAME_RULE}")
        if not pin:
            raise ClientError(
                f"no PIN for learner {learner}: the learner signs in with id and PIN; "
                "ask the facility for it if it is lost"
            )
        if len(pin) > MAX_PIN_CHARS:
            raise ClientError(
                f"the PIN given for learner {learner} is longer than {MAX_PIN_CHARS} characters; "
                "check it"
            )
        self.learner = learner
        self._pin = pin
        self.relay_url = check_relay_address(relay_url) if relay_url is not None else None
        self.client_name = client_name

    def __repr__(self) -> str:
        return (
            f"ClassroomClient(machine={self.machine!r}, learner={self.learner!r}, "
            f"relay={self.address!r})"
        )

    @property
    def machine(self) -> str:
        """The classroom machine's name (from its bundle)."""
        return self.bundle.name

    @property
    def classroom(self) -> str | None:
        return self.bundle.classroom

    @property
    def pid(self) -> str:
        """The participant id the learner has in a class: ``learner:ID``."""
        return f"learner:{self.learner}"

    @property
    def address(self) -> str:
        """The relay address used: ``relay_url`` if given, else the bundle's."""
        return self.relay_url or self.bundle.relay_url

    def join(
        self, session: str, *, reconnect: bool = True, backoff: Backoff | None = None
    ) -> Joining:
        """Join class ``session`` as this learner (see :class:`Joining`)."""
        return join_class(
            self.bundle_path,
            session,
            relay_url=self.relay_url,
            learner=self.learner,
            pin=self._pin,
            reconnect=reconnect,
            backoff=backoff,
            client_name=self.client_name,
        )


__all__ = [
    "PROG",
    "ClassroomClient",
    "Joining",
    "check_class_id",
    "check_relay_address",
    "join_class",
    "open_bundle",
]
