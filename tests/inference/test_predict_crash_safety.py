"""SIGKILL in the middle of `predict` and of a training run's checkpoint writes: the store holds whole predictions
only (every mask has its prediction row), a new run completes the rest, and every checkpoint file on disk loads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from sqlalchemy import func, select

from store.ingest import ingest
from store.project import Project
from store.schema import Mask, MaskSource, Prediction

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app.cli", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})


def _kill_when(proc: subprocess.Popen, ready, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None, "the process ended before it could be killed"
        assert time.monotonic() < deadline, "the process made no progress"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _student_counts(root: Path) -> tuple[int, int]:
    with Project.open(root, scheduled_backup=False) as p, p.db.session() as s:
        masks = s.scalar(select(func.count(Mask.id)).where(Mask.source == MaskSource.STUDENT))
        preds = s.scalar(select(func.count(Prediction.id)))
        return int(masks), int(preds)


def test_sigkill_mid_predict_leaves_whole_predictions(tmp_path: Path, magnetic_tile_pairs: list,
                                                      student_ckpt: Path) -> None:
    import shutil

    data = tmp_path / "data"
    picks = magnetic_tile_pairs[::12][:30]
    for img, mask, cls in picks:
        (data / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(img, data / cls)
        shutil.copy(mask, data / cls)
    root = tmp_path / "p"
    with Project.create(root) as p:
        assert ingest(p.db, data).added_total == len(picks)
    assert subprocess.run([sys.executable, "-m", "app.cli", "models", "add", "student", str(student_ckpt), "-p",
                           str(root)], cwd=REPO, capture_output=True).returncode == 0
    proc = _cli("predict", "-p", str(root), "--model", "student", "--prompts", "ground_truth", "--batch", "1")
    _kill_when(proc, lambda: _student_counts(root)[1] >= 4)
    masks, preds = _student_counts(root)
    assert masks == preds and 4 <= preds < len(picks)  # no mask without its prediction row
    done = subprocess.run([sys.executable, "-m", "app.cli", "predict", "-p", str(root), "--model", "student",
                           "--prompts", "ground_truth"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _student_counts(root) == (len(picks), len(picks))  # the rest, no duplicates


SAVER = """
import sys, torch
from pathlib import Path
from inference.training.checkpoints import atomic_save
path = Path(sys.argv[1])
big = {"w": torch.randn(4_000_000)}
i = 0
while True:
    big["step"] = i
    atomic_save(big, path)
    print(i, flush=True)
    i += 1
"""


@pytest.mark.parametrize("kill_after", [1, 3])
def test_sigkill_during_checkpoint_writes_never_leaves_a_truncated_file(tmp_path: Path, kill_after: int) -> None:
    """The trainer's checkpoint writer (temporary file, then rename), killed while it writes 16 MB files."""
    path = tmp_path / "last.pt"
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    for line in proc.stdout:
        if int(line) >= kill_after:
            break
    time.sleep(0.05 * kill_after)  # land inside a later write
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    obj = torch.load(path, map_location="cpu", weights_only=True)
    assert obj["w"].numel() == 4_000_000 and obj["step"] >= kill_after
