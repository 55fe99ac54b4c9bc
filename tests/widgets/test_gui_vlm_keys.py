"""Accepting (A) and rejecting (X) the VLM judge's verdict from the review view, checked in the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from sqlalchemy import select

from review.verdicts import latest_verdicts
from review.weights import sample_weights
from store.project import Project
from store.schema import Verdict, VerdictAuthorKind, VerdictKind
from widgets.queue_model import COL_HUMAN, COL_VLM


def _key(qtbot: Any, win: Any, key: Qt.Key, mod: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
    qtbot.keyClick(win.review.view, key, mod)


def _show(qtbot: Any, rv: Any, sample_id: int) -> None:
    assert rv.queue.select_sample(sample_id)
    qtbot.waitUntil(lambda: rv.current is not None and rv.current.sample_id == sample_id, timeout=30_000)


def _wait_writes(qtbot: Any, rv: Any) -> None:
    qtbot.waitUntil(lambda: rv.writes_pending == 0, timeout=30_000)


def _rows(root: Path, author_kind: VerdictAuthorKind) -> list[Verdict]:
    with Project.open(root) as p, p.db.session() as s:
        return list(s.scalars(select(Verdict).where(Verdict.author_kind == author_kind).order_by(Verdict.id)))


def _vlm_ids(root: Path) -> dict[int, int]:
    return {v.sample_id: v.id for v in _rows(root, VerdictAuthorKind.VLM)}


def test_accept_key_records_the_vlm_verdict_as_the_reviewers(qtbot: Any, window: Any, tile_project: Any) -> None:
    root, ids = tile_project
    rv = window.review
    sid = ids["vlm"][0]  # the VLM said teacher better
    vlm_id = _vlm_ids(root)[sid]
    _show(qtbot, rv, sid)
    _key(qtbot, window, Qt.Key.Key_A)
    qtbot.waitUntil(lambda: rv.current_id != sid, timeout=10_000)  # moved on like any verdict
    _wait_writes(qtbot, rv)
    [row] = _rows(root, VerdictAuthorKind.HUMAN)
    assert (row.sample_id, row.verdict, row.author, row.supersedes_id) == (sid, VerdictKind.TEACHER_BETTER,
                                                                           rv.reviewer, vlm_id)
    assert row.reason == f"accepted VLM verdict {vlm_id} (openai/judge-test)"
    assert rv.session.count == 1
    assert rv.queue.model.data(rv.queue.model.index(rv.queue.model.row_of_sample(sid), COL_HUMAN)) != "pending"
    with Project.open(root) as p:
        w = sample_weights(p)[sid]
    assert (w.source, w.verdict, w.dice_target) == ("human", "teacher_better", "ground_truth")


def test_reject_key_cancels_the_vlm_verdict_keeps_the_crop_pending_and_undoes(qtbot: Any, window: Any,
                                                                              tile_project: Any) -> None:
    root, ids = tile_project
    rv = window.review
    sid = ids["vlm"][1]  # the VLM said both bad
    vlm_id = _vlm_ids(root)[sid]
    with Project.open(root) as p:
        before = sample_weights(p)[sid]
    assert before.source == "vlm" and before.feature < 1.0  # both bad from the VLM lowers the teacher terms
    _show(qtbot, rv, sid)
    assert "both bad" in rv.vlm_verdict_label.text()
    messages: list[str] = []
    rv.message.connect(messages.append)
    _key(qtbot, window, Qt.Key.Key_X)
    qtbot.waitUntil(lambda: rv.current_id != sid, timeout=10_000)
    _wait_writes(qtbot, rv)
    assert any("rejected, still pending" in m for m in messages)
    [row] = _rows(root, VerdictAuthorKind.HUMAN)
    assert (row.sample_id, row.verdict, row.supersedes_id) == (sid, VerdictKind.UNDO, vlm_id)
    assert row.reason.startswith(f"rejected VLM verdict {vlm_id} (both_bad")
    with Project.open(root) as p:
        with p.db.session() as s:
            assert sid not in latest_verdicts(s, VerdictAuthorKind.HUMAN)  # no human verdict: still pending
            assert sid not in latest_verdicts(s, VerdictAuthorKind.VLM)  # the VLM verdict no longer counts
        after = sample_weights(p)[sid]
    assert (after.source, after.feature, after.soft) == ("none", 1.0, 1.0)
    model = rv.queue.model
    assert model.data(model.index(model.row_of_sample(sid), COL_HUMAN)) == "pending"
    assert model.data(model.index(model.row_of_sample(sid), COL_VLM)) == ""
    # back on the crop the panel says it is not judged any more
    _show(qtbot, rv, sid)
    assert "not judged" in rv.vlm_verdict_label.text()

    # Ctrl+Z takes the rejection back: the VLM verdict is in effect again
    _key(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    _wait_writes(qtbot, rv)
    rows = _rows(root, VerdictAuthorKind.HUMAN)
    assert len(rows) == 2 and rows[-1].verdict == VerdictKind.UNDO and rows[-1].supersedes_id == row.id
    with Project.open(root) as p:
        assert sample_weights(p)[sid] == before
    qtbot.waitUntil(lambda: rv.current is not None and rv.current.sample_id == sid and rv.current.vlm is not None,
                    timeout=30_000)
    assert "both bad" in rv.vlm_verdict_label.text()


def test_accept_and_reject_without_a_vlm_verdict_record_nothing(qtbot: Any, window: Any, tile_project: Any) -> None:
    root, ids = tile_project
    rv = window.review
    sid = next(s for s in ids["flagged"] if s not in ids["vlm"])
    _show(qtbot, rv, sid)
    assert "not judged" in rv.vlm_verdict_label.text()
    messages: list[str] = []
    rv.message.connect(messages.append)
    _key(qtbot, window, Qt.Key.Key_A)
    _key(qtbot, window, Qt.Key.Key_X)
    _wait_writes(qtbot, rv)
    assert messages == [f"#{sid}: no VLM verdict on this crop: nothing to accept or reject"] * 2
    assert rv.current_id == sid  # stays on the crop
    assert _rows(root, VerdictAuthorKind.HUMAN) == []
    assert rv.session.count == 0


def test_accept_reject_and_auto_keys_are_in_the_table_without_conflicts() -> None:
    from widgets import shortcuts

    assert shortcuts.keys_for("accept_vlm") == ["A"]
    assert shortcuts.keys_for("reject_vlm") == ["X"]
    assert shortcuts.keys_for("auto_masks") == ["U"]
    assert shortcuts.problems({}) == []
    assert shortcuts.problems({"reject_vlm": ["T"]}) == ["T is on both teacher_better and reject_vlm"]
