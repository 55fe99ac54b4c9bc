"""A thin-defect data set for issue 14's second acceptance point, built from the real magnetic-tile crops.

    python bench/thin_defects.py --data ../shared/datasets/magnetic-tile --out /tmp/thin
    python bench/distillation_table.py --data /tmp/thin --work /tmp/dt-thin --device cuda ...

Why it exists: the students are meant to keep defects 1-5 px wide, and a held-out real set of thin cracks will be
used to check that. Magnetic-tile has one thin class (`crack`, 57 crops) and its other classes are blobs, so the
table on magnetic-tile alone cannot show whether a head or a recipe loses thin structures. This set puts next to the
real cracks scratches of a known width (1, 2 and 3 px, one class each, so the table's per-class columns read as IoU
by width) drawn on the real defect-free tiles (`MT_Free`): real texture, real lighting, exact masks.

Layout: the ingest layout of the source (`CLASS/X.jpg` + `CLASS/X.png`, masks 0/255), so `maskbench ingest` and
`bench/distillation_table.py --data` take it unchanged. The same seed gives the same bytes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
WIDTHS = (1, 2, 3)


def scratch_path(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A gently curving polyline crossing 30-90% of the crop's longer side, as (N, 1, 2) int32 points."""
    length = rng.uniform(0.3, 0.9) * max(h, w)
    n = int(rng.integers(8, 16))
    step = length / n
    x, y = rng.uniform(0.15 * w, 0.85 * w), rng.uniform(0.15 * h, 0.85 * h)
    ang = rng.uniform(0, 2 * np.pi)
    pts = []
    for _ in range(n + 1):
        pts.append((x, y))
        ang += rng.normal(0, 0.12)
        x, y = x + step * np.cos(ang), y + step * np.sin(ang)
        if not (2 <= x < w - 2 and 2 <= y < h - 2):
            break
    return np.round(np.array(pts)).astype(np.int32).reshape(-1, 1, 2)


def scratch_mask(pts: np.ndarray, shape: tuple[int, int], width: int) -> np.ndarray:
    """The mask (0/255) of a polyline `width` px wide, measured across the line. OpenCV's own thick lines are
    wider than asked (thickness 2 draws about 3 px, 3 about 5), so widths above 1 are drawn 8x larger and reduced by
    area, keeping the pixels the line covers at least half; even widths are centred on pixel edges, so a straight
    2 px scratch is exactly two pixels across. Width 1 is OpenCV's 8-connected one-pixel line."""
    h, w = shape
    if width == 1:
        mask = np.zeros((h, w), np.uint8)
        cv2.polylines(mask, [pts], False, 255, thickness=1, lineType=cv2.LINE_8)
        return mask
    s = 8
    centre = pts.astype(np.float64) + (0.5 if width % 2 == 0 else 0.0)
    big = np.zeros((h * s, w * s), np.uint8)
    cv2.polylines(big, [np.round((centre + 0.5) * s - 0.5).astype(np.int32)], False, 255, thickness=width * s,
                  lineType=cv2.LINE_8)
    cover = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA)
    return np.where(cover >= 128, 255, 0).astype(np.uint8)


def draw_scratch(rng: np.random.Generator, image: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(image with a scratch `width` px wide, its mask 0/255). The scratch darkens (70%) or brightens the surface by
    12-40 grey levels, a little more in its middle than at its edges, as a real one does; the mask is the drawn
    line itself, so a 1 px scratch has a 1 px mask."""
    h, w = image.shape[:2]
    pts = scratch_path(rng, h, w)
    while len(pts) < 3:  # started near an edge and left at once: try another path
        pts = scratch_path(rng, h, w)
    mask = scratch_mask(pts, (h, w), width)
    profile = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 0.6)
    profile = np.maximum(profile, mask.astype(np.float32) / 255.0 * 0.8)
    sign = -1.0 if rng.random() < 0.7 else 1.0
    delta = sign * rng.uniform(12, 40) * profile
    if image.ndim == 3:
        delta = delta[..., None]
    out = np.clip(image.astype(np.float32) + delta, 0, 255).astype(np.uint8)
    return out, mask


def build(data: Path, out: Path, seed: int = 0, per_width: int = 50) -> dict[str, int]:
    """Write the set under `out` (replaced if it exists); returns crops per class."""
    crack_dir, free_dir = data / "MT_Crack", data / "MT_Free"
    if not crack_dir.is_dir() or not free_dir.is_dir():
        raise SystemExit(f"{data} is not the magnetic-tile data set (MT_Crack and MT_Free are needed)")
    if out.exists():
        shutil.rmtree(out)
    counts: dict[str, int] = {}
    (out / "MT_Crack").mkdir(parents=True)
    for img in sorted(crack_dir.glob("*.jpg")):
        m = img.with_suffix(".png")
        if m.exists():
            shutil.copy2(img, out / "MT_Crack" / img.name)
            shutil.copy2(m, out / "MT_Crack" / m.name)
    counts["crack"] = len(list((out / "MT_Crack").glob("*.jpg")))
    free = sorted(free_dir.glob("*.jpg"))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(free))
    if len(free) < per_width * len(WIDTHS):
        raise SystemExit(f"{len(free)} defect-free tiles: fewer than {per_width} x {len(WIDTHS)}; lower --per-width")
    for k, width in enumerate(WIDTHS):
        cls = f"scratch_{width}px"
        (out / cls).mkdir()
        for i in order[k * per_width:(k + 1) * per_width]:
            src = free[int(i)]
            image = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise SystemExit(f"cannot read {src}")
            drawn, mask = draw_scratch(rng, image, width)
            cv2.imwrite(str(out / cls / f"{src.stem}.jpg"), drawn, [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(str(out / cls / f"{src.stem}.png"), mask)
        counts[cls] = per_width
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "datasets" / "magnetic-tile")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-width", type=int, default=50, help="scratched tiles per width (159 free tiles in all)")
    a = ap.parse_args()
    counts = build(a.data, a.out, a.seed, a.per_width)
    print(", ".join(f"{k}: {v}" for k, v in counts.items()) + f" -> {a.out}")


if __name__ == "__main__":
    sys.exit(main())
