"""Image and prompt transforms shared by every backend, in numpy + OpenCV only.

The PyTorch and ONNX Runtime students run exactly these functions before and after the network, so a parity test
between them measures the networks and nothing else, and a station without torch resizes, normalises and
post-processes the same way as the workstation that trained the model.

Conventions (those of SAM 2's SAM2Transforms): the crop is resized to a square S x S without keeping the aspect
ratio, normalised with the ImageNet mean/std, and a point (x, y) in original pixels maps to (x * S / W, y * S / H).
Mask logits come back at a fraction of S and are resized bilinearly (half-pixel centres, as F.interpolate with
align_corners=False) straight to the original H x W.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0
PAD_LABEL = -1  # a padding point: ignored by the prompt encoder (SAM's "not a point")


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB from grey, RGBA or RGB input; magnetic-tile crops are grey JPEGs decoded to RGB."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    return image


def image_to_input(image: np.ndarray, size: int) -> np.ndarray:
    """(3, S, S) float32, resized and normalised."""
    rgb = as_rgb(image)
    resized = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)
    x = (resized.astype(np.float32) - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def images_to_batch(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    return np.stack([image_to_input(im, size) for im in images]).astype(np.float32, copy=False)


def points_to_input(points: np.ndarray, orig_hw: tuple[int, int], size: int) -> np.ndarray:
    """(N, 2) original-pixel (x, y) -> model-input pixels."""
    h, w = orig_hw
    pts = np.asarray(points, np.float32).reshape(-1, 2)
    return pts * np.array([size / w, size / h], np.float32)


def pad_prompts(
    prompts: Sequence[tuple[np.ndarray, np.ndarray]], orig_hw: Sequence[tuple[int, int]], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stack prompts of different lengths into (B, N, 2) coords and (B, N) labels, padding with label -1."""
    n = max(1, max(len(np.asarray(lb).reshape(-1)) for _, lb in prompts))
    coords = np.zeros((len(prompts), n, 2), np.float32)
    labels = np.full((len(prompts), n), PAD_LABEL, np.float32)
    for i, ((pts, lbs), hw) in enumerate(zip(prompts, orig_hw)):
        lbs = np.asarray(lbs).reshape(-1)
        if len(lbs):
            coords[i, : len(lbs)] = points_to_input(pts, hw, size)
            labels[i, : len(lbs)] = lbs
    return coords, labels


def choose_mask(masks: np.ndarray, scores: np.ndarray, n_points: int) -> int:
    """Index of the mask to return. SAM's rule: for a single click the multimask outputs (1..K-1) are ambiguous
    candidates and the best predicted IoU wins; with more clicks (or a single-output model) output 0 is the answer."""
    k = masks.shape[0]
    if k > 1 and n_points == 1:
        return 1 + int(np.argmax(scores[1:]))
    return 0


def logits_to_original(logits: np.ndarray, orig_hw: tuple[int, int]) -> np.ndarray:
    """Low-resolution (h, w) logits -> (H, W) float32 at the original crop size."""
    h, w = orig_hw
    out = cv2.resize(np.ascontiguousarray(logits, dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return out.reshape(h, w)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; two empty masks agree perfectly."""
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)
