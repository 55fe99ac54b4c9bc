"""Seed 001's SegmentationDistillationLoss, with per-sample weights for each term.

With all weights 1 the total equals the seed's formula exactly: 0.4 x cosine feature alignment on the image
embeddings (after bringing both to a common H x W, bilinear, align_corners=False) + 0.3 x temperature-scaled soft
BCE against sigmoid(teacher_logits / T) + 0.3 x Dice on ground truth. Each term is computed per sample, multiplied
by that sample's weight for the term, and averaged over the batch (sum(w * l) / B, so down-weighting a sample
really lowers its pull on the gradient).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def match_spatial(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False)


class SegmentationDistillationLoss(nn.Module):
    def __init__(
        self,
        feat_weight: float = 0.4,
        soft_weight: float = 0.3,
        dice_weight: float = 0.3,
        temperature: float = 2.0,
        feature_hw: str = "teacher",
    ) -> None:
        super().__init__()
        self.feat_weight = feat_weight
        self.soft_weight = soft_weight
        self.dice_weight = dice_weight
        self.temperature = temperature
        self.feature_hw = feature_hw  # "teacher" | "student": which embedding's H x W is the common one

    # Per-sample terms: each returns (B,)
    def cosine_feature_loss(self, student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
        hw = teacher_emb.shape[-2:] if self.feature_hw == "teacher" else student_emb.shape[-2:]
        s = match_spatial(student_emb.float(), hw)
        t = match_spatial(teacher_emb.float(), hw)
        s_flat = F.normalize(s.flatten(2), dim=-1)
        t_flat = F.normalize(t.flatten(2), dim=-1)
        return 1.0 - (s_flat * t_flat).sum(dim=-1).mean(dim=1)

    def soft_bce_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        t = match_spatial(teacher_logits.float(), student_logits.shape[-2:])
        soft_targets = torch.sigmoid(t / self.temperature)
        per_px = F.binary_cross_entropy_with_logits(student_logits.float(), soft_targets, reduction="none")
        return per_px.flatten(1).mean(dim=1)

    def dice_loss(self, student_logits: torch.Tensor, ground_truth: torch.Tensor) -> torch.Tensor:
        logits = match_spatial(student_logits.float(), ground_truth.shape[-2:])
        probs = torch.sigmoid(logits)
        gt = ground_truth.float()
        intersection = (probs * gt).sum(dim=(1, 2, 3))
        union = probs.sum(dim=(1, 2, 3)) + gt.sum(dim=(1, 2, 3))
        return 1.0 - 2.0 * intersection / (union + 1e-6)

    def forward(
        self,
        student_emb: torch.Tensor | None,
        teacher_emb: torch.Tensor | None,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        ground_truth: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """weights: (B, 3) per-sample multipliers for (feature, soft, dice), or None for all ones.
        Returns the total and the detached batch-mean of each weighted term (feat, soft, dice)."""
        b = student_logits.shape[0]
        w = torch.ones(b, 3, device=student_logits.device) if weights is None else weights.float()
        if self.feat_weight > 0 and student_emb is not None and teacher_emb is not None:
            feat = self.cosine_feature_loss(student_emb, teacher_emb)
        else:
            feat = torch.zeros(b, device=student_logits.device)
        soft = self.soft_bce_loss(student_logits, teacher_logits)
        dice = self.dice_loss(student_logits, ground_truth)
        feat_m = (w[:, 0] * feat).sum() / b
        soft_m = (w[:, 1] * soft).sum() / b
        dice_m = (w[:, 2] * dice).sum() / b
        total = self.feat_weight * feat_m + self.soft_weight * soft_m + self.dice_weight * dice_m
        return total, {"feat": feat_m.detach(), "soft": soft_m.detach(), "dice": dice_m.detach()}


def supervised_mask_loss(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-sample Dice + BCE on ground truth (teacher fine-tuning). logits (B, K, h, w), gt (B, 1, H, W) ->
    (B, K) so the caller can back-propagate the best of SAM's K multimask outputs."""
    logits = match_spatial(logits.float(), gt.shape[-2:])
    g = gt.float().expand_as(logits)
    probs = torch.sigmoid(logits)
    inter = (probs * g).sum(dim=(2, 3))
    union = probs.sum(dim=(2, 3)) + g.sum(dim=(2, 3))
    dice = 1.0 - (2.0 * inter + 1.0) / (union + 1.0)
    bce = F.binary_cross_entropy_with_logits(logits, g, reduction="none").mean(dim=(2, 3))
    return dice + bce
