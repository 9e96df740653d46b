"""The documents name every event kind and every command the README promises."""

from __future__ import annotations

from pathlib import Path

from relay.audit import EventKind

ROOT = Path(__file__).parent.parent


def test_every_audit_event_kind_is_documented() -> None:
    doc = (ROOT / "docs" / "audit.md").read_text()
    for kind in EventKind:
        assert f"| `{kind.code}` | `{kind.name_}` |" in doc, kind


def test_event_codes_are_unique() -> None:
    codes = [k.code[:-1] for k in EventKind]
    assert len(codes) == len(set(codes))


def test_readme_starts_with_the_two_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```sh") + 1 : lines.index("```sh") + 3]
    assert block[0].startswith("make demo")
    assert block[1].startswith("make test")


def test_documents_exist() -> None:
    for name in ("protocol", "operations", "security", "policy", "audit"):
        assert (ROOT / "docs" / f"{name}.md").stat().st_size > 1000, name
