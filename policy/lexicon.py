"""The facility's banned-term lexicon file. Pure.

UTF-8 text, one term a line::

    # comment
    contraband block burner phone
    watch      alert lockdown

Each data line is ``CATEGORY ACTION TERM``, separated by whitespace; the term is the rest
of the line and may hold spaces. A line whose first non-blank character is ``#`` is a
comment; blank lines are ignored. Every category must be declared by a
``[lexicon.CATEGORY]`` table of the policy file, which gives its reason. Errors name the
file and the line.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from policy.decisions import Action
from relay.errors import ConfigError

__all__ = ["CATEGORY_NAME", "LexiconEntry", "parse_lexicon"]

CATEGORY_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")
"""What a lexicon category is called: a lower-case letter, then up to 39 lower-case
letters, digits, ``_`` or ``-``."""

_ACTIONS = ", ".join(a.value for a in Action)


@dataclass(frozen=True, slots=True)
class LexiconEntry:
    """One data line of a lexicon file."""

    category: str
    action: Action
    term: str
    line: int


def parse_lexicon(data: bytes, source: str, categories: Collection[str]) -> list[LexiconEntry]:
    """The entries of lexicon file bytes; ``categories`` are the declared ones.

    Raises :class:`ConfigError` naming ``source`` and the line number.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad_line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{source}:{bad_line}: not UTF-8 text ({exc.reason})") from None
    declared = ", ".join(sorted(categories)) or "none"
    out: list[LexiconEntry] = []
    for n, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 2)
        if len(fields) < 3:
            raise ConfigError(
                f"{source}:{n}: expected CATEGORY ACTION TERM separated by spaces, "
                f"found {len(fields)} field(s)"
            )
        category, action_name, term = fields
        if category not in categories:
            hint = (
                f"category {category!r} is not declared; declare it with a "
                f"[lexicon.{category}] table (action, reason) in the policy file"
                if CATEGORY_NAME.fullmatch(category)
                else f"{category!r} is not a category name"
            )
            raise ConfigError(f"{source}:{n}: {hint}; declared: {declared}")
        try:
            action = Action(action_name)
        except ValueError:
            raise ConfigError(
                f"{source}:{n}: unknown action {action_name!r}; allowed: {_ACTIONS}"
            ) from None
        out.append(LexiconEntry(category, action, " ".join(term.split()), n))
    return out
