"""Tests of policy.normalize: each disguise undone, spans mapped back, invariants kept."""

from __future__ import annotations

import random
import unicodedata

import pytest

from policy.normalize import (
    CONFUSABLES,
    DEFAULT_IGNORABLE,
    View,
    Views,
    has_bidi_controls,
    is_default_ignorable,
    normalise,
)


def views_of(text: str) -> tuple[str, str, str]:
    v = normalise(text)
    return v.skeleton.text, v.letters.text, v.digits.text


def original_of(views: Views, view: View, needle: str) -> str:
    """The original text under the first occurrence of ``needle`` in ``view``."""
    i = view.text.index(needle)
    a, b = view.span(i, i + len(needle))
    return views.original[a:b]


def check_invariants(views: Views) -> None:
    n = len(views.original)
    for view in (views.skeleton, views.letters, views.digits):
        assert len(view.starts) == len(view.ends) == len(view.text)
        for i, (a, b) in enumerate(zip(view.starts, view.ends, strict=True)):
            assert 0 <= a < b <= n, (views.original, view.text, i)
            if i:
                assert view.starts[i - 1] <= a
                assert view.ends[i - 1] <= b


# --- skeleton ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "gmаil",  # Cyrillic а
        "gmaіl",  # Cyrillic і
        "GMAІL",  # Cyrillic capital І
        "gmαil",  # Greek alpha
        "ｇｍａｉｌ",  # fullwidth
        "𝐠𝐦𝐚𝐢𝐥",  # mathematical bold
        "𝔤𝔪𝔞𝔦𝔩",  # mathematical fraktur
        "gm\u200bai\u00adl",  # zero-width space, soft hyphen
        "g\u200dm\u2060a\ufeffi\u034fl",  # ZWJ, word joiner, BOM, CGJ
        "gm̷a̷il",  # combining marks
        "gmäíl",  # diacritics
    ],
)
def test_gmail_disguises(text: str) -> None:
    assert views_of(text) == ("gmail", "gmail", "gmail")


def test_facebook_cyrillic_and_greek() -> None:
    assert normalise("fасеbооk").skeleton.text == "facebook"  # Cyrillic а с е о о
    assert normalise("FΑCΕΒΟΟΚ").skeleton.text == "facebook"  # Greek capitals


def test_bidi_override_in_url() -> None:
    text = "see gmail\u202e.com/x"
    views = normalise(text)
    assert views.skeleton.text == "see gmail.com/x"
    assert original_of(views, views.skeleton, "gmail.com") == "gmail\u202e.com"
    assert has_bidi_controls(text)
    assert not has_bidi_controls("see gmail.com")


def test_default_ignorable_table() -> None:
    for cp in (0xAD, 0x34F, 0x61C, 0x200B, 0x202E, 0x2066, 0xFE0F, 0xFEFF, 0x1D173, 0xE0041):
        assert is_default_ignorable(chr(cp))
    assert not is_default_ignorable("a")
    assert not is_default_ignorable(" ")
    assert len(DEFAULT_IGNORABLE) > 4000


def test_confusables_map_to_ascii() -> None:
    assert CONFUSABLES["а"] == "a"
    assert CONFUSABLES["ο"] == "o"
    assert CONFUSABLES["․"] == "."  # one dot leader
    assert all(v.isascii() and not k.isascii() for k, v in CONFUSABLES.items())


def test_digit_lookalikes_become_ascii_digits() -> None:
    assert views_of("５５５")[2] == "555"
    assert views_of("𝟓𝟓𝟓")[2] == "555"
    assert views_of("٥٥٥ ۱۲")[2] == "55512"  # Arabic-Indic, extended Arabic-Indic
    assert views_of("5\u200b5\u00ad5")[2] == "555"


def test_casefold_and_expansion_keep_spans() -> None:
    views = normalise("STRAẞE")
    assert views.skeleton.text == "strasse"
    assert original_of(views, views.skeleton, "ss") == "ẞ"


# --- letters view -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["j.o.h.n", "J O H N", "j_o_h_n", "j - o - h - n", "j.\u200bo.h.n"]
)
def test_spread_letters_are_joined(text: str) -> None:
    assert normalise(text).letters.text == "john"


def test_banned_with_dashes() -> None:
    assert normalise("b-a-n-n-e-d").letters.text == "banned"


def test_email_spelled_out_span() -> None:
    views = normalise("j.o.h.n at g m a i l dot com")
    assert views.letters.text == "john at gmail dot com"
    assert original_of(views, views.letters, "gmail") == "g m a i l"
    assert original_of(views, views.letters, "john") == "j.o.h.n"


def test_changed_separator_ends_a_run() -> None:
    assert normalise("g m a i l . c o m").letters.text == "gmail . com"


def test_two_singles_and_code_are_not_joined() -> None:
    code = "for i in range(10): print(i)"
    assert normalise(code).letters.text == code
    assert normalise("x = y + z").letters.text == "x = y + z"
    assert normalise("a b").letters.text == "a b"


@pytest.mark.parametrize(
    ("text", "letters"),
    [
        ("h3ll0 w0rld", "hello world"),
        ("fr33 c4ll", "free call"),
        ("p@ssw0rd", "password"),
        ("f r 3 3", "free"),
        ("555-1212", "555-1212"),
        ("room 101", "room 101"),
        ("hello!", "hello!"),
        ("john@gmail.com", "john@gmail.com"),
    ],
)
def test_leetspeak(text: str, letters: str) -> None:
    assert normalise(text).letters.text == letters


def test_leet_keeps_spans_per_character() -> None:
    views = normalise("say h3ll0")
    assert original_of(views, views.letters, "hello") == "h3ll0"
    assert original_of(views, views.letters, "ll") == "ll"


# --- digits view ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("5 5 5 - 1 2 1 2", "5551212"),
        ("five five five one two one two", "5551212"),
        ("FIVE five fiveonetwo", "55512"),
        ("double five", "55"),
        ("triple 5 double oh seven", "555007"),
        ("five oh five", "505"),
        ("(555) 121-2121", "5551212121"),
        ("call +1 (555) 121.2121 now", "call +15551212121 now"),
        ("5\u200b5\u200d5 1\u00ad2", "55512"),
        ("one question, please", "1 question, please"),
        ("oh well", "oh well"),
        ("someone is done", "someone is done"),
    ],
)
def test_digits(text: str, digits: str) -> None:
    assert normalise(text).digits.text == digits


def test_code_keeps_range_call() -> None:
    digits = normalise("for i in range(10): print(i)").digits.text
    assert digits == "for i in range(10): print(i)"


def test_digits_spans() -> None:
    views = normalise("ring 5 5 5 - 1 2 1 2 later")
    assert original_of(views, views.digits, "5551212") == "5 5 5 - 1 2 1 2"
    views = normalise("ring five five five")
    assert original_of(views, views.digits, "555") == "five five five"
    views = normalise("ring double five")
    assert original_of(views, views.digits, "55") == "double five"


# --- View API ---------------------------------------------------------------------------


def test_view_span_rejects_empty_or_out_of_range() -> None:
    view = normalise("abc").skeleton
    assert view.span(0, 3) == (0, 3)
    for start, end in ((1, 1), (2, 1), (-1, 2), (0, 4)):
        with pytest.raises(ValueError, match="slice"):
            view.span(start, end)


def test_view_checks_lengths() -> None:
    with pytest.raises(ValueError, match="every character"):
        View("ab", (0,), (1,))


def test_plain_ascii_views_share_the_skeleton() -> None:
    views = normalise("Please review the loop in the second cell.")
    assert views.letters is views.skeleton
    assert views.digits is views.skeleton


def test_empty_text() -> None:
    views = normalise("")
    assert views_of("") == ("", "", "")
    check_invariants(views)


# --- generated inputs -------------------------------------------------------------------

_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzJOHN0123456789 .-_,()@$|!/:+\n"
    "аеіоАОΑΟαο𝐚𝟓５ｇ٥ßẞﬁé\u0301\u0337"
    "\u00ad\u200b\u200d\u202e\u2066\ufeff\U000e0041\U0001d173"
)
_WORDS = [
    "five", "oh", "o", "double", "triple", "one", "two", "nine", "zero", "at", "dot",
    "j.o.h.n", "g m a i l", "h3ll0", "5 5 5", "(555)", "121-2121", "fr33",
]  # fmt: skip


def _random_text(rng: random.Random) -> str:
    parts: list[str] = []
    for _ in range(rng.randrange(0, 12)):
        if rng.random() < 0.4:
            parts.append(rng.choice(_WORDS))
        else:
            parts.append("".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(1, 8))))
        parts.append(rng.choice(["", " ", " ", ".", "-", " - "]))
    return "".join(parts)


def test_invariants_on_generated_inputs() -> None:
    rng = random.Random(20240501)
    for _ in range(1500):
        text = _random_text(rng)
        views = normalise(text)
        assert views.original == text
        check_invariants(views)
        # The skeleton never holds a default-ignorable character.
        assert not any(c in DEFAULT_IGNORABLE for c in views.skeleton.text)


def test_invariants_on_random_code_points() -> None:
    rng = random.Random(7)
    for _ in range(300):
        text = "".join(chr(rng.randrange(0x20, 0x30000)) for _ in range(rng.randrange(0, 40)))
        views = normalise(text)
        check_invariants(views)
        # Decimal digits of any script come out as ASCII digits.
        for c in views.skeleton.text:
            if unicodedata.decimal(c, None) is not None:
                assert c.isascii()
