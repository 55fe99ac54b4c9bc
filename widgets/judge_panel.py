"""Judge panel: start and stop a VLM judge run over the flagged queue, with its budget, and watch it live.

The run is review.judge.JudgeRun in a thread task of the window's TaskHub (widgets.workers; the panel's own hub
without a window), so the status bar shows its progress and its failure; the panel polls `run.stats` four times a
second for spend, calls, cache hits and errors. Stop cancels the task, which sets the run's cancel event: calls in
flight finish, nothing new starts, and the run's stats still arrive. The estimate is a quiet task with its own key
(a newer estimate supersedes an older one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from review.judge import JudgeRun, JudgeSettings, JudgeStats
from store.project import Project
from widgets.workers import TaskHub, ThreadTask

log = logging.getLogger("maskbench.judge_panel")

STAT_FIELDS = (
    ("done", "judged"),
    ("pending", "pending"),
    ("calls", "calls"),
    ("cache_hits", "cache hits"),
    ("errors", "errors"),
    ("bad_answers", "bad answers"),
    ("verdicts", "verdicts"),
    ("uncertain", "uncertain"),
)


class JudgePanel(QWidget):
    runFinished = Signal(object)  # JudgeStats
    runFailed = Signal(str)

    def __init__(self, parent: QWidget | None = None, jobs: TaskHub | None = None,
                 run_factory: Callable[..., JudgeRun] | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs if jobs is not None else TaskHub(self)
        self.run_factory = run_factory or JudgeRun
        self.project: Project | None = None
        self.run: JudgeRun | None = None
        self.task: ThreadTask | None = None
        self.last_stats: JudgeStats | None = None

        self.model_edit = QLineEdit()
        self.fallbacks_edit = QLineEdit()
        self.fallbacks_edit.setPlaceholderText("comma separated")
        self.api_base_edit = QLineEdit()
        self.api_base_edit.setPlaceholderText("provider default")
        self.budget_spin = QDoubleSpinBox()
        self.budget_spin.setRange(0.0, 10_000.0)
        self.budget_spin.setDecimals(2)
        self.budget_spin.setPrefix("$ ")
        self.budget_spin.valueChanged.connect(
            lambda v: None if self.running else self.spend_label.setText(f"spent $0.0000 of ${v:.2f}"))
        self.workers_spin = QSpinBox()
        self.workers_spin.setRange(1, 64)
        self.limit_spin = QSpinBox()
        self.limit_spin.setRange(0, 10_000_000)
        self.limit_spin.setSpecialValueText("all")
        self.skip_reviewed = QCheckBox("skip crops a human already reviewed")
        self.skip_reviewed.setChecked(True)
        self.rejudge = QCheckBox("judge again crops the VLM already judged")
        form = QFormLayout()
        form.addRow("model", self.model_edit)
        form.addRow("fallbacks", self.fallbacks_edit)
        form.addRow("API base", self.api_base_edit)
        form.addRow("budget (this run)", self.budget_spin)
        form.addRow("parallel calls", self.workers_spin)
        form.addRow("at most", self.limit_spin)
        form.addRow("", self.skip_reviewed)
        form.addRow("", self.rejudge)
        settings_box = QGroupBox("Judge run over the flagged queue")
        settings_box.setLayout(form)

        self.estimate_button = QPushButton("Estimate")
        self.start_button = QPushButton("Start judge run")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.estimate_button.clicked.connect(self.estimate)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        buttons = QHBoxLayout()
        buttons.addWidget(self.estimate_button)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.spend_label = QLabel("spent $0.0000 of $0.00")
        self.spend_label.setStyleSheet("font-size: 15px; font-weight: bold;")
        self.stat_labels: dict[str, QLabel] = {}
        grid = QGridLayout()
        for i, (key, title) in enumerate(STAT_FIELDS):
            val = QLabel("0")
            val.setAlignment(Qt.AlignmentFlag.AlignLeft)
            val.setStyleSheet("font-size: 18px; font-weight: bold;")
            self.stat_labels[key] = val
            cap = QLabel(title)
            cap.setStyleSheet("color: palette(mid);")
            grid.addWidget(val, i // 4 * 2, i % 4)
            grid.addWidget(cap, i // 4 * 2 + 1, i % 4)
        grid.setColumnStretch(4, 1)
        self.state_label = QLabel("idle")
        self.state_label.setWordWrap(True)
        self.warnings_label = QLabel("")
        self.warnings_label.setWordWrap(True)
        self.warnings_label.setStyleSheet("color: #D55E00;")
        live = QGroupBox("Live")
        lv = QVBoxLayout(live)
        lv.addWidget(self.progress)
        lv.addWidget(self.spend_label)
        lv.addLayout(grid)
        lv.addWidget(self.state_label)
        lv.addWidget(self.warnings_label)

        lay = QVBoxLayout(self)
        top = QHBoxLayout()
        left = QVBoxLayout()
        left.addWidget(settings_box)
        left.addLayout(buttons)
        left.addStretch(1)
        top.addLayout(left, 1)
        top.addWidget(live, 1)
        lay.addLayout(top, 0)
        note = QLabel("The judge only re-weights distillation; it never labels. Its verdicts show in the review "
                      "queue (VLM columns) once the run writes them.")
        note.setWordWrap(True)
        lay.addWidget(note)
        lay.addStretch(1)

        self._timer = QTimer(self)
        self._timer.setInterval(250)
        self._timer.timeout.connect(self._poll)
        self.setEnabled(False)

    # project ------------------------------------------------------------------------------------------------------
    def set_project(self, project: Project | None) -> None:
        if self.running:
            self.stop()
        self.project = project
        self.setEnabled(project is not None)
        if project is None:
            return
        j = project.config.get("judge") or {}
        self.model_edit.setText(str(j.get("model") or ""))
        self.fallbacks_edit.setText(", ".join(j.get("fallbacks") or []))
        self.api_base_edit.setText(str(j.get("api_base") or ""))
        self.budget_spin.setValue(float(j.get("budget_usd") or 0.0))
        self.workers_spin.setValue(int(j.get("workers") or 4))

    def settings(self) -> JudgeSettings:
        if self.project is None:
            raise RuntimeError("no project")
        fallbacks = [f.strip() for f in self.fallbacks_edit.text().split(",") if f.strip()]
        return JudgeSettings.from_config(self.project.config, model=self.model_edit.text().strip() or None,
                                         fallbacks=fallbacks, api_base=self.api_base_edit.text().strip() or None,
                                         budget_usd=self.budget_spin.value(), workers=self.workers_spin.value())

    def _run_kwargs(self) -> dict[str, Any]:
        return {"limit": self.limit_spin.value() or None, "skip_reviewed": self.skip_reviewed.isChecked(),
                "rejudge": self.rejudge.isChecked()}

    # actions ------------------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.task is not None and self.task.is_active()

    def estimate(self) -> None:
        """Pending crops and worst-case cost, computed off the GUI thread (it reads the store and the keys)."""
        if self.project is None:
            return
        try:
            settings = self.settings()
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.state_label.setText(f"cannot estimate: {exc}")
            return
        db, kwargs, budget, factory = self.project.db, self._run_kwargs(), self.budget_spin.value(), self.run_factory
        self.state_label.setText("estimating…")

        def work() -> str:
            n, cost = factory(db, settings, **kwargs).estimate()
            return f"{n} flagged crop(s) to judge; worst case ${cost:.4f} (budget ${budget:.2f})"

        self.jobs.run("judge estimate", work, key="judge-estimate", quiet=True, owner=self,
                      on_result=self.state_label.setText,
                      on_error=lambda msg: self.state_label.setText(f"cannot estimate: {msg}"))

    def start(self) -> None:
        if self.project is None or self.running:
            return
        try:
            settings = self.settings()
        except Exception as exc:  # noqa: BLE001
            self.state_label.setText(f"cannot start: {exc}")
            return
        db = self.project.db
        kwargs = self._run_kwargs()
        self.run = None
        self.last_stats = None

        def work(progress: Callable[[int, int], None], cancel: Any) -> JudgeStats:
            run = self.run_factory(db, settings, progress=progress, cancel=cancel, **kwargs)
            self.run = run
            return run.run()

        self.start_button.setEnabled(False)
        self.estimate_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.state_label.setText(f"running with {settings.model}…")
        self.warnings_label.setText("")
        self._timer.start()
        self.task = self.jobs.run("judge run", work, key="judge-run", owner=self, on_result=self._finished,
                                  on_error=self._failed)
        self.task.cancelled.connect(self._cancelled)  # the run raised Cancelled: no stats to show

    def stop(self) -> None:
        if self.running:
            self.task.cancel()
            self.state_label.setText("stopping after the calls in flight…")
            self.stop_button.setEnabled(False)

    def _poll(self) -> None:
        if self.run is not None:
            self._show(self.run.stats)

    def _show(self, st: JudgeStats) -> None:
        self.progress.setRange(0, max(1, st.total))
        self.progress.setValue(st.done)
        self.progress.setFormat(f"{st.done} / {st.total}")
        self.spend_label.setText(f"spent ${st.spent_usd:.4f} of ${st.budget_usd:.2f}"
                                 + (f" (+${st.reserved_usd:.4f} reserved)" if st.reserved_usd > 0 else ""))
        for key, _title in STAT_FIELDS:
            self.stat_labels[key].setText(str(getattr(st, key)))
        if st.warnings:
            self.warnings_label.setText("\n".join(st.warnings[-3:]))

    def _finished(self, stats: JudgeStats) -> None:
        self._timer.stop()
        self.last_stats = stats
        self._show(stats)
        why = {"budget": "stopped: budget reached", "cancelled": "stopped by you", "errors": "stopped: too many errors"}
        self.state_label.setText(why.get(stats.stopped or "", "finished") + f" — run {stats.run_id}")
        self._reset_buttons()
        self.runFinished.emit(stats)

    def _failed(self, msg: str) -> None:
        self._timer.stop()
        self.state_label.setText(f"failed: {msg}")
        self._reset_buttons()
        self.runFailed.emit(msg)

    def _cancelled(self) -> None:
        self._timer.stop()
        self.state_label.setText("stopped by you")
        self._reset_buttons()

    def _reset_buttons(self) -> None:
        self.task = None
        self.start_button.setEnabled(True)
        self.estimate_button.setEnabled(True)
        self.stop_button.setEnabled(False)

    def shutdown(self) -> None:
        if self.running:
            self.task.cancel()


def make_panel(window: Any) -> tuple[str, JudgePanel]:
    """Main-window hook: the panel uses the window's TaskHub and refreshes the review queue after a run."""
    panel = JudgePanel(jobs=getattr(window, "jobs", None))
    review = getattr(window, "review", None)
    if review is not None:
        panel.runFinished.connect(lambda _s: review.reload())
    return "Judge", panel
