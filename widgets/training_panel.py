"""Training panel: pick a mode and settings (read from / written to project.yaml), start and stop a run, watch
every loss term and the validation IoU live, browse past runs, and make a run's best checkpoint the project's
student.

Above the run settings, the training set as the next run will see it (review.training_set on the train split:
labelled, unlabelled, corrected, approved and verdict-weighted crops), counted in a worker thread whenever the tab
is shown, a project is opened or a run ends; an invalid `weights:` section shows its error there.

The run is a separate process (QProcess running `python -m app.cli train ...`), so the window stays responsive
and a crash in training (or CUDA running out of memory) cannot take the workbench down. The panel only parses the
JSON lines the trainer prints on stdout.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import QProcess, QProcessEnvironment, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from inference import capabilities
from widgets.workers import TaskPool

log = logging.getLogger("maskbench.training_panel")

REPO_ROOT = Path(__file__).resolve().parents[1]
MODES = [  # label, --mode, --no-feature-loss
    ("Distill (feature-aligned)", "distill", False),
    ("Distill, no feature loss (naive baseline)", "distill", True),
    ("Fine-tune teacher (SAM 2)", "finetune-teacher", False),
    ("Plain U-Net (supervised baseline)", "unet", False),
    ("Quantisation-aware fine-tune of the active student (INT8)", "qat", False),
]
CURVE_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcbd22"]
RUN_COLUMNS = ["id", "name", "mode", "status", "epochs", "best IoU", "started"]
STOP_GRACE_MS = 20_000
COUNT_SPLITS = ("train",)


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
                 absent: list[str] | None = None) -> None:
        """absent: the torch-stack modules this install lacks (default: looked up; a station has none of them)."""
        super().__init__(parent)
        self.unavailable = capabilities.torch_stack_reason(
            "Training", capabilities.missing() if absent is None else absent)
        self.project = project
        self.python = python or sys.executable
        self.extra_args: list[str] = []  # appended to the train command (tests: --log-every 1 ...)
        self.process: QProcess | None = None
        self.run_dir: str | None = None
        self.last_status: str | None = None
        self.series: dict[str, tuple[list[float], list[float]]] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self._buf = b""
        self._stderr_tail = ""
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill)
        self._counts_pool = TaskPool("training-counts", workers=1)
        self._counts_seq = 0
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
        self.max_steps = QSpinBox()
        self.max_steps.setRange(0, 10_000_000)
        self.max_steps.setSpecialValueText("no limit")
        form = QFormLayout()
        form.addRow("Mode", self.mode_box)
        form.addRow("Epochs", self.epochs)
        form.addRow("Batch size", self.batch)
        form.addRow("Learning rate", self.lr)
        form.addRow("Device", self.device)
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

        self.loss_plot = pg.PlotWidget(title="Training loss")
        self.loss_plot.addLegend()
        self.loss_plot.setLabel("bottom", "step")
        self.iou_plot = pg.PlotWidget(title="Validation IoU")
        self.iou_plot.addLegend()
        self.iou_plot.setLabel("bottom", "step")
        self.iou_plot.setYRange(0, 1)
        plots = QSplitter(Qt.Vertical)
        plots.addWidget(self.loss_plot)
        plots.addWidget(self.iou_plot)

        self.runs = QTableWidget(0, len(RUN_COLUMNS))
        self.runs.setHorizontalHeaderLabels(RUN_COLUMNS)
        self.runs.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.runs.setSelectionMode(QAbstractItemView.SingleSelection)
        self.runs.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.runs.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.refresh_btn = QPushButton("Refresh")
        self.use_btn = QPushButton("Use as student")
        self.resume_btn = QPushButton("Resume")
        self.refresh_btn.clicked.connect(self.refresh_runs)
        self.use_btn.clicked.connect(self.use_selected_as_student)
        self.resume_btn.clicked.connect(self.resume_selected)
        run_buttons = QHBoxLayout()
        for b in (self.refresh_btn, self.resume_btn, self.use_btn):
            run_buttons.addWidget(b)
        runs_box = QGroupBox("Past runs")
        rl = QVBoxLayout(runs_box)
        rl.addWidget(self.runs)
        rl.addLayout(run_buttons)

        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)

        left = QVBoxLayout()
        left.addWidget(settings)
        left.addWidget(runs_box, 1)
        left_w = QWidget()
        left_w.setLayout(left)
        right = QSplitter(Qt.Vertical)
        right.addWidget(plots)
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
        the label shows the line when it arrives (a newer request supersedes an older one)."""
        self._counts_seq += 1
        seq = self._counts_seq
        if self.project is None:
            self._show_counts(seq, "training set: no project open")
            return
        if not self.counts_label.text().endswith("(counting…)"):
            self.counts_label.setText(self.counts_label.text() + " (counting…)")
        self._counts_pool.submit(
            training_set_line, self.project, key="counts", owner=self,
            on_result=lambda line, n=seq: self._show_counts(n, f"training set (train split): {line}"),
            on_error=lambda exc, n=seq: self._show_counts(n, f"training set: {exc}"))

    def _show_counts(self, seq: int, text: str) -> None:
        if seq != self._counts_seq:
            return  # an older request's answer
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

    def save_settings(self) -> None:
        if self.project is None:
            return
        from inference.training.settings import set_schedule  # no torch at import

        d = self._dist()
        for key, value in (("epochs", self.epochs.value()), ("batch_size", self.batch.value()),
                           ("lr", self.lr.value())):
            set_schedule(d, self._mode_name(), key, value)
        d.setdefault("training", {})["device"] = self.device.currentText()
        self.project.save_config()
        self._say(f"settings saved to {self.project.config_path}")

    # -------------------------------------------------------------------------------------------- the process
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.state() != QProcess.NotRunning

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
        self._buf = b""
        self._stderr_tail = ""
        proc = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("PYTHONPATH", str(REPO_ROOT) + (":" + env.value("PYTHONPATH") if env.value("PYTHONPATH") else ""))
        proc.setProcessEnvironment(env)
        proc.setWorkingDirectory(str(REPO_ROOT))
        proc.readyReadStandardOutput.connect(self._read_stdout)
        proc.readyReadStandardError.connect(self._read_stderr)
        proc.finished.connect(self._finished)
        proc.errorOccurred.connect(self._error)
        self.process = proc
        args = self.command(resume if isinstance(resume, str) else None)
        self._say("$ " + " ".join([self.python, *args]))
        proc.start(self.python, args)
        self._set_running(True)
        self.status_label.setText("starting…")
        return True

    def stop(self) -> None:
        """Asks the trainer to stop (SIGTERM: it finishes the step, writes last.pt, records 'stopped');
        kills it if it has not ended after a grace period."""
        if not self.running:
            return
        self.status_label.setText("stopping…")
        self.process.terminate()
        self._kill_timer.start(STOP_GRACE_MS)

    def _kill(self) -> None:
        if self.running:
            self._say("the run did not stop in time; killed")
            self.process.kill()

    def _set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running and self.project is not None)
        self.stop_btn.setEnabled(running)
        for w in (self.mode_box, self.epochs, self.batch, self.lr, self.device, self.max_steps, self.load_btn,
                  self.save_btn, self.resume_btn):
            w.setEnabled(not running)

    def _read_stdout(self) -> None:
        self._buf += bytes(self.process.readAllStandardOutput())
        *lines, self._buf = self._buf.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                self._say(line)
                continue
            if isinstance(event, dict):
                self.handle_event(event)

    def _read_stderr(self) -> None:
        text = bytes(self.process.readAllStandardError()).decode("utf-8", "replace")
        self._stderr_tail = (self._stderr_tail + text)[-4000:]
        for line in text.splitlines():
            if line.strip():
                self._say(line)

    def _finished(self, code: int, _status: Any) -> None:
        self._kill_timer.stop()
        if self.process is not None:
            self._read_stdout()
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

    def _error(self, err: Any) -> None:
        if err == QProcess.FailedToStart:
            self.status_label.setText(f"could not start {self.python}")
            self._set_running(False)

    # ------------------------------------------------------------------------------------------------ events
    def handle_event(self, e: dict[str, Any]) -> None:
        kind = e.get("event")
        if kind == "start":
            self.run_dir = e.get("run_dir")
            self.status_label.setText(f"running: {Path(self.run_dir or '').name} ({e.get('mode')}, "
                                      f"{e.get('total_steps')} steps, {e.get('device')})")
            self.run_started.emit(self.run_dir or "")
            self.refresh_runs()
        elif kind == "cache":
            self.status_label.setText(f"teacher cache {e.get('done')}/{e.get('total')}")
        elif kind == "step":
            step = float(e.get("step", 0))
            for k, v in e.items():
                if k.startswith("loss") and isinstance(v, (int, float)):
                    self._append(k, step, float(v), self.loss_plot)
            ips = e.get("images_per_s")
            self.status_label.setText(f"epoch {e.get('epoch')} step {e.get('step')}  loss {e.get('loss', 0):.4f}  "
                                      f"{ips or 0:.1f} img/s")
        elif kind == "epoch":
            step = float(e.get("step", 0))
            for k in ("val_iou_gt", "val_iou_teacher"):
                if isinstance(e.get(k), (int, float)):
                    self._append(k, step, float(e[k]), self.iou_plot)
            self.refresh_runs()
        elif kind == "end":
            self.last_status = e.get("status")
        self.event_received.emit(e)

    def _append(self, key: str, x: float, y: float, plot: pg.PlotWidget) -> None:
        xs, ys = self.series.setdefault(key, ([], []))
        xs.append(x)
        ys.append(y)
        curve = self.curves.get(key)
        if curve is None:
            colour = CURVE_COLOURS[len(self.curves) % len(CURVE_COLOURS)]
            curve = plot.plot([], [], pen=pg.mkPen(colour, width=2), name=key, symbol="o", symbolSize=4)
            self.curves[key] = curve
        curve.setData(xs, ys)

    def clear_curves(self) -> None:
        for key, curve in self.curves.items():
            (self.iou_plot if key.startswith("val_") else self.loss_plot).removeItem(curve)
        for plot in (self.loss_plot, self.iou_plot):
            legend = plot.plotItem.legend
            if legend is not None:
                legend.clear()
        self.curves.clear()
        self.series.clear()

    def _say(self, text: str) -> None:
        self.log_view.appendPlainText(text)

    # -------------------------------------------------------------------------------------------- past runs
    def run_rows(self) -> list[dict[str, Any]]:
        if self.project is None:
            return []
        from sqlalchemy import select

        from store.schema import TrainingRun

        with self.project.db.session() as s:
            rows = s.scalars(select(TrainingRun).order_by(TrainingRun.id.desc())).all()
            return [{"id": r.id, "name": r.name, "mode": r.mode, "status": r.status, "epochs": r.epochs_done,
                     "best_val_iou": r.best_val_iou, "best_checkpoint": r.best_checkpoint, "out_dir": r.out_dir,
                     "started": r.started_at.strftime("%Y-%m-%d %H:%M") if r.started_at else ""} for r in rows]

    def refresh_runs(self) -> None:
        try:
            rows = self.run_rows()
        except Exception as exc:  # noqa: BLE001 - a locked or broken store must not break the panel
            self._say(f"could not read runs: {exc}")
            return
        self.runs.setRowCount(len(rows))
        for i, r in enumerate(rows):
            iou = "" if r["best_val_iou"] is None else f"{r['best_val_iou']:.3f}"
            for j, v in enumerate([r["id"], r["name"], r["mode"], r["status"], r["epochs"], iou, r["started"]]):
                item = QTableWidgetItem(str(v))
                item.setData(Qt.UserRole, r)
                self.runs.setItem(i, j, item)

    def selected_run(self) -> dict[str, Any] | None:
        items = self.runs.selectedItems()
        return items[0].data(Qt.UserRole) if items else None

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
        """Stop a running training process (window closing)."""
        self._counts_pool.close()
        if self.running:
            self.process.terminate()
            if not self.process.waitForFinished(STOP_GRACE_MS):
                self.process.kill()
                self.process.waitForFinished(5000)


def use_as_student(project: Any, run: dict[str, Any]) -> str:
    """Register the run's best checkpoint as the project's active student (a finetune-teacher run's teacher.pt as
    the active teacher) through the model registry."""
    from inference.training.registration import register_student_checkpoint, register_teacher_checkpoint

    if run.get("mode") == "finetune_teacher":
        out = Path(run["out_dir"])
        if not (out / "teacher.pt").is_file():
            raise ValueError("this fine-tuning run has no teacher.pt yet")
        model_id = register_teacher_checkpoint(project, out, name=run.get("name"), training_run_id=run.get("id"))
        return f"teacher model #{model_id} registered from {out / 'teacher.pt'}"
    ckpt = run.get("best_checkpoint")
    if not ckpt or not Path(ckpt).is_file():
        raise ValueError("this run has no best checkpoint yet")
    model_id = register_student_checkpoint(project, Path(ckpt), name=run.get("name") or Path(ckpt).parent.parent.name,
                                           training_run_id=run.get("id"))
    return f"student model #{model_id} registered from {ckpt}"


def make_panel(window: Any) -> tuple[str, TrainingPanel]:
    panel = TrainingPanel(getattr(window, "project", None), parent=window)
    return "Training", panel
