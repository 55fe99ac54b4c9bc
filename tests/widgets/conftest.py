"""GUI fixtures: a project of real magnetic-tile crops, a real student segmenter with random weights, and the real
main window (offscreen) opened on the project."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gui_helpers import build_tile_project  # noqa: E402


@pytest.fixture(scope="session")
def student_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real student checkpoint (TinyViT-5M + point decoder) with random weights at a small input size."""
    import torch

    from inference.student import StudentConfig, StudentModel, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(StudentModel(StudentConfig(input_size=256)),
                           tmp_path_factory.mktemp("student") / "student-random.pt")


@pytest.fixture
def tile_project(tmp_path: Path, magnetic_tile_pairs: list[tuple[Path, Path, str]],
                 student_checkpoint: Path) -> tuple[Path, dict[str, list[int]]]:
    """15 real crops; the random student registered through inference.registry as the project's active student."""
    from inference.registry import add_model
    from store.project import Project

    root = tmp_path / "project"
    ids = build_tile_project(root, magnetic_tile_pairs)
    with Project.open(root) as p:
        add_model(p, "student", student_checkpoint, name="student-random")
    return root, ids


@pytest.fixture
def window(qtbot: Any, tile_project: tuple[Path, dict[str, list[int]]]) -> Iterator[Any]:
    """The real main window, loading the student through the registry (with the project's embedding cache)."""
    from app.settings import Settings
    from app.window_main import MainWindow

    root, _ids = tile_project
    win = MainWindow(Settings(), dialogs=False)
    qtbot.addWidget(win)
    win.resize(1400, 860)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()
    assert win.open_project(root)
    rv = win.review
    qtbot.waitUntil(lambda: rv.queue.model.rowCount() == 15 and rv.current is not None, timeout=20_000)
    yield win
    win.close()


@pytest.fixture(scope="session")
def teacher_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real SAM 2.1 tiny (the teacher architecture) with random weights, at input 256 (CPU-sized)."""
    import torch

    from inference.sam2_net import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "sam2.1_hiera_t-random.pt"
    torch.save({"model": build_model("sam2.1_hiera_t", image_size=256).state_dict()}, path)
    return path
