"""CI: build the inspection-station bundle (scripts/build_station.sh, which creates .venv-station itself), run its
--selftest offscreen, time start-up to the first window, record the bundle size, and check that no torch or CUDA
library is inside. The figures go to build/station_bundle_report.json (CI shows no stdout)."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "dist" / "maskbench-station"
REPORT = REPO / "build" / "station_bundle_report.json"
MAX_BYTES = 600 * 1000 * 1000
FORBIDDEN = re.compile(r"(^|/)(torch[^/]*|nvidia|libcudart[^/]*|libcublas[^/]*|libcudnn[^/]*|libtorch[^/]*"
                       r"|libc10[^/]*|triton)(/|$)", re.IGNORECASE)


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_station_bundle_builds_selftests_and_has_no_torch(tmp_path: Path) -> None:
    if os.environ.get("MASKBENCH_SKIP_BUNDLE_BUILD") != "1" or not BUNDLE.is_dir():
        t0 = time.time()
        proc = subprocess.run(["bash", "scripts/build_station.sh"], cwd=REPO, capture_output=True, text=True,
                              timeout=1700)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        build_s = time.time() - t0
    else:
        build_s = None
    exe = BUNDLE / "maskbench-station"
    assert exe.is_file()

    # what is inside: no torch, no CUDA libraries
    inside = [p.relative_to(BUNDLE).as_posix() for p in BUNDLE.rglob("*")]
    bad = sorted({m.group(0).strip("/") for x in inside if (m := FORBIDDEN.search(x))})
    assert not bad, f"torch/CUDA in the bundle: {bad[:20]}"
    assert any(x.endswith("assets/demo_models/manifest.json") for x in inside)
    assert any("assets/prompts/" in x for x in inside) and any("assets/icons/" in x for x in inside)
    assert any("onnxruntime" in x for x in inside)

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", MASKBENCH_DATA_DIR=str(tmp_path / "data"),
               MASKBENCH_CONFIG_DIR=str(tmp_path / "config"), MASKBENCH_LOG_DIR=str(tmp_path / "logs"))
    env.pop("PYTHONPATH", None)
    t0 = time.time()
    st = subprocess.run([str(exe), "--selftest"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    selftest_s = time.time() - t0
    summary = [x for x in st.stdout.splitlines() if x.startswith("selftest")]
    assert st.returncode == 0, st.stdout[-3000:] + st.stderr[-3000:]
    assert summary and summary[-1].startswith("selftest ok") and "torch absent" in summary[-1]

    # start-up to the first window: a fresh process that quits once the window is shown
    t0 = time.time()
    fw = subprocess.run([str(exe)], cwd=tmp_path, env=dict(env, MASKBENCH_EXIT_AFTER_FIRST_WINDOW="1"),
                        capture_output=True, text=True, timeout=300)
    first_window_s = time.time() - t0
    assert fw.returncode == 0 and "first window shown" in fw.stdout, fw.stdout[-2000:] + fw.stderr[-2000:]

    size = _size(BUNDLE)
    tars = sorted((REPO / "dist").glob("maskbench-station-linux-*.tar.gz"))
    report = {
        "bundle_bytes": size, "bundle_mb": round(size / 1e6, 1),
        "tar_gz_mb": round(tars[-1].stat().st_size / 1e6, 1) if tars else None,
        "first_window_s": round(first_window_s, 2),
        "first_window_in_process": fw.stdout.strip().splitlines()[-1],
        "selftest_s": round(selftest_s, 1), "selftest": summary[-1], "build_s": build_s,
        "files": len(inside), "machine": platform.platform(),
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    assert size < MAX_BYTES, f"bundle is {size / 1e6:.0f} MB (target < 600 MB)"
