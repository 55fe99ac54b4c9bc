"""Seed 001's loss: the exact formula with unit weights and per-sample weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from inference.training.losses import SegmentationDistillationLoss, cosine_feature_loss


def _seed_reference(s_emb, t_emb, s_logits, t_logits, gt, T=2.0):
    """Seed 001's SegmentationDistillationLoss verbatim (after bringing the embeddings to a common H x W)."""
    s_emb = F.interpolate(s_emb, size=t_emb.shape[-2:], mode="bilinear", align_corners=False)
    s_flat = F.normalize(s_emb.flatten(2), dim=-1)
    t_flat = F.normalize(t_emb.flatten(2), dim=-1)
    feat = 1.0 - (s_flat * t_flat).sum(dim=-1).mean()
    soft = F.binary_cross_entropy_with_logits(s_logits, torch.sigmoid(t_logits / T))
    probs = torch.sigmoid(s_logits)
    inter = (probs * gt).sum(dim=(1, 2, 3))
    union = probs.sum(dim=(1, 2, 3)) + gt.sum(dim=(1, 2, 3))
    dice = 1.0 - (2.0 * inter / (union + 1e-6)).mean()
    return 0.4 * feat + 0.3 * soft + 0.3 * dice


def _batch(b=3):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(b, 256, 8, 8, generator=g), torch.randn(b, 256, 16, 16, generator=g),
            torch.randn(b, 1, 32, 32, generator=g), torch.randn(b, 1, 32, 32, generator=g),
            (torch.rand(b, 1, 32, 32, generator=g) > 0.7).float())


def test_unit_weights_equal_the_seed_formula() -> None:
    s_emb, t_emb, s_log, t_log, gt = _batch()
    total, terms = SegmentationDistillationLoss()(s_emb, t_emb, s_log, t_log, gt)
    assert torch.allclose(total, _seed_reference(s_emb, t_emb, s_log, t_log, gt), atol=1e-6)
    assert set(terms) == {"feat", "soft", "dice"}


def test_per_sample_weights_scale_each_term() -> None:
    s_emb, t_emb, s_log, t_log, gt = _batch()
    loss = SegmentationDistillationLoss()
    _, base = loss(s_emb, t_emb, s_log, t_log, gt)
    w = torch.tensor([[0.5, 1.0, 2.0]] * 3)
    total, terms = loss(s_emb, t_emb, s_log, t_log, gt, w)
    assert torch.allclose(terms["feat"], 0.5 * base["feat"])
    assert torch.allclose(terms["soft"], base["soft"])
    assert torch.allclose(terms["dice"], 2.0 * base["dice"])
    # zero weight on one sample removes exactly that sample's share
    w0 = torch.ones(3, 3)
    w0[1] = 0.0
    per = cosine_feature_loss(s_emb, t_emb)
    _, t0 = loss(s_emb, t_emb, s_log, t_log, gt, w0)
    assert torch.allclose(t0["feat"], (per[0] + per[2]) / 3)


def test_no_feature_loss_drops_the_term() -> None:
    s_emb, t_emb, s_log, t_log, gt = _batch()
    total, terms = SegmentationDistillationLoss(feat_weight=0.0)(s_emb, t_emb, s_log, t_log, gt)
    assert float(terms["feat"]) == 0.0
    assert torch.allclose(total, 0.3 * terms["soft"] + 0.3 * terms["dice"])


