"""The project's past training runs as the Training panel and scripts list them. Torch-free (unlike the rest of
inference.training), so a station build without torch can still show the table."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from store.schema import TrainingRun


def list_runs(project: Any) -> list[dict[str, Any]]:
    """The project's training runs, newest first, as plain dicts."""
    if project is None:
        return []
    with project.db.session() as s:
        rows = s.scalars(select(TrainingRun).order_by(TrainingRun.id.desc())).all()
        return [{"id": r.id, "name": r.name, "mode": r.mode, "status": r.status, "epochs": r.epochs_done,
                 "best_val_iou": r.best_val_iou, "best_checkpoint": r.best_checkpoint, "out_dir": r.out_dir,
                 "started": r.started_at.strftime("%Y-%m-%d %H:%M") if r.started_at else ""} for r in rows]
