"""The review-loop experiment runs end to end at toy size on CPU: every arm reviews exactly K flagged crops through
the project's verdict functions, retrains with the same command, and is scored on the test split."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_toy_loop_experiment_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "bench/loop_experiment.py", "--toy", "--work", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=2400)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = json.loads((tmp_path / "loop.json").read_text())
    seed = res["seeds"]["0"]
    assert seed["split"]["pool"] > seed["split"]["labelled"] > 0
    for key in ("round0", "no_pool", *(f"{arm}@3" for arm in ("random", "disagreement", "hardness", "vlm"))):
        assert 0.0 <= seed[key]["iou_1"] <= 1.0 and 0.0 <= seed[key]["iou_5"] <= 1.0
    for arm in ("random", "disagreement", "hardness", "vlm"):
        review = seed[f"{arm}@3"]
        assert review["reviewed"] == sum(review["verdicts"].values()) > 0
    assert "corrected" not in seed["vlm@3"]["verdicts"]  # a VLM never corrects
    assert seed["vlm@3"]["vlm_agreement"] is not None
    assert "round 0 with the pool dropped" in (tmp_path / "loop.md").read_text()
