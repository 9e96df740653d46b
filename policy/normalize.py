"""Normalise chat text before content rules match on it.

People who want to smuggle a phone number, an e-mail address, a link or a banned word past
the relay disguise it: look-alike letters from other scripts (Cyrillic ``а`` for ``a``),
fullwidth or mathematical letters, zero-width and bidi control characters inside words,
leetspeak (``h3ll0``), letters or digits spread out (``j.o.h.n``, ``5 5 5 - 1 2 1 2``) and
digits spelled out (``five five five``). :func:`normalise` undoes these disguises and
returns three :class:`View` s of a text, each with a map back to the original, so that a
detector can run its regexes on a view and report the span of the *original* text it found.

The views, each built from the previous step:

``skeleton``
    Per original character: default-ignorable code points removed (:data:`DEFAULT_IGNORABLE`);
    NFKD, combining marks dropped (``é`` -> ``e``, "zalgo" marks), NFKC; decimal digits of any
    script become ASCII digits; case folded; then the character is replaced by an ASCII
    look-alike from Unicode's confusables data where one exists (:data:`CONFUSABLES`).
    Spaces and punctuation are kept.
``letters``
    For words. The skeleton with runs of at least three single characters joined
    (``j.o.h.n`` -> ``john``) and leetspeak folded inside tokens that contain letters
    (``h3ll0`` -> ``hello``). See :func:`_join_singles` and :func:`_fold_leet`.
``digits``
    For numbers. The skeleton with spelled-out digits replaced by digits (``five`` -> ``5``,
    ``double five`` -> ``55``, ``oh`` -> ``0`` next to digits) and separators between digits
    removed (``(555) 121-2121`` -> ``5551212121``). See :func:`_digits_view`.

Limits (what this module does not do):

* Visual reordering. Bidi controls (U+202A..U+202E, U+2066..U+2069) are removed, so the views
  hold the *logical* order. ``"moc.liamg"`` written after U+202E displays as ``gmail.com``
  but stays ``moc.liamg`` here; a rule should refuse text with bidi controls outright
  (:func:`has_bidi_controls`).
* Composition across original characters: each original character is normalised on its
  own, so a decomposed sequence such as Hangul conjoining jamo is not composed.
* Confusables: only look-alikes whose prototype is ASCII are mapped; characters that merely
  resemble a letter but are not listed in Unicode's data stay as they are. Leetspeak is a
  fixed one-to-one table (``1`` -> ``i``, never ``l``), so ``ki11`` folds to ``kiii``.
* Spelled-out numbers: only the digits zero..nine, ``oh``/``o`` for zero next to digits,
  and ``double``/``triple``/``treble`` before a digit; no tens (``twenty``), no other
  languages, and not spelled-out words that are themselves spread out (``f i v e``).
* Views are detection aids: they deliberately over-join (``1.5`` -> ``15`` in the digits view,
  ``mp3`` -> ``mpe`` in the letters view); detectors decide what a match means.

Pure: the confusables data is loaded once, at import.
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources

__all__ = [
    "CONFUSABLES",
    "DEFAULT_IGNORABLE",
    "DEFAULT_IGNORABLE_RANGES",
    "LEET",
    "View",
    "Views",
    "has_bidi_controls",
    "is_default_ignorable",
    "normalise",
]


@dataclass(frozen=True, slots=True)
class View:
    """One normalised form of a text, with a map back to the original.

    ``text[i]`` came from ``original[starts[i]:ends[i]]``. Every such span is non-empty and
    both ``starts`` and ``ends`` are non-decreasing, so any slice of ``text`` maps to one
    contiguous span of the original (:meth:`span`).
    """

    text: str
    starts: tuple[int, ...]
    ends: tuple[int, ...]

    def __post_init__(self) -> None:
        # Only the O(1) check: the full invariant is guaranteed by construction and tested.
        if len(self.starts) != len(self.text) or len(self.ends) != len(self.text):
            raise ValueError("a view maps every character of its text to the original")

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span covering ``text[start:end]`` (``end > start``)."""
        if not 0 <= start < end <= len(self.text):
            raise ValueError(f"not a non-empty slice of the view: [{start}:{end}]")
        return self.starts[start], self.ends[end - 1]


@dataclass(frozen=True, slots=True)
class Views:
    """The normalised views of one text; see the module docstring for each view."""

    original: str
    skeleton: View
    letters: View
    digits: View


# --- default-ignorable code points ------------------------------------------------------

DEFAULT_IGNORABLE_RANGES: tuple[tuple[int, int], ...] = (
    # Default_Ignorable_Code_Point from DerivedCoreProperties.txt, Unicode 15.1.0
    # (unchanged in 16.0.0). Inclusive ranges.
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # Arabic letter mark
    (0x115F, 0x1160),  # Hangul choseong/jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian free variation selectors, vowel separator
    (0x200B, 0x200F),  # zero width space/non-joiner/joiner, LRM, RLM
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2060, 0x206F),  # word joiner, invisible operators, bidi isolates, deprecated formats
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),  # zero width no-break space (BOM)
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xFFF0, 0xFFF8),  # unassigned specials
    (0x1BCA0, 0x1BCA3),  # shorthand format controls
    (0x1D173, 0x1D17A),  # musical symbol formatting
    (0xE0000, 0xE0FFF),  # tags, variation selectors supplement, unassigned
)

DEFAULT_IGNORABLE: frozenset[str] = frozenset(
    chr(cp) for lo, hi in DEFAULT_IGNORABLE_RANGES for cp in range(lo, hi + 1)
)
"""Every Default_Ignorable_Code_Point, as one-character strings (about 4,400)."""


def is_default_ignorable(ch: str) -> bool:
    """True if the one-character string ``ch`` is a Default_Ignorable_Code_Point."""
    return ch in DEFAULT_IGNORABLE


_BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def has_bidi_controls(text: str) -> bool:
    """True if ``text`` holds a bidi mark, embedding, override or isolate.

    The views drop these characters and keep the logical order, so a rule that wants to
    stop text that *displays* differently from how it is stored should refuse on this.
    """
    return _BIDI_CONTROLS.search(text) is not None


# --- confusables ------------------------------------------------------------------------


def _ascii_rank(proto: str) -> tuple[int, str]:
    """Order candidate prototypes: lower-case letters, letters, digits, punctuation."""
    if proto.isalpha():
        return (0 if proto.islower() else 1, proto)
    if proto.isdigit():
        return (2, proto)
    return (3, proto)


def _usable_prototype(proto: str) -> bool:
    """ASCII, printable, no whitespace: a letter, digit or punctuation look-alike."""
    return bool(proto) and proto.isascii() and proto.isprintable() and " " not in proto


def _load_confusables() -> dict[str, str]:
    """Map non-ASCII characters to an ASCII look-alike, from ``confusable-homoglyphs``.

    The package ships Unicode's confusables.txt (UTS #39) as JSON: each character maps to a
    list of homoglyphs. For a character that is a *source* in confusables.txt the list
    holds its prototype (``"а": ["a"]``); for a prototype it lists its sources
    (``"l": ["|", "1", "I", "ǀ", ...]``). Both directions are used: a non-ASCII character
    gets an ASCII look-alike if it lists one or is listed by one. Where several exist,
    lower-case letters win over capitals, digits and punctuation. Multi-character ASCII
    prototypes are kept (e.g. ``"㎖"``-like ligatures), multi-character *sources* (``"rn"``
    looks like ``m``) are not: the relay does not rewrite ASCII.
    Bidi marks the package wraps around right-to-left entries are removed first.
    """
    raw = resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8")
    data: dict[str, list[dict[str, str]]] = json.loads(raw)
    candidates: dict[str, set[str]] = {}
    for key, entries in data.items():
        for entry in entries:
            other = entry["c"].replace("\u200e", "").replace("\u200f", "")
            if len(key) == 1 and not key.isascii() and _usable_prototype(other):
                candidates.setdefault(key, set()).add(other)
            elif (
                len(other) == 1 and not other.isascii() and len(key) == 1 and _usable_prototype(key)
            ):
                candidates.setdefault(other, set()).add(key)
    return {ch: min(protos, key=_ascii_rank) for ch, protos in candidates.items()}


CONFUSABLES: dict[str, str] = _load_confusables()
"""Non-ASCII character -> ASCII look-alike (from Unicode's confusables data)."""

_MARKS = frozenset({"Mn", "Me"})
_char_cache: dict[str, str] = {}
_CHAR_CACHE_MAX = 1 << 16


def _skeleton_char(ch: str) -> str:
    """The skeleton of one non-ASCII original character (possibly empty or several chars).

    Steps: drop default-ignorables; NFKD and drop combining marks, then NFKC (so ``é`` -> ``e``,
    ``ｇ`` -> ``g``, ``𝐚`` -> ``a``, ``ﬁ`` -> ``fi``); a decimal digit of any script -> its
    ASCII digit; case fold and replace by the ASCII look-alike from :data:`CONFUSABLES` of
    the folded character, or of the character itself when only that has one; lower-case.
    """
    cached = _char_cache.get(ch)
    if cached is not None:
        return cached
    out: list[str] = []
    if ch not in DEFAULT_IGNORABLE:
        decomposed = unicodedata.normalize("NFKD", ch)
        stripped = "".join(c for c in decomposed if unicodedata.category(c) not in _MARKS)
        for c in unicodedata.normalize("NFKC", stripped):
            if c.isascii():
                out.append(c.lower())
            elif c in DEFAULT_IGNORABLE:
                continue
            elif (digit := unicodedata.decimal(c, -1)) >= 0:
                out.append(str(digit))
            else:
                folded = c.casefold()
                if len(folded) == 1 and folded not in CONFUSABLES and c in CONFUSABLES:
                    # Greek capital Epsilon looks like "E"; its small form does not look
                    # like "e". Lower-case forms win otherwise (Cyrillic "І" -> "і" -> "i",
                    # where "І" itself is listed as "l").
                    out.append(CONFUSABLES[c].lower())
                    continue
                for f in folded:
                    out.append(CONFUSABLES.get(f, f).lower())
    result = "".join(out)
    if len(_char_cache) < _CHAR_CACHE_MAX:
        _char_cache[ch] = result
    return result


_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_INDEX = tuple(range(4097))
"""Shared identity maps for ASCII texts: slicing a tuple is cheaper than building one."""


def _skeleton(text: str) -> View:
    """The skeleton view: ASCII runs are lower-cased in bulk, other characters one by one."""
    n = len(text)
    if text.isascii():
        if n < len(_INDEX):
            return View(text.lower(), _INDEX[:n], _INDEX[1 : n + 1])
        return View(text.lower(), tuple(range(n)), tuple(range(1, n + 1)))
    parts: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    for m in _NON_ASCII.finditer(text):
        a, b = m.span()
        if pos < a:
            parts.append(text[pos:a].lower())
            starts.extend(range(pos, a))
            ends.extend(range(pos + 1, a + 1))
        for i in range(a, b):
            s = _skeleton_char(text[i])
            if s:
                parts.append(s)
                k = len(s)
                if k == 1:
                    starts.append(i)
                    ends.append(i + 1)
                else:
                    starts.extend([i] * k)
                    ends.extend([i + 1] * k)
        pos = b
    if pos < n:
        parts.append(text[pos:].lower())
        starts.extend(range(pos, n))
        ends.extend(range(pos + 1, n + 1))
    return View("".join(parts), tuple(starts), tuple(ends))


# --- rewriting a view -------------------------------------------------------------------

Piece = tuple[str, int, int]
"""``(out, a, b)``: ``out`` replaces view characters ``[a, b)``. Same length: character by
character; otherwise every character of ``out`` maps to the whole span of ``[a, b)``."""

Edit = tuple[int, int, Sequence[Piece]]
"""``(a, b, pieces)``: view characters ``[a, b)`` are replaced by ``pieces`` (in order,
inside ``[a, b)``; characters not covered by a piece are dropped)."""


def _apply(view: View, edits: Iterable[Edit]) -> View:
    """A new view with ``edits`` (sorted, non-overlapping) applied; ``view`` if there are none.

    Unchanged stretches are copied as tuple slices, so the cost is in the number of edits,
    not the length of the text. Pieces keep the span map monotonic because they are in order.
    """
    if isinstance(edits, list) and len(edits) <= 8:
        return _apply_few(view, edits)
    text, vs, ve = view.text, view.starts, view.ends
    parts: list[str] = []
    starts: list[tuple[int, ...]] = []
    ends: list[tuple[int, ...]] = []
    pos = 0
    for a, b, pieces in edits:
        parts.append(text[pos:a])
        starts.append(vs[pos:a])
        ends.append(ve[pos:a])
        for out, pa, pb in pieces:
            parts.append(out)
            if len(out) == pb - pa:
                starts.append(vs[pa:pb])
                ends.append(ve[pa:pb])
            else:
                starts.append((vs[pa],) * len(out))
                ends.append((ve[pb - 1],) * len(out))
        pos = b
    if not parts:
        return view
    parts.append(text[pos:])
    starts.append(vs[pos:])
    ends.append(ve[pos:])
    return View("".join(parts), _concat(starts), _concat(ends))


def _apply_few(view: View, edits: list[Edit]) -> View:
    """:func:`_apply` for a few edits: growing tuples is cheapest then (each ``+=`` copies,
    so the number of concatenations stays bounded: two per edit)."""
    text, vs, ve = view.text, view.starts, view.ends
    parts: list[str] = []
    starts: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()
    pos = 0
    for a, b, pieces in edits:
        parts.append(text[pos:a])
        starts += vs[pos:a]
        ends += ve[pos:a]
        if len(pieces) == 1:
            out, pa, pb = pieces[0]
            parts.append(out)
            k = len(out)
            if k == pb - pa:
                starts += vs[pa:pb]
                ends += ve[pa:pb]
            else:
                starts += (vs[pa],) * k
                ends += (ve[pb - 1],) * k
        elif pieces:
            # Many pieces (a joined run): one concatenation per edit keeps this linear.
            piece_starts: list[tuple[int, ...]] = []
            piece_ends: list[tuple[int, ...]] = []
            for out, pa, pb in pieces:
                parts.append(out)
                k = len(out)
                if k == pb - pa:
                    piece_starts.append(vs[pa:pb])
                    piece_ends.append(ve[pa:pb])
                else:
                    piece_starts.append((vs[pa],) * k)
                    piece_ends.append((ve[pb - 1],) * k)
            starts += _concat(piece_starts)
            ends += _concat(piece_ends)
        pos = b
    if not parts:
        return view
    parts.append(text[pos:])
    return View("".join(parts), starts + vs[pos:], ends + ve[pos:])


def _concat(chunks: list[tuple[int, ...]]) -> tuple[int, ...]:
    """Concatenate tuples: ``+`` is fastest for a few chunks, ``chain`` stays linear for many."""
    if len(chunks) <= 16:
        out: tuple[int, ...] = ()
        for chunk in chunks:
            out += chunk
        return out
    return tuple(itertools.chain.from_iterable(chunks))


# --- letters view -----------------------------------------------------------------------

# Three or more single letters/digits, each separated by the same 1-3 non-alphanumeric
# characters: "j.o.h.n", "J O H N", "j_o_h_n", "b - a - n". A single is not touching another
# letter or digit. The separator must repeat exactly, so "x = y + z" is not joined, and
# "g m a i l . c o m" joins to "gmail . com" (the " . " ends the first run).
_SINGLES = re.compile(r"(?<![^\W_])[^\W_](?P<sep>[\W_]{1,3}?)(?:[^\W_](?P=sep))+[^\W_](?![^\W_])")
_HAS_LETTER = re.compile(r"[^\W\d_]")

LEET: dict[str, str] = {
    "0": "o",
    "1": "i",
    "2": "z",
    "3": "e",
    "4": "a",
    "5": "s",
    "6": "g",
    "7": "t",
    "8": "b",
    "9": "g",
    "@": "a",
    "$": "s",
    "|": "l",
    "!": "i",
}
"""Leetspeak folding used by the letters view (one character to one letter)."""

_LEET_DIGITS = str.maketrans({k: v for k, v in LEET.items() if k.isdigit()})
_LEET_ALL = str.maketrans(LEET)
_LEET_NO_AT = str.maketrans({k: v for k, v in LEET.items() if k != "@"})
# A token (run of a-z, digits and leet symbols) with at least one letter and one leet char.
_LEET_TOKEN = re.compile(
    r"(?<![a-z0-9@$|!])(?=[a-z0-9@$|!]*[a-z])[a-z0-9@$|!]*[0-9@$|!][a-z0-9@$|!]*"
)
_EMAIL_TAIL = re.compile(r"\.[a-z0-9]")


def _join_singles(view: View) -> View:
    """Join runs of >= 3 single characters that contain a letter; drop their separators.

    ``"j.o.h.n"`` -> ``"john"``, ``"g m a i l"`` -> ``"gmail"``, ``"f r 3 3"`` -> ``"fr33"``
    (leet folding runs afterwards). Runs of digits only (``"5 5 5"``) are left for the digits
    view; two singles (``"i in"``, ``"a b"``) are ordinary text and stay. Each joined
    character keeps its own original span.
    """
    text = view.text
    edits: list[Edit] = []
    for m in _SINGLES.finditer(text):
        if _HAS_LETTER.search(m.group()) is None:
            continue
        a, b = m.span()
        step = 1 + len(m.group("sep"))
        edits.append((a, b, [(text[i], i, i + 1) for i in range(a, b, step)]))
    return _apply(view, edits)


def _fold_leet(view: View) -> View:
    """Fold leetspeak inside tokens that contain a letter: ``h3ll0`` -> ``hello``.

    Digits fold anywhere in such a token; the symbols ``@ $ | !`` only between two token
    characters (so ``hello!`` keeps its ``!``), and ``@`` not when the token is followed by
    ``.`` and a letter or digit (``john@gmail.com`` stays an address). Tokens without letters
    (``555-1212``, ``10``) are untouched. One-to-one, so spans are kept per character.
    """
    text = view.text
    edits: list[Edit] = []
    for m in _LEET_TOKEN.finditer(text):
        token = m.group()
        a, b = m.span()
        table = _LEET_ALL
        if "@" in token and _EMAIL_TAIL.match(text, b):
            table = _LEET_NO_AT
        # len(token) >= 2: it holds a letter and a leet character.
        folded = (
            token[0].translate(_LEET_DIGITS)
            + token[1:-1].translate(table)
            + token[-1].translate(_LEET_DIGITS)
        )
        if folded != token:
            edits.append((a, b, [(folded, a, b)]))
    return _apply(view, edits)


# --- digits view ------------------------------------------------------------------------

_DIGIT_WORDS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
_WORD_ALT = "|".join(_DIGIT_WORDS)
# A whole word made of digit words: "five", "fiveone" (not "someone", not "none").
# The lookahead lists the first letters of the digit words, so the engine can skip ahead.
_NUMBER_WORD = re.compile(rf"(?=[zotfsen])\b(?:{_WORD_ALT})+\b")
_ONE_WORD = re.compile(_WORD_ALT)
_SEP_CLASS = r"[\s.\-/\\(),_*~:;'\"]"
_SEP_CHARS = frozenset(" \t\n\r\f\v.-/\\(),_*~:;'\"")
_OH = re.compile(r"\boh?\b")
_REPEAT = re.compile(rf"\b(double|triple|treble){_SEP_CLASS}{{0,3}}([0-9])")
_REPEAT_TIMES = {"double": 2, "triple": 3, "treble": 3}
# Either "(" opening an area code ("(555) 121") or a digit followed by a run of separators
# (group 1) and another digit. Starts with a character class so the regex engine can skip.
_BETWEEN_DIGITS = re.compile(
    rf"[0-9(](?:(?<=\()(?=[0-9]+\){_SEP_CLASS}*[0-9])|(?<=[0-9])({_SEP_CLASS}+)(?=[0-9]))"
)


def _number_words(view: View, start: int = 0) -> View:
    """``five`` -> ``5``; ``fiveone`` -> ``51`` (each digit maps to its word's span).

    ``start``: no digit word begins before this index (see :func:`_hints`)."""
    text = view.text
    edits: list[Edit] = []
    for m in _NUMBER_WORD.finditer(text, start):
        base, end = m.span()
        digit = _DIGIT_WORDS.get(m.group())
        if digit is not None:  # one word, the usual case
            edits.append((base, end, [(digit, base, end)]))
            continue
        pieces = [
            (_DIGIT_WORDS[w.group()], base + w.start(), base + w.end())
            for w in _ONE_WORD.finditer(m.group())
        ]
        edits.append((base, end, pieces))
    return _apply(view, edits)


def _digit_near(text: str, index: int, step: int) -> bool:
    """True if a digit is at ``index`` or beyond up to three separators in direction
    ``step``."""
    for _ in range(4):
        if not 0 <= index < len(text):
            return False
        c = text[index]
        if "0" <= c <= "9":
            return True
        if c not in _SEP_CHARS:
            return False
        index += step
    return False


def _oh_as_zero(view: View) -> View:
    """``oh``/``o`` -> ``0`` when a digit is next to it (``5 oh 5`` -> ``5 0 5``)."""
    text = view.text
    edits: list[Edit] = [
        (m.start(), m.end(), [("0", m.start(), m.end())])
        for m in _OH.finditer(text)
        if _digit_near(text, m.start() - 1, -1) or _digit_near(text, m.end(), 1)
    ]
    return _apply(view, edits)


def _repeats(view: View) -> View:
    """``double 5`` -> ``55``, ``triple 5``/``treble 5`` -> ``555`` (mapped to the phrase)."""
    edits: list[Edit] = [
        (m.start(), m.end(), [(m.group(2) * _REPEAT_TIMES[m.group(1)], m.start(), m.end())])
        for m in _REPEAT.finditer(view.text)
    ]
    return _apply(view, edits)


def _drop_separators(view: View) -> View:
    """Remove separators between digits, and an area-code ``(``.

    ``(555) 121-2121`` -> ``5551212121``, ``5 5 5 - 1 2 1 2`` -> ``5551212``. Any run of
    spaces, dots, dashes, slashes, backslashes, parentheses, commas, underscores and
    ``* ~ : ; ' "`` between two digits goes, however long; ``+`` stays (a country code
    means something to a phone-number parser).
    """
    edits: list[Edit] = [
        (m.start(1), m.end(1), ()) if m.group(1) else (m.start(), m.end(), ())
        for m in _BETWEEN_DIGITS.finditer(view.text)
    ]
    return _apply(view, edits)


# --- the fast path's hints --------------------------------------------------------------


def _table(mapping: dict[int, int], default: int) -> bytes:
    return bytes(mapping.get(i, default) for i in range(256))


_LETTER_CODES = range(ord("a"), ord("z") + 1)
_DIGIT_CODES = range(ord("0"), ord("9") + 1)
# Byte classes of a lower-case ASCII skeleton: letter "a", digit "0", leet symbol "!", else " ".
_CLASSES = _table(
    {**dict.fromkeys(_LETTER_CODES, ord("a")), **dict.fromkeys(_DIGIT_CODES, ord("0"))}
    | dict.fromkeys(b"@$|!", ord("!")),
    ord(" "),
)
# Letters and digits as "a", "?" (a non-ASCII character: maybe a letter, maybe a
# separator) kept, anything else a space.
_ALNUM = _table(
    dict.fromkeys([*_LETTER_CODES, *_DIGIT_CODES], ord("a")) | {ord("?"): ord("?")}, ord(" ")
)
_ALNUM_ASCII = _table(dict.fromkeys([*_LETTER_CODES, *_DIGIT_CODES], ord("a")), ord(" "))
# Three single characters separated by one to three separators (what ``_SINGLES`` needs),
# "?" counting as either a character or a separator; the ASCII form (on space-padded
# text) starts with a literal, which the regex engine finds fast.
_THREE_SINGLES = re.compile(rb"(?<!a)[a?][ ?]{1,3}[a?][ ?]{1,3}[a?](?!a)")
_THREE_SINGLES_ASCII = re.compile(rb" a {1,3}a {1,3}a(?!a)")
# A leet symbol with a token character on both sides (only such symbols are folded).
_INNER_SYMBOL = re.compile(rb"!(?<=[a0!]!)[a0!]")
# Letters kept, everything else a space: the words.
_WORDS = _table({i: i for i in _LETTER_CODES}, ord(" "))
# A word (in the letters-only, space-padded text) that starts with a digit word: "one",
# "fiveone", "sevens" (not "someone", not "through"). Starts with a literal: fast to scan.
_DIGIT_WORD_START = re.compile(rb" (?:" + _WORD_ALT.encode() + rb")")

Hints = tuple[bool, bool, bool, int, bool, bool]
"""Which steps can change a text: singles, leet, digits, number words (the index of the
first possible digit word, -1 if none), oh, repeats."""


def _hints(skeleton: str) -> Hints:
    """Cheap necessary conditions for each step, from ``bytes.translate`` and substrings.

    A regex search costs 1-3 us per 100 characters; these checks together cost about one,
    so a plain chat line skips every regex that cannot match. Characters still non-ASCII in
    the skeleton become ``?``: the leet and number-word steps only act on ASCII, and ``?``
    counts as a possible single character, so every condition stays necessary.
    """
    raw = skeleton.encode("ascii", "replace")
    classes = raw.translate(_CLASSES)
    words = b" " + raw.translate(_WORDS) + b" "
    if skeleton.isascii():
        singles = _THREE_SINGLES_ASCII.search(b" " + raw.translate(_ALNUM_ASCII)) is not None
    else:
        singles = _THREE_SINGLES.search(raw.translate(_ALNUM)) is not None
    digits = b"0" in classes
    # The match is the space before the word: index i of ``words`` is index i - 1 of the
    # skeleton, so the word starts at the match's index. A digit word after a word
    # boundary of the skeleton always shows here, so none starts earlier.
    first_word = _DIGIT_WORD_START.search(words)
    number_words = first_word.start() if first_word is not None else -1
    # A token that folds holds a digit next to a letter, or else a leet symbol inside it
    # (a digit reaches the token's letter through letters and digits, or through a symbol).
    leet = (digits and (b"a0" in classes or b"0a" in classes)) or (
        _INNER_SYMBOL.search(classes) is not None
    )
    # "oh" and "double" only matter next to digits (see _digits_view).
    numeric = digits or number_words >= 0
    return (
        singles,
        leet,
        digits,
        number_words,
        numeric and (b" oh " in words or b" o " in words),
        numeric and (b" double " in words or b" triple " in words or b" treble " in words),
    )


def _letters_view(skeleton: View, hints: Hints) -> View:
    """Join spread-out single characters, then fold leetspeak (see the two steps)."""
    singles, leet = hints[0], hints[1]
    view = _join_singles(skeleton) if singles else skeleton
    if leet or view is not skeleton:
        view = _fold_leet(view)
    return view


def _digits_view(skeleton: View, hints: Hints) -> View:
    """Spelled-out digits to digits, then separators between digits removed.

    Order matters: words first (``five oh five``: ``5 oh 5``), then ``oh`` beside a digit
    (``5 0 5``), then ``double``/``triple`` before a digit, then separators (``505``).
    Letters elsewhere stay (lower-case) so detectors see the context (``call 5551212``).
    """
    _, _, digits, words, oh, repeats = hints
    view = _number_words(skeleton, words) if words >= 0 else skeleton
    has_digits = digits or view is not skeleton
    if has_digits and oh:
        view = _oh_as_zero(view)
    if has_digits and repeats:
        view = _repeats(view)
    if has_digits:
        view = _drop_separators(view)
    return view


def normalise(text: str) -> Views:
    """All views of ``text``; see the module docstring. Pure and cheap on plain ASCII."""
    skeleton = _skeleton(text)
    hints = _hints(skeleton.text)
    return Views(
        original=text,
        skeleton=skeleton,
        letters=_letters_view(skeleton, hints),
        digits=_digits_view(skeleton, hints),
    )
