"""Everything the review view shows for one crop, read in one short transaction (in a worker thread).

Teacher and student masks are those the latest disagreement record compared (what the IoU in the queue refers
to), else the sample's latest mask of that source; the corrected mask is the one the standing human verdict
saved (review.verdicts decides what stands). Read-only: writes go through review.verdicts.

Qt-free (moved from widgets/): review.session.ReviewSession loads and caches crops with it, under test without Qt.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select

from review.verdicts import corrected_masks, latest_verdicts
from store import rle
from store.db import Database
from store.images import load_image
from store.schema import Disagreement, Mask, MaskSource, Prediction, Sample, VerdictAuthorKind, VerdictKind


@dataclass
class SampleData:
    sample_id: int
    path: str
    defect_class: str
    split: str | None
    image: np.ndarray  # HxWx3 uint8 RGB
    masks: dict[str, np.ndarray | None]  # teacher, student, gt, corrected
    metrics: dict[str, float | None] = field(default_factory=dict)
    flagged: bool = False
    vlm: dict[str, Any] | None = None  # verdict, confidence, reason, author, id (of the VLM verdict row)
    human: str | None = None  # standing human verdict
    sha256: str = ""
    error: str | None = None


def _mask_of_prediction(s: Any, prediction_id: int | None) -> np.ndarray | None:
    if prediction_id is None:
        return None
    m = s.scalar(select(Mask).join(Prediction, Prediction.mask_id == Mask.id).where(Prediction.id == prediction_id))
    return rle.decode(m.rle) if m is not None else None


def _latest_mask(s: Any, sample_id: int, source: MaskSource) -> np.ndarray | None:
    m = s.scalar(select(Mask).where(Mask.sample_id == sample_id, Mask.source == source).order_by(Mask.id.desc())
                 .limit(1))
    return rle.decode(m.rle) if m is not None else None


def load_sample(db: Database, sample_id: int) -> SampleData:
    with db.session() as s:
        smp = s.get(Sample, sample_id)
        if smp is None:
            raise KeyError(f"sample {sample_id} not found")
        d = s.scalar(select(Disagreement).where(Disagreement.sample_id == sample_id)
                     .order_by(Disagreement.id.desc()).limit(1))
        teacher = student = None
        metrics: dict[str, float | None] = {}
        if d is not None:
            teacher = _mask_of_prediction(s, d.teacher_prediction_id)
            student = _mask_of_prediction(s, d.student_prediction_id)
            metrics = {"iou_ts": d.iou_ts, "dice_ts": d.dice_ts, "boundary_f": d.boundary_f,
                       "iou_teacher_gt": d.iou_teacher_gt, "iou_student_gt": d.iou_student_gt}
        if teacher is None:
            teacher = _latest_mask(s, sample_id, MaskSource.TEACHER)
        if student is None:
            student = _latest_mask(s, sample_id, MaskSource.STUDENT)
        gt = _latest_mask(s, sample_id, MaskSource.GROUND_TRUTH)
        hv = latest_verdicts(s, VerdictAuthorKind.HUMAN, [sample_id]).get(sample_id)
        corrected = None
        mid = corrected_masks(s, [sample_id]).get(sample_id)
        if mid is not None and hv is not None and hv.verdict == VerdictKind.CORRECTED:
            m = s.get(Mask, mid)
            corrected = rle.decode(m.rle) if m is not None else None
        vv = latest_verdicts(s, VerdictAuthorKind.VLM, [sample_id]).get(sample_id)
        vlm = None
        if vv is not None:
            vlm = {"verdict": vv.verdict.value, "confidence": vv.confidence, "reason": vv.reason or "",
                   "author": vv.author, "id": vv.id}
        path, cls, split, sha = smp.path, smp.defect_class, smp.split, smp.sha256
        flagged = bool(d.flagged) if d is not None else False
        human = hv.verdict.value if hv is not None else None
    error = None
    try:
        image = load_image(path)
    except Exception as exc:  # noqa: BLE001 - a missing or broken file shows as a grey crop with the reason
        error = f"{exc.__class__.__name__}: {exc}"
        shape = next((m.shape for m in (gt, teacher, student) if m is not None), (256, 256))
        image = np.full((*shape, 3), 64, np.uint8)
    masks = {"teacher": teacher, "student": student, "gt": gt, "corrected": corrected}
    for k, m in masks.items():  # never draw a mask of the wrong size over the crop
        if m is not None and m.shape != image.shape[:2]:
            masks[k] = None
    return SampleData(sample_id, path, cls, split, image, masks, metrics, flagged, vlm, human, sha, error)


class SampleCache:
    """LRU of loaded samples (current, previous and prefetched ones)."""

    def __init__(self, capacity: int = 12) -> None:
        self.capacity = capacity
        self._d: OrderedDict[int, SampleData] = OrderedDict()

    def get(self, sample_id: int) -> SampleData | None:
        v = self._d.get(sample_id)
        if v is not None:
            self._d.move_to_end(sample_id)
        return v

    def put(self, data: SampleData) -> None:
        self._d[data.sample_id] = data
        self._d.move_to_end(data.sample_id)
        while len(self._d) > self.capacity:
            self._d.popitem(last=False)

    def drop(self, sample_id: int) -> None:
        self._d.pop(sample_id, None)

    def __contains__(self, sample_id: int) -> bool:
        return sample_id in self._d

    def clear(self) -> None:
        self._d.clear()
