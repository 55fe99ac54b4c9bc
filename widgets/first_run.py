"""First-run dialog: shown by run_gui when there is no last project and the user has not dismissed it.

Offers the demo project, a folder of crops (a new project under the user data folder, ingested in a worker with
progress in the status bar) or importing a model. Checks shown up front, each as one plain line:
* GPU: informative only; the station and the review tools run on CPU (ONNX Runtime).
* models: whether the demo models are shipped, and that real work wants an official SAM 2 checkpoint.
* data folder: must be writable (projects, settings and logs live there, never in the install folder).
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
)

DISMISSED_KEY = "firstrun/dismissed"
OK, INFO, ERROR = "ok", "info", "error"
_COLOURS = {OK: "#009E73", INFO: "#0072B2", ERROR: "#D55E00"}


@dataclass
class Check:
    name: str
    level: str  # ok | info | error
    text: str


def check_gpu() -> Check:
    """Informative: CUDA through ONNX Runtime's providers or an NVIDIA driver; never imports torch."""
    providers: list[str] = []
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except Exception:  # noqa: BLE001
        pass
    if "CUDAExecutionProvider" in providers or "TensorrtExecutionProvider" in providers:
        return Check("GPU", OK, "CUDA available to ONNX Runtime")
    driver = shutil.which("nvidia-smi") is not None
    extra = " (an NVIDIA driver is installed; onnxruntime-gpu would use it)" if driver else ""
    return Check("GPU", INFO, "no GPU in use: fine, review, annotation and the student run on the CPU" + extra)


def check_models() -> Check:
    from app.demo_models import load_manifest

    try:
        manifest = load_manifest()
    except Exception as exc:  # noqa: BLE001
        return Check("models", ERROR, f"demo models unreadable: {exc}")
    if manifest is None:
        return Check("models", ERROR, "no demo models shipped: the demo opens without predictions; import a "
                                      "teacher (SAM 2 checkpoint) and a student to see masks")
    return Check("models", INFO, "demo models present (trained on synthetic crops, NOT SA-1B-pretrained SAM 2); "
                                 "for real work import an official SAM 2.1 checkpoint")


def check_data_dir(path: Path | None = None) -> Check:
    from app.paths import data_dir

    d = Path(path or data_dir())
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        return Check("data folder", ERROR, f"cannot write to {d} ({exc.strerror or exc}); set MASKBENCH_DATA_DIR "
                                           "to a writable folder")
    return Check("data folder", OK, f"{d}")


def run_checks() -> list[Check]:
    return [check_gpu(), check_models(), check_data_dir()]


class FirstRunDialog(QDialog):
    """choice: "demo" | "folder" (with .path) | "model" (with .path, .kind) | "" (closed)."""

    chosen = Signal(str)

    def __init__(self, parent=None, checks: list[Check] | None = None) -> None:  # noqa: ANN001
        super().__init__(parent)
        self.setWindowTitle("Welcome to maskbench")
        self.choice = ""
        self.path: str | None = None
        self.kind = "teacher"
        self.checks = checks if checks is not None else run_checks()
        lay = QVBoxLayout(self)
        intro = QLabel("<b>maskbench</b> reviews where a SAM 2 teacher and a tiny student disagree.<br>"
                       "Start with the demo (synthetic defect crops with demo-model predictions, offline), "
                       "or bring your own crops or models.")
        intro.setWordWrap(True)
        lay.addWidget(intro)
        self.check_labels: dict[str, QLabel] = {}
        for c in self.checks:
            lab = QLabel(f"<span style='color:{_COLOURS[c.level]}'>●</span> <b>{c.name}</b>: {c.text}")
            lab.setWordWrap(True)
            lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            lay.addWidget(lab)
            self.check_labels[c.name] = lab
        self.data_ok = all(c.level != ERROR for c in self.checks if c.name == "data folder")

        self.demo_btn = QPushButton("Open the demo project")
        self.folder_btn = QPushButton("Open a folder of crops…")
        row = QHBoxLayout()
        self.model_btn = QPushButton("Import a model…")
        self.kind_box = QComboBox()
        self.kind_box.addItems(["teacher", "student"])
        row.addWidget(self.model_btn, 1)
        row.addWidget(self.kind_box)
        for b in (self.demo_btn, self.folder_btn):
            lay.addWidget(b)
            b.setEnabled(self.data_ok)
        lay.addLayout(row)
        self.model_btn.setEnabled(self.data_ok)
        self.kind_box.setEnabled(self.data_ok)
        self.dont_show = QCheckBox("Don't show this again")
        lay.addWidget(self.dont_show)
        close = QPushButton("Close")
        lay.addWidget(close)
        self.demo_btn.setDefault(True)
        self.demo_btn.clicked.connect(lambda: self._choose("demo"))
        self.folder_btn.clicked.connect(self._folder)
        self.model_btn.clicked.connect(self._model)
        close.clicked.connect(self.reject)

    def _choose(self, choice: str) -> None:
        self.choice = choice
        self.chosen.emit(choice)
        self.accept()

    def _folder(self) -> None:
        path = os.environ.get("MASKBENCH_TEST_PICK") or QFileDialog.getExistingDirectory(
            self, "Folder of crops (images with same-stem masks, images/ + masks/, or COCO JSON)")
        if path:
            self.path = path
            self._choose("folder")

    def _model(self) -> None:
        self.kind = self.kind_box.currentText()
        path = os.environ.get("MASKBENCH_TEST_PICK") or QFileDialog.getOpenFileName(
            self, f"{self.kind.capitalize()} checkpoint", "",
            "Models (*.pt *.pth *.onnx);;All files (*)")[0]
        if path:
            self.path = path
            self._choose("model")


def unique_project_dir(base: Path, name: str) -> Path:
    d = base / name
    n = 1
    while d.exists():
        n += 1
        d = base / f"{name}-{n}"
    return d
