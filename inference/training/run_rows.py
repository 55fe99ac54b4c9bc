"""A training run's TrainingRun row in the project DB (store.schema), kept by rank 0: created (or, on resume, set
back to "running") before the first step, updated whenever last.pt is written and at the end (epochs done, best
IoU and checkpoint, the metrics history), and given its final status and finished_at in the runner's `finally`.

A process killed outright (SIGKILL, power loss) never reaches that `finally`, so its row would say "running"
forever. Rank 0 therefore writes train.pid ({pid, host}) into the run folder while it runs and removes it after the
final status; `fail_stale_runs` (called by every new `train` on the project) marks "failed" the "running" rows whose
train.pid names a process of this host that no longer exists. Rows it cannot judge (no train.pid: runs of older
versions, a deleted folder; another host; a live pid; a non-POSIX system) are left alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
from pathlib import Path
from typing import Any

from inference.training.loop import Callback, EpochEnd, TrainingLoop

PID_FILE = "train.pid"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class RunRow(Callback):
    """The row of one run (rank 0 only)."""

    def __init__(self, project: Any, run_id: int) -> None:
        self.project = project
        self.run_id = run_id

    @classmethod
    def start(cls, project: Any, run_dir: Path, resumed: bool, **fields: Any) -> RunRow:
        """A new row (status running), or the resumed run's row set back to running."""
        from sqlalchemy import select

        from store.schema import TrainingRun

        with project.db.session() as s:
            row = None
            if resumed:
                prev = s.scalar(select(TrainingRun.id).where(TrainingRun.out_dir == str(run_dir))
                                .order_by(TrainingRun.id.desc()))
                row = s.get(TrainingRun, prev) if prev else None
            if row is None:
                row = TrainingRun(**fields)
                s.add(row)
            else:
                row.status = "running"
                row.finished_at = None
                row.config = fields.get("config", row.config)
            s.flush()
            return cls(project, int(row.id))

    def update(self, **fields: Any) -> None:
        from store.schema import TrainingRun

        with self.project.db.session() as s:
            row = s.get(TrainingRun, self.run_id)
            if row is None:
                return
            for k, v in fields.items():
                setattr(row, k, v)

    def _progress(self, loop: TrainingLoop) -> None:
        s = loop.state
        self.update(epochs_done=s.step // loop.steps_per_epoch, best_val_iou=s.best_val_iou,
                    best_checkpoint=s.best_checkpoint, metrics=s.metrics)

    def on_checkpoint(self, loop: TrainingLoop, end: EpochEnd) -> None:
        if end.saves_last:  # the row mirrors last.pt
            self._progress(loop)

    def on_train_end(self, loop: TrainingLoop) -> None:
        self._progress(loop)

    def finish(self, status: str) -> None:
        self.update(status=status, finished_at=_now())


# ------------------------------------------------------------------------------------- rows left "running"


def write_pid(run_dir: Path) -> None:
    (run_dir / PID_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))


def remove_pid(run_dir: Path) -> None:
    with contextlib.suppress(OSError):
        (run_dir / PID_FILE).unlink()


def _process_gone(run_dir: Path) -> bool:
    """True only when train.pid names a process of this host that no longer exists."""
    if os.name != "posix":  # os.kill(pid, 0) is no liveness probe on Windows
        return False
    try:
        info = json.loads((run_dir / PID_FILE).read_text())
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if info.get("host") != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: alive, another user's
        return False
    return False


def fail_stale_runs(project: Any) -> list[tuple[int, str]]:
    """Marks "failed" the project's "running" rows whose process is gone; returns their (id, name)."""
    from sqlalchemy import select, update

    from store.schema import TrainingRun

    with project.db.session() as s:
        running = s.execute(select(TrainingRun.id, TrainingRun.name, TrainingRun.out_dir)
                            .where(TrainingRun.status == "running")).all()
    stale = [(int(i), str(name), Path(out)) for i, name, out in running if out and _process_gone(Path(out))]
    for run_id, _, out in stale:
        metrics = out / "metrics.jsonl"  # its last event: about when it died
        ended = dt.datetime.fromtimestamp(metrics.stat().st_mtime, dt.timezone.utc) if metrics.is_file() else _now()
        with project.db.session() as s:  # only if still "running": a run that just finished keeps its status
            s.execute(update(TrainingRun).where(TrainingRun.id == run_id, TrainingRun.status == "running")
                      .values(status="failed", finished_at=ended))
        remove_pid(out)
    return [(i, name) for i, name, _ in stale]
