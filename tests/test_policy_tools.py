"""``classroom-relay policy test|replay``: the real commands, in this process and as a
separate process reading standard input, and the pure formatting and reading functions."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from policy.decisions import Action, Allow, Block, Hit, Kind, Redact, Route
from relay import cli
from relay.audit import AuditEvent, EventKind
from relay.errors import CredentialError
from relay.home import HOME_ENV
from relay.identity import ParticipantRole
from relay.policy_tools import (
    AuditLogReader,
    RecordedMessage,
    decided_differently,
    decision_json,
    format_decision,
    mark,
    merged_spans,
    recorded_message,
    sample_subject,
)
from relay.server import open_audit_store
from tests.conftest import Facility

# Rules scoped by role, route and kind, so that each option of `policy test` changes a
# decision of its own.
SCOPED_POLICY = """\
[routing]
learner_to_learner_direct = false

[[rule]]
id = "instructor.links"
categories = ["url"]
action = "allow"
reason = "instructors may share links"
roles = ["instructor"]

[[rule]]
id = "links"
categories = ["url"]
action = "block"
reason = "links are not allowed"

[[rule]]
id = "direct.phone"
categories = ["phone"]
action = "block"
reason = "no phone numbers in direct messages"
routes = ["direct"]

[[rule]]
id = "editor.email"
categories = ["email"]
action = "block"
reason = "no e-mail addresses in the editor"
kinds = ["editor"]
"""

LINK = "the answers are on evil-site.com"
PHONE = "call me on 415 555 0134"
EMAIL = "write to someone@mailbox.org"


def decisions_of(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def scoped_policy(tmp_path: Path) -> Path:
    path = tmp_path / "scoped.toml"
    path.write_text(SCOPED_POLICY)
    return path


# ---------------------------------------------------------------------------------------
# policy test
# ---------------------------------------------------------------------------------------


def test_text_uses_the_home_policy_and_says_so(facility: Facility) -> None:
    code, out, err = facility.admin("policy", "test", "--text", "how do I write a for loop?")
    assert code == 0, err
    assert out.startswith("allow ")
    assert '"how do I write a for loop?"' in out
    assert str(facility.home.policy_toml) in err
    assert "sha256:" in err


def test_a_refused_line_exits_0_and_names_the_rule(facility: Facility) -> None:
    code, out, _ = facility.admin("policy", "test", "--text", LINK)
    assert code == 0
    action, rules = out.split()[:2]
    assert action == "block"
    assert rules == "contact.link"


def test_every_line_of_stdin_gets_one_decision(
    facility: Facility, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"hello\n{LINK}\n\nprint(x)\n"))
    code, out, _ = facility.admin("policy", "test", "--json")
    assert code == 0
    got = decisions_of(out)
    assert [d["text"] for d in got] == ["hello", LINK, "", "print(x)"]
    assert [d["action"] for d in got] == ["allow", "block", "allow", "allow"]
    for d in got:
        assert {"action", "rule", "rules", "categories", "spans", "reason", "text"} <= set(d)
        assert isinstance(d["rules"], list)
        assert d["rules"]
        assert all(isinstance(s, list) and len(s) == 2 for s in d["spans"])
        assert "redacted" not in d  # only for a redaction


def test_the_home_policy_file_decides(facility: Facility) -> None:
    facility.home.policy_toml.write_text(SCOPED_POLICY)
    code, out, _ = facility.admin("policy", "test", "--json", "--text", LINK)
    assert code == 0
    assert decisions_of(out)[0]["rule"] == "links"


def test_policy_option_and_the_role_channel_kind_options(
    facility: Facility, scoped_policy: Path
) -> None:
    def rule(*args: str) -> str:
        code, out, err = facility.admin(
            "policy", "test", "--policy", str(scoped_policy), "--json", *args
        )
        assert code == 0, err
        assert str(scoped_policy) in err
        (decision,) = decisions_of(out)
        return str(decision["rule"])

    assert rule("--text", LINK) == "links"
    assert rule("--text", LINK, "--role", "instructor") == "content.allow"
    assert rule("--text", PHONE) == "content.allow"
    assert rule("--text", PHONE, "--channel", "direct") == "direct.phone"
    assert rule("--text", EMAIL) == "content.allow"
    assert rule("--text", EMAIL, "--kind", "editor") == "editor.email"


def test_direct_messages_go_to_the_instructor_or_from_the_instructor(facility: Facility) -> None:
    def decide(*args: str) -> dict[str, Any]:
        code, out, _ = facility.admin(
            "policy", "test", "--json", "--channel", "direct", "--text", "hi", *args
        )
        assert code == 0
        return decisions_of(out)[0]

    # A learner's direct message goes to the instructor: not the learner-to-learner rule.
    assert decide()["action"] == "allow"
    assert decide("--role", "instructor")["action"] == "allow"
    staff = decide("--role", "staff")
    assert (staff["action"], staff["rule"]) == ("block", "routing.staff_observe_only")
    assert sample_subject(
        "x", kind=Kind.CHAT, role=ParticipantRole.LEARNER, route=Route.DIRECT
    ).recipient_role is (ParticipantRole.INSTRUCTOR)
    assert sample_subject(
        "x", kind=Kind.CHAT, role=ParticipantRole.INSTRUCTOR, route=Route.DIRECT
    ).recipient_role is (ParticipantRole.LEARNER)


def test_without_a_home_the_built_in_default_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./facility here
    monkeypatch.delenv(HOME_ENV, raising=False)
    assert cli.main(["policy", "test", "--text", LINK, "--text", "hello"]) == 0
    out, err = capsys.readouterr()
    assert "built-in default policy (sha256:" in err
    assert "no facility home" in err
    assert [line.split()[0] for line in out.splitlines()] == ["block", "allow"]


def test_a_named_home_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    code, _, err = cli.run_captured(tmp_path / "nowhere", "policy", "test", "--text", "hi")
    assert code == 2
    assert "no facility at" in err


def test_an_invalid_policy_file_exits_2_naming_it(facility: Facility, tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text("[nonsense]\nkey = 1\n")
    code, out, err = facility.admin("policy", "test", "--policy", str(bad), "--text", "hi")
    assert code == 2
    assert out == ""
    assert str(bad) in err
    assert "error:" in err
    bad.write_text("[routing\n")
    code, _, err = facility.admin("policy", "test", "--policy", str(bad), "--text", "hi")
    assert code == 2
    assert str(bad) in err


def test_stdin_through_a_real_process(tmp_path: Path) -> None:
    lines = [f"line {i}: see evil-site.com" if i % 3 == 0 else f"line {i}" for i in range(600)]
    proc = subprocess.run(
        [sys.executable, "-m", "relay.cli", "policy", "test"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != HOME_ENV},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert len(out) == len(lines)
    assert [x.split()[0] for x in out[:3]] == ["block", "allow", "allow"]
    assert "built-in default policy" in proc.stderr


# ---------------------------------------------------------------------------------------
# the pure parts: formatting
# ---------------------------------------------------------------------------------------


def test_format_marks_spans_and_escapes_invisible_characters() -> None:
    text = "call 555 0134 or\u200bmail a@b.co"
    decision = Block(
        rule="contact.details",
        reason="contact details are not allowed",
        hits=(
            Hit("contact.details", "phone", Action.BLOCK, 5, 13),
            Hit("contact.details", "email", Action.BLOCK, 22, 28),
        ),
    )
    line = format_decision(text, decision)
    assert line.split()[:3] == ["block", "contact.details", "phone,email"]
    assert line.endswith('"call ⟦555 0134⟧ or\\u200bmail ⟦a@b.co⟧"')
    assert "\u200b" not in line
    assert mark("a\u202eb\nc", [(0, 1), (1, 2)]) == "⟦a\\u202e⟧b\\nc"
    assert merged_spans([(5, 8), (0, 2), (1, 3), (8, 9)]) == [(0, 3), (5, 9)]


def test_format_and_json_of_a_redaction() -> None:
    text = "my number is 555 0134"
    decision = Redact(
        rule="contact.redact",
        reason="phone numbers are removed",
        text="my number is [redacted:phone]",
        hits=(Hit("contact.redact", "phone", Action.REDACT, 13, 21),),
    )
    line = format_decision(text, decision)
    assert line.startswith("redact  contact.redact")
    assert line.endswith('"my number is ⟦555 0134⟧"  ->  "my number is [redacted:phone]"')
    out = decision_json(decision, text)
    assert out["redacted"] == "my number is [redacted:phone]"
    assert out["spans"] == [[13, 21]]
    assert out["categories"] == ["phone"]
    assert out["hits"][0]["action"] == "redact"
    lexicon = Block(
        rule="lexicon.threat",
        reason="threats",
        hits=(Hit("lexicon.threat", "lexicon", Action.BLOCK, 0, 3, label="threat"),),
    )
    assert decision_json(lexicon)["categories"] == ["lexicon:threat"]
    assert decision_json(Allow())["rules"] == ["content.allow"]


# ---------------------------------------------------------------------------------------
# policy replay
# ---------------------------------------------------------------------------------------

NOW = time.time()
EARLY = NOW - 3 * 3600
LATE = NOW - 30 * 60


def record(
    msg_id: str,
    kind: str,
    content: str,
    rule: str,
    *,
    when: float = EARLY,
    session: str = "py101",
    actor: str = "learner:l1001",
    recipient: str | None = None,
) -> dict[str, Any]:
    decision = {"message.delivered": "delivered", "message.refused": "refused"}.get(kind, "held")
    out: dict[str, Any] = {
        "time": when,
        "session": session,
        "actor": actor,
        "msg_id": msg_id,
        "channel": "direct" if recipient else "class",
        "decision": decision,
        "rule": rule,
        "content": content,
        "policy_version": "sha256:0123456789abcdef",
        "kind": kind,
        "code": "CR300I",
    }
    if recipient:
        out["recipient"] = recipient
    return out


RECORDS: list[dict[str, Any]] = [
    {"time": EARLY, "session": "py101", "actor": "learner:l1001", "kind": "session.joined"},
    record("m1", "message.delivered", "hello everyone", "content.allow"),
    record("m2", "message.delivered", LINK, "content.allow"),
    record("m3", "message.refused", PHONE, "contact.details", actor="learner:l1002"),
    record("m4", "message.refused", PHONE, "contact.details", recipient="instructor:alice"),
    record("m5", "message.refused", LINK, "links", when=LATE, session="py102"),
    record("m6", "message.held", EMAIL, "contact.hold", when=LATE),
    record("m7", "message.delivered", PHONE, "content.allow", when=LATE, actor="instructor:alice"),
    {
        "time": LATE,
        "session": "py101",
        "actor": "staff:sam",
        "msg_id": "m6",
        "kind": "review.approved",
    },
]


_KINDS = {kind.name_: kind for kind in EventKind}


def event_of(fields: dict[str, Any]) -> AuditEvent:
    """An audit event with the fields of a record as :func:`record` writes it."""
    values = {k: v for k, v in fields.items() if k not in ("kind", "code")}
    return AuditEvent(kind=_KINDS[fields["kind"]], **values)


def write_log(facility: Facility, events: list[AuditEvent]) -> None:
    """Append ``events`` to the facility's real audit log (encrypted, chained)."""

    async def append() -> None:
        store = open_audit_store(facility.home, facility.home.load_config())
        try:
            await store.submit(events)
        finally:
            await store.close()

    asyncio.run(append())


@pytest.fixture
def audit_log(facility: Facility) -> Facility:
    events = [event_of(r) for r in RECORDS]
    # A message whose sender is not a participant id cannot be replayed: it is counted.
    events.insert(3, event_of(record("m0", "message.delivered", "half", "r", actor="pc-01")))
    write_log(facility, events)
    return facility


def replay(facility: Facility, policy: Path, *args: str) -> tuple[int, str, str]:
    return facility.admin("policy", "replay", "--policy", str(policy), *args)


def test_replay_shows_what_the_new_policy_decides_differently(
    audit_log: Facility, scoped_policy: Path
) -> None:
    code, out, err = replay(audit_log, scoped_policy, "--session", "py101", "--json")
    assert code == 0, err
    got = {d["msg_id"]: d for d in decisions_of(out)}
    # m1 allowed both times; m5 in another class; m7 a class message with a phone number:
    # allowed both times.
    assert sorted(got) == ["m2", "m3", "m4", "m6"]
    m2 = got["m2"]
    assert (m2["old"]["action"], m2["old"]["rule"]) == ("allow", "content.allow")
    assert (m2["new"]["action"], m2["new"]["rule"]) == ("block", "links")
    assert m2["content"] == LINK
    assert m2["sender"] == "learner:l1001"
    assert m2["session"] == "py101"
    assert m2["time"].endswith("Z")
    assert (got["m3"]["old"]["action"], got["m3"]["new"]["action"]) == ("block", "allow")
    assert got["m4"]["new"]["rule"] == "direct.phone"  # same action, another rule
    assert got["m4"]["recipient"] == "instructor:alice"
    assert got["m6"]["old"]["action"] == "hold"
    assert "6 messages re-evaluated" in err
    assert "4 would be decided differently" in err
    assert "1 record(s) of the audit log could not be read" in err


def test_replay_human_output(audit_log: Facility, scoped_policy: Path) -> None:
    code, out, _ = replay(audit_log, scoped_policy, "--session", "py101")
    assert code == 0
    assert "message m2  learner:l1001 -> class" in out
    assert "    was  allow   content.allow  (policy sha256:0123456789abcdef)" in out
    assert "    now  block   links" in out
    assert '    "the answers are on ' in out  # the content, with the new decision's spans marked
    assert "learner:l1001 -> instructor:alice" in out
    assert (
        out.rstrip()
        .splitlines()[-1]
        .startswith("6 messages re-evaluated with " + str(scoped_policy))
    )


def test_replay_since_a_duration_or_a_time(audit_log: Facility, scoped_policy: Path) -> None:
    code, out, err = replay(audit_log, scoped_policy, "--since", "1h", "--json")
    assert code == 0, err
    assert sorted(d["msg_id"] for d in decisions_of(out)) == ["m6"]  # m5, m7: unchanged
    assert "3 messages re-evaluated" in err
    since = dt.datetime.fromtimestamp(NOW - 2 * 3600, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    code, out, _ = replay(audit_log, scoped_policy, "--since", since, "--session", "py102")
    assert code == 0
    assert "1 message re-evaluated" in out
    assert "0 would be decided differently" in out
    code, _, err = replay(audit_log, scoped_policy, "--since", "yesterday")
    assert code == 2
    assert "refused time 'yesterday'" in err


def test_replay_needs_a_selection_and_a_valid_policy(
    audit_log: Facility, scoped_policy: Path, tmp_path: Path
) -> None:
    code, _, err = replay(audit_log, scoped_policy)
    assert code == 2
    assert "--session" in err
    assert "--since" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]]\nid = 3\n")
    code, _, err = replay(audit_log, bad, "--session", "py101")
    assert code == 2
    assert str(bad) in err


def test_replay_without_an_audit_log(facility: Facility, scoped_policy: Path) -> None:
    shutil.rmtree(facility.home.audit_dir)
    code, out, _ = replay(facility, scoped_policy, "--since", "1d")
    assert code == 0
    assert "no audit log yet" in out


def test_replay_reads_contents_encrypted_at_rest(audit_log: Facility, scoped_policy: Path) -> None:
    """The contents are not in the segment files in clear, yet the replay decrypts them."""
    segments = sorted((audit_log.home.audit_dir / "segments").iterdir())
    assert segments
    assert not any(LINK.encode() in p.read_bytes() for p in segments)
    code, out, err = replay(audit_log, scoped_policy, "--session", "py101", "--json")
    assert code == 0, err
    assert {d["content"] for d in decisions_of(out)} >= {LINK, EMAIL}


def test_replay_is_recorded_as_a_read_of_the_log(audit_log: Facility, scoped_policy: Path) -> None:
    code, _, err = replay(audit_log, scoped_policy, "--session", "py102")
    assert code == 0, err
    (read,) = [r for r in audit_log.audit_records() if r["kind"] == "audit.read"]
    assert read["actor"].startswith("admin:")
    assert read["detail"] == f"policy replay --policy {scoped_policy} --session py102"


def test_replay_of_a_log_the_relay_wrote(facility: Facility, scoped_policy: Path) -> None:
    """The reader understands records as the relay's audit store writes them."""
    event = AuditEvent(
        EventKind.MESSAGE_DELIVERED,
        LATE,
        "py101",
        "learner:l1001",
        "pc-01",
        "l1001",
        msg_id="a-1",
        seq=4,
        channel="class",
        decision="delivered",
        rule="content.allow",
        content=LINK,
        policy_version="sha256:0000000000000000",
    )
    write_log(facility, [event])
    code, out, _ = replay(facility, scoped_policy, "--session", "py101", "--json")
    assert code == 0
    (diff,) = decisions_of(out)
    assert (diff["msg_id"], diff["new"]["rule"]) == ("a-1", "links")


def test_replay_needs_the_staff_audit_key(facility: Facility) -> None:
    from relay.audit_access import AuditAccess
    from relay.audit_keys import load_signing_public

    no_key = AuditAccess("admin:x", load_signing_public(facility.home.root), None)
    with pytest.raises(CredentialError, match="staff audit key"):
        AuditLogReader(facility.home, no_key)


def test_recorded_messages_and_what_counts_as_different() -> None:
    direct = recorded_message(record("x", "message.refused", "hi", "r", recipient="learner:l2"))
    assert isinstance(direct, RecordedMessage)
    assert direct.route is Route.DIRECT
    assert direct.recipient_role is ParticipantRole.LEARNER
    assert direct.old_action is Action.BLOCK
    assert recorded_message(record("x", "message.refused", "hi", "r", recipient="alice")) is None
    assert recorded_message(record("x", "message.delivered", "hi", "r", actor="pc-01")) is None
    later = recorded_message({**record("x", "message.weird", "hi", "r"), "decision": "block"})
    assert later is not None
    assert later.old_action is Action.BLOCK  # a decision field that names an action
    unknown = recorded_message(record("x", "message.weird", "hi", "r"))
    assert unknown is not None
    assert unknown.old_action is None
    assert not decided_differently(unknown, Block(rule="r", reason="no"))
    assert decided_differently(unknown, Allow())  # unknown action: the rules are compared
    allowed = recorded_message(record("x", "message.delivered", "hi", "default.allow"))
    assert allowed is not None
    assert not decided_differently(allowed, Allow())  # two allows are the same decision
    assert decided_differently(allowed, Block(rule="r", reason="no"))
    refused = recorded_message(record("x", "message.refused", "hi", "a"))
    assert refused is not None
    assert not decided_differently(refused, Block(rule="a", reason="no"))
    assert decided_differently(refused, Block(rule="b", reason="no"))
