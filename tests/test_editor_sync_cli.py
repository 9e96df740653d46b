"""The shared editor from the command lines: ``classroom-client sync``, ``instructor-console
export`` and ``instructor-console editor``, against a real relay over TLS on loopback.

The commands' ``main`` functions run in a worker thread (they call ``asyncio.run``) while
API clients (:class:`relay.client.RelayClient`) play the other participants. No mocks.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from classroom_client import cli as learner_cli
from classroom_client.workspace import (
    REFUSED_DIR,
    STATE_FILE,
    name_problem,
    plan_export,
    safe_path,
)
from instructor_console import cli as instructor_cli
from relay.client import RelayClient
from relay.errors import ClientError
from relay.messages import EditorModeEvent
from relay.server import Relay
from tests.conftest import PINS, Facility, console_argv, eventually

Capture = pytest.CaptureFixture[str]
PHONE = "415-555-0134"
MINE = "learner:l1001"


# -- names and export plans (no relay) ------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/etc/passwd",
        "../x",
        "a/../b",
        "a//b",
        ".bashrc",
        "src/.git/config",
        "a\\b",
        "C:x",
        "bad\x00name",
        "x/./y",
        "trailing. ",
        "name.",
    ],
)
def test_unsafe_names_are_refused(name: str) -> None:
    assert name_problem(name) is not None


@pytest.mark.parametrize("name", ["main.py", "src/util.py", "héllo/中文.txt", "a b.txt", "x~y"])
def test_safe_names_are_accepted(name: str) -> None:
    assert name_problem(name) is None


def test_symbolic_links_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(ClientError, match="symbolic link"):
        safe_path(root, "link/x.py")
    assert safe_path(root, "ok/x.py") == root / "ok" / "x.py"


def test_export_plan_refuses_to_overwrite_different_files(tmp_path: Path) -> None:
    (tmp_path / "same.py").write_text("same\n")
    (tmp_path / "other.py").write_text("mine\n")
    plan = plan_export(
        tmp_path,
        {"same.py": "same\n", "other.py": "theirs\n", "new.py": "", ".evil": "x"},
    )
    assert plan.unchanged == ["same.py"]
    assert plan.conflicts == ["other.py"]
    assert set(plan.write) == {"other.py", "new.py"}
    assert set(plan.refused) == {".evil"}


# -- against a relay -------------------------------------------------------------------------


def _instructor_api(f: Facility, r: Relay) -> RelayClient:
    assert r.addresses is not None
    return RelayClient(f.bundle("alice"), "py101", relay_url=r.addresses.outside_url)


def _learner_api(f: Facility, r: Relay, learner: str, machine: str) -> RelayClient:
    assert r.addresses is not None
    return RelayClient(
        f.bundle(machine),
        "py101",
        relay_url=r.addresses.inside_url,
        learner=learner,
        pin=PINS[learner],
    )


def _sync_argv(f: Facility, r: Relay, folder: Path, *extra: str) -> list[str]:
    assert r.addresses is not None
    return [
        *("--bundle", str(f.bundle("pc-01")), "--relay", r.addresses.inside_url),
        *("--learner", "l1001", "--pin", PINS["l1001"]),
        *("sync", "py101", str(folder), *extra),
    ]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


@pytest.mark.integration
async def test_sync_round_trip(
    facility: Facility, relay: Relay, tmp_path: Path, capsys: Capture
) -> None:
    folder = tmp_path / "work"
    async with _instructor_api(facility, relay) as alice:
        await alice.write_file(MINE, "hello.py", "print('start')\n")
        await alice.write_file("class", "lesson.py", "# lesson 1\n")
        argv = _sync_argv(facility, relay, folder, "--duration", "12", "--interval", "0.1")
        sync = asyncio.create_task(asyncio.to_thread(learner_cli.main, argv))
        try:
            hello, lesson = folder / "hello.py", folder / "class" / "lesson.py"
            await eventually(lambda: _read(hello) == "print('start')\n")
            await eventually(lambda: _read(lesson) == "# lesson 1\n")
            assert lesson.stat().st_mode & 0o222 == 0  # a read-only copy
            # Saved on disk -> the instructor sees it.
            hello.write_text("print('start')\nprint('héllo 😀')\n", encoding="utf-8")
            await eventually(
                lambda: alice.editor.text(MINE, "hello.py") == "print('start')\nprint('héllo 😀')\n"
            )
            # A new file and a file in a subfolder.
            (folder / "src").mkdir()
            (folder / "src" / "util.py").write_text("def f():\n    return 1\n")
            await eventually(lambda: alice.editor.text(MINE, "src/util.py") is not None)
            # The instructor helps: written into the folder.
            await alice.insert(MINE, "src/util.py", 0, "# helper\n")
            await eventually(
                lambda: _read(folder / "src" / "util.py") == "# helper\ndef f():\n    return 1\n"
            )
            # The class workspace changes: the copy follows.
            await alice.write_file("class", "lesson.py", "# lesson 2\n")
            await eventually(lambda: _read(lesson) == "# lesson 2\n")
            # A phone number saved on disk is refused and put back on disk.
            before = _read(hello)
            hello.write_text(f"{before}# call me {PHONE}\n", encoding="utf-8")
            await eventually(lambda: _read(hello) == before)
            assert PHONE not in (alice.editor.text(MINE, "hello.py") or "")
            # The learner's refused version is kept locally, never synced.
            kept = folder / REFUSED_DIR / "hello.py"
            await eventually(lambda: _read(kept) == f"{before}# call me {PHONE}\n")
            # A new file the relay refuses as a whole is taken off the folder (kept aside).
            contact = folder / "contact.txt"
            contact.write_text(f"ring {PHONE}\n")
            await eventually(lambda: not contact.exists())
            assert _read(folder / REFUSED_DIR / "contact.txt") == f"ring {PHONE}\n"
            assert alice.editor.text(MINE, "contact.txt") is None
            # A file deleted on disk is deleted in the workspace.
            (folder / "src" / "util.py").unlink()
            await eventually(lambda: alice.editor.text(MINE, "src/util.py") is None)
            # A hidden file name from the relay is never written.
            await alice.write_file(MINE, ".profile", "x = 1\n")
            await asyncio.sleep(0.5)
            assert not (folder / ".profile").exists()
        finally:
            code = await asyncio.wait_for(sync, 30)
    out, err = capsys.readouterr()
    assert code == 3, (out, err)  # a change was refused
    assert "refused: your change to hello.py was not kept" in err
    assert "contact.txt was removed from" in err
    assert "phone" in err
    assert PHONE not in err
    assert "put back to the relay's version" in err
    assert "'.profile'" in err
    assert "hidden" in err
    assert "Traceback" not in err
    assert "sync stopped:" in out
    assert (folder / STATE_FILE).exists()
    assert f"kept in {folder / REFUSED_DIR / 'hello.py'}" in err


@pytest.mark.integration
async def test_sync_once_pushes_a_folder_and_exits(
    facility: Facility, relay: Relay, tmp_path: Path, capsys: Capture
) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "a.py").write_text("a = 1\n")
    (folder / "big.txt").write_text("é" * 30_000 + "\n" + "x = 2\n" * 3000)
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / "notes.txt~").write_text("backup\n")
    (folder / "bin.dat").write_bytes(b"\xff\xfe\x00binary")
    code = await asyncio.to_thread(learner_cli.main, _sync_argv(facility, relay, folder, "--once"))
    out, err = capsys.readouterr()
    assert code == 0, (out, err)
    assert "not UTF-8 text" in err
    async with _instructor_api(facility, relay) as alice:
        await alice.editor_sync(MINE)
        files = alice.editor.files(MINE)
    assert set(files) == {"a.py", "big.txt"}
    assert files["big.txt"] == (folder / "big.txt").read_text()
    # Run again: nothing to send; a file deleted at the relay meanwhile is removed on disk.
    async with _learner_api(facility, relay, "l1001", "pc-02") as ada:
        await ada.delete_file(MINE, "a.py")
    code = await asyncio.to_thread(learner_cli.main, _sync_argv(facility, relay, folder, "--once"))
    out, err = capsys.readouterr()
    assert code == 0, (out, err)
    assert not (folder / "a.py").exists()
    assert "0 change(s) sent" in out


@pytest.mark.integration
async def test_export_writes_the_learner_files(
    facility: Facility, relay: Relay, tmp_path: Path, capsys: Capture
) -> None:
    async with _learner_api(facility, relay, "l1001", "pc-01") as ada:
        await ada.write_file(MINE, "main.py", "print('done')\n")
        await ada.write_file(MINE, "lib/tools.py", "X = 'ü'\n")
    target = tmp_path / "export"
    argv = console_argv(facility, relay, "export", "py101", "--learner", "l1001", str(target))
    code = await asyncio.to_thread(instructor_cli.main, argv)
    out, err = capsys.readouterr()
    assert code == 0, (out, err)
    assert (target / "main.py").read_text() == "print('done')\n"
    assert (target / "lib" / "tools.py").read_text(encoding="utf-8") == "X = 'ü'\n"
    assert f"wrote {target / 'main.py'}" in out
    # A different file in the way: refused unless --force, and nothing is written.
    (target / "main.py").write_text("local edits\n")
    code = await asyncio.to_thread(instructor_cli.main, argv)
    out, err = capsys.readouterr()
    assert code == 2
    assert "main.py" in err
    assert "--force" in err
    assert (target / "main.py").read_text() == "local edits\n"
    code = await asyncio.to_thread(instructor_cli.main, [*argv, "--force"])
    out, err = capsys.readouterr()
    assert code == 0, (out, err)
    assert (target / "main.py").read_text() == "print('done')\n"
    assert f"unchanged {target / 'lib' / 'tools.py'}" in out
    # A learner not on the roster: refused by the relay.
    argv = console_argv(facility, relay, "export", "py101", "--learner", "l1009", str(target))
    code = await asyncio.to_thread(instructor_cli.main, argv)
    out, err = capsys.readouterr()
    assert code == 3
    assert "refused:" in err


@pytest.mark.integration
async def test_editor_commands(
    facility: Facility, relay: Relay, tmp_path: Path, capsys: Capture
) -> None:
    source = tmp_path / "hello.py"
    source.write_text("print('hello, class')\n")
    async with _learner_api(facility, relay, "l1001", "pc-01") as ada:
        await ada.editor_sync("class")
        argv = console_argv(
            facility, relay, "editor", "py101", "put", "class", "hello.py", "--from", str(source)
        )
        assert await asyncio.to_thread(instructor_cli.main, argv) == 0
        out, _ = capsys.readouterr()
        assert out.startswith("hello.py in class: delivered")
        await eventually(lambda: ada.editor.text("class", "hello.py") == "print('hello, class')\n")
        # get and ls
        argv = console_argv(facility, relay, "editor", "py101", "get", "class", "hello.py")
        assert await asyncio.to_thread(instructor_cli.main, argv) == 0
        assert capsys.readouterr().out == "print('hello, class')\n"
        argv = console_argv(facility, relay, "editor", "py101", "ls", "class")
        assert await asyncio.to_thread(instructor_cli.main, argv) == 0
        assert capsys.readouterr().out.startswith("hello.py\t22 characters")
        # A phone number put by the instructor is redacted (the instructor's policy).
        source.write_text(f"# call {PHONE}\n")
        argv = console_argv(
            facility, relay, "editor", "py101", "put", "class", "phone.py", "--from", str(source)
        )
        assert await asyncio.to_thread(instructor_cli.main, argv) == 0
        out, err = capsys.readouterr()
        assert out.startswith("phone.py in class: delivered redacted")
        assert "redacted: phone.py in class:" in err
        assert PHONE not in out + err
        await eventually(lambda: ada.editor.text("class", "phone.py") is not None)
        assert PHONE not in (ada.editor.text("class", "phone.py") or "")
        # Lecture mode on: the learner may not edit the class workspace.
        argv = console_argv(facility, relay, "editor", "py101", "lecture", "on")
        assert await asyncio.to_thread(instructor_cli.main, argv) == 0
        capsys.readouterr()
        await eventually(lambda: ada.editor_mode is not None and ada.editor_mode.lecture)
        acks = await ada.write_file("class", "hello.py", "mine now\n")
        assert acks[-1].error == "read_only"
        # Sharing a learner's workspace.
        argv = console_argv(facility, relay, "editor", "py101", "share", "l1002", "on")
        assert await asyncio.to_thread(instructor_cli.main, argv) == 0
        capsys.readouterr()
        await eventually(
            lambda: ada.editor_mode is not None and ada.editor_mode.shared == ("learner:l1002",)
        )
        # Options may follow the action.
        assert relay.addresses is not None
        argv = ["editor", "py101", "lecture", "off", "--wait", "5"]
        argv += ["--bundle", str(facility.bundle("alice")), "--relay", relay.addresses.outside_url]
        assert await asyncio.to_thread(instructor_cli.main, argv) == 0
        capsys.readouterr()
        await eventually(lambda: ada.editor_mode is not None and not ada.editor_mode.lecture)
        # Usage problems are refused before connecting.
        argv = console_argv(facility, relay, "editor", "py101", "put", "class", "../x.py")
        assert await asyncio.to_thread(instructor_cli.main, argv) == 2
        assert "'..'" in capsys.readouterr().err
        argv = console_argv(facility, relay, "editor", "py101", "get", "nobody:x", "a.py")
        assert await asyncio.to_thread(instructor_cli.main, argv) == 2
        assert "is not a workspace" in capsys.readouterr().err


@pytest.mark.integration
async def test_sync_reconciles_changes_made_while_offline(
    facility: Facility, relay: Relay, tmp_path: Path, capsys: Capture
) -> None:
    folder = tmp_path / "work"
    async with _instructor_api(facility, relay) as alice:
        for name in ("a.py", "b.py", "c.py"):
            await alice.write_file(MINE, name, f"# {name}\n")
        argv = _sync_argv(facility, relay, folder, "--once")
        assert await asyncio.to_thread(learner_cli.main, argv) == 0
        capsys.readouterr()
        # Offline: the learner edits a.py and deletes b.py; the instructor edits c.py.
        (folder / "a.py").write_text("# a.py, edited offline\n")
        (folder / "b.py").unlink()
        await alice.write_file(MINE, "c.py", "# c.py, helped\n")
        assert await asyncio.to_thread(learner_cli.main, argv) == 0
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        await alice.editor_sync(MINE)
        await eventually(
            lambda: (
                alice.editor.files(MINE)
                == {"a.py": "# a.py, edited offline\n", "c.py": "# c.py, helped\n"}
            )
        )
    assert _read(folder / "c.py") == "# c.py, helped\n"
    assert not (folder / "b.py").exists()
    assert "sent a.py (changed)" in out
    assert "sent b.py (deleted)" in out
    assert "2 change(s) sent, 0 refused, 1 received" in out


def test_mode_changes_are_shown_in_one_line() -> None:
    line = learner_cli.format_mode(
        EditorModeEvent(lecture=True, shared=("learner:l1002",), by="instructor:alice", time=0.0)
    )
    assert "lecture mode on" in line
    assert "learner:l1002" in line
    assert "(by instructor:alice)" in line
