"""The teacher of a training run: SAM 2 built from the run's settings (config, checkpoint, canvas size), wrapped as
inference.sam2_net.Sam2Net, the same wrapper prediction uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from inference.sam2_net import Sam2Net
from inference.training.settings import TrainConfigError


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


def build_teacher_net(dist: dict[str, Any], device: str = "cpu", trainable: bool = False) -> Sam2Net:
    """The teacher of a run as a Sam2Net: frozen for distillation targets, or with the parts fine-tuning trains
    (prompt encoder and mask decoder, and the image encoder unless finetune_teacher.train_image_encoder is off)."""
    from inference.training.settings import teacher_config_name

    t = dist["teacher"]
    model = build_sam2_model(teacher_config_name(dist), t.get("checkpoint"), int(t.get("image_size", 1024)),
                             device=device)
    net = Sam2Net(model).to(device)
    if not trainable:
        for p in net.parameters():
            p.requires_grad_(False)
        return net.eval()
    train_enc = bool(dist["finetune_teacher"].get("train_image_encoder", True))
    for name, p in model.named_parameters():
        top = name.split(".")[0]
        p.requires_grad_(top in ("sam_prompt_encoder", "sam_mask_decoder", "no_mem_embed")
                         or (train_enc and top == "image_encoder"))
    return net.train()
