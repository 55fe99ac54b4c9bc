"""Parts of the training panel: the live loss / validation-IoU plots, and the past runs with making a run's best
checkpoint the project's student (or teacher).

Why a module of their own: the panel (widgets.training_panel) is the run's settings and its child process; the
plots and the history are views it feeds, and apart they keep each module under the 450-line limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

CURVE_COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcbd22"]
RUN_COLUMNS = ["id", "name", "mode", "status", "epochs", "best IoU", "started"]


class LivePlots(QSplitter):
    """Training loss terms (top) and validation IoU (bottom) against the step; `series` keeps the points."""

    def __init__(self) -> None:
        super().__init__(Qt.Vertical)
        self.loss_plot = pg.PlotWidget(title="Training loss")
        self.loss_plot.addLegend()
        self.loss_plot.setLabel("bottom", "step")
        self.iou_plot = pg.PlotWidget(title="Validation IoU")
        self.iou_plot.addLegend()
        self.iou_plot.setLabel("bottom", "step")
        self.iou_plot.setYRange(0, 1)
        self.addWidget(self.loss_plot)
        self.addWidget(self.iou_plot)
        self.series: dict[str, tuple[list[float], list[float]]] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}

    def append(self, key: str, x: float, y: float) -> None:
        """A point of `key` (val_* on the IoU plot, the rest on the loss plot)."""
        plot = self.iou_plot if key.startswith("val_") else self.loss_plot
        xs, ys = self.series.setdefault(key, ([], []))
        xs.append(x)
        ys.append(y)
        curve = self.curves.get(key)
        if curve is None:
            colour = CURVE_COLOURS[len(self.curves) % len(CURVE_COLOURS)]
            curve = plot.plot([], [], pen=pg.mkPen(colour, width=2), name=key, symbol="o", symbolSize=4)
            self.curves[key] = curve
        curve.setData(xs, ys)

    def clear(self) -> None:
        for key, curve in self.curves.items():
            (self.iou_plot if key.startswith("val_") else self.loss_plot).removeItem(curve)
        for plot in (self.loss_plot, self.iou_plot):
            legend = plot.plotItem.legend
            if legend is not None:
                legend.clear()
        self.curves.clear()
        self.series.clear()


class PastRuns(QGroupBox):
    """The project's training runs, newest first, with Refresh / Resume / Use as student buttons (the panel
    connects them)."""

    def __init__(self) -> None:
        super().__init__("Past runs")
        self.table = QTableWidget(0, len(RUN_COLUMNS))
        self.table.setHorizontalHeaderLabels(RUN_COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.refresh_btn = QPushButton("Refresh")
        self.use_btn = QPushButton("Use as student")
        self.resume_btn = QPushButton("Resume")
        buttons = QHBoxLayout()
        for b in (self.refresh_btn, self.resume_btn, self.use_btn):
            buttons.addWidget(b)
        lay = QVBoxLayout(self)
        lay.addWidget(self.table)
        lay.addLayout(buttons)

    def fill(self, rows: list[dict[str, Any]]) -> None:
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            iou = "" if r["best_val_iou"] is None else f"{r['best_val_iou']:.3f}"
            for j, v in enumerate([r["id"], r["name"], r["mode"], r["status"], r["epochs"], iou, r["started"]]):
                item = QTableWidgetItem(str(v))
                item.setData(Qt.UserRole, r)
                self.table.setItem(i, j, item)

    def selected(self) -> dict[str, Any] | None:
        items = self.table.selectedItems()
        return items[0].data(Qt.UserRole) if items else None


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
