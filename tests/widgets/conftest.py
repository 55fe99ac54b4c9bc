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


@pytest.fixture
def tile_project(tmp_path: Path, magnetic_tile_pairs: list[tuple[Path, Path, str]]) -> tuple[Path, dict[str, list[int]]]:
    root = tmp_path / "project"
    ids = build_tile_project(root, magnetic_tile_pairs)
    return root, ids


@pytest.fixture(scope="session")
def student_segmenter() -> Any:
    """helper A's student (TinyViT-5M + point decoder) with random weights at a small input size."""
    import torch

    from inference.student import StudentConfig, StudentModel
    from inference.torch_backend import StudentTorchSegmenter

    torch.manual_seed(0)
    return StudentTorchSegmenter(StudentModel(StudentConfig(input_size=256)), name="student-random",
                                 sha256="0" * 64)


@pytest.fixture
def window(qtbot: Any, tile_project: tuple[Path, dict[str, list[int]]], student_segmenter: Any) -> Iterator[Any]:
    from app.settings import Settings
    from app.window_main import MainWindow

    root, _ids = tile_project
    win = MainWindow(Settings(), dialogs=False, provider_factory=lambda _p: (lambda _kind: student_segmenter))
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
