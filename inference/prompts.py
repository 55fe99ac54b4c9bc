"""Where point prompts come from: a cheap saliency pass, a ground-truth mask, a human, or a grid.

Every function returns an `inference.segmenter.Prompt` whose `source` is what Prediction.prompt_source stores, and
every one is deterministic (same crop, same seed -> same points), so a stored prediction can be replayed exactly and
the teacher and the student of one sample always see the same clicks.

Saliency (seed 001: "a cheap saliency head or thresholding pass provides reliable candidate centers"): defects on
textured surfaces differ from their local background, so the map is |blur_small - blur_large| of the grey crop
and its strongest peaks become positive points (a peak lies on the defect itself, even for a thin crack, where a
region centroid could fall outside it). It finds the defect in roughly two thirds of magnetic-tile crops; the rest
need a human click, which is what the review loop is for.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from inference.segmenter import Prompt

PROMPT_SOURCES = ("saliency", "ground_truth", "human", "grid")


def saliency_map(image: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1]: local contrast of the crop against a smooth background estimate.

    Tuned on magnetic-tile crops (first 40 of each defect class; the tests check held-out ones): the grinding
    texture runs in straight lines, so the per-column and per-row median contrast is removed; defects are mostly
    darker than the surface, so dark deviations count double; the tile edge is a strong but meaningless step, so
    responses fade towards the border."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    grey = grey.astype(np.float32)
    h, w = grey.shape
    side = float(min(h, w))
    bg_sigma = max(1.0, side / 12.0)
    fine = cv2.GaussianBlur(grey, (0, 0), sigmaX=max(1.0, side / 160.0))
    background = cv2.GaussianBlur(grey, (0, 0), sigmaX=bg_sigma)
    d = fine - background
    d = d - np.median(d, axis=0, keepdims=True)  # vertical stripes
    d = d - np.median(d, axis=1, keepdims=True)  # horizontal stripes
    sal = np.abs(d) + np.maximum(-d, 0.0)
    band = max(1.0, bg_sigma)
    ry = np.minimum(np.arange(h), np.arange(h)[::-1]).astype(np.float32)
    rx = np.minimum(np.arange(w), np.arange(w)[::-1]).astype(np.float32)
    wy = np.clip(ry / band, 0, 1) * 0.7 + 0.3
    wx = np.clip(rx / band, 0, 1) * 0.7 + 0.3
    sal = sal * wy[:, None] * wx[None, :]
    top = float(sal.max())
    return (sal / top).astype(np.float32) if top > 0 else sal.astype(np.float32)


def saliency_prompt(image: np.ndarray, max_points: int = 1, min_relative_peak: float = 0.7) -> Prompt:
    """Positive points on the strongest saliency peaks: the global maximum, then further peaks at least
    `min_relative_peak` as strong and at least 1/8 of the crop side away from the points already taken. One point
    by default: an extra point on a texture peak would pull SAM's mask onto the texture."""
    sal = saliency_map(image)
    h, w = sal.shape
    radius = max(2, int(min(h, w) / 8))
    work = sal.copy()
    points: list[tuple[float, float]] = []
    peaks: list[float] = []
    first = float(work.max())
    while len(points) < max(1, max_points):
        y, x = np.unravel_index(int(np.argmax(work)), work.shape)
        v = float(work[y, x])
        if points and (v <= 0 or v < min_relative_peak * first):
            break
        points.append((float(x), float(y)))
        peaks.append(round(v, 4))
        cv2.circle(work, (int(x), int(y)), radius, 0.0, -1)
    return Prompt(
        points=np.array(points, np.float32).reshape(-1, 2),
        labels=np.ones(len(points), np.int32),
        source="saliency",
        meta={"peaks": peaks},
    )


def mask_prompt(
    mask: np.ndarray, n_positive: int = 1, n_negative: int = 0, seed: int | Sequence[int] = 0
) -> Prompt:
    """Points sampled from a ground-truth mask, deterministic for a seed (use e.g. (seed, sample_id)).

    Positives are drawn from the mask's interior (pixels at least a third of the way to the mask's deepest point, so
    they are not on an ambiguous edge), negatives from the background. An empty mask (a defect-free crop) gives
    negative points only: that is the honest prompt for "nothing here"."""
    mask = np.asarray(mask).astype(bool)
    rng = np.random.default_rng(list(seed) if isinstance(seed, (list, tuple)) else seed)
    pts: list[tuple[float, float]] = []
    lbs: list[int] = []
    if mask.any() and n_positive > 0:
        dist = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
        interior = dist >= max(1.0, dist.max() / 3.0)
        ys, xs = np.nonzero(interior if interior.any() else mask)
        idx = rng.choice(len(xs), size=min(n_positive, len(xs)), replace=False)
        pts += [(float(xs[i]), float(ys[i])) for i in np.sort(idx)]
        lbs += [1] * len(idx)
    want_neg = n_negative if mask.any() else max(1, n_negative)
    if want_neg > 0:
        ys, xs = np.nonzero(~mask)
        if len(xs):
            idx = rng.choice(len(xs), size=min(want_neg, len(xs)), replace=False)
            pts += [(float(xs[i]), float(ys[i])) for i in np.sort(idx)]
            lbs += [0] * len(idx)
    return Prompt(
        points=np.array(pts, np.float32).reshape(-1, 2),
        labels=np.array(lbs, np.int32),
        source="ground_truth",
        meta={"seed": list(seed) if isinstance(seed, (list, tuple)) else seed},
    )


def human_prompt(points: Sequence[Sequence[float]], labels: Sequence[int]) -> Prompt:
    """Clicks from the GUI, validated (labels must be 0/1 and match the points)."""
    pts = np.asarray(points, np.float32).reshape(-1, 2)
    lbs = np.asarray(labels, np.int32).reshape(-1)
    if len(pts) != len(lbs):
        raise ValueError(f"{len(pts)} points but {len(lbs)} labels")
    if len(lbs) and not np.isin(lbs, (0, 1)).all():
        raise ValueError("labels must be 1 (positive) or 0 (negative)")
    return Prompt(points=pts, labels=lbs, source="human")


def grid_points(orig_hw: tuple[int, int], points_per_side: int = 16) -> np.ndarray:
    """(n*n, 2) cell centres over the crop, SAM's automatic-mask grid, in original pixels."""
    h, w = orig_hw
    off = 1.0 / (2 * points_per_side)
    ticks = np.linspace(off, 1 - off, points_per_side, dtype=np.float32)
    xs, ys = np.meshgrid(ticks * w, ticks * h)
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)


def prompt_to_json(prompt: Prompt) -> tuple[list[list[float]], list[int]]:
    """What goes into Prediction.points / .labels."""
    return (
        [[round(float(x), 3), round(float(y), 3)] for x, y in np.asarray(prompt.points).reshape(-1, 2)],
        [int(v) for v in np.asarray(prompt.labels).reshape(-1)],
    )


def prompt_from_json(points: Sequence[Sequence[float]], labels: Sequence[int], source: str) -> Prompt:
    """Rebuild the prompt of a stored prediction (to reproduce it)."""
    return Prompt(points=np.asarray(points, np.float32).reshape(-1, 2), labels=np.asarray(labels, np.int32),
                  source=source)
