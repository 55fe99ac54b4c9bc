"""A run's checkpoint files, written by rank 0 through one callback of the training loop.

checkpoints/best.pt: the eval weights (EMA) of the epoch with the best validation IoU (the one-click protocol of the
test table); kept in memory when found and written every `checkpoint_every` epochs, on a stop and at the end, so
the per-epoch overhead stays small. For finetune-teacher it holds the official SAM 2 {"model": state_dict}, and
teacher.pt beside the checkpoints folder is the same file (importable as the teacher).
checkpoints/epoch_NNN.pt: the plain weights after each complete `checkpoint_every` epoch and the last one.
checkpoints/last.pt: the full state a resume restarts from (model, optimiser, schedule, scaler, EMA, step, best so
far, the metrics history, the run's settings), written at intervals, on a stop and after a partial epoch.

Every file is written through `atomic_save` (a temporary file, then a rename), so a run killed mid-write never
leaves a truncated checkpoint behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from inference.training.loop import Callback, EpochEnd, TrainingLoop


def atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


class Checkpoints(Callback):
    """best.pt, epoch_NNN.pt and last.pt of one run (rank 0 only)."""

    def __init__(self, run_dir: Path, run_name: str, mode_name: str, dist_cfg: dict[str, Any], data_hash: str) -> None:
        self.run_dir = run_dir
        self.dir = run_dir / "checkpoints"
        self.run_name, self.mode_name = run_name, mode_name
        self.dist_cfg, self.data_hash = dist_cfg, data_hash
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_extra: dict[str, Any] = {}
        self.best_written = True

    def on_checkpoint(self, loop: TrainingLoop, end: EpochEnd) -> None:
        s = loop.state
        iou = end.val.get("val_iou_gt")
        improved = iou is not None and (s.best_val_iou is None or iou > s.best_val_iou)
        if improved or (self.best_state is None and iou is None and not len(loop.valset)):
            s.best_val_iou = iou if improved else s.best_val_iou
            s.best_checkpoint = str(self.dir / "best.pt")
            self.best_state = {k: v.detach().clone() for k, v in loop.eval_model().state_dict().items()}
            self.best_extra = {"run": self.run_name, "mode": self.mode_name, "step": s.step, "epoch": end.epoch,
                               **end.val}
            self.best_written = False
        if end.on_interval or end.stop:
            self.write_best(loop)
        if end.complete and end.on_interval:
            atomic_save({"model": loop.task.plain_state(loop.model), "meta": loop.task.meta, "step": s.step,
                         "epoch": end.epoch, **end.val}, self.dir / f"epoch_{end.epoch:03d}.pt")
        if end.saves_last:
            self.save_last(loop, end.epoch - 1)

    def on_train_end(self, loop: TrainingLoop) -> None:
        self.write_best(loop)

    def save_last(self, loop: TrainingLoop, epoch: int) -> None:
        """The full state after `epoch` (0-based, as resume reads it)."""
        s = loop.state
        state = {
            "model": loop.model.state_dict(), "optimizer": loop.optimizer.state_dict(),
            "scheduler": loop.scheduler.state_dict(), "scaler": loop.scaler.state_dict(), "step": s.step,
            "epoch": epoch, "steps_per_epoch": loop.steps_per_epoch, "best_val_iou": s.best_val_iou,
            "best_checkpoint": s.best_checkpoint, "metrics": s.metrics, "config": self.dist_cfg,
            "mode": self.mode_name, "meta": loop.task.meta, "data_hash": self.data_hash,
            "ema": loop.ema.state_dict() if loop.ema is not None else None,
        }
        atomic_save(state, self.dir / "last.pt")

    def write_best(self, loop: TrainingLoop) -> None:
        """The best weights kept in memory, to best.pt (and teacher.pt), unless already written."""
        if self.best_state is None or self.best_written:
            return
        net = loop.eval_model()
        keep = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.load_state_dict(self.best_state)
        loop.task.save_best(net, Path(loop.state.best_checkpoint), self.best_extra)  # type: ignore[arg-type]
        if self.mode_name == "finetune_teacher":
            loop.task.save_best(net, self.run_dir / "teacher.pt", self.best_extra)
        net.load_state_dict(keep)
        self.best_written = True
