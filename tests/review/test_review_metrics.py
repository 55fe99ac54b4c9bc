"""Metrics and flagging: IoU/Dice/boundary F with the empty cases, the 1 - threshold rule, stored records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from review.flagging import FlagError, flag
from review.metrics import boundary_f, dice, iou, is_flagged, pair_metrics
from store.project import Project
from store.schema import Disagreement, ModelKind

from review_helpers import add_model, add_prediction, build_project, copy_crops, perturb
from review_helpers import iou as ref_iou


def _disk(h: int, w: int, cx: int, cy: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_empty_masks_agree_and_one_empty_disagrees() -> None:
    e = np.zeros((40, 50), bool)
    m = _disk(40, 50, 20, 20, 8)
    assert iou(e, e) == dice(e, e) == boundary_f(e, e) == 1.0
    assert iou(e, m) == dice(e, m) == boundary_f(e, m) == 0.0
    assert not is_flagged(iou(e, e), 0.15)
    pm = pair_metrics(e, e, e)
    assert pm.iou_ts == pm.iou_teacher_gt == pm.dice_student_gt == 1.0


def test_iou_dice_and_boundary_values() -> None:
    a = np.zeros((10, 10), bool)
    a[:, :5] = True
    b = np.zeros((10, 10), bool)
    b[:, 2:7] = True
    assert iou(a, b) == pytest.approx(30 / 70)
    assert dice(a, b) == pytest.approx(60 / 100)
    big = _disk(200, 200, 100, 100, 50)
    assert boundary_f(big, big) == 1.0
    # a 1-px larger disk is within the tolerance (ceil(0.008 * diagonal) = 3 px): contour matches
    assert boundary_f(big, _disk(200, 200, 100, 100, 51)) == 1.0
    # 20 px shifted: most contour points are far away
    assert boundary_f(big, _disk(200, 200, 120, 100, 50)) < 0.3
    with pytest.raises(ValueError):
        iou(a, np.zeros((5, 5), bool))


def test_threshold_rule_is_one_minus_threshold() -> None:
    assert is_flagged(0.84, 0.15) and not is_flagged(0.86, 0.15)
    assert is_flagged(0.5, 0.6) is False


def test_flag_stores_records_per_class_and_skips_unchanged(tmp_path: Path, magnetic_tile_pairs: list) -> None:
    data = copy_crops(magnetic_tile_pairs, tmp_path / "data", per_class=3,
                      classes=("MT_Blowhole", "MT_Free", "MT_Uneven"))
    project, truth = build_project(tmp_path / "p", data)
    with project:
        report = flag(project.db, 0.15)
        assert report.pairs_total == 9 and report.written == 9 and not report.bad
        assert report.flagged["free"] == 0  # empty vs empty is agreement
        with project.db.session() as s:
            rows = {d.sample_id: d for d in s.scalars(select(Disagreement))}
        for sid, t in truth.items():
            d = rows[sid]
            assert d.iou_ts == pytest.approx(ref_iou(t["teacher"], t["student"]))
            assert d.flagged == (d.iou_ts < 0.85)
            assert d.iou_teacher_gt is not None and d.threshold == 0.15
        assert sum(report.flagged.values()) == sum(d.flagged for d in rows.values())

        again = flag(project.db, 0.15)
        assert again.written == 0 and again.unchanged == 9 and again.flagged == report.flagged
        # a new threshold writes new records with the new decision; the latest one counts
        loose = flag(project.db, 0.9)
        assert loose.written == 9 and loose.flagged_total <= report.flagged_total


def test_flag_uses_latest_prediction_of_active_models(tmp_path: Path, magnetic_tile_pairs: list) -> None:
    data = copy_crops(magnetic_tile_pairs, tmp_path / "data", per_class=1, classes=("MT_Crack",))
    project, truth = build_project(tmp_path / "p", data, scheme="dilate")
    with project:
        (sid, t), = truth.items()
        assert flag(project.db, 0.15).flagged_total == 1
        # a newer student that matches the teacher: not flagged any more
        new_student = add_model(project, ModelKind.STUDENT, "student-v2")
        add_prediction(project, sid, new_student, ModelKind.STUDENT, t["gt"])
        assert flag(project.db, 0.15).flagged_total == 0
        # an inactive model's prediction is ignored even when newer
        old = add_model(project, ModelKind.STUDENT, "student-old", active=False)
        add_prediction(project, sid, old, ModelKind.STUDENT, perturb(t["gt"], "shift"))
        rep = flag(project.db, 0.15)
        assert rep.flagged_total == 0 and rep.unchanged == 1


def test_flag_without_predictions_is_a_user_error(tmp_path: Path, magnetic_tile_pairs: list) -> None:
    from store.ingest import ingest

    data = copy_crops(magnetic_tile_pairs, tmp_path / "data", per_class=1, classes=("MT_Crack",))
    with Project.create(tmp_path / "p") as project:
        ingest(project.db, data)
        with pytest.raises(FlagError, match="predict"):
            flag(project.db)


def test_flag_cli_prints_counts_per_class(tmp_path: Path, magnetic_tile_pairs: list, capsys) -> None:
    from app.cli import main

    data = copy_crops(magnetic_tile_pairs, tmp_path / "data", per_class=2, classes=("MT_Crack", "MT_Free"))
    project, _ = build_project(tmp_path / "p", data, scheme="dilate")
    project.close()
    assert main(["flag", "--project", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "crack" in out and "free" in out and "flagged 2 of 4" in out
