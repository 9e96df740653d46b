"""The instructor console: a Python API (:class:`InstructorConsole`) and the
``instructor-console`` command (:mod:`instructor_console.cli`)."""

from instructor_console.console import InstructorConsole

__all__ = ["InstructorConsole"]
