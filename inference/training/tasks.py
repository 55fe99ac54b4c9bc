"""What differs between the training modes: the model, how a batch is drawn, the loss of one step, and how the
validation crops are predicted. The loop around them (optimiser, schedule, EMA, DDP, validation) is
inference.training.loop's; checkpoints, events and the store row are its callbacks.

Every mode trains interactively: a step draws clicks from the target (1-3 positive, 0-2 negative), decodes, then
adds `follow_up_clicks` clicks in the largest error of its own prediction and decodes again, with a loss on every
decode (SAM's training recipe). Encoders run once per step; only the cheap decoders repeat.

* distill (student, seed 001's loss): feature term on the embedding, soft-mask term against the frozen teacher's
  live answer to the very same clicks, supervised term where the crop has a verified mask. Unlabelled crops are
  prompted with the points stored with the teacher's prediction and their follow-up clicks aim at the teacher's
  mask.
* finetune-teacher (SAM 2): supervised term on SAM's outputs (one click: the best of the three multimask
  candidates, as SAM trains; more clicks: the single-mask output) + the IoU head's MSE.
* unet (the plain baseline): one positive click, supervised term, no follow-ups (as described in issue 14).
* qat (a trained student, issue 16): distill's loss and batches, with fake INT8 quantisation on the student.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from inference.training import clicks as ck
from inference.training import crops as cr
from inference.training.losses import cosine_feature_loss, match_spatial, soft_bce, supervised_loss
from store.errors import UserError


@dataclass
class Batch:
    canvases: cr.Canvases
    x: torch.Tensor  # normalised (B, 3, S, S)
    points: torch.Tensor  # (B, N, 2) initial clicks, canvas pixels
    labels: torch.Tensor  # (B, N)
    weights: torch.Tensor  # (B, 3) per-sample (feature, soft, dice) multipliers
    entries: torch.Tensor | None  # teacher target entries (distill)
    # distill with training.crop_size: each sample's window (y0, x0) on its full (flipped) view canvas, which the
    # teacher's cached features cover; None: the canvases are the views
    origin: list[tuple[int, int]] | None = None
    # distill with training.augment.shift: how far (dy, dx) each sample's content was moved on its (flipped) view
    # canvas; the teacher's maps of the view move with it. None: not moved
    moves: list[tuple[int, int]] | None = None


def _upsample(logits: torch.Tensor, size: int) -> torch.Tensor:
    return match_spatial(logits.float(), (size, size))


def _sup(logits_up: torch.Tensor, b: Batch, pos_weight: float) -> torch.Tensor:
    c = b.canvases
    loss = supervised_loss(logits_up, c.target, c.valid, pos_weight)
    return torch.where(c.has_target, loss, torch.zeros_like(loss))


WINDOW_ALIGN = 32  # training windows start on the student's deepest stride (crop_size is a multiple of it)
TEACHER_STRIDE = 16  # SAM 2's image embedding: one cell per 16 teacher-canvas pixels


def check_window(crop_size: int | None, canvas: int) -> int:
    """training.crop_size as the window side (the canvas when null). The runner checks it before a run folder or
    the teacher's features exist (project.yaml's schema checks the stride; overrides from the GUI or a script
    arrive unchecked): one user error instead of a failure after minutes of teacher features."""
    if crop_size is None:
        return canvas
    if int(crop_size) % WINDOW_ALIGN or not WINDOW_ALIGN <= int(crop_size) <= canvas:
        raise UserError(f"project.yaml distillation.training.crop_size ({crop_size}) must be a multiple of "
                        f"{WINDOW_ALIGN} from {WINDOW_ALIGN} to the student's input_size ({canvas}): the student "
                        "trains on windows cut from its canvases")
    return int(crop_size)


def check_shift(tcfg: dict[str, Any], canvas: int, teacher_ratio: float | None) -> bool:
    """training.augment.shift, checked against the windows and the teacher's grid (`teacher_ratio`: teacher canvas /
    student canvas when the loss reads the teacher, else None). Called before the teacher's features are computed,
    so a setting that cannot work is one user error, not one after minutes of features."""
    shift = bool((tcfg.get("augment") or {}).get("shift", False))
    if shift and check_window(tcfg.get("crop_size"), canvas) < canvas:
        raise UserError("project.yaml distillation.training.augment.shift moves each crop about its whole canvas; "
                        "training.crop_size cuts windows instead: set one of them")
    if shift and teacher_ratio is not None and (WINDOW_ALIGN * teacher_ratio / TEACHER_STRIDE) % 1:
        raise UserError(f"training.augment.shift moves crops in steps of {WINDOW_ALIGN} px, which must be whole cells "
                        f"of the teacher's embedding; teacher canvas / student canvas = {teacher_ratio:g} is not a "
                        "multiple of 0.5")
    return shift


class Task(ABC):
    name: str
    log_keys: tuple[str, ...]
    canvas: int
    scale: float
    crops: cr.CropSet
    # the model in channels_last memory layout on CUDA (batches always come in it): every convolutional network
    # here; SAM 2 only with a convolutional trunk
    channels_last: bool = True

    @abstractmethod
    def model(self) -> nn.Module: ...

    @abstractmethod
    def train_loss(self, model: nn.Module, b: Batch, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`model` is the bare network (TrainStep, below, is what DDP wraps)."""

    @abstractmethod
    def predict(self, model: nn.Module, x: torch.Tensor, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(V, 1, S, S) logits on validation canvases."""

    @abstractmethod
    def save_best(self, model: nn.Module, path: Any, extra: dict[str, Any]) -> None: ...

    def before_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Called before every optimiser step with the global step (QAT freezes its observers from here)."""

    def plain_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The weights as a plain model holds them (epoch_NNN.pt); QAT strips its fake quantisation first."""
        return model.state_dict()

    def compiled_parts(self, model: nn.Module) -> list[nn.Module]:
        """The modules `train_loss` calls that `training.compile` may compile in place (state-dict keys unchanged).
        Only the student's (where it was measured: docs/benchmarks.md); SAM 2's fine-tune, QAT's fake quantisation
        (observers toggled mid-run) and the U-Net baseline (already fast, not measured compiled) stay eager."""
        return []


class PromptedTask(Task):
    """Shared by the three modes: batches of random windows (or fixed views) with flips/rotations and photometric
    changes, and initial clicks."""

    def __init__(self, crops: cr.CropSet, canvas: int, tcfg: dict[str, Any], world_rank: int = 0) -> None:
        self.crops = crops
        self.canvas = canvas
        self.scale = crops.scale
        self.tcfg = tcfg
        aug = dict(tcfg.get("augment") or {})
        self.augment = aug
        self.dihedral = bool(aug.get("dihedral", False))
        self.sample_p = cr.class_balanced_weights(crops.classes, float(tcfg.get("class_balance", 0.5)))
        clk = dict(tcfg.get("clicks") or {})
        self.max_pos = int(clk.get("max_positive", 3))
        self.max_neg = int(clk.get("max_negative", 2))
        self.follow_ups = int(clk.get("follow_up", 1))
        self.one_click_share = float(clk.get("one_click_share", 0.0))
        self.pos_weight = float(tcfg.get("pos_weight", 3.0))
        self.weights: dict[int, tuple[float, float, float]] = {}

    def draw(self, batch_size: int, gen_cpu: torch.Generator) -> list[int]:
        return torch.multinomial(self.sample_p, batch_size, replacement=True, generator=gen_cpu).tolist()

    def _finish(self, c: cr.Canvases, idx: list[int], gen: torch.Generator, d: torch.Tensor | None,
                entries: torch.Tensor | None) -> Batch:
        dev = c.image01.device
        if d is not None:
            c = cr.flipped(c, d)
        if self.augment:
            cr.photometric(c, gen, self.augment)
        pts, lbs = ck.initial_clicks(c.target, c.valid, gen, self.max_pos, self.max_neg,
                                     one_click_share=self.one_click_share)
        w = torch.tensor([self.weights.get(self.crops.samples[i].sample_id, (1.0, 1.0, 1.0)) for i in idx],
                         dtype=torch.float32, device=dev)
        return Batch(c, c.normalised().contiguous(memory_format=torch.channels_last), pts, lbs, w, entries)

    def batch(self, batch_size: int, gen_cpu: torch.Generator, gen: torch.Generator) -> Batch:
        idx = self.draw(batch_size, gen_cpu)
        windows, offsets = cr.random_windows(self.crops, idx, self.canvas, gen_cpu)
        c = cr.assemble(self.crops, idx, windows, self.canvas, offsets)
        d = torch.randint(0, 8, (len(idx),), generator=gen_cpu) if self.dihedral else None
        return self._finish(c, idx, gen, d, None)

    def interactive(self, decode: Any, b: Batch, gen: torch.Generator, click_target: torch.Tensor,
                    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Decode the initial clicks, then `follow_ups` more, each placed in the error of the last prediction.
        Returns [(logits at canvas resolution, points, labels)] for every decode."""
        pts, lbs = b.points, b.labels
        out = []
        for it in range(1 + self.follow_ups):
            up = _upsample(decode(pts, lbs), b.x.shape[-1])
            out.append((up, pts, lbs))
            if it < self.follow_ups:
                new_p, new_l = ck.error_clicks(up.detach() > 0, click_target, b.canvases.valid, gen)
                pts = torch.cat([pts, new_p], dim=1)
                lbs = torch.cat([lbs, new_l], dim=1)
        return out


# ---------------------------------------------------------------------------------------------------- distill


class DistillTask(PromptedTask):
    name = "distill"
    log_keys = ("feat", "soft", "dice")

    def __init__(self, crops: cr.CropSet, canvas: int, tcfg: dict[str, Any], loss_cfg: dict[str, Any],
                 student: nn.Module, meta: dict[str, Any], targets: Any, ratio: float, no_feature_loss: bool) -> None:
        super().__init__(crops, canvas, tcfg)
        self.views = cr.tile_views(crops, canvas)
        self.crop_views = self.views.of_crop()
        # TeacherTargets over the same views (teacher canvas = ratio x this canvas); None when the loss never reads
        # the teacher (needs_teacher)
        self.targets = targets
        self.ratio = ratio
        self.n_dihedral = cr.dihedral_count(self.augment)
        # training.crop_size: the student trains on random windows of the views (the U-Net baseline's recipe: more
        # steps per second on crops much smaller than the canvas) and is validated on whole canvases
        self.window = check_window(tcfg.get("crop_size"), canvas)
        # training.augment.shift: the content moves about its canvas (the U-Net's random placement), so the
        # decoder's positional encodings do not always see a crop in the same corner
        self.shift = check_shift(tcfg, canvas, ratio if targets is not None else None)
        self.feat_w = 0.0 if no_feature_loss else float(loss_cfg["feature_weight"])
        self.soft_w = float(loss_cfg["soft_bce_weight"])
        self.dice_w = float(loss_cfg["dice_weight"])
        self.temperature = float(loss_cfg["temperature"])
        self._student = student
        self.meta = meta
        self.prompts = {i: s for i, s in enumerate(crops.samples) if s.target_rle is None}
        if targets is None and self.needs_teacher(loss_cfg, no_feature_loss, crops):
            raise ValueError("this loss or these unlabelled crops read the teacher: pass its TeacherTargets")

    @staticmethod
    def needs_teacher(loss_cfg: dict[str, Any], no_feature_loss: bool, crops: cr.CropSet) -> bool:
        """Whether a step reads the teacher: its embedding (feature term), its masks (soft term), or its mask as the
        follow-up clicks' target on unlabelled crops. A supervised-only loss on labelled crops does not, and then
        the run skips the teacher's features for every training view (the longest part of a CPU run's set-up)."""
        feature = not no_feature_loss and float(loss_cfg["feature_weight"]) > 0
        return feature or float(loss_cfg["soft_bce_weight"]) > 0 or any(s.target_rle is None for s in crops.samples)

    def model(self) -> nn.Module:
        return self._student

    def compiled_parts(self, model):
        return [model.encoder, model.decoder]

    def batch(self, batch_size: int, gen_cpu: torch.Generator, gen: torch.Generator) -> Batch:
        idx = self.draw(batch_size, gen_cpu)
        r = torch.rand(len(idx), generator=gen_cpu).tolist()
        views = [self.crop_views[i][int(u * len(self.crop_views[i]))] for i, u in zip(idx, r)]
        c = cr.assemble(self.crops, idx, [self.views.origin[v] for v in views], self.canvas)
        dev = c.image01.device
        d = torch.randint(0, self.n_dihedral, (len(idx),), generator=gen_cpu)
        entries = None if self.targets is None else self.targets.entry(torch.tensor(views), d).to(dev)
        if self.n_dihedral > 1:
            c = cr.flipped(c, d)
        origin = moves = None
        if self.window < self.canvas:  # cut after the flip: the teacher's entry is the flipped whole view
            origin = cr.content_windows(c.valid, self.window, WINDOW_ALIGN, gen_cpu)
            c = cr.cut(c, origin, self.window)
        elif self.shift:  # moved after the flip, as the windows are cut
            moves = cr.content_shifts(c.valid, WINDOW_ALIGN, gen_cpu)
            c = cr.shifted(c, moves)
        b = self._finish(c, idx, gen, None, entries)
        b.origin = origin
        b.moves = moves
        if self.prompts:  # unlabelled crops: the teacher's stored clicks, moved onto this view (and window)
            self._stored_prompts(b, idx, views, d)
        return b

    def _stored_prompts(self, b: Batch, idx: list[int], views: list[int], d: torch.Tensor) -> None:
        n = b.points.shape[1]
        for j, (i, v) in enumerate(zip(idx, views)):
            s = self.prompts.get(i)
            if s is None:
                continue
            y0, x0 = self.views.origin[v]
            pts = np.asarray(s.prompt_points, np.float32).reshape(-1, 2) * np.float32(self.scale) - [x0, y0]
            lbs = np.asarray(s.prompt_labels, np.float32)
            inside = (pts >= 0).all(1) & (pts < self.canvas).all(1)
            p = cr.dihedral_points(torch.from_numpy(pts[inside])[None], d[j:j + 1], self.canvas)[0]
            lbs = torch.from_numpy(lbs[inside])
            if b.origin is not None:
                wy, wx = b.origin[j]
                p = p - torch.tensor([wx, wy], dtype=p.dtype)
                keep = (p >= 0).all(1) & (p < self.window).all(1)
                p, lbs = p[keep], lbs[keep]
            if b.moves is not None:
                my, mx = b.moves[j]
                p = p + torch.tensor([mx, my], dtype=p.dtype)
            p, lbs = p[:n], lbs[:n]
            b.points[j] = 0.0
            b.labels[j] = -1.0
            if len(lbs):
                b.points[j, : len(lbs)] = p.to(b.points.device)
                b.labels[j, : len(lbs)] = lbs.to(b.labels.device)

    def _teacher_window(self, x: torch.Tensor, b: Batch, cells_per_px: float) -> torch.Tensor:
        """A teacher map of the whole view (B, C, H, W) cut to each sample's window, or moved as its content was
        (`cells_per_px` of the map per student canvas pixel); unchanged without either."""
        if b.moves is not None:
            return cr.shift(x, [(round(dy * cells_per_px), round(dx * cells_per_px)) for dy, dx in b.moves])
        if b.origin is None:
            return x
        side = int(round(self.window * cells_per_px))
        return torch.stack([x[j, :, int(round(y * cells_per_px)):int(round(y * cells_per_px)) + side,
                              int(round(xx * cells_per_px)):int(round(xx * cells_per_px)) + side]
                            for j, (y, xx) in enumerate(b.origin)])

    def train_loss(self, model, b, gen):
        emb, hi = model.encoder(b.x)
        bsz = b.x.shape[0]
        if self.feat_w > 0:
            t_emb = self.targets.embedding(b.entries)
            feat = cosine_feature_loss(emb, self._teacher_window(t_emb, b, t_emb.shape[-1] / self.canvas))
        else:
            feat = torch.zeros(bsz, device=b.x.device)
        size = (self.canvas, self.canvas)
        teacher_up: list[torch.Tensor] = []
        origin = None if b.origin is None else torch.tensor([[x, y] for y, x in b.origin], dtype=b.points.dtype,
                                                            device=b.points.device)
        if origin is not None:
            back = origin[:, None, :]
        elif b.moves is not None:
            back = -torch.tensor([[x, y] for y, x in b.moves], dtype=b.points.dtype, device=b.points.device)[:, None]
        else:
            back = None

        def teacher(pts: torch.Tensor, lbs: torch.Tensor) -> torch.Tensor:
            """The teacher's answer on the whole view (clicks moved back onto it), cut to the window or moved as the
            content was."""
            view_pts = pts if back is None else pts + back
            with torch.no_grad():
                t = self.targets.logits(b.entries, ck.to_canvas_points(view_pts, self.ratio), lbs)
            return self._teacher_window(match_spatial(t.float(), size), b, 1.0)

        def decode(pts: torch.Tensor, lbs: torch.Tensor) -> torch.Tensor:
            if self.soft_w > 0:  # the teacher's decoder costs as much as the student's: only when its term counts
                teacher_up.append(teacher(pts, lbs))
            return model.decoder(emb, hi, pts, lbs, origin)[0][:, :1]

        # unlabelled crops aim their follow-up clicks at the teacher's mask for the initial clicks
        click_target = b.canvases.target
        if not all(b.canvases.labelled):
            t0 = (teacher(b.points, b.labels) > 0).float()
            click_target = torch.where(b.canvases.has_target.view(-1, 1, 1, 1), b.canvases.target, t0)
        outs = self.interactive(decode, b, gen, click_target)
        if teacher_up:
            soft = torch.stack([soft_bce(up, t, self.temperature, b.canvases.valid, self.pos_weight)
                                for (up, _, _), t in zip(outs, teacher_up)]).mean(0)
        else:
            soft = torch.zeros(bsz, device=b.x.device)
        dice = torch.stack([_sup(up, b, self.pos_weight) for up, _, _ in outs]).mean(0)
        w = b.weights * torch.stack([torch.ones_like(feat), torch.ones_like(feat),
                                     b.canvases.has_target.float()], dim=1)
        feat_m = (w[:, 0] * feat).sum() / bsz
        soft_m = (w[:, 1] * soft).sum() / bsz
        dice_m = (w[:, 2] * dice).sum() / bsz
        total = self.feat_w * feat_m + self.soft_w * soft_m + self.dice_w * dice_m
        return total, {"feat": feat_m.detach(), "soft": soft_m.detach(), "dice": dice_m.detach()}

    def predict(self, model, x, points, labels):
        emb, hi = model.encoder(x)
        return _upsample(model.decoder(emb, hi, points, labels)[0][:, :1], self.canvas)

    def save_best(self, model, path, extra):
        from inference.student import save_checkpoint

        save_checkpoint(model, path, extra=extra)


class QATTask(DistillTask):
    """qat: distillation's loss on a trained student with fake INT8 quantisation on (inference.training.qat).

    The observers learn the activation ranges during the first `observer_warmup` share of the steps and are frozen
    afterwards, so the rest of the fine-tune trains against fixed ranges as the calibrated export runs with. The
    checkpoints are plain students (fake quantisation stripped, latent float weights): `maskbench export` reads them
    as any other and its static INT8 is the QAT INT8."""

    name = "qat"

    def __init__(self, *args: Any, source_checkpoint: str, observer_warmup: float, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.source_checkpoint = source_checkpoint
        self.observer_warmup = float(observer_warmup)
        self.meta = {**self.meta, "qat": True, "source_checkpoint": source_checkpoint}

    def before_step(self, model, step, total_steps):
        from inference.training import qat

        qat.set_observing(model, step < max(1, math.ceil(self.observer_warmup * total_steps)))

    def plain_state(self, model):
        from inference.training import qat

        return qat.stripped_copy(model).state_dict()

    def compiled_parts(self, model):
        return []

    def save_best(self, model, path, extra):
        from inference.student import save_checkpoint
        from inference.training import qat

        save_checkpoint(qat.stripped_copy(model), path,
                        extra={**extra, "qat": True, "source_checkpoint": self.source_checkpoint})


# ------------------------------------------------------------------------------------------ teacher fine-tune


class FinetuneTask(PromptedTask):
    name = "finetune_teacher"
    log_keys = ("mask", "iou_head")

    def __init__(self, crops: cr.CropSet, net: nn.Module, tcfg: dict[str, Any], meta: dict[str, Any]) -> None:
        super().__init__(crops, net.image_size, tcfg)
        self.net = net
        self.meta = meta
        self.channels_last = net.convolutional_trunk

    def model(self) -> nn.Module:
        return self.net

    def train_loss(self, model, b, gen):
        net = model
        feats = net.encode_normalised(b.x)
        ar = torch.arange(b.x.shape[0], device=b.x.device)
        mask_losses, iou_losses = [], []

        def decode(pts: torch.Tensor, lbs: torch.Tensor) -> torch.Tensor:
            masks, iou = net.decode_all(feats, pts, lbs)
            bsz, k_out = masks.shape[:2]
            up = _upsample(masks, self.canvas)  # (B, 4, S, S): every output's loss in one batched call
            c = b.canvases
            per = supervised_loss(up.reshape(bsz * k_out, 1, self.canvas, self.canvas),
                                  c.target.repeat_interleave(k_out, 0), c.valid.repeat_interleave(k_out, 0),
                                  self.pos_weight).view(bsz, k_out)
            single = (lbs >= 0).sum(1) == 1
            best_multi = 1 + per[:, 1:].argmin(1)
            k = torch.where(single, best_multi, torch.zeros_like(best_multi))
            mask_losses.append(per[ar, k])
            # every output's IoU prediction is supervised (SAM 2's supervise_all_iou): one click picks its mask
            # by predicted IoU, and an output never chosen in training would otherwise keep a random (often the
            # highest) score and be picked at prediction time
            with torch.no_grad():
                pred = (up > 0) & c.valid
                tgt = (c.target > 0.5) & c.valid
                inter = (pred & tgt).flatten(2).sum(2).float()
                union = (pred | tgt).flatten(2).sum(2).float()
                actual = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
            iou_losses.append(((iou.float() - actual) ** 2).mean(1))
            return masks[ar, k].unsqueeze(1)

        self.interactive(decode, b, gen, b.canvases.target)
        mask_l = torch.stack(mask_losses).mean()
        iou_l = torch.stack(iou_losses).mean()
        return mask_l + 0.1 * iou_l, {"mask": mask_l.detach(), "iou_head": iou_l.detach()}

    def predict(self, model, x, points, labels):
        from inference.sam2_net import choose_output

        masks, iou = model.decode_all(model.encode_normalised(x), points, labels)
        return _upsample(choose_output(masks, iou, labels)[0], self.canvas)

    def save_best(self, model, path, extra):
        from inference.training.checkpoints import atomic_save

        atomic_save({"model": model.model.state_dict()}, path)  # the official SAM 2 checkpoint format


# ---------------------------------------------------------------------------------------------------- U-Net


class UNetTask(PromptedTask):
    name = "unet"
    log_keys = ("sup",)

    def __init__(self, crops: cr.CropSet, unet: nn.Module, tcfg: dict[str, Any], crop_size: int, canvas: int) -> None:
        super().__init__(crops, crop_size, {**tcfg, "clicks": {"max_positive": 1, "max_negative": 0, "follow_up": 0}})
        self.unet = unet
        self.val_canvas = canvas
        self.meta = {"architecture": "unet", "config": unet.config.to_dict()}

    def model(self) -> nn.Module:
        return self.unet

    def train_loss(self, model, b, gen):
        logits = model(b.x, b.points, b.labels)
        sup = _sup(logits, b, self.pos_weight).mean()
        return sup, {"sup": sup.detach()}

    def predict(self, model, x, points, labels):
        return model(x, points, labels).float()

    def save_best(self, model, path, extra):
        from inference.baselines.unet import save_checkpoint

        save_checkpoint(model, path, extra)


class TrainStep(nn.Module):
    """One training step as one module call, so DDP sees a single forward per step however many times the step
    runs the decoders (interactive clicks)."""

    def __init__(self, task: Task, model: nn.Module) -> None:
        super().__init__()
        self.task = task
        self.model = model

    def forward(self, batch: Batch, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.task.train_loss(self.model, batch, gen)
