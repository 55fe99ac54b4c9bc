"""A small real project for the training tests: 16 magnetic-tile crops (8 Break, 8 Uneven: masks large enough
for Dice to move in a few steps), a random-weights SAM 2.1 tiny teacher on 256 px canvases and a 128 px student.
The crops are taken at a quarter of their pixels for the student (half for the teacher: both canvases cover the
same 512 px region), so a crop is one tile and CPU steps stay short."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

CLASSES = ("MT_Break", "MT_Uneven")

TEST_OVERRIDES: dict[str, Any] = {
    "distillation": {
        "teacher": {"model": "sam2.1_hiera_t", "image_size": 256, "scale": 0.5},
        "student": {"input_size": 128, "scale": 0.25},
        # val_share 0: every epoch validates, whatever a CPU's timings (test_training_runs tests the cap)
        "training": {"batch_size": 4, "log_every": 1, "epochs": 4, "lr": 3e-3, "augment": None,
                     "checkpoint_every": 1, "val_share": 0},
        "finetune_teacher": {"batch_size": 2},
    }
}


def make_training_project(root: Path, pairs: list[tuple[Path, Path, str]], per_class: int = 8,
                          overrides: dict[str, Any] | None = None) -> Path:
    from store.ingest import ingest
    from store.project import Project

    data = root / "crops"
    for cls in CLASSES:
        chosen = [p for p in pairs if p[2] == cls][:per_class]
        (data / cls).mkdir(parents=True, exist_ok=True)
        for img, mask, _ in chosen:
            shutil.copy(img, data / cls / img.name)
            shutil.copy(mask, data / cls / mask.name)
    with Project.create(root / "project", overrides=overrides or TEST_OVERRIDES) as p:
        report = ingest(p.db, data)
        assert report.added_total == per_class * len(CLASSES)
    return root / "project"


@pytest.fixture(scope="session")
def training_project(tmp_path_factory: pytest.TempPathFactory, magnetic_tile_pairs: list[tuple[Path, Path, str]]) -> Path:
    """Shared by the training tests (runs add rows and folders; each test looks only at its own run)."""
    return make_training_project(tmp_path_factory.mktemp("train"), magnetic_tile_pairs)


@pytest.fixture
def fresh_training_project(tmp_path: Path, magnetic_tile_pairs: list[tuple[Path, Path, str]]):
    """A project of the test's own (for tests that record verdicts or change settings)."""

    def make(per_class: int = 8) -> Path:
        return make_training_project(tmp_path, magnetic_tile_pairs, per_class=per_class)

    return make
