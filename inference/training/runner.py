"""One training run: `distill` (seed 001's loss, optionally without the feature term), `finetune-teacher` (SAM 2 on
verified masks), `unet` (the plain supervised baseline of the distillation table) or `qat` (a trained student
fine-tuned by distillation with fake INT8 quantisation, inference.training.qat). Single process or
`torchrun --nproc_per_node N` (DDP; gloo on CPU, NCCL on CUDA). Rank 0 prints JSON lines, draws the progress bar
on stderr, writes checkpoints and the TrainingRun row.

How a run is fast (issue 14): the crops are decoded once into uint8 tensors on the training device, every batch is
cut, flipped, rotated and photometrically changed there (inference.training.crops), the teacher's features are
computed once per run (inference.training.teacher_targets), bf16 autocast and channels-last on CUDA, and the
per-epoch overhead is small: validation predicts pre-built canvases on the device, the best weights are kept in
memory and written every `checkpoint_every` epochs and at the end. Each epoch line reports where its time went
(data, step, validation, checkpoint).

How a run learns from few crops: interactive clicks with follow-ups in its own errors (inference.training.tasks),
class-balanced sampling, positive-pixel weighting, an EMA of the weights that validation and the checkpoints use,
AdamW with a one-cycle schedule, and the checkpoint picked by validation IoU (the one-click protocol of the test
table).

Run folder: config.yaml, metrics.jsonl (the JSON lines), checkpoints/last.pt (full state: every
`checkpoint_every` epochs and on stop), checkpoints/epoch_NNN.pt, checkpoints/best.pt. For finetune-teacher,
best.pt and teacher.pt hold the official SAM 2 {"model": state_dict} so the file can be imported as the teacher.
Randomness of step k depends on (seed, rank, k) only, so a resumed run draws the same batches and clicks.
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

from inference.training import crops as cr
from inference.training.ema import ModelEMA
from inference.training.settings import (
    MODE_NAMES,
    MODES,
    mode_schedule,
    resolve,
    set_schedule,
    teacher_config_name,
    teacher_from_store,
)
from inference.training.tasks import DistillTask, FinetuneTask, QATTask, Task, TrainStep, UNetTask
from inference.training.validation import ValSet, predict_views
from store.errors import UserError



@dataclass
class TrainOptions:
    project: Path
    mode: str = "distill"  # distill | finetune-teacher | unet | qat
    no_feature_loss: bool = False
    config_file: Path | None = None
    epochs: int | None = None
    batch_size: int | None = None
    device: str = "cpu"
    resume: Path | None = None
    max_steps: int | None = None
    log_every: int | None = None
    name: str | None = None
    progress: bool = True
    emit: Callable[[dict[str, Any]], None] | None = None  # default: one JSON line per event on stdout
    overrides: dict[str, Any] = field(default_factory=dict)  # deep-merged into the distillation section
    checkpoint: Path | None = None  # qat: the trained student to fine-tune (default: qat.checkpoint, active student)


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


def atomic_save(obj: Any, path: Path) -> None:
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


class PhaseClock:
    """Where an epoch's time goes (data, step, validation, checkpoint), measured without stalling the GPU: CUDA
    events recorded in the stream and read once at the end of the epoch; wall clock on CPU."""

    def __init__(self, dev: torch.device) -> None:
        self.cuda = dev.type == "cuda"
        self.marks: list[tuple[str, Any]] = []
        self.start()

    def _now(self) -> Any:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def start(self) -> None:
        self.marks = [("start", self._now())]

    def mark(self, phase: str) -> None:
        self.marks.append((phase, self._now()))

    def totals(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
        out: dict[str, float] = {}
        for (_, a), (phase, b) in zip(self.marks, self.marks[1:]):
            dt_s = a.elapsed_time(b) / 1000.0 if self.cuda else b - a
            out[phase] = out.get(phase, 0.0) + dt_s
        return out


def _generators(seed: int, rank: int, step: int, dev: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """The randomness of one step, from (seed, rank, step) alone (resume draws the same batches and clicks)."""
    key = (seed * 1_000_003 + rank) * 10_000_019 + step
    g_cpu = torch.Generator().manual_seed(key)
    g_dev = torch.Generator(device=dev).manual_seed(key + 7)
    return g_cpu, g_dev


class OneCycle:
    """AdamW's learning rate as a function of progress p in [0, 1]: linear warm-up from lr/25 over `warmup`, then
    cosine down to `min_lr` (default lr/1000). Progress is the share of steps done, or of `time_budget_s` spent when
    that is larger: a run with a time budget anneals fully within it whatever the machine's speed (the price: its
    exact schedule depends on the machine, so such a run is not bit-reproducible on resume)."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, total_steps: int, tcfg: dict[str, Any],
                 time_budget_s: float = 0.0) -> None:
        self.optimizer = optimizer
        self.lr = lr
        self.total = max(1, total_steps)
        self.warmup = float(tcfg.get("warmup", 0.1))
        self.min_lr = float(tcfg.get("min_lr") or 0.0) or lr / 1000.0
        self.budget = float(time_budget_s or 0.0)
        self.elapsed_before = 0.0  # seconds spent before a resume
        self.t0 = time.perf_counter()

    def progress(self, step: int) -> float:
        p = step / self.total
        if self.budget > 0:
            p = max(p, (self.elapsed_before + time.perf_counter() - self.t0) / self.budget)
        return min(1.0, p)

    def rate(self, p: float) -> float:
        if p < self.warmup:
            return self.lr * (0.04 + 0.96 * p / self.warmup)
        q = (p - self.warmup) / max(1e-9, 1.0 - self.warmup)
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * q))

    def apply(self, step: int) -> float:
        p = self.progress(step)
        for g in self.optimizer.param_groups:
            g["lr"] = self.rate(p)
        return p

    def state_dict(self) -> dict[str, float]:
        return {"elapsed": self.elapsed_before + time.perf_counter() - self.t0}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.elapsed_before = float(state.get("elapsed", 0.0))


def _build_task(mode_name: str, dist_cfg: dict[str, Any], train_crops: cr.CropSet, dev: torch.device,
                no_feature_loss: bool, amp: torch.dtype | None, emit: Callable[[dict[str, Any]], None],
                seed: int) -> tuple[Task, Any]:
    """The task and, for distillation, the teacher (to answer the validation clicks)."""
    tcfg = dist_cfg["training"]
    if mode_name in ("distill", "distill_naive", "qat"):
        from inference.student import ARCHITECTURE, StudentConfig, StudentModel, load_checkpoint
        from inference.training.teacher import build_teacher_net
        from inference.training.teacher_targets import TeacherTargets

        if mode_name == "qat":  # the trained student, fake quantisation on before the EMA copy and the optimiser
            from inference.training import qat

            student = load_checkpoint(dist_cfg["qat"]["checkpoint"]).train()
            qat.prepare_qat(student, momentum=float(dist_cfg["qat"]["observer_momentum"]))
            scfg = student.config
        else:
            scfg = StudentConfig.from_project(dist_cfg["student"])
            student = StudentModel(scfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # a random-weights teacher (tests) is the same on every build
            net = build_teacher_net(dist_cfg, device=str(dev))
        ratio = net.image_size / scfg.input_size
        views = cr.tile_views(train_crops, scfg.input_size)
        t_crops = train_crops.rescaled(train_crops.scale * ratio)
        t_views = cr.Views(views.crop, [(int(round(y * ratio)), int(round(x * ratio))) for y, x in views.origin],
                           net.image_size)
        n_d = 8 if (tcfg.get("augment") or {}).get("dihedral") else 1
        t0 = time.perf_counter()
        targets = TeacherTargets(net, t_crops, t_views, n_d, dev, dtype=amp or torch.float32,
                                 progress=lambda d, n: emit({"event": "cache", "done": d, "total": n}))
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


def _qat_source(project: Any, dist_cfg: dict[str, Any], checkpoint: Path | None) -> None:
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


def _crop_scale(mode_name: str, dist_cfg: dict[str, Any]) -> tuple[float, int]:
    """(scale, canvas) the mode's crops are decoded at."""
    if mode_name == "finetune_teacher":
        return float(dist_cfg["teacher"].get("scale", 1.0)), int(dist_cfg["teacher"].get("image_size", 1024))
    s = dist_cfg["student"]
    return float(s.get("scale", 1.0)), int(s.get("input_size", 512))


# ------------------------------------------------------------------------------------------------ train()


def train(opts: TrainOptions) -> dict[str, Any]:
    """Runs (or resumes) one training run; returns the final summary event."""
    from review.training_set import counts, training_samples
    from store.config import deep_merge
    from store.project import Project

    if opts.mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, not {opts.mode!r}")
    if opts.no_feature_loss and opts.mode != "distill":
        raise UserError("--no-feature-loss only applies to --mode distill")
    if opts.checkpoint is not None and (opts.mode != "qat" or opts.resume is not None):
        raise UserError("--checkpoint only applies to a new --mode qat run (a resumed run keeps its source)")
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
            if mode_name == "qat":
                _qat_source(project, dist_cfg, opts.checkpoint)
        tcfg = dist_cfg["training"]
        sched = mode_schedule(mode_name, dist_cfg)
        if opts.epochs is not None:
            sched["epochs"] = int(opts.epochs)
            set_schedule(dist_cfg, mode_name, "epochs", int(opts.epochs))
        if opts.batch_size is not None:
            sched["batch_size"] = int(opts.batch_size)
            set_schedule(dist_cfg, mode_name, "batch_size", int(opts.batch_size))
        if opts.log_every is not None:
            tcfg["log_every"] = int(opts.log_every)
        epochs, batch_size, lr = int(sched["epochs"]), int(sched["batch_size"]), float(sched["lr"])
        seed = int(tcfg.get("seed", 0))
        log_every = max(1, int(tcfg.get("log_every", 10)))
        checkpoint_every = max(1, int(tcfg.get("checkpoint_every", 10)))
        val_every = max(1, int(tcfg.get("val_every", 1)))
        if epochs < 1 or batch_size < 1:
            raise UserError("epochs and batch size must be at least 1")

        def emit(event: dict[str, Any]) -> None:
            if di.main:
                emit_raw(event)
                if run_dir_holder:
                    with open(run_dir_holder[0] / "metrics.jsonl", "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(event, default=float) + "\n")

        run_dir_holder: list[Path] = []

        # ---------------------------------------------------------------- data (review -> training seam)
        samples = training_samples(project, ("train", "val"))  # an invalid weights section fails here
        distill = mode_name.startswith("distill") or mode_name == "qat"  # qat: distillation's data and loss
        train_s = [s for s in samples if s.split == "train" and (s.labelled or (distill and s.prompt_points))]
        val_s = [s for s in samples if s.split == "val" and s.labelled]
        if not any(s.labelled for s in train_s):
            raise UserError("no training samples with a verified mask in this project (ingest a data set first)")
        torch.manual_seed(seed)
        from inference.training.settings import data_hash

        dhash = data_hash(train_s + val_s, {"mode": mode_name})

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
        set_counts = counts([s for s in samples if s.split == "train"])
        full_cfg = {"distillation": dist_cfg, "mode": mode_name, "world_size": di.world, "device": opts.device,
                    "weights_source": "review.weights", "max_steps": opts.max_steps,
                    "training_set": set_counts.__dict__}
        if di.main:
            import yaml

            (run_dir / "config.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(full_cfg, default=str)), sort_keys=False))
            prev = _find_run_id(project, run_dir) if resume_state is not None else None
            run_id = _store_start(project, prev, name=run_name, mode=mode_name, status="running",
                                  config=json.loads(json.dumps(full_cfg, default=str)), data_hash=dhash,
                                  out_dir=str(run_dir))
        if distill and not dist_cfg["teacher"].get("checkpoint"):
            emit({"event": "warning", "message": "distillation.teacher.checkpoint is not set: the teacher has RANDOM "
                  "weights (fine for tests, useless for real training)"})

        scale, canvas = _crop_scale(mode_name, dist_cfg)
        t_data = time.perf_counter()
        train_crops = cr.decode_crops(train_s, scale).to(di.device)
        val_crops = cr.decode_crops(val_s, scale).to(di.device)
        emit({"event": "data", "train": len(train_crops), "val": len(val_crops), "training_set": set_counts.line(),
              "seconds": round(time.perf_counter() - t_data, 2)})
        amp_dtype = _amp_dtype(di.device, bool(tcfg.get("amp", True)))
        task, teacher_net = _build_task(mode_name, dist_cfg, train_crops, di.device, opts.no_feature_loss, amp_dtype,
                                        emit, seed)
        task.weights = {s.sample_id: (s.weights.feature, s.weights.soft, s.weights.dice) for s in train_s}
        valset = ValSet(val_crops, task.canvas if mode_name != "unet" else task.val_canvas, di.device)  # type: ignore[attr-defined]
        if teacher_net is not None and len(valset):
            valset.teacher_logits = _teacher_val_logits(teacher_net, valset, task, amp_dtype)

        # ---------------------------------------------------------------- model, optimiser, schedule
        model = task.model().to(di.device)
        if di.device.type == "cuda" and mode_name != "finetune_teacher":
            model = model.to(memory_format=torch.channels_last)
        if resume_state is not None:
            model.load_state_dict(resume_state["model"])
        model.train()
        ema = ModelEMA(model, float(tcfg.get("ema_decay", 0.999))) if float(tcfg.get("ema_decay", 0.999)) > 0 else None
        if ema is not None and resume_state is not None and resume_state.get("ema"):
            ema.load_state_dict(resume_state["ema"])
        step_module: nn.Module = TrainStep(task, model)
        if di.world > 1:
            step_module = nn.parallel.DistributedDataParallel(
                step_module, device_ids=[di.device.index] if di.device.type == "cuda" else None,
                find_unused_parameters=True)  # heads a mode does not use (SAM 2's object score, multimask tokens)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=float(tcfg.get("weight_decay", 0.05)),
                                      fused=di.device.type == "cuda")
        per_rank = math.ceil(len(train_crops) / di.world)
        steps_per_epoch = max(1, math.ceil(per_rank / batch_size))
        total_steps = epochs * steps_per_epoch
        time_budget = float(tcfg.get("time_budget_s") or 0.0)
        scheduler = OneCycle(optimizer, lr, total_steps, tcfg, time_budget)
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        grad_clip = float(tcfg.get("grad_clip", 1.0) or 0.0)
        step, best_iou, metrics_hist = 0, None, []
        best_ckpt: str | None = None
        best_state: dict[str, torch.Tensor] | None = None
        best_extra: dict[str, Any] = {}
        best_written = True
        if resume_state is not None:
            optimizer.load_state_dict(resume_state["optimizer"])
            scheduler.load_state_dict(resume_state["scheduler"])
            if resume_state.get("scaler"):
                scaler.load_state_dict(resume_state["scaler"])
            step = int(resume_state["step"])
            best_iou = resume_state.get("best_val_iou")
            best_ckpt = resume_state.get("best_checkpoint")
            metrics_hist = list(resume_state.get("metrics", []))

        def eval_model() -> nn.Module:
            return ema.module if ema is not None else model

        def save_last(epoch: int) -> None:
            state = {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "step": step, "epoch": epoch,
                "steps_per_epoch": steps_per_epoch, "best_val_iou": best_iou, "best_checkpoint": best_ckpt,
                "metrics": metrics_hist, "config": dist_cfg, "mode": mode_name, "meta": task.meta, "data_hash": dhash,
                "ema": ema.state_dict() if ema is not None else None,
            }
            atomic_save(state, run_dir / "checkpoints" / "last.pt")

        def write_best() -> None:
            nonlocal best_written
            if best_state is None or best_written:
                return
            net = eval_model()
            keep = {k: v.detach().clone() for k, v in net.state_dict().items()}
            net.load_state_dict(best_state)
            task.save_best(net, Path(best_ckpt), best_extra)  # type: ignore[arg-type]
            if mode_name == "finetune_teacher":
                task.save_best(net, run_dir / "teacher.pt", best_extra)
            net.load_state_dict(keep)
            best_written = True

        emit({"event": "start", "run_id": run_id, "run_dir": str(run_dir), "mode": mode_name, "epochs": epochs,
              "steps_per_epoch": steps_per_epoch, "total_steps": total_steps, "batch_size": batch_size,
              "world_size": di.world, "device": str(di.device),
              "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else None,
              "train_samples": len(train_crops), "val_samples": len(valset), "data_hash": dhash,
              "resumed_from_step": step if resume_state is not None else None, "weights_source": "review.weights",
              "training_set": set_counts.__dict__})

        # ---------------------------------------------------------------- the loop
        bar = _progress_bar(di.main and opts.progress, total_steps, step)
        status = "finished"
        clock = PhaseClock(di.device)
        t_log, imgs_since = time.perf_counter(), 0
        run_sums: dict[str, torch.Tensor] = {}
        run_count = 0
        stop = False
        start_epoch = step // steps_per_epoch
        for epoch in range(start_epoch, epochs):
            epoch_sums: dict[str, torch.Tensor] = {}
            epoch_n = 0
            epoch_imgs = 0
            clock.start()
            while step < (epoch + 1) * steps_per_epoch:
                progress = scheduler.apply(step)
                if time_budget and _any_across(di, progress >= 1.0):
                    stop = True  # the time budget is spent (a finished schedule, not a user stop)
                    break
                task.before_step(model, step, total_steps)
                g_cpu, g_dev = _generators(seed, di.rank, step, di.device)
                batch = task.batch(batch_size, g_cpu, g_dev)
                clock.mark("data")
                with torch.autocast(di.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    loss, terms = step_module(batch, g_dev)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                scaler.step(optimizer)
                scaler.update()
                if ema is not None:
                    ema.update(model)
                step += 1
                clock.mark("step")
                n_img = batch.x.shape[0] * di.world
                imgs_since += n_img
                epoch_imgs += n_img
                vals = {"loss": loss.detach().float(), **{f"loss_{k}": v.float() for k, v in terms.items()}}
                for k, v in vals.items():
                    run_sums[k] = run_sums.get(k, 0.0) + v
                    epoch_sums[k] = epoch_sums.get(k, 0.0) + v
                run_count += 1
                epoch_n += 1
                bar(step)
                at_end = step % steps_per_epoch == 0 or (opts.max_steps is not None and step >= opts.max_steps)
                if step % log_every == 0 or at_end:
                    now = time.perf_counter()
                    means = _mean_across(di, {k: float(v) / run_count for k, v in run_sums.items()})
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
            last_epoch = epoch + 1 == epochs
            # -------------------------------------------------------- validation + checkpoints (rank 0)
            if di.main:
                val: dict[str, float | None] = {"val_iou_gt": None, "val_iou_teacher": None}
                if (epoch + 1) % val_every == 0 or last_epoch or stop:
                    net = eval_model().eval()
                    logits = predict_views(lambda x, p, lb: task.predict(net, x, p, lb), valset, batch_size, amp_dtype)
                    val["val_iou_gt"] = valset.iou(logits)
                    if valset.teacher_logits is not None:
                        val["val_iou_teacher"] = valset.iou(logits, valset.stitched(valset.teacher_logits))
                    model.train()
                clock.mark("validation")
                iou = val.get("val_iou_gt")
                improved = iou is not None and (best_iou is None or iou > best_iou)
                if improved or (best_state is None and iou is None and not len(valset)):
                    best_iou = iou if improved else best_iou
                    best_ckpt = str(run_dir / "checkpoints" / "best.pt")
                    best_state = {k: v.detach().clone() for k, v in eval_model().state_dict().items()}
                    best_extra = {"run": run_name, "mode": mode_name, "step": step, "epoch": epoch + 1, **val}
                    best_written = False
                on_interval = (epoch + 1) % checkpoint_every == 0 or last_epoch
                if on_interval or stop:
                    write_best()
                if epoch_done and on_interval:
                    atomic_save({"model": task.plain_state(model), "meta": task.meta, "step": step, "epoch": epoch + 1, **val},
                                run_dir / "checkpoints" / f"epoch_{epoch + 1:03d}.pt")
                if on_interval or stop or not epoch_done:
                    save_last(epoch)
                    _store_update(project, run_id, epochs_done=step // steps_per_epoch, best_val_iou=best_iou,
                                  best_checkpoint=best_ckpt, metrics=metrics_hist)
                clock.mark("checkpoint")
                times = clock.totals()
                elapsed = sum(times.values())
                record = {"event": "epoch", "epoch": epoch + 1, "step": step, "complete": epoch_done,
                          **{k: float(v) / max(epoch_n, 1) for k, v in epoch_sums.items()}, **val,
                          "lr": optimizer.param_groups[0]["lr"],
                          "images_per_s": epoch_imgs / max(times.get("data", 0) + times.get("step", 0), 1e-9),
                          "time": {f"{k}_s": round(v, 4) for k, v in times.items()}, "epoch_s": round(elapsed, 4)}
                metrics_hist.append({k: v for k, v in record.items() if k != "event"})
                record["best_val_iou"] = best_iou
                emit(record)
            _barrier(di)
            if stop:
                break
        bar(None)
        if di.main:
            write_best()
            _store_update(project, run_id, epochs_done=step // steps_per_epoch, best_val_iou=best_iou,
                          best_checkpoint=best_ckpt, metrics=metrics_hist)
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


@torch.no_grad()
def _teacher_val_logits(net: Any, vs: ValSet, task: Any, amp: torch.dtype | None) -> torch.Tensor:
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
