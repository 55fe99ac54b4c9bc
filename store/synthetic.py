"""Deterministic synthetic defect crops for the demo project and for tests that need many small samples.

Textured metal-like surfaces (brushed grain, machining marks, uneven lighting, sensor noise) with one defect each:
scratch, pit, dent, crack or stain, drawn together with its pixel mask. Same seed, same bytes: the demo needs no
binary data set in the repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("scratch", "pit", "dent", "crack", "stain")


@dataclass
class SyntheticCrop:
    image: np.ndarray  # HxWx3 uint8 RGB
    mask: np.ndarray  # HxW bool
    defect_class: str


def _surface(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = rng.uniform(90, 170)
    grain = rng.normal(0, 1, (h, w)).astype(np.float32)
    k = int(rng.integers(9, 31)) | 1
    grain = cv2.GaussianBlur(grain, (k, 1), 0) * rng.uniform(6, 14)  # brushed along x
    angle = rng.uniform(-8, 8)
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    grain = cv2.warpAffine(grain, rot, (w, h), borderMode=cv2.BORDER_REFLECT)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = rng.uniform(-25, 25) * (xx / w - 0.5) + rng.uniform(-25, 25) * (yy / h - 0.5)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    glare = rng.uniform(0, 35) * np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (0.35 * max(h, w)) ** 2)))
    marks = np.sin(xx * rng.uniform(0.05, 0.2) + rng.uniform(0, 6.28)) * rng.uniform(0, 3)
    return base + grain + light + glare + marks


def _scratch(rng, img, mask):  # noqa: ANN001 - private drawing helpers share one shape
    h, w = mask.shape
    pts = []
    x, y = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
    ang = rng.uniform(0, np.pi)
    for _ in range(int(rng.integers(6, 12))):
        pts.append((x, y))
        ang += rng.normal(0, 0.15)
        step = rng.uniform(0.04, 0.09) * max(h, w)
        x, y = np.clip(x + step * np.cos(ang), 0, w - 1), np.clip(y + step * np.sin(ang), 0, h - 1)
    poly = np.array(pts, np.int32).reshape(-1, 1, 2)
    cv2.polylines(mask, [poly], False, 1, thickness=int(rng.integers(2, 4)))
    return -rng.uniform(35, 60) if rng.random() < 0.7 else rng.uniform(35, 55)


def _pit(rng, img, mask):  # noqa: ANN001
    h, w = mask.shape
    for _ in range(int(rng.integers(1, 4))):
        c = (int(rng.uniform(0.15 * w, 0.85 * w)), int(rng.uniform(0.15 * h, 0.85 * h)))
        r = int(rng.integers(3, 9))
        cv2.circle(mask, c, r, 1, -1)
    return -rng.uniform(50, 80)


def _dent(rng, img, mask):  # noqa: ANN001
    h, w = mask.shape
    c = (int(rng.uniform(0.3 * w, 0.7 * w)), int(rng.uniform(0.3 * h, 0.7 * h)))
    axes = (int(rng.uniform(0.08, 0.2) * w), int(rng.uniform(0.06, 0.15) * h))
    cv2.ellipse(mask, c, axes, rng.uniform(0, 180), 0, 360, 1, -1)
    return -rng.uniform(20, 35)


def _crack(rng, img, mask):  # noqa: ANN001
    h, w = mask.shape

    def branch(x: float, y: float, ang: float, n: int, depth: int) -> None:
        for _ in range(n):
            nx = np.clip(x + rng.uniform(4, 10) * np.cos(ang), 0, w - 1)
            ny = np.clip(y + rng.uniform(4, 10) * np.sin(ang), 0, h - 1)
            cv2.line(mask, (int(x), int(y)), (int(nx), int(ny)), 1, thickness=int(rng.integers(1, 3)))
            x, y, ang = nx, ny, ang + rng.normal(0, 0.5)
            if depth < 2 and rng.random() < 0.08:
                branch(x, y, ang + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2), n // 2, depth + 1)

    branch(rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0.2 * h, 0.8 * h), rng.uniform(0, 2 * np.pi),
           int(rng.integers(12, 30)), 0)
    return -rng.uniform(60, 90)


def _stain(rng, img, mask):  # noqa: ANN001
    h, w = mask.shape
    c = np.array([rng.uniform(0.3 * w, 0.7 * w), rng.uniform(0.3 * h, 0.7 * h)])
    n = 24
    radius = rng.uniform(0.08, 0.22) * min(h, w)
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    radii = radius * (1 + 0.35 * np.convolve(rng.normal(0, 1, n + 4), np.ones(5) / 5, "valid"))
    pts = np.stack([c[0] + radii * np.cos(angles), c[1] + radii * np.sin(angles)], 1).astype(np.int32)
    cv2.fillPoly(mask, [pts.reshape(-1, 1, 2)], 1)
    return rng.choice([-1, 1]) * rng.uniform(18, 30)


_DRAW = {"scratch": _scratch, "pit": _pit, "dent": _dent, "crack": _crack, "stain": _stain}


def make_crop(seed: int, defect_class: str | None = None, size: tuple[int, int] | None = None) -> SyntheticCrop:
    rng = np.random.default_rng(seed)
    cls = defect_class or CLASSES[seed % len(CLASSES)]
    h, w = size or (int(rng.integers(224, 385)), int(rng.integers(224, 385)))
    img = _surface(rng, h, w)
    mask = np.zeros((h, w), np.uint8)
    delta = _DRAW[cls](rng, img, mask)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (5, 5), 0)
    if cls == "dent":  # a dent is shading with a bright rim on one side, not a flat dark blob
        gy = cv2.Sobel(soft, cv2.CV_32F, 0, 1, ksize=5)
        img = img + delta * soft + 4.0 * gy
    else:
        img = img + delta * soft
    img = img + rng.normal(0, rng.uniform(2, 5), (h, w))
    grey = np.clip(img, 0, 255).astype(np.uint8)
    tint = np.array([1.0, rng.uniform(0.97, 1.02), rng.uniform(0.94, 1.03)], np.float32)
    rgb = np.clip(grey[..., None].astype(np.float32) * tint, 0, 255).astype(np.uint8)
    return SyntheticCrop(rgb, mask.astype(bool), cls)


def write_dataset(root: Path, count: int, seed: int = 7) -> list[Path]:
    """Write `count` crops as root/<class>/<name>.jpg + .png (the side-by-side ingest layout)."""
    out = []
    for i in range(count):
        crop = make_crop(seed * 100_003 + i, CLASSES[i % len(CLASSES)])
        d = root / crop.defect_class
        d.mkdir(parents=True, exist_ok=True)
        stem = d / f"{crop.defect_class}_{i:05d}"
        cv2.imwrite(str(stem.with_suffix(".jpg")), cv2.cvtColor(crop.image, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
        cv2.imwrite(str(stem.with_suffix(".png")), crop.mask.astype(np.uint8) * 255)
        out.append(stem.with_suffix(".jpg"))
    return out
