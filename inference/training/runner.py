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
While rank 0 runs, train.pid names its process (inference.training.run_rows: a killed run's row is marked failed).
Randomness of step k depends on (seed, rank, k) only, so a resumed run draws the same batches and clicks.

Where each part lives (this module is the thin wiring: options, settings, data, run folder, callbacks):
inference.training.loop (the epoch/step loop, optimiser, schedule, EMA, AMP, DDP wrapping, validation, the hooks),
.build (each mode's task and teacher), .checkpoints (best/epoch/last files, atomic_save), .run_rows (the
TrainingRun row), .events (the JSON-line protocol and progress bar), .signals (SIGTERM/SIGINT as a clean stop),
.distributed (the process group and its collectives).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from inference.sam2_configs import CONVOLUTIONAL_CONFIGS, SCRATCH_TEACHER, short_name
from inference.training import build
from inference.training import crops as cr
from inference.training.checkpoints import Checkpoints
from inference.training.distributed import DistInfo, broadcast, setup_distributed, teardown
from inference.training.events import EventLog, EventSink
from inference.training.loop import Callback, LoopConfig, TrainingLoop, amp_dtype
from inference.training.run_rows import RunRow, fail_stale_runs, remove_pid, write_pid
from inference.training.settings import (MODE_NAMES, MODES, mode_schedule, resolve, set_schedule, teacher_config_name,
                                         teacher_from_store)
from inference.training.signals import StopSignals
from inference.training.tasks import check_window
from inference.training.validation import ValSet
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


@dataclass
class _Settings:
    """The run's resolved settings: its distillation section, mode and schedule (a resume keeps its own)."""

    dist_cfg: dict[str, Any]
    mode_name: str
    resume_state: dict[str, Any] | None
    resume_dir: Path | None
    epochs: int
    batch_size: int
    lr: float
    seed: int
    log_every: int
    checkpoint_every: int
    val_every: int


def _check_options(opts: TrainOptions) -> None:
    if opts.mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, not {opts.mode!r}")
    if opts.no_feature_loss and opts.mode != "distill":
        raise UserError("--no-feature-loss only applies to --mode distill")
    if opts.checkpoint is not None and (opts.mode != "qat" or opts.resume is not None):
        raise UserError("--checkpoint only applies to a new --mode qat run (a resumed run keeps its source)")


def _settings(project: Any, opts: TrainOptions) -> _Settings:
    """project.yaml (+ --config, overrides, the store's teacher) for a new run; last.pt's settings for a resume;
    then the command line's epochs, batch size and log interval."""
    from store.config import deep_merge

    resume_state: dict[str, Any] | None = None
    run_dir: Path | None = None
    if opts.resume is not None:
        run_dir = Path(opts.resume).expanduser().resolve()
        last = run_dir / "checkpoints" / "last.pt"
        if not last.is_file():
            raise UserError(f"--resume {run_dir}: no checkpoints/last.pt there")
        resume_state = torch.load(last, map_location="cpu", weights_only=True)  # plain containers + tensors
        dist_cfg = resume_state["config"]
        mode_name = resume_state["mode"]
        # a run started before context blocks were the default stored no count: it was built without them
        dist_cfg["student"].setdefault("context_blocks", 0)
        if opts.overrides:
            dist_cfg = deep_merge({"d": dist_cfg}, {"d": opts.overrides})["d"]
    else:
        dist_cfg = resolve(project.config, opts.config_file)
        if opts.overrides:
            dist_cfg = deep_merge({"d": dist_cfg}, {"d": opts.overrides})["d"]
        teacher_from_store(project, dist_cfg)
        mode_name = MODE_NAMES[(opts.mode, bool(opts.no_feature_loss))]
        if mode_name == "qat":
            build.qat_source(project, dist_cfg, opts.checkpoint)
        elif mode_name.startswith("distill"):
            # the student as built, every field written out (defaults resolved), so a resume builds the same network
            # whatever later versions default to
            dist_cfg["student"] = {**dist_cfg["student"], **build.student_config(dist_cfg).to_dict()}
    tcfg = dist_cfg["training"]
    if mode_name.startswith("distill") or mode_name == "qat":  # before a run folder or the teacher's features
        check_window(tcfg.get("crop_size"), build.student_config(dist_cfg).input_size)
    sched = mode_schedule(mode_name, dist_cfg)
    if opts.epochs is not None:
        sched["epochs"] = int(opts.epochs)
        set_schedule(dist_cfg, mode_name, "epochs", int(opts.epochs))
    if opts.batch_size is not None:
        sched["batch_size"] = int(opts.batch_size)
        set_schedule(dist_cfg, mode_name, "batch_size", int(opts.batch_size))
    if opts.log_every is not None:
        tcfg["log_every"] = int(opts.log_every)
    st = _Settings(dist_cfg, mode_name, resume_state, run_dir, int(sched["epochs"]), int(sched["batch_size"]),
                   float(sched["lr"]), seed=int(tcfg.get("seed", 0)), log_every=max(1, int(tcfg.get("log_every", 10))),
                   checkpoint_every=max(1, int(tcfg.get("checkpoint_every", 10))),
                   val_every=max(1, int(tcfg.get("val_every", 1))))
    if st.epochs < 1 or st.batch_size < 1:
        raise UserError("epochs and batch size must be at least 1")
    return st


def _new_run_dir(project: Any, di: DistInfo, name: str) -> Path:
    """runs/<name> (or <name>-2, -3, ...) with its checkpoints folder, made by rank 0 and named to every rank."""
    run_dir = project.runs_dir / name if di.main else None
    if di.main:
        n = 1
        while run_dir.exists():
            n += 1
            run_dir = project.runs_dir / f"{name}-{n}"
        (run_dir / "checkpoints").mkdir(parents=True)
    return Path(broadcast(di, str(run_dir) if run_dir else None))


def train(opts: TrainOptions) -> dict[str, Any]:
    """Runs (or resumes) one training run; returns the final summary event."""
    from review.training_set import counts, training_samples
    from store.project import Project

    _check_options(opts)
    signals = StopSignals()
    signals.install()
    di = setup_distributed(opts.device)
    project = Project.open(opts.project)
    emit = EventSink(di.main, opts.emit)
    row: RunRow | None = None
    pid_dir: Path | None = None
    status = "failed"
    try:
        st = _settings(project, opts)
        dist_cfg, mode_name = st.dist_cfg, st.mode_name

        # ---------------------------------------------------------------- data (review -> training seam)
        samples = training_samples(project, ("train", "val"))  # an invalid weights section fails here
        distill = mode_name.startswith("distill") or mode_name == "qat"  # qat: distillation's data and loss
        train_s = [s for s in samples if s.split == "train" and (s.labelled or (distill and s.prompt_points))]
        val_s = [s for s in samples if s.split == "val" and s.labelled]
        if not any(s.labelled for s in train_s):
            raise UserError("no training samples with a verified mask in this project (ingest a data set first)")
        torch.manual_seed(st.seed)
        from inference.training.settings import data_hash

        dhash = data_hash(train_s + val_s, {"mode": mode_name})

        # ---------------------------------------------------------------- run folder and store row
        if st.resume_dir is None:
            run_name = opts.name or f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{mode_name}"
            run_dir = _new_run_dir(project, di, run_name)
        else:
            run_dir = st.resume_dir
            run_name = run_dir.name
        emit.run_dir = run_dir
        set_counts = counts([s for s in samples if s.split == "train"])
        full_cfg = {"distillation": dist_cfg, "mode": mode_name, "world_size": di.world, "device": opts.device,
                    "weights_source": "review.weights", "max_steps": opts.max_steps,
                    "training_set": set_counts.__dict__}
        if di.main:
            import yaml

            plain_cfg = json.loads(json.dumps(full_cfg, default=str))
            (run_dir / "config.yaml").write_text(yaml.safe_dump(plain_cfg, sort_keys=False))
            for stale_id, stale_name in fail_stale_runs(project):
                emit({"event": "warning", "message": f"training run {stale_id} ({stale_name}) was left 'running' by "
                      "a process that no longer exists: marked failed"})
            write_pid(run_dir)
            pid_dir = run_dir
            row = RunRow.start(project, run_dir, st.resume_state is not None, name=run_name, mode=mode_name,
                               status="running", config=plain_cfg, data_hash=dhash, out_dir=str(run_dir))
        if distill and not dist_cfg["teacher"].get("checkpoint"):
            emit({"event": "warning", "message": "distillation.teacher.checkpoint is not set: the teacher has RANDOM "
                  "weights (fine for tests, useless for real training)"})
        if mode_name == "finetune_teacher" and not dist_cfg["teacher"].get("checkpoint") \
                and (teacher_short := short_name(teacher_config_name(dist_cfg))) not in CONVOLUTIONAL_CONFIGS:
            emit({"event": "warning", "message": f"fine-tuning SAM 2 {teacher_short} from RANDOM "
                  f"weights: Hiera does not learn from a few hundred crops; without official weights set "
                  f"distillation.teacher.config: {SCRATCH_TEACHER} (a convolutional trunk and click maps, "
                  "docs/benchmarks.md)"})

        # ---------------------------------------------------------------- crops, task, validation set
        scale, _canvas = build.crop_scale(mode_name, dist_cfg)
        t_data = time.perf_counter()
        train_crops = cr.decode_crops(train_s, scale).to(di.device)
        val_crops = cr.decode_crops(val_s, scale).to(di.device)
        emit({"event": "data", "train": len(train_crops), "val": len(val_crops), "training_set": set_counts.line(),
              "seconds": round(time.perf_counter() - t_data, 2)})
        amp = amp_dtype(di.device, bool(dist_cfg["training"].get("amp", True)))
        task, teacher_net = build.build_task(mode_name, dist_cfg, train_crops, di.device, opts.no_feature_loss, amp,
                                             emit, st.seed)
        task.weights = {s.sample_id: (s.weights.feature, s.weights.soft, s.weights.dice) for s in train_s}
        valset = ValSet(val_crops, task.canvas if mode_name != "unet" else task.val_canvas, di.device)  # type: ignore[attr-defined]
        if teacher_net is not None and len(valset):
            valset.teacher_logits = build.teacher_val_logits(teacher_net, valset, task, amp)

        # ---------------------------------------------------------------- the loop and its callbacks
        events = EventLog(emit, run_id=row.run_id if row else None, run_dir=run_dir, mode=mode_name,
                          data_hash=dhash, training_set=set_counts.__dict__, progress=opts.progress)
        callbacks: list[Callback] = [Checkpoints(run_dir, run_name, mode_name, dist_cfg, dhash), row] if row else []
        callbacks += [events, signals]
        cfg = LoopConfig(epochs=st.epochs, batch_size=st.batch_size, lr=st.lr, seed=st.seed, log_every=st.log_every,
                         val_every=st.val_every, checkpoint_every=st.checkpoint_every, max_steps=opts.max_steps,
                         n_train=len(train_crops), channels_last=task.channels_last)
        loop = TrainingLoop(task, valset, di, dist_cfg["training"], cfg, amp, st.resume_state, callbacks)
        loop.run()
        status = loop.state.status
        return events.summary
    except BaseException:
        status = "failed" if not signals.requested else "stopped"
        raise
    finally:
        if row is not None:
            with contextlib.suppress(Exception):
                row.finish(status)
        if pid_dir is not None:
            remove_pid(pid_dir)
        project.close()
        with contextlib.suppress(Exception):
            teardown(di)
