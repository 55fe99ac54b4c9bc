"""Checkpoints for export load as data only (torch.load weights_only=True): a pickled module is refused with one
readable line instead of running its code, and a truncated file says so."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from inference.export.student_api import StudentLoadError, load_checkpoint  # noqa: E402


def test_pickled_module_is_refused_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "whole_module.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # a full pickle: loading it would import and run arbitrary classes
    with pytest.raises(StudentLoadError, match="pickled Python objects"):
        load_checkpoint(path)


def test_truncated_and_foreign_files_get_one_line(tmp_path: Path) -> None:
    good = tmp_path / "sd.pt"
    torch.save({"model": {"w": torch.zeros(3)}, "meta": {}}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:40])
    with pytest.raises(StudentLoadError, match="not a loadable checkpoint") as info:
        load_checkpoint(cut)
    assert "\n" not in str(info.value)
    plain = tmp_path / "list.pt"
    torch.save([1, 2, 3], plain)
    with pytest.raises(StudentLoadError, match="not a student checkpoint"):
        load_checkpoint(plain)
