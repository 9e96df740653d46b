"""The `classroom-relay audit` commands (being written)."""

from __future__ import annotations

import argparse
from typing import Any


def register(group: Any, leaf: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add this module's commands to the `audit` group."""
