"""Follow mode of the shared editor: the instructor points the class at a file and a line,
and a learner's terminal shows where the instructor is.

- ``classroom-client ... follow SESSION [--context N] [--duration S]``: :func:`do_follow`
  prints the instructor's file around the cursor each time the instructor moves or the
  text changes;
- ``instructor-console ... editor SESSION present WS FILE [--line N] [--duration S]`` and
  ``/open WS FILE [LINE]`` in interactive mode: a :class:`Pointer` sends the instructor's
  presence (protocol section 9, ``editor_presence``) and sends it again when someone
  joins, since the relay does not replay presence to those who join later.

Where the instructor is comes from their ``editor_presence`` frames: the latest one from a
participant whose pid is an instructor's (``instructor:NAME``) and who is still in the
class. :func:`follow_view` turns that, the file's text and the lecture mode into the lines
to print; it and the offset helpers are pure.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from classroom_client.cli import (
    DEFAULT_CONTEXT,
    Exit,
    Terminal,
    clean_text,
    finished_exit,
    visible_line,
)
from relay.client import RelayClient
from relay.errors import ClientError
from relay.identity import ParticipantRole, parse_pid
from relay.messages import (
    CLASS_WORKSPACE,
    EditorModeEvent,
    EditorPresenceEvent,
    EditorUpdateEvent,
    PresenceChange,
    PresenceEvent,
    ServerMessage,
)

MAX_SHOWN_CHARS = 300
"""A longer line is cut, with the number of characters left out."""
SETTLE_S = 0.1
"""``follow`` waits this long after a change for the next ones (typing) before printing."""
RESEND_DELAY_S = 0.3
"""After someone joins, the instructor's presence is sent again after this delay (one
send for a whole class joining at once)."""
WAITING = "waiting for the instructor to open a file"
PINNED = "lecture mode: the class is pinned to the instructor's view (class workspace read-only)"

# ---------------------------------------------------------------------------------------
# pure
# ---------------------------------------------------------------------------------------


def line_start(text: str, line: int) -> int:
    """The offset (code points) where line ``line`` (1 = the first) of ``text`` starts;
    a line past the end gives the start of the last line."""
    offset = 0
    for _ in range(max(0, line - 1)):
        found = text.find("\n", offset)
        if found < 0:
            break
        offset = found + 1
    return offset


def line_of(text: str, offset: int) -> int:
    """The line (1 = the first) that offset ``offset`` of ``text`` is on."""
    return text.count("\n", 0, max(0, min(offset, len(text)))) + 1


def is_instructor(pid: str) -> bool:
    parsed = parse_pid(pid)
    return parsed is not None and parsed[0] is ParticipantRole.INSTRUCTOR


def instructor_presence(
    presences: Iterable[EditorPresenceEvent], present: Collection[str]
) -> EditorPresenceEvent | None:
    """The presence to follow: the latest from an instructor in ``present`` (the pids in
    the class now), over every workspace; None when there is none."""
    latest: EditorPresenceEvent | None = None
    for p in presences:
        if is_instructor(p.who) and p.who in present and (latest is None or p.time >= latest.time):
            latest = p
    return latest


def _shown(line: str) -> str:
    line = line.removesuffix("\r")
    if len(line) > MAX_SHOWN_CHARS:
        cut = len(line) - MAX_SHOWN_CHARS
        return f"{visible_line(line[:MAX_SHOWN_CHARS])} ... ({cut} more characters)"
    return visible_line(line)


def follow_view(
    files: Mapping[str, str] | None,
    presence: EditorPresenceEvent | None,
    mode: EditorModeEvent | None,
    *,
    context: int = DEFAULT_CONTEXT,
) -> list[str]:
    """The lines ``follow`` prints for where the instructor is.

    ``files`` are the files of ``presence.ws`` as this client holds them (None: not
    loaded), ``presence`` the instructor's (see :func:`instructor_presence`), ``mode``
    the last lecture mode. The first line says where the instructor is (``instructor is
    at class/loops.py line 3``); then the lines of the file from ``context`` before to
    ``context`` after the cursor line, numbered, the cursor line marked with ``>``.
    Everything from the relay is escaped (:func:`classroom_client.cli.visible_line`), so
    no file line can pass for a header.
    """
    pinned = [PINNED] if mode is not None and mode.lecture else []
    if presence is None:
        return [WAITING, *pinned]
    who = presence.who
    if presence.file is None:
        return [f"instructor has no file open ({who})", *pinned]
    where = f"{visible_line(presence.ws)}/{visible_line(presence.file)}"
    text = files.get(presence.file) if files is not None else None
    if text is None:
        return [f"instructor is at {where}, which this client does not have ({who})", *pinned]
    cursor = line_of(text, presence.head)
    selected = sorted((line_of(text, presence.anchor), cursor))
    span = f", selection lines {selected[0]}-{selected[1]}" if selected[0] != selected[1] else ""
    lines = text.split("\n")
    first = max(1, cursor - context)
    last = min(len(lines), cursor + context)
    width = max(3, len(str(last)))
    out = [f"instructor is at {where} line {cursor}{span} ({who})", *pinned]
    for n in range(first, last + 1):
        marker = ">" if n == cursor else ("|" if selected[0] <= n <= selected[1] else " ")
        out.append(f"{marker} {n:>{width}}  {_shown(lines[n - 1])}".rstrip())
    return out


# ---------------------------------------------------------------------------------------
# instructor: pointing the class at a file
# ---------------------------------------------------------------------------------------


class NoSuchFile(ClientError):
    """The workspace has no such file (nothing was sent)."""


@dataclass(frozen=True, slots=True)
class Place:
    """A file and line the instructor shows the class."""

    ws: str
    file: str
    line: int


class Pointer:
    """The instructor's view as the class sees it: :meth:`point` sends it, :meth:`joined`
    sends it again (shortly) after someone joins."""

    def __init__(self, client: RelayClient) -> None:
        self.client = client
        self.place: Place | None = None
        self._resend: asyncio.Task[None] | None = None

    async def point(self, place: Place) -> int:
        """Load the workspace, send the presence at the start of the line; the line it
        is on (a line past the end of the file: the last line). :class:`NoSuchFile` when
        the file is missing, :class:`ClientError` when the relay refuses the workspace."""
        client = self.client
        await client.editor_sync(place.ws)
        text = client.editor.text(place.ws, place.file)
        if text is None:
            listed = ", ".join(clean_text(n) for n in client.editor.files(place.ws)) or "none"
            raise NoSuchFile(f"{place.ws} has no file {place.file!r} (its files: {listed})")
        offset = line_start(text, place.line)
        await client.presence(place.ws, place.file, offset, offset)
        self.place = place
        return line_of(text, offset)

    def view(self, context: int = DEFAULT_CONTEXT) -> list[str]:
        """What the class sees of the instructor's view (the instructor's own copy)."""
        place = self.place
        if place is None:
            return ["no file open for the class: /open WS FILE [LINE] opens one"]
        text = self.client.editor.text(place.ws, place.file) or ""
        offset = line_start(text, place.line)
        me = self.client.me
        presence = EditorPresenceEvent(
            ws=place.ws,
            who=me.pid if me is not None else "instructor",
            file=place.file,
            anchor=offset,
            head=offset,
            time=0.0,
        )
        return follow_view(
            self.client.editor.files(place.ws), presence, self.client.editor_mode, context=context
        )

    def joined(self) -> None:
        """Someone joined: send the presence again soon (they have not seen it)."""
        if self.place is None or (self._resend is not None and not self._resend.done()):
            return
        self._resend = asyncio.get_running_loop().create_task(self._again())

    async def _again(self) -> None:
        await asyncio.sleep(RESEND_DELAY_S)
        if self.place is not None:
            with contextlib.suppress(ClientError):
                await self.point(self.place)

    async def close(self) -> None:
        if self._resend is not None:
            self._resend.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resend


def someone_joined(client: RelayClient, event: ServerMessage) -> bool:
    """True for a live (not replayed) joining of someone else."""
    if not isinstance(event, PresenceChange) or event.event is not PresenceEvent.JOINED:
        return False
    welcome = client.welcome
    live = welcome is None or event.seq > welcome.last_seq
    return live and client.me is not None and event.who.pid != client.me.pid


async def do_present(
    client: RelayClient,
    term: Terminal,
    place: Place,
    duration: float | None,
    wait: float,
) -> Exit:
    pointer = Pointer(client)
    try:
        line = await asyncio.wait_for(pointer.point(place), wait)
    except TimeoutError:
        term.error(f"no answer from the relay within {wait:g} s while loading {place.ws}")
        return Exit.FAILED
    except NoSuchFile as exc:
        term.error(str(exc))
        return Exit.FAILED
    until = f" for {duration:g} s" if duration is not None else " until Ctrl-C"
    term.out(
        f"showing the class {clean_text(place.ws)}/{clean_text(place.file)} line {line}{until}"
    )
    try:
        async with asyncio.timeout(duration):
            async for event in client.events():
                if someone_joined(client, event):
                    pointer.joined()
    except TimeoutError:
        return Exit.OK
    finally:
        await pointer.close()
    return finished_exit(client, term)


# ---------------------------------------------------------------------------------------
# learner: follow
# ---------------------------------------------------------------------------------------


class _Follower:
    def __init__(self, client: RelayClient, term: Terminal, context: int) -> None:
        self.client = client
        self.term = term
        self.context = context
        self.shown: list[str] | None = None

    async def load(self, ws: str) -> None:
        if self.client.synced(ws):
            return
        try:
            await self.client.editor_sync(ws)
        except ClientError as exc:
            self.term.note(f"could not load {ws}: {exc}")

    async def take(self, event: ServerMessage) -> None:
        """Load what an event shows the client will need."""
        if isinstance(event, EditorModeEvent):
            for ws in event.shared:
                await self.load(ws)
        elif isinstance(event, EditorPresenceEvent) and is_instructor(event.who):
            await self.load(event.ws)

    def show(self) -> None:
        client = self.client
        presence = instructor_presence(client.editor_presence.values(), client.roster)
        files = None
        if presence is not None and client.synced(presence.ws):
            files = client.editor.files(presence.ws)
        lines = follow_view(files, presence, client.editor_mode, context=self.context)
        if lines == self.shown:
            return
        if self.shown is not None:
            self.term.out("")
        for line in lines:
            self.term.out(line)
        self.shown = lines


def _relevant(event: ServerMessage) -> bool:
    return isinstance(
        event, EditorPresenceEvent | EditorUpdateEvent | EditorModeEvent | PresenceChange
    )


async def do_follow(
    client: RelayClient, term: Terminal, context: int, duration: float | None
) -> Exit:
    me = client.me
    assert me is not None
    follower = _Follower(client, term, context)
    shared = client.editor_mode.shared if client.editor_mode is not None else ()
    for ws in dict.fromkeys([CLASS_WORKSPACE, me.pid, *shared]):
        await follower.load(ws)
    follower.show()
    try:
        async with asyncio.timeout(duration):
            async for event in client.events():
                if not _relevant(event):
                    continue
                await follower.take(event)
                await asyncio.sleep(SETTLE_S)  # let a burst of keystrokes arrive
                for more in client.drain_events():
                    await follower.take(more)
                follower.show()
    except TimeoutError:
        return Exit.OK
    return finished_exit(client, term)


__all__ = [
    "DEFAULT_CONTEXT",
    "NoSuchFile",
    "Place",
    "Pointer",
    "do_follow",
    "do_present",
    "follow_view",
    "instructor_presence",
    "line_of",
    "line_start",
]
