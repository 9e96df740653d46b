"""The ``instructor-console`` command: a remote instructor teaches a live class from the
command line or a script.

    instructor-console --bundle alice.bundle chat py101 "Open exercise 1, please."
    instructor-console --bundle alice.bundle chat py101 "Try a for loop" --to learner:l1001
    instructor-console --bundle alice.bundle listen py101 --json --only chat
    instructor-console --bundle alice.bundle interactive py101
    instructor-console --bundle alice.bundle editor py101 put class hello.py --from hello.py
    instructor-console --bundle alice.bundle editor py101 lecture on
    instructor-console --bundle alice.bundle editor py101 present class hello.py --line 3
    instructor-console --bundle alice.bundle export py101 --learner l1001 ./l1001-work
    instructor-console --bundle alice.bundle share py101 --source screen --fps 10
    instructor-console --bundle alice.bundle share py101 --source testpattern --duration 60
    instructor-console --bundle alice.bundle share-ask py101 l1001
    instructor-console --bundle alice.bundle watch py101 --frames 5 --out ./l1001-screen

The terminal front end (commands, output, exit codes) is shared with ``classroom-client``
and lives in :mod:`classroom_client.cli`; this module chooses the instructor's side of it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from classroom_client.cli import Side, run_main
from classroom_client.client import Joining
from instructor_console.console import PROG, InstructorConsole
from relay.identity import ParticipantRole

INSTRUCTOR_SIDE = Side(
    prog=PROG,
    role=ParticipantRole.INSTRUCTOR,
    description="Teach a live class through the facility's relay: send messages to the "
    "class or to one learner, lower raised hands, listen to the class, work "
    "interactively, drive the shared editor, export a learner's workspace, share your "
    "screen, or ask a learner to share theirs.",
)


def _open_console(args: argparse.Namespace) -> Callable[[str], Joining]:
    return InstructorConsole(args.bundle, args.relay).join


def main(argv: list[str] | None = None) -> int:
    """``instructor-console``: see ``instructor-console --help``."""
    return run_main(INSTRUCTOR_SIDE, argv, _open_console)


__all__ = ["INSTRUCTOR_SIDE", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
