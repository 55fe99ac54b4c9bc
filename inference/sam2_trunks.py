"""A convolutional trunk for SAM 2's image encoder: a timm backbone (random init, never hub weights) where the
package's configs put Hiera, so the rest of SAM 2 (FPN neck, prompt encoder, two-way mask decoder with its
high-resolution skips, the memory modules) is the sam2 package's own, unchanged.

Why: SAM 2's Hiera is a ViT whose published weights come from MAE pre-training and SA-1B; from random weights on a
few hundred defect crops it does not learn (validation IoU 0.10-0.11 on magnetic-tile, docs/benchmarks.md), just
as TinyViT did not for the student, where convolutional backbones did. Sites without the official weights (this
project's machines included) get a teacher that can learn from their own crops: `sam2.1_resnet50d_clicks` (with
click maps in the decoder) or `sam2.1_resnet50d` (inference.sam2_configs). Sites with them use Hiera and SA-1B, as
before.

Hydra builds it from the config (`_target_: inference.sam2_trunks.TimmTrunk`), so it must stay importable by that
dotted path.
"""

from __future__ import annotations

import timm
import torch
import torch.nn as nn


class TimmTrunk(nn.Module):
    """The four feature maps SAM 2's FpnNeck expects (strides 4, 8, 16, 32, highest resolution first), and their
    channels lowest resolution first in `channel_list` (what ImageEncoder checks against the neck's list)."""

    def __init__(self, backbone: str) -> None:
        super().__init__()
        self.body = timm.create_model(backbone, pretrained=False, features_only=True)
        strides = self.body.feature_info.reduction()
        self.first = strides.index(4) if 4 in strides else -1
        if self.first < 0 or strides[self.first:self.first + 4] != [4, 8, 16, 32]:
            raise ValueError(f"SAM 2 trunk {backbone!r} has feature strides {strides}; it needs 4, 8, 16 and 32")
        self.channel_list = list(reversed(self.body.feature_info.channels()[self.first:self.first + 4]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)[self.first:self.first + 4]
