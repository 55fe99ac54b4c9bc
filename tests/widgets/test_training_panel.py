"""Training panel: a real run in a child process (QProcess), live curves from its JSON lines, stop, past runs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from store.ingest import ingest
from store.project import Project

OVERRIDES = {
    "distillation": {
        # crops at a quarter of their pixels: one 128 px tile each keeps this GUI test quick on a CPU
        "teacher": {"model": "sam2.1_hiera_t", "image_size": 256, "scale": 0.5},
        "student": {"input_size": 128, "scale": 0.25},
        # val_share 0: a validation point every epoch, whatever this machine's timings
        "training": {"batch_size": 4, "log_every": 1, "epochs": 200, "lr": 1e-3, "augment": None, "val_share": 0},
    }
}


def _project(root: Path, pairs: list[tuple[Path, Path, str]]) -> Project:
    data = root / "crops"
    for cls in ("MT_Break", "MT_Uneven"):
        for img, mask, _ in [p for p in pairs if p[2] == cls][:8]:
            (data / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(img, data / cls)
            shutil.copy(mask, data / cls)
    p = Project.create(root / "project", overrides=OVERRIDES)
    ingest(p.db, data)
    return p


def _panel(qtbot, project: Project):
    """A Training panel on `project`, as a user opens it (reading project.yaml)."""
    from widgets.training_panel import TrainingPanel

    panel = TrainingPanel(project)
    qtbot.addWidget(panel)
    return panel


def _saved(project: Project, section: str = "training") -> dict:
    """A `distillation` section of project.yaml as it is on disk."""
    from store import config as config_mod

    return config_mod.load(project.config_path)["distillation"][section]


def test_panel_runs_plots_and_stops_a_training_process(qtbot, tmp_path: Path, magnetic_tile_pairs) -> None:
    from widgets.training_panel import TrainingPanel

    project = _project(tmp_path, magnetic_tile_pairs)
    panel = TrainingPanel(project, python=sys.executable)
    qtbot.addWidget(panel)
    assert panel.epochs.value() == 200 and panel.batch.value() == 4  # loaded from project.yaml
    panel.epochs.setValue(150)
    panel.extra_args = ["--log-every", "1"]
    assert panel.start()
    assert Project.open(project.root).config["distillation"]["training"]["epochs"] == 150  # saved to the YAML
    try:
        # losses of every term and at least two validation points (3 steps per epoch) arrive while it runs
        qtbot.waitUntil(lambda: len(panel.series.get("val_iou_gt", ([], []))[0]) >= 2, timeout=150_000)
        for key in ("loss", "loss_feat", "loss_soft", "loss_dice"):
            xs, ys = panel.series[key]
            assert len(xs) >= 6 and xs == sorted(xs)
            assert panel.curves[key].getData()[0] is not None and len(panel.curves[key].getData()[0]) == len(xs)
        assert "val_iou_teacher" in panel.curves
        assert panel.running and not panel.start_btn.isEnabled()
        assert panel.runs.rowCount() == 1 and panel.runs.item(0, 3).text() == "running"
        with qtbot.waitSignal(panel.run_finished, timeout=60_000) as sig:
            panel.stop()
    finally:
        if panel.running:
            panel.process.kill()
            panel.process.waitForFinished(5000)
    assert sig.args == ["stopped"]
    assert not panel.running and panel.start_btn.isEnabled()
    rows = panel.run_rows()
    assert rows[0]["status"] == "stopped" and rows[0]["best_val_iou"] is not None
    assert panel.runs.item(0, 3).text() == "stopped" and panel.runs.item(0, 5).text() != ""
    assert (Path(rows[0]["out_dir"]) / "checkpoints" / "last.pt").is_file()
    # the stand-in student's checkpoint is not a registry student: the panel says so instead of raising
    panel.runs.selectRow(0)
    panel.use_selected_as_student()
    assert "student" in panel.log_view.toPlainText().splitlines()[-1].lower()
    project.close()


def test_panel_without_project_is_inert(qtbot) -> None:
    from widgets.training_panel import TrainingPanel

    panel = TrainingPanel(None)
    qtbot.addWidget(panel)
    assert not panel.start() and not panel.start_btn.isEnabled() and panel.runs.rowCount() == 0


def test_each_mode_shows_and_saves_its_own_schedule(qtbot, tmp_path) -> None:
    """Switching the mode shows that mode's epochs / batch / lr (QAT: a tenth of distillation's lr by default) and
    saving writes them to that mode's section of project.yaml."""
    from store.project import Project
    from widgets.training_panel import MODES, TrainingPanel

    project = Project.create(tmp_path / "proj")
    panel = TrainingPanel(project)
    qtbot.addWidget(panel)
    labels = [m[1] for m in MODES]
    panel.mode_box.setCurrentIndex(labels.index("distill"))
    distill_lr, distill_epochs = panel.lr.value(), panel.epochs.value()
    panel.mode_box.setCurrentIndex(labels.index("qat"))
    assert panel.lr.value() == pytest.approx(distill_lr * 0.1, rel=0.02)
    panel.epochs.setValue(distill_epochs + 7)
    panel.save_settings()
    assert project.config["distillation"]["qat"]["epochs"] == distill_epochs + 7
    panel.mode_box.setCurrentIndex(labels.index("distill"))
    assert panel.epochs.value() == distill_epochs  # distillation's own schedule, untouched
    assert "--mode" in panel.command() and panel.command()[panel.command().index("--mode") + 1] == "distill"


def test_the_compile_box_is_the_training_compile_setting(qtbot, tmp_path) -> None:
    """Ticked: training.compile is the default torch.compile mode (or keeps a mode the YAML chose); unticked: null.
    The next panel reads it back from project.yaml."""
    from store import config as config_mod
    from store.project import Project
    from widgets.training_panel import TrainingPanel

    project = Project.create(tmp_path / "proj")
    panel = TrainingPanel(project)
    qtbot.addWidget(panel)
    assert not panel.compile.isChecked()  # eager by default
    panel.compile.setChecked(True)
    panel.save_settings()
    assert config_mod.load(project.config_path)["distillation"]["training"]["compile"] == "default"
    project.config["distillation"]["training"]["compile"] = "max-autotune-no-cudagraphs"
    project.save_config()
    again = TrainingPanel(project)
    qtbot.addWidget(again)
    assert again.compile.isChecked()
    again.save_settings()
    assert config_mod.load(project.config_path)["distillation"]["training"]["compile"] == "max-autotune-no-cudagraphs"
    again.compile.setChecked(False)
    again.save_settings()
    assert config_mod.load(project.config_path)["distillation"]["training"]["compile"] is None


def test_the_training_windows_box_is_training_crop_size(qtbot, tmp_path) -> None:
    """0 ("whole canvas") is null; a size is saved as training.crop_size and read back by the next panel; a size
    off the stride is refused with a message rather than written where the next open would fail on it."""
    project = Project.create(tmp_path / "proj")
    panel = _panel(qtbot, project)
    assert panel.windows.value() == 0 and panel.windows.text() == "whole canvas"
    panel.windows.setValue(256)
    panel.save_settings()
    assert _saved(project)["crop_size"] == 256
    again = _panel(qtbot, project)
    assert again.windows.value() == 256
    again.windows.setValue(48)  # off the student's stride: refused, project.yaml keeps 256
    again.save_settings()
    assert _saved(project)["crop_size"] == 256
    assert "48 px is not a multiple of 32" in again.log_view.toPlainText()
    again.windows.setValue(0)
    again.save_settings()
    assert _saved(project)["crop_size"] is None


def test_the_teacher_mirror_views_box_is_training_teacher_flip_views(qtbot, tmp_path) -> None:
    project = Project.create(tmp_path / "proj")
    panel = _panel(qtbot, project)
    assert panel.teacher_flips.currentData() == 1 and panel.teacher_flips.currentText() == "off"
    panel.teacher_flips.setCurrentIndex(panel.teacher_flips.findData(4))
    panel.save_settings()
    assert _saved(project)["teacher_flip_views"] == 4
    again = _panel(qtbot, project)
    assert again.teacher_flips.currentData() == 4


def test_the_validation_time_box_is_training_val_share(qtbot, tmp_path) -> None:
    """A percentage of the run's training time (default 10%); 0 is "no cap", saved as 0.0 and read back."""
    project = Project.create(tmp_path / "proj")
    panel = _panel(qtbot, project)
    assert panel.val_share.value() == 10
    panel.val_share.setValue(25)
    panel.save_settings()
    assert _saved(project)["val_share"] == 0.25
    again = _panel(qtbot, project)
    assert again.val_share.value() == 25
    again.val_share.setValue(0)
    assert again.val_share.text() == "no cap (every epoch due)"
    again.save_settings()
    assert _saved(project)["val_share"] == 0.0


def test_the_context_blocks_box_is_student_context_blocks(qtbot, tmp_path) -> None:
    """"default" is null (four blocks on heads 2 and 4, none on the 1/8 head); a count, 0 included, is saved as
    student.context_blocks and read back by the next panel."""
    project = Project.create(tmp_path / "proj")
    panel = _panel(qtbot, project)
    assert panel.context.value() == -1 and panel.context.text().startswith("default")
    panel.context.setValue(0)
    panel.save_settings()
    assert _saved(project, "student")["context_blocks"] == 0
    again = _panel(qtbot, project)
    assert again.context.value() == 0
    again.context.setValue(-1)
    again.save_settings()
    assert _saved(project, "student")["context_blocks"] is None


def test_a_runs_warning_events_reach_the_log(qtbot, tmp_path) -> None:
    """The trainer's warning lines (a random-weights teacher, a first step that took much of the time budget) are
    JSON on stdout like every event: the panel writes them to its log instead of dropping them."""
    from store.project import Project
    from widgets.training_panel import TrainingPanel

    project = Project.create(tmp_path / "proj")
    panel = TrainingPanel(project)
    qtbot.addWidget(panel)
    line = json.dumps({"event": "warning", "message": "the first training step took 201 s of the 250 s time budget"})
    panel._stdout_line(line)
    assert panel.log_view.toPlainText().splitlines()[-1] == (
        "warning: the first training step took 201 s of the 250 s time budget")
