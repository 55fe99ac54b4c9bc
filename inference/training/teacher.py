"""The teacher of a training run: SAM 2 built from the run's settings (config, checkpoint, canvas size) by
inference.sam2_net, as the Sam2Net wrapper prediction and export use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inference.errors import ModelError
from inference.sam2_net import Sam2Net, build
from inference.training.settings import TrainConfigError, teacher_config_name


def build_teacher_net(dist: dict[str, Any], device: str = "cpu", trainable: bool = False) -> Sam2Net:
    """The teacher of a run as a Sam2Net: frozen for distillation targets, or with the parts fine-tuning trains
    (prompt encoder and mask decoder, and the image encoder unless finetune_teacher.train_image_encoder is off)."""
    t = dist["teacher"]
    ckpt = Path(t["checkpoint"]).expanduser() if t.get("checkpoint") else None
    if ckpt is not None and not ckpt.is_file():
        raise TrainConfigError(f"teacher checkpoint not found: {ckpt}")
    try:
        net = build(teacher_config_name(dist), int(t.get("image_size", 1024)), ckpt, device=device).to(device)
    except ModelError as exc:  # unknown config, a checkpoint that does not fit it: the run's settings are wrong
        raise TrainConfigError(str(exc)) from None
    if not trainable:
        for p in net.parameters():
            p.requires_grad_(False)
        return net.eval()
    train_enc = bool(dist["finetune_teacher"].get("train_image_encoder", True))
    for name, p in net.model.named_parameters():
        top = name.split(".")[0]
        p.requires_grad_(top in ("sam_prompt_encoder", "sam_mask_decoder", "no_mem_embed")
                         or (train_enc and top == "image_encoder"))
    return net.train()
