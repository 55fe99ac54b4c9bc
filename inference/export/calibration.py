"""The domain calibration set for INT8: real crops of the project, stratified by defect class, never random images.

Selection is deterministic: within a class, crops are ordered by sha256(seed:content sha256) (as the splits are), so
the same project and settings always give the same set, and its hash (over the mode and the ordered content
hashes) goes into the model card. Mode "hard" keeps the per-class quotas but fills each quota with the hardest crops
first: flagged or low-IoU teacher/student disagreements, and crops a judge or a human scored as bad.

Calibration crops come from the train split (validation crops measure the export's accuracy, so they stay out);
a project without splits uses every crop.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from sqlalchemy import func, select

from store import rle as rle_mod
from store.db import Database
from store.errors import UserError
from store.images import load_image
from store.schema import Disagreement, JudgeCall, Mask, MaskSource, Sample, Verdict, VerdictKind

MODES = ("stratified", "hard")
IMAGENET_MEAN = (123.675, 116.28, 103.53)  # inference.preprocess.MEAN / STD, in 0..255 pixels
IMAGENET_STD = (58.395, 57.12, 57.375)


class CalibrationError(UserError):
    pass


@dataclass
class Crop:
    """One real crop with its ground truth and the prompt used for calibration, parity and accuracy."""

    sample_id: int | None
    sha256: str
    path: str
    defect_class: str
    gt: np.ndarray | None = None  # bool HxW at original size, None when unlabelled

    def image(self) -> np.ndarray:
        return load_image(self.path)


@dataclass
class CalibrationSet:
    mode: str
    crops: list[Crop]
    per_class: dict[str, int]
    hash: str
    requested: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.crops)

    def summary(self) -> dict[str, Any]:
        return {"mode": self.mode, "size": self.size, "requested": self.requested, "hash": self.hash,
                "per_class": dict(sorted(self.per_class.items())), **self.meta}


def _order_key(sha: str, seed: int) -> str:
    return hashlib.sha256(f"calib:{seed}:{sha}".encode()).hexdigest()


def set_hash(mode: str, shas: Sequence[str]) -> str:
    h = hashlib.sha256(f"maskbench-calibration-v1:{mode}\n".encode())
    for s in shas:
        h.update(s.encode() + b"\n")
    return h.hexdigest()


def allocate(counts: dict[str, int], n: int) -> dict[str, int]:
    """Proportional quotas (largest remainder) summing to min(n, total), at least one per class when n allows."""
    total = sum(counts.values())
    if n >= total:
        return dict(counts)
    classes = sorted(counts)
    quota = {c: 0 for c in classes}
    if n >= len(classes):
        for c in classes:
            quota[c] = 1 if counts[c] else 0
    rest = n - sum(quota.values())
    avail = {c: counts[c] - quota[c] for c in classes}
    avail_total = sum(avail.values())
    if rest > 0 and avail_total > 0:
        exact = {c: rest * avail[c] / avail_total for c in classes}
        for c in classes:
            quota[c] += int(exact[c])
        left = n - sum(quota.values())
        order = sorted(classes, key=lambda c: (-(exact[c] - int(exact[c])), c))
        for c in order:
            if left <= 0:
                break
            if quota[c] < counts[c]:
                quota[c] += 1
                left -= 1
    return quota


def hardness(db: Database) -> dict[int, float]:
    """Per sample, a score in [0, 1]: 1 - lowest teacher/student IoU, raised by flags and bad judge/human scores."""
    score: dict[int, float] = defaultdict(float)
    with db.session() as s:
        for sid, min_iou, flagged in s.execute(
            select(Disagreement.sample_id, func.min(Disagreement.iou_ts), func.max(Disagreement.flagged))
            .group_by(Disagreement.sample_id)
        ):
            score[sid] = max(score[sid], 1.0 - float(min_iou if min_iou is not None else 1.0))
            if flagged:
                score[sid] = max(score[sid], 0.5)
        bad = (VerdictKind.BOTH_BAD, VerdictKind.TEACHER_BETTER, VerdictKind.CORRECTED, VerdictKind.UNCERTAIN)
        for (sid,) in s.execute(select(Verdict.sample_id).where(Verdict.verdict.in_(bad)).distinct()):
            score[sid] = max(score[sid], 0.75)
        for sid, label in s.execute(select(JudgeCall.sample_id, JudgeCall.label).where(JudgeCall.label.is_not(None))):
            score[sid] = max(score[sid], 0.9 if label == "both_bad" else 0.6)
    return dict(score)


def _gt_masks(db: Database, ids: list[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    with db.session() as s:
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = s.execute(
                select(Mask.sample_id, Mask.rle, Mask.source).where(
                    Mask.sample_id.in_(chunk), Mask.source.in_((MaskSource.GROUND_TRUTH, MaskSource.CORRECTED))
                ).order_by(Mask.id)
            ).all()
            for sid, rle, source in rows:
                # a human correction overrides the ingested ground truth
                if source == MaskSource.CORRECTED or sid not in out:
                    out[sid] = rle
    return out


def project_crops(db: Database, split: str | None, limit: int | None = None) -> list[Crop]:
    """Labelled crops of one split (None: all), in a stable order, with their ground truth."""
    with db.session() as s:
        q = select(Sample.id, Sample.sha256, Sample.path, Sample.defect_class)
        if split is not None:
            q = q.where(Sample.split == split)
        rows = s.execute(q.order_by(Sample.defect_class, Sample.id)).all()
    gts = _gt_masks(db, [r[0] for r in rows])
    crops = [Crop(sid, sha, path, cls, rle_mod.decode(gts[sid]) if sid in gts else None) for sid, sha, path, cls in rows]
    return crops[:limit] if limit else crops


def select_calibration(db: Database, n: int = 500, mode: str = "stratified", seed: int = 1234) -> CalibrationSet:
    if mode not in MODES:
        raise CalibrationError(f"calibration mode must be one of {', '.join(MODES)}, not {mode!r}")
    if n <= 0:
        raise CalibrationError("calibration needs at least one crop")
    with db.session() as s:
        rows = s.execute(select(Sample.id, Sample.sha256, Sample.path, Sample.defect_class, Sample.split)).all()
    if not rows:
        raise CalibrationError("the project has no crops to calibrate on: ingest a data set first")
    pool = [r for r in rows if r.split == "train"] or [r for r in rows if r.split not in ("val", "test")] or rows
    by_class: dict[str, list[Any]] = defaultdict(list)
    for r in pool:
        by_class[r.defect_class].append(r)
    hard = hardness(db) if mode == "hard" else {}
    for cls, items in by_class.items():
        items.sort(key=lambda r: (-hard.get(r.id, 0.0), _order_key(r.sha256, seed)))
    quota = allocate({c: len(v) for c, v in by_class.items()}, n)
    chosen = [r for c in sorted(by_class) for r in by_class[c][: quota[c]]]
    gts = _gt_masks(db, [r.id for r in chosen])
    crops = [Crop(r.id, r.sha256, r.path, r.defect_class, rle_mod.decode(gts[r.id]) if r.id in gts else None)
             for r in chosen]
    meta: dict[str, Any] = {"seed": seed, "source_split": pool[0].split if pool is not rows else "all"}
    if mode == "hard":
        meta["hard_crops"] = sum(1 for r in chosen if hard.get(r.id, 0.0) > 0)
    return CalibrationSet(mode, crops, {c: q for c, q in quota.items() if q}, set_hash(mode, [c.sha256 for c in crops]),
                          n, meta)


# --- prompts and preprocessing shared by calibration, parity and accuracy ------------------------------------


def prompt_for(mask: np.ndarray | None, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One positive click deterministic per crop: the interior point of the ground truth farthest from its edge
    (the crop centre when there is no defect). Returns points (1, 2) x/y in image pixels, labels (1,)."""
    h, w = hw
    if mask is None or not mask.any():
        return np.array([[w / 2.0, h / 2.0]], np.float32), np.ones(1, np.int64)
    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([[x + 0.5, y + 0.5]], np.float32), np.ones(1, np.int64)


@dataclass(frozen=True)
class Geometry:
    """How crops become the merged graph's input: `layout` "resize" (the square resize of students trained before
    issue 14, and of SAM 2) or "native" (the crop at `scale` times its own pixels on an S x S canvas; a crop larger
    than S is fed as the tile holding the click, as inference.layout decodes it)."""

    size: int
    layout: str = "resize"
    scale: float = 1.0

    @classmethod
    def of_student(cls, config: dict[str, Any], size: int) -> Geometry:
        return cls(int(size), str(config.get("layout", "resize")), float(config.get("scale", 1.0)))


def _tile(crop_hw: tuple[int, int], pts: np.ndarray, labels: np.ndarray, geom: Geometry) -> tuple[Any, int, np.ndarray]:
    from inference import layout as lay

    lo = lay.plan(crop_hw, geom.size, geom.scale)
    t, coords, _ = lay.tile_prompts(lo, pts, labels)[0]
    return lo, t, coords


def model_inputs(crop: Crop, geom: Geometry) -> dict[str, np.ndarray]:
    """The merged graph's inputs for one crop (batch of 1), with the runtime's conventions: image (1, 3, S, S)
    float32 RGB in [0, 255] (normalisation is inside the graph), point_coords (1, N, 2) in input pixels,
    point_labels (1, N) float32."""
    from inference import layout as lay
    from inference import preprocess as pp

    img = pp.as_rgb(crop.image())
    hw = (int(img.shape[0]), int(img.shape[1]))
    pts, labels = prompt_for(crop.gt, hw)
    if geom.layout == "native":
        lo, t, coords = _tile(hw, pts, labels, geom)
        canvas = lay.pixel_canvases(img, lo)[t].astype(np.float32)
        return {"image": np.ascontiguousarray(canvas.transpose(2, 0, 1))[None],
                "point_coords": coords[None].astype(np.float32), "point_labels": labels[None].astype(np.float32)}
    size = geom.size
    resized = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return {"image": np.ascontiguousarray(resized.transpose(2, 0, 1))[None],
            "point_coords": pp.points_to_input(pts, hw, size)[None].astype(np.float32),
            "point_labels": labels[None].astype(np.float32)}


def logits_to_image(logits: np.ndarray, geom: Geometry, crop: Crop, hw: tuple[int, int]) -> np.ndarray:
    """Mask logits at model resolution (h', w') -> logits at the original image size (as the runtime does)."""
    from inference import layout as lay
    from inference import preprocess as pp

    if geom.layout == "native":
        pts, labels = prompt_for(crop.gt, hw)
        lo, t, _ = _tile(hw, pts, labels, geom)
        return lay.stitch(lo, [(t, logits)])
    return pp.logits_to_original(logits, hw)


class CropReader:
    """onnxruntime.quantization.CalibrationDataReader over a calibration set (crops decoded lazily, one at a time).

    Defined as a plain iterator-with-get_next so this module imports without onnxruntime."""

    def __init__(self, calib: CalibrationSet, geom: Geometry, input_names: Sequence[str] | None = None,
                 progress: Any = None) -> None:
        self.calib = calib
        self.geom = geom
        self.input_names = list(input_names) if input_names else None
        self.progress = progress
        self._it: Iterator[Crop] = iter(calib.crops)
        self._done = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        crop = next(self._it, None)
        if crop is None:
            return None
        feeds = model_inputs(crop, self.geom)
        if self.input_names is not None:
            feeds = {k: v for k, v in feeds.items() if k in self.input_names}
        self._done += 1
        if self.progress is not None:
            self.progress(self._done, self.calib.size)
        return feeds

    def rewind(self) -> None:
        self._it = iter(self.calib.crops)
        self._done = 0

    def __len__(self) -> int:
        return len(self.calib.crops)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Read only crops[start:end] next: ONNX Runtime's sliced calibration (`CalibStridedMinMax`, see
        inference.export.quantize.quantize_qdq) walks the set this way."""
        self._it = iter(self.calib.crops[start_index:end_index])

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self.rewind()
        while (feeds := self.get_next()) is not None:
            yield feeds
