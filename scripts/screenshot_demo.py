"""docs/screenshots/demo.png: the workbench as `maskbench` opens it on a fresh machine, the demo project with the
shipped demo models' real predictions (not the made-up masks of scripts/screenshots.py). Offscreen.

    .venv/bin/python scripts/screenshot_demo.py [--out docs/screenshots/demo.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots" / "demo.png")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="maskbench-demo-shot-"))
    os.environ["MASKBENCH_DATA_DIR"] = str(tmp / "data")
    os.environ["MASKBENCH_CONFIG_DIR"] = str(tmp / "config")
    from PySide6.QtWidgets import QApplication

    app = QApplication([])
    from app.settings import Settings
    from app.window_main import MainWindow

    win = MainWindow(Settings(), dialogs=False)
    win.resize(1500, 900)
    win.show()
    win.startup(None)  # fresh machine: builds and opens the demo project
    deadline = time.time() + 300
    while time.time() < deadline and (win.project is None or win.review.current is None):
        app.processEvents()
        time.sleep(0.02)
    if win.project is None:
        print("the demo project did not open", file=sys.stderr)
        return 1
    end = time.time() + 3
    while time.time() < end:  # thumbnails and overlays
        app.processEvents()
        time.sleep(0.02)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    win.grab().save(str(args.out))
    print(f"wrote {args.out} ({win.counts_label.text()})")
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
