"""The lexicon file format: CATEGORY ACTION TERM a line, comments, errors with the line."""

from __future__ import annotations

import pytest

from policy.decisions import Action
from policy.lexicon import LexiconEntry, parse_lexicon
from relay.errors import ConfigError

DECLARED = ("threat", "watch")


def test_lines_comments_and_blank_lines() -> None:
    data = (
        "\ufeff# a comment\r\n"
        "\r\n"
        "threat block  stab   you \r\n"
        "   # an indented comment\n"
        "\twatch\talert\tlockdown\n"
        "watch hold escape # plan\n"
    ).encode()
    assert parse_lexicon(data, "lex.txt", DECLARED) == [
        LexiconEntry("threat", Action.BLOCK, "stab you", 3),
        LexiconEntry("watch", Action.ALERT, "lockdown", 5),
        LexiconEntry("watch", Action.HOLD, "escape # plan", 6),
    ]


def test_an_empty_file_has_no_entries() -> None:
    assert parse_lexicon(b"", "lex.txt", DECLARED) == []
    assert parse_lexicon(b"# only comments\n\n", "lex.txt", ()) == []


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"threat\n", "lex.txt:1: expected CATEGORY ACTION TERM separated by spaces, found 1"),
        (b"\n\nthreat block\n", "lex.txt:3: expected CATEGORY ACTION TERM"),
        (b"threat BLOCK x\n", "lex.txt:1: unknown action 'BLOCK'; allowed: allow, alert, redact"),
        (b"other block x\n", "lex.txt:1: category 'other' is not declared; declare it with a"),
        (b"other block x\n", "[lexicon.other] table"),
        (b"other block x\n", "declared: threat, watch"),
        (b"x.y block x\n", "lex.txt:1: 'x.y' is not a category name"),
        (b"watch alert ok\n\x80\n", "lex.txt:2: not UTF-8 text"),
    ],
)
def test_errors_name_the_file_and_line(data: bytes, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_lexicon(data, "lex.txt", DECLARED)
    assert needle in str(info.value)


def test_no_declared_category_says_so() -> None:
    with pytest.raises(ConfigError, match="declared: none"):
        parse_lexicon(b"threat block x\n", "lex.txt", ())
