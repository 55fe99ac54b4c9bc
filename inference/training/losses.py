"""Seed 001's SegmentationDistillationLoss, with per-sample weights for each term, and the supervised mask loss.

With all weights 1 the distillation total equals the seed's formula exactly: 0.4 x cosine feature alignment on the
image embeddings (after bringing both to a common H x W, bilinear, align_corners=False) + 0.3 x temperature-scaled
soft BCE against sigmoid(teacher_logits / T) + 0.3 x Dice on ground truth. Each term is computed per sample,
multiplied by that sample's weight for the term, and averaged over the batch (sum(w * l) / B, so down-weighting a
sample really lowers its pull on the gradient).

The trainer (issue 14) calls the per-sample terms itself, on logits upsampled to the canvas (masks are never
resampled below their own resolution), over the crop's pixels only (`valid`), with positive pixels weighted
(`pos_weight`: defects cover 0.2-24% of a crop) and the Dice term completed by a pixel BCE.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def match_spatial(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False)


def cosine_feature_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """(B,) 1 - the mean over channels of the cosine between the student's and the teacher's map of that channel
    (both brought to the teacher's H x W): seed 001's formula verbatim (its normalisation runs over the flattened
    spatial axis, so this compares where each channel responds, not each cell's channel vector)."""
    s = match_spatial(student_emb.float(), teacher_emb.shape[-2:])
    s_flat = F.normalize(s.flatten(2), dim=-1)
    t_flat = F.normalize(teacher_emb.float().flatten(2), dim=-1)
    return 1.0 - (s_flat * t_flat).sum(dim=-1).mean(dim=1)


def _masked_mean(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if valid is None:
        return x.flatten(1).mean(1)
    v = valid.float()
    return (x * v).flatten(1).sum(1) / v.flatten(1).sum(1).clamp(min=1.0)


def soft_bce(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
             valid: torch.Tensor | None = None, pos_weight: float = 1.0) -> torch.Tensor:
    """(B,) BCE of the student's logits against sigmoid(teacher / T)."""
    t = match_spatial(teacher_logits.float(), student_logits.shape[-2:])
    soft = torch.sigmoid(t / temperature)
    pw = None if pos_weight == 1.0 else torch.tensor(pos_weight, device=t.device)
    per_px = F.binary_cross_entropy_with_logits(student_logits.float(), soft, reduction="none", pos_weight=pw)
    return _masked_mean(per_px, valid)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
              smooth: float = 0.0) -> torch.Tensor:
    """(B,) 1 - Dice. smooth 0 is the seed's form (1e-6 guard); 1 makes an empty target with an empty prediction
    cost nothing (defect-free crops)."""
    probs = torch.sigmoid(match_spatial(logits.float(), target.shape[-2:]))
    if valid is not None:
        probs = probs * valid.float()
    gt = target.float()
    inter = (probs * gt).sum(dim=(1, 2, 3))
    union = probs.sum(dim=(1, 2, 3)) + gt.sum(dim=(1, 2, 3))
    if smooth:
        return 1.0 - (2.0 * inter + smooth) / (union + smooth)
    return 1.0 - 2.0 * inter / (union + 1e-6)


def supervised_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
                    pos_weight: float = 3.0) -> torch.Tensor:
    """(B,) Dice + positive-weighted BCE against a target mask, over the crop's pixels."""
    logits = match_spatial(logits.float(), target.shape[-2:])
    pw = torch.tensor(pos_weight, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none", pos_weight=pw)
    return dice_loss(logits, target, valid, smooth=1.0) + _masked_mean(bce, valid)


class SegmentationDistillationLoss(nn.Module):
    """The seed's loss object (kept whole for readers of seed 001 and its test); the trainer uses the per-sample
    functions above directly."""

    def __init__(self, feat_weight: float = 0.4, soft_weight: float = 0.3, dice_weight: float = 0.3,
                 temperature: float = 2.0) -> None:
        super().__init__()
        self.feat_weight = feat_weight
        self.soft_weight = soft_weight
        self.dice_weight = dice_weight
        self.temperature = temperature

    def forward(self, student_emb: torch.Tensor | None, teacher_emb: torch.Tensor | None,
                student_logits: torch.Tensor, teacher_logits: torch.Tensor, ground_truth: torch.Tensor,
                weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """weights: (B, 3) per-sample multipliers for (feature, soft, dice), or None for all ones.
        Returns the total and the detached batch-mean of each weighted term (feat, soft, dice)."""
        b = student_logits.shape[0]
        w = torch.ones(b, 3, device=student_logits.device) if weights is None else weights.float()
        if self.feat_weight > 0 and student_emb is not None and teacher_emb is not None:
            feat = cosine_feature_loss(student_emb, teacher_emb)
        else:
            feat = torch.zeros(b, device=student_logits.device)
        soft = soft_bce(student_logits, teacher_logits, self.temperature)
        dice = dice_loss(match_spatial(student_logits.float(), ground_truth.shape[-2:]), ground_truth)
        feat_m = (w[:, 0] * feat).sum() / b
        soft_m = (w[:, 1] * soft).sum() / b
        dice_m = (w[:, 2] * dice).sum() / b
        total = self.feat_weight * feat_m + self.soft_weight * soft_m + self.dice_weight * dice_m
        return total, {"feat": feat_m.detach(), "soft": soft_m.detach(), "dice": dice_m.detach()}
