"""Fixtures of the model-layer tests: random-weight checkpoints written like the real ones, real crops, projects.

Model files are built once per session (SAM 2.1 tiny and the student are a few seconds each on CPU). The teacher
runs at image_size 512 (a Hydra override of the package config) to keep CPU time small; the checkpoint itself does
not depend on the input size, as with the official files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from infer_helpers import pick_crops

TEACHER_SIZE = 512


@pytest.fixture(scope="session")
def teacher_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SAM 2.1 hiera-tiny, random weights, saved as {"model": state_dict} like Meta's checkpoints."""
    import torch

    from inference.sam2_net import build_model

    torch.manual_seed(0)
    model = build_model("sam2.1/sam2.1_hiera_t.yaml", image_size=TEACHER_SIZE)
    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny_random.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def student_model():
    import torch

    from inference.student import StudentConfig, StudentModel

    torch.manual_seed(0)
    return StudentModel(StudentConfig(input_size=512)).eval()


@pytest.fixture(scope="session")
def student_ckpt(tmp_path_factory: pytest.TempPathFactory, student_model) -> Path:
    from inference.student import save_checkpoint

    return save_checkpoint(student_model, tmp_path_factory.mktemp("ckpt") / "student_random.pt")


@pytest.fixture(scope="session")
def student_onnx(tmp_path_factory: pytest.TempPathFactory, student_model) -> dict[str, Path]:
    from inference.onnx_export import export_student

    return export_student(student_model, tmp_path_factory.mktemp("onnx"))


@pytest.fixture()
def small_dataset(tmp_path: Path, magnetic_tile_pairs: list) -> Path:
    """One real crop (+ mask) of each of the six classes (five defects and MT_Free), side-by-side layout."""
    root = tmp_path / "mt_small"
    for img, mask, cls in pick_crops(magnetic_tile_pairs, per_class=1):
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(img, d)
        shutil.copy(mask, d)
    return root


@pytest.fixture()
def project(tmp_path: Path, small_dataset: Path):
    from store.ingest import ingest
    from store.project import Project

    p = Project.create(tmp_path / "proj")
    report = ingest(p.db, small_dataset, workers=2)
    assert report.added_total == 6
    yield p
    p.close()

