"""bench/recipe_runs.py reads its rows as written and refuses a work folder whose runs it would misread."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import recipe_runs  # noqa: E402


def test_rows_take_batch_lr_and_an_optional_mask_stride_window_refine_context_one_click_share_and_shift() -> None:
    assert recipe_runs.parse_rows("s4=64:4e-3:4,b32=32:1e-3,w=64:4e-3:2:256,r=64:4e-3:2:0:2,c=64:4e-3:2:0:0:4,"
                                  "o=64:4e-3:2:0:0:0:0.5,m=64:4e-3:2:0:0:4:0:1") == {
        "s4": (64, 4e-3, 4, None, 0, None, 0.0, 0), "b32": (32, 1e-3, 2, None, 0, None, 0.0, 0),
        "w": (64, 4e-3, 2, 256, 0, None, 0.0, 0), "r": (64, 4e-3, 2, None, 2, None, 0.0, 0),
        "c": (64, 4e-3, 2, None, 0, 4, 0.0, 0), "o": (64, 4e-3, 2, None, 0, 0, 0.5, 0),
        "m": (64, 4e-3, 2, None, 0, 4, 0.0, 1)}
    for bad in ("s4=64", "s4=64:4e-3:4:256:1:1:0.5:1:1", "s4=64:4e-3::256", "=64:4e-3"):
        with pytest.raises(SystemExit, match="NAME=BATCH:LR"):
            recipe_runs.parse_rows(bad)


def test_teacher_rows_name_a_sam2_config_of_the_table_and_their_own_recipe() -> None:
    TeacherRow = recipe_runs.TeacherRow
    assert recipe_runs.parse_teachers("r50=sam2.1_resnet50d,h=sam2.1_hiera_tiny:3e-4,b=sam2.1_resnet50d:5e-4:32") == {
        "r50": TeacherRow("sam2.1_resnet50d"), "h": TeacherRow("sam2.1_hiera_t", 3e-4),
        "b": TeacherRow("sam2.1_resnet50d", 5e-4, 32)}
    assert recipe_runs.parse_teachers("") == {}
    for bad in ("r50", "r=sam2.1_resnet50d:", "r=sam2.1_resnet50d:1e-3:32:4"):
        with pytest.raises(SystemExit, match="write NAME=CONFIG"):
            recipe_runs.parse_teachers(bad)
    with pytest.raises(SystemExit, match="LR must be a number and BATCH an integer"):
        recipe_runs.parse_teachers("r=sam2.1_resnet50d:1e-3:3.5")
    with pytest.raises(SystemExit, match="teacher row 'x=resnet50': unknown SAM 2 config"):
        recipe_runs.parse_teachers("x=resnet50")


def test_a_work_folder_with_runs_of_the_same_names_is_refused_before_anything_runs(tmp_path: Path) -> None:
    # `train --name s2` in a project that has runs/s2 writes runs/s2-2; the script would then report the old run
    (tmp_path / "project" / "runs" / "s2").mkdir(parents=True)
    proc = subprocess.run([sys.executable, "bench/recipe_runs.py", "--data", str(tmp_path / "none"), "--work",
                           str(tmp_path), "--device", "cpu", "--rows", "s2=8:4e-3"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "already has runs named s2: pass a new --work" in proc.stderr
    assert not (tmp_path / "commands.log").exists() and not (tmp_path / "project" / "project.yaml").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--rows", "", "--unet-budget", "0"], "nothing to train"),
    (["--rows", "", "--unet-budget", "10", "--qat-epochs", "2"], "QAT starts from the first --rows student"),
    (["--rows", "s2=4:1e-3", "--unet-budget", "0", "--qat-epochs", "0", "--flips", "s2,unet"],
     "--flips names rows this run has not: unet (rows: teacher, s2, classical)"),
])
def test_a_run_without_student_rows_is_checked_before_anything_runs(tmp_path: Path, args: list[str],
                                                                    message: str) -> None:
    # a U-Net-only run (--rows "") once trained for its whole budget and then died looking for the QAT row
    proc = subprocess.run([sys.executable, "bench/recipe_runs.py", "--data", str(tmp_path / "none"), "--work",
                           str(tmp_path / "w"), "--device", "cpu", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_a_unet_only_run_trains_and_reaches_the_evaluation(tmp_path: Path) -> None:
    from store.synthetic import write_dataset

    write_dataset(tmp_path / "data", 40, 3)  # 40 crops: 5 in the test split
    proc = subprocess.run([sys.executable, "bench/recipe_runs.py", "--data", str(tmp_path / "data"), "--work",
                           str(tmp_path / "w"), "--device", "cpu", "--rows", "", "--size", "64", "--unet-budget", "3",
                           "--qat-epochs", "0", "--max-clicks", "5", "--flips", "unet"],
                          cwd=REPO, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = json.loads((tmp_path / "w" / "reports.json").read_text())
    inter = json.loads((tmp_path / "w" / "interactive.json").read_text())
    assert list(reports) == ["unet"] and reports["unet"]["epochs"]
    assert inter["unet"]["overall"]["n"] == 5 and inter["unet"]["overall"]["mIoU@1"] is not None
    rows = [line.split()[0] for line in proc.stdout.splitlines() if " test n=" in line]
    assert rows == ["teacher", "unet", "classical", "unet+flips"]
    assert inter["unet+flips"]["overall"]["n"] == 5


def test_the_summary_line_shows_missing_figures_as_a_dash() -> None:
    # a split too small to hold test crops gives None figures; the table printed them with :.3f and crashed
    empty = {"overall": {"n": 0, "mIoU@1": None, "mIoU@3": None, "mIoU@5": None, "NoC@85": None}, "per_class": {}}
    assert recipe_runs.summary_line("unet", None, empty).split() == [
        "unet", "val", "-", "test", "n=0", "mIoU@1/3/5", "-", "/", "-", "/", "-", "NoC@85", "-"]
    full = {"overall": {"n": 2, "mIoU@1": 0.5, "mIoU@3": 0.625, "mIoU@5": 0.75, "NoC@85": 4.0},
            "per_class": {"crack": {"mIoU@1": 0.25}}}
    assert "val  0.700  test n=2 mIoU@1/3/5 0.500 / 0.625 / 0.750  NoC@85 4.0  crack 0.250" in \
        recipe_runs.summary_line("c4", 0.7, full)
