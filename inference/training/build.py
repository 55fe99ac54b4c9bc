"""How each training mode is built from the run's settings and decoded crops: the Task (inference.training.tasks)
with its model, for distillation and qat the SAM 2 teacher whose features are computed once per run when the loss
reads them (inference.training.teacher_targets) and whose answers to the validation clicks are computed once too, the
trained student a qat run starts from, and the pixel scale and canvas the mode's crops are decoded at. Kept out of
the runner so that `train()` reads as settings, data, wiring; nothing here knows about checkpoints, the store row or
the event protocol beyond the two cache events it emits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from inference.student import StudentConfig
from inference.training import crops as cr
from inference.training.settings import teacher_config_name
from inference.training.tasks import DistillTask, FinetuneTask, QATTask, Task, UNetTask, check_shift
from inference.training.validation import ValSet
from store.errors import UserError


def build_task(mode_name: str, dist_cfg: dict[str, Any], train_crops: cr.CropSet, dev: torch.device,
               no_feature_loss: bool, amp: torch.dtype | None, emit: Callable[[dict[str, Any]], None],
               seed: int) -> tuple[Task, Any]:
    """The task and, for distillation, the teacher (to answer the validation clicks)."""
    tcfg = dist_cfg["training"]
    if mode_name in ("distill", "distill_naive", "qat"):
        from inference.student import ARCHITECTURE, StudentModel, load_checkpoint
        from inference.training.teacher import build_teacher_net
        from inference.training.teacher_targets import TeacherTargets

        if mode_name == "qat":  # the trained student, fake quantisation on before the EMA copy and the optimiser
            from inference.training import qat

            student = load_checkpoint(dist_cfg["qat"]["checkpoint"]).train()
            qat.prepare_qat(student, momentum=float(dist_cfg["qat"]["observer_momentum"]))
            scfg = student.config
        else:
            scfg = student_config(dist_cfg)
            student = StudentModel(scfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # a random-weights teacher (tests) is the same on every build
            net = build_teacher_net(dist_cfg, device=str(dev))
        ratio = net.image_size / scfg.input_size
        targets = None
        reads_teacher = DistillTask.needs_teacher(dist_cfg["loss"], no_feature_loss, train_crops)
        check_shift(tcfg, scfg.input_size, ratio if reads_teacher else None)  # before the teacher's features
        if reads_teacher:
            views = cr.tile_views(train_crops, scfg.input_size)
            t_crops = train_crops.rescaled(train_crops.scale * ratio)
            t_views = cr.Views(views.crop, [(int(round(y * ratio)), int(round(x * ratio))) for y, x in views.origin],
                               net.image_size)
            n_d = cr.dihedral_count(tcfg.get("augment"))
            flips = int(tcfg.get("teacher_flip_views") or 1)
            if flips > 1 and n_d != 8:
                raise UserError("training.teacher_flip_views averages the teacher over mirrored views: it needs "
                                "training.augment.dihedral: true (the mirrors' features are those views')")
            t0 = time.perf_counter()
            targets = TeacherTargets(net, t_crops, t_views, n_d, dev, dtype=amp or torch.float32,
                                     progress=lambda d, n: emit({"event": "cache", "done": d, "total": n}),
                                     flip_views=flips)
            emit({"event": "cache_ready", "computed": len(t_views) * n_d, "samples": len(train_crops),
                  "views": len(t_views), "dihedral": n_d, "seconds": round(time.perf_counter() - t0, 2)})
        meta = {"architecture": ARCHITECTURE, "config": scfg.to_dict()}
        if mode_name == "qat":
            return QATTask(train_crops, scfg.input_size, tcfg, dist_cfg["loss"], student, meta, targets, ratio,
                           no_feature_loss, source_checkpoint=dist_cfg["qat"]["checkpoint"],
                           observer_warmup=float(dist_cfg["qat"]["observer_warmup"])), net
        task = DistillTask(train_crops, scfg.input_size, tcfg, dist_cfg["loss"], student, meta, targets, ratio,
                           no_feature_loss)
        return task, net
    if mode_name == "finetune_teacher":
        from inference.training.teacher import build_teacher_net

        net = build_teacher_net(dist_cfg, device="cpu", trainable=True)
        meta = {"architecture": "sam2", "config": teacher_config_name(dist_cfg), "image_size": net.image_size,
                "scale": float(dist_cfg["teacher"].get("scale", 1.0))}
        ft = dict(dist_cfg["finetune_teacher"])
        return FinetuneTask(train_crops, net, {**tcfg, **{k: v for k, v in ft.items() if k in ("clicks", "augment")}},
                            meta), None
    from inference.baselines.unet import UNet, UNetConfig

    ucfg = dict(dist_cfg.get("unet") or {})
    unet = UNet(UNetConfig(input_size=int(dist_cfg["student"].get("input_size", 512)),
                           width=int(ucfg.get("width", 16)), scale=train_crops.scale))
    return UNetTask(train_crops, unet, tcfg, int(ucfg.get("crop_size", 256)), unet.config.input_size), None


def qat_source(project: Any, dist_cfg: dict[str, Any], checkpoint: Path | None) -> None:
    """The trained student a qat run fine-tunes: `--checkpoint`, else distillation.qat.checkpoint (relative to the
    project), else the project's active student. Written into dist_cfg as an absolute path (a resumed run reloads
    the same file), and its config replaces the run's student settings: the crops are cut at the scale and canvas
    the checkpoint was trained at, whatever project.yaml says now."""
    from inference.student import load_checkpoint

    q = dist_cfg["qat"]
    if checkpoint is not None:
        src = Path(checkpoint).expanduser().resolve()
    elif q.get("checkpoint"):
        src = Path(q["checkpoint"]).expanduser()
        src = src if src.is_absolute() else Path(project.root) / src
    else:
        from inference.registry import active_model

        info = active_model(project, "student")  # NoActiveModel: a one-line UserError naming `models add student`
        if info.backend != "torch":
            raise UserError(f"the active student {info.name!r} is an ONNX model; qat fine-tunes a PyTorch student "
                            "checkpoint (pass --checkpoint)")
        src = info.resolve(project)
    student = load_checkpoint(src)  # a missing or non-student file fails here, before any data is decoded
    dist_cfg["student"] = {**dist_cfg["student"], **student.config.to_dict()}
    q["checkpoint"] = str(src)


def crop_scale(mode_name: str, dist_cfg: dict[str, Any]) -> tuple[float, int]:
    """(scale, canvas) the mode's crops are decoded at."""
    if mode_name == "finetune_teacher":
        return float(dist_cfg["teacher"].get("scale", 1.0)), int(dist_cfg["teacher"].get("image_size", 1024))
    s = dist_cfg["student"]
    return float(s.get("scale", 1.0)), int(s.get("input_size", 512))


def student_config(dist_cfg: dict[str, Any]) -> StudentConfig:
    """The new student's StudentConfig; a combination the network cannot build (mask_stride 2 with a backbone that
    has no stride-2 feature) is a user error naming the setting, raised before a run folder exists."""
    try:
        return StudentConfig.from_project(dist_cfg["student"])
    except ValueError as exc:
        raise UserError(f"project.yaml distillation.student: {exc}") from None


@torch.no_grad()
def teacher_val_logits(net: Any, vs: ValSet, task: Any, amp: torch.dtype | None) -> torch.Tensor:
    """The teacher's answer to the validation clicks, on the student's validation canvases (computed once)."""
    from inference.sam2_net import choose_output
    from inference.training import clicks as ck
    from inference.training.losses import match_spatial

    ratio = task.ratio
    t_crops = vs.crops.rescaled(vs.crops.scale * ratio)
    origins = [(int(round(y * ratio)), int(round(x * ratio))) for y, x in vs.views.origin]
    out = []
    dev = vs.x.device
    for i in range(0, len(vs.views), 8):
        c = cr.assemble(t_crops, vs.views.crop[i:i + 8], origins[i:i + 8], net.image_size)
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            feats = net.encode_normalised(c.normalised())
            pts = ck.to_canvas_points(vs.points[i:i + 8], ratio)
            masks, iou = net.decode_all(feats, pts, vs.labels[i:i + 8])
        out.append(match_spatial(choose_output(masks.float(), iou.float(), vs.labels[i:i + 8])[0], (vs.canvas, vs.canvas)))
    return torch.cat(out)
