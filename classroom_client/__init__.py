"""The classroom client: a Python API (:class:`ClassroomClient`) and the
``classroom-client`` command (:mod:`classroom_client.cli`)."""

from classroom_client.client import ClassroomClient

__all__ = ["ClassroomClient"]
