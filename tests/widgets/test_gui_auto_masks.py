"""Automatic masks (U) on the crop on screen: found in a worker on the cached embedding, stepped through, edited
and saved as a correction like any other."""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QPointF, Qt
from sqlalchemy import select

from inference.batch import AutoOptions
from store import rle
from store.project import Project
from store.schema import Mask, MaskSource, Verdict, VerdictAuthorKind, VerdictKind


def _key(qtbot: Any, win: Any, key: Qt.Key) -> None:
    qtbot.keyClick(win.review.view, key)


def test_auto_masks_step_edit_and_save_a_correction(qtbot: Any, window: Any, tile_project: Any) -> None:
    root, ids = tile_project
    rv = window.review
    corr = rv.correction
    assert corr.auto_options == AutoOptions()  # the CLI's defaults (`predict --prompts auto`)
    # the random-weights test student scores low: loose filters, and a small grid to keep it quick on CPU
    corr.auto_options = AutoOptions(points_per_side=6, min_score=0.0, min_stability=0.0)
    encoder_passes: list[str] = []  # image keys (sha256) of the embedder calls: prefetch embeds the next crops
    embed = corr.embedder

    def counting(seg: Any, key: str, image: np.ndarray) -> Any:
        encoder_passes.append(key)
        return embed(seg, key, image)

    corr.embedder = counting
    sid = ids["plain"][1]  # no prediction at all: a crop to annotate from nothing
    assert rv.queue.select_sample(sid)
    qtbot.waitUntil(lambda: rv.current is not None and rv.current.sample_id == sid, timeout=30_000)
    qtbot.waitUntil(lambda: corr.has_embedding(sid), timeout=60_000)
    sha = rv.current.sha256
    assert encoder_passes.count(sha) <= 1
    # and any encoder call on the segmenter itself (generate_masks would embed there without an embedding)
    seg = corr._segmenters["student"]  # noqa: SLF001 - the loaded segmenter the controller uses
    embed_batch = seg.embed_batch

    def counting_batch(images: Any, *a: Any, **k: Any) -> Any:
        encoder_passes.extend(sha for im in images if np.array_equal(im, rv.current.image))
        return embed_batch(images, *a, **k)

    seg.embed_batch = counting_batch
    passes = encoder_passes.count(sha)

    with qtbot.waitSignal(corr.autoMasksReady, timeout=120_000) as ready:
        _key(qtbot, window, Qt.Key.Key_U)
    assert ready.args[:2] == [sid, "student"]
    found = corr.auto_candidates()
    assert found is not None and len(found) == ready.args[2] >= 2
    assert encoder_passes.count(sha) == passes  # the cached embedding was used: no second encoder pass
    scores = [c.score for c in found]
    assert scores == sorted(scores, reverse=True)
    # the best candidate is on screen as a one-point correction: its grid point and its mask
    assert corr.points == [found[0].point] and corr.labels == [1]
    assert np.array_equal(corr.current_mask(), found[0].mask)
    assert np.array_equal(rv.view.masks["corrected"], found[0].mask)
    assert "automatic mask 1/" in rv.correction_label.text()

    _key(qtbot, window, Qt.Key.Key_U)  # next candidate, no new search
    assert corr.points == [found[1].point]
    assert np.array_equal(corr.current_mask(), found[1].mask)
    assert "automatic mask 2/" in rv.correction_label.text()

    # touch it up with the brush: a disc where the candidate has no mask
    h, w = rv.current.image.shape[:2]
    ys, xs = np.nonzero(~found[1].mask)
    x, y = int(xs[len(xs) // 2]), int(ys[len(ys) // 2])
    _key(qtbot, window, Qt.Key.Key_D)
    rv.brush_spin.setValue(3)
    view = rv.view
    pos = view.mapFromScene(QPointF(x + 0.5, y + 0.5))
    qtbot.mousePress(view.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    qtbot.mouseRelease(view.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    expected = corr.current_mask()
    assert expected[y, x] and np.array_equal(expected & ~found[1].mask, expected ^ found[1].mask)
    assert expected.sum() > found[1].mask.sum()

    _key(qtbot, window, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: rv.writes_pending == 0, timeout=30_000)
    assert rv.current_id != sid  # moved on
    with Project.open(root) as p, p.db.session() as s:
        [v] = s.scalars(select(Verdict).where(Verdict.sample_id == sid)).all()
        assert (v.author_kind, v.verdict) == (VerdictAuthorKind.HUMAN, VerdictKind.CORRECTED)
        m = s.get(Mask, v.corrected_mask_id)
        assert m.source == MaskSource.CORRECTED and (h, w) == expected.shape
        assert np.array_equal(rle.decode(m.rle), expected)


def test_auto_masks_with_the_teacher_wait_for_its_embedding(qtbot: Any, window: Any, tile_project: Any,
                                                             teacher_checkpoint: Any) -> None:
    """With the teacher chosen (M) and its embedding not computed yet, U starts the search when the embedding
    arrives: one encoder pass in all, and the candidates are the teacher's."""
    from inference.registry import add_model

    root, ids = tile_project
    with Project.open(root) as p:
        add_model(p, "teacher", teacher_checkpoint, config="sam2.1_hiera_t", image_size=256, name="sam2-random")
    rv = window.review
    corr = rv.correction
    corr.auto_options = AutoOptions(points_per_side=4, min_score=0.0, min_stability=0.0)
    sid = ids["plain"][2]
    assert rv.queue.select_sample(sid)
    qtbot.waitUntil(lambda: rv.current is not None and rv.current.sample_id == sid, timeout=30_000)
    qtbot.waitUntil(lambda: corr.has_embedding(sid, "student"), timeout=60_000)  # shown with the student first
    passes: list[tuple[str, str]] = []
    embed = corr.embedder

    def counting(seg: Any, key: str, image: np.ndarray) -> Any:
        passes.append((type(seg).__name__, key))
        return embed(seg, key, image)

    corr.embedder = counting
    _key(qtbot, window, Qt.Key.Key_M)
    assert corr.kind == "teacher"
    with qtbot.waitSignal(corr.autoMasksReady, timeout=180_000) as ready:
        _key(qtbot, window, Qt.Key.Key_U)
        assert corr.auto_candidates() is None  # nothing yet: the GUI did not wait for it
    assert ready.args[:2] == [sid, "teacher"]
    assert [k for _seg, k in passes].count(rv.current.sha256) == 1 and corr.has_embedding(sid, "teacher")
    found = corr.auto_candidates()
    assert found is not None and len(found) == ready.args[2]
    if found:
        assert np.array_equal(corr.current_mask(), found[0].mask)
    # the student's candidates are another search: switching back shows none until U
    _key(qtbot, window, Qt.Key.Key_M)
    assert corr.kind == "student" and corr.auto_candidates() is None
