"""Validation during training: the one-click protocol of the test table, on the validation crops, on the device.

The validation crops are cut into the same tiles prediction uses (inference.layout) once per run, each crop gets the
first click `maskbench predict --prompts ground_truth` would give it (inference.prompts.mask_prompt with the same
seed), and IoU is computed against the crop's own mask after stitching its tiles, so the number that picks the best
checkpoint is the number the test table reports (on other crops).

Validation runs every epoch, and on a few hundred crops an epoch takes one or two seconds on a GPU, so the IoUs are
reduced on the device and read back once per figure, not once per crop: each read-back waits for the GPU, which
another training may hold (beside another job the students' and the U-Net's validations took 0.25-0.31 s, 13-28%
of their epochs, docs/benchmarks.md; how much of that the read-backs were is not yet measured).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from inference import layout as lay
from inference.prompts import mask_prompt
from inference.training import crops as cr

PROMPT_SEED = 0  # maskbench predict's default --seed


class ValSet:
    def __init__(self, crops: cr.CropSet, canvas: int, device: torch.device) -> None:
        self.crops = crops
        self.views = cr.tile_views(crops, canvas)
        self.canvas = canvas
        c = cr.assemble(crops, self.views.crop, self.views.origin, canvas)
        self.x = c.normalised()
        self.valid = c.valid
        pts = np.zeros((len(self.views), 1, 2), np.float32)
        lbs = np.full((len(self.views), 1), -1.0, np.float32)
        for v, (ci, (y0, x0)) in enumerate(zip(self.views.crop, self.views.origin)):
            s = crops.samples[ci]
            full = crops.targets[ci]
            assert full is not None, "validation crops are labelled"
            # the click is chosen on the crop's own mask at its own resolution, then moved onto the canvas
            from store import rle as rle_mod

            gt = rle_mod.decode(s.target_rle).astype(bool)  # type: ignore[arg-type]
            p = mask_prompt(gt, 1, 0, seed=(PROMPT_SEED, s.sample_id))
            if not len(p.labels) or p.labels[0] != 1:
                continue  # defect-free crop: scored by its false-positive area elsewhere, not by IoU here
            x, y = p.points[0] * crops.scale - np.array([x0, y0], np.float32)
            if 0 <= x < canvas and 0 <= y < canvas:
                pts[v, 0] = (x, y)
                lbs[v, 0] = 1.0
        self.points = torch.from_numpy(pts).to(device)
        self.labels = torch.from_numpy(lbs).to(device)
        self.decoded = lbs[:, 0] == 1  # the views that hold their crop's click (host side: no read-back)
        self.scored = sorted({ci for v, ci in enumerate(self.views.crop) if self.decoded[v]})
        self.teacher_logits: torch.Tensor | None = None
        self._teacher_masks: dict[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.scored)

    def stitched(self, logits: torch.Tensor) -> dict[int, torch.Tensor]:
        """(V, 1, S, S) canvas logits -> {crop: (H, W) bool mask at the crop set's scale}; tiles without the
        click are background, as in inference.layout."""
        out: dict[int, torch.Tensor] = {}
        for ci, vs in self.views.of_crop().items():
            if ci not in self.scored:
                continue
            h, w = self.crops.images[ci].shape[-2:]
            m = torch.full((h, w), lay.BACKGROUND_LOGIT, device=logits.device)
            for v in vs:
                if not self.decoded[v]:
                    continue
                y0, x0 = self.views.origin[v]
                th, tw = min(self.canvas, h - y0), min(self.canvas, w - x0)
                m[y0:y0 + th, x0:x0 + tw] = torch.maximum(m[y0:y0 + th, x0:x0 + tw], logits[v, 0, :th, :tw].float())
            out[ci] = m > 0
        return out

    def scores(self, logits: torch.Tensor) -> tuple[float | None, float | None]:
        """(mean IoU of the stitched masks against the crops' targets, against the teacher's stitched answers or
        None without teacher logits); None, None without a scored crop."""
        if not self.scored:
            return None, None
        preds = self.stitched(logits)
        gt = mean_iou(list(preds.values()), [self.crops.targets[ci] for ci in preds])  # type: ignore[misc]
        if self.teacher_logits is None:
            return gt, None
        if self._teacher_masks is None:  # the teacher does not change during a run
            self._teacher_masks = self.stitched(self.teacher_logits)
        return gt, mean_iou(list(preds.values()), [self._teacher_masks[ci] for ci in preds])


def mean_iou(preds: list[torch.Tensor], refs: list[torch.Tensor]) -> float:
    """Mean IoU of bool masks pairwise (1.0 where both are empty), one read-back."""
    inter = torch.stack([(p & r).sum() for p, r in zip(preds, refs)]).float()
    union = torch.stack([(p | r).sum() for p, r in zip(preds, refs)]).float()
    return float(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).mean())


@torch.no_grad()
def predict_views(predict: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], vs: ValSet,
                  batch: int, amp: torch.dtype | None) -> torch.Tensor:
    outs = []
    dev = vs.x.device
    for i in range(0, len(vs.views), batch):
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            outs.append(predict(vs.x[i:i + batch], vs.points[i:i + batch], vs.labels[i:i + batch]).float())
    return torch.cat(outs) if outs else torch.zeros(0, 1, vs.canvas, vs.canvas, device=dev)
