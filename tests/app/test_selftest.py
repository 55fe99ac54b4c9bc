"""`maskbench --selftest`: passes on this install (with the shipped demo models), fails with the reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ, QT_QPA_PLATFORM="offscreen", MASKBENCH_LOG_DIR=str(tmp_path / "logs"), **env)
    return subprocess.run([sys.executable, "main.py", "--selftest"], cwd=REPO, env=e, capture_output=True,
                          text=True, timeout=600)


def test_selftest_passes(tmp_path: Path) -> None:
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("selftest")]
    assert len(line) == 1 and line[0].startswith("selftest ok:") and "window_s=" in line[0]
    assert not (tmp_path / "data").exists()  # nothing left in the user's folders


def test_selftest_reports_missing_demo_models(tmp_path: Path) -> None:
    proc = _run(tmp_path, MASKBENCH_DEMO_MODELS=str(tmp_path / "nowhere"))
    assert proc.returncode == 1
    assert "selftest FAILED: demo project: no demo models shipped" in proc.stdout
