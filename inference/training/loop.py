"""The epoch/step loop of a training run, and nothing around it: AdamW with a one-cycle schedule (stretched to a time
budget when one is set), an EMA of the weights, bf16/fp16 autocast with a grad scaler, gradient clipping, DDP
wrapping, the per-step randomness, loss bookkeeping, validation on rank 0, and where each epoch's time went.

Why a loop with hooks: checkpoints (inference.training.checkpoints), the TrainingRun row (inference.training.run_rows),
the JSON-line events and progress bar (inference.training.events) and stop signals (inference.training.signals) each
need the loop's state at a few moments; as callbacks they stay small and testable, and the loop stays readable.
The loop calls, in order of the callbacks list:

- on_train_start(loop) once before the first step (every rank);
- on_step_end(loop) after every optimiser step (every rank);
- on_log(loop, entry) every `log_every` steps and at the end of an epoch or `max_steps` (every rank; the loss means
  are already averaged across ranks);
- on_checkpoint(loop, end) after validation at the end of an epoch (rank 0 only): keep the best weights, write files,
  update the store;
- on_epoch_end(loop, end, entry) after `entry` (the epoch's metrics) joined `state.metrics` (rank 0 only);
- on_train_end(loop) after the last epoch, when the run did not raise (every rank);
- wants_stop(loop) after every step: any callback on any rank saying yes ends the run as "stopped".

Randomness of step k depends on (seed, rank, k) only, so a resumed run draws the same batches and clicks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from inference.training.distributed import DistInfo, any_across, barrier, mean_across
from inference.training.ema import ModelEMA
from inference.training.tasks import Task, TrainStep
from inference.training.validation import ValSet, predict_views
from store.errors import UserError


class Callback:
    """A no-op for every hook; subclasses override what they need (see the module docstring for when each runs)."""

    def on_train_start(self, loop: TrainingLoop) -> None: ...

    def on_step_end(self, loop: TrainingLoop) -> None: ...

    def on_log(self, loop: TrainingLoop, entry: dict[str, Any]) -> None: ...

    def on_checkpoint(self, loop: TrainingLoop, end: EpochEnd) -> None: ...

    def on_epoch_end(self, loop: TrainingLoop, end: EpochEnd, entry: dict[str, Any]) -> None: ...

    def on_train_end(self, loop: TrainingLoop) -> None: ...

    def wants_stop(self, loop: TrainingLoop) -> bool:
        return False


@dataclass
class RunState:
    """What a run carries across epochs (and, through last.pt, across a resume)."""

    step: int = 0
    best_val_iou: float | None = None
    best_checkpoint: str | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one entry per epoch, as in the epoch event
    status: str = "finished"  # or "stopped" (a stop request; a spent time budget or max_steps still finishes)


@dataclass
class EpochEnd:
    """An epoch that ended (complete, or cut short by a stop): what the callbacks decide their writes on."""

    epoch: int  # 1-based
    complete: bool  # all of its steps ran
    last: bool  # the run's final epoch
    on_interval: bool  # a `checkpoint_every` epoch, or the final one
    stop: bool  # the run ends here (stop request, max_steps, time budget)
    val: dict[str, float | None]

    @property
    def saves_last(self) -> bool:
        """last.pt (and the row that mirrors it) is written at intervals, on a stop and after a partial epoch."""
        return self.on_interval or self.stop or not self.complete


def amp_dtype(dev: torch.device, enabled: bool) -> torch.dtype | None:
    if not enabled or dev.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


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


class ValidationPacer:
    """Keeps validation and checkpointing within `share` of a run's training time (data + steps). Why: with few crops
    an epoch is short and validating every one costs a large share of the run: the U-Net baseline's validation was
    28% of its epochs on magnetic-tile (H100, docs/benchmarks.md), time taken from training to pick among EMA weights
    that barely move between epochs. An epoch end that `val_every` calls for validates when the overhead so far plus
    one more validation (priced at the last one) stays within share x the training time so far; the first one due,
    the last epoch and a stop always validate. share 0: every epoch `val_every` calls for."""

    def __init__(self, share: float) -> None:
        self.share = share
        self.train_s = 0.0
        self.overhead_s = 0.0
        self.last_cost_s: float | None = None  # validation + checkpoint of the last validated epoch

    def due(self, epoch_train_s: float) -> bool:
        """Whether this epoch end validates, given its data + step seconds so far (not yet added)."""
        if self.share <= 0 or self.last_cost_s is None:
            return True
        return self.overhead_s + self.last_cost_s <= self.share * (self.train_s + epoch_train_s)

    def add(self, times: dict[str, float], validated: bool) -> None:
        """An epoch's phase seconds (PhaseClock.totals)."""
        cost = times.get("validation", 0.0) + times.get("checkpoint", 0.0)
        self.train_s += times.get("data", 0.0) + times.get("step", 0.0)
        self.overhead_s += cost
        if validated:
            self.last_cost_s = cost


def generators(seed: int, rank: int, step: int, dev: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """The randomness of one step, from (seed, rank, step) alone (resume draws the same batches and clicks)."""
    key = (seed * 1_000_003 + rank) * 10_000_019 + step
    g_cpu = torch.Generator().manual_seed(key)
    g_dev = torch.Generator(device=dev).manual_seed(key + 7)
    return g_cpu, g_dev


class OneCycle:
    """AdamW's learning rate as a function of progress p in [0, 1]: linear warm-up from lr/25 over `warmup`, then
    cosine down to `min_lr` (default lr/1000). Progress is the share of steps done, or of `time_budget_s` spent when
    that is larger: a run with a time budget anneals fully within it whatever the machine's speed (the price: its
    exact schedule depends on the machine, so such a run is not bit-reproducible on resume). The time share counts
    from the end of the process's first step (`started`): set-up and torch.compile (about 100 s of a 180 s budget
    for a compiled student on a fresh H100, docs/benchmarks.md) then shorten the schedule instead of skipping its
    warm-up and peak; the run still ends when the budget's wall time is spent."""

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
        self.t_first: float | None = None  # end of this process's first step

    def started(self) -> None:
        """The first step of this process is done: the time share counts from here (idempotent)."""
        if self.t_first is None:
            self.t_first = time.perf_counter()

    def progress(self, step: int) -> float:
        p = step / self.total
        if self.budget > 0:
            if self.t_first is None:  # still in the first step: no time share of the schedule spent yet
                p = max(p, self.elapsed_before / self.budget)
            else:  # the schedule spans the budget left after set-up; 1 exactly when the wall budget is spent
                left = self.budget - (self.t_first - self.t0)
                spent = self.elapsed_before + time.perf_counter() - self.t_first
                p = max(p, spent / left if left > 0 else 1.0)
        return min(1.0, p)

    def seconds_this_process(self) -> float:
        """Seconds since this process built the schedule (a resume's earlier seconds not counted)."""
        return time.perf_counter() - self.t0

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


@dataclass
class LoopConfig:
    epochs: int
    batch_size: int
    lr: float
    seed: int
    log_every: int
    val_every: int
    checkpoint_every: int
    max_steps: int | None
    n_train: int  # training crops (split across ranks)
    channels_last: bool  # on CUDA (Task.channels_last)


class TrainingLoop:
    """Builds the optimiser, schedule, EMA and (DDP-wrapped) step module for `task`, restores them from a resume
    state, and runs the epochs, calling `callbacks` (module docstring)."""

    def __init__(self, task: Task, valset: ValSet, di: DistInfo, tcfg: dict[str, Any], cfg: LoopConfig,
                 amp: torch.dtype | None, resume_state: dict[str, Any] | None, callbacks: list[Callback]) -> None:
        self.task, self.valset, self.di, self.cfg, self.amp = task, valset, di, cfg, amp
        self.resume_state = resume_state
        self.callbacks = callbacks
        model = task.model().to(di.device)
        if di.device.type == "cuda" and cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if resume_state is not None:
            model.load_state_dict(resume_state["model"])
        model.train()
        self.model = model
        decay = float(tcfg.get("ema_decay", 0.999))
        self.ema = ModelEMA(model, decay) if decay > 0 else None
        if self.ema is not None and resume_state is not None and resume_state.get("ema"):
            self.ema.load_state_dict(resume_state["ema"])
        compile_mode = tcfg.get("compile")
        self.compile_mode = compile_mode
        if compile_mode:  # after the EMA's copy (validation and checkpoints use the eager average)
            for part in task.compiled_parts(model):
                # static shapes: the decoder sees two click counts per step (initial, follow-up) and one graph each
                part.compile(mode=None if compile_mode == "default" else compile_mode, dynamic=False)
        step_module: nn.Module = TrainStep(task, model)
        if di.world > 1:
            step_module = nn.parallel.DistributedDataParallel(
                step_module, device_ids=[di.device.index] if di.device.type == "cuda" else None,
                find_unused_parameters=True)  # heads a mode does not use (SAM 2's object score, multimask tokens)
        self.step_module = step_module
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=float(tcfg.get("weight_decay", 0.05)),
                                           fused=di.device.type == "cuda")
        per_rank = math.ceil(cfg.n_train / di.world)
        self.steps_per_epoch = max(1, math.ceil(per_rank / cfg.batch_size))
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.time_budget = float(tcfg.get("time_budget_s") or 0.0)
        self.pacer = ValidationPacer(float(tcfg.get("val_share") or 0.0))
        self.scheduler = OneCycle(self.optimizer, cfg.lr, self.total_steps, tcfg, self.time_budget)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
        self.grad_clip = float(tcfg.get("grad_clip", 1.0) or 0.0)
        self.state = RunState()
        if resume_state is not None:
            self.optimizer.load_state_dict(resume_state["optimizer"])
            self.scheduler.load_state_dict(resume_state["scheduler"])
            if resume_state.get("scaler"):
                self.scaler.load_state_dict(resume_state["scaler"])
            self.state.step = int(resume_state["step"])
            self.state.best_val_iou = resume_state.get("best_val_iou")
            self.state.best_checkpoint = resume_state.get("best_checkpoint")
            self.state.metrics = list(resume_state.get("metrics", []))

    def eval_model(self) -> nn.Module:
        """The weights validation and the checkpoints use: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def _train_step(self, batch: Any, g_dev: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        amp = self.amp
        with torch.autocast(self.di.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss, terms = self.step_module(batch, g_dev)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss, terms

    def validates(self, epoch: int, last_epoch: bool, stop: bool, epoch_train_s: float) -> bool:
        """Every `val_every` epochs as far as `val_share` allows (ValidationPacer), at the last one and on a stop."""
        due = (epoch + 1) % self.cfg.val_every == 0 and self.pacer.due(epoch_train_s)
        return due or last_epoch or stop

    def validate(self) -> dict[str, float | None]:
        """IoU of the eval weights on the validation canvases (and against the teacher's answers)."""
        net = self.eval_model().eval()
        task, valset = self.task, self.valset
        logits = predict_views(lambda x, p, lb: task.predict(net, x, p, lb), valset, self.cfg.batch_size, self.amp)
        val: dict[str, float | None] = {}
        val["val_iou_gt"], val["val_iou_teacher"] = valset.scores(logits)
        self.model.train()
        return val

    def run(self) -> None:
        di, cfg, task, state = self.di, self.cfg, self.task, self.state
        spe = self.steps_per_epoch
        self._call("on_train_start")
        clock = PhaseClock(di.device)
        t_log, imgs_since = time.perf_counter(), 0
        run_sums: dict[str, torch.Tensor] = {}
        run_count = 0
        stop = False
        for epoch in range(state.step // spe, cfg.epochs):
            epoch_sums: dict[str, torch.Tensor] = {}
            epoch_n = 0
            epoch_imgs = 0
            clock.start()
            while state.step < (epoch + 1) * spe:
                progress = self.scheduler.apply(state.step)
                if self.time_budget and any_across(di, progress >= 1.0):
                    stop = True  # the time budget is spent (a finished schedule, not a user stop)
                    break
                task.before_step(self.model, state.step, self.total_steps)
                g_cpu, g_dev = generators(cfg.seed, di.rank, state.step, di.device)
                batch = task.batch(cfg.batch_size, g_cpu, g_dev)
                clock.mark("data")
                try:
                    loss, terms = self._train_step(batch, g_dev)
                except torch._dynamo.exc.BackendCompilerFailed as exc:  # the compile runs in the first steps
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise UserError(f"training.compile: {self.compile_mode} could not compile the student ({first}); "
                                    "set distillation.training.compile: null to train without it") from exc
                state.step += 1
                self.scheduler.started()
                step = state.step
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
                self._call("on_step_end")
                at_end = step % spe == 0 or (cfg.max_steps is not None and step >= cfg.max_steps)
                if step % cfg.log_every == 0 or at_end:
                    now = time.perf_counter()
                    means = mean_across(di, {k: float(v) / run_count for k, v in run_sums.items()})
                    self._call("on_log", {"epoch": epoch + 1, "step": step, **means,
                                          "lr": self.optimizer.param_groups[0]["lr"],
                                          "images_per_s": imgs_since / max(now - t_log, 1e-9)})
                    t_log, imgs_since, run_sums, run_count = now, 0, {}, 0
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    stop = True
                if any_across(di, any(cb.wants_stop(self) for cb in self.callbacks)):
                    stop, state.status = True, "stopped"
                if stop:
                    break
            if di.main:
                last_epoch = epoch + 1 == cfg.epochs
                so_far = clock.totals()
                validated = self.validates(epoch, last_epoch, stop, so_far.get("data", 0.0) + so_far.get("step", 0.0))
                val = self.validate() if validated else {"val_iou_gt": None, "val_iou_teacher": None}
                clock.mark("validation")
                end = EpochEnd(epoch + 1, state.step >= (epoch + 1) * spe, last_epoch,
                               (epoch + 1) % cfg.checkpoint_every == 0 or last_epoch, stop, val)
                self._call("on_checkpoint", end)
                clock.mark("checkpoint")
                times = clock.totals()
                self.pacer.add(times, validated)
                entry = {"epoch": epoch + 1, "step": state.step, "complete": end.complete,
                         **{k: float(v) / max(epoch_n, 1) for k, v in epoch_sums.items()}, **val,
                         "lr": self.optimizer.param_groups[0]["lr"],
                         "images_per_s": epoch_imgs / max(times.get("data", 0) + times.get("step", 0), 1e-9),
                         "time": {f"{k}_s": round(v, 4) for k, v in times.items()}, "epoch_s": round(sum(times.values()), 4)}
                state.metrics.append(entry)
                self._call("on_epoch_end", end, entry)
            barrier(di)
            if stop:
                break
        self._call("on_train_end")
