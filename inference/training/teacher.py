"""SAM 2 through the sam2 package, at the torch level the trainer needs (batched, prompts already in input pixels).

Used to fill the teacher cache (frozen, no grad, once per data set) and by `finetune-teacher` (trainable).
Images go in as (B, 3, S, S) float in [0, 1] at the teacher's image_size; ImageNet normalisation happens here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from inference.training.settings import TrainConfigError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def build_sam2_model(config_name: str, checkpoint: str | Path | None, image_size: int, device: str = "cpu") -> nn.Module:
    """A SAM2Base from the package's Hydra config; weights from an official {"model": state_dict} file or random."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from sam2.build_sam import build_sam2

    if not GlobalHydra.instance().is_initialized():  # sam2/__init__ does this; be robust if someone cleared it
        initialize_config_module("sam2", version_base="1.2")
    from inference.sam2_configs import hydra_config

    config_name, reduced = hydra_config(config_name)
    if not reduced and not config_name.endswith(".yaml"):
        # a short name as `models add --config` takes it (sam2.1_hiera_s): one resolver for every entry point
        from inference.errors import ModelError
        from inference.teacher import resolve_config

        try:
            config_name = resolve_config(config_name)[1]
        except ModelError as exc:
            raise TrainConfigError(str(exc)) from None
    overrides = reduced + [f"++model.image_size={int(image_size)}"]
    ckpt = None
    if checkpoint:
        ckpt = Path(checkpoint).expanduser()
        if not ckpt.is_file():
            raise TrainConfigError(f"teacher checkpoint not found: {ckpt}")
    try:
        model = build_sam2(config_name, str(ckpt) if ckpt else None, device=device, mode="eval",
                           hydra_overrides_extra=overrides)
    except Exception as exc:  # hydra's MissingConfigException and friends
        if "MissingConfig" in type(exc).__name__ or "Cannot find primary config" in str(exc):
            raise TrainConfigError(f"SAM 2 config not found: {config_name}") from None
        raise
    return model


class Sam2Teacher(nn.Module):
    """Image embedding (B, 256, S/16, S/16) and low-res mask logits (B, K, S/4, S/4) for point prompts."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    @property
    def image_size(self) -> int:
        return int(self.model.image_size)

    def encode(self, images01: torch.Tensor) -> dict[str, Any]:
        m = self.model
        x = (images01 - self.mean) / self.std
        out = m.forward_image(x)
        _, vision_feats, _, feat_sizes = m._prepare_backbone_features(out)
        if m.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + m.no_mem_embed
        b = images01.shape[0]
        feats = [f.permute(1, 2, 0).reshape(b, -1, *hw) for f, hw in zip(vision_feats, feat_sizes)]
        return {"image_embed": feats[-1], "high_res_feats": feats[:-1]}

    def decode(self, enc: dict[str, Any], points: torch.Tensor, labels: torch.Tensor,
               multimask: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """points (B, N, 2) in teacher input pixels (x, y), labels (B, N). Returns (logits (B,K,h,w), iou (B,K))."""
        m = self.model
        sparse, dense = m.sam_prompt_encoder(points=(points.float(), labels.int()), boxes=None, masks=None)
        low_res, iou, _, _ = m.sam_mask_decoder(
            image_embeddings=enc["image_embed"],
            image_pe=m.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=False,
            high_res_features=enc["high_res_feats"],
        )
        return low_res, iou

    def forward(self, images01: torch.Tensor, points: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward (finetune-teacher): all K multimask logits and their predicted IoUs."""
        return self.decode(self.encode(images01), points, labels, multimask=True)

    @torch.no_grad()
    def targets(self, images01: torch.Tensor, points: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distillation targets: (embedding (B,256,h,w), best-scoring mask logits (B,1,S/4,S/4))."""
        enc = self.encode(images01)
        logits, iou = self.decode(enc, points, labels, multimask=True)
        best = iou.argmax(dim=1)
        chosen = logits[torch.arange(logits.shape[0], device=logits.device), best].unsqueeze(1)
        return enc["image_embed"], chosen


def build_teacher(dist: dict[str, Any], device: str = "cpu") -> tuple[Sam2Teacher, str]:
    """The frozen teacher for distillation and an identity string (config, weights, size) for cache keys."""
    from inference.training.settings import teacher_config_name

    t = dist["teacher"]
    name = teacher_config_name(dist)
    model = build_sam2_model(name, t.get("checkpoint"), int(t.get("image_size", 1024)), device=device)
    teacher = Sam2Teacher(model).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    ident = f"{name}|{t.get('checkpoint') or 'random'}|{teacher.image_size}"
    return teacher, ident
