"""SAM 2 at the tensor level: the one wrapper that prediction at native scale, teacher fine-tuning and the
distillation targets share (so the teacher a user predicts with is the network the student was taught by).

Images go in as (B, 3, S, S) at the model's image_size: `encode` takes [0, 1] RGB and normalises here,
`encode_normalised` takes what inference.layout.normalised_canvases gives. Points are (x, y) in input pixels,
labels 1 / 0 / -1 (padding, SAM's "not a point").
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
FEATURES = ("image_embed", "high_res_0", "high_res_1")


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

    def decode_all(self, feats: dict[str, torch.Tensor], points: torch.Tensor,
                   labels: torch.Tensor, mask_input: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, 4, S/4, S/4), iou (B, 4)): output 0 is SAM's single-mask answer, 1..3 the multimask
        candidates. An image side of batch 1 is repeated over B prompts. A box goes in as two points labelled 2 and
        3 in front of the clicks (what SAM2ImagePredictor does); `mask_input` (B, 1, S/4, S/4) is SAM 2's mask
        input, in logits."""
        m = self.model
        sparse, dense = m.sam_prompt_encoder(points=(points.float(), labels.int()), boxes=None,
                                             masks=None if mask_input is None else mask_input.float())
        b = points.shape[0]
        repeat = feats["image_embed"].shape[0] == 1 and b > 1
        hi = [feats["high_res_0"], feats["high_res_1"]]
        if repeat:
            hi = [h.expand(b, -1, -1, -1) for h in hi]
        masks, iou, _, _ = m.sam_mask_decoder.predict_masks(
            image_embeddings=feats["image_embed"], image_pe=m.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, repeat_image=repeat,
            high_res_features=hi)
        return masks, iou

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


def build(config: str, image_size: int, checkpoint: Any = None, device: str = "cpu") -> Sam2Net:
    """A Sam2Net from a config short name (sam2.1_hiera_t, ...) with random weights or an official checkpoint."""
    from inference.teacher import build_model, load_model

    if checkpoint:
        return Sam2Net(load_model(checkpoint, config, image_size=image_size, device=device))
    return Sam2Net(build_model(config, image_size=image_size, device=device))
