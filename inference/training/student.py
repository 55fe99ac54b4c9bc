"""The student as the trainer sees it: forward(images01 (B,3,S,S), points (B,N,2) in student input pixels,
labels (B,N)) -> (embedding (B, 256, h, w) to align with the teacher's, mask logits (B, 1, H', W')).

`build_student` prefers the project student from inference/ (helper A's module) when it is importable and exposes
that contract; otherwise it uses `TinyPointSeg`, a small self-contained stand-in (conv encoder to 1/16, 1x1
projection to the teacher's 256 channels, point heat-map prompts, decoder upsampling to 1/2 as seed 001 says) so
the training loop, its tests and the GUI work without it.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
ARCH_FALLBACK = "tiny_point_seg"
TEMPLATE_BACKBONES = {"tinyvit_5m": "tiny_vit_5m_224", "tiny_vit_5m": "tiny_vit_5m_224"}


def _dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.GELU(),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.GELU(),
    )


class TinyPointSeg(nn.Module):
    def __init__(self, input_size: int = 512, embed_dim: int = 256, width: int = 32) -> None:
        super().__init__()
        self.input_size = input_size
        self.embed_dim = embed_dim
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(w // 2), nn.GELU())  # 1/2
        self.s4 = _dw(w // 2, w, 2)  # 1/4
        self.s8 = nn.Sequential(_dw(w, 2 * w, 2), _dw(2 * w, 2 * w, 1))  # 1/8
        self.s16 = nn.Sequential(_dw(2 * w, 4 * w, 2), _dw(4 * w, 4 * w, 1), _dw(4 * w, 4 * w, 1))  # 1/16
        self.proj = nn.Conv2d(4 * w, embed_dim, 1)  # the embedding aligned with the teacher's
        self.prompt16 = nn.Conv2d(2, embed_dim, 3, 1, 1)
        self.dec16 = nn.Sequential(nn.Conv2d(embed_dim, 2 * w, 1), nn.GELU())
        self.dec4 = _dw(2 * w + w + 2, w, 1)
        self.dec2 = _dw(w + w // 2 + 2, w // 2, 1)
        self.head = nn.Conv2d(w // 2, 1, 1)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    @staticmethod
    def heatmaps(points: torch.Tensor, labels: torch.Tensor, hw: tuple[int, int], scale: float,
                 sigma: float = 1.5) -> torch.Tensor:
        """(B, 2, h, w) Gaussian maps of positive / negative points; points in input pixels."""
        h, w = hw
        ys = (torch.arange(h, device=points.device, dtype=points.dtype) + 0.5).view(1, 1, h, 1)
        xs = (torch.arange(w, device=points.device, dtype=points.dtype) + 0.5).view(1, 1, 1, w)
        px = (points[..., 0] / scale).view(*points.shape[:2], 1, 1)
        py = (points[..., 1] / scale).view(*points.shape[:2], 1, 1)
        g = torch.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2 * sigma**2))  # (B, N, h, w)
        pos = (g * (labels == 1).view(*labels.shape, 1, 1)).amax(dim=1)
        neg = (g * (labels == 0).view(*labels.shape, 1, 1)).amax(dim=1)
        return torch.stack([pos, neg], dim=1)

    def forward(self, images01: torch.Tensor, points: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (images01 - self.mean) / self.std
        f2 = self.stem(x)
        f4 = self.s4(f2)
        f16 = self.s16(self.s8(f4))
        emb = self.proj(f16)
        s = images01.shape[-1]
        p16 = self.heatmaps(points, labels, f16.shape[-2:], s / f16.shape[-1])
        d = self.dec16(emb + self.prompt16(p16))
        d = F.interpolate(d, size=f4.shape[-2:], mode="bilinear", align_corners=False)
        p4 = self.heatmaps(points, labels, f4.shape[-2:], s / f4.shape[-1])
        d = self.dec4(torch.cat([d, f4, p4], dim=1))
        d = F.interpolate(d, size=f2.shape[-2:], mode="bilinear", align_corners=False)
        p2 = self.heatmaps(points, labels, f2.shape[-2:], s / f2.shape[-1])
        d = self.dec2(torch.cat([d, f2, p2], dim=1))
        return emb, self.head(d)


def build_student(student_cfg: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """(model, meta) where meta names the architecture so a checkpoint can be rebuilt (stored with it)."""
    size = int(student_cfg.get("input_size", 512))
    arch = str(student_cfg.get("architecture") or "")
    if arch != ARCH_FALLBACK:
        external = _external_student(student_cfg)
        if external is not None:
            return external
    return TinyPointSeg(input_size=size), {"architecture": ARCH_FALLBACK, "input_size": size, "embed_dim": 256}


def save_best(model: nn.Module, meta: dict[str, Any], path: Any, extra: dict[str, Any] | None = None) -> None:
    """The best checkpoint in the project student's own format (inference.student.save_checkpoint) when the
    project student is trained, so the model registry and the runtimes load it; {"model", "meta"} otherwise."""
    if meta.get("architecture") != ARCH_FALLBACK:
        from inference.student import save_checkpoint

        save_checkpoint(model, path, extra=extra)
        return
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "meta": {**meta, **(extra or {})}}, tmp)
    tmp.replace(path)


def _external_student(student_cfg: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]] | None:
    """helper A's student, if it offers `build_student_for_training(cfg) -> (module, meta)` with our contract."""
    cfg = dict(student_cfg)
    if cfg.get("backbone") in TEMPLATE_BACKBONES:  # seed 001's descriptive name -> the timm model it means
        cfg["backbone"] = TEMPLATE_BACKBONES[cfg["backbone"]]
    for name in ("inference.student", "inference.student_model", "inference.students"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        fn = getattr(mod, "build_student_for_training", None)
        if fn is not None:
            model, meta = fn(cfg)
            return model, {**meta, "student_cfg": cfg}
    return None
