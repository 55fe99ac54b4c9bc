"""The main window: projects (recent, last, demo), settings persisted, panels, background jobs, crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QLabel
from sqlalchemy import select

from app.jobs import JobManager
from app.settings import DEFAULT_COLOURS, Settings, settings_path
from app.window_main import MainWindow
from store.ingest import ingest
from store.project import Project
from store.schema import Verdict, VerdictAuthorKind
from store.synthetic import write_dataset

REPO = Path(__file__).resolve().parents[2]


def _small_project(root: Path, n: int = 6) -> Path:
    data = root.parent / f"{root.name}-data"
    write_dataset(data, n, 3)
    with Project.create(root) as p:
        ingest(p.db, data, workers=1)
    return root


def _window(qtbot: Any, **kw: Any) -> MainWindow:
    win = MainWindow(Settings(), dialogs=False, **kw)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    return win


def test_settings_live_under_config_dir_and_persist(tmp_path: Path) -> None:
    s = Settings()
    assert settings_path() == Path(os.environ["MASKBENCH_CONFIG_DIR"]) / "maskbench.ini"
    assert s.colours() == DEFAULT_COLOURS
    s.set_colour("teacher", "#112233")
    a, b = tmp_path / "a", tmp_path / "b"
    s.add_recent_project(a)
    s.add_recent_project(b)
    s.add_recent_project(a)
    again = Settings()
    assert again.colours()["teacher"] == "#112233"
    assert again.recent_projects() == [str(a.resolve()), str(b.resolve())]
    assert again.last_project() == str(a.resolve())
    again.remove_recent_project(a)
    assert Settings().recent_projects() == [str(b.resolve())] and Settings().last_project() is None


def test_open_project_remembers_it_and_restores_layout(qtbot: Any, tmp_path: Path) -> None:
    root = _small_project(tmp_path / "p")
    win = _window(qtbot)
    assert win.open_project(root)
    qtbot.waitUntil(lambda: win.review.queue.model.rowCount() == 6, timeout=20_000)
    assert "6 crops" in win.counts_label.text()
    assert str(root.resolve()) in win.windowTitle()
    win.review.set_mode("contour")
    win.review.opacity_slider.setValue(70)
    win.resize(1010, 770)
    win.close()
    s = Settings()
    assert s.last_project() == str(root.resolve()) and s.recent_projects()[0] == str(root.resolve())
    assert s.get("view/mode") == "contour" and abs(s.get_float("view/opacity", 0) - 0.7) < 1e-6

    win2 = _window(qtbot)
    assert win2.size().height() == 770  # (the offscreen screen is 800 px wide: restoreGeometry clamps the width)
    assert win2.review.view.mode == "contour" and win2.review.opacity_slider.value() == 70
    win2.startup(None)  # no project given: the last one
    assert win2.project is not None and win2.project.root == root.resolve()
    qtbot.waitUntil(lambda: win2.review.queue.model.rowCount() == 6, timeout=20_000)
    win2.close()


def test_bad_project_is_a_message_not_a_crash(qtbot: Any, tmp_path: Path) -> None:
    win = _window(qtbot)
    assert not win.open_project(tmp_path / "nothing-here")
    assert "not a maskbench project" in win.statusBar().currentMessage()
    assert win.project is None


def test_first_start_builds_the_demo_project_in_a_worker(qtbot: Any) -> None:
    from app.demo import default_demo_dir

    win = _window(qtbot)
    busy = []
    win.jobs.changed.connect(lambda: busy.append(win.job_bar.isVisible()))
    win.startup(None)  # fresh machine: no last project
    assert win.project is None  # the GUI is not blocked while the demo is built
    qtbot.waitUntil(lambda: win.project is not None, timeout=120_000)
    assert win.project.root == default_demo_dir().resolve()
    qtbot.waitUntil(lambda: win.review.queue.model.rowCount() > 0 and win.review.current is not None, timeout=20_000)
    assert any(busy) and not win.job_bar.isVisible()
    assert Settings().last_project() == str(default_demo_dir().resolve())


RUN_GUI_SCRIPT = r"""
import sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from app.window_main import MainWindow, run_gui
app = QApplication([])
def check():
    wins = [w for w in app.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
    if wins and wins[0].project is not None and wins[0].review.current is not None:
        print("OPENED", wins[0].project.root, wins[0].review.queue.model.rowCount(), flush=True)
        wins[0].close()
        app.exit(3)
    else:
        QTimer.singleShot(50, check)
QTimer.singleShot(50, check)
sys.exit(run_gui(sys.argv[1] if len(sys.argv) > 1 else None))
"""


@pytest.mark.parametrize("given", [True, False])
def test_run_gui_opens_given_or_demo_project(tmp_path: Path, given: bool) -> None:
    """In a fresh process (app.exec() must not run inside the pytest-qt session): with a project it opens it;
    with none on a fresh machine it builds and opens the demo project, offline."""
    root = _small_project(tmp_path / "p")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(REPO),
               MASKBENCH_CONFIG_DIR=str(tmp_path / "cfg"), MASKBENCH_DATA_DIR=str(tmp_path / "data"))
    args = [str(root)] if given else []
    proc = subprocess.run([sys.executable, "-c", RUN_GUI_SCRIPT, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-3000:]
    opened = [line.split() for line in proc.stdout.splitlines() if line.startswith("OPENED")]
    expected = root.resolve() if given else (tmp_path / "data" / "demo-project").resolve()
    assert opened and Path(opened[0][1]) == expected and int(opened[0][2]) > 0


def test_add_panel_gives_the_project_to_panels(qtbot: Any, tmp_path: Path) -> None:
    class Panel(QLabel):
        def __init__(self) -> None:
            super().__init__("training goes here")
            self.projects: list[Any] = []

        def set_project(self, project: Any) -> None:
            self.projects.append(project)

    root = _small_project(tmp_path / "p")
    win = _window(qtbot)
    assert "Judge" in win.panels  # the judge panel of this issue is built in
    panel = Panel()
    idx = win.add_panel("Training", panel)
    assert win.tabs.tabText(idx) == "Training" and win.panels["Training"] is panel
    win.open_project(root)
    assert panel.projects and panel.projects[-1].root == root.resolve()
    tabs = [win.tabs.tabText(i) for i in range(win.tabs.count())]
    assert tabs[:2] == ["Review", "Judge"] and "Training" in tabs and "Export" in tabs  # Export: built per project
    late = Panel()
    win.add_panel("Notes", late)
    assert late.projects[-1].root == root.resolve()


def test_models_menu_predicts_in_a_worker_and_stops(qtbot: Any, tmp_path: Path) -> None:
    """Models > Predict and flag: inference.predict_flag runs in a worker; Stop (asked before the first batch) ends
    it with nothing stored, a second run predicts every crop and the status bar says so."""
    from inference.predict_flag import PredictFlagOptions
    from inference.registry import add_model
    from inference.student import StudentConfig, StudentModel, save_checkpoint
    from store.schema import Prediction

    root = _small_project(tmp_path / "proj")
    ckpt = save_checkpoint(StudentModel(StudentConfig(input_size=128)), tmp_path / "student.pt")
    win = _window(qtbot)
    assert win.open_project(root)
    add_model(win.project, "student", ckpt)
    options = PredictFlagOptions(models="student", prompts="ground_truth")

    assert not win.stop_predict_action.isEnabled()
    task = win.predict_and_flag(options)
    assert win.stop_predict_action.isEnabled()
    win.stop_predicting()
    qtbot.waitUntil(lambda: not task.is_active(), timeout=60_000)
    assert task.result.cancelled and task.result.predictions[0].predicted == 0
    assert not win.stop_predict_action.isEnabled() and win.predict_task is None
    with win.project.db.session() as s:
        assert s.scalars(select(Prediction)).first() is None

    task = win.predict_and_flag(options)
    qtbot.waitUntil(lambda: not task.is_active(), timeout=60_000)
    assert task.result.predictions[0].predicted == 6 and not task.result.cancelled
    assert "student: 6 predicted" in win.statusBar().currentMessage()
    with win.project.db.session() as s:
        assert len(s.scalars(select(Prediction)).all()) == 6


def test_job_manager_reports_progress_results_and_errors(qtbot: Any) -> None:
    jobs = JobManager()
    changes: list[tuple[str, int, int]] = []
    jobs.changed.connect(lambda: changes.append(jobs.summary()))
    gate = threading.Event()

    def work(progress: Any, cancel: threading.Event) -> str:
        for i in range(5):
            progress(i + 1, 5)
        gate.wait(5)
        return "cancelled" if cancel.is_set() else "done"

    results: list[str] = []
    errors: list[str] = []
    job = jobs.submit("counting", work, on_result=results.append)
    qtbot.waitUntil(lambda: any(c[1] == 5 for c in changes), timeout=5_000)
    assert jobs.summary()[0].startswith("counting")
    jobs.cancel_all()
    gate.set()
    qtbot.waitUntil(lambda: results == ["cancelled"], timeout=5_000)
    assert job.finished and jobs.running() == []

    def boom() -> None:
        raise ValueError("broken input")

    jobs.submit("failing", boom, on_error=errors.append)
    qtbot.waitUntil(lambda: bool(errors), timeout=5_000)
    assert errors == ["ValueError: broken input"]


KILL_SCRIPT = r"""
import os, signal, sys
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication
from PySide6.QtTest import QTest
app = QApplication([])
from app.settings import Settings
from app.window_main import MainWindow
win = MainWindow(Settings(), dialogs=False, load_panels=False)
win.show()
win.open_project(sys.argv[1])
rv = win.review
def wait(cond):
    while not cond():
        app.processEvents()
wait(lambda: rv.current is not None)
stored = []
rv.verdictStored.connect(lambda sid, v: stored.append(sid))
for key in (Qt.Key.Key_T, Qt.Key.Key_S, Qt.Key.Key_G, Qt.Key.Key_B):
    sid = rv.current_id
    QTest.keyClick(rv.view, key)
    wait(lambda: sid in stored)
    print("stored", sid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_after_verdicts_loses_nothing_stored(tmp_path: Path) -> None:
    root = _small_project(tmp_path / "p")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(root)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    stored = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("stored")]
    assert len(stored) == 4
    with Project.open(root) as p:
        assert p.db.integrity_check() == "ok"
        with p.db.session() as s:
            rows = s.scalars(select(Verdict).where(Verdict.author_kind == VerdictAuthorKind.HUMAN)
                             .order_by(Verdict.id)).all()
    assert [(v.sample_id, v.verdict.value) for v in rows] == list(
        zip(stored, ["teacher_better", "student_better", "both_good", "both_bad"]))


@pytest.mark.timeout(300)
def test_judge_panel_runs_stops_and_shows_live_stats(qtbot: Any, tmp_path: Path,
                                                     magnetic_tile_pairs: list[tuple[Path, Path, str]],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(REPO / "tests" / "review"))
    sys.path.insert(0, str(REPO / "tests" / "widgets"))
    from fake_openai import FakeOpenAI
    from gui_helpers import build_tile_project

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    root = tmp_path / "project"
    ids = build_tile_project(root, magnetic_tile_pairs)
    with FakeOpenAI() as server:
        server.set_mode("judge-a", "delay")
        win = _window(qtbot)
        win.open_project(root)
        panel = win.panels["Judge"]
        win.tabs.setCurrentWidget(panel)
        panel.model_edit.setText("openai/judge-a")
        panel.api_base_edit.setText(server.url)
        panel.budget_spin.setValue(1.0)
        panel.workers_spin.setValue(1)
        panel.skip_reviewed.setChecked(False)
        panel.rejudge.setChecked(False)
        with Project.open(root) as p:
            p.config["judge"]["prices"] = {"openai/judge-a": {"input_per_1k": 0.01, "output_per_1k": 0.02}}
            p.save_config()
        win.project.config["judge"]["prices"] = {"openai/judge-a": {"input_per_1k": 0.01, "output_per_1k": 0.02}}
        panel.estimate()
        pending = len(ids["flagged"])  # the helper's VLM verdicts came from no judge call: all flagged are pending
        qtbot.waitUntil(lambda: f"{pending} flagged crop(s)" in panel.state_label.text(), timeout=30_000)
        panel.start()
        assert panel.running and panel.stop_button.isEnabled()
        qtbot.waitUntil(lambda: panel.last_stats is not None, timeout=120_000)
        st = panel.last_stats
        assert st.done == pending and st.calls == pending and st.errors == 0 and st.spent_usd > 0
        assert panel.stat_labels["calls"].text() == str(pending)
        assert f"${st.spent_usd:.4f}" in panel.spend_label.text()
        assert server.calls("judge-a") == pending
        # the review queue now shows the judge's verdicts
        qtbot.waitUntil(lambda: win.review.queue.model.counts()["judged"] == len(ids["flagged"]), timeout=20_000)

        # a second run judges again with the cache: no new calls, all cache hits; stopped at once by Stop
        panel.rejudge.setChecked(True)
        panel.start()
        panel.stop()
        qtbot.waitUntil(lambda: not panel.running and panel.start_button.isEnabled(), timeout=60_000)
        assert panel.last_stats.stopped in ("cancelled", None)
        assert server.calls("judge-a") == pending


def test_qt_binding_keeps_none_alive(qtbot: Any) -> None:
    """PySide6 6.12.0 on Python 3.11 drops a reference to None on every void call; a review session makes hundreds
    of thousands of them and then dies (pyproject pins <6.12). Guard against such a build coming back."""
    label = QLabel()
    qtbot.addWidget(label)
    before = sys.getrefcount(None)
    for _ in range(5000):
        label.setText("x")
    assert abs(sys.getrefcount(None) - before) < 100
