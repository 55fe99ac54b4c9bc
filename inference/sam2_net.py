"""SAM 2 at the tensor level: the one wrapper that prediction, teacher fine-tuning, the distillation targets and the
ONNX export share (so the teacher a user predicts with is the network the student was taught by and the graph a
station runs). Models are built here too, from inference.sam2_configs' table: `build_model` (random weights),
`load_model` (an official-style checkpoint, verified against its config), `build` (either, as a Sam2Net).

Images go in as (B, 3, S, S) at the model's image_size: `encode` takes [0, 1] RGB and normalises here,
`encode_normalised` takes what inference.layout.normalised_canvases gives. Points are (x, y) in input pixels,
labels 1 / 0 / -1 (padding, SAM's "not a point").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from inference.errors import ModelError, ModelMismatchError
from inference.sam2_configs import has_click_maps, hydra_config, resolve_config
from inference.student import click_maps, read_checkpoint

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
FEATURES = ("image_embed", "high_res_0", "high_res_1")
# Hiera trunk (embed_dim, number of blocks) -> size letter; how a mismatched checkpoint is recognised.
_TRUNKS = {(96, 12): "t", (96, 16): "s", (112, 24): "b+", (144, 48): "l"}


class ClickMaps(nn.Module):
    """Gaussian maps of the positive and negative clicks, projected (1 x 1 convolutions) onto the three places SAM 2's
    mask decoder reads image features: the dense prompt added to the 1/16 embedding before the two-way transformer,
    and the 1/8 and 1/4 skip features its upscaling adds. This is how the student's decoder (inference.student) sees
    its clicks. Attached to the package's decoder as `sam_mask_decoder.click_maps`, so its weights travel in the
    official checkpoint format and fine-tuning trains them with the decoder."""

    SIGMA = 1.5  # in cells of each grid, as the student's click_sigma

    def __init__(self, embed_dim: int, s1_dim: int, s0_dim: int) -> None:
        super().__init__()
        self.embed = nn.Conv2d(2, embed_dim, 1)
        self.s1 = nn.Conv2d(2, s1_dim, 1)
        self.s0 = nn.Conv2d(2, s0_dim, 1)

    def forward(self, points: torch.Tensor, labels: torch.Tensor, image_size: int, dense: torch.Tensor,
                hi: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(dense, [high_res_0, high_res_1]) with the clicks' maps added; every output has the prompts' batch."""
        pts = points.float()

        def maps(conv: nn.Conv2d, like: torch.Tensor) -> torch.Tensor:
            hw = like.shape[-1]
            return conv(click_maps(pts, labels, hw, image_size // hw, self.SIGMA).to(conv.weight.dtype))

        return dense + maps(self.embed, dense), [hi[0] + maps(self.s0, hi[0]), hi[1] + maps(self.s1, hi[1])]


def add_click_maps(model: nn.Module) -> None:
    """Give a SAM 2 model's mask decoder its ClickMaps (random weights; CLICK_MAP_CONFIGS)."""
    dec = model.sam_mask_decoder
    device = next(dec.parameters()).device
    dec.click_maps = ClickMaps(dec.transformer_dim, dec.conv_s1.out_channels, dec.conv_s0.out_channels).to(device)


def decoder_click_maps(model: nn.Module) -> ClickMaps | None:
    """A SAM 2 model's ClickMaps where its config has them (CLICK_MAP_CONFIGS), else None."""
    return dict(model.sam_mask_decoder.named_children()).get("click_maps")


class Sam2Net(nn.Module):
    """Image embedding (B, 256, S/16, S/16) + high-res features, and all four mask outputs (B, 4, S/4, S/4) with
    their predicted IoU for point prompts."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    @property
    def image_size(self) -> int:
        return int(self.model.image_size)

    @property
    def convolutional_trunk(self) -> bool:
        """A timm CNN in Hiera's place (inference.sam2_trunks). Fine-tuning keeps its weights channels_last, the
        layout of the training batches, as the student's: its step with everything contiguous is 1.46x slower on an
        H100 (bench/bench_train_step.py, docs/benchmarks.md). Hiera, a ViT, stays as it was measured."""
        from inference.sam2_trunks import TimmTrunk

        return isinstance(self.model.image_encoder.trunk, TimmTrunk)

    def encode_normalised(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        m = self.model
        out = m.forward_image(x)
        _, vision_feats, _, feat_sizes = m._prepare_backbone_features(out)
        if m.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + m.no_mem_embed
        b = x.shape[0]
        feats = [f.permute(1, 2, 0).reshape(b, -1, *hw) for f, hw in zip(vision_feats, feat_sizes)]
        return {"image_embed": feats[-1], "high_res_0": feats[0], "high_res_1": feats[1]}

    def encode(self, images01: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.encode_normalised((images01 - self.mean) / self.std)

    @property
    def clicks(self) -> ClickMaps | None:
        return decoder_click_maps(self.model)

    def _prompt(self, points: torch.Tensor, labels: torch.Tensor,
                mask_input: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.sam_prompt_encoder(points=(points.float(), labels.int()), boxes=None,
                                             masks=None if mask_input is None else mask_input.float())

    def _prompted(self, feats: dict[str, torch.Tensor], points: torch.Tensor, labels: torch.Tensor,
                  mask_input: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], bool]:
        """(sparse, dense, high-res features, repeat_image) for the decoder: the image side of batch 1 repeated
        over B prompts, and the clicks' maps added where the model has them."""
        sparse, dense = self._prompt(points, labels, mask_input)
        b = points.shape[0]
        repeat = feats["image_embed"].shape[0] == 1 and b > 1
        hi = [feats["high_res_0"], feats["high_res_1"]]
        if repeat:
            hi = [h.expand(b, -1, -1, -1) for h in hi]
        cm = self.clicks
        if cm is not None:
            dense, hi = cm(points, labels, self.image_size, dense, hi)
        return sparse, dense, hi, repeat

    def decode_all(self, feats: dict[str, torch.Tensor], points: torch.Tensor,
                   labels: torch.Tensor, mask_input: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, 4, S/4, S/4), iou (B, 4)): output 0 is SAM's single-mask answer, 1..3 the multimask
        candidates. An image side of batch 1 is repeated over B prompts. A box goes in as two points labelled 2 and
        3 in front of the clicks (what SAM2ImagePredictor does); `mask_input` (B, 1, S/4, S/4) is SAM 2's mask
        input, in logits."""
        m = self.model
        sparse, dense, hi, repeat = self._prompted(feats, points, labels, mask_input)
        masks, iou, _, _ = m.sam_mask_decoder.predict_masks(
            image_embeddings=feats["image_embed"], image_pe=m.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, repeat_image=repeat,
            high_res_features=hi)
        return masks, iou

    def decode_single(self, feats: dict[str, torch.Tensor], points: torch.Tensor,
                      labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM 2's mask decoder asked for one mask ((B, 1, S/4, S/4) logits, (B, 1) iou), as its own forward gives
        it (including its dynamic fallback to the most stable multimask output): the exported teacher decoder."""
        m = self.model
        sparse, dense, hi, _ = self._prompted(feats, points, labels, None)
        masks, iou, _, _ = m.sam_mask_decoder(
            image_embeddings=feats["image_embed"], image_pe=m.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False,
            repeat_image=False, high_res_features=hi)
        return masks[:, :1], iou[:, :1]

    def forward(self, images01: torch.Tensor, points: torch.Tensor, labels: torch.Tensor):
        return self.decode_all(self.encode(images01), points, labels)


def choose_output(masks: torch.Tensor, iou: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's rule, batched: one click -> the multimask candidate with the best predicted IoU; more clicks -> the
    single-mask output. Returns ((B, 1, h, w) logits, (B,) index of the output used)."""
    n = (labels >= 0).sum(dim=1)
    best_multi = 1 + iou[:, 1:].argmax(dim=1)
    idx = torch.where(n == 1, best_multi, torch.zeros_like(best_multi))
    ar = torch.arange(masks.shape[0], device=masks.device)
    return masks[ar, idx].unsqueeze(1), idx


def guess_config(state: dict[str, Any]) -> str | None:
    """The short config name a SAM 2 state dict was trained with, from its trunk shape (None if unknown)."""
    if any(str(k).startswith("image_encoder.trunk.body.") for k in state):  # inference.sam2_trunks' one trunk
        clicks = any(str(k).startswith("sam_mask_decoder.click_maps.") for k in state)
        return "sam2.1_resnet50d_clicks" if clicks else "sam2.1_resnet50d"
    w = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if not isinstance(w, torch.Tensor):
        return None
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", str(k)))}
    size = _TRUNKS.get((int(w.shape[0]), len(blocks)))
    if size is None:
        return None
    version = "sam2.1" if "no_obj_embed_spatial" in state else "sam2"
    return f"{version}_hiera_{size}"


def build_model(config: str, image_size: int = 1024, device: str | torch.device = "cpu") -> nn.Module:
    """SAM2Base with random weights from a config of inference.sam2_configs (weights are loaded separately, with
    checks: load_model)."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import MissingConfigException

    from sam2.build_sam import build_sam2

    if not GlobalHydra.instance().is_initialized():  # sam2/__init__ does this; be robust if someone cleared it
        initialize_config_module("sam2", version_base="1.2")
    cfg_path, overrides = hydra_config(config)
    if int(image_size) != 1024:
        overrides.append(f"++model.image_size={int(image_size)}")
    try:
        model = build_sam2(cfg_path, None, device=str(device), mode="eval", hydra_overrides_extra=overrides)
    except MissingConfigException:
        raise ModelError(f"SAM 2 config not found: {cfg_path}") from None
    if has_click_maps(config):
        add_click_maps(model)
    return model


def read_state_dict(path: Path | str) -> dict[str, Any]:
    """The {"model": state_dict} of an official-style checkpoint, loaded with weights_only=True."""
    path = Path(path)
    obj = read_checkpoint(path)
    if obj.get("format") == "maskbench.student":
        raise ModelMismatchError(
            f"{path.name} is a maskbench student checkpoint, not SAM 2; add it with 'maskbench models add student {path.name}'"
        )
    state = obj.get("model")
    if not isinstance(state, dict) or not state:
        raise ModelMismatchError(f"{path.name} has no 'model' state dict; SAM 2 checkpoints are {{'model': state_dict}}")
    return state


def load_model(path: Path | str, config: str, image_size: int = 1024, device: str | torch.device = "cpu") -> nn.Module:
    """Build from `config` and load the checkpoint strictly; a wrong config is refused naming the likely one."""
    state = read_state_dict(path)
    short, _ = resolve_config(config)
    model = build_model(short, image_size=image_size, device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        guess = guess_config(state)
        name = Path(path).name
        if guess and guess != short:
            raise ModelMismatchError(
                f"{name} does not match config {short}: it looks like a {guess} checkpoint (use --config {guess})"
            ) from None
        lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
        raise ModelMismatchError(f"{name} does not match config {short}: {' '.join(lines[:2])[:240]}") from None
    return model.to(device).eval()


def build(config: str, image_size: int, checkpoint: Any = None, device: str = "cpu") -> Sam2Net:
    """A Sam2Net from a config of inference.sam2_configs with random weights or an official checkpoint."""
    if checkpoint:
        return Sam2Net(load_model(checkpoint, config, image_size=image_size, device=device))
    return Sam2Net(build_model(config, image_size=image_size, device=device))
