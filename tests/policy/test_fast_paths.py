"""The cheap pre-checks of normalize and detectors only skip work that cannot matter.

Each pre-check is a necessary condition: with every one of them forced to "run", the views
and findings must be exactly the same as with them.
"""

from __future__ import annotations

import random
import re

import pytest

from policy import detectors, normalize
from policy.detectors import DetectorConfig, Detectors, LexiconTerm
from policy.normalize import View, Views, normalise
from tests.policy.corpus_reader import read_clean, read_evasion
from tests.policy.test_detectors import CONFIG

CRAFTED = [
    "Is it range(1, 10) or range(0, 10)? My loop prints nine numbers and I expected ten. Why?",
    "j.o.h.n at g m a i l . c o m",
    "j - o - h - n",
    "\u0458\u2014\u043e\u2014\u04bb\u2014n",
    "x\u00b7y\u00b7z and \u00e9 \u00e8 \u00ea",
    "h3ll0 th3r3 fr33 a!!b k!ll @dmin $hank h|dden",
    "hello! wow!! yes!!!",
    "five oh five, double 5, triple 7, treble one",
    "5five _five f1ve fiveone someone none",
    "\uff46\uff49\uff56\uff45 \uff15\uff15\uff15 \u0661\u0662\u0663\u0664\u0665",
    "(555) 121-2121 and 555\u2013121\u20132121 and 5o5 l2l2 and +44 20 7946 0958",
    "call 555 oh 1 2 1 2, zip 90210, Springfield, IL 62704",
    "221B Baker Street, PO Box 12, apt 4b, SW1A 1AA",
    "nine\u200bone\u200bone",
]


def _texts() -> list[str]:
    return CRAFTED + [s.message for s in read_clean()] + [s.message for s in read_evasion()]


def _forced_views(text: str) -> Views:
    skeleton = normalize._skeleton(text)
    hints: normalize.Hints = (True, True, True, 0, True, True)
    return Views(
        original=text,
        skeleton=skeleton,
        letters=normalize._letters_view(skeleton, hints),
        digits=normalize._digits_view(skeleton, hints),
    )


@pytest.mark.parametrize("text", _texts())
def test_hints_never_skip_a_step_that_changes_a_view(text: str) -> None:
    assert normalise(text) == _forced_views(text)


def test_hints_on_random_text() -> None:
    rng = random.Random(7)
    alphabet = "ab5o1 .-_!@$|(),\u00e9\u2014\u0430\u200b" + "five one double oh "
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        assert normalise(text) == _forced_views(text), text


def test_apply_with_many_edits_and_pieces_matches_the_general_path() -> None:
    view = normalize._skeleton("j.o.h.n " * 20)
    edits: list[normalize.Edit] = []
    for m in re.finditer(r"j\.o\.h\.n", view.text):
        a = m.start()
        edits.append((a, m.end(), [(view.text[i], i, i + 1) for i in range(a, m.end(), 2)]))
    few = normalize._apply(view, edits[:3])
    general = normalize._apply(view, iter(edits[:3]))
    assert few == general
    assert normalize._apply(view, edits) == normalize._apply(view, iter(edits))
    assert isinstance(few, View)


# The lexicon and do-not-contact list of the detector tests: the term pre-check depends
# on them.
REFERENCE = Detectors(CONFIG, prefilter=False)
FAST = Detectors(CONFIG)

# Edge cases of the pre-checks: terms joined in part, phone numbers without three digits
# in a row, a "+" after four separators, "p o b", a unit or street suffix that leetspeak
# hides in the letters view, top-level domains after each kind of dot.
EDGES = [
    "snitchesget stitches",
    "you'redead",
    "watch yourback",
    "roe,jane and tobias.wrenfield",
    "5o5-o5o-5oo5",
    "1o1-o1o-1oo1 call",
    "555----+1212----+1234",
    "call 555 1212",
    "po b 12",
    "p ob 12",
    "send to apt5 now",
    "12 main st!x",
    "12 main 5t",
    "gmail\n.com",
    "gmail\t. com",
    "bit\u3002ly/x",
    "john(at)gmail(dot)com",
    "john at gmail [.] com",
    "site .io",
    "x.xn--p1ai",
    "see www.python.py",
    "go to foo.is/bar",
    "mail me: j@protonmail",
    "jo@yandex",
    "ftp://10.1.2.3/x",
    "Springfield, IL 62704",
    "zip:90210",
    "TX\t75001-1234",
    "ec1a\x1c1bb",
    "SW1A 1AA",
    "ec1a 1 b b",
]


def _generated(seed: int, count: int) -> list[str]:
    """Texts glued from pieces every pre-check looks at (and pieces they must ignore)."""
    rng = random.Random(seed)
    pieces = [
        *("gmail", ".", " dot ", "com", "co", "is", "www", "/", ":", "http", "@", " at ", "io"),
        *("5", "55", "555", "1212", "1234", "-", " ", "(", ")", ",", "+", "plus ", "o", "l"),
        *("street", "st", "ave", "box", "po", "p.o.", "b", "apt", "unit", "zip", "ca", "il"),
        *("90210", "sw1a", "1aa", "snap", "chat", "my", "add me on", "kill", "you", "'re"),
        *("dead", "jane", "roe", "five", "oh", "double", "#", "[.]", "xn--p1ai", "me", "i"),
        *("proton", "mail", "\u3002", "\u200b", "\u00e9", "\u202e", "\u0430", "\n", "\t"),
        *("h3ll0", "$", "!", "j.o.h.n", "aGVsbG8gd29ybGQ=", "deadbeef", "0x", "?", "_"),
    ]
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 16))) for _ in range(count)]


@pytest.mark.parametrize("text", _texts() + EDGES)
def test_detector_pre_checks_never_hide_a_finding(text: str) -> None:
    assert FAST.find(normalise(text)) == REFERENCE.find(_forced_views(text))


@pytest.mark.parametrize("seed", range(8))
def test_detector_pre_checks_on_generated_text(seed: int) -> None:
    for text in _generated(seed, 1500):
        assert FAST.find(normalise(text)) == REFERENCE.find(_forced_views(text)), text


def test_the_reference_runs_the_detectors_the_pre_checks_skip() -> None:
    # Without the pre-checks the same findings come out (the tests above), so these
    # texts, which each pre-check refuses early, prove the reference really looks.
    for text in ("5o5-o5o-5oo5", "snitchesget stitches", "po b 12"):
        assert REFERENCE.find(_forced_views(text))


def test_term_words_use_the_rarer_end_of_each_term() -> None:
    words, always = detectors._term_words(CONFIG)
    assert not always
    assert {b"kill", b"killyou", b"dead", b"youredead", b"burner"} <= words
    assert b"you" not in words
    assert {b"jane", b"janeroe", b"roejane"} <= words
    odd = DetectorConfig(lexicon=(LexiconTerm("blaze 420", "watch"),))
    assert detectors._term_words(odd)[1]


@pytest.mark.parametrize("text", [*_texts(), *EDGES, "a\u0430\u200b\uff11x\u00e9"])
def test_blob_text_is_the_text_of_the_blob_view(text: str) -> None:
    assert detectors._blob_text(text) == detectors._blob_view(text).text


def test_postcode_and_zip_pre_checks_hold_on_random_text() -> None:
    rng = random.Random(11)
    alphabet = "0123456789 abdnuxikmovzipostZ\t\x1c.,-:"
    for _ in range(40_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))
        if detectors._INWARD.search(text) is not None:
            assert detectors._inward_possible(text), text
        if FAST._zip.search(text) is not None:
            assert detectors._zip_possible(text), text
    assert not detectors._inward_possible("my loop prints 9 numbers")
    assert detectors._inward_possible("sw1a 1aa")
