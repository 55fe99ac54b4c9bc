"""First-run dialog: environment checks (GPU informative, models, data folder), its three starts, dismissal."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from app import first_run as fr  # the checks (moved from widgets/: widgets never import app) and the dialog
from app.settings import Settings
from app.window_main import FIRST_RUN_DISMISSED, MainWindow
from store.synthetic import write_dataset


def test_checks_are_plain_and_gpu_is_informative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = fr.check_gpu()
    assert gpu.level in (fr.OK, fr.INFO)  # a missing GPU is never an error: the station runs on CPU
    if gpu.level == fr.INFO:
        assert "CPU" in gpu.text
    assert fr.check_data_dir(tmp_path / "d").level == fr.OK
    # a data folder that cannot be created: under a regular file (fails for root too, unlike permissions)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    c = fr.check_data_dir(blocker / "maskbench")
    assert c.level == fr.ERROR and "MASKBENCH_DATA_DIR" in c.text and "cannot write" in c.text
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):  # root ignores permissions; everyone else must get the error
            c = fr.check_data_dir(ro / "sub")
            assert c.level == fr.ERROR and "MASKBENCH_DATA_DIR" in c.text
    finally:
        ro.chmod(0o700)
    monkeypatch.setenv("MASKBENCH_DEMO_MODELS", str(tmp_path / "none"))
    m = fr.check_models()
    assert m.level == fr.ERROR and "no demo models" in m.text


def test_unwritable_data_folder_disables_the_starts(qtbot: Any, tmp_path: Path) -> None:
    checks = [fr.Check("GPU", fr.INFO, "cpu"), fr.Check("models", fr.INFO, "ok"),
              fr.Check("data folder", fr.ERROR, "cannot write to /x")]
    dlg = fr.FirstRunDialog(checks=checks)
    qtbot.addWidget(dlg)
    assert not dlg.demo_btn.isEnabled() and not dlg.folder_btn.isEnabled() and not dlg.model_btn.isEnabled()
    assert "cannot write" in dlg.check_labels["data folder"].text()


def test_first_start_shows_dialog_over_the_demo_and_opens_a_folder(qtbot: Any, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    win = MainWindow(Settings(), dialogs=False, first_run=True, load_panels=False)
    qtbot.addWidget(win)
    win.show()
    win.startup(None)
    dlg = win.first_run_dialog
    assert dlg is not None and dlg.isVisible()
    qtbot.waitUntil(lambda: win.project is not None, timeout=120_000)  # the demo opened behind it
    assert win.project.root.name == "demo-project"
    crops = tmp_path / "crops"
    write_dataset(crops, 5, 11)
    monkeypatch.setenv("MASKBENCH_TEST_PICK", str(crops))
    dlg.dont_show.setChecked(True)
    dlg.folder_btn.click()
    qtbot.waitUntil(lambda: win.project is not None and win.project.root.name == "crops", timeout=30_000)
    qtbot.waitUntil(lambda: win.review.queue.model.rowCount() >= 0 and not win.jobs.running(), timeout=60_000)
    from sqlalchemy import func, select

    from store.schema import Sample

    with win.project.db.session() as s:
        assert s.scalar(select(func.count(Sample.id))) == 5
    assert Settings().get_bool(FIRST_RUN_DISMISSED, False)
    win2 = MainWindow(Settings(), dialogs=False, first_run=True, load_panels=False)
    qtbot.addWidget(win2)
    Settings().remove_recent_project(win.project.root)
    win2.startup(None)
    assert win2.first_run_dialog is None  # dismissed: not shown again
    qtbot.waitUntil(lambda: not win2.jobs.running(), timeout=120_000)
