"""Latency panel: start local or SSH (Jetson) latency runs, follow their log live, browse the history, compare
latency by model and precision against the project's target FPS, and export the history as CSV.

A run is the `maskbench bench` / `bench-remote` command in a child process (a ProcessTask of widgets.workers, on
the window's TaskHub so the status bar shows it): the GUI thread only reads its output as it arrives, a crash or a
hung SSH connection in the run cannot take the window down, and Stop kills it. The child stores its results in the
project database; the panel reloads the history when it ends.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from inference.bench.records import export_csv, history
from inference.bench.stats import target_fps_from_config
from inference.bench.targets import list_targets
from store.project import Project
from widgets.workers import ProcessTask, TaskHub

log = logging.getLogger("maskbench.latency_panel")

REPO_ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("Model", "Backend", "Precision", "Batch", "Device", "p50 ms", "p99 ms", "FPS", "When")
LOCAL_PROVIDERS = ("cpu", "cuda", "tensorrt", "torch")
REMOTE_PRECISIONS = ("export's", "fp16", "int8", "fp32", "best")
MAX_LOG_LINES = 5000


def cli_command(args: Sequence[str]) -> tuple[str, list[str]]:
    """(program, arguments) that run `maskbench ARGS` in a child process, from a checkout or a frozen build."""
    if getattr(sys, "frozen", False):
        return sys.executable, list(args)
    return sys.executable, ["-m", "app.cli", *args]


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


class _NumItem(QTableWidgetItem):
    """Sorts by number, shows formatted text."""

    def __init__(self, value: float | None, spec: str) -> None:
        super().__init__(_fmt(value, spec))
        self.value = value if value is not None else float("-inf")
        self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        if isinstance(other, _NumItem):
            return self.value < other.value
        return super().__lt__(other)


class LatencyPanel(QWidget):
    runStarted = Signal(list)  # the command's arguments
    logLine = Signal(str)
    runFinished = Signal(int)  # exit code (non-zero: failed; the log's last line says why)
    historyChanged = Signal()

    def __init__(self, project: Project | None = None, parent: QWidget | None = None,
                 tasks: TaskHub | None = None) -> None:
        super().__init__(parent)
        self.tasks = tasks if tasks is not None else TaskHub(self)
        self.project: Project | None = None
        self.rows: list[dict[str, Any]] = []
        self.task: ProcessTask | None = None
        self.last_exit_code: int | None = None

        # --- run controls ---
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText(".onnx export, TensorRT engine or checkpoint")
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self._browse)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit, 1)
        model_row.addWidget(self.browse_button)

        self.where_combo = QComboBox()
        self.where_combo.addItem("This machine", "local")
        self.where_combo.currentIndexChanged.connect(self._update_controls)
        self.provider_combo = QComboBox()
        self.provider_combo.addItems(LOCAL_PROVIDERS)
        self.batch_edit = QLineEdit("1")
        self.batch_edit.setToolTip("batch sizes, comma-separated (e.g. 1,8,32); SSH runs use the first")
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(REMOTE_PRECISIONS)
        self.precision_combo.setToolTip("TensorRT precision on the target; 'export's' uses the export's own")

        form = QFormLayout()
        form.addRow("Model", model_row)
        form.addRow("Run on", self.where_combo)
        form.addRow("Provider", self.provider_combo)
        form.addRow("Batch sizes", self.batch_edit)
        form.addRow("Precision", self.precision_combo)

        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self._start_clicked)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.export_button = QPushButton("Export CSV…")
        self.export_button.clicked.connect(self._export_clicked)
        self.status_label = QLabel("idle")
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        buttons.addWidget(self.status_label)
        buttons.addWidget(self.export_button)

        # --- log ---
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(MAX_LOG_LINES)
        self.log_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)

        # --- history ---
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(COLUMNS.index("When"), Qt.SortOrder.DescendingOrder)

        # --- plot ---
        self.plot = pg.PlotWidget()
        self.plot.setBackground("w")
        self.plot.showGrid(x=False, y=True, alpha=0.3)
        self.plot.setLabel("left", "latency p50 (bar) / p99 (whisker)", units="ms")
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.6, brush=pg.mkBrush(70, 130, 180, 200))
        self.whiskers = pg.ErrorBarItem(x=np.array([]), y=np.array([]), top=np.array([]),
                                        bottom=np.array([]), beam=0.2, pen=pg.mkPen(40, 40, 40))
        self.target_line = pg.InfiniteLine(
            pos=1000.0 / 30, angle=0, movable=False, pen=pg.mkPen(200, 30, 30, width=2, style=Qt.PenStyle.DashLine),
            label="", labelOpts={"position": 0.95, "color": (200, 30, 30), "anchors": [(1, 1), (1, 1)]},
        )
        self.plot.getAxis("bottom").setHeight(58)
        self.plot.addItem(self.bars)
        self.plot.addItem(self.whiskers)
        self.plot.addItem(self.target_line)
        self._plot_data: list[tuple[str, float, float | None]] = []

        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(self.table)
        lower.addWidget(self.plot)
        lower.setStretchFactor(0, 3)
        lower.setStretchFactor(1, 2)
        outer = QSplitter(Qt.Orientation.Vertical)
        outer.addWidget(self.log_view)
        outer.addWidget(lower)
        outer.setStretchFactor(0, 1)
        outer.setStretchFactor(1, 2)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(outer, 1)

        self.set_project(project)

    # --- project ---

    def set_project(self, project: Project | None) -> None:
        self.project = project
        self._reload_targets()
        self.refresh()
        self._update_controls()

    @property
    def target_fps(self) -> float:
        return target_fps_from_config(self.project.config if self.project is not None else None)

    def _reload_targets(self) -> None:
        current = self.where_combo.currentData()
        self.where_combo.blockSignals(True)
        self.where_combo.clear()
        self.where_combo.addItem("This machine", "local")
        if self.project is not None:
            try:
                for t in list_targets(self.project.db):
                    self.where_combo.addItem(f"{t.name} ({t.address})", t.name)
            except Exception:  # noqa: BLE001 - an old store without the table: local runs still work
                log.exception("cannot list SSH targets")
        idx = self.where_combo.findData(current)
        self.where_combo.setCurrentIndex(max(idx, 0))
        self.where_combo.blockSignals(False)

    def _update_controls(self) -> None:
        running = self.is_running()
        remote = self.where_combo.currentData() not in (None, "local")
        self.provider_combo.setEnabled(not remote and not running)
        self.precision_combo.setEnabled(remote and not running)
        self.start_button.setEnabled(self.project is not None and not running)
        self.stop_button.setEnabled(running)
        self.export_button.setEnabled(bool(self.rows))

    # --- history, table, plot ---

    def refresh(self) -> None:
        self.rows = history(self.project.db) if self.project is not None else []
        self._fill_table()
        self._fill_plot()
        self._update_controls()
        self.historyChanged.emit()

    def _fill_table(self) -> None:
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(self.rows))
        for i, r in enumerate(self.rows):
            device = r["device"] if r["target"] == "local" else f"{r['target']}: {r['device']}"
            items = [
                QTableWidgetItem(str(r["model"])),
                QTableWidgetItem(str(r["backend"])),
                QTableWidgetItem(str(r["precision"])),
                _NumItem(r["batch"], "d"),
                QTableWidgetItem(device),
                _NumItem(r["p50_ms"], ".3f"),
                _NumItem(r["p99_ms"], ".3f"),
                _NumItem(r["fps"], ".1f"),
                _NumItem(float(r["id"]), "g"),
            ]
            items[-1].setText(str(r["created_at"]))  # shows the time, sorts by id (runs within one second too)
            items[0].setData(Qt.ItemDataRole.UserRole, r["id"])
            for col, item in enumerate(items):
                self.table.setItem(i, col, item)
        self.table.setSortingEnabled(True)

    def plot_data(self) -> list[tuple[str, float, float | None]]:
        """(label, p50 ms, p99 ms) of the newest result of each model / precision / backend / batch / target."""
        return list(self._plot_data)

    def _fill_plot(self) -> None:
        latest: dict[tuple[Any, ...], dict[str, Any]] = {}
        for r in self.rows:  # newest first: keep the first seen
            key = (r["model"], r["precision"], r["backend"], r["batch"], r["target"])
            latest.setdefault(key, r)
        keys = sorted(latest, key=lambda k: (str(k[0]), str(k[1]), str(k[2]), k[3], str(k[4])))
        data = []
        for k in keys:
            r = latest[k]
            where = "" if k[4] == "local" else f" @{k[4]}"
            backend = str(k[2]).replace("onnxruntime-", "ort-")
            data.append((f"{k[0]}\n{k[1]} b{k[3]}{where}\n{backend}", float(r["p50_ms"]), r["p99_ms"]))
        self._plot_data = data
        xs = list(range(len(data)))
        heights = [d[1] for d in data]
        self.bars.setOpts(x=xs, height=heights, width=0.6)
        tops = np.array([max((d[2] or d[1]) - d[1], 0.0) for d in data], dtype=float)
        self.whiskers.setData(x=np.array(xs, dtype=float), y=np.array(heights, dtype=float), top=tops,
                              bottom=np.zeros(len(data)))
        self.plot.getAxis("bottom").setTicks([[(i, d[0]) for i, d in enumerate(data)]])
        fps = self.target_fps
        budget = 1000.0 / fps if fps > 0 else 0.0
        self.target_line.setValue(budget)
        self.target_line.label.setFormat(f"target {fps:g} FPS = {budget:.1f} ms")
        top = max([budget] + [d[2] or d[1] for d in data]) * 1.15 if data or budget else 1.0
        self.plot.setYRange(0, top, padding=0)
        if data:
            self.plot.setXRange(-0.6, len(data) - 0.4, padding=0)

    # --- runs ---

    def is_running(self) -> bool:
        return self.task is not None and self.task.is_active()

    def start_local(self, model: str | Path, provider: str | None = None, batches: str = "1",
                    extra_args: Sequence[str] = ()) -> bool:
        args = ["bench", str(model), "--batch", batches or "1"]
        if provider:
            args += ["--provider", provider]
        return self._start(args, extra_args)

    def start_remote(self, model: str | Path, target: str, precision: str | None = None, batch: int = 1,
                     shapes: str | None = None, extra_args: Sequence[str] = ()) -> bool:
        args = ["bench-remote", str(model), "--target", target, "--batch", str(int(batch))]
        if precision:
            args += ["--precision", precision]
        if shapes:
            args += ["--shapes", shapes]
        return self._start(args, extra_args)

    def _start(self, args: list[str], extra_args: Sequence[str]) -> bool:
        if self.project is None:
            self._append("no project open")
            return False
        if self.is_running():
            self._append("a run is in progress; stop it first")
            return False
        args = [*args, "--project", str(self.project.root), *extra_args]
        program, argv = cli_command(args)
        self.last_exit_code = None
        self._append(f"$ maskbench {' '.join(args)}")
        self.status_label.setText("running…")
        task = self.tasks.process(f"benchmark {Path(args[1]).name}", program, argv, key="latency-run",
                                  cwd=str(REPO_ROOT), merge_channels=True)
        task.output.connect(self._append)
        task.finished.connect(self._done)
        task.cancelled.connect(lambda: self._done(-1))  # Stop kills the run
        task.failed.connect(self._failed)
        self.task = task
        self._update_controls()
        self.runStarted.emit(args)
        return True

    @property
    def process(self) -> Any:
        """The running (or last) run's QProcess."""
        return self.task.process if self.task is not None else None

    def stop(self) -> None:
        if self.is_running():
            assert self.task is not None
            self._append("stopping…")
            self.task.cancel()

    def _append(self, line: str) -> None:
        self.log_view.appendPlainText(line)
        self.logLine.emit(line)

    def _failed(self, message: str) -> None:
        """Could not start, or crashed: the log says so, the run ends with -1."""
        self._append(message)
        self._done(-1)

    def _done(self, code: int) -> None:
        if self.last_exit_code is not None:
            return
        self.last_exit_code = code
        self.status_label.setText("done" if code == 0 else f"failed ({code})")
        self.refresh()
        self.runFinished.emit(code)

    # --- buttons ---

    def _browse(self) -> None:
        start = str(self.project.exports_dir) if self.project is not None else ""
        path, _ = QFileDialog.getOpenFileName(
            self, "Model to benchmark", start, "Models (*.onnx *.engine *.plan *.pt *.pth *.pt2 *.ckpt);;All files (*)"
        )
        if path:
            self.model_edit.setText(path)

    def _start_clicked(self) -> None:
        model = self.model_edit.text().strip()
        if not model:
            self._append("choose a model file first")
            return
        where = self.where_combo.currentData()
        if where in (None, "local"):
            self.start_local(model, self.provider_combo.currentText(), self.batch_edit.text().strip() or "1")
        else:
            precision = self.precision_combo.currentText()
            first = (self.batch_edit.text().split(",")[0] or "1").strip()
            self.start_remote(model, where, None if precision == "export's" else precision,
                              batch=int(first) if first.isdigit() else 1)

    def export_csv(self, path: str | Path) -> int:
        return export_csv(self.rows, path)

    def _export_clicked(self) -> None:
        start = str(self.project.root / "latency.csv") if self.project is not None else "latency.csv"
        path, _ = QFileDialog.getSaveFileName(self, "Export latency history", start, "CSV (*.csv)")
        if not path:
            return
        try:
            n = self.export_csv(path)
        except OSError as exc:
            QMessageBox.warning(self, "Export failed", f"{path}: {exc.strerror or exc}")
            return
        self._append(f"exported {n} results to {path}")

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        if self.is_running():
            assert self.task is not None
            self.task.stop_and_wait(0)
        super().closeEvent(event)


def make_panel(window: Any) -> LatencyPanel:
    """Main-window hook: the panel runs its benchmarks on the window's TaskHub."""
    return LatencyPanel(tasks=getattr(window, "jobs", None))
