"""scripts/make_demo_models.py at toy scale on CPU: the project's own train/export commands, a manifest whose
checksums match, a student pair that opens in ONNX Runtime, predictions keyed by the synthetic crops, and a demo
project built from the result with flagged crops."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("torch")
pytest.importorskip("sam2")


@pytest.mark.slow
def test_make_demo_models_toy_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "demo_models"
    proc = subprocess.run(
        [sys.executable, "scripts/make_demo_models.py", "--epochs-teacher", "1", "--epochs-student", "1",
         "--teacher-size", "128", "--student-size", "128", "--count", "10", "--max-steps", "1",
         "--batch-size", "4", "--out", str(out), "--work", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pretrained"] is False and "NOT SA-1B" in manifest["note"]
    assert manifest["teacher"]["config"] == "sam2.1_hiera_demo"
    assert any("--mode finetune-teacher" in c for c in manifest["commands"])
    assert any("--mode distill" in c for c in manifest["commands"])
    assert any(c.startswith("maskbench export") for c in manifest["commands"])
    for name, meta in manifest["files"].items():
        data = (out / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == meta["sha256"] and len(data) == meta["bytes"]
    assert manifest["total_bytes"] < 25 * 1024 * 1024
    card = (out / "MODEL_CARD.md").read_text()
    assert "NOT SA-1B-pretrained" in card and "maskbench train" in card
    # the card describes the student that was trained: the default one, with its context blocks
    st = manifest["student"]
    assert (st["mask_stride"], st["context_blocks"], st["backbone"]) == (2, 4, "efficientnet_b0")
    assert "1/2 mask head (`mask_stride: 2`),\n   4 context blocks and 0 refine blocks" in card
    # the card says how good the shipped masks are, from the predictions it ships, and the epochs behind them
    q = manifest["quality"]
    assert q["crops"] == 10 and sum(v["crops"] for v in q["per_split"].values()) == 10 and 0 <= q["flagged"] <= 10
    assert "How good they are" in card and f"{q['flagged']} of 10 crops are flagged" in card
    epochs = json.loads((out / "training_epochs.json").read_text())
    assert epochs["teacher"] and epochs["student"] and "val_iou_gt" in epochs["teacher"][0]
    assert manifest["teacher"]["steps"] == 1 and manifest["student"]["status"] in ("finished", "stopped")

    import onnxruntime as ort

    enc = ort.InferenceSession(str(out / manifest["student"]["encoder"]), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(out / manifest["student"]["decoder"]), providers=["CPUExecutionProvider"])
    s = manifest["student"]["input_size"]
    feats = enc.run(None, {enc.get_inputs()[0].name: np.zeros((1, 3, s, s), np.float32)})
    feeds = dict(zip([i.name for i in dec.get_inputs()],
                     [*feats, np.array([[[s / 2, s / 2]]], np.float32), np.array([[1]], np.float32)]))
    masks, scores = dec.run(None, feeds)
    assert masks.ndim == 4 and scores.shape[0] == 1

    preds = json.loads((out / manifest["predictions"]["file"]).read_text())
    assert len(preds["crops"]) == 10
    assert all("teacher" in e and "student" in e and len(e["sha256"]) == 64 for e in preds["crops"].values())

    # the demo project built from these files: both models registered, predictions in, crops flagged
    monkeypatch.setenv("MASKBENCH_DEMO_MODELS", str(out))
    from app.demo import build_demo_project
    from inference.registry import list_models
    from store.project import Project

    summary = build_demo_project(tmp_path / "demo", count=10)
    assert "10 crops with teacher and student predictions" in summary and "NOT SA-1B" in summary
    with Project.open(tmp_path / "demo") as p:
        kinds = {m.kind: m for m in list_models(p) if m.active}
    assert kinds["student"].backend == "onnx" and kinds["teacher"].architecture == "sam2.1_hiera_demo"
