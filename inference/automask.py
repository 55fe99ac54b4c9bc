"""Automatic masks for a crop with no prompts (seed 000): a grid of single-point prompts, SAM-style filtering.

Each grid point is decoded on the crop's one embedding (batched prompts, so this costs one encoder pass plus
cheap decoder calls). Candidates are kept when the model's predicted score and the stability score (IoU of the mask
thresholded at +offset and -offset: a mask whose extent depends on the exact threshold is a guess) pass their
thresholds, then de-duplicated with non-maximum suppression on mask IoU, best score first. Numpy only, so it runs
on any backend (torch or ONNX Runtime).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference.prompts import grid_points
from inference.segmenter import Embedding, Segmenter


@dataclass
class AutoMask:
    mask: np.ndarray  # bool (H, W)
    score: float  # the model's predicted quality
    stability: float
    point: tuple[float, float]  # the grid prompt that produced it (x, y), to reproduce it
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (inclusive)
    area: int
    meta: dict[str, Any] = field(default_factory=dict)


def stability_score(logits: np.ndarray, threshold: float = 0.0, offset: float = 1.0) -> float:
    hi = (logits > threshold + offset).sum()
    lo = (logits > threshold - offset).sum()
    return float(hi / lo) if lo > 0 else 0.0


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0, 0, 0, 0
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = ix * iy
    ua = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return inter / ua if ua > 0 else 0.0


def nms(cands: list[AutoMask], iou_thresh: float) -> list[AutoMask]:
    """Greedy NMS on mask IoU (boxes first as a cheap reject: disjoint boxes cannot overlap)."""
    kept: list[AutoMask] = []
    for c in sorted(cands, key=lambda m: (m.score, m.stability), reverse=True):
        dup = False
        for k in kept:
            if _box_iou(c.bbox, k.bbox) == 0.0:
                continue
            inter = np.logical_and(c.mask, k.mask).sum()
            union = np.logical_or(c.mask, k.mask).sum()
            if union and inter / union > iou_thresh:
                dup = True
                break
        if not dup:
            kept.append(c)
    return kept


def generate_masks(
    segmenter: Segmenter,
    image: np.ndarray,
    embedding: Embedding | None = None,
    points_per_side: int = 16,
    pred_score_thresh: float = 0.7,
    stability_thresh: float = 0.8,
    stability_offset: float = 1.0,
    nms_thresh: float = 0.7,
    min_area: int = 4,
    max_area_frac: float = 0.95,
) -> list[AutoMask]:
    """Masks found in `image` with no prompt, best first. Thresholds default to SAM's spirit, slightly looser
    (SAM's 0.88 / 0.95 are tuned for natural images with a trained model). `embedding`: the crop's, when the
    caller has it (from the embedding cache); otherwise `image` is embedded here."""
    if embedding is None:
        embedding = segmenter.embed(image)
    h, w = embedding.orig_hw
    pts = grid_points((h, w), points_per_side)
    prompts = [(p[None, :], np.ones(1, np.int32)) for p in pts]
    decoded = segmenter.decode_prompts(embedding, prompts)
    cands: list[AutoMask] = []
    limit = max_area_frac * h * w
    for p, d in zip(pts, decoded):
        if d.score < pred_score_thresh:
            continue
        stab = stability_score(d.logits, 0.0, stability_offset)
        if stab < stability_thresh:
            continue
        mask = d.logits > 0
        area = int(mask.sum())
        if area < min_area or area > limit:
            continue
        cands.append(AutoMask(mask=mask, score=float(d.score), stability=stab, point=(float(p[0]), float(p[1])),
                              bbox=mask_box(mask), area=area))
    return nms(cands, nms_thresh)
