"""Export panel: pick a checkpoint and precisions, export in a background thread with progress, and see every
export of the project with its size, parity against PyTorch and validation IoU. `add_panel("Export", panel)`.

Why a thread task (widgets.workers): an export runs PyTorch and ONNX Runtime for minutes; on the window's TaskHub
(`tasks=`, the panel's own without a window) its progress and failure also reach the status bar, and a panel closed
meanwhile simply drops the result (no QThread to wait for)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from inference import capabilities
from widgets.workers import TaskHub, ThreadTask

log = logging.getLogger("maskbench.export_panel")

COLUMNS = ("File", "Variant", "Precision", "Status", "Size (MB)", "Parity IoU", "Max |Δlogit|", "Val IoU", "TensorRT", "CPU ms (vs FP32)")
PRECISIONS = (("fp32", "FP32"), ("fp16", "FP16"), ("int8", "INT8"), ("int8_weight", "INT8 weights"))


class ExportPanel(QWidget):
    export_finished = Signal(object)  # ExportSummary
    export_failed = Signal(str)

    def __init__(self, project: Any, parent: QWidget | None = None, absent: list[str] | None = None,
                 tasks: TaskHub | None = None) -> None:
        """absent: the torch-stack modules this install lacks (default: looked up; a station has none of them);
        tasks: the window's TaskHub."""
        super().__init__(parent)
        self.tasks = tasks if tasks is not None else TaskHub(self)
        self.project_root = Path(project) if isinstance(project, (str, Path)) else Path(project.root)
        self.unavailable = capabilities.torch_stack_reason(
            "Export", capabilities.missing() if absent is None else absent)
        self.task: ThreadTask | None = None
        self._rows: list[dict[str, Any]] = []

        self.checkpoint = QLineEdit()
        self.checkpoint.setPlaceholderText("active student (or choose a checkpoint)")
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._browse)
        self.precision_boxes: dict[str, QCheckBox] = {}
        prec_row = QHBoxLayout()
        prec_row.addWidget(QLabel("Precisions:"))
        for key, label in PRECISIONS:
            box = QCheckBox(label)
            box.setChecked(True)
            self.precision_boxes[key] = box
            prec_row.addWidget(box)
        self.calibration = QComboBox()
        self.calibration.addItems(["stratified", "hard"])
        self.calibration.setToolTip("INT8 calibration crops: stratified by defect class, or favouring hard crops "
                                    "(high teacher/student disagreement, judge-scored)")
        self.samples = QSpinBox()
        self.samples.setRange(1, 100000)
        self.samples.setValue(500)
        self.tensorrt = QCheckBox("TensorRT")
        self.teacher = QCheckBox("Teacher pair")
        prec_row.addWidget(QLabel("Calibration:"))
        prec_row.addWidget(self.calibration)
        prec_row.addWidget(self.samples)
        prec_row.addWidget(self.tensorrt)
        prec_row.addWidget(self.teacher)
        prec_row.addStretch(1)

        self.run_button = QPushButton("Export")
        self.run_button.clicked.connect(lambda: self.start_export())
        self.reveal_button = QPushButton("Show folder")
        self.reveal_button.clicked.connect(self.reveal_selected)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.doubleClicked.connect(lambda _i: self.reveal_selected())

        ck_row = QHBoxLayout()
        ck_row.addWidget(QLabel("Checkpoint:"))
        ck_row.addWidget(self.checkpoint, 1)
        ck_row.addWidget(browse)
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_button)
        run_row.addWidget(self.progress, 1)
        run_row.addWidget(self.reveal_button)
        lay = QVBoxLayout(self)
        lay.addLayout(ck_row)
        lay.addLayout(prec_row)
        lay.addLayout(run_row)
        lay.addWidget(self.status)
        lay.addWidget(self.table, 1)
        if self.unavailable:  # a station: nothing can be exported here
            self.run_button.setEnabled(False)
            self.run_button.setToolTip(self.unavailable)
            self.status.setText(self.unavailable)
        self.refresh()

    # --- actions -------------------------------------------------------------------------------------------

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Student checkpoint", str(self.project_root),
                                              "Checkpoints (*.pt *.pth);;All files (*)")
        if path:
            self.checkpoint.setText(path)

    def selected_precisions(self) -> list[str]:
        return [k for k, box in self.precision_boxes.items() if box.isChecked()]

    def is_running(self) -> bool:
        return self.task is not None and self.task.is_active()

    def start_export(self, student: Any = None, **overrides: Any) -> bool:
        """Start an export in a worker thread (returns at once). `student`: an in-memory module (tests, the
        training view); `overrides`: ExportOptions fields."""
        if self.is_running() or self.unavailable:
            return False
        from inference.export.pipeline import ExportOptions

        precisions = self.selected_precisions()
        if not precisions:
            self.status.setText("choose at least one precision")
            return False
        options = ExportOptions(precisions=precisions, calibration=self.calibration.currentText(),
                                calibration_samples=self.samples.value(), tensorrt=self.tensorrt.isChecked(),
                                teacher=self.teacher.isChecked(), command="Export panel")
        for k, v in overrides.items():
            setattr(options, k, v)
        ckpt = self.checkpoint.text().strip() or None
        root = self.project_root

        def work(progress: Any, log: Any) -> Any:
            from inference.export.pipeline import run_export
            from store.project import Project

            with Project.open(root) as p:  # its own store connection, in this thread
                return run_export(p, ckpt, options, progress=progress, log_fn=log, student=student)

        self.task = self.tasks.run("export", work, key="export", owner=self, on_progress=self._on_progress,
                                   on_result=self._on_done, on_error=self._on_failed)
        self.task.output.connect(self.status.setText)
        self.run_button.setEnabled(False)
        self.progress.setRange(0, 0)
        self.status.setText("exporting…")
        return True

    @Slot(int, int)
    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def _finish_thread(self) -> None:
        self.task = None
        self.run_button.setEnabled(True)

    @Slot(object)
    def _on_done(self, summary: Any) -> None:
        self._finish_thread()
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        failed = summary.failed()
        self.status.setText(f"{len(summary.rows)} file(s) in {summary.out_dir}"
                            + (f"; {len(failed)} failed parity (kept under failed/)" if failed else "")
                            + ("\n" + "\n".join(m for m in summary.messages if "trtexec" in m) if self.tensorrt.isChecked()
                               else ""))
        self.refresh()
        self.export_finished.emit(summary)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._finish_thread()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status.setText(f"export failed: {message}")
        self.export_failed.emit(message)

    def refresh(self) -> None:
        """Reload the table from the project's Export rows."""
        if self.unavailable:  # the export package is not in a station bundle
            return
        from inference.export.pipeline import list_exports
        from store.project import Project

        try:
            with Project.open(self.project_root) as p:
                self._rows = list_exports(p.db)
        except Exception as exc:  # noqa: BLE001
            self.status.setText(f"cannot read exports: {exc}")
            return
        self.table.setRowCount(len(self._rows))

        def num(v: Any, f: str) -> str:
            return "–" if v is None else format(v, f)

        for i, r in enumerate(reversed(self._rows)):
            compat = (r.get("card") or {}).get("tensorrt_compat")
            trt = "–" if compat is None else ("compatible" if compat["compatible"] else "rejected")
            lat = (r.get("card") or {}).get("cpu_latency")  # ONNX Runtime, 1 thread, measured at export
            cpu = "–" if lat is None else (f"{lat['p50_ms']:.1f}"
                                           + (f" ({lat['vs_fp32']:.2f}x)" if lat.get("vs_fp32") is not None else ""))
            cells = (Path(r["path"]).name, r["variant"], r["precision"], r["status"],
                     f"{r['size_bytes'] / 1e6:.2f}", num(r["parity_iou"], ".4f"), num(r["parity_max_abs"], ".3g"),
                     num(r["val_iou"], ".4f"), trt, cpu)
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, r["path"])
                if 4 <= j < 8 or j == 9:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if r["status"] != "ok" or (j == 8 and trt == "rejected"):
                    item.setForeground(Qt.GlobalColor.red)
                if j == 8 and compat is not None:
                    item.setToolTip(compat["summary"])
                self.table.setItem(i, j, item)

    def row_count(self) -> int:
        return self.table.rowCount()

    def reveal_selected(self) -> bool:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        row = rows[0].row() if rows else (0 if self.table.rowCount() else -1)
        if row < 0:
            return False
        path = Path(self.table.item(row, 0).data(Qt.ItemDataRole.UserRole))
        return QDesktopServices.openUrl(QUrl.fromLocalFile(str(path.parent)))
