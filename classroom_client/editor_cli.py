"""The shared-editor commands of the two command lines.

- ``classroom-client ... sync SESSION DIR [--once] [--duration S]``: the learner's folder
  mirror (:class:`classroom_client.workspace.FolderSync`);
- ``instructor-console ... export SESSION --learner ID DIR [--force]``: save a learner's
  workspace;
- ``classroom-client ... follow SESSION [--context N] [--duration S]``: where the
  instructor is in the editor (:mod:`classroom_client.follow`);
- ``instructor-console ... editor SESSION put|get|ls|lecture|share ...``: one-shot editor
  actions for a person or a script; ``present WS FILE [--line N] [--duration S]`` points
  the class at a file and stays connected.

:func:`plan` checks what can be checked before connecting (names, files to read, the
target folder) and returns what to do once joined, like :func:`classroom_client.cli.plan`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from classroom_client.cli import Body, Exit, Terminal, UsageError, clean_text
from classroom_client.workspace import (
    FolderSync,
    Reporter,
    name_problem,
    plan_export,
    read_text,
    write_export,
)
from relay.client import RelayClient, describe_ack
from relay.editor_client import ReplicaError
from relay.identity import NAME_RULE, valid_name
from relay.messages import CLASS_WORKSPACE, Ack, AckStatus

T = TypeVar("T")


class _TermReporter(Reporter):
    def __init__(self, term: Terminal) -> None:
        self.term = term

    def out(self, line: str) -> None:
        self.term.out(line)

    def note(self, line: str) -> None:
        self.term.note(line)


def workspace_id(text: str) -> str:
    """``class``, ``learner:ID`` or just ``ID``; :class:`UsageError` otherwise."""
    if text == CLASS_WORKSPACE:
        return text
    name = text.removeprefix("learner:")
    if not valid_name(name):
        raise UsageError(
            f"{text!r} is not a workspace: write 'class', or a learner as ID or learner:ID "
            f"(a learner id is {NAME_RULE})"
        )
    return f"learner:{name}"


def _learner_id(text: str) -> str:
    name = text.removeprefix("learner:")
    if not valid_name(name):
        raise UsageError(f"{text!r} is not a valid learner id: a learner id is {NAME_RULE}")
    return name


def _file_name(text: str) -> str:
    problem = name_problem(text)
    if problem is not None:
        raise UsageError(f"the file name {text!r} is refused: {problem}")
    return text


def _folder(text: str) -> Path:
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} exists and is not a folder; give a folder (made if missing)")
    return path


def plan(instructor: bool, args: argparse.Namespace, term: Terminal) -> Body:
    cmd = args.command.value
    if cmd == "sync":
        return functools.partial(
            do_sync,
            term=term,
            root=_folder(args.dir),
            once=args.once,
            duration=args.duration,
            interval=args.interval,
        )
    if cmd == "follow":
        from classroom_client.follow import do_follow

        return functools.partial(do_follow, term=term, context=args.context, duration=args.duration)
    if cmd == "export":
        return functools.partial(
            do_export,
            term=term,
            learner=_learner_id(args.learner),
            root=_folder(args.dir),
            force=args.force,
            wait=args.wait,
        )
    action: str = args.action
    if action == "put":
        ws, name = workspace_id(args.ws), _file_name(args.file)
        text = _read_source(args.source)
        return functools.partial(do_put, term=term, ws=ws, name=name, text=text, wait=args.wait)
    if action == "get":
        ws, name = workspace_id(args.ws), _file_name(args.file)
        return functools.partial(do_get, term=term, ws=ws, name=name, wait=args.wait)
    if action == "ls":
        return functools.partial(do_ls, term=term, ws=workspace_id(args.ws), wait=args.wait)
    if action == "present":
        from classroom_client.follow import Place, do_present

        place = Place(workspace_id(args.ws), _file_name(args.file), args.line)
        return functools.partial(
            do_present, term=term, place=place, duration=args.duration, wait=args.wait
        )
    if action == "lecture":
        return functools.partial(do_lecture, term=term, on=args.state == "on", wait=args.wait)
    return functools.partial(
        do_share,
        term=term,
        learner=_learner_id(args.learner),
        on=args.state == "on",
        wait=args.wait,
    )


def _read_source(source: str | None) -> str:
    if source is None:
        if sys.stdin.isatty():
            raise UsageError("give the file's content with --from PATH, or on standard input")
        return sys.stdin.read()
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"--from {source}: no such file")
    text = read_text(path)
    if text is None:
        raise UsageError(f"--from {source}: the file is not UTF-8 text (the editor holds text)")
    return text


async def _timed(term: Terminal, wait: float, what: str, body: Awaitable[T]) -> T | None:
    try:
        return await asyncio.wait_for(body, wait)
    except TimeoutError:
        term.error(
            f"no answer from the relay within {wait:g} s while {what} (the connection is "
            "down or slow); check the workspace before trying again"
        )
        return None


def _report_acks(term: Terminal, what: str, acks: list[Ack]) -> Exit:
    if not acks:
        term.out(f"{what}: no change")
        return Exit.OK
    refused = [a for a in acks if a.status is AckStatus.REFUSED]
    if refused:
        term.note(f"refused: {what}: {refused[0].text or refused[0].error}")
        return Exit.REFUSED
    redacted = [a for a in acks if a.status is AckStatus.REDACTED]
    for ack in redacted:
        term.note(f"redacted: {what}: {ack.text}")
    last = acks[-1]
    if redacted:
        term.out(f"{what}: delivered redacted (seq {last.seq})")
    else:
        term.out(f"{what}: {describe_ack(last)}")
    return Exit.OK


# -- learner: sync -------------------------------------------------------------------------


async def do_sync(
    client: RelayClient,
    term: Terminal,
    root: Path,
    once: bool,
    duration: float | None,
    interval: float,
) -> Exit:
    me = client.me
    assert me is not None
    mirror = FolderSync(client, root, f"learner:{me.name}", _TermReporter(term))
    await mirror.start()
    if once:
        await mirror.step()
    else:
        await mirror.run(duration=duration, interval=interval)
    done = mirror.summary()
    term.out(
        f"sync stopped: {done.sent} change(s) sent, {done.refused} refused, "
        f"{done.received} received"
    )
    if client.finished:
        from classroom_client.cli import finished_exit

        return finished_exit(client, term)
    return Exit.REFUSED if done.refused else Exit.OK


# -- instructor: export and editor actions ---------------------------------------------


async def do_export(
    client: RelayClient, term: Terminal, learner: str, root: Path, force: bool, wait: float
) -> Exit:
    ws = f"learner:{learner}"
    if await _timed(term, wait, f"loading {ws}", client.editor_sync(ws)) is None:
        return Exit.FAILED
    files = client.editor.files(ws)
    if not files:
        term.out(f"{ws} has no files; nothing was written")
        return Exit.OK
    exported = plan_export(root, files)
    for problem in exported.refused.values():
        term.note(f"not written: {problem}")
    if exported.conflicts and not force:
        names = ", ".join(exported.conflicts)
        term.error(
            f"{root} already has {len(exported.conflicts)} file(s) that differ from {ws}: "
            f"{names}. Nothing was written. What to do: choose another folder, or add --force "
            "to overwrite them."
        )
        return Exit.FAILED
    for path in write_export(root, exported):
        term.out(f"wrote {path} ({len(files[path.relative_to(root).as_posix()])} characters)")
    for name in exported.unchanged:
        term.out(f"unchanged {root / name}")
    return Exit.REFUSED if exported.refused else Exit.OK


async def do_put(
    client: RelayClient, term: Terminal, ws: str, name: str, text: str, wait: float
) -> Exit:
    try:
        acks = await _timed(term, wait, f"writing {name}", client.write_file(ws, name, text))
    except ReplicaError as exc:
        term.error(f"{name} was not written: {exc}")
        return Exit.FAILED
    if acks is None:
        return Exit.FAILED
    return _report_acks(term, f"{name} in {ws}", acks)


async def do_get(client: RelayClient, term: Terminal, ws: str, name: str, wait: float) -> Exit:
    if await _timed(term, wait, f"loading {ws}", client.editor_sync(ws)) is None:
        return Exit.FAILED
    text = client.editor.text(ws, name)
    if text is None:
        listed = ", ".join(client.editor.files(ws)) or "none"
        term.error(f"{ws} has no file {name!r} (its files: {listed})")
        return Exit.FAILED
    sys.stdout.write(text)
    sys.stdout.flush()
    return Exit.OK


async def do_ls(client: RelayClient, term: Terminal, ws: str, wait: float) -> Exit:
    if await _timed(term, wait, f"loading {ws}", client.editor_sync(ws)) is None:
        return Exit.FAILED
    files = client.editor.files(ws)
    for name, text in files.items():
        term.out(f"{clean_text(name)}\t{len(text)} characters")
    if not files:
        term.note(f"{ws} has no files")
    return Exit.OK


async def do_lecture(client: RelayClient, term: Terminal, on: bool, wait: float) -> Exit:
    ack = await _timed(term, wait, "setting lecture mode", client.lecture(on))
    if ack is None:
        return Exit.FAILED
    return term.decision(ack)


async def do_share(
    client: RelayClient, term: Terminal, learner: str, on: bool, wait: float
) -> Exit:
    ack = await _timed(term, wait, "changing sharing", client.share(learner, on))
    if ack is None:
        return Exit.FAILED
    return term.decision(ack)


__all__ = ["do_export", "do_sync", "plan", "workspace_id"]
