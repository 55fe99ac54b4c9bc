"""Training crops decoded once and kept as uint8 tensors (on the GPU when training there), and the canvases built
from them for every step: random windows at native pixel scale, the eight flips/rotations, photometric changes, all
batched on the training device.

Why: the per-epoch cost of a few hundred crops used to be JPEG decoding and resizing in DataLoader workers that
were restarted every epoch (111 images/s on an H100 for a student that infers 2,300 images/s). Decoding once and
augmenting on the device leaves the step itself as the cost. Canvases follow inference.layout exactly (crop at its
own pixels times `scale`, top-left of an S x S canvas, padding zero after normalisation, tiles for larger crops),
so the model trains on the geometry it predicts on, and masks are never resampled below their own resolution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from inference import layout as lay
from review.training_set import TrainingSample
from store import rle as rle_mod
from store.images import load_image

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
ProgressFn = Callable[[int, int], None]


@dataclass
class CropSet:
    """Parallel lists, one entry per crop: image (3, H, W) uint8, target (H, W) bool or None (unlabelled), at the
    set's `scale` (model pixels per crop pixel)."""

    samples: list[TrainingSample]
    images: list[torch.Tensor]
    targets: list[torch.Tensor | None]
    scale: float

    def __len__(self) -> int:
        return len(self.samples)

    def to(self, device: torch.device) -> CropSet:
        return CropSet(self.samples, [im.to(device) for im in self.images],
                       [None if t is None else t.to(device) for t in self.targets], self.scale)

    def rescaled(self, scale: float) -> CropSet:
        """The same crops at another scale (the teacher may look closer than the student)."""
        if scale == self.scale:
            return self
        ratio = scale / self.scale
        imgs, tgts = [], []
        for im, t in zip(self.images, self.targets):
            h, w = im.shape[-2:]
            size = lay.scaled_size((h, w), ratio)
            imgs.append(F.interpolate(im[None].float(), size=size, mode="bilinear", align_corners=False,
                                      antialias=ratio < 1).round().clamp(0, 255).to(torch.uint8)[0])
            tgts.append(None if t is None else F.interpolate(t[None, None].float(), size=size, mode="nearest")[0, 0] > 0.5)
        return CropSet(self.samples, imgs, tgts, scale)

    @property
    def classes(self) -> list[str]:
        return [s.defect_class for s in self.samples]


def decode_crops(samples: Sequence[TrainingSample], scale: float = 1.0, progress: ProgressFn | None = None) -> CropSet:
    """Read every image and its Dice target once (RGB uint8; masks from their RLE), at `scale`."""
    images, targets = [], []
    for i, s in enumerate(samples):
        img = load_image(s.path)
        tgt = rle_mod.decode(s.target_rle).astype(bool) if s.target_rle is not None else None
        if tgt is not None and tgt.shape != img.shape[:2]:
            raise ValueError(f"sample {s.sample_id}: mask is {tgt.shape[1]}x{tgt.shape[0]}, image "
                             f"{img.shape[1]}x{img.shape[0]}")
        if scale != 1.0:
            hs, ws = lay.scaled_size(img.shape[:2], scale)
            img = cv2.resize(img, (ws, hs), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            if tgt is not None:
                tgt = cv2.resize(tgt.astype(np.uint8), (ws, hs), interpolation=cv2.INTER_NEAREST) > 0
        images.append(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))))
        targets.append(None if tgt is None else torch.from_numpy(np.ascontiguousarray(tgt)))
        if progress:
            progress(i + 1, len(samples))
    return CropSet(list(samples), images, targets, scale)


# ------------------------------------------------------------------------------------------------- views


@dataclass
class Views:
    """Fixed windows: the tiles inference.layout would cut from each crop. Teacher targets are cached per view
    (and per flip/rotation), and validation predicts on them exactly as prediction does."""

    crop: list[int]  # crop index of each view
    origin: list[tuple[int, int]]  # (y0, x0) in the crop set's scaled pixels
    canvas: int

    def __len__(self) -> int:
        return len(self.crop)

    def of_crop(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for v, c in enumerate(self.crop):
            out.setdefault(c, []).append(v)
        return out


def tile_views(crops: CropSet, canvas: int) -> Views:
    crop_idx, origins = [], []
    for i, im in enumerate(crops.images):
        h, w = im.shape[-2:]
        for t in lay.plan((h, w), canvas, 1.0).tiles:  # already scaled
            crop_idx.append(i)
            origins.append(t)
    return Views(crop_idx, origins, canvas)


# ---------------------------------------------------------------------------------------------- canvases


@dataclass
class Canvases:
    """A batch. image01: (B, 3, S, S) in [0, 1] (padding 0); target: (B, 1, S, S) float (zeros where unlabelled);
    has_target: (B,) bool; valid: (B, 1, S, S) bool (the crop's pixels, not padding)."""

    image01: torch.Tensor
    target: torch.Tensor
    has_target: torch.Tensor
    valid: torch.Tensor
    labelled: list[bool]  # has_target on the host (no device sync to ask)

    def normalised(self) -> torch.Tensor:
        x = (self.image01 - MEAN.to(self.image01.device)) / STD.to(self.image01.device)
        return x * self.valid


def assemble(crops: CropSet, index: Sequence[int], windows: Sequence[tuple[int, int]], canvas: int,
             offsets: Sequence[tuple[int, int]] | None = None) -> Canvases:
    """Cut window (y0, x0) of each crop onto an S x S canvas at offset (oy, ox) (default top-left)."""
    b = len(index)
    dev = crops.images[0].device if crops.images else torch.device("cpu")
    img = torch.zeros(b, 3, canvas, canvas, dtype=torch.uint8, device=dev)
    tgt = torch.zeros(b, 1, canvas, canvas, dtype=torch.bool, device=dev)
    valid = torch.zeros(b, 1, canvas, canvas, dtype=torch.bool, device=dev)
    has = torch.zeros(b, dtype=torch.bool)
    for j, (i, (y0, x0)) in enumerate(zip(index, windows)):
        oy, ox = offsets[j] if offsets is not None else (0, 0)
        part = crops.images[i][:, y0:y0 + canvas - oy, x0:x0 + canvas - ox]
        h, w = part.shape[-2:]
        img[j, :, oy:oy + h, ox:ox + w] = part
        valid[j, :, oy:oy + h, ox:ox + w] = True
        t = crops.targets[i]
        if t is not None:
            tgt[j, 0, oy:oy + h, ox:ox + w] = t[y0:y0 + h, x0:x0 + w]
            has[j] = True
    return Canvases(img.float() / 255.0, tgt.float(), has.to(dev), valid, has.tolist())


def random_windows(crops: CropSet, index: Sequence[int], canvas: int, gen: torch.Generator,
                   ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """A random S x S window of each crop (crops larger than S) and a random placement on the canvas (smaller
    ones): random crops at native scale."""
    windows, offsets = [], []
    r = torch.rand(len(index), 4, generator=gen).tolist()
    for (i, u) in zip(index, r):
        h, w = crops.images[i].shape[-2:]
        y0 = int(u[0] * (max(0, h - canvas) + 1))
        x0 = int(u[1] * (max(0, w - canvas) + 1))
        oy = int(u[2] * (max(0, canvas - h) + 1))
        ox = int(u[3] * (max(0, canvas - w) + 1))
        windows.append((y0, x0))
        offsets.append((oy, ox))
    return windows, offsets


def flipped(c: Canvases, d: torch.Tensor) -> Canvases:
    """The batch under per-sample flips/rotations d (image, target and valid alike)."""
    return Canvases(dihedral(c.image01, d), dihedral(c.target, d), c.has_target, dihedral(c.valid.float(), d) > 0.5,
                    c.labelled)


def content_extents(valid: torch.Tensor) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Each canvas's first and last row and column of crop pixels ((y_first, y_last), (x_first, x_last)); a canvas
    without any spans the whole side. One transfer to the host for the batch."""
    s = valid.shape[-1]
    rows = valid.any(dim=-1)[:, 0].cpu()  # (B, S)
    cols = valid.any(dim=-2)[:, 0].cpu()
    out = []
    for r, c in zip(rows, cols):
        ext = []
        for line in (r, c):
            idx = line.nonzero().flatten()
            ext.append((int(idx[0]), int(idx[-1])) if len(idx) else (0, s - 1))
        out.append((ext[0], ext[1]))
    return out


def _per_axis(valid: torch.Tensor, gen: torch.Generator,
              pick: Callable[[int, int, float], int]) -> list[tuple[int, int]]:
    """`pick(first, last, u)` for each canvas's rows and columns of content, u one uniform draw per axis (two per
    canvas, drawn for the whole batch at once)."""
    u = torch.rand(valid.shape[0], 2, generator=gen).tolist()
    out = []
    for ((y0, y1), (x0, x1)), (uy, ux) in zip(content_extents(valid), u):
        out.append((pick(y0, y1, uy), pick(x0, x1, ux)))
    return out


def content_windows(valid: torch.Tensor, size: int, align: int, gen: torch.Generator) -> list[tuple[int, int]]:
    """A random size x size window (y0, x0) of each S x S canvas, on its content: the window slides over the crop's
    pixels (valid) and covers as much of them as it can, so a small window never trains on padding alone. Origins
    sit on multiples of `align` (the student's deepest stride: its features of the window are then the features of
    the whole canvas, cut) and inside the canvas."""
    s = valid.shape[-1]

    def origin(first: int, last: int, v: float) -> int:
        hi = max(first, last + 1 - size)
        return min(max((first + int(v * (hi - first + 1))) // align * align, 0), s - size)

    return _per_axis(valid, gen, origin)


def content_shifts(valid: torch.Tensor, align: int, gen: torch.Generator) -> list[tuple[int, int]]:
    """A random move (dy, dx) of each canvas's content that keeps all of it on the canvas, in multiples of `align`
    (the student's deepest stride: its features then move with the content, cell for cell). A crop that fills its
    canvas has no room and stays."""
    s = valid.shape[-1]

    def move(first: int, last: int, v: float) -> int:
        lo, hi = -(first // align), (s - 1 - last) // align  # whole steps the content can move each way
        return (lo + int(v * (hi - lo + 1))) * align

    return _per_axis(valid, gen, move)


def shift(x: torch.Tensor, moves: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Each (B, C, H, W) map moved by its (dy, dx) cells, cyclically: with `content_shifts` only padding wraps
    round. Two batched gathers, not a roll per sample."""
    b, ch, h, w = x.shape
    m = torch.tensor(moves, dtype=torch.long, device=x.device).view(b, 2)
    ys = (torch.arange(h, device=x.device)[None] - m[:, :1]) % h  # (B, H): the source row of each row
    xs = (torch.arange(w, device=x.device)[None] - m[:, 1:]) % w
    x = torch.gather(x, 2, ys[:, None, :, None].expand(b, ch, h, w))
    return torch.gather(x, 3, xs[:, None, None, :].expand(b, ch, h, w))


def shifted(c: Canvases, moves: Sequence[tuple[int, int]]) -> Canvases:
    """The batch with each canvas's content moved by its (dy, dx) pixels (`content_shifts`)."""
    return Canvases(shift(c.image01, moves), shift(c.target, moves), c.has_target, shift(c.valid, moves), c.labelled)


def cut(c: Canvases, origins: Sequence[tuple[int, int]], size: int) -> Canvases:
    """Window (y0, x0) of each canvas, size x size."""
    def take(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[j, :, y:y + size, xx:xx + size] for j, (y, xx) in enumerate(origins)])

    return Canvases(take(c.image01), take(c.target), c.has_target, take(c.valid), c.labelled)


def dihedral_count(augment: dict[str, Any] | None) -> int:
    """How many flips/rotations a training view comes in: the eight of the dihedral group when
    `training.augment.dihedral` is on (the teacher's cached features cover each of them), else one."""
    return 8 if (augment or {}).get("dihedral") else 1


def dihedral(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Per sample, one of the 8 flips/rotations of a square map: d % 4 quarter turns, then a horizontal flip when
    d >= 4. x: (B, C, S, S); d: (B,) int on the host (grouping by it needs no device sync)."""
    out = x.clone()
    d = d.cpu()
    for k in range(1, 8):
        sel = (d == k).nonzero().flatten()
        if len(sel) == 0:
            continue
        sel = sel.to(x.device)
        y = torch.rot90(x[sel], k % 4, dims=(-2, -1))
        out[sel] = y.flip(-1) if k >= 4 else y
    return out


def dihedral_points(points: torch.Tensor, d: torch.Tensor, canvas: int) -> torch.Tensor:
    """The same transform on (B, N, 2) pixel-index (x, y) points."""
    p = points
    m = canvas - 1
    out = p.clone()
    d = d.cpu()
    for k in range(1, 8):
        sel = (d == k).nonzero().flatten()
        if len(sel) == 0:
            continue
        sel = sel.to(p.device)
        q = p[sel]
        for _ in range(k % 4):  # rot90 (counter-clockwise, torch.rot90 on dims (-2, -1)): (x, y) -> (y, m - x)
            q = torch.stack([q[..., 1], m - q[..., 0]], dim=-1)
        if k >= 4:
            q = torch.stack([m - q[..., 0], q[..., 1]], dim=-1)
        out[sel] = q
    return out


def photometric(c: Canvases, gen: torch.Generator, cfg: dict[str, float]) -> None:
    """Exposure (stops), Gaussian noise and blur on the crop's pixels only, in place; batched. `gen` lives on the
    canvases' device."""
    x = c.image01
    b = x.shape[0]
    dev = x.device
    u = torch.rand(b, 6, generator=gen, device=dev)
    p_exp, stops = float(cfg.get("exposure", 0.0)), float(cfg.get("exposure_stops", 0.5))
    if p_exp > 0:
        gain = torch.where(u[:, 0] < p_exp, 2.0 ** ((u[:, 1] * 2 - 1) * stops), torch.ones_like(u[:, 1]))
        x = x * gain.view(b, 1, 1, 1)
    p_blur = float(cfg.get("blur", 0.0))
    if p_blur > 0:
        sigma = 0.3 + u[:, 3] * (float(cfg.get("blur_sigma_max", 1.5)) - 0.3)
        k = 7
        r = torch.arange(k, device=dev, dtype=x.dtype) - k // 2
        g = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None] ** 2))
        g = g / g.sum(1, keepdim=True)
        g = torch.where((u[:, 2] < p_blur)[:, None], g, (r[None] == 0).to(g.dtype))
        kern = g.repeat_interleave(3, dim=0)  # (B*3, k)
        y = x.reshape(1, b * 3, *x.shape[-2:])
        y = F.conv2d(F.pad(y, (k // 2, k // 2, 0, 0), mode="replicate"), kern[:, None, None, :], groups=b * 3)
        y = F.conv2d(F.pad(y, (0, 0, k // 2, k // 2), mode="replicate"), kern[:, None, :, None], groups=b * 3)
        x = y.reshape(b, 3, *x.shape[-2:])
    p_noise, sig = float(cfg.get("noise", 0.0)), float(cfg.get("noise_sigma", 0.03))
    if p_noise > 0:
        noise = torch.randn(x.shape, generator=gen, device=dev)
        x = x + noise * sig * (u[:, 4] < p_noise).view(b, 1, 1, 1)
    c.image01 = x.clamp(0.0, 1.0) * c.valid


def class_balanced_weights(classes: Sequence[str], power: float) -> torch.Tensor:
    """Sampling weight per crop ~ 1 / n_class ** power: 0 = natural frequencies, 1 = every class equally often.
    A few hundred crops with a 4:1 class imbalance would otherwise teach mostly the common class."""
    counts: dict[str, int] = {}
    for c in classes:
        counts[c] = counts.get(c, 0) + 1
    w = torch.tensor([1.0 / counts[c] ** power for c in classes], dtype=torch.float64)
    return w / w.sum()
