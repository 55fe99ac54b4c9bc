"""Box and mask prompts (the teacher's only) in the real review window, on real magnetic-tile crops: drag a box, let
the teacher refine the mask on screen or the ground truth, add points, save; the store then holds a human-prompted
teacher Prediction whose prompts decode again to its mask."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from sqlalchemy import select

from store import rle
from store.project import Project
from store.schema import HUMAN_PROMPT_SOURCE, Mask, MaskSource, ModelKind, ModelRecord, Prediction, Verdict, VerdictKind


def _view_pos(view: Any, x: float, y: float) -> QPoint:
    return view.mapFromScene(QPointF(x + 0.5, y + 0.5))


def _key(qtbot: Any, win: Any, key: Qt.Key, mod: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
    qtbot.keyClick(win.review.view, key, mod)


def _drag(qtbot: Any, view: Any, a: tuple[int, int], b: tuple[int, int]) -> None:
    vp = view.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=_view_pos(view, *a))
    qtbot.mouseMove(vp, _view_pos(view, (a[0] + b[0]) // 2, (a[1] + b[1]) // 2))
    qtbot.mouseMove(vp, _view_pos(view, *b))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=_view_pos(view, *b))


def _decoded(qtbot: Any, rv: Any) -> np.ndarray:
    qtbot.waitUntil(lambda: rv.correction.current_mask() is not None and not rv.correction.decoding(), timeout=60_000)
    return rv.correction.current_mask().copy()


def _add_teacher(root: Path, checkpoint: Path) -> None:
    from inference.registry import add_model

    with Project.open(root) as p:
        add_model(p, "teacher", checkpoint, config="sam2.1_hiera_t", image_size=256, name="sam2-random")


def _prompted(root: Path, sid: int) -> tuple[Verdict, Prediction, dict[str, Any]]:
    with Project.open(root) as p, p.db.session() as s:
        v = s.scalars(select(Verdict).where(Verdict.sample_id == sid)).one()
        pred = s.scalars(select(Prediction).where(Prediction.sample_id == sid,
                                                  Prediction.prompt_source == HUMAN_PROMPT_SOURCE)).one()
        model = s.get(ModelRecord, pred.model_id)
        masks = {"corrected": rle.decode(s.get(Mask, v.corrected_mask_id).rle),
                 "prediction": rle.decode(s.get(Mask, pred.mask_id).rle),
                 "prediction_source": s.get(Mask, pred.mask_id).source, "model_kind": model.kind,
                 "mask_prompt": None, "mask_prompt_source": None}
        if pred.mask_prompt_id is not None:
            mp = s.get(Mask, pred.mask_prompt_id)
            masks["mask_prompt"], masks["mask_prompt_source"] = rle.decode(mp.rle), mp.source
        return v, pred, masks


def _replay(root: Path, sid: int, pred: Prediction, mask_prompt: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Decode the stored prompts again with the project's teacher (through the registry and its embedding cache, as
    the window does); returns (mask, logits)."""
    import torch

    from inference.registry import load_segmenter
    from inference.segmenter import Prompt, decode_prompt
    from store.images import load_image
    from store.schema import Sample

    with Project.open(root) as p:
        with p.db.session() as s:
            smp = s.get(Sample, sid)
            path, sha = smp.path, smp.sha256
        seg = load_segmenter(p, "teacher")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the correction's decode worker
        try:
            emb = seg.embed(load_image(path), image_sha256=sha)
            out = decode_prompt(seg, emb, Prompt(np.asarray(pred.points, np.float32).reshape(-1, 2),
                                                 np.asarray(pred.labels, np.int32),
                                                 box=None if pred.box is None else np.asarray(pred.box, np.float32),
                                                 mask=mask_prompt))
        finally:
            torch.set_num_threads(threads)
    return out.mask, out.logits


def _same_up_to_rounding(a: np.ndarray, b: np.ndarray, logits: np.ndarray) -> None:
    """Equal masks, except pixels whose logit is a float rounding from the threshold (another decoder call)."""
    differ = a != b
    assert not differ[np.abs(logits) > 1e-3].any()
    assert differ.mean() < 1e-3


def test_box_then_refine_the_mask_with_a_point_saves_a_replayable_correction(
        qtbot: Any, window: Any, tile_project: Any, teacher_checkpoint: Path) -> None:
    root, ids = tile_project
    _add_teacher(root, teacher_checkpoint)
    rv = window.review
    sid = ids["plain"][0]
    rv.queue.select_sample(sid)
    qtbot.waitUntil(lambda: rv.current is not None and rv.current.sample_id == sid, timeout=30_000)
    assert rv.correction.kind == "student"
    h, w = rv.current.image.shape[:2]
    view = rv.view

    # R: the box tool, which is the teacher's, so the correction model switches to the teacher
    _key(qtbot, window, Qt.Key.Key_R)
    assert view.tool == "box" and rv.tool_buttons["box"].isChecked()
    assert rv.correction.kind == "teacher" and rv.model_box.currentData() == "teacher"
    qtbot.waitUntil(lambda: rv.correction.has_embedding(sid, "teacher"), timeout=60_000)
    x0, y0, x1, y1 = w // 5, h // 5, (3 * w) // 4, (2 * h) // 3
    _drag(qtbot, view, (x0, y0), (x1, y1))
    box = rv.correction.box
    tol = 1 + 1 / min(1.0, view.zoom())  # below 1:1 zoom one screen pixel spans more than one image pixel
    assert np.allclose(box, (x0, y0, x1 + 1, y1 + 1), atol=tol)
    assert view.box_item.isVisible() and not view.rubber_item.isVisible()
    assert rv.correction.points == []  # a drag is a box, not a point
    boxed = _decoded(qtbot, rv)
    assert boxed.shape == (h, w) and view.masks["corrected"] is not None

    # C: the teacher refines the mask on screen (SAM 2's mask input), with the box; then a negative click
    _key(qtbot, window, Qt.Key.Key_C)
    assert rv.correction.mask_prompt_source == "current"
    assert np.array_equal(rv.correction.mask_prompt, boxed)
    _decoded(qtbot, rv)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.RightButton, pos=_view_pos(view, x0 + 2, y0 + 2))
    qtbot.waitUntil(lambda: rv.correction.labels == [0], timeout=10_000)
    final = _decoded(qtbot, rv)
    assert "box" in rv.correction_label.text() and "current mask" in rv.correction_label.text()

    # Backspace takes back the point, then the mask prompt, then the box, one action at a time
    _key(qtbot, window, Qt.Key.Key_Backspace)
    assert rv.correction.points == [] and rv.correction.mask_prompt is not None
    _key(qtbot, window, Qt.Key.Key_Backspace)
    assert rv.correction.mask_prompt is None and rv.correction.box is not None
    assert np.array_equal(_decoded(qtbot, rv), boxed)  # same box, same mask
    _key(qtbot, window, Qt.Key.Key_Backspace)
    assert rv.correction.box is None and not view.box_item.isVisible()

    # M back to the student drops the box (it takes points only) and says so; M again: the teacher
    _drag(qtbot, view, (x0, y0), (x1, y1))
    assert rv.correction.box is not None
    _key(qtbot, window, Qt.Key.Key_M)
    assert rv.correction.kind == "student" and rv.correction.box is None and not view.box_item.isVisible()
    assert "dropped" in rv.correction_label.text()
    _key(qtbot, window, Qt.Key.Key_M)
    assert rv.correction.kind == "teacher"

    # again, and save with Enter
    _drag(qtbot, view, (x0, y0), (x1, y1))
    _decoded(qtbot, rv)
    _key(qtbot, window, Qt.Key.Key_C)
    _decoded(qtbot, rv)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.RightButton, pos=_view_pos(view, x0 + 2, y0 + 2))
    qtbot.waitUntil(lambda: rv.correction.labels == [0], timeout=10_000)
    assert rv.correction.box == box
    assert np.array_equal(_decoded(qtbot, rv), final)
    point = rv.correction.points[0]
    _key(qtbot, window, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: rv.writes_pending == 0, timeout=30_000)

    v, pred, masks = _prompted(root, sid)
    assert v.verdict == VerdictKind.CORRECTED
    assert np.array_equal(masks["corrected"], final)
    assert masks["model_kind"] == ModelKind.TEACHER
    assert pred.box == list(box)
    assert pred.points == [list(point)] and pred.labels == [0]
    assert pred.mask_id == v.corrected_mask_id  # no brush edits: the prediction's mask is the correction
    assert masks["mask_prompt_source"] == MaskSource.MASK_PROMPT
    assert np.array_equal(masks["mask_prompt"], boxed)
    # the stored prompts reproduce the mask
    mask, logits = _replay(root, sid, pred, masks["mask_prompt"])
    _same_up_to_rounding(mask, masks["prediction"], logits)


def test_refining_the_ground_truth_with_a_point_and_a_brush_stroke(
        qtbot: Any, window: Any, tile_project: Any, teacher_checkpoint: Path) -> None:
    root, ids = tile_project
    _add_teacher(root, teacher_checkpoint)
    rv = window.review
    sid = ids["predicted"][0]
    rv.queue.select_sample(sid)
    qtbot.waitUntil(lambda: rv.current is not None and rv.current.sample_id == sid, timeout=30_000)
    gt = rv.current.masks["gt"]
    assert gt is not None and gt.any()
    teacher_before = rv.current.masks["teacher"].copy()
    h, w = gt.shape
    _key(qtbot, window, Qt.Key.Key_C, Qt.KeyboardModifier.ShiftModifier)  # Shift+C: refine the ground truth
    assert rv.correction.kind == "teacher"
    assert rv.correction.mask_prompt_source == "ground_truth" and np.array_equal(rv.correction.mask_prompt, gt)
    qtbot.waitUntil(lambda: rv.correction.has_embedding(sid, "teacher"), timeout=60_000)
    refined = _decoded(qtbot, rv)
    ys, xs = np.nonzero(gt)
    qtbot.mouseClick(rv.view.viewport(), Qt.MouseButton.LeftButton, pos=_view_pos(rv.view, xs[0], ys[0]))
    qtbot.waitUntil(lambda: rv.correction.labels == [1], timeout=10_000)
    decoded = _decoded(qtbot, rv)
    point = rv.correction.points[0]
    assert refined.shape == decoded.shape == (h, w)
    # a brush stroke on top: the correction differs from the teacher's answer, which is kept as its own mask
    _key(qtbot, window, Qt.Key.Key_D)
    rv.brush_spin.setValue(3)
    qtbot.mousePress(rv.view.viewport(), Qt.MouseButton.LeftButton, pos=_view_pos(rv.view, 4, 4))
    qtbot.mouseRelease(rv.view.viewport(), Qt.MouseButton.LeftButton, pos=_view_pos(rv.view, 4, 4))
    final = rv.correction.current_mask().copy()
    assert final[4, 4]
    _key(qtbot, window, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: rv.writes_pending == 0, timeout=30_000)

    v, pred, masks = _prompted(root, sid)
    assert np.array_equal(masks["corrected"], final)
    assert pred.mask_id != v.corrected_mask_id and masks["prediction_source"] == MaskSource.PROMPTED
    assert np.array_equal(masks["prediction"], decoded)
    assert masks["mask_prompt_source"] == MaskSource.GROUND_TRUTH  # the ingested mask row itself, not a copy
    assert pred.box is None and pred.points == [list(point)] and pred.labels == [1]
    mask, logits = _replay(root, sid, pred, masks["mask_prompt"])
    _same_up_to_rounding(mask, masks["prediction"], logits)
    # the reviewer's prompted answer is not the teacher's own prediction: the teacher layer is unchanged
    from review.sample_data import load_sample

    with Project.open(root) as p:
        again = load_sample(p.db, sid)
    assert np.array_equal(again.masks["teacher"], teacher_before)


@pytest.mark.parametrize("how", ["box", "mask"])
def test_student_keeps_point_prompts(qtbot: Any, window: Any, how: str) -> None:
    """With no teacher the student stays the model: a box or mask prompt is refused with the reason, not ignored."""
    from inference.segmenter import Prompt, PromptNotSupported, decode_prompt

    rv = window.review
    sid = rv.current_id
    assert rv.correction.kind == "student"
    rv.correction.set_kind("student")
    before = rv.correction.active
    ok = (rv.correction.set_box(2, 2, 30, 30) if how == "box"
          else rv.correction.set_mask_prompt(rv.current.masks["gt"], "ground_truth"))
    assert not ok and rv.correction.active == before
    assert "teacher" in rv.correction_label.text() and "points only" in rv.correction_label.text()
    # and the model layer says the same when asked directly
    qtbot.waitUntil(lambda: rv.correction.has_embedding(sid, "student"), timeout=60_000)
    seg = rv.correction._segmenter("student")
    emb = rv.correction._emb[("student", sid)]
    prompt = Prompt(np.zeros((1, 2), np.float32), np.ones(1, np.int32),
                    box=np.array([2, 2, 30, 30], np.float32) if how == "box" else None,
                    mask=rv.current.masks["gt"] if how == "mask" else None)
    with pytest.raises(PromptNotSupported, match="point prompts only"):
        decode_prompt(seg, emb, prompt)
