"""The cheap pre-checks of normalize and detectors only skip work that cannot matter.

Each pre-check is a necessary condition: with every one of them forced to "run", the views
and findings must be exactly the same as with them.
"""

from __future__ import annotations

import random
import re

import pytest

from policy import detectors, normalize
from policy.detectors import DetectorConfig, Detectors
from policy.normalize import View, Views, normalise
from tests.policy.corpus_reader import read_clean, read_evasion

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


@pytest.mark.parametrize("text", _texts())
def test_detector_pre_checks_never_hide_a_finding(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = Detectors(DetectorConfig())
    expected = fast.find(normalise(text))
    slow = Detectors(DetectorConfig())
    slow._phone_shape = re.compile(rb"")
    monkeypatch.setattr(detectors, "_has_five_digits", lambda _text: True)
    assert slow.find(_forced_views(text)) == expected


def test_the_joined_hint_trie_finds_what_the_alternation_finds() -> None:
    rng = random.Random(5)
    words = ["killyou", "killhim", "killmyself", "kill", "selfharm", "snitches", "a.b", "x"]
    trie = re.compile(detectors._literal_trie(words))
    flat = re.compile("|".join(re.escape(w) for w in words))
    assert trie.pattern.startswith("(?:")
    alphabet = "kilyoumhsefar.bx "
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        assert (trie.search(text) is None) == (flat.search(text) is None), text
        assert bool(trie.fullmatch(text)) == (text in words), text
    assert re.compile(detectors._literal_trie([])).search("anything") is None
