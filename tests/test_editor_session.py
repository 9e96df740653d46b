"""ClassEditor (pure): who receives a workspace's changes, as members come and go and
the instructor shares workspaces."""

from __future__ import annotations

from pycrdt import Doc, Map, Text

from policy.engine import default_policy
from relay.editor_session import ClassEditor
from relay.identity import Participant, ParticipantRole
from relay.limits import Limits
from relay.messages import EditorShare, EditorUpdate, SessionInfo
from relay.session import LiveSession

ENGINE = default_policy()
ALICE = Participant(ParticipantRole.INSTRUCTOR, "alice")
L1 = Participant(ParticipantRole.LEARNER, "l1001", "pc-01")
L2 = Participant(ParticipantRole.LEARNER, "l1002", "pc-02")
SAM = Participant(ParticipantRole.STAFF, "sam")
CONN = {ALICE.pid: 1, L1.pid: 2, L2.pid: 3, SAM.pid: 4}


class Typist:
    def __init__(self) -> None:
        self.doc = Doc()
        self.files = self.doc.get("files", type=Map)
        self.n = 0

    def type(self, text: str) -> EditorUpdate:
        before = self.doc.get_state()
        with self.doc.transaction():
            if "main.py" not in self.files:
                self.files["main.py"] = Text()
            t = self.files["main.py"]
            t += text
        self.n += 1
        return EditorUpdate(id=f"u{self.n}", ws="learner:l1001", update=self.doc.get_update(before))


def _class(*present: Participant) -> tuple[LiveSession, ClassEditor]:
    session = LiveSession(
        info=SessionInfo("py101", "Loops", 0.0, 1e10),
        instructor="alice",
        learners=frozenset({"l1001", "l1002"}),
        limits=Limits(),
    )
    for p in present:
        session.join(p, CONN[p.pid], 0, 1.0, None)
    return session, ClassEditor(session)


def _receivers(editor: ClassEditor, typist: Typist, text: str) -> set[int]:
    """Connections that receive l1001's change (besides l1001's own ack)."""
    outcome = editor.handle(L1, CONN[L1.pid], typist.type(text), 2.0, ENGINE)
    return {c for d in outcome.deliveries for c in d.conns if c != CONN[L1.pid]}


def test_a_private_workspace_reaches_its_viewers_as_they_come_and_go() -> None:
    session, editor = _class(ALICE, L1, L2)
    typist = Typist()
    assert _receivers(editor, typist, "a") == {CONN[ALICE.pid]}
    session.join(SAM, CONN[SAM.pid], 0, 3.0, None)
    assert _receivers(editor, typist, "b") == {CONN[ALICE.pid], CONN[SAM.pid]}
    share = EditorShare(id="s1", learner="l1001", shared=True)
    editor.handle(ALICE, CONN[ALICE.pid], share, 4.0, ENGINE)
    assert _receivers(editor, typist, "c") == {CONN[ALICE.pid], CONN[SAM.pid], CONN[L2.pid]}
    session.leave(L2, CONN[L2.pid], 5.0, "gone")
    assert _receivers(editor, typist, "d") == {CONN[ALICE.pid], CONN[SAM.pid]}
    unshare = EditorShare(id="s2", learner="l1001", shared=False)
    editor.handle(ALICE, CONN[ALICE.pid], unshare, 6.0, ENGINE)
    session.join(L2, 7, 0, 7.0, None)
    assert _receivers(editor, typist, "e") == {CONN[ALICE.pid], CONN[SAM.pid]}
    assert editor.workspace("learner:l1001") is not None
    assert editor.workspace("learner:l1001").text("main.py") == "abcde"  # type: ignore[union-attr]
