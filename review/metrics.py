"""Mask agreement metrics: IoU, Dice and the boundary F-score, with the empty-mask cases defined.

Two empty masks agree perfectly (IoU = Dice = boundary F = 1): a teacher and a student that both find no defect on
a defect-free crop must not be flagged. One empty mask against a non-empty one scores 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

BOUNDARY_TOLERANCE = 0.008  # fraction of the image diagonal, as in the DAVIS boundary measure


def _check(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    return a.astype(bool, copy=False), b.astype(bool, copy=False)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = _check(a, b)
    union = int(np.count_nonzero(a | b))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(a & b)) / union


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = _check(a, b)
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / total


def boundary(mask: np.ndarray) -> np.ndarray:
    """One-pixel inner boundary of a mask (pixels of the mask with a 4-neighbour outside it or at the border)."""
    m = mask.astype(np.uint8, copy=False)
    padded = cv2.copyMakeBorder(m, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8))[1:-1, 1:-1]
    return (m > 0) & (eroded == 0)


def tolerance_px(shape: tuple[int, ...], fraction: float = BOUNDARY_TOLERANCE) -> float:
    h, w = shape[:2]
    return max(1.0, math.ceil(fraction * math.hypot(h, w)))


def boundary_f(a: np.ndarray, b: np.ndarray, tolerance: float | None = None) -> float:
    """Boundary F-score: harmonic mean of the share of a's contour within `tolerance` px of b's, and vice versa."""
    a, b = _check(a, b)
    ba, bb = boundary(a), boundary(b)
    na, nb = int(np.count_nonzero(ba)), int(np.count_nonzero(bb))
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    tol = tolerance_px(a.shape) if tolerance is None else tolerance
    # distanceTransform measures the distance to the nearest zero pixel: zero out each boundary.
    dist_to_b = cv2.distanceTransform((~bb).astype(np.uint8), cv2.DIST_L2, 3)
    dist_to_a = cv2.distanceTransform((~ba).astype(np.uint8), cv2.DIST_L2, 3)
    precision = float(np.count_nonzero(dist_to_b[ba] <= tol)) / na
    recall = float(np.count_nonzero(dist_to_a[bb] <= tol)) / nb
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class PairMetrics:
    iou_ts: float
    dice_ts: float
    boundary_f: float
    iou_teacher_gt: float | None = None
    iou_student_gt: float | None = None
    dice_teacher_gt: float | None = None
    dice_student_gt: float | None = None


def pair_metrics(teacher: np.ndarray, student: np.ndarray, gt: np.ndarray | None = None) -> PairMetrics:
    """Teacher vs student, and each against the ground truth when there is one."""
    extra: dict[str, float] = {}
    if gt is not None:
        extra = {
            "iou_teacher_gt": iou(teacher, gt),
            "iou_student_gt": iou(student, gt),
            "dice_teacher_gt": dice(teacher, gt),
            "dice_student_gt": dice(student, gt),
        }
    return PairMetrics(iou(teacher, student), dice(teacher, student), boundary_f(teacher, student), **extra)


def is_flagged(iou_ts: float, threshold: float) -> bool:
    """A sample goes to review when teacher and student overlap less than 1 - threshold (IoU)."""
    return iou_ts < 1.0 - threshold
