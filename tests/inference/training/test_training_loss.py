"""Seed 001's loss: the exact formula with unit weights, per-sample weights, and the consistency of augments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inference.training.data import augment, sample_points
from inference.training.losses import SegmentationDistillationLoss
from inference.training.sample_weights import normalise


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
    per = loss.cosine_feature_loss(s_emb, t_emb)
    _, t0 = loss(s_emb, t_emb, s_log, t_log, gt, w0)
    assert torch.allclose(t0["feat"], (per[0] + per[2]) / 3)


def test_no_feature_loss_drops_the_term() -> None:
    s_emb, t_emb, s_log, t_log, gt = _batch()
    total, terms = SegmentationDistillationLoss(feat_weight=0.0)(s_emb, t_emb, s_log, t_log, gt)
    assert float(terms["feat"]) == 0.0
    assert torch.allclose(total, 0.3 * terms["soft"] + 0.3 * terms["dice"])


def test_review_weight_shapes_are_normalised() -> None:
    class W:
        feature, soft, dice, hard = 0.2, 0.3, 0.4, True

    out = normalise({1: {"feature": 0.5, "soft": 2.0, "dice": 1.5, "hard": True}, 2: 0.7, 3: (1, 2, 3), 4: W(),
                     5: {"hard": False}})
    assert out == {1: (0.5, 2.0, 1.5), 2: (0.7, 0.7, 0.7), 3: (1.0, 2.0, 3.0), 4: (0.2, 0.3, 0.4), 5: (1.0, 1.0, 1.0)}


@pytest.mark.parametrize("seed", range(12))
def test_geometric_augments_move_maps_and_prompt_together(seed: int) -> None:
    s = 32
    mask = np.zeros((s, s), bool)
    mask[4:12, 18:29] = True  # off-centre, asymmetric
    pts, labels = sample_points(mask, 2, seed=seed, key="k")
    gt = torch.from_numpy(mask).float().unsqueeze(0)
    item = {
        "image": torch.rand(3, s, s) * 0.5 + 0.25,
        "gt": gt.clone(),
        "teacher_logits": gt.clone() * 10 - 5,  # a teacher that agrees with gt
        "teacher_emb": gt.repeat(4, 1, 1).clone() * 3,
        "points": torch.from_numpy(pts),
        "labels": torch.from_numpy(labels),
    }
    cfg = {"hflip": 0.5, "vflip": 0.5, "rot90": 0.7, "exposure": 0.5, "noise": 0.5, "motion_blur": 0.5}
    out = augment(item, np.random.default_rng(seed), cfg)
    assert torch.equal(out["gt"] > 0.5, out["teacher_logits"] > 0)
    assert torch.equal(out["gt"].expand(4, -1, -1) > 0.5, out["teacher_emb"] > 1)
    for x, y in out["points"].numpy():  # every positive prompt still lands inside the moved mask
        assert out["gt"][0, int(y * s), int(x * s)] == 1
    assert out["image"].min() >= 0 and out["image"].max() <= 1
    assert set(torch.unique(out["gt"]).tolist()) <= {0.0, 1.0}  # photometric changes never touch masks


def test_empty_mask_gets_negative_prompts() -> None:
    pts, labels = sample_points(np.zeros((20, 30), bool), 3, seed=0, key="x")
    assert pts.shape == (3, 2) and (labels == 0).all() and (pts >= 0).all() and (pts <= 1).all()
