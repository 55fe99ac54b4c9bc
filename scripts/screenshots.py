"""Render screenshots of the workbench's main views to PNG, offscreen (for the README).

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--data ../shared/datasets/magnetic-tile]

Builds a throw-away project from real magnetic-tile crops when the data set is there (else the synthetic demo
crops), with teacher/student masks made from the ground truth (dilated / eroded / shifted: the screenshots show the
workbench, not a model), disagreement records, two VLM verdicts and one human correction.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

CLASSES = ("MT_Crack", "MT_Blowhole", "MT_Break", "MT_Fray", "MT_Uneven")


def build(root: Path, data_src: Path | None) -> Path:
    from review.flagging import flag
    from review.verdicts import record_verdict
    from store import rle
    from store.ingest import ingest
    from store.project import Project
    from store.schema import Mask, MaskSource, ModelKind, ModelRecord, Prediction
    from store.synthetic import write_dataset

    data = root.parent / "data"
    if data_src is not None and data_src.is_dir():
        for cls in CLASSES:
            for img in sorted((data_src / cls).glob("*.jpg"))[:6]:
                (data / cls).mkdir(parents=True, exist_ok=True)
                shutil.copy(img, data / cls)
                shutil.copy(img.with_suffix(".png"), data / cls)
    else:
        write_dataset(data, 30, 11)
    project = Project.create(root, name="screenshots")
    ingest(project.db, data, workers=2)
    k = np.ones((3, 3), np.uint8)
    with project.db.session() as s:
        gts = {sid: rle.decode(r) for sid, r in
               s.query(Mask.sample_id, Mask.rle).filter(Mask.source == MaskSource.GROUND_TRUTH)}
        ids = {}
        for kind in (ModelKind.TEACHER, ModelKind.STUDENT):
            m = ModelRecord(name=f"{kind.value}-demo", kind=kind, architecture="demo", checkpoint_path="-",
                            sha256=hashlib.sha256(kind.value.encode()).hexdigest(), active=True)
            s.add(m)
            s.flush()
            ids[kind] = m.id
        for j, (sid, gt) in enumerate(sorted(gts.items())):
            g = gt.astype(np.uint8)
            teacher = cv2.dilate(g, k, iterations=1) if j % 3 else np.roll(g, (0, -2), axis=(0, 1))
            student = [np.roll(cv2.dilate(g, k, iterations=2), (3, 4), axis=(0, 1)), np.roll(g, (5, 3), axis=(0, 1)), cv2.erode(g, k, iterations=1),
                       g][j % 4]
            for kind, mask in ((ModelKind.TEACHER, teacher), (ModelKind.STUDENT, student)):
                src = MaskSource.TEACHER if kind == ModelKind.TEACHER else MaskSource.STUDENT
                row = Mask(sample_id=sid, source=src, model_id=ids[kind], rle=rle.encode(mask.astype(bool)),
                           area=int(mask.sum()))
                s.add(row)
                s.flush()
                s.add(Prediction(sample_id=sid, model_id=ids[kind], mask_id=row.id, points=[[1, 1]], labels=[1],
                                 prompt_source="ground_truth", score=0.9))
    flag(project.db, 0.15, workers=2)
    with project.db.session() as s:  # these records only carry the demo masks: no model file behind them
        for m in s.query(ModelRecord):
            m.active = False
    from review.verdicts import review_queue

    with project.db.session() as s:
        rows = review_queue(s, flagged_only=True)
    # the VLM verdicts go to the flagged crops with the largest defects (they read best in a screenshot)
    flagged = sorted((r.sample_id for r in rows), key=lambda sid: -int(gts[sid].sum()))
    reasons = [("teacher_better", 0.86, "Mask A follows the thin crack to both ends; mask B bleeds into the "
                                        "brushed texture on the right and covers background."),
               ("both_bad", 0.64, "Both masks miss the lower branch of the defect; B also spills over the edge.")]
    for sid, (v, c, why) in zip(flagged[1:3], reasons):
        record_verdict(project.db, sid, v, "openai/gpt-4o", author_kind="vlm", confidence=c, reason=why)
    record_verdict(project.db, flagged[3], "teacher_better", "qa-anna")
    record_verdict(project.db, flagged[4], "corrected", "qa-anna",
                   corrected_mask=cv2.dilate(gts[flagged[4]].astype(np.uint8), k).astype(bool))
    project.close()
    return root


def wait(app: object, cond, timeout: float = 30.0) -> None:  # noqa: ANN001
    from PySide6.QtCore import QEventLoop, QTimer

    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        loop = QEventLoop()
        QTimer.singleShot(20, loop.quit)
        loop.exec()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get(
        "MASKBENCH_MAGNETIC_TILE", REPO.parent / "shared" / "datasets" / "magnetic-tile")))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="maskbench-shots-"))
    os.environ["MASKBENCH_CONFIG_DIR"] = str(tmp / "config")
    os.environ["MASKBENCH_DATA_DIR"] = str(tmp / "userdata")
    os.environ.setdefault("MASKBENCH_LOG_DIR", str(tmp / "logs"))
    from PySide6.QtCore import QPointF, Qt
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    from app.settings import Settings
    from app.window_main import MainWindow

    root = build(tmp / "project", args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    win = MainWindow(Settings(), dialogs=False)
    win.resize(1600, 940)
    win.show()
    win.open_project(root)
    rv = win.review
    wait(app, lambda: rv.current is not None and rv.queue.model.rowCount() > 0)
    shots: list[str] = []

    def shot(name: str) -> None:
        wait(app, lambda: False, 0.4)  # let thumbnails and labels settle
        path = args.out / f"{name}.png"
        win.grab().save(str(path))
        shots.append(str(path))

    # 1. queue + crop with all layers filled, on a crop the VLM judged
    judged = [rv.queue.model.sample_id_at(r) for r in range(rv.queue.model.rowCount())
              if rv.queue.model.data(rv.queue.model.index(r, 4))]
    rv.queue.select_sample(judged[0])
    wait(app, lambda: rv.current is not None and rv.current.sample_id == judged[0])
    rv.set_mode("fill")
    shot("review")
    # 2. difference mode, zoomed on the defect, pixel exact
    rv.set_mode("diff")
    gt = rv.current.masks["gt"]
    ys, xs = np.nonzero(gt)
    if len(ys):
        rv.view.fit()
        rv.view.zoom_by(3.0)
        rv.view.centerOn(QPointF(float(xs.mean()), float(ys.mean())))
    shot("review_difference")
    rv.view.fit()
    # 3. contour mode
    rv.set_mode("contour")
    shot("review_contour")
    rv.set_mode("fill")
    # 4. correction with the brush on top of the student's mask (points need a trained model; see README)
    rv.set_tool("brush")
    rv.brush_spin.setValue(5)
    h, w = rv.current.image.shape[:2]
    cx, cy = (float(xs.mean()), float(ys.mean())) if len(ys) else (w / 2, h / 2)
    rv.correction.brush(cx - 12, cy - 12, cx + 12, cy + 8, True, new_stroke=True)
    rv.set_tool("points")
    rv.view.set_points([(cx, cy), (cx + 25, cy - 20)], [1, 0])
    shot("correction")
    rv.clear_correction()
    # 5. the keyboard overlay
    rv.overlay.toggle()
    shot("shortcuts")
    rv.overlay.close_overlay()
    # 6. filtered queue: VLM-judged crops
    rv.queue.vlm_box.setCurrentIndex(0)
    rv.queue.flagged_box.setChecked(True)
    shot("queue_flagged")
    rv.queue.flagged_box.setChecked(False)
    # 7. judge panel
    if "Judge" in win.panels:
        win.tabs.setCurrentWidget(win.panels["Judge"])
        shot("judge_panel")
    win.tabs.setCurrentIndex(0)
    win.close()
    print("\n".join(shots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
