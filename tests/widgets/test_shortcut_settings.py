"""Review keys can be changed (a dialog; saved in the user's settings); a key on two actions is refused."""

from __future__ import annotations

from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence

from widgets import shortcuts


def test_problems_names_conflicts_and_unreadable_keys() -> None:
    assert shortcuts.problems({}) == []
    assert shortcuts.problems({"both_good": ["T"]}) == ["T is on both teacher_better and both_good"]
    assert "unknown action 'fly'" in shortcuts.problems({"fly": ["Q"]})
    assert shortcuts.parse_keys("ctrl+y; Shift+T ;") == ["Ctrl+Y", "Shift+T"]


def test_dialog_refuses_a_conflict_and_returns_only_the_changes(qtbot: Any) -> None:
    dlg = shortcuts.ShortcutsDialog({})
    qtbot.addWidget(dlg)
    dlg.set_keys("both_good", "T")
    dlg.accept()
    assert dlg.result() != dlg.DialogCode.Accepted and "T is on both" in dlg.error.text()
    dlg.set_keys("both_good", "G")
    dlg.set_keys("undo", "ctrl+y")
    dlg.accept()
    assert dlg.result() == dlg.DialogCode.Accepted and dlg.overrides() == {"undo": ["Ctrl+Y"]}
    dlg.restore_defaults()
    assert dlg.overrides() == {}


def test_changed_keys_drive_the_review_and_persist(qtbot: Any, window: Any) -> None:
    from app.settings import Settings
    from app.window_main import MainWindow

    rv = window.review
    with pytest.raises(ValueError, match="is on both"):
        rv.apply_shortcuts({"next": ["T"]})
    rv.apply_shortcuts({"next": ["N"]})
    assert [k.toString() for k in rv.actions_by_name["next"].shortcuts()] == ["N"]
    assert dict((n, k) for n, k, _d, _g in rv.overlay.entries)["next"] == ["N"]
    first = rv.current.sample_id
    qtbot.keyClick(window, Qt.Key.Key_J)  # J no longer moves on
    assert rv.current.sample_id == first
    qtbot.keyClick(window, Qt.Key.Key_N)
    qtbot.waitUntil(lambda: rv.current.sample_id != first, timeout=5_000)
    again = MainWindow(Settings(), dialogs=False, load_panels=False)  # a new session reads the saved keys
    qtbot.addWidget(again)
    assert again.review.actions_by_name["next"].shortcuts() == [QKeySequence("N")]
