"""First-run dialog: shown by run_gui when there is no last project and the user has not dismissed it.

Offers the demo project, a folder of crops (a new project under the user data folder, ingested in a worker with
progress in the status bar) or importing a model. It shows the environment checks it is given, each as one plain
line; the checks themselves (GPU, models, data folder) need app's folders and live in `app.first_run`, which the
window calls before opening the dialog: widgets never import app/ (an import-linter contract, pyproject.toml).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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


class FirstRunDialog(QDialog):
    """choice: "demo" | "folder" (with .path) | "model" (with .path, .kind) | "" (closed)."""

    chosen = Signal(str)

    def __init__(self, parent=None, checks: list[Check] | None = None) -> None:  # noqa: ANN001
        """checks: what `app.first_run.run_checks()` found (none shown when not given)."""
        super().__init__(parent)
        self.setWindowTitle("Welcome to maskbench")
        self.choice = ""
        self.path: str | None = None
        self.kind = "teacher"
        self.checks = list(checks or [])
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
