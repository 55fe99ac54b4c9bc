"""Training panel: pick a mode and settings (read from / written to project.yaml), start and stop a run, watch
every loss term and the validation IoU live, browse past runs, and make a run's best checkpoint the project's
student.

Above the run settings, the training set as the next run will see it (review.training_set on the train split:
labelled, unlabelled, corrected, approved and verdict-weighted crops), counted in a worker thread whenever the tab
is shown, a project is opened or a run ends; an invalid `weights:` section shows its error there.

The run is a separate process (a ProcessTask of widgets.workers running `python -m app.cli train ...`, on the
window's TaskHub so the status bar shows its steps), so the window stays responsive and a crash in training (or CUDA
running out of memory) cannot take the workbench down. The panel only parses the JSON lines the trainer prints on
stdout. The training-set count is a quiet thread task with its own key: a newer count supersedes an older one.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from inference import capabilities
from inference.training.history import list_runs
from widgets.predict_dialog import VIEW_TITLES
from widgets.training_parts import LivePlots, PastRuns, use_as_student
from widgets.workers import ProcessTask, TaskHub

log = logging.getLogger("maskbench.training_panel")

REPO_ROOT = Path(__file__).resolve().parents[1]
MODES = [  # label, --mode, --no-feature-loss
    ("Distill (feature-aligned)", "distill", False),
    ("Distill, no feature loss (naive baseline)", "distill", True),
    ("Fine-tune teacher (SAM 2)", "finetune-teacher", False),
    ("Plain U-Net (supervised baseline)", "unet", False),
    ("Quantisation-aware fine-tune of the active student (INT8)", "qat", False),
]
STOP_GRACE_MS = 20_000
COUNT_SPLITS = ("train",)
COUNTS_KEY = "training-counts"


def training_set_line(project: Any, splits: tuple[str, ...] = COUNT_SPLITS) -> str:
    """The next run's training set in one line (review.training_set.counts); runs off the GUI thread."""
    from review.training_set import counts, training_samples

    return counts(training_samples(project, splits)).line()


class TrainingPanel(QWidget):
    counts_ready = Signal(str)  # the training-set line now shown (or the error that replaced it)
    run_started = Signal(str)  # run folder
    run_finished = Signal(str)  # final status: finished | stopped | failed
    event_received = Signal(dict)

    def __init__(self, project: Any = None, parent: QWidget | None = None, python: str | None = None,
                 absent: list[str] | None = None, tasks: TaskHub | None = None) -> None:
        """absent: the torch-stack modules this install lacks (default: looked up; a station has none of them);
        tasks: the window's TaskHub."""
        super().__init__(parent)
        self.tasks = tasks if tasks is not None else TaskHub(self)
        self.unavailable = capabilities.torch_stack_reason(
            "Training", capabilities.missing() if absent is None else absent)
        self.project = project
        self.python = python or sys.executable
        self.extra_args: list[str] = []  # appended to the train command (tests: --log-every 1 ...)
        self.task: ProcessTask | None = None
        self.run_dir: str | None = None
        self.last_status: str | None = None
        self._stderr_tail, self._total_steps = "", 0
        self._build()
        self.set_project(project)

    # ------------------------------------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.mode_box = QComboBox()
        for label, _, _ in MODES:
            self.mode_box.addItem(label)
        self.mode_box.currentIndexChanged.connect(self.load_settings)  # each mode has its own epochs, batch, lr
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 10_000)
        self.batch = QSpinBox()
        self.batch.setRange(1, 4096)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(7)
        self.lr.setRange(1e-7, 1.0)
        self.lr.setSingleStep(1e-5)
        self.device = QComboBox()
        self.device.addItems(["cpu", "cuda"])
        # training.compile: the measured gain is on CUDA (docs/benchmarks.md); on a CPU the compile takes minutes
        self.compile = QCheckBox("torch.compile the student (CUDA: ~25 s at the start, ~1.5x faster steps)")
        # training.crop_size: the student's random training windows (0: whole canvases); multiples of 32
        self.windows = QSpinBox()
        self.windows.setRange(0, 4096)
        self.windows.setSingleStep(32)
        self.windows.setSuffix(" px")
        self.windows.setSpecialValueText("whole canvas")
        self.windows.setToolTip("Side of the random windows a student trains on (a multiple of 32, at most the "
                                "student's input size); validation and prediction use whole canvases")
        # training.teacher_flip_views: distillation's teacher masks averaged over the view and its mirrors
        self.teacher_flips = QComboBox()
        for views, title in VIEW_TITLES.items():
            self.teacher_flips.addItem(title, views)
        self.teacher_flips.setToolTip("Distillation: the teacher's masks averaged over the view and its mirrors "
                                      "(+0.02-0.03 teacher IoU on magnetic-tile; 2-4x the teacher's decoder calls, "
                                      "no encoder; needs the dihedral augmentation)")
        # training.val_share: validation + checkpoints within this share of the run's training time (0: no cap)
        self.val_share = QSpinBox()
        self.val_share.setRange(0, 100)
        self.val_share.setSuffix(" %")
        self.val_share.setSpecialValueText("no cap (every epoch due)")
        self.val_share.setToolTip("Validation and checkpoints take at most this share of the training time: an "
                                  "epoch end validates only when the time so far allows one more (the first and "
                                  "last epochs always do; best.pt is picked among those validated)")
        # student.context_blocks: -1 is null (the student's default per head)
        self.context = QSpinBox()
        self.context.setRange(-1, 16)
        self.context.setSpecialValueText("default (4; none on the 1/8 head)")
        self.context.setToolTip("Dilated context blocks on the student decoder's 1/8 grid, where the clicks enter "
                                "too (0: none); a new student's setting, a resumed run keeps its own")
        self.max_steps = QSpinBox()
        self.max_steps.setRange(0, 10_000_000)
        self.max_steps.setSpecialValueText("no limit")
        form = QFormLayout()
        form.addRow("Mode", self.mode_box)
        form.addRow("Epochs", self.epochs)
        form.addRow("Batch size", self.batch)
        form.addRow("Learning rate", self.lr)
        form.addRow("Device", self.device)
        form.addRow("Compile", self.compile)
        form.addRow("Training windows", self.windows)
        form.addRow("Teacher mirror views", self.teacher_flips)
        form.addRow("Validation time", self.val_share)
        form.addRow("Context blocks", self.context)
        form.addRow("Max steps", self.max_steps)
        self.load_btn = QPushButton("Load from YAML")
        self.save_btn = QPushButton("Save to YAML")
        self.start_btn = QPushButton("Start")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setEnabled(False)
        self.load_btn.clicked.connect(self.load_settings)
        self.save_btn.clicked.connect(self.save_settings)
        self.start_btn.clicked.connect(self.start)
        self.stop_btn.clicked.connect(self.stop)
        buttons = QHBoxLayout()
        for b in (self.load_btn, self.save_btn, self.start_btn, self.stop_btn):
            buttons.addWidget(b)
        self.status_label = QLabel("idle")
        self.status_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.counts_label = QLabel("training set: -")
        self.counts_label.setWordWrap(True)
        self.counts_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.counts_label.setToolTip(
            "Crops of the train split the next run trains on: labelled (a Dice target: corrected, ingested ground "
            "truth or a mask a human approved), unlabelled (feature and soft terms only, prompted from the teacher's "
            "prediction), and how many carry a review verdict. docs/weights.md")
        settings = QGroupBox("Run")
        sl = QVBoxLayout(settings)
        sl.addWidget(self.counts_label)
        sl.addLayout(form)
        sl.addLayout(buttons)
        sl.addWidget(self.status_label)

        self.plots = LivePlots()
        self.loss_plot, self.iou_plot = self.plots.loss_plot, self.plots.iou_plot
        self.series, self.curves = self.plots.series, self.plots.curves
        self.runs_box = runs_box = PastRuns()
        self.runs, self.refresh_btn, self.use_btn, self.resume_btn = (
            runs_box.table, runs_box.refresh_btn, runs_box.use_btn, runs_box.resume_btn)
        self.refresh_btn.clicked.connect(self.refresh_runs)
        self.use_btn.clicked.connect(self.use_selected_as_student)
        self.resume_btn.clicked.connect(self.resume_selected)

        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)

        left = QVBoxLayout()
        left.addWidget(settings)
        left.addWidget(runs_box, 1)
        left_w = QWidget()
        left_w.setLayout(left)
        right = QSplitter(Qt.Vertical)
        right.addWidget(self.plots)
        right.addWidget(self.log_view)
        right.setStretchFactor(0, 3)
        top = QSplitter(Qt.Horizontal)
        top.addWidget(left_w)
        top.addWidget(right)
        top.setStretchFactor(1, 2)
        lay = QVBoxLayout(self)
        lay.addWidget(top)

    # ------------------------------------------------------------------------------------------- project/YAML
    def set_project(self, project: Any) -> None:
        self.project = project
        enabled = project is not None
        for w in (self.start_btn, self.load_btn, self.save_btn, self.use_btn, self.resume_btn, self.refresh_btn):
            w.setEnabled(enabled and not self.running)
        if self.unavailable:  # a station: runs made elsewhere can be browsed, none started here
            for w in (self.start_btn, self.resume_btn, self.use_btn):
                w.setEnabled(False)
                w.setToolTip(self.unavailable)
            self.status_label.setText(self.unavailable)
        self.load_settings()
        self.refresh_runs()
        self.refresh_counts()

    # ------------------------------------------------------------------------------------------ training set
    def refresh_counts(self) -> None:
        """Count the train split's labelled / unlabelled / corrected / approved / verdict-weighted crops in a worker;
        the label shows the line when it arrives (a newer request supersedes an older one: its answer is dropped)."""
        if self.project is None:
            self.tasks.drop(COUNTS_KEY)
            self._show_counts("training set: no project open")
            return
        if not self.counts_label.text().endswith("(counting…)"):
            self.counts_label.setText(self.counts_label.text() + " (counting…)")
        self.tasks.run("counting the training set", training_set_line, self.project, key=COUNTS_KEY,
                       quiet=True, owner=self,
                       on_result=lambda line: self._show_counts(f"training set (train split): {line}"),
                       on_error=lambda msg: self._show_counts(f"training set: {msg}"))

    def _show_counts(self, text: str) -> None:
        self.counts_label.setText(text)
        self.counts_ready.emit(text)

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        self.refresh_counts()  # reviews given in another tab since the last look

    def _dist(self) -> dict[str, Any]:
        return self.project.config.setdefault("distillation", {}) if self.project is not None else {}

    def load_settings(self) -> None:
        if self.project is None:
            return
        from inference.training.settings import mode_schedule, resolve  # no torch at import

        try:
            from store import config as config_mod

            self.project.config = config_mod.load(self.project.config_path)  # pick up edits made outside
        except Exception as exc:  # noqa: BLE001 - keep the in-memory config, say why
            self._say(f"could not reload project.yaml: {exc}")
        d = resolve(self.project.config)
        sched = mode_schedule(self._mode_name(), d)  # each mode's own section (finetune_teacher, unet, qat, training)
        self.epochs.setValue(int(sched["epochs"]))
        self.batch.setValue(int(sched["batch_size"]))
        self.lr.setValue(float(sched["lr"]))
        dev = str(d["training"].get("device", "cpu"))
        self.device.setCurrentText(dev if dev in ("cpu", "cuda") else "cpu")
        self.compile.setChecked(bool(d["training"].get("compile")))
        self.windows.setValue(int(d["training"].get("crop_size") or 0))
        self.teacher_flips.setCurrentIndex(self.teacher_flips.findData(int(d["training"].get("teacher_flip_views", 1))))
        self.val_share.setValue(round(100 * float(d["training"]["val_share"])))
        ctx = d["student"].get("context_blocks")
        self.context.setValue(-1 if ctx is None else int(ctx))

    def save_settings(self) -> None:
        if self.project is None:
            return
        from inference.training.settings import set_schedule  # no torch at import

        if self.windows.value() % 32:  # project.yaml's schema would refuse the file at the next open
            self._say(f"Training windows: {self.windows.value()} px is not a multiple of 32 (0: whole canvas); "
                      "nothing saved")
            return
        d = self._dist()
        for key, value in (("epochs", self.epochs.value()), ("batch_size", self.batch.value()),
                           ("lr", self.lr.value())):
            set_schedule(d, self._mode_name(), key, value)
        tr = d.setdefault("training", {})
        tr["device"] = self.device.currentText()
        # a checked box keeps a mode chosen in the YAML (max-autotune-no-cudagraphs); a new tick is the default mode
        tr["compile"] = (tr.get("compile") or "default") if self.compile.isChecked() else None
        tr["crop_size"] = self.windows.value() or None
        tr["teacher_flip_views"] = int(self.teacher_flips.currentData())
        tr["val_share"] = self.val_share.value() / 100
        d.setdefault("student", {})["context_blocks"] = None if self.context.value() < 0 else self.context.value()
        self.project.save_config()
        self._say(f"settings saved to {self.project.config_path}")

    # -------------------------------------------------------------------------------------------- the process
    @property
    def running(self) -> bool:
        return self.task is not None and self.task.is_active()

    @property
    def process(self) -> Any:
        """The running (or last) run's QProcess."""
        return self.task.process if self.task is not None else None

    def _mode_name(self) -> str:
        from inference.training.settings import MODE_NAMES  # no torch at import

        _label, mode, naive = MODES[self.mode_box.currentIndex()]
        return MODE_NAMES[(mode, naive)]

    def command(self, resume: str | None = None) -> list[str]:
        label, mode, naive = MODES[self.mode_box.currentIndex()]
        args = ["-m", "app.cli", "train", "--project", str(self.project.root), "--no-progress",
                "--device", self.device.currentText()]
        if resume:
            args += ["--resume", resume]
        else:
            args += ["--mode", mode, "--epochs", str(self.epochs.value()), "--batch-size", str(self.batch.value())]
            if naive:
                args.append("--no-feature-loss")
        if self.max_steps.value() > 0:
            args += ["--max-steps", str(self.max_steps.value())]
        return args + list(self.extra_args)

    def start(self, resume: str | None = None) -> bool:
        if self.project is None or self.running or self.unavailable:
            return False
        if not resume:
            self.save_settings()
        self.clear_curves()
        self.last_status = None
        self.run_dir = None
        self._stderr_tail, self._total_steps = "", 0
        pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        args = self.command(resume if isinstance(resume, str) else None)
        self._say("$ " + " ".join([self.python, *args]))
        task = self.tasks.process("training", self.python, args, key="training-run", env={"PYTHONPATH": pythonpath},
                                  cwd=str(REPO_ROOT), stop_grace_ms=STOP_GRACE_MS)
        task.output.connect(self._stdout_line)
        task.errorOutput.connect(self._stderr_line)
        task.finished.connect(self._finished)
        task.cancelled.connect(self._finished)  # killed after the grace period: still a run that ended
        task.failed.connect(self._failed)
        self.task = task
        self._set_running(True)
        self.status_label.setText("starting…")
        return True

    def stop(self) -> None:
        """Asks the trainer to stop (SIGTERM: it finishes the step, writes last.pt, records 'stopped');
        kills it if it has not ended after a grace period."""
        if not self.running:
            return
        self.status_label.setText("stopping…")
        self.task.cancel()

    def _set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running and self.project is not None)
        self.stop_btn.setEnabled(running)
        for w in (self.mode_box, self.epochs, self.batch, self.lr, self.device, self.compile, self.windows,
                  self.teacher_flips, self.max_steps, self.load_btn, self.save_btn, self.resume_btn):
            w.setEnabled(not running)

    def _stdout_line(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            self._say(line)
            return
        if isinstance(event, dict):
            self.handle_event(event)

    def _stderr_line(self, line: str) -> None:
        self._stderr_tail = (self._stderr_tail + line + "\n")[-4000:]
        if line.strip():
            self._say(line)

    def _finished(self, *_args: Any) -> None:
        """The process ended (on its own, or killed after the stop grace period): its status from the trainer's
        last event, else from the exit code."""
        task = self.task
        code = -1 if task is None or task.exit_code is None else task.exit_code
        if task is not None and task.state == "cancelled":
            self._say("the run did not stop in time; killed")
        status = self.last_status or ("finished" if code == 0 else "failed")
        if status == "failed" and self._stderr_tail:
            err = [ln for ln in self._stderr_tail.splitlines() if ln.startswith("error:")]
            self.status_label.setText(err[-1] if err else f"failed (exit {code})")
        else:
            self.status_label.setText(f"{status} (exit {code})")
        self.last_status = status
        self._set_running(False)
        self.refresh_runs()
        self.refresh_counts()
        self.run_finished.emit(status)

    def _failed(self, message: str) -> None:
        if self.task is not None and self.task.exit_code is None:  # never started
            self.status_label.setText(f"could not start {self.python}")
            self._set_running(False)
        else:  # crashed
            self._finished()

    # ------------------------------------------------------------------------------------------------ events
    def handle_event(self, e: dict[str, Any]) -> None:
        kind = e.get("event")
        if kind == "start":
            self.run_dir = e.get("run_dir")
            self._total_steps = int(e.get("total_steps") or 0)
            self.status_label.setText(f"running: {Path(self.run_dir or '').name} ({e.get('mode')}, "
                                      f"{e.get('total_steps')} steps, {e.get('device')})")
            self.run_started.emit(self.run_dir or "")
            self.refresh_runs()
        elif kind == "warning":  # e.g. a random-weights teacher, or a first step that ate the time budget
            self._say(f"warning: {e.get('message')}")
        elif kind == "cache":
            self.status_label.setText(f"teacher cache {e.get('done')}/{e.get('total')}")
        elif kind == "step":
            step = float(e.get("step", 0))
            if self.task is not None and self._total_steps:
                self.task.report_progress(int(step), self._total_steps)  # the status bar's progress
            for k, v in e.items():
                if k.startswith("loss") and isinstance(v, (int, float)):
                    self.plots.append(k, step, float(v))
            ips = e.get("images_per_s")
            self.status_label.setText(f"epoch {e.get('epoch')} step {e.get('step')}  loss {e.get('loss', 0):.4f}  "
                                      f"{ips or 0:.1f} img/s")
        elif kind == "epoch":
            step = float(e.get("step", 0))
            for k in ("val_iou_gt", "val_iou_teacher"):
                if isinstance(e.get(k), (int, float)):
                    self.plots.append(k, step, float(e[k]))
            self.refresh_runs()
        elif kind == "end":
            self.last_status = e.get("status")
        self.event_received.emit(e)

    def clear_curves(self) -> None:
        self.plots.clear()

    def _say(self, text: str) -> None:
        self.log_view.appendPlainText(text)

    # -------------------------------------------------------------------------------------------- past runs
    def run_rows(self) -> list[dict[str, Any]]:
        return list_runs(self.project)

    def refresh_runs(self) -> None:
        try:
            rows = self.run_rows()
        except Exception as exc:  # noqa: BLE001 - a locked or broken store must not break the panel
            self._say(f"could not read runs: {exc}")
            return
        self.runs_box.fill(rows)

    def selected_run(self) -> dict[str, Any] | None:
        return self.runs_box.selected()

    def resume_selected(self) -> None:
        run = self.selected_run()
        if run is None or self.running:
            return
        if not (Path(run["out_dir"]) / "checkpoints" / "last.pt").is_file():
            self._warn("This run has no checkpoint to resume from.")
            return
        self.start(resume=run["out_dir"])

    def use_selected_as_student(self) -> None:
        run = self.selected_run()
        if run is None:
            self._warn("Select a run first.")
            return
        try:
            msg = use_as_student(self.project, run)
        except Exception as exc:  # noqa: BLE001 - shown to the user, not raised into Qt
            self._warn(str(exc))
            return
        self._say(msg)
        self.status_label.setText(msg)

    def _warn(self, text: str) -> None:
        self._say(text)
        if self.isVisible():
            QMessageBox.warning(self, "Training", text)

    def shutdown(self) -> None:
        """Stop a running training process (window closing: this waits up to the grace period)."""
        self.tasks.drop(COUNTS_KEY)
        if self.running:
            self.task.stop_and_wait(STOP_GRACE_MS)


def make_panel(window: Any) -> tuple[str, TrainingPanel]:
    panel = TrainingPanel(getattr(window, "project", None), parent=window, tasks=getattr(window, "jobs", None))
    return "Training", panel
