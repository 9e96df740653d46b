"""A small typed reader of the policy corpora (format: tests/policy/corpus/README.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CORPUS_DIR = Path(__file__).parent / "corpus"
CLEAN = CORPUS_DIR / "clean.txt"
EVASION = CORPUS_DIR / "evasion.txt"

_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}
_ESCAPE = re.compile(r"\\([nt\\])")


@dataclass(frozen=True, slots=True)
class Sample:
    """One data line: the message, its category (evasion corpus only) and line number."""

    message: str
    category: str
    line: int


def unescape(text: str) -> str:
    """Undo the corpus escapes ``\\n``, ``\\t`` and ``\\\\`` (read left to right)."""
    return _ESCAPE.sub(lambda m: _ESCAPES[m.group(1)], text)


def _data_lines(path: Path) -> list[tuple[int, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines) and lines[i].startswith("#"):
        i += 1
    return [(n + 1, line) for n, line in enumerate(lines) if n >= i]


def read_clean(path: Path = CLEAN) -> list[Sample]:
    """Every message of the clean corpus (category ``""``)."""
    return [Sample(unescape(line), "", n) for n, line in _data_lines(path)]


def read_evasion(path: Path = EVASION) -> list[Sample]:
    """Every message of the evasion corpus with its category."""
    out: list[Sample] = []
    for n, line in _data_lines(path):
        category, sep, message = line.partition("\t")
        if not sep:
            raise ValueError(f"{path.name}:{n}: no tab after the category")
        out.append(Sample(unescape(message), category, n))
    return out
