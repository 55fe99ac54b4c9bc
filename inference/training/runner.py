"""One training run: `distill` (seed 001, optionally without the feature term) or `finetune-teacher` (SAM 2 on
ground truth with sampled point prompts). Single process or `torchrun --nproc_per_node N` (DDP + DistributedSampler;
gloo on CPU, NCCL on CUDA). Rank 0 prints JSON lines, draws the progress bar on stderr, writes checkpoints and the
TrainingRun row.

Run folder: config.yaml, metrics.jsonl (the JSON lines), checkpoints/last.pt (full state, written every epoch and
on stop), checkpoints/epoch_NNN.pt, checkpoints/best.pt (best validation IoU against ground truth). For
finetune-teacher, best.pt and teacher.pt hold the official SAM 2 {"model": state_dict} so the file can be
imported as the teacher (distillation.teacher.checkpoint).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler

from inference.training import data as data_mod
from inference.training.losses import SegmentationDistillationLoss, match_spatial, supervised_mask_loss
from inference.training.sample_weights import review_weights
from inference.training.settings import config_hash, resolve, teacher_config_name, teacher_from_store
from store.errors import UserError

MODE_NAMES = {("distill", False): "distill", ("distill", True): "distill_naive", ("finetune-teacher", False): "finetune_teacher"}


@dataclass
class TrainOptions:
    project: Path
    mode: str = "distill"  # distill | finetune-teacher
    no_feature_loss: bool = False
    config_file: Path | None = None
    epochs: int | None = None
    batch_size: int | None = None
    device: str = "cpu"
    resume: Path | None = None
    max_steps: int | None = None
    log_every: int | None = None
    num_workers: int | None = None
    name: str | None = None
    progress: bool = True
    emit: Callable[[dict[str, Any]], None] | None = None  # default: one JSON line per event on stdout
    overrides: dict[str, Any] = field(default_factory=dict)  # deep-merged into the distillation section


class _Stop:
    requested = False


def _install_stop_handlers() -> None:
    def handler(signum: int, _frame: object) -> None:
        _Stop.requested = True

    with contextlib.suppress(ValueError):  # not the main thread (tests calling train() from a thread)
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def _emit_stdout(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, default=float) + "\n")
    sys.stdout.flush()


# -------------------------------------------------------------------------------------------- distributed


@dataclass
class DistInfo:
    world: int
    rank: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device: str) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device visible to torch")
        dev = torch.device("cuda", local if world > 1 else (torch.device(device).index or 0))
        torch.cuda.set_device(dev)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise UserError(f"--device must be cpu or cuda, not {device!r}")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(world, rank, local, dev)


def _barrier(di: DistInfo) -> None:
    if di.world > 1:
        dist.barrier()


def _broadcast(di: DistInfo, obj: Any) -> Any:
    if di.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _mean_across(di: DistInfo, values: dict[str, float]) -> dict[str, float]:
    if di.world == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=di.device if di.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return {k: float(v) / di.world for k, v in zip(keys, t.tolist())}


def _any_across(di: DistInfo, flag: bool) -> bool:
    if di.world == 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=di.device if di.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return bool(t.item())


# ----------------------------------------------------------------------------------------------- helpers


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample IoU of bool masks (B, ...); two empty masks count as 1."""
    a = a.flatten(1)
    b = b.flatten(1)
    inter = (a & b).sum(1).float()
    union = (a | b).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _amp_dtype(dev: torch.device, enabled: bool) -> torch.dtype | None:
    if not enabled or dev.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# ------------------------------------------------------------------------------------------ the store row


def _store_start(project: Any, run_id: int | None, **fields: Any) -> int:
    from store.schema import TrainingRun

    with project.db.session() as s:
        row = s.get(TrainingRun, run_id) if run_id else None
        if row is None:
            row = TrainingRun(**fields)
            s.add(row)
        else:
            row.status = "running"
            row.finished_at = None
            row.config = fields.get("config", row.config)
        s.flush()
        return int(row.id)


def _store_update(project: Any, run_id: int, **fields: Any) -> None:
    from store.schema import TrainingRun

    with project.db.session() as s:
        row = s.get(TrainingRun, run_id)
        if row is None:
            return
        for k, v in fields.items():
            setattr(row, k, v)


def _find_run_id(project: Any, out_dir: Path) -> int | None:
    from sqlalchemy import select

    from store.schema import TrainingRun

    with project.db.session() as s:
        return s.scalar(select(TrainingRun.id).where(TrainingRun.out_dir == str(out_dir)).order_by(TrainingRun.id.desc()))


# ---------------------------------------------------------------------------------------------- the task


class _Task:
    """What differs between the modes: model, data, loss, validation, best-checkpoint format."""

    name: str
    log_keys: tuple[str, ...]

    def model(self) -> nn.Module: ...
    def train_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...
    def validate(self, model: nn.Module, loader: DataLoader, dev: torch.device) -> dict[str, float | None]: ...
    def save_best(self, model: nn.Module, path: Path, extra: dict[str, Any]) -> None: ...


class _DistillTask(_Task):
    def __init__(self, dist_cfg: dict[str, Any], no_feature_loss: bool) -> None:
        from inference.training.student import build_student

        loss_cfg = dist_cfg["loss"]
        self.criterion = SegmentationDistillationLoss(
            feat_weight=0.0 if no_feature_loss else float(loss_cfg["feature_weight"]),
            soft_weight=float(loss_cfg["soft_bce_weight"]),
            dice_weight=float(loss_cfg["dice_weight"]),
            temperature=float(loss_cfg["temperature"]),
        )
        self._student, self.meta = build_student(dist_cfg["student"])
        self.size = int(dist_cfg["student"].get("input_size", 512))

    def model(self) -> nn.Module:
        return self._student

    def train_loss(self, model, batch):
        emb, logits = model(batch["image"], batch["points"] * self.size, batch["labels"])
        return self.criterion(emb, batch["teacher_emb"], logits, batch["teacher_logits"], batch["gt"], batch["weights"])

    @torch.no_grad()
    def validate(self, model, loader, dev):
        model.eval()
        iou_gt, iou_t = [], []
        for batch in loader:
            batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
            _, logits = model(batch["image"], batch["points"] * self.size, batch["labels"])
            pred = match_spatial(logits.float(), batch["gt"].shape[-2:]) > 0
            teach = match_spatial(batch["teacher_logits"].float(), batch["gt"].shape[-2:]) > 0
            iou_gt.append(_iou(pred, batch["gt"] > 0.5))
            iou_t.append(_iou(pred, teach))
        model.train()
        if not iou_gt:
            return {"val_iou_gt": None, "val_iou_teacher": None}
        return {"val_iou_gt": float(torch.cat(iou_gt).mean()), "val_iou_teacher": float(torch.cat(iou_t).mean())}

    def save_best(self, model, path, extra):
        from inference.training.student import save_best

        save_best(_unwrap(model), self.meta, path, extra)


class _FinetuneTask(_Task):
    def __init__(self, dist_cfg: dict[str, Any], device: str) -> None:
        from inference.training.teacher import Sam2Teacher, build_sam2_model

        t = dist_cfg["teacher"]
        self.config_name = teacher_config_name(dist_cfg)
        sam = build_sam2_model(self.config_name, t.get("checkpoint"), int(t.get("image_size", 1024)), device="cpu")
        self.wrapper = Sam2Teacher(sam)
        train_enc = bool(dist_cfg["finetune_teacher"].get("train_image_encoder", True))
        for name, p in sam.named_parameters():
            top = name.split(".")[0]
            p.requires_grad_(top in ("sam_prompt_encoder", "sam_mask_decoder", "no_mem_embed")
                             or (train_enc and top == "image_encoder"))
        self.size = self.wrapper.image_size
        self.meta = {"architecture": "sam2", "config": self.config_name, "image_size": self.size}

    def model(self) -> nn.Module:
        return self.wrapper

    def train_loss(self, model, batch):
        logits, iou_pred = model(batch["image"], batch["points"] * self.size, batch["labels"])
        per_mask = supervised_mask_loss(logits, batch["gt"])  # (B, K)
        best = per_mask.argmin(dim=1)
        ar = torch.arange(per_mask.shape[0], device=per_mask.device)
        mask_loss = per_mask[ar, best].mean()
        with torch.no_grad():
            pred = match_spatial(logits.float(), batch["gt"].shape[-2:]) > 0
            actual = torch.stack([_iou(pred[:, k], batch["gt"][:, 0] > 0.5) for k in range(pred.shape[1])], dim=1)
        iou_loss = torch.nn.functional.mse_loss(iou_pred.float()[ar, best], actual[ar, best])
        total = mask_loss + 0.1 * iou_loss
        return total, {"mask": mask_loss.detach(), "iou_head": iou_loss.detach()}

    @torch.no_grad()
    def validate(self, model, loader, dev):
        model.eval()
        ious = []
        m = _unwrap(model)
        for batch in loader:
            batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
            logits, iou_pred = m(batch["image"], batch["points"] * self.size, batch["labels"])
            chosen = logits[torch.arange(logits.shape[0], device=dev), iou_pred.argmax(1)].unsqueeze(1)
            pred = match_spatial(chosen.float(), batch["gt"].shape[-2:]) > 0
            ious.append(_iou(pred, batch["gt"] > 0.5))
        model.train()
        return {"val_iou_gt": float(torch.cat(ious).mean()) if ious else None, "val_iou_teacher": None}

    def save_best(self, model, path, extra):
        _atomic_save({"model": _unwrap(model).model.state_dict()}, path)  # the official SAM 2 checkpoint format


# ------------------------------------------------------------------------------------------------ train()


def train(opts: TrainOptions) -> dict[str, Any]:
    """Runs (or resumes) one training run; returns the final summary event."""
    from store.config import deep_merge
    from store.project import Project

    if opts.mode not in ("distill", "finetune-teacher"):
        raise UserError(f"--mode must be distill or finetune-teacher, not {opts.mode!r}")
    if opts.no_feature_loss and opts.mode != "distill":
        raise UserError("--no-feature-loss only applies to --mode distill")
    emit_raw = opts.emit or _emit_stdout
    _Stop.requested = False
    _install_stop_handlers()
    di = _setup_distributed(opts.device)
    project = Project.open(opts.project)
    run_id: int | None = None
    status = "failed"
    try:
        # ---------------------------------------------------------------- settings, resume state
        resume_state: dict[str, Any] | None = None
        if opts.resume is not None:
            run_dir = Path(opts.resume).expanduser().resolve()
            last = run_dir / "checkpoints" / "last.pt"
            if not last.is_file():
                raise UserError(f"--resume {run_dir}: no checkpoints/last.pt there")
            resume_state = torch.load(last, map_location="cpu", weights_only=True)  # plain containers + tensors
            dist_cfg = resume_state["config"]
            mode_name = resume_state["mode"]
            if opts.overrides:
                dist_cfg = deep_merge({"d": dist_cfg}, {"d": opts.overrides})["d"]
        else:
            dist_cfg = resolve(project.config, opts.config_file)
            if opts.overrides:
                dist_cfg = deep_merge({"d": dist_cfg}, {"d": opts.overrides})["d"]
            teacher_from_store(project, dist_cfg)
            mode_name = MODE_NAMES[(opts.mode, bool(opts.no_feature_loss))]
        tcfg = dist_cfg["training"]
        finetune = mode_name == "finetune_teacher"
        ft = dist_cfg["finetune_teacher"]
        if opts.epochs is not None:
            (ft if finetune else tcfg)["epochs"] = int(opts.epochs)
        if opts.batch_size is not None:
            (ft if finetune else tcfg)["batch_size"] = int(opts.batch_size)
        if opts.log_every is not None:
            tcfg["log_every"] = int(opts.log_every)
        if opts.num_workers is not None:
            tcfg["num_workers"] = int(opts.num_workers)
        epochs = int((ft.get("epochs") if finetune else None) or tcfg["epochs"])
        batch_size = int(ft["batch_size"] if finetune else tcfg["batch_size"])
        lr = float(ft["lr"] if finetune else tcfg["lr"])
        seed = int(tcfg.get("seed", 0))
        prompt_seed = int(tcfg.get("prompt_seed", 0))
        n_points = int(tcfg.get("points_per_sample", 1))
        log_every = max(1, int(tcfg.get("log_every", 10)))
        checkpoint_every = max(1, int(tcfg.get("checkpoint_every", 1)))
        if epochs < 1 or batch_size < 1:
            raise UserError("epochs and batch size must be at least 1")

        def emit(event: dict[str, Any]) -> None:
            if di.main:
                emit_raw(event)
                if run_dir_holder:
                    with open(run_dir_holder[0] / "metrics.jsonl", "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(event, default=float) + "\n")

        run_dir_holder: list[Path] = []

        # ---------------------------------------------------------------- data
        records = data_mod.load_records(project.db, ("train", "val"))
        train_recs = [r for r in records if r.split == "train"]
        val_recs = [r for r in records if r.split == "val"]
        if not train_recs:
            raise UserError("no training samples with ground truth in this project (ingest a data set first)")
        torch.manual_seed(seed)
        dhash = data_mod.data_hash(records, {"points": n_points, "prompt_seed": prompt_seed})

        # ---------------------------------------------------------------- run folder and store row
        if resume_state is None:
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            run_name = opts.name or f"{stamp}-{mode_name}"
            run_dir = project.runs_dir / run_name if di.main else None
            if di.main:
                n = 1
                while run_dir.exists():
                    n += 1
                    run_dir = project.runs_dir / f"{run_name}-{n}"
                (run_dir / "checkpoints").mkdir(parents=True)
            run_dir = Path(_broadcast(di, str(run_dir) if run_dir else None))
        else:
            run_name = run_dir.name
        run_dir_holder.append(run_dir)
        full_cfg = {"distillation": dist_cfg, "mode": mode_name, "world_size": di.world, "device": opts.device,
                    "weights_source": None, "max_steps": opts.max_steps}

        weights, wsource = review_weights(project) if not finetune else ({}, "none")
        full_cfg["weights_source"] = wsource
        if di.main:
            import yaml

            (run_dir / "config.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(full_cfg, default=str)), sort_keys=False))
            prev = _find_run_id(project, run_dir) if resume_state is not None else None
            run_id = _store_start(project, prev, name=run_name, mode=mode_name, status="running",
                                  config=json.loads(json.dumps(full_cfg, default=str)), data_hash=dhash,
                                  out_dir=str(run_dir))

        if not dist_cfg["teacher"].get("checkpoint"):
            emit({"event": "warning", "message": "distillation.teacher.checkpoint is not set: the teacher has RANDOM "
                  "weights (fine for tests, useless for real training)"})
        # ---------------------------------------------------------------- teacher cache (distill)
        if finetune:
            task: _Task = _FinetuneTask(dist_cfg, opts.device)
            aug = tcfg.get("augment") or None
            train_ds = data_mod.GroundTruthDataset(train_recs, task.size, n_points, prompt_seed, aug, seed)
            val_ds = data_mod.GroundTruthDataset(val_recs, task.size, n_points, prompt_seed, None, seed)
        else:
            from inference.training.teacher import build_teacher

            task = _DistillTask(dist_cfg, opts.no_feature_loss)
            t_ident = _teacher_ident(dist_cfg, seed)
            key = data_mod.cache_key(t_ident, task.size, n_points, prompt_seed)
            cache_dir = project.cache_dir / "distill" / key
            if di.main:
                def build() -> Any:
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(seed)  # a random-weights teacher (tests) is the same on every build
                        return build_teacher(dist_cfg, device=str(di.device))[0]

                def cache_progress(done: int, total: int) -> None:
                    emit({"event": "cache", "done": done, "total": total})

                computed = data_mod.ensure_teacher_cache(records, cache_dir, build, task.size, n_points, prompt_seed,
                                                         device=str(di.device), progress=cache_progress)
                emit({"event": "cache_ready", "dir": str(cache_dir), "computed": computed, "samples": len(records)})
            _barrier(di)
            aug = tcfg.get("augment") or None
            train_ds = data_mod.DistillDataset(train_recs, cache_dir, weights, aug, seed)
            val_ds = data_mod.DistillDataset(val_recs, cache_dir, None, None, seed)

        # ---------------------------------------------------------------- model, optimiser, schedule
        model = task.model().to(di.device)
        if resume_state is not None:
            model.load_state_dict(resume_state["model"])
        model.train()
        if di.world > 1:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[di.device.index] if di.device.type == "cuda" else None,
                find_unused_parameters=True)  # students may carry heads the loss does not use
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=float(tcfg.get("weight_decay", 0.01)))
        sampler = DistributedSampler(train_ds, num_replicas=di.world, rank=di.rank, shuffle=True, seed=seed)
        steps_per_epoch = math.ceil(len(sampler) / batch_size)
        total_steps = epochs * steps_per_epoch
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps),
                                                               eta_min=float(tcfg.get("min_lr", 0.0)))
        amp_dtype = _amp_dtype(di.device, bool(tcfg.get("amp", True)))
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        grad_clip = float(tcfg.get("grad_clip", 1.0) or 0.0)
        step, best_iou, metrics_hist = 0, None, []
        best_ckpt: str | None = None
        if resume_state is not None:
            optimizer.load_state_dict(resume_state["optimizer"])
            scheduler.load_state_dict(resume_state["scheduler"])
            if resume_state.get("scaler"):
                scaler.load_state_dict(resume_state["scaler"])
            step = int(resume_state["step"])
            best_iou = resume_state.get("best_val_iou")
            best_ckpt = resume_state.get("best_checkpoint")
            metrics_hist = list(resume_state.get("metrics", []))
        workers = int(tcfg.get("num_workers", 2))
        pin = di.device.type == "cuda"
        val_loader = DataLoader(val_ds, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin)

        def save_last(epoch: int) -> None:
            state = {
                "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "step": step, "epoch": epoch,
                "steps_per_epoch": steps_per_epoch, "best_val_iou": best_iou, "best_checkpoint": best_ckpt,
                "metrics": metrics_hist, "config": dist_cfg, "mode": mode_name, "meta": task.meta, "data_hash": dhash,
            }
            _atomic_save(state, run_dir / "checkpoints" / "last.pt")

        emit({"event": "start", "run_id": run_id, "run_dir": str(run_dir), "mode": mode_name, "epochs": epochs,
              "steps_per_epoch": steps_per_epoch, "total_steps": total_steps, "batch_size": batch_size,
              "world_size": di.world, "device": str(di.device), "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else None,
              "train_samples": len(train_recs), "val_samples": len(val_recs), "data_hash": dhash,
              "resumed_from_step": step if resume_state is not None else None, "weights_source": wsource})

        # ---------------------------------------------------------------- the loop
        bar = _progress_bar(di.main and opts.progress, total_steps, step)
        status = "finished"
        t_log, imgs_since = time.perf_counter(), 0
        run_sums: dict[str, float] = {}
        run_count = 0
        stop = False
        start_epoch = step // steps_per_epoch
        for epoch in range(start_epoch, epochs):
            sampler.set_epoch(epoch)
            train_ds.set_epoch(epoch)
            skip = step - epoch * steps_per_epoch
            indices = list(iter(sampler))[skip * batch_size:]
            loader = DataLoader(train_ds, batch_size=batch_size, sampler=indices, num_workers=workers,
                                pin_memory=pin, drop_last=False)
            epoch_sums: dict[str, float] = {}
            epoch_n = 0
            epoch_t0 = time.perf_counter()
            epoch_imgs = 0
            for batch in loader:
                batch = {k: v.to(di.device, non_blocking=True) for k, v in batch.items()}
                with torch.autocast(di.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss, terms = task.train_loss(model, batch)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                n_img = batch["image"].shape[0] * di.world
                imgs_since += n_img
                epoch_imgs += n_img
                vals = {"loss": float(loss.detach()), **{f"loss_{k}": float(v) for k, v in terms.items()}}
                for k, v in vals.items():
                    run_sums[k] = run_sums.get(k, 0.0) + v
                    epoch_sums[k] = epoch_sums.get(k, 0.0) + v
                run_count += 1
                epoch_n += 1
                bar(step)
                at_end = step % steps_per_epoch == 0 or (opts.max_steps is not None and step >= opts.max_steps)
                if step % log_every == 0 or at_end:
                    now = time.perf_counter()
                    means = _mean_across(di, {k: v / run_count for k, v in run_sums.items()})
                    emit({"event": "step", "epoch": epoch + 1, "step": step, **means,
                          "lr": optimizer.param_groups[0]["lr"], "images_per_s": imgs_since / max(now - t_log, 1e-9)})
                    t_log, imgs_since, run_sums, run_count = now, 0, {}, 0
                if opts.max_steps is not None and step >= opts.max_steps:
                    stop = True
                if _any_across(di, _Stop.requested):
                    stop, status = True, "stopped"
                if stop:
                    break
            epoch_done = step >= (epoch + 1) * steps_per_epoch
            # -------------------------------------------------------- validation + checkpoints (rank 0)
            if di.main:
                val = task.validate(_unwrap(model), val_loader, di.device)
                elapsed = time.perf_counter() - epoch_t0
                record = {"event": "epoch", "epoch": epoch + 1, "step": step, "complete": epoch_done,
                          **{k: v / max(epoch_n, 1) for k, v in epoch_sums.items()}, **val,
                          "lr": optimizer.param_groups[0]["lr"], "images_per_s": epoch_imgs / max(elapsed, 1e-9)}
                metrics_hist.append({k: v for k, v in record.items() if k != "event"})
                iou = val.get("val_iou_gt")
                improved = iou is not None and (best_iou is None or iou > best_iou)
                if improved or iou is None:
                    best_iou = iou if improved else best_iou
                    best_ckpt = str(run_dir / "checkpoints" / "best.pt")
                    extra = {"run": run_name, "mode": mode_name, "step": step, "epoch": epoch + 1, **val}
                    task.save_best(model, Path(best_ckpt), extra)
                    if finetune:
                        task.save_best(model, run_dir / "teacher.pt", extra)
                # every N epochs (and the last): tiny data sets run hundreds of one-second epochs, and a
                # checkpoint plus the full optimiser state each time would cost more than the training
                on_interval = (epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs
                if epoch_done and on_interval:
                    _atomic_save({"model": _unwrap(model).state_dict(), "meta": task.meta, "step": step,
                                  "epoch": epoch + 1, **val},
                                 run_dir / "checkpoints" / f"epoch_{epoch + 1:03d}.pt")
                if on_interval or stop or not epoch_done:
                    save_last(epoch)
                record["best_val_iou"] = best_iou
                emit(record)
                _store_update(project, run_id, epochs_done=step // steps_per_epoch, best_val_iou=best_iou,
                              best_checkpoint=best_ckpt, metrics=metrics_hist)
            _barrier(di)
            if stop:
                break
        bar(None)
        summary = {"event": "end", "status": status, "run_id": run_id, "run_dir": str(run_dir), "step": step,
                   "best_val_iou": best_iou, "best_checkpoint": best_ckpt}
        emit(summary)
        return summary
    except BaseException:
        status = "failed" if not _Stop.requested else "stopped"
        raise
    finally:
        if di.main and run_id is not None:
            with contextlib.suppress(Exception):
                _store_update(project, run_id, status=status, finished_at=dt.datetime.now(dt.timezone.utc))
        project.close()
        if di.world > 1 and dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()


def _teacher_ident(dist_cfg: dict[str, Any], seed: int) -> str:
    t = dist_cfg["teacher"]
    ck = t.get("checkpoint")
    if ck:
        p = Path(ck).expanduser()
        st = p.stat() if p.exists() else None
        weights = f"{p.resolve()}:{st.st_size if st else 0}:{int(st.st_mtime) if st else 0}"
    else:
        weights = f"random-seed{seed}"
    return f"{teacher_config_name(dist_cfg)}|{weights}|{int(t.get('image_size', 1024))}|{config_hash(t)[:8]}"


def _progress_bar(enabled: bool, total: int, start: int) -> Callable[[int | None], None]:
    """A rich bar on stderr (rank 0); call with the global step, None to close."""
    if not enabled:
        return lambda _step: None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    prog = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=False)
    prog.start()
    task = prog.add_task("train", total=total, completed=start)

    def update(step: int | None) -> None:
        if step is None:
            prog.stop()
        else:
            prog.update(task, completed=step)

    return update
