"""Training data: ground-truth samples from the store, point prompts from the masks, the teacher-target cache,
and augmentations applied consistently to image, masks and cached teacher maps.

The split is the one ingest stored on each sample (stratified by defect class, seeded; store.splits), so a crop
never moves between train and val across runs. Prompts are sampled once per sample (seeded by the content hash),
because the cached teacher logits belong to one prompt; geometric augmentations move the prompt with the image.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from sqlalchemy import select
from torch.utils.data import Dataset

from store import rle as rle_mod
from store.images import load_image
from store.schema import Mask, MaskSource, Sample

CACHE_VERSION = 1
ProgressFn = Callable[[int, int], None]


@dataclass
class Record:
    sample_id: int
    sha256: str
    path: str
    defect_class: str
    split: str
    rle: dict[str, Any]


def load_records(db: Any, splits: tuple[str, ...] = ("train", "val")) -> list[Record]:
    """Samples with a ground-truth mask (a human-corrected mask wins over the ingested one), sorted by id."""
    with db.session() as s:
        rows = s.execute(
            select(Sample.id, Sample.sha256, Sample.path, Sample.defect_class, Sample.split, Mask.source, Mask.rle, Mask.id)
            .join(Mask, Mask.sample_id == Sample.id)
            .where(Mask.source.in_([MaskSource.GROUND_TRUTH, MaskSource.CORRECTED]), Sample.split.in_(splits))
            .order_by(Sample.id, Mask.id)
        ).all()
    best: dict[int, tuple[int, Record]] = {}
    for sid, sha, path, cls, split, source, rle, _mid in rows:
        rank = 1 if source == MaskSource.CORRECTED else 0
        if sid not in best or rank >= best[sid][0]:
            best[sid] = (rank, Record(sid, sha, path, cls, split, rle))
    return [best[k][1] for k in sorted(best)]


def data_hash(records: list[Record], extra: Any = None) -> str:
    h = hashlib.sha256()
    for r in sorted(records, key=lambda r: r.sha256):
        h.update(f"{r.sha256}:{r.split}:{r.rle.get('counts')}\n".encode())
    h.update(repr(extra).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------- prompts


def sample_points(mask: np.ndarray, n: int, seed: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    """n points in normalised (x, y) in [0, 1] (pixel centres) and labels. Positives favour the mask's interior
    (probability ~ distance to the border); an empty mask gets negative points anywhere."""
    rng = np.random.default_rng(int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:16], 16))
    h, w = mask.shape
    if mask.any():
        dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3).ravel().astype(np.float64)
        p = dist / dist.sum() if dist.sum() > 0 else mask.ravel() / mask.sum()
        idx = rng.choice(h * w, size=n, p=p)
        labels = np.ones(n, np.int64)
    else:
        idx = rng.choice(h * w, size=n)
        labels = np.zeros(n, np.int64)
    ys, xs = np.divmod(idx, w)
    pts = np.stack([(xs + 0.5) / w, (ys + 0.5) / h], axis=1).astype(np.float32)
    return pts, labels


def load_resized(rec: Record, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image S x S x 3 uint8 at `size`, mask S x S uint8 at `size`, full-resolution bool mask)."""
    img = load_image(rec.path)
    mask = rle_mod.decode(rec.rle)
    img_s = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR)
    gt_s = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    return img_s, gt_s, mask


def to_tensor01(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0


# ------------------------------------------------------------------------------------------ teacher cache


def cache_key(teacher_ident: str, student_size: int, points: int, prompt_seed: int) -> str:
    s = f"v{CACHE_VERSION}|{teacher_ident}|{student_size}|{points}|{prompt_seed}"
    return hashlib.sha256(s.encode()).hexdigest()[:16]


def cache_file(cache_dir: Path, rec: Record) -> Path:
    return cache_dir / f"{rec.sha256}.pt"


def ensure_teacher_cache(
    records: list[Record],
    cache_dir: Path,
    build_teacher: Callable[[], Any],
    student_size: int,
    points: int,
    prompt_seed: int,
    device: str = "cpu",
    batch_size: int = 8,
    progress: ProgressFn | None = None,
) -> int:
    """Runs the frozen teacher once over every record that has no cache file yet; returns how many it computed.
    Each file holds the student-size image and mask, the prompt, and the teacher's embedding and chosen mask logits
    in fp16. Files are written whole (temp + rename), so an interrupted build resumes where it stopped."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    todo = [r for r in records if not cache_file(cache_dir, r).exists()]
    if not todo:
        return 0
    teacher = build_teacher()
    t_size = teacher.image_size
    done = 0
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        imgs_t, pts_t, labs, items = [], [], [], []
        for rec in chunk:
            img_s, gt_s, mask = load_resized(rec, student_size)
            pts, lab = sample_points(mask, points, prompt_seed, rec.sha256)
            img_full = load_image(rec.path)
            img_t = cv2.resize(img_full, (t_size, t_size), interpolation=cv2.INTER_LINEAR)
            imgs_t.append(to_tensor01(img_t))
            pts_t.append(torch.from_numpy(pts) * t_size)
            labs.append(torch.from_numpy(lab))
            items.append((rec, img_s, gt_s, pts, lab))
        with torch.no_grad():
            emb, logits = teacher.targets(torch.stack(imgs_t).to(device), torch.stack(pts_t).to(device),
                                          torch.stack(labs).to(device))
        for i, (rec, img_s, gt_s, pts, lab) in enumerate(items):
            payload = {
                "image": torch.from_numpy(img_s),
                "gt": torch.from_numpy(gt_s),
                "points": torch.from_numpy(pts),
                "labels": torch.from_numpy(lab),
                "teacher_emb": emb[i].detach().to("cpu", torch.float16).clone(),
                "teacher_logits": logits[i].detach().to("cpu", torch.float16).clone(),
            }
            target = cache_file(cache_dir, rec)
            tmp = target.with_suffix(f".tmp{os.getpid()}")
            torch.save(payload, tmp)
            tmp.replace(target)
        done += len(chunk)
        if progress:
            progress(done, len(todo))
    del teacher
    return done


# ---------------------------------------------------------------------------------------------- augments


def _motion_kernel(length: int, angle: float) -> torch.Tensor:
    k = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    dx, dy = math.cos(angle), math.sin(angle)
    for t in np.linspace(-c, c, length * 3):
        x, y = int(round(c + t * dx)), int(round(c + t * dy))
        k[y, x] = 1.0
    return torch.from_numpy(k / k.sum())


def augment(item: dict[str, torch.Tensor], rng: np.random.Generator, cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Geometric (flips, 90-degree rotations) on every spatial map and on the prompt; photometric (exposure,
    Gaussian noise, motion blur) on the image only. Maps are square (everything is resized to S x S)."""
    spatial = [k for k in ("image", "gt", "teacher_emb", "teacher_logits") if k in item]
    pts = item["points"].clone()
    if rng.random() < cfg.get("hflip", 0.0):
        for k in spatial:
            item[k] = item[k].flip(-1)
        pts[:, 0] = 1.0 - pts[:, 0]
    if rng.random() < cfg.get("vflip", 0.0):
        for k in spatial:
            item[k] = item[k].flip(-2)
        pts[:, 1] = 1.0 - pts[:, 1]
    if rng.random() < cfg.get("rot90", 0.0):
        k90 = int(rng.integers(1, 4))
        for k in spatial:
            item[k] = torch.rot90(item[k], k90, dims=(-2, -1))
        for _ in range(k90):  # counter-clockwise: (x, y) -> (y, 1 - x)
            pts = torch.stack([pts[:, 1], 1.0 - pts[:, 0]], dim=1)
    item["points"] = pts
    img = item["image"]
    if rng.random() < cfg.get("exposure", 0.0):
        stops = float(cfg.get("exposure_stops", 0.5))
        img = img * float(2.0 ** rng.uniform(-stops, stops))
    if rng.random() < cfg.get("motion_blur", 0.0):
        length = int(rng.integers(3, max(4, int(cfg.get("motion_blur_max", 9)) + 1)))
        length += 1 - length % 2
        kern = _motion_kernel(length, float(rng.uniform(0, math.pi)))
        w = kern.view(1, 1, length, length).repeat(3, 1, 1, 1)
        img = torch.nn.functional.conv2d(
            torch.nn.functional.pad(img.unsqueeze(0), [length // 2] * 4, mode="reflect"), w, groups=3)[0]
    if rng.random() < cfg.get("noise", 0.0):
        sigma = float(cfg.get("noise_sigma", 0.03))
        g = torch.Generator().manual_seed(int(rng.integers(0, 2**31)))
        img = img + torch.randn(img.shape, generator=g) * sigma
    item["image"] = img.clamp(0.0, 1.0)
    return item


# ---------------------------------------------------------------------------------------------- datasets


class DistillDataset(Dataset):
    """Reads the teacher cache; never runs the teacher. weights: {sample_id: (w_feat, w_soft, w_dice)}."""

    def __init__(self, records: list[Record], cache_dir: Path, weights: dict[int, tuple[float, float, float]] | None = None,
                 augment_cfg: dict[str, Any] | None = None, seed: int = 0) -> None:
        self.records = records
        self.cache_dir = cache_dir
        self.weights = weights or {}
        self.augment_cfg = augment_cfg
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rec = self.records[i]
        d = torch.load(cache_file(self.cache_dir, rec), map_location="cpu", weights_only=True)
        item = {
            "image": d["image"].permute(2, 0, 1).float() / 255.0,
            "gt": d["gt"].unsqueeze(0).float(),
            "points": d["points"].float(),
            "labels": d["labels"].long(),
            "teacher_emb": d["teacher_emb"],
            "teacher_logits": d["teacher_logits"],
        }
        if self.augment_cfg:
            item = augment(item, np.random.default_rng([self.seed, self.epoch, i]), self.augment_cfg)
        item["weights"] = torch.tensor(self.weights.get(rec.sample_id, (1.0, 1.0, 1.0)), dtype=torch.float32)
        item["index"] = torch.tensor(i)
        return item


class GroundTruthDataset(Dataset):
    """Image, mask and sampled prompt at `size` straight from the image files (teacher fine-tuning)."""

    def __init__(self, records: list[Record], size: int, points: int, prompt_seed: int,
                 augment_cfg: dict[str, Any] | None = None, seed: int = 0) -> None:
        self.records = records
        self.size = size
        self.points = points
        self.prompt_seed = prompt_seed
        self.augment_cfg = augment_cfg
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rec = self.records[i]
        img_s, gt_s, mask = load_resized(rec, self.size)
        pts, lab = sample_points(mask, self.points, self.prompt_seed, rec.sha256)
        item = {"image": to_tensor01(img_s), "gt": torch.from_numpy(gt_s).unsqueeze(0).float(),
                "points": torch.from_numpy(pts), "labels": torch.from_numpy(lab)}
        if self.augment_cfg:
            item = augment(item, np.random.default_rng([self.seed, self.epoch, i]), self.augment_cfg)
        item["index"] = torch.tensor(i)
        return item
