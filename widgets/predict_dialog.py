"""Models > Predict and flag…: which models predict, from which prompts, on which device, and whether the teacher
averages mirror views. The window runs inference.predict_flag with the answer in a worker (status bar progress,
Models > Stop predicting)."""

from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QVBoxLayout, QWidget

from inference.predict_flag import MODEL_CHOICES, PROMPT_CHOICES, PredictFlagOptions

MODEL_TITLES = {"both": "teacher and student", "teacher": "teacher only", "student": "student only"}
PROMPT_TITLES = {"saliency": "saliency click (no labels needed)", "ground_truth": "a click inside the ground truth",
                 "teacher": "the teacher's clicks (student only)"}
VIEW_TITLES = {1: "off", 2: "2 (left-right)", 4: "4 (both mirrors)"}  # also the Training panel's teacher mirror views


def _combo(items: dict, current: object) -> QComboBox:
    box = QComboBox()
    for value, title in items.items():
        box.addItem(title, value)
    box.setCurrentIndex(box.findData(current))
    return box


class PredictDialog(QDialog):
    def __init__(self, parent: QWidget | None = None, devices: tuple[str, ...] = ("cpu", "cuda")) -> None:
        super().__init__(parent)
        self.setWindowTitle("Predict and flag")
        d = PredictFlagOptions()
        self.models = _combo({k: MODEL_TITLES[k] for k in MODEL_CHOICES}, d.models)
        self.prompts = _combo({k: PROMPT_TITLES[k] for k in PROMPT_CHOICES}, d.prompts)
        self.views = _combo(VIEW_TITLES, d.teacher_flip_views)
        self.views.setToolTip("Average the teacher's logits over the crop and its mirrors: +0.02-0.03 IoU at one "
                              "click on magnetic-tile, at 2-4x the teacher's compute. The student predicts as it "
                              "will ship.")
        self.device = _combo({dev: dev for dev in devices}, d.device)
        form = QFormLayout()
        form.addRow("Models", self.models)
        form.addRow("Prompts", self.prompts)
        form.addRow("Teacher mirror views", self.views)
        form.addRow("Device", self.device)
        note = QLabel("Crops a model already predicted with these prompts are skipped; flagging runs when every "
                      "model is done. Stop keeps what was predicted.")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(buttons)

    def options(self) -> PredictFlagOptions:
        return PredictFlagOptions(models=self.models.currentData(), prompts=self.prompts.currentData(),
                                  teacher_flip_views=int(self.views.currentData()), device=self.device.currentData())
