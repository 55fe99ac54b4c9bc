"""The five-line classical baseline: blur, subtract a background estimate, threshold.

A defect on a textured surface is a local deviation from its surroundings, so the oldest inspection trick is
d = blur(g, sigma_small) - blur(g, sigma_large) on the grey crop, then |d| above a threshold. Defects are often
darker (holes, cracks) or brighter (fray) than the surface, so the sign of d is a tuned choice too: dark only
(max(-d, 0)), bright only (max(d, 0)) or both (|d|). The distillation table needs this row to show what a learned
model adds over a few lines of OpenCV.

It uses no click: a whole-image method. Tuning is a grid search on the TRAIN crops with a defect, maximising their
mean IoU; the threshold is absolute (grey levels), not a per-image percentile, because defect areas range from a
pinhole to a quarter of the crop and a percentile would force the same area on every crop.

`ClassicalSegmenter` wraps the tuned parameters in the embed/decode interface, so the interactive evaluation and
prediction code can report it like any model (its mask does not change with clicks: honest for a method without
prompts). numpy + OpenCV only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence, Sized
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from inference.segmenter import Decoded, Embedding, Prompt

POLARITIES = ("dark", "bright", "both")
ProgressFn = Callable[[int, int], None]

DEFAULT_SIGMAS_SMALL = (0.0, 1.0, 2.0)
DEFAULT_SIGMAS_LARGE = (5.0, 10.0, 20.0, 40.0)
DEFAULT_THRESHOLD_STEP = 0.5  # grey levels; a power of two, so thresholds are exact in float32
DEFAULT_N_THRESHOLDS = 160  # 0.5 .. 80 grey levels


@dataclass(frozen=True)
class ClassicalParams:
    sigma_small: float  # 0 = no smoothing of the fine image
    sigma_large: float  # background estimate
    polarity: str  # dark | bright | both
    threshold: float  # grey levels on the polarity-aware |d| map

    def __post_init__(self) -> None:
        if self.polarity not in POLARITIES:
            raise ValueError(f"polarity must be one of {', '.join(POLARITIES)}, not {self.polarity!r}")
        if not 0 <= self.sigma_small < self.sigma_large:
            raise ValueError(f"need 0 <= sigma_small < sigma_large, got {self.sigma_small}, {self.sigma_large}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClassicalParams:
        return cls(float(data["sigma_small"]), float(data["sigma_large"]), str(data["polarity"]),
                   float(data["threshold"]))


def to_grey(image: np.ndarray) -> np.ndarray:
    """(H, W) float32 grey levels from an (H, W) grey or (H, W, 3) RGB crop."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
    return image.astype(np.float32)


def blur(grey: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; sigma 0 returns the image itself (cv2 would pick a sigma from the kernel size instead)."""
    if sigma <= 0:
        return grey
    return cv2.GaussianBlur(grey, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma))


def signed_difference(image: np.ndarray, sigma_small: float, sigma_large: float) -> np.ndarray:
    """d = blur(g, sigma_small) - blur(g, sigma_large): negative on dark defects, positive on bright ones."""
    grey = to_grey(image)
    return blur(grey, sigma_small) - blur(grey, sigma_large)


def polarity_map(d: np.ndarray, polarity: str) -> np.ndarray:
    """The defect map of one polarity: how far below (dark), above (bright) or away from (both) the background."""
    if polarity == "dark":
        return np.maximum(-d, 0.0)
    if polarity == "bright":
        return np.maximum(d, 0.0)
    if polarity == "both":
        return np.abs(d)
    raise ValueError(f"polarity must be one of {', '.join(POLARITIES)}, not {polarity!r}")


def defect_map(image: np.ndarray, params: ClassicalParams) -> np.ndarray:
    """(H, W) float32 defect strength in grey levels."""
    d = signed_difference(image, params.sigma_small, params.sigma_large)
    return polarity_map(d, params.polarity).astype(np.float32, copy=False)


def predict(image: np.ndarray, params: ClassicalParams) -> np.ndarray:
    """(H, W) bool defect mask of one crop."""
    return defect_map(image, params) > np.float32(params.threshold)


# --- tuning ---------------------------------------------------------------------------------------------------


def _exceed_counts(values: np.ndarray, gt: np.ndarray, step: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For thresholds t_k = k * step, k = 0..n: (#pixels with value > t_k, #those inside gt), in one pass.

    value > k*step  <=>  ceil(value/step) > k, so a bincount of c = ceil(value/step) (clipped to 0..n+1) and a
    suffix sum give every threshold at once, exactly, instead of one comparison per threshold."""
    c = np.clip(np.ceil(values / step), 0, n + 1).astype(np.intp).ravel()
    all_hist = np.bincount(c, minlength=n + 2)
    in_hist = np.bincount(c[gt.ravel()], minlength=n + 2)
    above_all = np.cumsum(all_hist[::-1])[::-1][1:]  # index k: #(c > k) = #(c >= k+1)
    above_in = np.cumsum(in_hist[::-1])[::-1][1:]
    return above_all, above_in


def _iou_curve(pred_area: np.ndarray, inter: np.ndarray, gt_area: int) -> np.ndarray:
    """IoU for every threshold from the areas; gt_area > 0 (crops without a defect are not tuned on)."""
    return inter / (gt_area + pred_area - inter)


def _image_scores(image: np.ndarray, gt: np.ndarray, sigmas_small: Sequence[float], sigmas_large: Sequence[float],
                  step: float, n: int) -> np.ndarray:
    """IoU of one crop for every (sigma_small, sigma_large, polarity, threshold) of the grid: shape
    (len(sigmas_small), len(sigmas_large), 3, n + 1); NaN for sigma pairs that are not sigma_small < sigma_large.
    Each blur is computed once per crop; dark and bright come from the two signs of one difference, and
    |d| > t is dark or bright (disjoint for t >= 0), so "both" is their sum."""
    grey = to_grey(image)
    if grey.shape != gt.shape:
        raise ValueError(f"image {grey.shape} and mask {gt.shape} differ in size")
    blurs = {s: blur(grey, s) for s in {*sigmas_small, *sigmas_large}}
    gt_area = int(np.count_nonzero(gt))
    out = np.full((len(sigmas_small), len(sigmas_large), len(POLARITIES), n + 1), np.nan)
    for i, ss in enumerate(sigmas_small):
        for j, sl in enumerate(sigmas_large):
            if not ss < sl:
                continue
            d = blurs[ss] - blurs[sl]
            dark_all, dark_in = _exceed_counts(-d, gt, step, n)
            bright_all, bright_in = _exceed_counts(d, gt, step, n)
            out[i, j, 0] = _iou_curve(dark_all, dark_in, gt_area)
            out[i, j, 1] = _iou_curve(bright_all, bright_in, gt_area)
            out[i, j, 2] = _iou_curve(dark_all + bright_all, dark_in + bright_in, gt_area)
    return out


def tune(
    items: Iterable[tuple[np.ndarray, np.ndarray]],
    progress: ProgressFn | None = None,
    sigmas_small: Sequence[float] = DEFAULT_SIGMAS_SMALL,
    sigmas_large: Sequence[float] = DEFAULT_SIGMAS_LARGE,
    threshold_step: float = DEFAULT_THRESHOLD_STEP,
    n_thresholds: int = DEFAULT_N_THRESHOLDS,
    total: int | None = None,
) -> tuple[ClassicalParams, float]:
    """Grid search for the parameters with the highest mean IoU over the crops that have a defect; returns
    (params, that mean IoU). Pass TRAIN crops only: the baseline is then evaluated on the test split like the
    models. Thresholds are k * threshold_step grey levels, k = 1..n_thresholds. `items` (image, gt_mask) may be
    a generator; each crop is read once."""
    if threshold_step <= 0 or n_thresholds < 1:
        raise ValueError("threshold_step must be positive and n_thresholds at least 1")
    if not any(s < l for s in sigmas_small for l in sigmas_large):
        raise ValueError("no sigma_small < sigma_large pair in the grid")
    if total is None:
        total = len(items) if isinstance(items, Sized) else 0
    total_scores: np.ndarray | None = None
    used = 0
    for done, (image, gt) in enumerate(items, start=1):
        gt = np.asarray(gt, bool)
        if gt.any():
            scores = _image_scores(image, gt, sigmas_small, sigmas_large, threshold_step, n_thresholds)
            total_scores = scores if total_scores is None else total_scores + scores
            used += 1
        if progress is not None:
            progress(done, max(total, done))
    if total_scores is None:
        raise ValueError("no crop with a defect to tune on")
    return _best(total_scores[..., 1:] / used, sigmas_small, sigmas_large, threshold_step)


def _best(mean_iou: np.ndarray, sigmas_small: Sequence[float], sigmas_large: Sequence[float],
          step: float) -> tuple[ClassicalParams, float]:
    """Arg-max of the (sigma_small, sigma_large, polarity, threshold k=1..n) grid; the first of equal scores (grid
    order: smaller sigmas, dark before bright, lower thresholds) so tuning is deterministic."""
    flat = np.where(np.isnan(mean_iou), -1.0, mean_iou)
    i, j, p, k = np.unravel_index(int(np.argmax(flat)), flat.shape)
    params = ClassicalParams(float(sigmas_small[i]), float(sigmas_large[j]), POLARITIES[p], float((k + 1) * step))
    return params, float(flat[i, j, p, k])


# --- the segmenter interface ----------------------------------------------------------------------------------


class ClassicalSegmenter:
    """The tuned baseline behind inference.segmenter's interface: `embed` computes the defect map (the only
    per-image work), `decode` thresholds it and ignores the clicks (a whole-image method has no use for them)."""

    kind = "baseline"
    input_size = 0  # works at native resolution

    def __init__(self, params: ClassicalParams, name: str = "classical") -> None:
        self.params = params
        self.name = name
        self.sha256 = hashlib.sha256(json.dumps(params.to_json(), sort_keys=True).encode()).hexdigest()

    def embed(self, image: np.ndarray) -> Embedding:
        dmap = defect_map(image, self.params)
        return Embedding(features={"defect_map": dmap}, orig_hw=(int(dmap.shape[0]), int(dmap.shape[1])),
                         input_size=0, model_sha256=self.sha256)

    def decode(self, embedding: Embedding, points: np.ndarray, labels: np.ndarray) -> Decoded:
        """logits = map - threshold, so `Decoded.mask` (logits > 0) is exactly `predict`'s mask. Score 0: no
        confidence estimate."""
        logits = embedding.features["defect_map"] - np.float32(self.params.threshold)
        return Decoded(logits=logits.astype(np.float32, copy=False), score=0.0)

    def predict(self, images: list[np.ndarray], prompts: list[Prompt]) -> list[Decoded]:
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        return [self.decode(self.embed(im), p.points, p.labels) for im, p in zip(images, prompts)]
