"""Domain packages never import Qt: every module of inference/, review/ and store/ imports with PySide6 blocked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import importlib, pkgutil, sys
for name in ("PySide6", "pyqtgraph", "shiboken6", "PyQt5", "PyQt6"):
    sys.modules[name] = None  # any import of these now raises ImportError
failed = []
count = 0
for pkg in ("store", "review", "inference"):
    mod = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
        if ".migrations" in info.name:
            continue
        try:
            importlib.import_module(info.name)
            count += 1
        except ImportError as exc:
            failed.append(f"{info.name}: {exc}")
qt_loaded = [m for m in sys.modules if m.split(".")[0] in ("PySide6", "pyqtgraph", "shiboken6") and sys.modules[m]]
print("IMPORTED", count)
print("FAILED", failed)
print("QT", qt_loaded)
sys.exit(1 if failed or qt_loaded else 0)
"""


def test_domain_packages_import_without_qt() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    imported = int(proc.stdout.split("IMPORTED ")[1].split()[0])
    assert imported >= 8  # the store alone has 9 modules: the walk really ran
