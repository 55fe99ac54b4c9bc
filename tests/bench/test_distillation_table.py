"""The distillation-table reproduction runs end to end at toy size on CPU, through the project's own commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_toy_distillation_table_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "bench/distillation_table.py", "--toy", "--work", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    table = json.loads((tmp_path / "table.json").read_text())
    assert {"teacher", "naive", "feature_aligned"} <= set(table)
    for label in ("naive", "feature_aligned"):
        row = table[label]
        assert row["n"] > 0 and 0.0 <= row["test_iou"] <= 1.0
        assert row["iou_vs_teacher"] is not None
        assert row["exports"]["fp32"]["status"] == "ok" and row["exports"]["fp32"]["params"] > 1_000_000
        assert row["exports"]["int8"]["size_mb"] < row["exports"]["fp32"]["size_mb"] / 2
        backends = {r["backend"] for r in row["latency"]}
        assert any(b.startswith("torch") for b in backends) and any("onnxruntime" in b for b in backends)
        assert any(r["event"] == "epoch" for r in row["epochs"])
    assert table["_meta"]["teacher_init"].startswith("random")
    assert "| feature_aligned |" in (tmp_path / "table.md").read_text()
