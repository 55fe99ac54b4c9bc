"""bench/bench_train_step.py runs the student's real training step and reports both figures; bad variants and a
missing GPU are one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "bench/bench_train_step.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_an_eager_cpu_run_reports_encoder_and_step_throughput(tmp_path: Path) -> None:
    out = tmp_path / "steps.json"
    proc = _run("--device", "cpu", "--batch", "2", "--size", "128", "--steps", "1", "--warmup", "1",
                "--variants", "eager", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["variant"] == "eager"
    # the full step decodes twice and backpropagates through the decoder too: never faster than the encoder alone
    assert 0 < row["step_images_per_s"] < row["encoder_images_per_s"] * 1.5


def test_unknown_variants_and_a_missing_gpu_are_one_line_errors() -> None:
    proc = _run("--variants", "fast", "--device", "cpu")
    assert proc.returncode != 0 and "unknown variants ['fast']" in proc.stderr and "Traceback" not in proc.stderr
    if not torch.cuda.is_available():
        proc = _run("--device", "cuda")
        assert proc.returncode != 0 and "no CUDA device here" in proc.stderr and "Traceback" not in proc.stderr


def test_the_teacher_step_runs_in_both_memory_layouts(tmp_path: Path) -> None:
    out = tmp_path / "teacher.json"
    proc = _run("--device", "cpu", "--model", "teacher", "--batch", "2", "--size", "128", "--steps", "1",
                "--warmup", "1", "--variants", "eager", "--channels-last", "off,on", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["channels_last"]) for r in rows] == [("teacher", False), ("teacher", True)]
    assert all(0 < r["step_images_per_s"] < r["encoder_images_per_s"] * 1.5 for r in rows)


def test_a_bad_memory_layout_is_a_one_line_error() -> None:
    proc = _run("--channels-last", "nhwc", "--device", "cpu")
    assert proc.returncode != 0 and "--channels-last takes auto, on or off" in proc.stderr
    assert "Traceback" not in proc.stderr
