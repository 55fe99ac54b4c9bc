"""The plain supervised baseline of the distillation table: a small U-Net whose input is the RGB crop plus Gaussian
maps of the positive and negative clicks, trained from scratch on the same split (`maskbench train --mode unet`).

Why it is in the table: it is what a practitioner would try first (about 2M parameters, no teacher, no
transformer), so it says at a glance whether distillation adds anything. It sees the clicks at full resolution from
its first layer, so it must run whole for every click: a fine baseline, not an interactive product model.

Checkpoints: {"format": "maskbench.unet", "version": 1, "config", "state_dict"}, loaded with weights_only=True.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from inference import layout as lay
from inference.errors import CheckpointError, ModelMismatchError
from inference.segmenter import Decoded, Embedding, Prompt

CHECKPOINT_FORMAT = "maskbench.unet"


@dataclass
class UNetConfig:
    input_size: int = 512  # prediction canvas (the network itself takes any multiple of 16)
    width: int = 24
    click_sigma: float = 6.0  # pixels
    scale: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """4 levels, widths w, 2w, 4w, 8w, 16w at the bottleneck (w=24: about 2M parameters)."""

    def __init__(self, cfg: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg or UNetConfig()
        w = self.config.width
        chans = [w, 2 * w, 4 * w, 8 * w, 16 * w]
        self.downs = nn.ModuleList()
        cin = 5
        for c in chans:
            self.downs.append(_block(cin, c))
            cin = c
        self.ups = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for c in reversed(chans[:-1]):
            self.ups.append(nn.ConvTranspose2d(cin, c, 2, stride=2))
            self.fuse.append(_block(2 * c, c))
            cin = c
        self.head = nn.Conv2d(cin, 1, 1)

    def forward(self, x_norm: torch.Tensor, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """x_norm (B, 3, H, W) normalised; points (B, N, 2) pixel (x, y); labels (B, N) -> logits (B, 1, H, W)."""
        maps = click_maps_full(points, labels, x_norm.shape[-2:], self.config.click_sigma).to(x_norm.dtype)
        h = torch.cat([x_norm, maps], dim=1)
        skips = []
        for i, down in enumerate(self.downs):
            h = down(h if i == 0 else F.max_pool2d(h, 2))
            skips.append(h)
        for up, fuse, skip in zip(self.ups, self.fuse, reversed(skips[:-1])):
            h = fuse(torch.cat([up(h), skip], dim=1))
        return self.head(h)


def click_maps_full(points: torch.Tensor, labels: torch.Tensor, hw: Sequence[int], sigma: float) -> torch.Tensor:
    h, w = int(hw[0]), int(hw[1])
    ys = torch.arange(h, device=points.device, dtype=torch.float32)[None, None, :, None]
    xs = torch.arange(w, device=points.device, dtype=torch.float32)[None, None, None, :]
    px = points[..., 0].float()[..., None, None]
    py = points[..., 1].float()[..., None, None]
    g = torch.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2 * sigma**2))
    lab = labels[..., None, None]
    return torch.stack([(g * (lab == 1)).amax(1), (g * (lab == 0)).amax(1)], dim=1)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(model: UNet, path: Path | str, extra: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "version": 1, "config": model.config.to_dict(),
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": dict(extra or {})},
               tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: Path | str) -> UNet:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling error means a broken file
        raise CheckpointError(f"{path.name} is not a readable PyTorch checkpoint: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise ModelMismatchError(f"{path.name} is not a maskbench U-Net baseline checkpoint")
    model = UNet(UNetConfig(**obj["config"]))
    model.load_state_dict(obj["state_dict"])
    return model.eval()


class UNetSegmenter:
    """The baseline behind the Segmenter interface, at native pixel scale (inference.layout tiles). `embed` keeps
    the canvases; every click runs the whole network (which is what an early-fusion model costs)."""

    kind = "baseline"

    def __init__(self, model: UNet, device: str = "cpu", name: str = "unet") -> None:
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.name = name
        self.sha256 = ""
        self.input_size = model.config.input_size
        self.encoder_images = 0

    def embed(self, image: np.ndarray) -> Embedding:
        from inference.preprocess import as_rgb

        rgb = as_rgb(image)
        lo = lay.plan(rgb.shape[:2], self.input_size, self.model.config.scale)
        self.encoder_images += 1
        return Embedding(features={"canvases": lay.normalised_canvases(rgb, lo)}, orig_hw=rgb.shape[:2],
                         input_size=self.input_size, layout=lo)

    @torch.no_grad()
    def decode(self, embedding: Embedding, points: np.ndarray, labels: np.ndarray) -> Decoded:
        lo = embedding.layout
        assert lo is not None
        parts = []
        for t, coords, tl in lay.tile_prompts(lo, points, labels):
            c, lb = lay.pad_points([(coords, tl)])
            x = torch.from_numpy(embedding.features["canvases"][t:t + 1]).to(self.device)
            logits = self.model(x, torch.from_numpy(c).to(self.device), torch.from_numpy(lb).to(self.device))
            parts.append((t, logits[0, 0].float().cpu().numpy()))
        return Decoded(logits=lay.stitch(lo, parts), score=1.0)

    def predict(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Decoded]:
        return [self.decode(self.embed(im), p.points, p.labels) for im, p in zip(images, prompts)]
