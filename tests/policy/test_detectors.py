"""Tests of policy.detectors: each category's positives and negatives, spans, and the corpora."""

from __future__ import annotations

from collections import Counter

import pytest

from policy.detectors import (
    DEFAULT_ALLOWED_DOMAINS,
    Category,
    DetectorConfig,
    Detectors,
    Finding,
    LexiconTerm,
    shannon_entropy,
)
from policy.normalize import normalise
from tests.policy.corpus_reader import read_clean, read_evasion

# The lexicon and do-not-contact list the corpus README assumes.
CONTRABAND: tuple[str, ...] = ("shank", "shiv", "burner phone", "burner cell", "drop spot")
CONTRABAND += ("smuggle", "contraband", "pruno")
THREATS: tuple[str, ...] = tuple(
    f"{verb} {who}" for verb in ("kill", "hurt", "stab") for who in ("you", "him", "her")
)
THREATS += ("you're dead", "watch your back", "snitches get stitches")
LEXICON = tuple(LexiconTerm(t, "contraband") for t in CONTRABAND) + tuple(
    LexiconTerm(t, "threat") for t in THREATS
)
NAMES = ("Jane Roe", "Marisol Quintero", "Tobias Wrenfield")

CONFIG = DetectorConfig(
    allowed_domains=DEFAULT_ALLOWED_DOMAINS, lexicon=LEXICON, do_not_contact=NAMES
)
DETECTORS = Detectors(CONFIG)


def find(text: str) -> tuple[Finding, ...]:
    return DETECTORS.find(normalise(text))


def categories(text: str) -> set[Category]:
    return {f.category for f in find(text)}


def spans(text: str, category: Category) -> list[str]:
    """The original text under each finding of ``category``."""
    return [text[f.start : f.end] for f in find(text) if f.category is category]


def detectors(text: str) -> set[str]:
    return {f.detector for f in find(text)}


# --- values -----------------------------------------------------------------------------


def test_finding_checks_itself() -> None:
    Finding(Category.URL, "url.bare_domain", 0, 3)
    with pytest.raises(ValueError, match="non-empty"):
        Finding(Category.URL, "url.bare_domain", 3, 3)
    with pytest.raises(ValueError, match="detector"):
        Finding(Category.URL, "", 0, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"phone_regions": ("ZZ",)}, "phone region"),
        ({"do_not_contact": ("Cher",)}, "first and last"),
        ({"min_hex_chars": 4}, "thresholds"),
        ({"min_phone_digits": 9, "max_phone_digits": 8}, "out of order"),
    ],
)
def test_config_rejects_nonsense(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DetectorConfig(**kwargs)  # type: ignore[arg-type]


def test_lexicon_term_needs_letters_and_category() -> None:
    with pytest.raises(ValueError, match="letter"):
        LexiconTerm("123", "x")
    with pytest.raises(ValueError, match="category"):
        LexiconTerm("shank", "")


def test_findings_sorted_and_overlaps_all_reported() -> None:
    text = "add me on snapchat: cool_kid99 or call 415 555 0134 or see bit.ly/x"
    found = find(text)
    assert [f.start for f in found] == sorted(f.start for f in found)
    assert {Category.SOCIAL, Category.PHONE, Category.URL} <= {f.category for f in found}
    both = find("\u202emoc.ebutuoy\u202c")
    assert {Category.URL, Category.HIDDEN} <= {f.category for f in both}


def test_entropy() -> None:
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abcd") == pytest.approx(2.0)


# --- URLs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("check this out https://bit.ly/3xYz", "https://bit.ly"),
        ("go to myspace dot com", "myspace dot com"),
        ("tinyurl[.]com/abc", "tinyurl[.]com"),
        ("hxxp://evil.com", "hxxp://evil.com"),
        ("t.me/coolkid99", "t.me"),
        ("read www.bbc.co.uk/news tonight", "www.bbc.co.uk"),
        ("g00gle.c0m/maps", "g00gle.c0m"),
        ("youtub\u0435.com", "youtub\u0435.com"),  # Cyrillic e
        ("www.hot\u200bmail.com", "www.hot\u200bmail.com"),
        ("it's bit dot, uh, ly slash 3xYz", "bit dot, uh, ly"),
        ("myspace, you know, .com", "myspace, you know, .com"),
        ("cool.app/invite", "cool.app"),
    ],
)
def test_url_found_with_span(text: str, expected: str) -> None:
    assert expected in spans(text, Category.URL)


@pytest.mark.parametrize(
    "text",
    [
        "console.log(user.name)",
        "UNIQUE constraint failed: students.email",
        "open main.py and index.html, style.css, app.js",
        "import os\nos.path.join('a', 'b')",
        "@app.route('/users')",
        "https://docs.python.org/3/library/functions.html",
        "see www.sqlite.org for the list",
        "git-scm.com has the book",
        "https://api.example.com/v1/students",
        "http://localhost:3000/about",
        "http://127.0.0.1:5000",
        "curl http://10.0.0.5:8080/",
        "the test domain is shop.test and api.invalid",
        "transition: all 0.3s ease-in-out;",
        "the dot product of two vectors",
        "main.cc compiles with g++",
        "Python 3.11.7 and numpy 1.26.4",
    ],
)
def test_url_not_found_in_code_and_allowed_hosts(text: str) -> None:
    assert Category.URL not in categories(text)


def test_allowed_domains_are_configurable() -> None:
    strict = Detectors(DetectorConfig(allowed_domains=frozenset()))
    assert any(f.category is Category.URL for f in strict.find(normalise("docs.python.org")))
    assert not strict.find(normalise("user@example.com at example.org"))


# --- e-mail -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("email me at k.lee@protonmail.com", "k.lee@protonmail.com"),
        ("write to tony.r@ridgeback-motors.com", "tony.r@ridgeback-motors.com"),
        ("john dot smith at gmail dot com", "smith at gmail dot com"),
        ("john [at] gmail [dot] com", "john [at] gmail [dot] com"),
        ("john smith at gmail", "smith at gmail"),
        ("email me at john dot smith at gmail", "smith at gmail"),
        ("john,smith@gmail,com", "smith@gmail,com"),
        ("\uff4a\uff4f\uff48\uff4e\uff20gmail.com", "\uff4a\uff4f\uff48\uff4e\uff20gmail.com"),
        ("j0hn@gm4il.c0m", "j0hn@gm4il.c0m"),
    ],
)
def test_email_found_with_span(text: str, expected: str) -> None:
    assert expected in spans(text, Category.EMAIL)


@pytest.mark.parametrize(
    "text",
    [
        'is_valid_email("user@example.com") should return True',
        "the form wants user@example.com, not user at example dot com",
        "ssh learner@10.0.0.5 from the lab terminal",
        "npm install express@4.18.2",
        "learner@pc-07:~/py101$ python3 main.py",
        "look at line 5",
        "at App (App.js:12:15)",
        "<a href='mailto:help@example.org'>Contact</a>",
    ],
)
def test_email_not_found(text: str) -> None:
    assert Category.EMAIL not in categories(text)


# --- phones -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call me at 617-555-0199", "617-555-0199"),
        ("(212) 555-0182", "(212) 555-0182"),
        ("+44 20 7946 0958", "+44 20 7946 0958"),
        ("call 555-0134 after six", "555-0134"),
        ("4 1 5 5 5 5 0 1 3 4", "4 1 5 5 5 5 0 1 3 4"),
        ("four one five double five five oh one three four", None),
        ("call 4l5 555 O134", "4l5 555 O134"),
        ("\u0664\u0661\u0665 \u0665\u0665\u0665 \u0660\u0661\u0663\u0664", None),
        ("my number is 415 555, then 01, then 34", "415 555, then 01, then 34"),
        ("415\xb7555\xb70134", "415\xb7555\xb70134"),
    ],
)
def test_phone_found_with_span(text: str, expected: str | None) -> None:
    found = spans(text, Category.PHONE)
    assert found
    if expected is not None:
        assert expected in found


@pytest.mark.parametrize(
    "text",
    [
        "rolls = [5, 5, 5, 1, 2, 1, 2]\nprint(Counter(rolls))",
        "Chrome 122.0.6261.94 is installed",
        "the timestamps look like 2024-03-15 14:30:00",
        "192.168.1.255 is the broadcast address",
        "255.255.255.255",
        "10! = 3,628,800",
        "1_000_000 is easier to read",
        "student ids are 1001, 1002 and 1003",
        "uname -a shows Linux pc-07 6.5.0-21-generic x86_64",
        "kill -9 4821 stopped it",
        "date +%Y-%m-%d prints 2024-03-15",
    ],
)
def test_phone_not_found(text: str) -> None:
    assert Category.PHONE not in categories(text)


# --- addresses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "detector"),
    [
        ("1234 Elm Street, Springfield, IL 62704", "address.street"),
        ("221B Baker St, London NW1 6XE", "address.street"),
        ("221B Baker St, London NW1 6XE", "address.postcode"),
        ("PO Box 1234", "address.po_box"),
        ("P.O.B. 1234", "address.po_box"),
        ("45 Elm Court, Unit 9", "address.unit"),
        ("my zip is 62704-1234", "address.zip"),
        ("Austin, TX 78701-1234", "address.zip"),
        ("S W 1 A 2 A A", "address.postcode"),
        ("one two three four elm street", "address.street"),
        ("1 2 3 4 E l m S t r e e t", "address.street"),
        ("Baker Street, the 221B one, London", "address.street"),
        ("88 M4pl3 Av3nue", "address.street"),
    ],
)
def test_address_found(text: str, detector: str) -> None:
    assert detector in detectors(text)


def test_address_span() -> None:
    text = "come find me at 1234 Elm Street when you're out"
    assert "1234 Elm Street" in spans(text, Category.ADDRESS)


@pytest.mark.parametrize(
    "text",
    [
        "Error: listen EADDRINUSE: address already in use :::3000",
        "ruff says E501 Line too long (104 > 88)",
        "we moved to room 204",
        "a 2 way merge",
        "it reached end of life in 2020",
        "the street is quiet",
    ],
)
def test_address_not_found(text: str) -> None:
    assert Category.ADDRESS not in categories(text)


# --- social -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "detector"),
    [
        ("add me on snapchat: cool_kid99", "social.app"),
        ("hit me up on whats, you know, app", "social.app"),
        ("message me on signal when you can", "social.invite"),
        ("hmu on ig", "social.invite"),
        ("sc: cool_kid99", "social.invite"),
        ("my ig is cool_kid99", "social.invite"),
        ("follow me @cool_kid99", "social.handle"),
        ("my discord is jsmith#1234", "social.tag"),
        ("ѕnарсhаt", "social.app"),
    ],
)
def test_social_found(text: str, detector: str) -> None:
    assert detector in detectors(text)


@pytest.mark.parametrize(
    "text",
    [
        "import signal\nsignal.signal(signal.SIGINT, handler)",
        "@property\ndef area(self):\n    return 1",
        "@app.route('/')",
        "@media (max-width: 600px) {}",
        "npm install --save-dev @types/node typescript",
        "which line are we on?",
        "lambda x: x * 2",
        "the snapshot test failed",
        "scroll-snap-type: x mandatory;",
        "@staticmethod vs @classmethod",
    ],
)
def test_social_not_found(text: str) -> None:
    assert Category.SOCIAL not in categories(text)


# --- lexicon ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "label"),
    [
        ("I got a shank", "shank", "contraband"),
        ("they smuggled it in the laundry", "smuggled", "contraband"),
        ("burner, like a, phone", "burner, like a, phone", "contraband"),
        ("i w1ll k1ll y0u", "k1ll y0u", "threat"),
        ("b u r n e r p h o n e", "b u r n e r p h o n e", "contraband"),
        ("you're dead after class", "you're dead", "threat"),
        ("sh\u200bank", "sh\u200bank", "contraband"),
    ],
)
def test_lexicon_found_with_span_and_label(text: str, expected: str, label: str) -> None:
    found = [f for f in find(text) if f.category is Category.LEXICON]
    assert expected in [text[f.start : f.end] for f in found]
    assert {f.label for f in found} == {label}


@pytest.mark.parametrize(
    "text",
    [
        "classic off-by-one error",
        "Shankar's solution used a dictionary",
        "Shiva finished first",
        "kill -9 4821",
        "kill the server with Ctrl+C before you start it again",
        "this bug is killing me",
        "drop the table and recreate it",
        "the Scunthorpe problem",
        "shiver me timbers",
    ],
)
def test_lexicon_not_found(text: str) -> None:
    assert Category.LEXICON not in categories(text)


# --- blobs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "detector"),
    [
        ("aGVsbG8gd29ybGQgdGhpcyBpcyBhIHNlY3JldCBtZXNzYWdl", "blob.base64"),
        ("ORSWY3BAJJQW4ZJAKJXWKIDUNBSSA4DBMNVWCZ3FEBUXGIDDN5WWS3TH", "blob.base64"),
        ("bWVl dCBt ZSBh dCB0 aGUg ZHJv cCBz cG90 IG9u IHR1 ZXNk YXkg bmln aHQ=", "blob.base64"),
        ("sha1 b6e622210de674d77a3a6a209167d6ad33022b15", "blob.hex"),
        ("68:65:6c:6c:6f:20:77:6f:72:6c:64:20:74:68:69:73:20:69:73:20", "blob.hex"),
        ("part one: 74656c6c204a616e6520 ok part two: 526f6520746865207061636b", "blob.hex"),
        ("save this lXp6r3u49lEYmx0zW6eNjz0yHXf8yrF6Z2ws for later", "blob.entropy"),
    ],
)
def test_blob_found(text: str, detector: str) -> None:
    assert detector in detectors(text)


@pytest.mark.parametrize(
    "text",
    [
        "the commit is a1b2c3d",
        "h1 { color: #ff0000; }",
        'print(Dog("Rex")) gives <__main__.Dog object at 0x7f8b1c2d3e40>',
        "a MAC address looks like 00:1a:2b:3c:4d:5e",
        'bytes.fromhex("48656c6c6f")',
        "test_average_returns_zero_for_empty_list",
        "/home/learner/.npm/_logs/2024-03-15T14_30_00_123Z-debug-0.log",
        "session 123e4567-e89b-12d3-a456-426614174000",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "SELECT name FROM students WHERE grade > 80 ORDER BY name",
    ],
)
def test_blob_not_found(text: str) -> None:
    assert Category.BLOB not in categories(text)


def test_uuids_can_be_refused() -> None:
    strict = Detectors(DetectorConfig(allow_uuids=False))
    found = strict.find(normalise("123e4567-e89b-12d3-a456-426614174000"))
    assert [f.detector for f in found] == ["blob.hex"]


# --- do-not-contact ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tell Jane Roe I said hi", "Jane Roe"),
        ("Roe, Jane", "Roe, Jane"),
        ("JaneRoe", "JaneRoe"),
        ("tobias underscore wrenfield", "tobias underscore wrenfield"),
        ("Marisol, the Quintero one", "Marisol, the Quintero"),
        ("J4ne R0e", "J4ne R0e"),
        ("Ｊａｎｅ Ｒｏｅ", "Ｊａｎｅ Ｒｏｅ"),
    ],
)
def test_name_found_with_span(text: str, expected: str) -> None:
    assert expected in spans(text, Category.DO_NOT_CONTACT)


@pytest.mark.parametrize(
    "text",
    [
        "INSERT INTO people VALUES ('Jane Doe')",
        "Jane finished first",
        "Roe v. Wade",
        "Grace Hopper's team",
    ],
)
def test_name_not_found(text: str) -> None:
    assert Category.DO_NOT_CONTACT not in categories(text)


# --- hidden -----------------------------------------------------------------------------


def test_hidden_characters() -> None:
    assert detectors("sh\u200bank") >= {"hidden.invisible"}
    assert "hidden.bidi" in detectors("\u202eknahs\u202c")
    assert spans("ab\u00adcd", Category.HIDDEN) == ["\u00ad"]
    # A ZWJ joining emoji, and spaces, are not disguises.
    assert not find("family: \U0001f468\u200d\U0001f469\u200d\U0001f467")
    assert not find("hello \u200b world")


def test_reversed_text_is_read_in_display_order() -> None:
    text = "go to \u202ezYx3/yl.tib//:sptth\u202c"
    urls = spans(text, Category.URL)
    assert urls
    assert all("\u202e" not in u or len(u) > 5 for u in urls)


# --- corpora ----------------------------------------------------------------------------


def test_evasion_corpus_recall() -> None:
    """Every evasion line yields a finding of its own category (100% recall)."""
    totals: Counter[str] = Counter()
    misses: list[str] = []
    for sample in read_evasion():
        totals[sample.category] += 1
        found = {f.category.value for f in find(sample.message)}
        if sample.category not in found:
            misses.append(f"line {sample.line} [{sample.category}] {sample.message!r}: {found}")
    recall = {c: (n - sum(f"[{c}]" in m for m in misses)) / n for c, n in totals.items()}
    print("recall per category:", recall)
    assert len(totals) == 8
    assert misses == [], "\n".join(misses)


def test_clean_corpus_false_positives() -> None:
    """Clean lines yield nothing but HIDDEN; the requirement is at most 0.5% (3 of 718)."""
    clean = read_clean()
    refused: list[str] = []
    for sample in clean:
        found = [f for f in find(sample.message) if f.category is not Category.HIDDEN]
        if found:
            refused.append(
                f"line {sample.line} {sample.message!r}: "
                + ", ".join(f"{f.detector}={sample.message[f.start : f.end]!r}" for f in found)
            )
    rate = len(refused) / len(clean)
    print(f"false positives: {len(refused)}/{len(clean)} = {rate:.2%}")
    assert len(clean) == 718
    assert rate <= 0.005, "\n".join(refused)


def test_spans_stay_inside_the_original() -> None:
    for sample in read_evasion():
        for f in find(sample.message):
            assert 0 <= f.start < f.end <= len(sample.message)
