"""The GUI's Models > Predict and flag: the project's active teacher and student predict every crop, then the
teacher/student disagreements are flagged, as `maskbench predict` followed by `maskbench flag` do.

Why one call: a QA engineer who imported a teacher and a student wants the review queue filled, with one progress
bar and one Stop. Each prediction is its own transaction (inference.batch), so a stop keeps what was done and the
next run resumes where it stopped; flagging runs only after every model finished, so a stopped run flags nothing
(the queue keeps its earlier records). Qt-free: the window runs it in a worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inference.batch import PredictReport, predict_project
from inference.errors import ModelError, NoActiveModel
from inference.registry import PRECOMPUTED_BACKEND, active_model
from review.flagging import FlagError, FlagReport, flag
from store.config import threshold

MODEL_CHOICES = {"both": ("teacher", "student"), "teacher": ("teacher",), "student": ("student",)}
PROMPT_CHOICES = ("saliency", "ground_truth", "teacher")
PHASE_STEPS = 1000  # progress units per phase (each model's predictions, then flagging)


@dataclass(frozen=True)
class PredictFlagOptions:
    models: str = "both"  # a MODEL_CHOICES key
    prompts: str = "saliency"  # the predict command's --prompts (automatic masks stay on the CLI)
    teacher_flip_views: int = 1  # mirror views averaged for the teacher; the student predicts as it will ship
    device: str = "cpu"
    batch_size: int = 8


@dataclass
class PredictFlagReport:
    predictions: list[PredictReport] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why a model did not predict
    flagging: FlagReport | None = None  # None: stopped before flagging
    cancelled: bool = False

    def summary(self) -> str:
        parts = [f"{r.kind}: {r.predicted} predicted, {r.already} already done, {len(r.failed)} failed"
                 for r in self.predictions]
        parts += self.skipped
        if self.flagging is not None:
            f = self.flagging
            parts.append(f"flagged {f.flagged_total} of {f.pairs_total} pairs (IoU < {1 - f.threshold:g})")
        if self.cancelled:
            parts.append("stopped: the predictions so far are kept, a rerun resumes")
        return "; ".join(parts)


def predict_and_flag(project: Any, options: PredictFlagOptions, *,
                     progress: Callable[[int, int], None] | None = None,
                     cancel: threading.Event | None = None) -> PredictFlagReport:
    if options.models not in MODEL_CHOICES:
        raise ValueError(f"models must be one of {', '.join(MODEL_CHOICES)}, not {options.models!r}")
    if options.prompts not in PROMPT_CHOICES:
        raise ValueError(f"prompts must be one of {', '.join(PROMPT_CHOICES)}, not {options.prompts!r}")
    if options.prompts == "teacher" and "teacher" in MODEL_CHOICES[options.models]:
        raise ModelError("the teacher's clicks prompt the student: choose the student only")
    report = PredictFlagReport()
    kinds: list[str] = []
    for kind in MODEL_CHOICES[options.models]:
        try:
            info = active_model(project, kind)
        except NoActiveModel:
            report.skipped.append(f"no active {kind}")
            continue
        if info.backend == PRECOMPUTED_BACKEND:
            report.skipped.append(f"{kind} '{info.name}': precomputed masks only on this install")
            continue
        kinds.append(kind)
    if not kinds:
        raise NoActiveModel("no teacher or student model can predict here; import one (File > Import …) first")
    phases = len(kinds) + 1

    def phase(i: int) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, total: progress(i * PHASE_STEPS + (PHASE_STEPS * done // total if total else PHASE_STEPS),
                                            phases * PHASE_STEPS)

    for i, kind in enumerate(kinds):
        rep = predict_project(project, kind, device=options.device, batch_size=options.batch_size,
                              prompt_source=options.prompts, progress=phase(i), cancel=cancel,
                              flip_views=options.teacher_flip_views if kind == "teacher" else 1)
        report.predictions.append(rep)
        if rep.cancelled:
            report.cancelled = True
            return report
    try:
        report.flagging = flag(project.db, threshold(project.config), progress=phase(len(kinds)))
    except FlagError as exc:  # e.g. only one side has predictions yet: the predictions stand, the summary says why
        report.skipped.append(f"not flagged: {exc}")
    if progress is not None:
        progress(phases * PHASE_STEPS, phases * PHASE_STEPS)
    return report
