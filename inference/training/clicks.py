"""Interactive-style prompts for training, batched on the device (as SAM trains): 1-3 positive and 0-2 negative
clicks drawn from the target, then follow-up clicks placed in the largest error of the model's own prediction.

Why: a model trained on one fixed click per crop never learns what a second click means, and one click on a large
or low-contrast defect is often ambiguous; annotators correct with more clicks, so the model must use them.
Points are pixel indices (x, y) on the canvas, labels 1 / 0, and -1 for padding (no point).

Where a click lands: positives favour the target's interior (the first click of the evaluation protocol does too),
negatives the background close to the object (where a wrong mask spills), follow-ups the interior of the larger
error (false negatives -> positive click, false positives -> negative click), approximated with erosions because a
connected-component search per sample does not batch on a GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def erode(m: torch.Tensor, k: int) -> torch.Tensor:
    return -F.max_pool2d(-m, k, stride=1, padding=k // 2)


def dilate(m: torch.Tensor, k: int) -> torch.Tensor:
    m = F.max_pool2d(m, (1, k), stride=1, padding=(0, k // 2))
    return F.max_pool2d(m, (k, 1), stride=1, padding=(k // 2, 0))


def interior_weight(m: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) float mask -> weights 1..3 inside, growing towards the interior, 0 outside."""
    e1 = erode(m, 5)
    return m + e1 + erode(e1, 5)


def _draw(weights: torch.Tensor, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n points per row of (B, 1, S, S) weights; rows that are all zero draw from the uniform map and are flagged.
    Returns ((B, n, 2) pixel (x, y), (B,) bool: the row had weight)."""
    b, _, h, w = weights.shape
    flat = weights.reshape(b, h * w).float()
    ok = flat.sum(1) > 0
    flat = torch.where(ok[:, None], flat, torch.ones_like(flat))
    idx = torch.multinomial(flat, n, replacement=True, generator=gen)
    pts = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], dim=-1).float()
    return pts, ok


def initial_clicks(target: torch.Tensor, valid: torch.Tensor, gen: torch.Generator, max_pos: int = 3,
                   max_neg: int = 2, min_pos: int = 1, band: int = 31,
                   one_click_share: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """target, valid: (B, 1, S, S) float/bool. A crop with an empty target gets 1..max(1, max_neg) negative clicks
    (the honest prompt for "nothing here"). `one_click_share` of the crops with a target get exactly one positive
    click and no negative: the prompt an annotator's first click is, which a uniform 1-3 / 0-2 draw gives only one
    time in nine. Returns points (B, max_pos + max_neg, 2), labels (B, max_pos + max_neg)."""
    t = target.float()
    v = valid.float()
    b = t.shape[0]
    dev = t.device
    pos_pts, has_obj = _draw(interior_weight(t), max_pos, gen)
    near = dilate(t, band) * (1 - t) * v
    far = (1 - t) * v
    neg_w = torch.where((near.flatten(1).sum(1) > 0).view(b, 1, 1, 1), near, far)
    n_neg_slots = max(1, max_neg)
    neg_pts, has_bg = _draw(neg_w, n_neg_slots, gen)
    r = torch.rand(b, 2, generator=gen, device=dev)
    n_pos = (min_pos + (r[:, 0] * (max_pos - min_pos + 1)).floor()).clamp(max=max_pos).long()
    n_neg = (r[:, 1] * (max_neg + 1)).floor().clamp(max=max_neg).long()
    if one_click_share > 0:  # drawn only then: runs without it keep their random stream
        one = torch.rand(b, generator=gen, device=dev) < one_click_share
        n_pos = torch.where(one, torch.ones_like(n_pos), n_pos)
        n_neg = torch.where(one, torch.zeros_like(n_neg), n_neg)
    n_neg = torch.where(has_obj, n_neg, n_neg.clamp(min=1))  # empty target: negatives only
    n_pos = torch.where(has_obj, n_pos, torch.zeros_like(n_pos))
    n_neg = torch.where(has_bg, n_neg, torch.zeros_like(n_neg))
    slots_p = torch.arange(max_pos, device=dev)[None]
    slots_n = torch.arange(n_neg_slots, device=dev)[None]
    lab_p = torch.where(slots_p < n_pos[:, None], 1.0, -1.0)
    lab_n = torch.where(slots_n < n_neg[:, None], 0.0, -1.0)
    points = torch.cat([pos_pts, neg_pts], dim=1)
    labels = torch.cat([lab_p, lab_n], dim=1)
    return points[:, : max_pos + max(1, max_neg)], labels[:, : max_pos + max(1, max_neg)]


def error_clicks(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One follow-up click per sample in the larger error of `pred` (B, 1, S, S bool) against `target`: positive in
    missed object pixels, negative in spilled ones; label -1 (no click) where the prediction is already right."""
    t = target.float() > 0.5
    v = valid.bool()
    fn = (t & ~pred & v).float()
    fp = (pred & ~t & v).float()
    use_fn = fn.flatten(1).sum(1) >= fp.flatten(1).sum(1)
    err = torch.where(use_fn.view(-1, 1, 1, 1), fn, fp)
    pts, ok = _draw(interior_weight(err), 1, gen)
    labels = torch.where(ok, torch.where(use_fn, 1.0, 0.0), -1.0)[:, None]
    return pts, labels


def to_canvas_points(points: torch.Tensor, ratio: float) -> torch.Tensor:
    """Pixel-index points on one canvas -> another canvas of the same region `ratio` times larger (pixel centres
    map onto pixel centres)."""
    if ratio == 1.0:
        return points
    return (points + 0.5) * ratio - 0.5
