"""The JSON-line protocol of a training run, and its progress bar.

Rank 0 writes one JSON object a line to stdout (or to `TrainOptions.emit`) and appends the same line to the run
folder's metrics.jsonl once the folder exists. The training panel (widgets/training_panel.py) reads stdout live;
bench/distillation_table.py reads metrics.jsonl afterwards; so the event names and fields are an interface:

- warning {message} (also during the run: a first step that took much of `time_budget_s`); data {train, val,
  training_set, seconds}; cache {done, total};
  cache_ready {computed, samples, views, dihedral, seconds} (emitted while the run is set up, inference.training.runner
  and inference.training.build; no cache events when the loss never reads the teacher's features);
- start {run_id, run_dir, mode, epochs, steps_per_epoch, total_steps, batch_size, world_size, device, amp,
  train_samples, val_samples, data_hash, resumed_from_step, weights_source, training_set};
- step {epoch, step, loss, loss_<term>..., lr, images_per_s} every `log_every` steps;
- epoch {epoch, step, complete, loss..., val_iou_gt, val_iou_teacher, lr, images_per_s, time, epoch_s,
  best_val_iou} (the same fields but best_val_iou and event are the epoch's entry of the metrics history);
- end {status, run_id, run_dir, step, best_val_iou, best_checkpoint}: also what `train()` returns.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inference.training.loop import Callback, EpochEnd, TrainingLoop

Emit = Callable[[dict[str, Any]], None]

# A first step (set-up, cuDNN / allocator warm-up, torch.compile) that takes this share of the time budget or more
# leaves the schedule little time: four compiled runs started at once on one host spent 200 s of a 250 s budget
# there, annealed in the 50 s left and ended near IoU 0 (docs/benchmarks.md, third session of 2026-12-05).
SLOW_FIRST_STEP_SHARE = 0.25


def emit_stdout(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, default=float) + "\n")
    sys.stdout.flush()


class EventSink:
    """Where events go: `raw` (stdout by default) and, once `run_dir` is set, metrics.jsonl. Silent off rank 0."""

    def __init__(self, main: bool, raw: Emit | None = None) -> None:
        self.main = main
        self.raw = raw or emit_stdout
        self.run_dir: Path | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        if self.main:
            self.raw(event)
            if self.run_dir is not None:
                with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(event, default=float) + "\n")


class EventLog(Callback):
    """The loop's events (start, step, epoch, end) and the rank-0 progress bar on stderr."""

    def __init__(self, emit: Emit, *, run_id: int | None, run_dir: Path, mode: str, data_hash: str,
                 training_set: dict[str, Any], progress: bool) -> None:
        self.emit = emit
        self.run_id, self.run_dir, self.mode = run_id, run_dir, mode
        self.data_hash, self.training_set = data_hash, training_set
        self.progress = progress
        self.bar: Callable[[int | None], None] = lambda _step: None
        self.summary: dict[str, Any] = {}

    def on_train_start(self, loop: TrainingLoop) -> None:
        amp = loop.amp
        self.emit({"event": "start", "run_id": self.run_id, "run_dir": str(self.run_dir), "mode": self.mode,
                   "epochs": loop.cfg.epochs, "steps_per_epoch": loop.steps_per_epoch, "total_steps": loop.total_steps,
                   "batch_size": loop.cfg.batch_size, "world_size": loop.di.world, "device": str(loop.di.device),
                   "amp": str(amp).replace("torch.", "") if amp else None,
                   "train_samples": loop.cfg.n_train, "val_samples": len(loop.valset), "data_hash": self.data_hash,
                   "resumed_from_step": loop.state.step if loop.resume_state is not None else None,
                   "weights_source": "review.weights", "training_set": self.training_set})
        self.bar = progress_bar(loop.di.main and self.progress, loop.total_steps, loop.state.step)
        self.first_step = loop.state.step + 1

    def on_step_end(self, loop: TrainingLoop) -> None:
        self.bar(loop.state.step)
        if loop.state.step == self.first_step and loop.time_budget > 0:
            took = loop.scheduler.seconds_this_process()
            if took >= SLOW_FIRST_STEP_SHARE * loop.time_budget:
                compiled = " and torch.compile" if loop.compile_mode else ""
                self.emit({"event": "warning", "message": (
                    f"the first training step (set-up, warm-up{compiled}) took {took:.0f} s of the "
                    f"{loop.time_budget:.0f} s time budget: the learning-rate schedule anneals in the "
                    f"{max(0.0, loop.time_budget - loop.scheduler.elapsed_before - took):.0f} s left. Raise "
                    "distillation.training.time_budget_s"
                    + (", or start fewer compiled runs at once" if compiled else "") + ".")})

    def on_log(self, loop: TrainingLoop, entry: dict[str, Any]) -> None:
        self.emit({"event": "step", **entry})

    def on_epoch_end(self, loop: TrainingLoop, end: EpochEnd, entry: dict[str, Any]) -> None:
        self.emit({"event": "epoch", **entry, "best_val_iou": loop.state.best_val_iou})

    def on_train_end(self, loop: TrainingLoop) -> None:
        self.bar(None)
        s = loop.state
        self.summary = {"event": "end", "status": s.status, "run_id": self.run_id, "run_dir": str(self.run_dir),
                        "step": s.step, "best_val_iou": s.best_val_iou, "best_checkpoint": s.best_checkpoint}
        self.emit(self.summary)


def progress_bar(enabled: bool, total: int, start: int) -> Callable[[int | None], None]:
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
