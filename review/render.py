"""What the judge sees: the crop and each candidate mask drawn over it, as PNG data URIs.

Both masks are drawn in the same colours (a translucent fill and a bright outline), so nothing but the position
(A or B) tells them apart; the order is randomised per sample and recorded (JudgeCall.a_is).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import cv2
import numpy as np

RENDER_VERSION = "r1"  # part of the request hash: a change of drawing style must not reuse cached answers
FILL_RGB = (0, 255, 0)
OUTLINE_RGB = (255, 255, 0)
FILL_ALPHA = 0.35


def fit(image: np.ndarray, masks: list[np.ndarray], max_side: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Downscale so the longer side is at most `max_side` (never upscale)."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w) if max_side and max(h, w) > max_side else 1.0
    if scale >= 1.0:
        return image, masks
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    img = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    out = [cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool) for m in masks]
    return img, out


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The RGB crop with the mask as a translucent fill and a 1-px outline."""
    out = image.astype(np.float32).copy()
    m = mask.astype(bool)
    out[m] = out[m] * (1 - FILL_ALPHA) + np.array(FILL_RGB, np.float32) * FILL_ALPHA
    out = out.round().clip(0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, OUTLINE_RGB, 1)
    return out


def png_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def data_uri(rgb: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgb)).decode("ascii")


def mask_sha(rle: dict[str, Any]) -> str:
    h, w = rle["size"]
    counts = rle["counts"]
    if not isinstance(counts, str):
        counts = repr(counts)
    return hashlib.sha256(f"{h}x{w}:{counts}".encode()).hexdigest()


def judge_images(image: np.ndarray, mask_a: np.ndarray, mask_b: np.ndarray, max_side: int) -> tuple[str, str, str]:
    """(crop, overlay A, overlay B) as data URIs."""
    img, (ma, mb) = fit(image, [mask_a, mask_b], max_side)
    return data_uri(img), data_uri(overlay(img, ma)), data_uri(overlay(img, mb))
