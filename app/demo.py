"""The demo project every new user sees first: synthetic crops, ingested, with demo-model predictions when the
demo models are shipped under assets/demo_models (see that folder's model card)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from app.paths import data_dir
from store.ingest import ingest
from store.project import Project
from store.synthetic import write_dataset


def default_demo_dir() -> Path:
    return data_dir() / "demo-project"


def build_demo_project(
    root: Path, count: int = 60, seed: int = 7, progress: Callable[[int, int], None] | None = None
) -> str:
    root = Path(root)
    with Project.create(root, name="maskbench demo (synthetic crops)") as project:
        data = root / "data"
        if not data.exists():
            write_dataset(data, count, seed)
        report = ingest(project.db, data, progress=progress)
        extra = _demo_predictions(project, progress)
    return f"demo project at {root}: {report.added_total} crops added ({report.skipped_existing} already there){extra}"


def _demo_predictions(project: Project, progress: Callable[[int, int], None] | None) -> str:
    """The shipped demo models' predictions and flags; returns a summary suffix ("" when none are shipped)."""
    from app.demo_models import install_demo_models

    return install_demo_models(project, progress)
