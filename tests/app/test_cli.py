"""The command line: help for every command, one-line errors, exit codes, labels export."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from app.cli import app as typer_app
from app.cli import main
from store.project import Project
from store.schema import Sample, Verdict, VerdictAuthorKind, VerdictKind

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "main.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_help_lists_every_command() -> None:
    proc = _run("--help")
    assert proc.returncode == 0
    names = [c.name for c in typer_app.registered_commands] + [g.name for g in typer_app.registered_groups]
    assert {"init", "ingest", "export-labels", "demo"} <= set(names)
    for name in names:
        assert name in proc.stdout
    for name in names:
        sub = _run(name, "--help")
        assert sub.returncode == 0 and "Usage" in sub.stdout, name


def test_user_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    proc = _run("ingest", str(tmp_path / "missing"), "--project", str(tmp_path / "p"))
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr + proc.stdout
    proc = _run("export-labels", "--project", str(tmp_path / "not-a-project"))
    assert proc.returncode == 1 and "not a maskbench project" in proc.stderr


def test_ingest_cli_prints_per_class_counts(tmp_path: Path, magnetic_tile_pairs: list, capsys) -> None:
    import shutil

    data = tmp_path / "data"
    for img, mask, cls in magnetic_tile_pairs[::25]:
        (data / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(img, data / cls)
        shutil.copy(mask, data / cls)
    assert main(["ingest", str(data), "--project", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert f"added {len(magnetic_tile_pairs[::25])}, without a mask (unlabelled) 0," in out and "crack" in out
    assert main(["ingest", str(data), "--project", str(tmp_path / "p")]) == 0
    assert "added 0," in capsys.readouterr().out
    # a folder of images without masks: stored as unlabelled crops, and the summary says how many
    bare = tmp_path / "bare" / "MT_Crack"
    bare.mkdir(parents=True)
    for img, _mask, _cls in [p for p in magnetic_tile_pairs if p[2] == "MT_Crack"][1:4]:
        shutil.copy(img, bare)
    assert main(["ingest", str(bare.parent), "--project", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "added 3, without a mask (unlabelled) 3, already present 0, bad 0" in out


def test_export_labels_coco_and_csv(tmp_path: Path, magnetic_tile_pairs: list) -> None:
    import shutil

    data = tmp_path / "data"
    picks = [p for p in magnetic_tile_pairs if p[2] in ("MT_Crack", "MT_Free")][::10]
    for img, mask, cls in picks:
        (data / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(img, data / cls)
        shutil.copy(mask, data / cls)
    assert main(["ingest", str(data), "--project", str(tmp_path / "p")]) == 0
    with Project.open(tmp_path / "p") as p, p.db.session() as s:
        sid = s.scalars(select(Sample.id).order_by(Sample.id)).first()
        first = Verdict(sample_id=sid, author_kind=VerdictAuthorKind.HUMAN, author="qa1",
                        verdict=VerdictKind.BOTH_BAD)
        s.add(first)
        s.flush()
        s.add(Verdict(sample_id=sid, author_kind=VerdictAuthorKind.HUMAN, author="qa1", verdict=VerdictKind.UNDO,
                      supersedes_id=first.id))
    assert main(["export-labels", "--project", str(tmp_path / "p"), "--format", "coco",
                 "--out", str(tmp_path / "l.json")]) == 0
    doc = json.loads((tmp_path / "l.json").read_text())
    n_defect = sum(1 for p in picks if p[2] == "MT_Crack")
    assert len(doc["images"]) == len(picks) and len(doc["annotations"]) == n_defect  # free crops: no annotation
    assert {c["name"] for c in doc["categories"]} == {"crack", "free"}
    assert all(isinstance(a["segmentation"]["counts"], str) for a in doc["annotations"])
    assert main(["export-labels", "--project", str(tmp_path / "p"), "--format", "csv",
                 "--out", str(tmp_path / "v.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "v.csv")))
    assert [r["verdict"] for r in rows] == ["both_bad", "undo"] and rows[1]["supersedes_id"] == rows[0]["verdict_id"]


@pytest.mark.parametrize("fmt", ["xml"])
def test_export_labels_rejects_unknown_format(tmp_path: Path, fmt: str, capsys) -> None:
    Project.create(tmp_path / "p").close()
    assert main(["export-labels", "--project", str(tmp_path / "p"), "--format", fmt]) == 1
    assert "one of coco, yolo, labelme, csv" in capsys.readouterr().err


def test_predict_refuses_a_flip_view_count_it_has_not_in_one_line(tmp_path: Path, capsys) -> None:
    assert main(["init", str(tmp_path / "p")]) == 0
    capsys.readouterr()
    assert main(["predict", "--project", str(tmp_path / "p"), "--model", "student", "--flip-views", "3"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: flip views must be 1 (off), 2 or 4, not 3"
