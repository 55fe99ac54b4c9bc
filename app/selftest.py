"""`maskbench --selftest`: checks an installation (a station bundle included) offscreen, in a temporary folder.

Steps: build the demo project (generator + shipped demo models), run the student ONNX on a crop, record and undo a
verdict, PRAGMA integrity_check, open the main window offscreen (timed: start-up to first window shown) and close
it, import the judge stack (LiteLLM). Prints one summary line (`selftest ok: ...` or `selftest FAILED: <step>:
<reason>`); exit 0 when every step passed, 1 otherwise. Nothing is written outside the temporary folder: user data,
settings and logs of the installation are left alone.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("maskbench.selftest")


class StepFailed(Exception):
    pass


def _demo(tmp: Path, facts: dict[str, Any]) -> None:
    from app.demo import build_demo_project
    from app.demo_models import load_manifest

    if load_manifest() is None:
        raise StepFailed("no demo models shipped (assets/demo_models/manifest.json missing)")
    summary = build_demo_project(tmp / "demo")
    facts["demo"] = summary
    if "flagged" not in summary:
        raise StepFailed(f"demo built without predictions: {summary}")


def _student(tmp: Path, facts: dict[str, Any]) -> None:
    from sqlalchemy import select

    from inference.prompts import mask_prompt
    from inference.registry import load_segmenter
    from store import rle
    from store.images import load_image
    from store.project import Project
    from store.schema import Mask, MaskSource, Sample

    with Project.open(tmp / "demo") as p:
        seg = load_segmenter(p, "student", device="cpu", cache=False)
        with p.db.session() as s:
            path, gt = s.execute(select(Sample.path, Mask.rle).join(Mask, Mask.sample_id == Sample.id)
                                 .where(Mask.source == MaskSource.GROUND_TRUTH).limit(1)).one()
        image = load_image(path)
        t0 = time.perf_counter()
        out = seg.predict([image], [mask_prompt(rle.decode(gt), n_positive=1, seed=0)])[0]
        facts["student_ms"] = (time.perf_counter() - t0) * 1000
        if out.mask.shape != image.shape[:2]:
            raise StepFailed(f"student mask {out.mask.shape} does not match the crop {image.shape[:2]}")
        facts["student_backend"] = getattr(seg, "info").backend


def _verdict(tmp: Path, facts: dict[str, Any]) -> None:
    from sqlalchemy import func, select, text

    from review.verdicts import effective_verdict, record_verdict, undo_last
    from store.project import Project
    from store.schema import Sample

    with Project.open(tmp / "demo") as p:
        with p.db.session() as s:
            sid = s.scalar(select(func.min(Sample.id)))
        record_verdict(p.db, sid, "teacher_better", "selftest")
        with p.db.session() as s:
            if effective_verdict(s, sid) is None:
                raise StepFailed("the verdict was not stored")
        if undo_last(p.db, "selftest") is None:
            raise StepFailed("undo found nothing to undo")
        with p.db.session() as s:
            if effective_verdict(s, sid) is not None:
                raise StepFailed("the verdict is still in effect after undo")
        with p.db.engine.connect() as conn:
            res = [r[0] for r in conn.execute(text("PRAGMA integrity_check"))]
        if res != ["ok"]:
            raise StepFailed(f"integrity_check: {'; '.join(map(str, res))[:200]}")


def _window(tmp: Path, facts: dict[str, Any]) -> None:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from app.settings import Settings
    from app.window_main import MainWindow

    t0 = time.perf_counter()
    win = MainWindow(Settings(tmp / "settings.ini"), dialogs=False)
    win.show()
    QTimer.singleShot(0, app.quit)
    app.exec()
    facts["window_s"] = time.perf_counter() - t0
    if not win.open_project(tmp / "demo"):
        raise StepFailed("the main window could not open the demo project")
    for _ in range(20):
        app.processEvents()
    counts = win.counts_label.text()
    facts["window_counts"] = counts
    win.close()
    win.deleteLater()
    app.processEvents()


def _judge(tmp: Path, facts: dict[str, Any]) -> None:
    import review.judge  # noqa: F401 - first: it keeps LiteLLM on its bundled cost map (no fetch at import)

    import litellm  # the VLM judge's client

    facts["litellm"] = getattr(litellm, "__version__", None) or _dist_version("litellm")


def _dist_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return "?"


STEPS: list[tuple[str, Callable[[Path, dict[str, Any]], None]]] = [
    ("demo project", _demo),
    ("student ONNX", _student),
    ("verdict + undo + integrity_check", _verdict),
    ("main window", _window),
    ("judge imports", _judge),
]


def run_selftest(stream: Any = None) -> int:
    t_start = time.perf_counter()
    stream = stream or sys.stdout
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = Path(tempfile.mkdtemp(prefix="maskbench-selftest-"))
    saved = {k: os.environ.get(k) for k in ("MASKBENCH_DATA_DIR", "MASKBENCH_CONFIG_DIR")}
    os.environ["MASKBENCH_DATA_DIR"] = str(tmp / "data")
    os.environ["MASKBENCH_CONFIG_DIR"] = str(tmp / "config")
    facts: dict[str, Any] = {"t_process": t_start}
    failed: tuple[str, str] | None = None
    try:
        for name, fn in STEPS:
            t0 = time.perf_counter()
            try:
                fn(tmp, facts)
            except StepFailed as exc:
                failed = (name, str(exc))
            except Exception as exc:  # noqa: BLE001 - the self-test reports, it does not crash
                log.error("selftest step %s failed:\n%s", name, traceback.format_exc())
                failed = (name, f"{exc.__class__.__name__}: {exc}")
            log.info("selftest %s: %.2f s", name, time.perf_counter() - t0)
            if failed:
                break
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - t_start
    if failed:
        print(f"selftest FAILED: {failed[0]}: {failed[1]}", file=stream, flush=True)
        return 1
    torch_loaded = "torch" in sys.modules
    print(f"selftest ok: demo built, student ONNX {facts['student_ms']:.0f} ms on a crop "
          f"({facts.get('student_backend')}), verdict+undo ok, integrity ok, window_s={facts['window_s']:.2f}, "
          f"litellm {facts['litellm']}, torch {'loaded' if torch_loaded else 'absent'}, total_s={total:.1f}",
          file=stream, flush=True)
    return 0
