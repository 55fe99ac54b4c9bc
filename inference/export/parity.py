"""Parity of an export against PyTorch, and accuracy against ground truth, on real crops.

Both are measured on the merged graph's outputs: `mask_logits` (B, 1, h, w) at the model's mask resolution and
`score` (B, 1). Parity compares masks (logits > 0) pooled over all crops (intersection and union summed, so a tiny
defect does not dominate) and the logits themselves (max absolute difference, Pearson correlation): a model whose
masks happen to be empty still has to match logit for logit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference.export.calibration import Crop, Geometry, logits_to_image, model_inputs

# Bounds an export must meet against PyTorch, or it is marked failed and not shipped.
PARITY_BOUNDS: dict[str, dict[str, float]] = {
    "fp32": {"iou": 0.99, "corr": 0.9999},
    "fp16": {"iou": 0.98, "corr": 0.999},
    "int8": {"iou": 0.90, "corr": 0.97},
    "int8_weight": {"iou": 0.90, "corr": 0.97},
}

Runner = Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]


@dataclass
class Parity:
    iou: float  # pooled mask IoU
    mean_iou: float
    min_iou: float
    max_abs: float  # max |logit difference|
    mean_abs: float
    corr: float  # Pearson correlation of all logits
    score_max_abs: float
    n: int
    nontrivial: int  # crops whose reference mask is neither empty nor full

    def passes(self, precision: str, bounds: dict[str, dict[str, float]] | None = None) -> bool:
        b = (bounds or PARITY_BOUNDS)[precision]
        return self.iou >= b["iou"] and self.corr >= b["corr"] and bool(np.isfinite(self.max_abs))

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def compare(refs: Sequence[tuple[np.ndarray, np.ndarray]], outs: Sequence[tuple[np.ndarray, np.ndarray]]) -> Parity:
    inter = union = 0
    ious, ref_all, out_all, score_diff = [], [], [], []
    nontrivial = 0
    for (rl, rs), (ol, os_) in zip(refs, outs, strict=True):
        rl, ol = np.asarray(rl, np.float64), np.asarray(ol, np.float64)
        rm, om = rl > 0, ol > 0
        inter += int(np.logical_and(rm, om).sum())
        union += int(np.logical_or(rm, om).sum())
        ious.append(_iou(rm, om))
        nontrivial += int(0 < rm.sum() < rm.size)
        ref_all.append(rl.ravel())
        out_all.append(ol.ravel())
        score_diff.append(float(np.max(np.abs(np.asarray(rs, np.float64) - np.asarray(os_, np.float64)))))
    r, o = np.concatenate(ref_all), np.concatenate(out_all)
    diff = np.abs(r - o)
    corr = float(np.corrcoef(r, o)[0, 1]) if r.std() > 0 and o.std() > 0 else float(np.allclose(r, o))
    return Parity(
        iou=1.0 if union == 0 else inter / union,
        mean_iou=float(np.mean(ious)), min_iou=float(np.min(ious)),
        max_abs=float(diff.max()) if np.isfinite(diff).all() else float("inf"), mean_abs=float(diff.mean()),
        corr=corr if np.isfinite(corr) else 0.0, score_max_abs=max(score_diff), n=len(refs), nontrivial=nontrivial,
    )


class OrtRunner:
    """A real ONNX Runtime CPU session on the merged graph; returns (logits (h, w), score) of the first mask."""

    def __init__(self, path: Path | str, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run_batch(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        logits, score = self.session.run(None, {k: feeds[k] for k in self.input_names})
        return logits, score

    def __call__(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        logits, score = self.run_batch(feeds)
        return logits[0, 0], score[0]


def run_all(runner: Runner, crops: Sequence[Crop], geom: Geometry,
            progress: Callable[[int, int], None] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for i, crop in enumerate(crops):
        out.append(runner(model_inputs(crop, geom)))
        if progress:
            progress(i + 1, len(crops))
    return out


def accuracy(results: Sequence[tuple[np.ndarray, np.ndarray]], crops: Sequence[Crop], geom: Geometry) -> dict[str, Any]:
    """IoU against ground truth at the original image size, for crops with a non-empty ground truth."""
    per_class: dict[str, list[float]] = {}
    inter = union = 0
    for (logits, _score), crop in zip(results, crops, strict=True):
        if crop.gt is None or not crop.gt.any():
            continue
        pred = logits_to_image(logits, geom, crop, crop.gt.shape) > 0
        per_class.setdefault(crop.defect_class, []).append(_iou(pred, crop.gt))
        inter += int(np.logical_and(pred, crop.gt).sum())
        union += int(np.logical_or(pred, crop.gt).sum())
    all_ious = [v for vs in per_class.values() for v in vs]
    return {
        "iou": float(np.mean(all_ious)) if all_ious else None,
        "pooled_iou": (inter / union) if union else None,
        "n": len(all_ious),
        "per_class": {c: round(float(np.mean(v)), 4) for c, v in sorted(per_class.items())},
    }


def parity_crops(crops: Sequence[Crop], n: int) -> list[Crop]:
    """Up to n labelled defect crops, round-robin over classes (deterministic: input order within a class)."""
    by_class: dict[str, list[Crop]] = {}
    for c in crops:
        if c.gt is not None and c.gt.any():
            by_class.setdefault(c.defect_class, []).append(c)
    out: list[Crop] = []
    i = 0
    while len(out) < n and any(i < len(v) for v in by_class.values()):
        for cls in sorted(by_class):
            if i < len(by_class[cls]) and len(out) < n:
                out.append(by_class[cls][i])
        i += 1
    return out
