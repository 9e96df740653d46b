"""Content detectors: find contact details, links, banned terms and hidden data in chat text.

The policy engine normalises a message once (:func:`policy.normalize.normalise`) and asks
:class:`Detectors` for every :class:`Finding` in it. A finding names a :class:`Category`, a
stable detector id (``"phone.number"``, ``"url.bare_domain"``...) that becomes part of the
policy rule id, and the span of the *original* text it covers, so that a redaction removes
exactly the disguised characters. Detectors never decide what happens; the engine does.

Each detector runs on the view that undoes the disguises it cares about:

``url.*`` (letters view)
    ``url.scheme``: ``http``/``https``/``hxxp``/``ftp`` (and ``[:]``, spaced-out forms) followed
    by a host that is not allowed. ``url.www``/``url.bare_domain``: labels joined by a dot
    (``.``, ``。``, ``[.]``, ``(.)``, ``{.}``, ``(dot)``, `` dot ``, `` period ``, a dot with
    spaces on both sides, up to four filler words such as "uh", "you know", "the" around a
    spelled dot) ending in a top-level domain from :data:`STRONG_TLDS`, or from
    :data:`WEAK_TLDS` (country codes that are also English words, attribute names or file
    extensions: ``.is``, ``.py``, ``.sh``, ``.id``...) only with a scheme, ``www.`` or a path.
    ``.name``/``.email``/``.js``/``.html`` are not top-level domains here, so ``user.name``,
    ``students.email`` and ``app.js`` pass. A label that is a typical file stem
    (``main.cc``) before an extension-like TLD is not a domain. Allowed: the configured
    domains and their subdomains, and the reserved names of RFC 2606/6761.
    Limit: a domain with an unknown TLD (``foo.zzz``) or split by other words passes.
``email.*`` (letters view, and the skeleton when it holds ``@``)
    ``email.address``: ``local@domain``; ``email.spelled``: ``local at domain`` with ``at`` as
    a word, ``[at]``, ``(at)``, ``{at}``, filler words allowed; the domain is a host as above
    (any TLD) or a well-known mail provider on its own (``john at gmail``). Reserved example
    and allowed domains pass (``user@example.com``). Limit: a local part made of several
    words is reported from its last word.
``phone.*`` (digits view; ``phonenumbers``)
    ``phone.number``: runs of digits (letters ``o``/``l``/``i`` inside a run count as digits)
    joined by phone-like separators in the original (space, ``-``, ``.``, ``/``, ``()``,
    ``·``, dashes, invisible characters; commas only between spelled-out digits), 7 to 15
    digits, "possible" in one of the configured regions (fictional ranges are possible but
    not valid, so possibility is the test). Not a phone: a list (``[5, 5, 5, 1]``), a time
    or anything with ``:``, ``_``, ``=``, ``*``; a dotted quad; versions (a one-digit group
    next to longer ones: ``122.0.6261.94``); numbers only "possible locally" unless written
    ``555-0134``. ``phone.split``: two or more groups of at least two digits joined by up to
    four filler words ("415 555, then 01, then 34"), 10 to 13 digits, possible.
``address.*`` (letters and digits views)
    ``address.street``: house number (``221B``, spelled or leet digits) + up to three name
    words + street suffix (:data:`STREET_SUFFIXES`), or suffix then number
    ("Baker Street 221B"); ``address.po_box``; ``address.unit`` (apt/unit/flat/suite +
    number); ``address.zip`` (US state + ZIP(+4), or "zip"/"postcode" + number);
    ``address.postcode`` (UK postcode). Limit: a street without a number passes.
``social.*`` (letters and skeleton views)
    ``social.app``: unambiguous app names (:data:`SOCIAL_APPS`, also split "whats app");
    ``social.invite``: ambiguous names (signal, snap, sc, ig, fb, messenger, x, line) only in
    an invitation ("add me on", "hmu on", "my snap is", "snap:"); ``social.handle``: an
    ``@handle`` that is not a decorator, CSS at-rule, npm scope or e-mail;
    ``social.tag``: ``name#1234``.
``lexicon.term`` (letters view)
    Each term of the facility lexicon as whole words (so "classic" does not match "ass"),
    words of a phrase joined by nothing, punctuation or up to four filler words. A one-word
    term also matches ``-s``, ``-ed``, ``-ing`` forms. The label is the term's category.
``blob.*`` (a case-preserving view: invisible characters dropped, NFKC, look-alikes mapped)
    ``blob.hex``: at least :attr:`DetectorConfig.min_hex_chars` hex digits, also as ``0x``,
    ``\\x`` escapes or bytes separated by spaces, ``:``, ``-``, ``.``; canonical UUIDs and
    full IPv6 addresses are allowed (documented choice: they are common in lessons and
    carry at most 16 bytes). ``blob.base64``: a base64, base64url or base32 run of at least
    :attr:`DetectorConfig.min_base64_chars` characters (wrapped lines and pieces split by
    spaces or filler words are joined) with mixed character classes and entropy.
    ``blob.entropy``: a token of at least :attr:`DetectorConfig.min_entropy_chars` with
    lower, upper and digits and high Shannon entropy. Short hex (colours, git short
    hashes, object addresses) stays below the thresholds; paths mixing ``/`` with ``_``
    or ``-`` are not base64.
``do_not_contact.name`` (letters view)
    First and last name in either order ("Roe, Jane"), joined or separated by spaces,
    ``.``, ``-``, ``_``, "dot", "underscore", or up to four filler words. Exact letters:
    "Jane Doe" is not "Jane Roe".
``hidden.*`` (original text)
    ``hidden.bidi``: any bidi embedding, override or isolate (U+202A..U+202E,
    U+2066..U+2069); ``hidden.invisible``: a default-ignorable character (zero-width space,
    joiner, soft hyphen, word joiner, BOM...) between two letters or digits. A ZWJ inside
    an emoji sequence is not reported.

Text after a right-to-left override is also read in display order (reversed), so
``U+202E moc.ebutuoy`` is found as ``youtube.com``.

Pure: every regex and set is built once, in :class:`Detectors`.
"""

from __future__ import annotations

import enum
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import ip_address

import phonenumbers

from policy.normalize import CONFUSABLES, DEFAULT_IGNORABLE, DEFAULT_IGNORABLE_RANGES, View, Views
from policy.normalize import normalise as _normalise

__all__ = [
    "DEFAULT_ALLOWED_DOMAINS",
    "RESERVED_DOMAINS",
    "RESERVED_TLDS",
    "SOCIAL_APPS",
    "STREET_SUFFIXES",
    "STRONG_TLDS",
    "WEAK_TLDS",
    "Category",
    "DetectorConfig",
    "Detectors",
    "Finding",
    "LexiconTerm",
    "shannon_entropy",
]


class Category(enum.Enum):
    """What a finding is about; the engine maps categories to actions."""

    URL = "url"
    EMAIL = "email"
    PHONE = "phone"
    ADDRESS = "address"
    SOCIAL = "social"
    LEXICON = "lexicon"
    BLOB = "blob"
    DO_NOT_CONTACT = "do_not_contact"
    HIDDEN = "hidden"
    """Bidi controls or invisible characters used to disguise text."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a detector found, with its span in the ORIGINAL text."""

    category: Category
    detector: str
    """Stable id such as ``"phone.number"``; part of the policy rule id."""
    start: int
    end: int
    label: str = ""
    """Extra detail for the audit record only (term category, matched domain)."""

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"a finding covers a non-empty span: [{self.start}:{self.end}]")
        if not self.detector:
            raise ValueError("a finding names its detector")


@dataclass(frozen=True, slots=True)
class LexiconTerm:
    """One entry of the facility's banned-term lexicon."""

    term: str
    """As written in the lexicon file, e.g. ``"burner phone"``."""
    category: str
    """E.g. ``"contraband"``, ``"threat"``."""

    def __post_init__(self) -> None:
        if not re.search(r"[a-z]", self.term.lower()):
            raise ValueError("a lexicon term holds at least one letter")
        if not self.category:
            raise ValueError("a lexicon term has a category")


DEFAULT_ALLOWED_DOMAINS: frozenset[str] = frozenset(
    {"docs.python.org", "developer.mozilla.org", "git-scm.com", "www.sqlite.org"}
)
"""Documentation hosts a coding class links to (exact hosts; subdomains also allowed)."""

RESERVED_DOMAINS: frozenset[str] = frozenset({"example.com", "example.org", "example.net"})
"""RFC 2606 second-level example domains: always allowed, with their subdomains."""

RESERVED_TLDS: frozenset[str] = frozenset({"example", "test", "invalid", "localhost", "local"})
"""RFC 2606/6761 reserved top-level names: always allowed."""


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """What the detectors look for; every threshold is named here.

    ``allowed_domains`` are exact host names, each also allowing its subdomains; the names
    in :data:`RESERVED_DOMAINS`, :data:`RESERVED_TLDS` and loopback/private IP literals are
    always allowed.
    """

    allowed_domains: frozenset[str] = DEFAULT_ALLOWED_DOMAINS
    phone_regions: tuple[str, ...] = ("US", "GB")
    lexicon: tuple[LexiconTerm, ...] = ()
    do_not_contact: tuple[str, ...] = ()
    """Full names, e.g. ``"Jane Roe"`` (at least two words)."""
    min_base64_chars: int = 40
    """Shortest base64/base64url/base32 run reported (pieces joined)."""
    min_hex_chars: int = 32
    """Fewest hex digits reported (pieces joined)."""
    min_entropy_chars: int = 24
    """Shortest single token checked for high entropy."""
    min_entropy_bits: float = 4.0
    """Shannon entropy per character (bits) a high-entropy token must reach."""
    min_base64_entropy_bits: float = 3.5
    """Entropy per character a base64/base32 run must reach (English text is lower)."""
    min_phone_digits: int = 7
    max_phone_digits: int = 15
    max_filler_words: int = 4
    """Filler words tolerated between the parts of a term, name, domain or number."""
    allow_uuids: bool = True
    """Canonical UUIDs (8-4-4-4-12 hex) are not blobs: common in lessons, 16 bytes at most."""

    def __post_init__(self) -> None:
        for region in self.phone_regions:
            if region not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(f"unknown phone region {region!r}")
        for name in self.do_not_contact:
            if len(name.split()) < 2:
                raise ValueError(f"a do-not-contact name has a first and last name: {name!r}")
        if min(self.min_base64_chars, self.min_hex_chars, self.min_entropy_chars) < 8:
            raise ValueError("blob thresholds below 8 characters would refuse ordinary words")
        if not 1 <= self.min_phone_digits <= self.max_phone_digits:
            raise ValueError("phone digit limits are out of order")
        if not 0 <= self.max_filler_words <= 8:
            raise ValueError("max_filler_words must be between 0 and 8")
        object.__setattr__(
            self, "allowed_domains", frozenset(d.lower().strip(".") for d in self.allowed_domains)
        )


# --- word lists -------------------------------------------------------------------------


def _wordlist(text: str) -> list[str]:
    return text.split()


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


STRONG_TLDS: frozenset[str] = _wordset(
    """
    com net org edu gov mil int info biz xyz io co me ly gg tv cc ee ws su uk ca au nz ie
    de fr nl ch se dk fi ru cn jp kr br mx ar cl pe ve za ng ke eg tr gr pt cz sk hu ro
    bg ua by lt lv hr si ba mk al vn th ph sg hk tw pk bd lk np ir iq il sa ae qa kw tk
    ga cf gq cx nu fm ai gl im je gy lc vc bz ag onion online site top club shop store tech
    space website fun icu vip pro mobi asia tel cloud live link click download stream chat
    social media news blog wiki porn sex xxx cam dating bet casino lol
    """
)
"""Top-level domains that make ``label.tld`` a domain wherever it appears."""

WEAK_TLDS: frozenset[str] = _wordset(
    """
    am as at be do go id in is it no on so to py sh md rs ps st re pm mp mo ms cd ad tt la
    us es pl my ml
    app dev page run zip mov show new style name email one art
    """
)
"""TLDs that are also words, attribute names or file extensions: a domain only with a
scheme, ``www.`` or a ``/path`` after it."""

_FILE_STEMS = _wordset(
    "main index app test tests style script server client util utils config setup lib "
    "data notes output input foo bar module file hello program solution readme"
)

MAIL_PROVIDERS: tuple[str, ...] = (
    "gmail",
    "googlemail",
    "yahoo",
    "ymail",
    "hotmail",
    "outlook",
    "aol",
    "icloud",
    "proton\\s*mail",
    "proton",
    "gmx",
    "yandex",
    "msn",
    "zoho",
    "mail",
)

SOCIAL_APPS: tuple[str, ...] = (
    r"snap\s*chat",
    r"insta\s*gram",
    r"insta",
    r"whats\s*app",
    r"telegram",
    r"discord",
    r"face\s*book",
    r"tik\s*tok",
    r"kik",
    r"twitter",
    r"we\s*chat",
    r"gamer\s*tag",
    r"xbox\s*live",
    r"only\s*fans",
    r"tinder",
    r"grindr",
)
"""Unambiguous app names (regex fragments over the letters view)."""

_TAGGABLE_APPS = r"(?:signal|snap|sc|ig|fb|messenger|xbox|psn|steam|skype|viber)"
_AMBIGUOUS_APPS = r"(?:signal|snap|sc|ig|fb|messenger|x|line|xbox|psn|steam|skype|viber)"

STREET_SUFFIXES: tuple[str, ...] = (
    "street",
    "st",
    "avenue",
    "ave",
    "av",
    "road",
    "rd",
    "lane",
    "ln",
    "drive",
    "dr",
    "boulevard",
    "blvd",
    "court",
    "ct",
    "way",
    "place",
    "pl",
    "terrace",
    "close",
    "crescent",
    "highway",
    "hwy",
    "parkway",
    "pkwy",
    "circle",
    "cir",
    "square",
    "sq",
)

_US_STATES = _wordlist(
    "al ak az ar ca co ct de dc fl ga hi id il in ia ks ky la me md ma mi mn ms mo mt ne nv "
    "nh nj nm ny nc nd oh ok or pa ri sc sd tn tx ut vt va wa wv wi wy"
)
_US_STATE_NAMES = _wordlist(
    "alabama alaska arizona arkansas california colorado connecticut delaware florida georgia "
    "hawaii idaho illinois indiana iowa kansas kentucky louisiana maine maryland massachusetts "
    "michigan minnesota mississippi missouri montana nebraska nevada ohio oklahoma oregon "
    "pennsylvania tennessee texas utah vermont virginia washington wisconsin wyoming"
)

# Filler words people put between the parts of something they split up.
_FILL_WORD = (
    r"(?:uh+|um+|er+m?|hmm+|like|you know|i mean|the|then|and|so|well|ok|okay|basically|"
    r"actually|a|an|it'?s|one)"
)
_FILL_LEX_WORD = r"(?:uh+|um+|er+m?|hmm+|like|you know|i mean|a|an|basically|actually)"
_FILL_PHONE_WORD = (
    r"(?:uh+|um+|er+m?|like|you know|i mean|the|then|and|after|that|next|last|first|second|"
    r"third|part|parts|is|rest|code|area|bit|number|ok|okay|so)"
)


def _fills(word: str, limit: int) -> str:
    """Up to ``limit`` filler words separated by spaces or commas."""
    return rf"(?:{word}(?:[\s,]+{word}){{0,{max(limit - 1, 0)}}})"


def shannon_entropy(text: str) -> float:
    """Shannon entropy of ``text`` in bits per character (0.0 for an empty string)."""
    n = len(text)
    if n == 0:
        return 0.0
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


# --- helpers ----------------------------------------------------------------------------

_IGNORABLE_CLASS = "".join(
    f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}"
    for lo, hi in DEFAULT_IGNORABLE_RANGES
)
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_INVISIBLE_IN_WORD = re.compile(rf"(?<=[^\W_])[{_IGNORABLE_CLASS}]+(?=[^\W_])")
_RTL_RUN = re.compile("[\u202e\u202b]([^\u202c\u2069\n]*)")


def _visual(text: str) -> tuple[str, tuple[int, ...]] | None:
    """``text`` in display order where a right-to-left override/embedding reverses it.

    Returns the reordered text without the controls and, per character, its index in
    ``text``; ``None`` when nothing is reversed. Only ASCII-like left-to-right text inside
    the run is considered (the disguise this undoes), not the full bidi algorithm.
    """
    if "\u202e" not in text and "\u202b" not in text:
        return None
    out: list[str] = []
    index: list[int] = []
    pos = 0
    for m in _RTL_RUN.finditer(text):
        for i in range(pos, m.start()):
            if not _BIDI.match(text[i]):
                out.append(text[i])
                index.append(i)
        for i in range(m.end(1) - 1, m.start(1) - 1, -1):
            if not _BIDI.match(text[i]):
                out.append(text[i])
                index.append(i)
        pos = m.end()
    for i in range(pos, len(text)):
        if not _BIDI.match(text[i]):
            out.append(text[i])
            index.append(i)
    if not out:
        return None
    return "".join(out), tuple(index)


_blob_char_cache: dict[str, str] = {}


def _blob_char(ch: str) -> str:
    """A non-ASCII character in the case-preserving blob view."""
    cached = _blob_char_cache.get(ch)
    if cached is not None:
        return cached
    if ch in DEFAULT_IGNORABLE:
        out = ""
    else:
        nf = unicodedata.normalize("NFKC", ch)
        if nf.isascii():
            out = nf
        elif (digit := unicodedata.decimal(ch, -1)) >= 0:
            out = str(digit)
        else:
            proto = CONFUSABLES.get(nf) or CONFUSABLES.get(ch) or nf
            # Keep the case of the original (Cyrillic "В" looks like "B").
            out = proto.upper() if ch.isupper() and len(proto) == 1 else proto
    if len(_blob_char_cache) < 1 << 14:
        _blob_char_cache[ch] = out
    return out


_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")


def _blob_chars(m: re.Match[str]) -> str:
    return "".join(_blob_char(ch) for ch in m.group())


def _blob_text(text: str) -> str:
    """The text of :func:`_blob_view` (without the map back to ``text``)."""
    return text if text.isascii() else _NON_ASCII_RUN.sub(_blob_chars, text)


def _blob_view(text: str) -> View:
    """Invisible characters dropped, NFKC, look-alikes mapped, case kept."""
    n = len(text)
    if text.isascii():
        return View(text, tuple(range(n)), tuple(range(1, n + 1)))
    parts: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for i, ch in enumerate(text):
        out = ch if ch.isascii() else _blob_char(ch)
        if out:
            parts.append(out)
            starts.extend([i] * len(out))
            ends.extend([i + 1] * len(out))
    return View("".join(parts), tuple(starts), tuple(ends))


def _accepted(
    pattern: re.Pattern[str], text: str, accept: Callable[[re.Match[str]], bool]
) -> Iterator[re.Match[str]]:
    """Like ``finditer`` with a filter, but after a rejected match the search resumes one
    character after its start: a rejected greedy match ("me at john dot smith") must not
    hide a shorter one inside it ("smith at gmail")."""
    pos = 0
    while (m := pattern.search(text, pos)) is not None:
        if accept(m):
            yield m
            pos = max(m.end(), m.start() + 1)
        else:
            pos = m.start() + 1


def _is_private_ip(host: str) -> bool:
    try:
        addr = ip_address(host.strip("[]"))
    except ValueError:
        return False
    return addr.is_loopback or addr.is_private or addr.is_unspecified or addr.is_link_local


# --- the detectors ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Hit:
    """A match in a view, before mapping to the original."""

    category: Category
    detector: str
    start: int
    end: int
    label: str = ""


@dataclass(slots=True)
class _Compiled:
    """Regexes and sets built from one :class:`DetectorConfig`."""

    lexicon: re.Pattern[str] | None = None
    lexicon_categories: dict[str, str] = field(default_factory=dict)
    names: re.Pattern[str] | None = None


class Detectors:
    """All content detectors for one configuration; :meth:`find` is pure and thread-safe."""

    def __init__(self, config: DetectorConfig, *, prefilter: bool = True) -> None:
        """``prefilter=False`` runs every detector on every text, skipping none: the
        reference the cheap pre-checks are tested against (they never change a finding)."""
        self.config = config
        self._prefilter = prefilter
        limit = config.max_filler_words
        fills = _fills(_FILL_WORD, limit)
        self._allowed = config.allowed_domains | RESERVED_DOMAINS

        # --- URLs and e-mail ------------------------------------------------------------
        label = r"[a-z0-9][a-z0-9-]{0,62}+"
        dot = (
            r"(?:[.。]"
            r"|\s*(?:\[\s*(?:[.。]|dot)\s*\]|\(\s*(?:[.。]|dot)\s*\)|\{\s*(?:[.。]|dot)\s*\})\s*"
            r"|\s+[.。]\s+"
            rf"|,?\s+(?:{fills},?\s+)?(?:dot|period|point)(?:,?\s+{fills})?,?\s+"
            rf"|,?\s+(?:{fills},?\s+)?[.。](?=[a-z])"
            r")"
        )
        self._dot = re.compile(dot)
        host = rf"{label}(?:{dot}{label})+"
        self._domain = re.compile(rf"(?<![a-z0-9@._%+-])(?P<host>{host})(?![a-z0-9_-])")
        self._domain_simple = re.compile(
            rf"(?<![a-z0-9@._%+-])(?P<host>{label}(?:[.。]{label})+)(?![a-z0-9_-])"
        )
        self._scheme = re.compile(
            r"(?<![a-z])(?P<scheme>h[tx][tx]ps?|s?ftp|wss?)\s*(?:\[\s*:\s*\]|\(\s*:\s*\)|:)"
            r"\s*/\s*/\s*(?P<rest>[^\n]{0,120})"
        )
        providers = "|".join(MAIL_PROVIDERS)
        at = (
            r"(?:\s*@\s*|\s*(?:\[\s*at\s*\]|\(\s*at\s*\)|\{\s*at\s*\})\s*"
            rf"|,?\s+at,?\s+(?:{fills},?\s+)?)"
        )
        self._email = re.compile(
            rf"(?<![a-z0-9._%+-])(?P<local>[a-z0-9][a-z0-9._%+-]*){at}"
            rf"(?P<domain>(?:{providers})(?:{dot}{label})*|{host})(?![a-z0-9-])"
        )
        self._email_comma = re.compile(
            rf"(?<![a-z0-9._%+-])[a-z0-9][a-z0-9._%+-]*@(?P<domain>{label}(?:[.,]{label})+)"
            r"(?![a-z0-9-])"
        )
        self._providers = re.compile(rf"(?:{providers})\Z")

        # --- phones ---------------------------------------------------------------------
        fill_phone = _fills(_FILL_PHONE_WORD, limit)
        token = r"(?<![a-z0-9])\+?(?=[oli|]*[0-9])[0-9oli|]+(?![a-z0-9])"  # noqa: S105
        sep = r"[\s().\-/·–—‐‑+]{1,4}"
        self._phone_run = re.compile(rf"(?:plus\s+)?{token}(?:{sep}{token})*")
        self._phone_split = re.compile(
            rf"(?:plus\s+)?{token}(?:(?:{sep}|[\s,:]+{fill_phone}[\s,:]+){token})+"
        )
        self._phone_token = re.compile(token)
        # Necessary for a phone run: ``min_phone_digits`` digit-like characters, each next
        # to the following one or separated by at most four separators (see _PHONE_CLASSES).
        self._phone_shape = re.compile(
            rb"[0o](?: {0,5}[0o]){" + str(config.min_phone_digits - 1).encode() + rb"}"
        )
        self._ok_gap = re.compile(r"[\s().\-/·–—‐‑+]*\Z")
        self._spelled_gap = re.compile(r"[\s,.\-]*\Z")

        # --- addresses ------------------------------------------------------------------
        suffix = "|".join(STREET_SUFFIXES)
        long_suffix = "|".join(s for s in STREET_SUFFIXES if len(s) >= 4)
        num = r"(?:[0-9]{1,5}|[oizeasgtb0-9]{1,5})(?:\s?[a-z])?"
        name_word = r"[a-z0-9]+\.?"
        self._street = re.compile(
            rf"(?<![a-z0-9])(?P<num>{num})[\s,]+(?:{name_word}\s+){{0,2}}[a-z0-9]+\.?"
            rf"(?:\s+(?:{suffix})|\s*(?:{long_suffix}))\b\.?"
        )
        self._street_rev = re.compile(
            rf"\b[a-z]+\s+(?:{long_suffix}|st|rd|ave)\b,?\s+(?:{fills}\s+|number\s+)?"
            rf"(?P<num>{num})\b"
        )
        self._po_box = re.compile(
            rf"\bp[\s.\-]*o[\s.,\-]*(?:{fills}[\s,]+)?(?:box|b\b\.?)\s*#?\s*(?:no\.?\s*)?"
            r"(?P<num>[0-9]{1,6}|[oizeasgtb]{1,6})\b"
        )
        self._unit = re.compile(
            r"\b(?:apt|apartment|unit|flat|suite|ste)\.?\s*#?\s*\d{1,4}[a-z]?\b"
        )
        states = "|".join(_US_STATES + _US_STATE_NAMES)
        self._zip = re.compile(
            rf"(?:,\s*(?:{states})\.?,?\s+\d{{5}}(?:-\d{{4}})?|\b(?:{states})\s+\d{{5}}-\d{{4}}"
            r"|\b(?:zip|zipcode|zip code|postcode|postal code)(?:\s+(?:is|code))?[\s:]*"
            r"\d{5}(?:-?\d{4})?)\b"
        )
        inward = r"[0-9]\s?[abd-hjlnp-uw-z]\s?[abd-hjlnp-uw-z]"
        self._postcode = re.compile(
            rf"(?<![a-z0-9])[a-z]\s?[a-z]?\s?[0-9]\s?[a-z0-9]?\s?{inward}(?![a-z0-9])"
        )
        self._postcode_strict = re.compile(r"[a-z]{1,2}[0-9][a-z0-9]?[0-9][a-z]{2}\Z")

        # --- social ---------------------------------------------------------------------
        apps = "|".join(SOCIAL_APPS)
        split_apps = (
            rf"whats,?\s+{fills},?\s+app|snap,?\s+{fills},?\s+chat(?:\s+one)?|"
            rf"face,?\s+{fills},?\s+book|tik,?\s+{fills},?\s+tok|insta,?\s+{fills},?\s+gram"
        )
        self._apps = re.compile(rf"(?<![a-z])(?:{apps}|{split_apps})(?![a-z])")
        invite = r"(?:add|hmu|hit me up|dm|message|msg|text|find|follow|contact|reach|ping|call)"
        self._invite = re.compile(
            rf"(?:\b{invite}\s+(?:me|us)\s+(?:on|at|via|over)\s+|\bhmu\s+(?:on|at)\s+"
            rf"|\b(?:add|follow)\s+my\s+|\bmy\s+)(?P<app>{_AMBIGUOUS_APPS})\b"
            rf"|(?<![a-z.])(?P<app2>{_TAGGABLE_APPS})(?:\s*:\s*|\s+at\s+|\s+@)[a-z0-9_@]"
        )
        self._handle = re.compile(r"(?<![\w@.\-/])@(?P<name>[a-z_][a-z0-9_.]{1,29})(?P<after>.?)")
        self._tag = re.compile(r"(?<![\w#])[a-z][a-z0-9_.]{1,31}#[0-9]{4}(?![\w])")

        # --- lexicon and names ----------------------------------------------------------
        self._compiled = _Compiled()
        self._lex_fill = _fills(_FILL_LEX_WORD, limit)
        if config.lexicon:
            alts: list[str] = []
            for i, term in enumerate(config.lexicon):
                alts.append(f"(?P<t{i}>{self._term_pattern(term.term)})")
                self._compiled.lexicon_categories[f"t{i}"] = term.category
            self._compiled.lexicon = re.compile(
                r"(?<![a-z0-9])(?:" + "|".join(alts) + r")(?![a-z0-9])"
            )
        self._term_words, self._terms_always = _term_words(config)
        if config.do_not_contact:
            name_sep = rf"(?:[\s._-]*|\s*,\s*|\s+(?:dot|underscore)\s+|[\s,]+{fills}[\s,]+)"
            alts = []
            for name in config.do_not_contact:
                parts = [self._word_pattern(p) for p in name.lower().split()]
                alts.append(name_sep.join(parts))
                alts.append(parts[-1] + name_sep + name_sep.join(parts[:-1]))
            self._compiled.names = re.compile(r"(?<![a-z])(?:" + "|".join(alts) + r")(?![a-z])")

        self._uuid = re.compile(
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE
        )
        self._hex_chain = re.compile(
            r"(?<![0-9a-z])(?:0x|\\x)?[0-9a-f]{2,}(?:(?:[\s:.\-]{1,3}|\\x|[\s:.\-]0x)[0-9a-f]{2,})*"
            r"(?![0-9a-z])",
            re.IGNORECASE,
        )
        self._piece = re.compile(r"[A-Za-z0-9+/_\-]{2,}={0,2}")

    # --- construction helpers ----------------------------------------------------------

    @staticmethod
    def _word_pattern(word: str) -> str:
        """Letters literal; other characters inside a word optional (``you're``)."""
        out: list[str] = []
        for ch in word:
            if "a" <= ch <= "z" or "0" <= ch <= "9":
                out.append(ch)
            else:
                out.append(r"[\W_]?")
        return "".join(out)

    def _term_pattern(self, term: str) -> str:
        words = term.lower().split()
        sep = rf"(?:[\W_]*|[\W_]+{self._lex_fill}[\W_]+)"
        if len(words) == 1:
            w = words[0]
            stem = w[:-1] if w.endswith("e") else w
            forms = (
                f"{self._word_pattern(w)}(?:s|d|ed)?|{self._word_pattern(stem)}ing"
                if w.isalpha()
                else self._word_pattern(w)
            )
            return f"(?:{forms})"
        return sep.join(self._word_pattern(w) for w in words)

    # --- public ------------------------------------------------------------------------

    def find(self, views: Views) -> tuple[Finding, ...]:
        """Every finding in ``views``, sorted by start; overlaps are all reported."""
        found: set[Finding] = set()
        original = views.original
        found.update(self._hidden(original))
        for hit, view in self._all(views):
            a, b = view.span(hit.start, hit.end)
            if hit.category is Category.PHONE:
                a = _widen_phone(original, a)
            found.add(Finding(hit.category, hit.detector, a, b, hit.label))
        visual = _visual(original)
        if visual is not None:
            text, index = visual
            vviews = _normalise(text)
            for hit, view in self._all(vviews):
                a, b = view.span(hit.start, hit.end)
                covered = index[a:b]
                found.add(
                    Finding(hit.category, hit.detector, min(covered), max(covered) + 1, hit.label)
                )
        return tuple(sorted(found, key=lambda f: (f.start, f.end, f.category.value, f.detector)))

    # --- the detectors -----------------------------------------------------------------

    def _all(self, views: Views) -> Iterator[tuple[_Hit, View]]:
        """Run each detector whose cheap necessary condition holds (set and substring
        checks cost well under a microsecond; a regex scan costs one to three)."""
        letters, digits, skeleton = views.letters, views.digits, views.skeleton
        lt, st = letters.text, skeleton.text
        lb = lt.encode("ascii", "replace")
        words = frozenset(lb.translate(_LETTERS_ONLY).split())
        ndigits = _count_digits(digits.text)

        pf = self._prefilter
        full = (
            b" ." in lb
            or b"[" in lb
            or b"(" in lb
            or b"{" in lb
            or b"?" in lb
            or not words.isdisjoint(_DOT_WORDS)
        )
        # A domain (of a link or an e-mail address) ends in a top-level domain: a word
        # right after a dot, or after a bracketed, spaced or spelled dot.
        schemes = not pf or ("/" in lt and ":" in lt)
        domains = not pf or b"xn--" in lb
        if not domains:
            # A weak top-level domain needs a scheme or a path ("/") or "www".
            slash_or_www = "/" in lt or b"www" in words
            tlds = words & (_ALL_TLDS if slash_or_www else _STRONG_TLD_WORDS)
            domains = bool(tlds) and (_after_dot(lb, tlds) or (full and _other_dot(lb, words)))
        if schemes or domains:
            for hit in self._urls(lt, full=full, schemes=schemes, domains=domains):
                yield hit, letters
        # An e-mail domain is a mail provider or ends in a top-level domain (any dot).
        if not pf:
            emails = True
        elif b"@" in lb or b"at" in words:
            tlds = words & _ALL_TLDS
            emails = not words.isdisjoint(_PROVIDER_WORDS) or (
                bool(tlds) and (_after_dot(lb, tlds) or _other_dot(lb, words))
            )
        else:
            emails = False
        if emails:
            for hit in self._emails(lt):
                yield hit, letters
        if "@" in st and st != lt:
            for hit in self._emails(st, comma=True):
                yield hit, skeleton
        if not pf or (
            ndigits
            and (ndigits >= 8 or _phone_run_possible(digits.text, self.config.min_phone_digits))
        ):
            for hit in self._phones(views, ndigits):
                yield hit, digits
        # Every address detector needs a digit in the digits view: a house, box or unit
        # number passes _number_ok only with a digit, ZIP and postcode patterns hold digits,
        # and every decimal digit of the original and every spelled digit is one there.
        if not pf or ndigits:
            for hit, view in self._addresses(views, words, ndigits):
                yield hit, view
        if not pf or not words.isdisjoint(_SOCIAL_WORDS):
            for hit in self._social(lt, words):
                yield hit, letters
        if not pf or "@" in st or "#" in st:
            for hit in self._handles(st):
                yield hit, skeleton
        if not pf or self._terms_always or not words.isdisjoint(self._term_words):
            for hit in self._terms(lt):
                yield hit, letters
        original = views.original
        cfg = self.config
        if len(original) < min(cfg.min_hex_chars, cfg.min_entropy_chars):
            return
        blob_text = _blob_text(original)
        encoded = _class_switches(blob_text) >= _MIN_CLASS_SWITCHES
        if not pf or encoded or _count_digits(blob_text) * 10 >= cfg.min_hex_chars * 3:
            # The view (with its map) is only built when a blob scan runs.
            blob = (
                View(original, skeleton.starts, skeleton.ends)
                if original.isascii()
                else _blob_view(original)
            )
            for hit in self._blobs(blob.text, encoded=encoded):
                yield hit, blob

    @staticmethod
    def _hidden(original: str) -> Iterator[Finding]:
        if original.isascii():
            return
        for m in _BIDI.finditer(original):
            yield Finding(Category.HIDDEN, "hidden.bidi", m.start(), m.end())
        for m in _INVISIBLE_IN_WORD.finditer(original):
            yield Finding(Category.HIDDEN, "hidden.invisible", m.start(), m.end())

    # URLs ------------------------------------------------------------------------------

    def _host_allowed(self, host: str) -> bool:
        host = host.strip(".").lower()
        if not host or _is_private_ip(host) or host == "localhost":
            return True
        labels = host.split(".")
        if labels[-1] in RESERVED_TLDS:
            return True
        return any(host == d or host.endswith("." + d) for d in self._allowed)

    def _compact_host(self, text: str) -> str:
        return self._dot.sub(".", text).replace(" ", "")

    def _urls(self, text: str, *, full: bool, schemes: bool, domains: bool) -> Iterator[_Hit]:
        """Links: ``schemes`` and ``domains`` say which of the two scans can find one."""
        scheme_spans: list[tuple[int, int]] = []
        for m in self._scheme.finditer(text) if schemes else ():
            rest = m.group("rest")
            hm = re.match(r"[^/?#\s'\"<>)\]]+", rest)
            raw = hm.group() if hm else re.split(r"/|\?|#", rest, maxsplit=1)[0][:60]
            host = self._compact_host(raw).split("@")[-1]
            host = re.sub(r":\d*$", "", host.replace("[.]", ".").replace("(.)", "."))
            end = m.start("rest") + len(raw)
            scheme_spans.append((m.start(), end))
            if host.startswith("[") or host.count(":") >= 2:
                host = host.strip("[]")
            if not self._host_allowed(host):
                yield _Hit(Category.URL, "url.scheme", m.start(), max(end, m.end("scheme")), host)
        if not domains:
            return

        def domain_ok(m: re.Match[str]) -> bool:
            return self._domain_ok(text, m, scheme_spans)

        domain = self._domain if full else self._domain_simple
        for m in _accepted(domain, text, domain_ok):
            host = self._compact_host(m.group("host"))
            detector = "url.www" if host.startswith("www.") else "url.bare_domain"
            yield _Hit(Category.URL, detector, m.start(), m.end(), host)

    def _domain_ok(self, text: str, m: re.Match[str], scheme_spans: list[tuple[int, int]]) -> bool:
        """True when a dotted match is a domain that is not allowed (see the module doc)."""
        host = self._compact_host(m.group("host"))
        labels = host.split(".")
        tld = labels[-1]
        if labels[0].isdigit():
            return False  # a number: "0.3s", "1.5x"
        start, end = m.span()
        in_scheme = any(a <= start < b for a, b in scheme_spans)
        www = labels[0] == "www"
        path = text.startswith("/", end)
        if tld in STRONG_TLDS:
            if tld in {"cc", "md", "sh"} and labels[-2] in _FILE_STEMS and not www:
                return False
        elif tld in WEAK_TLDS:
            if not (in_scheme or www or path):
                return False
            if labels[-2] in _FILE_STEMS and not (in_scheme or www):
                return False
        elif not tld.startswith("xn--"):
            return False
        return not self._host_allowed(host)

    # E-mail ----------------------------------------------------------------------------

    def _emails(self, text: str, *, comma: bool = False) -> Iterator[_Hit]:
        if "@" not in text and "at" not in text:
            return
        for m in _accepted(self._email, text, self._email_match_ok):
            domain = self._compact_host(m.group("domain"))
            spelled = "@" not in text[m.end("local") : m.start("domain")]
            detector = "email.spelled" if spelled else "email.address"
            yield _Hit(Category.EMAIL, detector, m.start(), m.end(), domain)
        if comma:
            for m in self._email_comma.finditer(text):
                domain = m.group("domain").replace(",", ".")
                if self._email_domain_ok(domain):
                    yield _Hit(Category.EMAIL, "email.address", m.start(), m.end(), domain)

    def _email_match_ok(self, m: re.Match[str]) -> bool:
        return self._email_domain_ok(self._compact_host(m.group("domain")))

    def _email_domain_ok(self, domain: str) -> bool:
        """True when ``domain`` looks like a mail domain that is not allowed."""
        domain = re.sub(r"\s+", "", domain)
        labels = domain.split(".")
        tld = labels[-1]
        known = (
            len(labels) >= 2 and (tld in STRONG_TLDS or tld in WEAK_TLDS)
        ) or self._providers.match(labels[0]) is not None
        return known and not self._host_allowed(domain)

    # Phones ----------------------------------------------------------------------------

    def _phones(self, views: Views, ndigits: int) -> Iterator[_Hit]:
        text = views.digits.text
        seen: list[tuple[int, int]] = []
        shape = text.encode("ascii", "replace").translate(_PHONE_CLASSES)
        runs = (
            self._phone_run.finditer(text)
            if not self._prefilter
            or (
                _phone_run_possible(text, self.config.min_phone_digits)
                and self._phone_shape.search(shape)
            )
            else ()
        )
        for m in runs:
            hit = self._phone_candidate(views, m.start(), m.end(), split=False)
            if hit is not None:
                seen.append((hit.start, hit.end))
                yield hit
        if ndigits >= 8 and ("," in text or " " in text):
            for m in self._phone_split.finditer(text):
                if any(a <= m.start() < b for a, b in seen):
                    continue
                hit = self._phone_candidate(views, m.start(), m.end(), split=True)
                if hit is not None:
                    yield hit

    def _phone_candidate(self, views: Views, start: int, end: int, *, split: bool) -> _Hit | None:
        digits_view = views.digits
        text = digits_view.text
        original = views.original
        chunk = text[start:end]
        cfg = self.config
        # Every digit is one character of the chunk: too short a chunk has too few.
        if len(chunk) < (10 if split else cfg.min_phone_digits):
            return None
        plus = chunk.startswith(("+", "plus"))
        # Positions of digit-like characters in the view.
        positions: list[int] = []
        pieces = 0
        piece_sizes: list[int] = []
        for t in self._phone_token.finditer(chunk):
            pieces += 1
            size = 0
            for i in range(t.start(), t.end()):
                if chunk[i] not in "+":
                    positions.append(start + i)
                    size += 1
            piece_sizes.append(size)
        n = len(positions)
        if split:
            if pieces < 2 or min(piece_sizes) < 2 or not 10 <= n <= cfg.max_phone_digits:
                return None
        elif not cfg.min_phone_digits <= n <= cfg.max_phone_digits:
            return None
        number = "".join(text[p] for p in positions).translate(_LETTER_DIGITS)
        # Original separators and group sizes of written digits.
        groups: list[int] = []
        spelled_prev = False
        starts, ends = digits_view.starts, digits_view.ends
        size = 0
        for k, p in enumerate(positions):
            a, b = starts[p], ends[p]
            spelled = b - a > 1 or (original[a].isalpha() and original[a].lower() not in "oli")
            if k:
                prev_end = ends[positions[k - 1]]
                gap = original[prev_end:a] if a > prev_end else ""
                gap = "".join(c for c in gap if c not in DEFAULT_IGNORABLE)
                gap = unicodedata.normalize("NFKC", gap)
                in_filler = split and self._has_letters(gap)
                if spelled or spelled_prev:
                    if not in_filler and self._spelled_gap.match(gap) is None:
                        return None
                elif not in_filler and self._ok_gap.match(gap) is None:
                    return None
                if gap or spelled or spelled_prev:
                    if size:
                        groups.append(size)
                    size = 0
            if spelled:
                size = 0
            else:
                size += 1
            spelled_prev = spelled
        if size:
            groups.append(size)
        if not self._phone_groups_ok(groups, original, starts[positions[0]], ends[positions[-1]]):
            return None
        if not self._possible_phone(number, plus=plus, groups=groups):
            return None
        a = start
        return _Hit(Category.PHONE, "phone.split" if split else "phone.number", a, end)

    @staticmethod
    def _has_letters(gap: str) -> bool:
        return any(c.isalpha() for c in gap)

    @staticmethod
    def _phone_groups_ok(groups: list[int], original: str, a: int, b: int) -> bool:
        if not groups or all(g == 1 for g in groups):
            return True
        span = original[a:b]
        if len(groups) == 4 and all(g <= 3 for g in groups) and "." in span:
            return False  # a dotted quad
        # A one-digit group only as a country code or "(0)": "122.0.6261.94" is a version.
        return "(0)" in span or all(g > 1 for g in groups[1:])

    def _possible_phone(self, number: str, *, plus: bool, groups: list[int]) -> bool:
        local_ok = groups == [3, 4]
        candidates: list[tuple[str, str | None]] = [("+" + number, None)] if plus else []
        candidates += [(number, region) for region in self.config.phone_regions]
        for raw, region in candidates:
            try:
                parsed = phonenumbers.parse(raw, region)
            except phonenumbers.NumberParseException:
                continue
            reason = phonenumbers.is_possible_number_with_reason(parsed)
            if reason == phonenumbers.ValidationResult.IS_POSSIBLE:
                return True
            if local_ok and reason == phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY:
                return True
        return False

    # Addresses -------------------------------------------------------------------------

    def _addresses(
        self, views: Views, words: frozenset[bytes], ndigits: int
    ) -> Iterator[tuple[_Hit, View]]:
        original = views.original
        lt = views.letters.text
        pf = self._prefilter
        if views.letters is not views.skeleton:
            # The patterns also run on the digits view, whose words are the skeleton's.
            words = words | _words(views.skeleton.text)
        street = (
            not pf or not words.isdisjoint(_SUFFIX_WORDS) or _LONG_SUFFIX.search(lt) is not None
        )
        # "box", or "b" alone or right after the "o" of "p o" ("po b", "p ob", "pob").
        box = not pf or "box" in lt or "pob" in lt or not words.isdisjoint(_BOX_B)
        unit = not pf or not words.isdisjoint(_UNIT_WORDS)
        zip_code = not pf or ndigits >= 5
        patterns: list[tuple[re.Pattern[str], str, bool]] = []
        if street:
            patterns += [(self._street, "address.street", True)]
            patterns += [(self._street_rev, "address.street", True)]
        if box:
            patterns.append((self._po_box, "address.po_box", True))
        if unit:
            patterns.append((self._unit, "address.unit", False))
        zip_pattern = (self._zip, "address.zip", False)
        for view in (views.letters, views.digits) if patterns or zip_code else ():
            text = view.text
            # Every ZIP alternative holds five digits in a row: skip the long scan without.
            if zip_code and (not pf or _zip_possible(text)):
                view_patterns = [*patterns, zip_pattern]
            elif patterns:
                view_patterns = patterns
            else:
                continue

            def number_ok(m: re.Match[str], view: View = view) -> bool:
                return self._number_ok(view, original, m.start("num"), m.end("num"))

            for pattern, detector, check in view_patterns:
                matches = _accepted(pattern, text, number_ok) if check else pattern.finditer(text)
                for m in matches:
                    yield _Hit(Category.ADDRESS, detector, m.start(), m.end()), view
        text = views.digits.text
        if not pf or (ndigits and _inward_possible(text)):
            for m in self._postcode.finditer(text):
                if self._postcode_strict.match(m.group().replace(" ", "")):
                    yield (
                        _Hit(Category.ADDRESS, "address.postcode", m.start(), m.end()),
                        views.digits,
                    )
        # Letters spread out in the digits view: "1234 e l m s t r e e t".
        squeezed = _squeeze_singles(views.digits) if street else views.digits
        if squeezed is not views.digits:

            def squeezed_ok(m: re.Match[str]) -> bool:
                return self._number_ok(squeezed, original, m.start("num"), m.end("num"))

            for m in _accepted(self._street, squeezed.text, squeezed_ok):
                yield _Hit(Category.ADDRESS, "address.street", m.start(), m.end()), squeezed

    @staticmethod
    def _number_ok(view: View, original: str, start: int, end: int) -> bool:
        """A house number: written with digits or spelled digits in the original."""
        a, b = view.span(start, end)
        written = original[a:b]
        if any(unicodedata.decimal(c, -1) >= 0 for c in written):
            return True
        return any("0" <= c <= "9" for c in view.text[start:end]) and view.text[start].isdigit()

    # Social ----------------------------------------------------------------------------

    def _social(self, text: str, words: frozenset[bytes]) -> Iterator[_Hit]:
        pf = self._prefilter
        apps = self._apps.finditer(text) if not pf or not words.isdisjoint(_APP_WORDS) else ()
        for m in apps:
            yield _Hit(
                Category.SOCIAL, "social.app", m.start(), m.end(), re.sub(r"\W", "", m.group())
            )
        if pf and words.isdisjoint(_AMBIGUOUS_WORDS):
            return
        for m in self._invite.finditer(text):
            app = m.group("app") or m.group("app2")
            yield _Hit(Category.SOCIAL, "social.invite", m.start(), m.end(), app)

    def _handles(self, text: str) -> Iterator[_Hit]:
        for m in self._handle.finditer(text):
            name, after = m.group("name"), m.group("after")
            if name.rstrip(".") in _NOT_HANDLES or after in {"(", "/"}:
                continue
            if "." in name.rstrip("."):
                continue  # @app.route, @pytest.mark...
            yield _Hit(Category.SOCIAL, "social.handle", m.start(), m.end("name"), name)
        for m in self._tag.finditer(text):
            yield _Hit(Category.SOCIAL, "social.tag", m.start(), m.end())

    # Lexicon and names -----------------------------------------------------------------

    def _terms(self, text: str) -> Iterator[_Hit]:
        lexicon = self._compiled.lexicon
        if lexicon is not None:
            for m in lexicon.finditer(text):
                group = m.lastgroup or ""
                label = self._compiled.lexicon_categories.get(group, "")
                yield _Hit(Category.LEXICON, "lexicon.term", m.start(), m.end(), label)
        names = self._compiled.names
        if names is not None:
            for m in names.finditer(text):
                yield _Hit(Category.DO_NOT_CONTACT, "do_not_contact.name", m.start(), m.end())

    # Blobs -----------------------------------------------------------------------------

    def _blobs(self, text: str, *, encoded: bool) -> Iterator[_Hit]:
        """Hex chains always; base64 and entropy runs only when ``encoded`` (the text
        switches character classes often enough to hold one)."""
        cfg = self.config
        if len(text) < min(cfg.min_hex_chars, cfg.min_entropy_chars):
            return
        for m in self._hex_chain.finditer(text):
            chunk = m.group()
            hexdigits = re.sub(r"0x|\\x|[^0-9a-fA-F]", "", chunk)
            if len(hexdigits) < cfg.min_hex_chars:
                continue
            if sum(c.isdigit() for c in hexdigits) < 0.3 * len(hexdigits):
                continue
            if cfg.allow_uuids and self._uuid.fullmatch(chunk):
                continue
            groups = chunk.split(":")
            if len(groups) == 8 and all(1 <= len(g) <= 4 for g in groups):
                continue  # a full IPv6 address
            yield _Hit(Category.BLOB, "blob.hex", m.start(), m.end())
        if not encoded:
            return
        pieces = [(p.start(), p.end(), p.group()) for p in self._piece.finditer(text)]
        if not pieces:
            return
        # Single pieces, then chains joined by whitespace, then long pieces joined by filler.
        for a, b, piece in pieces:
            detector = self._blob_kind(piece)
            if detector:
                yield _Hit(Category.BLOB, detector, a, b)
        for chain in self._chains(text, pieces):
            a, b = chain[0][0], chain[-1][1]
            joined = "".join(p for _, _, p in chain)
            detector = self._blob_kind(joined)
            if detector:
                yield _Hit(Category.BLOB, detector, a, b)

    def _chains(
        self, text: str, pieces: list[tuple[int, int, str]]
    ) -> Iterable[list[tuple[int, int, str]]]:
        """Runs of weird pieces separated by whitespace, or long ones by a few words."""
        chain: list[tuple[int, int, str]] = []
        for piece in pieces:
            if chain:
                gap = text[chain[-1][1] : piece[0]]
                if not (
                    gap.isspace() and len(gap) <= 4 and (_weird(piece[2]) or len(piece[2]) <= 4)
                ):
                    if len(chain) > 1:
                        yield chain
                    chain = []
            if _weird(piece[2]) or chain:
                chain.append(piece)
        if len(chain) > 1:
            yield chain
        long_pieces = [p for p in pieces if len(p[2]) >= 8 and _weird(p[2])]
        limit = self.config.max_filler_words
        group: list[tuple[int, int, str]] = []
        for piece in long_pieces:
            if group:
                gap = text[group[-1][1] : piece[0]]
                words = re.findall(r"[a-z]+", gap, re.IGNORECASE)
                if len(words) > limit or not re.fullmatch(r"[\sa-zA-Z:,]*", gap):
                    if len(group) > 1:
                        yield group
                    group = []
            group.append(piece)
        if len(group) > 1:
            yield group

    def _blob_kind(self, s: str) -> str:
        """``blob.base64``/``blob.entropy`` if ``s`` (no spaces) looks encoded, else ``""``."""
        cfg = self.config
        n = len(s)
        if n < cfg.min_entropy_chars:
            return ""
        if n >= cfg.min_hex_chars and _HEX.fullmatch(s) and _count_digits(s) * 10 >= n * 3:
            return "blob.hex"
        body = s.rstrip("=")
        if (
            n >= cfg.min_base64_chars
            and _BASE32.fullmatch(body)
            and shannon_entropy(body) >= cfg.min_base64_entropy_bits
        ):
            return "blob.base64"
        std = "+" in body or "/" in body
        url = "_" in body or "-" in body
        if std and url:
            return ""  # a path or an identifier, not base64
        lower = any(c.islower() for c in body)
        upper = any(c.isupper() for c in body)
        digit = any(c.isdigit() for c in body)
        classes = lower + upper + digit + (std or url)
        entropy = shannon_entropy(body)
        if (
            n >= cfg.min_base64_chars
            and classes >= 3
            and entropy >= cfg.min_base64_entropy_bits
            and ((lower and upper and _case_switches(body) >= 4) or (upper and digit))
        ):
            return "blob.base64"
        if (
            lower
            and upper
            and digit
            and entropy >= cfg.min_entropy_bits
            and _case_switches(body) >= n // 6
        ):
            return "blob.entropy"
        return ""


_HEX = re.compile(r"[0-9a-fA-F]+")
_LETTERS_ONLY = bytes(i if 97 <= i <= 122 else 32 for i in range(256))
_CHAR_CLASSES = bytes(
    ord("a") if 97 <= i <= 122 else ord("A") if 65 <= i <= 90 else ord("0") if 48 <= i <= 57 else 32
    for i in range(256)
)
_MIN_CLASS_SWITCHES = 6
"""Encoded data switches between lower case, upper case and digits often (a 40-character
base64 run dozens of times); prose, SQL and most code rarely do."""


def _widen_phone(original: str, start: int) -> int:
    """Include an opening parenthesis the digits view dropped: ``(212) 555-0182``."""
    while start > 0 and original[start - 1] in "(（":
        start -= 1
    return start


def _count_digits(text: str) -> int:
    b = text.encode("ascii", "replace")
    return len(b) - len(b.translate(None, b"0123456789"))


def _class_switches(text: str) -> int:
    """Adjacent lower/upper/digit pairs of different classes (upper->lower excluded:
    every capitalised word has one), counted in C via ``bytes.translate``."""
    b = text.encode("ascii", "replace").translate(_CHAR_CLASSES)
    return b.count(b"aA") + b.count(b"a0") + b.count(b"0a") + b.count(b"A0") + b.count(b"0A")


_DIGITS3 = re.compile(r"[0-9][0-9][0-9]")
_FIVE_DIGITS = re.compile(r"\d{5}")


# ASCII classes for the ZIP and postcode pre-checks: digits "0", whitespace (as the str
# regexes see it, \x1c-\x1f too) " ", the letters of a postcode's inward code "a".
_ZIP_CLASSES = bytes(
    ord("0") if 48 <= i <= 57 else ord(" ") if chr(i).isspace() else ord("x") for i in range(256)
)
_INWARD_CLASSES = bytes(
    ord("0")
    if 48 <= i <= 57
    else ord(" ")
    if chr(i).isspace()
    else ord("a")
    if chr(i) in "abdefghjlnpqrstuwxyz"
    else ord("x")
    if chr(i) in "ikmov"
    else ord(".")
    for i in range(256)
)
_INWARD_SHAPES = tuple(
    code + end for code in (b"0aa", b"0 aa", b"0a a", b"0 a a") for end in (b" ", b".")
)


def _zip_possible(text: str) -> bool:
    """False when ``_zip`` cannot match ``text``: each alternative holds "zip", "post", or
    whitespace and then five digits (a state, then the ZIP)."""
    if not text.isascii():
        return _FIVE_DIGITS.search(text) is not None
    if "zip" in text or "post" in text:
        return True
    return b" 00000" in text.encode("ascii").translate(_ZIP_CLASSES)


def _inward_possible(text: str) -> bool:
    """False when :data:`_INWARD` (a digit, two inward-code letters, each with an optional
    space before it, then no letter or digit) cannot match ``text``."""
    if not text.isascii():
        return _INWARD.search(text) is not None
    t = text.encode("ascii").translate(_INWARD_CLASSES) + b"."
    return any(shape in t for shape in _INWARD_SHAPES)


# The digits view for the phone pre-check: digits "0", the letters a run reads as digits
# "o", possible separators (whitespace, ``().-/+``, anything non-ASCII, which
# ``encode("ascii", "replace")`` makes "?") a space, anything else "x".
_PHONE_CLASSES = bytes(
    ord("0")
    if 48 <= i <= 57
    else ord("o")
    if chr(i) in "oli|"
    else ord(" ")
    if i >= 128 or chr(i).isspace() or chr(i) in "().-/+?"
    else ord("x")
    for i in range(256)
)
# _PHONE_CLASSES with the separators deleted and digits and "oli|" both "o".
_PHONE_SEPARATORS = bytes(i for i in range(128) if chr(i).isspace() or chr(i) in "().-/+?")
_PHONE_SQUEEZE = _PHONE_CLASSES.replace(b"0", b"o")


def _phone_run_possible(digits: str, least: int) -> bool:
    """False when no ``_phone_run`` match in the digits view ``digits`` holds ``least``
    digit-like characters (``min_phone_digits``): in a run they are only apart by
    separators (at most four, and a ``+``), so with every separator (and every non-ASCII
    character) deleted they stand ``least`` in a row."""
    squeezed = digits.encode("ascii", "replace").translate(_PHONE_SQUEEZE, _PHONE_SEPARATORS)
    return b"o" * least in squeezed


_TLD_WORDS = frozenset(t.encode() for t in STRONG_TLDS | {"www", "http", "https", "hxxp"})
_DOT_WORDS = frozenset({b"dot", b"period", b"point"})
_STRONG_TLD_WORDS = frozenset(t.encode() for t in STRONG_TLDS)
_WEAK_TLD_WORDS = frozenset(t.encode() for t in WEAK_TLDS)
_ALL_TLDS = _STRONG_TLD_WORDS | _WEAK_TLD_WORDS
_PROVIDER_WORDS = frozenset(re.sub(r"\\s\*", "", p).encode() for p in MAIL_PROVIDERS) | frozenset(
    p.split("\\")[0].encode() for p in MAIL_PROVIDERS
)
# In the ASCII-encoded letters view (anything not ASCII is "?"): a bracketed dot, and a
# dot after whitespace. Whitespace
# is what the str regexes count as whitespace, \x1c-\x1f too, and "?" may be any
# non-ASCII character (a non-ASCII space, or "。").
_BRACKET_DOT = re.compile(rb"[\[({][\s\x1c-\x1f?]*(?:[.?]|dot)")
_SPACE_DOT = bytes(
    ord("s")
    if chr(i).isspace()
    else ord("d")
    if i == ord(".")
    else ord("q")
    if i == ord("?")
    else ord("x")
    for i in range(256)
)


def _other_dot(lb: bytes, words: frozenset[bytes]) -> bool:
    """True if ``lb`` may hold a dot of ``_domain`` that is not a plain ``.``/``。`` right
    before a label: bracketed (``[.]``, ``(dot)``), after whitespace (`` . ``, `` .com``)
    or spelled (``dot``, ``period``, ``point``)."""
    if not words.isdisjoint(_DOT_WORDS):
        return True
    if (b"[" in lb or b"(" in lb or b"{" in lb) and _BRACKET_DOT.search(lb) is not None:
        return True
    t = lb.translate(_SPACE_DOT)
    return b"sd" in t or b"sq" in t or b"qd" in t or b"qq" in t


def _words(text: str) -> frozenset[bytes]:
    """The runs of ASCII letters in ``text``."""
    return frozenset(text.encode("ascii", "replace").translate(_LETTERS_ONLY).split())


def _term_words(config: DetectorConfig) -> tuple[frozenset[bytes], bool]:
    """Words one of which every lexicon or do-not-contact match holds, and whether some
    term gives no such words (then the lexicon regex always runs).

    Within a word of a term, letters are literal and other characters optional; between
    words there is nothing, punctuation, or punctuation around filler words; before and
    after a match no letter. So, when every word of the term holds a letter, the first
    run of letters in a match is the term's first letter pieces joined (``"snitchesget"``
    in ``"snitchesget stitches"``, ``"burner"``, ``"burnerphone"``) and the last run its
    last pieces joined (``"dead"``, ``"redead"``, ``"youredead"``); with a one-word term
    the first run is one of its forms (``-s``, ``-d``, ``-ed``, ``-ing``). Each is a whole
    word of the letters view. Per term the rarer-looking side is used (the one whose
    shortest word is longer: ``kill`` for "kill you", ``dead`` for "you're dead"). A term
    with a word without letters could start or end with a filler word instead: it sets
    the flag.
    """
    out: set[str] = set()
    always = False

    def add(words: list[str], *, forms: bool) -> None:
        nonlocal always
        pieces = [re.findall(r"[a-z]+", w) for w in words]
        if not all(pieces):
            always = True
            return
        flat = [p for ps in pieces for p in ps]
        n = len(flat)
        firsts = {"".join(flat[:j]) for j in range(1, n + 1)}
        lasts = {"".join(flat[i:]) for i in range(n)}
        if forms and n == 1:
            w = flat[0]
            stem = w[:-1] if w.endswith("e") else w
            out.update((w, w + "s", w + "d", w + "ed", w + "ing", stem + "ing"))
            return
        shortest_first = min(len(x) for x in firsts)
        shortest_last = min(len(x) for x in lasts)
        out.update(firsts if shortest_first >= shortest_last else lasts)

    for term in config.lexicon:
        words = term.term.lower().split()
        add(words, forms=len(words) == 1)
    for name in config.do_not_contact:
        parts = name.lower().split()
        add(parts, forms=False)
        add(parts[-1:] + parts[:-1], forms=False)
    return frozenset(w.encode() for w in out), always


def _after_dot(lb: bytes, tlds: frozenset[bytes]) -> bool:
    """True if one of ``tlds`` follows a ``.`` (or a non-ASCII character: ``。``) in the
    ASCII-encoded letters view ``lb``."""
    return any(b"." + t in lb or b"?" + t in lb for t in tlds)


_MAIL_WORDS = frozenset(
    {p.split("\\")[0].encode() for p in MAIL_PROVIDERS}
    | {t.encode() for t in STRONG_TLDS | WEAK_TLDS}
)
_AMBIGUOUS_WORDS = frozenset(
    b"signal snap sc ig fb messenger x line xbox psn steam skype viber".split()
)
_APP_WORDS = frozenset(
    b"""snapchat snap insta instagram gram whatsapp whats telegram discord facebook face
    tiktok tik kik twitter wechat chat gamertag gamer xbox onlyfans only tinder grindr""".split()
)
_SUFFIX_WORDS = frozenset(x.encode() for x in STREET_SUFFIXES)
_LONG_SUFFIX = re.compile("|".join(x for x in STREET_SUFFIXES if len(x) >= 4))
_BOX_B = frozenset({b"b", b"ob"})
_UNIT_WORDS = frozenset(b"apt apartment unit flat suite ste".split())
_INWARD = re.compile(r"[0-9]\s?[abd-hjlnp-uw-z]\s?[abd-hjlnp-uw-z](?![a-z0-9])")
_SOCIAL_WORDS = frozenset(
    b"""snapchat snap insta instagram gram whatsapp whats telegram discord facebook face
    tiktok tik kik twitter wechat chat gamertag gamer xbox onlyfans only tinder grindr
    signal sc ig fb messenger x line psn steam skype viber""".split()
)
_BASE32 = re.compile(r"(?=[A-Z2-7]*[2-7])[A-Z2-7]+")
_LETTER_DIGITS = str.maketrans({"o": "0", "l": "1", "i": "1", "|": "1"})

_NOT_HANDLES = _wordset(
    """
    property staticmethod classmethod dataclass abstractmethod override cached_property
    lru_cache cache wraps contextmanager pytest fixture media import keyframes font-face
    supports charset layer page namespace container tailwind apply types babel vue angular
    param return returns throws example see deprecated author since version override
    total_ordering singledispatch overload final functools
    """
)


def _weird(piece: str) -> bool:
    """A piece of a blob rather than a word: a digit, ``+``/``/``/``=``, or inner capitals."""
    if any(c.isdigit() or c in "+/=" for c in piece):
        return True
    return any(c.isupper() for c in piece[1:]) and any(c.islower() for c in piece)


def _case_switches(s: str) -> int:
    """How often letters switch between upper and lower case."""
    switches = 0
    prev = None
    for c in s:
        if c.isalpha():
            cur = c.isupper()
            if prev is not None and cur != prev:
                switches += 1
            prev = cur
    return switches


_SINGLE_LETTERS = re.compile(r"(?<![a-z0-9])[a-z](?: [a-z](?![a-z0-9])){2,}")


def _squeeze_singles(view: View) -> View:
    """Join runs of three or more single letters separated by one space (keeps spans)."""
    text = view.text
    matches = list(_SINGLE_LETTERS.finditer(text))
    if not matches:
        return view
    keep = [True] * len(text)
    for m in matches:
        for i in range(m.start() + 1, m.end(), 2):
            keep[i] = False
    idx = [i for i, k in enumerate(keep) if k]
    return View(
        "".join(text[i] for i in idx),
        tuple(view.starts[i] for i in idx),
        tuple(view.ends[i] for i in idx),
    )
