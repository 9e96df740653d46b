"""The policy engine: decisions of every action, the default policy on the corpora."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from policy.decisions import (
    Action,
    Alert,
    Allow,
    Block,
    Decision,
    Hit,
    Hold,
    Kind,
    Redact,
    Route,
    Subject,
)
from policy.engine import (
    DEFAULT_LEXICON_TXT,
    DEFAULT_POLICY_TOML,
    ContentPolicy,
    default_policy,
    default_policy_files,
    load_policy,
    parse_policy,
    read_from,
)
from policy.rules import redact_hits
from relay.errors import ConfigError
from relay.identity import ParticipantRole as R
from tests.policy.corpus_reader import read_clean, read_evasion

NAMES = '["Jane Roe", "Marisol Quintero", "Tobias Wrenfield"]'
CAUGHT = (Block, Hold, Redact)


def facility_policy() -> ContentPolicy:
    """The default policy with the corpus's do-not-contact names."""
    text = DEFAULT_POLICY_TOML.replace("do_not_contact = []", f"do_not_contact = {NAMES}")
    return parse_policy(text.encode(), "test policy", read_from(default_policy_files()))


def chat(
    text: str,
    sender: R = R.LEARNER,
    *,
    kind: Kind = Kind.CHAT,
    to: R | None = None,
) -> Subject:
    route = Route.CLASS if to is None else Route.DIRECT
    return Subject(kind=kind, sender_role=sender, route=route, text=text, recipient_role=to)


def policy_of(toml: str, lexicon: str | None = None) -> ContentPolicy:
    files = {} if lexicon is None else {"lexicon.txt": lexicon}
    return parse_policy(toml.encode(), "/facility/policy.toml", read_from(files))


def rule(rule_id: str, categories: str, action: str, extra: str = "") -> str:
    return (
        f'[[rule]]\nid = "{rule_id}"\ncategories = [{categories}]\naction = "{action}"\n'
        f'reason = "reason of {rule_id}"\n{extra}\n'
    )


PHONE_TEXT = "ring me on 212 555 0182 later"
PHONE_SPAN = (11, 23)


# --- the corpora ------------------------------------------------------------------------


def _missed(policy: ContentPolicy, sender: R) -> list[str]:
    """Evasion lines not caught: not blocked, held or redacted, or caught without the
    corpus's category among the hits, or redacted while leaving what was found."""
    missed: list[str] = []
    for sample in read_evasion():
        decision = policy.decide(chat(sample.message, sender))
        found = {h.category for h in decision.hits}
        if not isinstance(decision, CAUGHT) or sample.category not in found:
            missed.append(f"{sample.line}: {type(decision).__name__} {sorted(found)}")
        elif isinstance(decision, Redact):
            for h in decision.hits:
                if h.action is Action.REDACT and len(sample.message[h.start : h.end]) >= 4:
                    assert sample.message[h.start : h.end] not in decision.text, sample.line
    return missed


def test_the_default_policy_catches_every_evasion_from_a_learner() -> None:
    assert _missed(facility_policy(), R.LEARNER) == []


def test_the_default_policy_catches_every_evasion_from_an_instructor() -> None:
    # Instructors' links are held and their contact details redacted instead of blocked.
    policy = facility_policy()
    assert _missed(policy, R.INSTRUCTOR) == []
    kinds = Counter(
        type(policy.decide(chat(s.message, R.INSTRUCTOR))).__name__ for s in read_evasion()
    )
    assert kinds["Redact"] > 0
    assert kinds["Hold"] > 0


@pytest.mark.parametrize("sender", [R.LEARNER, R.INSTRUCTOR])
def test_the_default_policy_lets_the_classroom_talk(sender: R) -> None:
    policy = facility_policy()
    clean = read_clean()
    stopped = [
        s.message for s in clean if not isinstance(policy.decide(chat(s.message, sender)), Allow)
    ]
    assert len(stopped) <= 0.005 * len(clean), stopped


# --- decisions of every action ----------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "kind"),
    [
        ("allow", Allow),
        ("alert", Alert),
        ("redact", Redact),
        ("hold", Hold),
        ("block", Block),
    ],
)
def test_every_action_is_reachable_by_a_rule(action: str, kind: type[Decision]) -> None:
    policy = policy_of(rule("r.phone", '"phone"', action))
    decision = policy.decide(chat(PHONE_TEXT))
    assert type(decision) is kind
    assert decision.action is Action(action)
    if kind is Allow:
        assert decision == Allow()
        return
    assert decision.rule == "r.phone"
    assert decision.reason == "reason of r.phone (phone)"
    assert decision.hits == (Hit("r.phone", "phone", Action(action), *PHONE_SPAN),)
    if isinstance(decision, Redact):
        assert decision.text == "ring me on [redacted:phone] later"
    if isinstance(decision, Block):
        assert not decision.route_refused


def test_the_most_severe_action_decides_and_every_match_is_a_hit() -> None:
    policy = policy_of(
        rule("r.phone", '"phone"', "redact")
        + rule("r.url", '"url"', "hold")
        + rule("r.mail", '"email"', "alert")
    )
    text = "ring 212 555 0182, see www.hotmail.com, mail jo@mailbox.org"
    decision = policy.decide(chat(text))
    assert isinstance(decision, Hold)
    assert decision.rule == "r.url"
    assert decision.reason == "reason of r.url (phone, url, email)"
    assert [(h.rule, h.action) for h in decision.hits] == [
        ("r.phone", Action.REDACT),
        ("r.url", Action.HOLD),
        ("r.mail", Action.ALERT),
    ]
    for h in decision.hits:
        assert h.label == ""
        assert text[h.start : h.end] in ("212 555 0182", "www.hotmail.com", "jo@mailbox.org")
    # What staff approval would deliver: the held text with its redacted spans replaced.
    assert redact_hits(text, decision.hits) == (
        "ring [redacted:phone], see www.hotmail.com, mail jo@mailbox.org"
    )


def test_a_redaction_replaces_only_redacted_spans_and_keeps_the_rest() -> None:
    policy = policy_of(rule("r.phone", '"phone"', "redact") + rule("r.url", '"url"', "alert"))
    text = "ring 212 555 0182 or 212 555 0199, see www.hotmail.com"
    decision = policy.decide(chat(text))
    assert isinstance(decision, Redact)
    assert decision.text == "ring [redacted:phone] or [redacted:phone], see www.hotmail.com"
    assert decision.rules == ("r.phone", "r.url")


def test_overlapping_redacted_spans_become_one_replacement() -> None:
    policy = policy_of(rule("r.contact", '"email", "social"', "redact"))
    text = "add me on snapchat: jo.smith@mailbox.org ok"
    decision = policy.decide(chat(text))
    assert isinstance(decision, Redact)
    assert decision.text == "add me on [redacted:social]: [redacted:email] ok"
    # Overlapping findings: a hidden character inside a link is two findings, one span.
    hidden = "see hot\u200bmail.com now"
    policy = policy_of(rule("r.any", '"url", "hidden"', "redact"))
    decision = policy.decide(chat(hidden))
    assert isinstance(decision, Redact)
    assert decision.categories == ("url", "hidden")
    spans = sorted(decision.spans)
    assert spans[0][0] < spans[1][0] < spans[0][1]
    assert decision.text == "see [redacted:url] now"


def test_the_reason_never_quotes_the_text() -> None:
    decision = default_policy().decide(chat("text me at (212) 555-0182 tonight"))
    assert isinstance(decision, Block)
    assert decision.rule == "contact.details"
    assert decision.reason == "contact details and other apps are not allowed (phone)"


def test_the_default_policy_holds_an_instructors_link_and_blocks_a_learners() -> None:
    policy = default_policy()
    held = policy.decide(chat("see www.hotmail.com", R.INSTRUCTOR))
    assert isinstance(held, Hold)
    assert held.rule == "contact.link.instructor"
    blocked = policy.decide(chat("see www.hotmail.com", R.LEARNER))
    assert isinstance(blocked, Block)
    assert blocked.rule == "contact.link"
    assert isinstance(policy.decide(chat("see docs.python.org/3/", R.LEARNER)), Allow)


def test_the_default_policy_redacts_an_instructors_contact_details() -> None:
    policy = default_policy()
    decision = policy.decide(chat("call me at (212) 555-0182 tonight", R.INSTRUCTOR))
    assert isinstance(decision, Redact)
    assert decision.rule == "contact.details.instructor"
    assert decision.text == "call me at [redacted:phone] tonight"
    assert isinstance(policy.decide(chat("call me at (212) 555-0182", R.LEARNER)), Block)


def test_the_default_policy_holds_encoded_data() -> None:
    decision = default_policy().decide(chat("U2FsdGVkX1+abcdEFGHijklMNOPqrstUVWXyz0123456789ab"))
    assert isinstance(decision, Hold)
    assert decision.rule == "content.encoded"


def test_the_default_policy_alerts_on_watched_terms() -> None:
    decision = default_policy().decide(chat("are we on lockdown again tomorrow?"))
    assert isinstance(decision, Alert)
    assert decision.rule == "lexicon.watch"
    assert decision.hits == (Hit("lexicon.watch", "lexicon", Action.ALERT, 10, 18, "watch"),)
    assert decision.categories == ("lexicon:watch",)


def test_lexicon_categories_become_rules() -> None:
    decision = default_policy().decide(chat("I'll get you a burner phone"))
    assert isinstance(decision, Block)
    assert decision.rule == "lexicon.contraband"
    assert [h.label for h in decision.hits] == ["contraband"]


# --- selectors --------------------------------------------------------------------------


def test_a_later_rule_never_overrides_an_earlier_one() -> None:
    text = DEFAULT_POLICY_TOML + rule("x", '"url"', "allow")
    policy = parse_policy(text.encode(), "t", read_from(default_policy_files()))
    assert isinstance(policy.decide(chat("see www.hotmail.com")), Block)


def test_rules_select_by_role() -> None:
    policy = policy_of(
        rule("links.instructor", '"url"', "allow", 'roles = ["instructor"]')
        + rule("links.staff", '"url"', "alert", 'roles = ["staff"]')
        + rule("links", '"url"', "block")
    )
    assert isinstance(policy.decide(chat("see www.hotmail.com", R.INSTRUCTOR)), Allow)
    assert isinstance(policy.decide(chat("see www.hotmail.com", R.STAFF)), Alert)
    assert isinstance(policy.decide(chat("see www.hotmail.com", R.LEARNER)), Block)


def test_rules_select_by_route() -> None:
    policy = policy_of(
        rule("direct", '"phone"', "hold", 'routes = ["direct"]') + rule("class", '"phone"', "block")
    )
    held = policy.decide(chat(PHONE_TEXT, R.LEARNER, to=R.INSTRUCTOR))
    assert isinstance(held, Hold)
    assert held.rule == "direct"
    assert isinstance(policy.decide(chat(PHONE_TEXT, R.LEARNER)), Block)


def test_rules_select_by_kind() -> None:
    policy = policy_of(
        rule("code", '"blob"', "alert", 'kinds = ["editor", "file_name"]')
        + rule("chat", '"blob"', "block")
    )
    blob = "U2FsdGVkX1+abcdEFGHijklMNOPqrstUVWXyz0123456789ab"
    assert isinstance(policy.decide(chat(blob, kind=Kind.EDITOR)), Alert)
    assert isinstance(policy.decide(chat(blob, kind=Kind.FILE_NAME)), Alert)
    assert isinstance(policy.decide(chat(blob, kind=Kind.CHAT)), Block)
    assert isinstance(policy.decide(chat(blob, kind=Kind.SCREEN_CAPTION)), Block)


def test_a_policy_without_rules_allows_everything() -> None:
    assert policy_of("").decide(chat(PHONE_TEXT)) == Allow()
    assert default_policy().decide(chat("")) == Allow()


# --- the lexicon file -------------------------------------------------------------------

LEX_TOML = """\
[detectors]
lexicon_file = "lexicon.txt"

[lexicon.threat]
action = "block"
reason = "threats are not allowed"
terms = ["watch your back"]

[lexicon.watch]
action = "alert"
reason = "staff are told"
"""


def test_terms_come_from_the_file_and_the_tables() -> None:
    policy = policy_of(LEX_TOML, "threat block stab you\nwatch alert lockdown\n")
    for text, kind, rule_id in [
        ("i will stab you", Block, "lexicon.threat"),
        ("watch your back", Block, "lexicon.threat"),
        ("lockdown again", Alert, "lexicon.watch"),
        ("nothing to see", Allow, "content.allow"),
    ]:
        decision = policy.decide(chat(text))
        assert type(decision) is kind, text
        assert decision.rule == rule_id


def test_a_term_may_act_otherwise_than_its_category() -> None:
    lexicon = """\
# the usual action, then two of their own
watch alert lockdown
watch hold   escape plan
watch redact lock pick
watch allow  riot
"""
    policy = policy_of(LEX_TOML, lexicon)
    held = policy.decide(chat("whats the escape plan"))
    assert isinstance(held, Hold)
    assert held.rule == "lexicon.watch"
    assert held.reason == "staff are told (lexicon)"
    assert held.hits == (Hit("lexicon.watch", "lexicon", Action.HOLD, 10, 21, "watch"),)
    redacted = policy.decide(chat("a lock pick, during lockdown"))
    assert isinstance(redacted, Redact)
    assert redacted.text == "a [redacted:lexicon], during lockdown"
    assert [(h.action, h.label) for h in redacted.hits] == [
        (Action.REDACT, "watch"),
        (Action.ALERT, "watch"),
    ]
    assert isinstance(policy.decide(chat("a riot of colour")), Allow)


def test_the_lexicon_file_is_read_next_to_the_policy_file(tmp_path: Path) -> None:
    for name, text in default_policy_files().items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    loaded = load_policy(tmp_path / "policy.toml")
    built_in = default_policy()
    assert loaded.version == built_in.version
    assert loaded.rules == built_in.rules
    assert loaded.rates == built_in.rates
    assert loaded.review_expiry_s == built_in.review_expiry_s
    assert isinstance(loaded.decide(chat("I'll get you a burner phone")), Block)


def test_the_lexicon_file_may_be_in_a_folder(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "terms.txt").write_text("watch alert lockdown\n", encoding="utf-8")
    toml = LEX_TOML.replace('"lexicon.txt"', '"lists/terms.txt"')
    (tmp_path / "policy.toml").write_text(toml, encoding="utf-8")
    decision = load_policy(tmp_path / "policy.toml").decide(chat("lockdown"))
    assert isinstance(decision, Alert)


def test_the_version_covers_the_lexicon_file() -> None:
    a = policy_of(LEX_TOML, "watch alert lockdown\n")
    same = policy_of(LEX_TOML, "watch alert lockdown\n")
    b = policy_of(LEX_TOML, "watch alert lockdown\nwatch alert riot\n")
    c = policy_of(LEX_TOML, "watch block lockdown\n")
    assert a.version == same.version
    assert len({a.version, b.version, c.version}) == 3
    edited = policy_of(
        LEX_TOML.replace('"lexicon.txt"', '"lexicon.txt" '), "watch alert lockdown\n"
    )
    assert a.version != edited.version


def test_the_default_policy_files_are_the_built_in_policy() -> None:
    files = default_policy_files()
    assert files == {"policy.toml": DEFAULT_POLICY_TOML, "lexicon.txt": DEFAULT_LEXICON_TXT}
    policy = parse_policy(files["policy.toml"].encode(), "x", read_from(files))
    assert policy.version == default_policy().version
    assert policy.rules == default_policy().rules
    # Every action appears in the default policy.
    actions = {r.action for r in policy.rules}
    assert actions >= {Action.BLOCK, Action.HOLD, Action.REDACT, Action.ALERT}


# --- rate limits and review expiry ------------------------------------------------------


def test_rates_and_review_have_defaults() -> None:
    policy = policy_of("")
    assert policy.rates == default_policy().rates
    assert set(policy.rates) == {Kind.CHAT, Kind.HAND}
    assert policy.rates[Kind.CHAT].person_burst == 8
    assert policy.rates[Kind.HAND].person_rate == 0.5
    assert policy.review_expiry_s == 30 * 60


def test_rate_tables_and_review_are_read() -> None:
    policy = policy_of(
        "[rate.chat]\nperson_rate = 2\nthrottle_s = 0\n"
        "[rate.editor]\nperson_rate = 30.0\nperson_burst = 60\n"
        "session_rate = 300.0\nsession_burst = 600\n"
        "[review]\nexpire_after_minutes = 90\n"
    )
    chat_limit = policy.rates[Kind.CHAT]
    assert chat_limit.person_rate == 2.0
    assert chat_limit.throttle_s == 0.0
    assert chat_limit.person_burst == 8  # the rest of the table keeps the defaults
    assert chat_limit.session_rate == 20.0
    editor = policy.rates[Kind.EDITOR]
    assert (editor.person_rate, editor.person_burst) == (30.0, 60)
    assert editor.throttle_s == 0.0
    assert Kind.HAND in policy.rates
    assert Kind.CONTROL not in policy.rates
    assert policy.review_expiry_s == 90 * 60


def test_policy_rates_are_read_only() -> None:
    policy = default_policy()
    with pytest.raises(TypeError):
        policy.rates[Kind.CONTROL] = policy.rates[Kind.CHAT]  # type: ignore[index]


# --- invalid files ----------------------------------------------------------------------

SRC = "/facility/policy.toml"
LEX = "/facility/lexicon.txt"


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        (rule("a", '"url"', "delay"), "rule 'a': action must be one of allow, alert"),
        (rule("a", '"links"', "block"), "rule 'a' categories: unknown value 'links'"),
        (rule("a", '"url"', "block", 'roles = ["warden"]'), "rule 'a' roles: unknown value"),
        (rule("a", '"url"', "block", 'routes = ["dm"]'), "rule 'a' routes: unknown value"),
        (rule("a", '"url"', "block", 'kinds = ["voice"]'), "rule 'a' kinds: unknown value"),
        ('[[rule]]\nid = "a"\ncategories = ["url"]\naction = "block"\n', "needs 'reason'"),
        (rule("a", '"url"', "block") + rule("a", '"url"', "block"), "used twice"),
        ('[detectors]\nphone_regions = ["ZZ"]\n', "unknown phone region"),
        ("[detectors]\ncolour = 1\n", "[detectors] has unknown key(s) colour"),
        ('[lexicon.threat]\naction = "block"\n', "[lexicon.threat] needs 'reason'"),
        ('[lexicon.threat]\naction = "warn"\nreason = "r"\n', "[lexicon.threat]: action must"),
        ('[lexicon.Threat]\naction = "block"\nreason = "r"\n', "category name"),
        (
            '[lexicon.threat]\naction = "block"\nreason = "r"\nterms = ["x y", "X  Y"]\n',
            "already listed",
        ),
        ("[rate.chat]\nperson_rate = 0\n", "[rate.chat] person_rate must be a number above 0"),
        ("[rate.chat]\nperson_rate = true\n", "[rate.chat] person_rate must be a number"),
        ("[rate.chat]\nperson_burst = 0\n", "[rate.chat] person_burst must be a whole number"),
        ("[rate.chat]\nsession_burst = 2.5\n", "[rate.chat] session_burst must be a whole"),
        ("[rate.hand]\nsession_rate = -1\n", "[rate.hand] session_rate must be a number above"),
        ("[rate.chat]\nthrottle_s = -1\n", "[rate.chat] throttle_s must be a number of seconds"),
        ("[rate.chat]\nthrottle_s = 3600\n", "[rate.chat] throttle_s must be"),
        ("[rate.chat]\nburst = 3\n", "[rate.chat] has unknown key(s) burst"),
        ("[rate.voice]\nperson_rate = 1\n", "[rate.voice]: unknown message kind 'voice'"),
        ("[rate.editor]\nperson_rate = 1\n", "[rate.editor] needs 'person_burst'"),
        ("rate = 3\n", "'rate' must be one table per message kind"),
        ("[review]\nexpire_after_minutes = 0\n", "[review] expire_after_minutes must be"),
        ("[review]\nexpire_after_minutes = 20000\n", "at most 10080"),
        ("[review]\nexpire_after_minutes = 'soon'\n", "expire_after_minutes must be"),
        ("[review]\nexpire_after = 5\n", "[review] has unknown key(s) expire_after"),
        ("[colours]\n", "unknown table(s) colours; known: [routing], [detectors]"),
    ],
)
def test_bad_policy_files_are_refused_clearly(toml: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        policy_of(toml)
    message = str(info.value)
    assert message.startswith(SRC + ":"), message
    assert needle in message


@pytest.mark.parametrize(
    ("lexicon", "needle"),
    [
        ("threat block\n", f"{LEX}:1: expected CATEGORY ACTION TERM"),
        ("# ok\n\nthreat  warn  stab you\n", f"{LEX}:3: unknown action 'warn'; allowed: allow"),
        ("threat block stab you\nviolence block kick\n", f"{LEX}:2: category 'violence' is not"),
        ("threat block stab you\nviolence block kick\n", "declared: threat, watch"),
        ("Threat! block x\n", f"{LEX}:1: 'Threat!' is not a category name"),
        ("threat block 1234\n", f"{LEX}:1: a lexicon term holds at least one letter"),
        ("threat block stab you\nwatch alert Stab  You\n", f"{LEX}:2: the term is already"),
        (
            "threat block watch your back\n",
            f"{LEX}:1: the term is already listed ({SRC}: [lexicon.threat] terms)",
        ),
        ("watch alert riot\n\xff\n", f"{LEX}:2: not UTF-8"),
    ],
)
def test_bad_lexicon_files_are_refused_with_the_line(lexicon: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_policy(
            LEX_TOML.encode(),
            SRC,
            read_from({"lexicon.txt": lexicon.encode("latin-1") if "\xff" in lexicon else lexicon}),
        )
    assert needle in str(info.value)


def test_a_missing_lexicon_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        policy_of(LEX_TOML)
    assert f"{SRC}: [detectors] lexicon_file: cannot read {LEX}" in str(info.value)
    (tmp_path / "policy.toml").write_text(LEX_TOML, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_policy(tmp_path / "policy.toml")
    assert str(tmp_path / "lexicon.txt") in str(info.value)
    assert "lexicon_file" in str(info.value)
    with pytest.raises(ConfigError, match="no way to read it"):
        parse_policy(LEX_TOML.encode(), SRC)


@pytest.mark.parametrize(
    "name", ["/etc/lexicon.txt", "../lexicon.txt", "a/../../b", "C:\\x.txt", ""]
)
def test_the_lexicon_file_is_inside_the_policy_folder(name: str) -> None:
    toml = LEX_TOML.replace('"lexicon.txt"', repr(name).replace("'", '"'))
    with pytest.raises(ConfigError) as info:
        policy_of(toml, "watch alert lockdown\n")
    assert f"{SRC}: [detectors] lexicon_file must be" in str(info.value)


def test_a_file_that_is_not_utf8_or_toml_is_refused() -> None:
    with pytest.raises(ConfigError, match="not UTF-8"):
        parse_policy(b"\xff", SRC)
    with pytest.raises(ConfigError, match="invalid TOML"):
        parse_policy(b"[rule", SRC)


def test_the_documentation_shows_the_default_policy() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "policy.md").read_text(encoding="utf-8")
    assert f"```toml\n{DEFAULT_POLICY_TOML}```" in doc
    assert f"```text\n{DEFAULT_LEXICON_TXT}```" in doc
