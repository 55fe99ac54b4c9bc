"""The review workbench driven like a reviewer would: keys, clicks, and the store checked afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from sqlalchemy import select

from review.verdicts import latest_verdicts
from store import rle
from store.project import Project
from store.schema import Mask, MaskSource, Verdict, VerdictAuthorKind, VerdictKind
from widgets.queue_model import COL_HUMAN


def _key(qtbot: Any, win: Any, key: Qt.Key, mod: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
    qtbot.keyClick(win.review.view, key, mod)


def _wait_shown(qtbot: Any, rv: Any, sample_id: int) -> None:
    qtbot.waitUntil(lambda: rv.current is not None and rv.current.sample_id == sample_id, timeout=30_000)


def _wait_writes(qtbot: Any, rv: Any) -> None:
    qtbot.waitUntil(lambda: rv.writes_pending == 0, timeout=30_000)


def _human_rows(root: Path) -> list[tuple[int, str, int | None]]:
    with Project.open(root) as p, p.db.session() as s:
        rows = s.scalars(select(Verdict).where(Verdict.author_kind == VerdictAuthorKind.HUMAN).order_by(Verdict.id))
        return [(v.sample_id, v.verdict.value, v.supersedes_id) for v in rows]


def _view_pos(view: Any, x: float, y: float) -> QPoint:
    return view.mapFromScene(QPointF(x + 0.5, y + 0.5))


def test_queue_puts_flagged_crops_first_by_disagreement(qtbot: Any, window: Any, tile_project: Any) -> None:
    _root, ids = tile_project
    model = window.review.queue.model
    shown = [int(x) for x in model.shown_sample_ids()]
    flagged = ids["flagged"]
    assert len(flagged) >= 2
    assert set(shown[: len(flagged)]) == set(flagged)
    ious = [float(model.q.iou[model.q.row_of[s]]) for s in shown[: len(flagged)]]
    assert ious == sorted(ious)
    assert set(shown[-len(ids["plain"]):]) == set(ids["plain"])  # never compared: last
    # the view shows the first crop with its VLM verdict and reason beside it
    assert window.review.current.sample_id == shown[0]
    rv = window.review
    for sid, label in zip(ids["vlm"], ("teacher better", "both bad")):
        rv.queue.select_sample(sid)
        _wait_shown(qtbot, rv, sid)
        assert label in rv.vlm_verdict_label.text() and "0.80" in rv.vlm_verdict_label.text()
        assert "follows the crack edge" in rv.vlm_reason_label.text()
        assert "flagged" in rv.metrics_label.text()


def test_keys_navigate_give_every_verdict_and_undo(qtbot: Any, window: Any, tile_project: Any) -> None:
    root, _ids = tile_project
    rv = window.review
    order = [int(x) for x in rv.queue.model.shown_sample_ids()]
    assert rv.current.sample_id == order[0]
    _key(qtbot, window, Qt.Key.Key_J)
    _wait_shown(qtbot, rv, order[1])
    _key(qtbot, window, Qt.Key.Key_Down)
    _wait_shown(qtbot, rv, order[2])
    _key(qtbot, window, Qt.Key.Key_K)
    _wait_shown(qtbot, rv, order[1])
    _key(qtbot, window, Qt.Key.Key_Up)
    _wait_shown(qtbot, rv, order[0])
    _key(qtbot, window, Qt.Key.Key_Up)  # start of the queue: stays
    assert rv.current.sample_id == order[0]

    given = {}
    for i, (key, verdict) in enumerate([(Qt.Key.Key_T, "teacher_better"), (Qt.Key.Key_S, "student_better"),
                                        (Qt.Key.Key_G, "both_good"), (Qt.Key.Key_B, "both_bad")]):
        assert rv.current_id == order[i]
        _key(qtbot, window, key)
        given[order[i]] = verdict
        _wait_shown(qtbot, rv, order[i + 1])  # the view moved on at once
    _wait_writes(qtbot, rv)
    assert _human_rows(root) == [(sid, v, None) for sid, v in given.items()]
    assert rv.session.count == 4

    _key(qtbot, window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    _wait_writes(qtbot, rv)
    _wait_shown(qtbot, rv, order[3])  # undo goes back to the crop whose verdict it took back
    rows = _human_rows(root)
    assert len(rows) == 5 and rows[-1][0] == order[3] and rows[-1][1] == "undo"
    with Project.open(root) as p, p.db.session() as s:
        standing = {sid: v.verdict.value for sid, v in latest_verdicts(s, VerdictAuthorKind.HUMAN).items()}
    assert standing == {order[0]: "teacher_better", order[1]: "student_better", order[2]: "both_good"}
    assert rv.session.count == 3
    assert rv.queue.model.data(rv.queue.model.index(3, COL_HUMAN)) in ("pending", "judged")
    assert "3" in rv.session_label.text()
    assert "3 reviewed" in window.counts_label.text()


def test_point_prompts_give_a_live_mask_and_save_a_correction(qtbot: Any, window: Any, tile_project: Any) -> None:
    root, ids = tile_project
    rv = window.review
    plain = ids["plain"][0]  # a crop with no prediction at all: plain point-prompt annotation
    rv.queue.select_sample(plain)
    _wait_shown(qtbot, rv, plain)
    qtbot.waitUntil(lambda: rv.correction.has_embedding(plain), timeout=60_000)
    h, w = rv.current.image.shape[:2]
    view = rv.view
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=_view_pos(view, w // 2, h // 2))
    qtbot.waitUntil(lambda: rv.correction.current_mask() is not None and not rv.correction.decoding(), timeout=30_000)
    first = rv.correction.current_mask()
    assert first.shape == (h, w)
    assert rv.view.masks["corrected"] is not None and rv.view.layer_shown("corrected")
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.RightButton, pos=_view_pos(view, 3, 3))
    qtbot.waitUntil(lambda: len(rv.correction.points) == 2 and not rv.correction.decoding(), timeout=30_000)
    assert rv.correction.labels == [1, 0]
    assert len(view.point_items) == 2
    _key(qtbot, window, Qt.Key.Key_Backspace)
    qtbot.waitUntil(lambda: not rv.correction.decoding(), timeout=30_000)
    assert rv.correction.points == [(float(w // 2), float(h // 2))]
    assert np.array_equal(rv.correction.current_mask(), first)  # same single point, same mask

    # brush touch-up: paint a disc, then erase part of it
    _key(qtbot, window, Qt.Key.Key_D)
    assert view.tool == "brush"
    rv.brush_spin.setValue(4)
    qtbot.mousePress(view.viewport(), Qt.MouseButton.LeftButton, pos=_view_pos(view, 10, 10))
    qtbot.mouseRelease(view.viewport(), Qt.MouseButton.LeftButton, pos=_view_pos(view, 10, 10))
    painted = rv.correction.current_mask()
    assert painted[10, 10] and painted[10, 13]
    _key(qtbot, window, Qt.Key.Key_E)
    rv.brush_spin.setValue(1)
    qtbot.mousePress(view.viewport(), Qt.MouseButton.LeftButton, pos=_view_pos(view, 10, 10))
    qtbot.mouseRelease(view.viewport(), Qt.MouseButton.LeftButton, pos=_view_pos(view, 10, 10))
    final = rv.correction.current_mask()
    assert not final[10, 10] and final[10, 13]
    expected = final.copy()

    _key(qtbot, window, Qt.Key.Key_Return)
    _wait_writes(qtbot, rv)
    assert rv.current_id != plain  # moved on
    with Project.open(root) as p, p.db.session() as s:
        v = s.scalars(select(Verdict).where(Verdict.sample_id == plain)).all()
        assert [x.verdict for x in v] == [VerdictKind.CORRECTED]
        m = s.get(Mask, v[0].corrected_mask_id)
        assert m.source == MaskSource.CORRECTED
        assert np.array_equal(rle.decode(m.rle), expected)

    # back on that crop the saved correction is the purple layer
    _key(qtbot, window, Qt.Key.Key_K)
    _wait_shown(qtbot, rv, plain)
    assert np.array_equal(rv.view.masks["corrected"], expected)


def test_escape_clears_points_and_enter_without_edits_saves_nothing(qtbot: Any, window: Any, tile_project: Any) -> None:
    root, _ids = tile_project
    rv = window.review
    sid = rv.current_id
    qtbot.waitUntil(lambda: rv.correction.has_embedding(sid), timeout=60_000)
    qtbot.mouseClick(rv.view.viewport(), Qt.MouseButton.LeftButton, pos=_view_pos(rv.view, 20, 20))
    qtbot.waitUntil(lambda: rv.correction.current_mask() is not None, timeout=30_000)
    _key(qtbot, window, Qt.Key.Key_Escape)
    assert rv.correction.points == [] and rv.correction.current_mask() is None
    assert rv.view.point_items == []
    _key(qtbot, window, Qt.Key.Key_Return)
    _wait_writes(qtbot, rv)
    assert rv.current_id == sid
    assert _human_rows(root) == []


def test_layer_keys_modes_and_pixel_exact_zoom(qtbot: Any, window: Any) -> None:
    rv = window.review
    view = rv.view
    assert all(view.layer_shown(n) for n in ("teacher", "student", "gt"))
    for key, name in ((Qt.Key.Key_1, "teacher"), (Qt.Key.Key_2, "student"), (Qt.Key.Key_3, "gt")):
        _key(qtbot, window, key)
        assert not view.layer_shown(name)
        _key(qtbot, window, key)
        assert view.layer_shown(name)
    _key(qtbot, window, Qt.Key.Key_V)
    assert view.mode == "contour"
    _key(qtbot, window, Qt.Key.Key_V)
    assert view.mode == "diff" and view.diff_shown()
    assert not view.layer_shown("teacher") and rv.diff_legend.isVisible()
    # difference mode: teacher-only pixels in the teacher colour, student-only in the student colour
    t, st = view.masks["teacher"], view.masks["student"]
    out, img = view.composited, view.image
    teacher_rgb, student_rgb = np.array([0, 114, 178]), np.array([230, 159, 0])
    for only, rgb in ((t & ~st, teacher_rgb), (st & ~t, student_rgb)):
        if only.any():
            ys, xs = np.nonzero(only & ~_edges(view))
            if len(ys):
                got = out[ys[0], xs[0]].astype(float)
                expected = 0.75 * rgb + 0.25 * img[ys[0], xs[0]]
                assert np.abs(got - expected).max() <= 2
    _key(qtbot, window, Qt.Key.Key_V)
    assert view.mode == "fill"

    # zoom in 4 steps around the centre: nearest-neighbour, every image pixel a uniform block
    _key(qtbot, window, Qt.Key.Key_F)
    for _ in range(12):
        _key(qtbot, window, Qt.Key.Key_Plus)
    z = view.zoom()
    assert z > 4
    for n in ("teacher", "student", "gt", "corrected"):
        view.set_layer_visible(n, False)
    img = view.render_to_image()
    vp = view.viewport().rect().center()
    p = view.mapToScene(vp)
    px, py = int(p.x()), int(p.y())
    top_left = view.mapFromScene(QPointF(px, py))
    block = int(z) - 2
    colours = {img.pixel(top_left.x() + 1 + dx, top_left.y() + 1 + dy) for dx in range(block) for dy in range(block)}
    assert len(colours) == 1, "pixels are smoothed"


def _edges(view: Any) -> np.ndarray:
    """Pixels under the GT or corrected contour (drawn on top in difference mode)."""
    from widgets.mask_view import contour

    out = np.zeros(view.image_hw, bool)
    for n in ("gt", "corrected"):
        if view.masks.get(n) is not None:
            out |= contour(view.masks[n]).astype(bool)
    return out


def test_fill_mode_blends_exact_colours(qtbot: Any, window: Any) -> None:
    view = window.review.view
    gt = view.masks["gt"]
    assert gt is not None and gt.any()
    for n in ("teacher", "student", "corrected"):
        view.set_layer_visible(n, False)
    view.set_opacity(1.0)
    assert (view.composited[gt] == [0, 158, 115]).all()  # Okabe-Ito bluish green
    assert (view.composited[~gt] == view.image[~gt]).all()
    view.set_opacity(0.5)
    ys, xs = np.nonzero(gt)
    expected = 0.5 * np.array([0, 158, 115]) + 0.5 * view.image[ys, xs]
    assert np.abs(view.composited[ys, xs] - expected).max() <= 1


def test_shortcut_overlay(qtbot: Any, window: Any) -> None:
    rv = window.review
    qtbot.keyClick(rv.view, Qt.Key.Key_Question, Qt.KeyboardModifier.ShiftModifier)
    assert rv.overlay.isVisible()
    qtbot.keyClick(rv.overlay, Qt.Key.Key_Escape)
    assert not rv.overlay.isVisible()


@pytest.mark.parametrize("kind", ["status", "class", "iou", "vlm", "disagreement"])
def test_filters_on_the_real_queue(qtbot: Any, window: Any, tile_project: Any, kind: str) -> None:
    root, ids = tile_project
    rv = window.review
    q = rv.queue
    if kind == "status":
        _key(qtbot, window, Qt.Key.Key_T)
        _wait_writes(qtbot, rv)
        q.status_box.setCurrentIndex(q.status_box.findText("reviewed"))
        assert q.model.rowCount() == 1
        q.status_box.setCurrentIndex(q.status_box.findText("judged (VLM)"))
        assert q.model.rowCount() == 1  # one of the two VLM-judged crops got the human verdict above
        q.status_box.setCurrentIndex(q.status_box.findText("pending"))
        assert q.model.rowCount() == 13
    elif kind == "class":
        q.class_box.setCurrentIndex(q.class_box.findText("crack"))
        assert q.model.rowCount() == 3
        assert all(q.model.data(q.model.index(r, 2)) == "crack" for r in range(3))
    elif kind == "iou":
        q.iou_max.setValue(0.5)
        shown = [int(x) for x in q.model.shown_sample_ids()]
        assert shown and all(q.model.q.iou[q.model.q.row_of[s]] <= 0.5 for s in shown)
        assert not set(shown) & set(ids["plain"])
    elif kind == "vlm":
        q.vlm_box.setCurrentIndex(q.vlm_box.findText("VLM: teacher better"))
        assert [int(x) for x in q.model.shown_sample_ids()] == [ids["vlm"][0]]
        q.vlm_box.setCurrentIndex(q.vlm_box.findText("not judged"))
        assert q.model.rowCount() == 13
    else:
        vlm_a, vlm_b = ids["vlm"]  # VLM said teacher_better on a, both_bad on b
        for sid, v in ((vlm_a, Qt.Key.Key_T), (vlm_b, Qt.Key.Key_S)):
            q.select_sample(sid)
            _wait_shown(qtbot, rv, sid)
            _key(qtbot, window, v)
        _wait_writes(qtbot, rv)
        q.disagree_box.setChecked(True)
        assert [int(x) for x in q.model.shown_sample_ids()] == [vlm_b]
    # the view follows the filter
    if q.model.rowCount():
        first = q.model.sample_id_at(0)
        _wait_shown(qtbot, rv, first) if rv.current_id == first else None


def test_prefetch_loads_next_crops_and_embedding(qtbot: Any, window: Any, tile_project: Any) -> None:
    root, _ids = tile_project
    rv = window.review
    nxt = rv.queue.upcoming(3)
    qtbot.waitUntil(lambda: all(s in rv.cache for s in nxt), timeout=60_000)
    cur = rv.current_id
    qtbot.waitUntil(lambda: rv.correction.has_embedding(nxt[0]) and rv.correction.has_embedding(cur), timeout=60_000)
    # the embeddings went through the project's on-disk cache (shared with batch predict)
    assert len(list((root / "cache" / "embeddings").rglob("*.npz"))) >= 2
    _key(qtbot, window, Qt.Key.Key_J)
    assert rv.current is not None and rv.current.sample_id == nxt[0]  # shown synchronously from the cache



def test_teacher_points_after_switching_model(qtbot: Any, window: Any, tile_project: Any,
                                              teacher_checkpoint: Path) -> None:
    """M switches the point model to the teacher (SAM 2, through the registry); clicks decode with it."""
    from inference.registry import add_model

    root, ids = tile_project
    with Project.open(root) as p:
        add_model(p, "teacher", teacher_checkpoint, config="sam2.1_hiera_t", image_size=256, name="sam2-random")
    rv = window.review
    sid = ids["plain"][1]
    rv.queue.select_sample(sid)
    _wait_shown(qtbot, rv, sid)
    _key(qtbot, window, Qt.Key.Key_M)
    assert rv.correction.kind == "teacher" and rv.model_box.currentData() == "teacher"
    qtbot.waitUntil(lambda: rv.correction.has_embedding(sid, "teacher"), timeout=60_000)
    h, w = rv.current.image.shape[:2]
    qtbot.mouseClick(rv.view.viewport(), Qt.MouseButton.LeftButton, pos=_view_pos(rv.view, w // 3, h // 3))
    qtbot.waitUntil(lambda: rv.correction.current_mask() is not None and not rv.correction.decoding(), timeout=30_000)
    mask = rv.correction.current_mask().copy()
    _key(qtbot, window, Qt.Key.Key_Enter)
    _wait_writes(qtbot, rv)
    with Project.open(root) as p, p.db.session() as s:
        v = s.scalars(select(Verdict).where(Verdict.sample_id == sid)).one()
        assert v.verdict == VerdictKind.CORRECTED
        assert np.array_equal(rle.decode(s.get(Mask, v.corrected_mask_id).rle), mask)
    assert window.settings.get("review/model") == "teacher"


def test_wheel_zooms_under_the_cursor_and_middle_button_pans(qtbot: Any, window: Any) -> None:
    from PySide6.QtCore import QPoint
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    view = window.review.view
    vp = view.viewport()
    z0 = view.zoom()
    centre = vp.rect().center()
    for _ in range(6):
        ev = QWheelEvent(QPointF(centre), QPointF(vp.mapToGlobal(centre)), QPoint(0, 0), QPoint(0, 120),
                         Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
        QApplication.sendEvent(vp, ev)
    assert view.zoom() == pytest.approx(z0 * 1.25 ** 6, rel=1e-3)
    h0, v0 = view.horizontalScrollBar().value(), view.verticalScrollBar().value()
    qtbot.mousePress(vp, Qt.MouseButton.MiddleButton, pos=centre)
    qtbot.mouseMove(vp, centre + QPoint(40, 30))
    qtbot.mouseRelease(vp, Qt.MouseButton.MiddleButton, pos=centre + QPoint(40, 30))
    assert (view.horizontalScrollBar().value(), view.verticalScrollBar().value()) != (h0, v0)
    assert window.review.correction.points == []  # panning adds no point
