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
    from review.queue_rows import review_queue

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


def box_prompt_shot(app: object, rv: object, root: Path, shot) -> None:  # noqa: ANN001
    """Register the shipped demo teacher, switch to the box tool (R) and put a box around the defect; the teacher's
    mask for the box is decoded in the correction worker, then the shot. The demo teacher was trained on synthetic
    crops only, so of the first few crops in the queue the one where its box mask is closest to the ground truth is
    shown: the picture is of the tool, not a claim about the model."""
    import json

    from app.demo_models import demo_models_dir
    from inference.registry import add_model
    from store.project import Project

    d = demo_models_dir()
    t = json.loads((d / "manifest.json").read_text())["teacher"]
    with Project.open(root) as p:
        add_model(p, "teacher", d / t["file"], config=t["config"], name="demo teacher (not SA-1B SAM 2)",
                  image_size=int(t["image_size"]))
    rv.correction.forget_model("teacher")
    q = rv.queue.model
    ids = [q.sample_id_at(r) for r in range(min(8, q.rowCount()))]
    rv.set_tool("box")  # the box is the teacher's prompt: the correction model switches to the teacher

    def boxed(sid: int) -> float:
        rv.queue.select_sample(sid)
        wait(app, lambda: rv.current is not None and rv.current.sample_id == sid)
        wait(app, lambda: rv.correction.has_embedding(sid, "teacher"), 120.0)
        gt = rv.current.masks["gt"]
        ys, xs = np.nonzero(gt)
        if not len(ys):
            return -1.0
        h, w = gt.shape
        m = 6
        rv.correction.set_box(max(0, xs.min() - m), max(0, ys.min() - m), min(w, xs.max() + 1 + m),
                              min(h, ys.max() + 1 + m))
        wait(app, lambda: rv.correction.current_mask() is not None and not rv.correction.decoding(), 60.0)
        got = rv.correction.current_mask()
        return float((got & gt).sum() / max(1, (got | gt).sum())) if got is not None else -1.0

    scores = {sid: boxed(sid) for sid in ids}
    boxed(max(scores, key=scores.get))
    for name in ("teacher", "student"):
        rv.layer_boxes[name].setChecked(False)
    rv.set_mode("fill")
    shot("box_prompt")
    for name in ("teacher", "student"):
        rv.layer_boxes[name].setChecked(True)
    rv.clear_correction()
    rv.set_tool("points")


def auto_masks_shot(app: object, win: object, root: Path, shot) -> None:  # noqa: ANN001
    """U (automatic masks) with the teacher as the correction model, on a crop of a small demo project: synthetic
    crops and the shipped demo models (app.demo), because the demo teacher was trained on such crops and finds their
    defects with the CLI's default filters. The best candidate becomes the correction (purple); the model layers
    are hidden so it reads."""
    from sqlalchemy import select

    from app.demo import build_demo_project
    from store.project import Project
    from store.schema import Sample

    build_demo_project(root, count=6)
    win.open_project(root)
    rv = win.review
    wait(app, lambda: rv.current is not None and rv.queue.model.rowCount() > 0)
    with Project.open(root) as p, p.db.session() as s:
        sid = s.scalar(select(Sample.id).where(Sample.path.like("%dent_00002%")))
    rv.queue.select_sample(sid)
    wait(app, lambda: rv.current is not None and rv.current.sample_id == sid)
    rv.model_box.setCurrentIndex(rv.model_box.findData("teacher"))
    rv.auto_masks()
    wait(app, lambda: rv.correction.auto_candidates() is not None, 900.0)  # a 16x16 grid of SAM 2 decodes on CPU
    for name in ("teacher", "student", "gt"):
        rv.layer_boxes[name].setChecked(False)
    rv.set_mode("fill")
    opacity = rv.opacity_slider.value()
    rv.opacity_slider.setValue(70)
    shot("auto_masks")
    rv.opacity_slider.setValue(opacity)
    for name in ("teacher", "student", "gt"):
        rv.layer_boxes[name].setChecked(True)
    rv.clear_correction()
    rv.model_box.setCurrentIndex(rv.model_box.findData("student"))


def training_panel_shot(win: object, shot) -> None:  # noqa: ANN001
    """The Training tab of a full install, with the feature-aligned mode's settings as project.yaml has them."""
    win.tabs.setCurrentWidget(win.panels["Training"])
    shot("training_panel")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    ap.add_argument("--only", choices=["auto_masks", "training_panel"],
                    help="render just this shot (it needs no magnetic-tile data)")
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

    if args.only:
        args.out.mkdir(parents=True, exist_ok=True)
        win = MainWindow(Settings(), dialogs=False)
        win.resize(1600, 940)
        win.show()

        def only_shot(name: str) -> None:
            wait(app, lambda: False, 0.4)
            win.grab().save(str(args.out / f"{name}.png"))
            print(args.out / f"{name}.png")

        if args.only == "auto_masks":
            auto_masks_shot(app, win, tmp / "demo-project", only_shot)
        else:
            from store.project import Project

            win.open_project(Project.create(tmp / "training-project").root)
            training_panel_shot(win, only_shot)
        win.close()
        return 0
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
    # 5b. the dialog that changes them (Help > Keyboard shortcuts)
    from widgets.shortcuts import ShortcutsDialog

    dialog = ShortcutsDialog({}, win)
    dialog.resize(820, 1120)
    dialog.show()
    names = [dialog.table.item(r, 0).data(Qt.ItemDataRole.UserRole) for r in range(dialog.table.rowCount())]
    dialog.table.item(names.index("both_good"), 2).setText("T")  # a conflict: OK refuses it and says why
    dialog.accept()
    wait(app, lambda: False, 0.4)
    dialog.grab().save(str(args.out / "shortcuts_dialog.png"))
    shots.append(str(args.out / "shortcuts_dialog.png"))
    dialog.close()
    # 5c. Models > Predict and flag (the dialog; the run itself goes to the status bar)
    from widgets.predict_dialog import PredictDialog

    predict = PredictDialog(win)
    predict.views.setCurrentIndex(predict.views.findData(4))
    predict.show()
    wait(app, lambda: False, 0.4)
    predict.grab().save(str(args.out / "predict_dialog.png"))
    shots.append(str(args.out / "predict_dialog.png"))
    predict.close()
    # 6. filtered queue: VLM-judged crops
    rv.queue.vlm_box.setCurrentIndex(0)
    rv.queue.flagged_box.setChecked(True)
    shot("queue_flagged")
    rv.queue.flagged_box.setChecked(False)
    # 7. judge panel
    if "Judge" in win.panels:
        win.tabs.setCurrentWidget(win.panels["Judge"])
        shot("judge_panel")
    # 7b. the Training tab (a full install: every setting of a run, the curves, past runs)
    training_panel_shot(win, shot)
    win.tabs.setCurrentIndex(0)
    # 8. the box tool: a box prompt decoded by a real teacher (the shipped demo SAM 2, see its model card)
    box_prompt_shot(app, rv, root, shot)
    # 9. automatic masks (U) with the teacher, on a demo-project crop (its own project: see auto_masks_shot)
    auto_masks_shot(app, win, tmp / "demo-project", shot)
    win.close()
    print("\n".join(shots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
