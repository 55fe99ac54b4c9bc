"""The review queue at scale: numpy filters and sorting over 100,000 rows, lazy thumbnails, the store query."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import Qt

from store.project import Project
from review.queue_data import STATUSES, VERDICT_CODE, VERDICTS, QueueColumns, QueueFilter, load_queue
from widgets.queue_model import COL_HARD, COL_HUMAN, COL_IOU, COL_THUMB, QueueModel
from widgets.queue_view import QueueWidget


def _columns(n: int, seed: int = 0) -> QueueColumns:
    rng = np.random.default_rng(seed)
    iou = rng.random(n).astype(np.float32)
    iou[rng.random(n) < 0.1] = np.nan
    vlm = rng.integers(-1, 4, n).astype(np.int8)  # teacher_better..both_bad or none
    human = rng.integers(-1, 5, n).astype(np.int8)
    return QueueColumns(
        sample_id=np.arange(1, n + 1, dtype=np.int64), path=np.array([f"/x/{i}.jpg" for i in range(n)], dtype=object),
        cls=rng.integers(0, 4, n).astype(np.int16), classes=["crack", "dent", "pit", "scratch"],
        iou=iou, flagged=np.nan_to_num(iou, nan=1.0) < 0.85, vlm=vlm, vlm_conf=rng.random(n).astype(np.float32),
        human=human)


def _reference(q: QueueColumns, f: QueueFilter) -> set[int]:
    """The same filter, one row at a time in plain Python."""
    out = set()
    for i in range(len(q)):
        status = "reviewed" if q.human[i] >= 0 else ("judged" if q.vlm[i] >= 0 else "pending")
        if f.statuses is not None and status not in f.statuses:
            continue
        if f.classes is not None and q.classes[q.cls[i]] not in f.classes:
            continue
        if not (f.iou_min <= 0 and f.iou_max >= 1) and not (f.iou_min <= q.iou[i] <= f.iou_max):
            continue
        vlm = VERDICTS[q.vlm[i]] if q.vlm[i] >= 0 else "none"
        if f.vlm is not None and vlm not in f.vlm:
            continue
        if f.disagreement_only:
            if q.vlm[i] < 0 or q.human[i] < 0:
                continue
            human = "both_bad" if VERDICTS[q.human[i]] == "corrected" else VERDICTS[q.human[i]]
            if human == vlm:
                continue
        if f.flagged_only and not q.flagged[i]:
            continue
        out.add(int(q.sample_id[i]))
    return out


FILTERS = [
    QueueFilter(statuses=frozenset({"pending"})),
    QueueFilter(statuses=frozenset({"judged", "pending"}), classes=frozenset({"crack"})),
    QueueFilter(iou_min=0.2, iou_max=0.5),
    QueueFilter(vlm=frozenset({"both_bad", "none"})),
    QueueFilter(disagreement_only=True),
    QueueFilter(flagged_only=True, statuses=frozenset({"reviewed"})),
]


@pytest.mark.parametrize("f", FILTERS)
def test_numpy_filters_match_a_row_by_row_reference(f: QueueFilter) -> None:
    q = _columns(3000, seed=3)
    got = set(int(x) for x in q.sample_id[f.mask(q)])
    assert got == _reference(q, f)


def test_default_order_flagged_first_then_lowest_iou_then_uncompared() -> None:
    q = _columns(2000, seed=4)
    order = q.default_order()
    flagged = q.flagged[order]
    assert not (np.diff(flagged.astype(int)) > 0).any()  # all flagged rows come first
    f_iou = q.iou[order][flagged]
    assert (np.diff(f_iou) >= 0).all()
    rest = q.iou[order][~flagged]
    nan = np.isnan(rest)
    assert not (np.diff(nan.astype(int)) < 0).any()  # never-compared crops last


def test_filter_and_sort_100k_rows_stay_interactive(qtbot: Any) -> None:
    q = _columns(100_000)
    w = QueueWidget(thumbnails=False)
    qtbot.addWidget(w)
    w.resize(600, 800)
    w.show()
    t0 = time.perf_counter()
    w.set_columns(q)
    times = {"load": time.perf_counter() - t0}
    for name, act in [("status", lambda: w.status_box.setCurrentIndex(w.status_box.findText("pending"))),
                      ("class", lambda: w.class_box.setCurrentIndex(w.class_box.findText("crack"))),
                      ("iou", lambda: w.iou_max.setValue(0.4)),
                      ("vlm", lambda: w.vlm_box.setCurrentIndex(w.vlm_box.findText("not judged"))),
                      ("disagree", lambda: w.disagree_box.setChecked(True)),
                      ("sort", lambda: w.table.horizontalHeader().setSortIndicator(COL_IOU, Qt.SortOrder.DescendingOrder))]:
        t0 = time.perf_counter()
        act()
        w.table.viewport().repaint()
        times[name] = time.perf_counter() - t0
    # the bench (bench/bench_gui.py) holds the 100 ms line on a quiet machine; CI's 2 busy cores get slack here
    assert max(times.values()) < 0.5, times
    expected = _reference(q, w.current_filter())
    assert set(int(x) for x in w.model.shown_sample_ids()) == expected
    shown_iou = w.model.q.iou[w.model.order]
    assert (np.diff(shown_iou[~np.isnan(shown_iou)]) <= 0).all()  # sorted by IoU, descending


def test_human_verdict_updates_row_in_place(qtbot: Any) -> None:
    q = _columns(50)
    m = QueueModel(thumbnails=False)
    m.set_columns(q)
    sid = m.sample_id_at(0)
    m.set_human(sid, "corrected")
    assert m.data(m.index(0, COL_HUMAN)) == "corrected"
    assert m.counts()["reviewed"] == int((q.human >= 0).sum())
    m.set_human(sid, None)
    assert m.data(m.index(0, COL_HUMAN)) in STATUSES


def test_thumbnails_load_lazily_in_a_worker(qtbot: Any, magnetic_tile_pairs: list[tuple[Path, Path, str]]) -> None:
    paths = [str(p[0]) for p in magnetic_tile_pairs[:5]]
    q = _columns(5)
    q.path = np.array(paths, dtype=object)
    m = QueueModel(thumbnails=True)
    m.set_columns(q)
    idx = m.index(0, COL_THUMB)
    assert m.data(idx, Qt.ItemDataRole.DecorationRole) is None  # not loaded on the GUI thread
    with qtbot.waitSignal(m.dataChanged, timeout=10_000):
        pass
    qtbot.waitUntil(lambda: m.data(idx, Qt.ItemDataRole.DecorationRole) is not None, timeout=10_000)
    pm = m.data(idx, Qt.ItemDataRole.DecorationRole)
    assert max(pm.width(), pm.height()) == 44
    m.close()


def test_load_queue_reads_every_sample_from_the_store(tile_project: Any) -> None:
    root, ids = tile_project
    with Project.open(root) as p:
        q = load_queue(p.db)
    assert sorted(int(x) for x in q.sample_id) == ids["all"]
    rows = {int(s): i for i, s in enumerate(q.sample_id)}
    for sid in ids["plain"]:
        assert np.isnan(q.iou[rows[sid]]) and not q.flagged[rows[sid]]
    assert {int(s) for s in q.sample_id[q.flagged]} == set(ids["flagged"])
    assert q.vlm[rows[ids["vlm"][0]]] == VERDICT_CODE["teacher_better"]
    assert q.vlm[rows[ids["vlm"][1]]] == VERDICT_CODE["both_bad"]
    assert abs(float(q.vlm_conf[rows[ids["vlm"][0]]]) - 0.8) < 1e-6
    assert (q.human == -1).all()


def test_sorting_by_hardness_follows_the_domain_order(qtbot: Any, tmp_path: Path,
                                                      magnetic_tile_pairs: list[tuple[Path, Path, str]]) -> None:
    """A real store (10 compared crops with spread prediction scores, 5 plain ones): clicking the hardness header
    (descending) shows the compared crops in review.queue_order's "hardness" order, the plain crops after them;
    the column shows review.queue_order.hardness of each row."""
    from sqlalchemy import select

    from gui_helpers import build_tile_project
    from review.queue_order import hardness, ordered_queue, ordered_sample_ids
    from store.schema import Prediction

    root = tmp_path / "project"
    ids = build_tile_project(root, magnetic_tile_pairs)
    rng = np.random.default_rng(5)
    with Project.open(root) as p:
        with p.db.session() as s:
            for pred in s.scalars(select(Prediction).order_by(Prediction.id)):
                pred.score = float(rng.uniform(0.05, 1.0))
        q = load_queue(p.db)
        with p.db.session() as s:
            expected = ordered_sample_ids(s, "hardness", flagged_only=False)
            rows = {r.sample_id: r for r in ordered_queue(s, "hardness", flagged_only=False)}
            disagreement = ordered_sample_ids(s, "disagreement", flagged_only=False)
    assert sorted(expected) == ids["predicted"] and expected != disagreement

    w = QueueWidget(thumbnails=False)
    qtbot.addWidget(w)
    w.set_columns(q)
    assert w.model.headerData(COL_HARD, Qt.Orientation.Horizontal) == "hardness"
    w.table.horizontalHeader().setSortIndicator(COL_HARD, Qt.SortOrder.DescendingOrder)
    shown = [int(x) for x in w.model.shown_sample_ids()]
    assert shown[:len(expected)] == expected
    assert sorted(shown[len(expected):]) == ids["plain"]  # never compared: last
    for row, sid in enumerate(expected):
        r = rows[sid]
        h = hardness(r.iou_ts, r.teacher_score, r.student_score)
        assert w.model.data(w.model.index(row, COL_HARD)) == f"{h:.3f}"
    assert w.model.data(w.model.index(len(expected), COL_HARD)) == ""
    # ascending: the reverse for the compared crops, plain crops still last
    w.table.horizontalHeader().setSortIndicator(COL_HARD, Qt.SortOrder.AscendingOrder)
    shown = [int(x) for x in w.model.shown_sample_ids()]
    h = [rows[sid] for sid in shown[:len(expected)]]
    vals = [hardness(r.iou_ts, r.teacher_score, r.student_score) for r in h]
    assert vals == sorted(vals) and sorted(shown[len(expected):]) == ids["plain"]
