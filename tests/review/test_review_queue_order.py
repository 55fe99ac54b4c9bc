"""Queue order by expected gain (review.queue_order): the hardness formula, the three orders over a real project
store, and `maskbench queue --order`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from review.flagging import flag
from review.queue_order import ORDERS, hardness, ordered_queue, ordered_sample_ids
from review.queue_rows import review_queue
from review.verdicts import VerdictError, record_verdict
from store.project import Project
from store.schema import Disagreement, Prediction, Sample

from review_helpers import build_project, copy_crops


def test_hardness_formula() -> None:
    assert hardness(0.2, 0.5, 0.9) == pytest.approx(0.8 * 0.5 / (1 - 0.45))
    assert hardness(1.0, 0.1, 0.9) == 0.0  # identical masks: nothing for a verdict to change
    assert hardness(0.0, 1.0, 0.3) == 0.0  # a certain teacher is never overturned
    assert hardness(0.0, 0.0, 0.3) == 1.0  # a worthless teacher always is
    assert hardness(0.4, 1.0, 1.0) == pytest.approx(0.6 * 0.5)  # two certain models disagreeing: a coin flip
    assert hardness(0.4, None, None) == pytest.approx(0.6 * 0.5 / 0.75)  # missing scores count as 0.5
    assert hardness(0.4, 1.3, -0.2) == hardness(0.4, 1.0, 0.0)  # scores clipped to 0..1
    # an unsure teacher against a confident student beats the reverse, at the same disagreement
    assert hardness(0.3, 0.4, 0.95) > hardness(0.3, 0.7, 0.7) > hardness(0.3, 0.95, 0.4)
    # arrays: elementwise, the same numbers as the scalars
    rng = np.random.default_rng(0)
    iou, st, ss = rng.random(50), rng.random(50), rng.random(50)
    h = hardness(iou, st, ss)
    assert isinstance(h, np.ndarray) and h.shape == (50,)
    assert h.tolist() == [hardness(float(a), float(b), float(c)) for a, b, c in zip(iou, st, ss)]
    assert isinstance(hardness(0.5, 0.5, 0.5), float)


@pytest.fixture
def project(tmp_path: Path, magnetic_tile_pairs: list) -> Any:
    """15 real crops, mixed teacher/student perturbations (some flagged, some not), prediction scores spread over
    0..1 so that hardness and disagreement orders differ."""
    data = copy_crops(magnetic_tile_pairs, tmp_path / "data", per_class=3,
                      classes=("MT_Blowhole", "MT_Break", "MT_Crack", "MT_Fray", "MT_Uneven"))
    p, _ = build_project(tmp_path / "p", data, scheme="mixed")
    rng = np.random.default_rng(7)
    with p.db.session() as s:
        for pred in s.scalars(select(Prediction).order_by(Prediction.id)):
            pred.score = float(rng.uniform(0.05, 1.0))
    flag(p.db, 0.15, workers=1)
    yield p
    p.close()


def _reference_hardness(p: Project, flagged_only: bool = True) -> list[int]:
    """Hardness order computed row by row in plain Python from the stored records."""
    out = []
    with p.db.session() as s:
        latest = {}
        for d in s.scalars(select(Disagreement).order_by(Disagreement.id)):
            latest[d.sample_id] = d
        for sid, d in latest.items():
            if flagged_only and not d.flagged:
                continue
            st = min(1.0, max(0.0, s.get(Prediction, d.teacher_prediction_id).score))
            ss = min(1.0, max(0.0, s.get(Prediction, d.student_prediction_id).score))
            h = (1 - d.iou_ts) * (1 - st) / (1 - st * ss)
            out.append((-h, d.iou_ts, sid))
    return [sid for _h, _i, sid in sorted(out)]


def test_three_orders_over_the_store(project: Project) -> None:
    with project.db.session() as s:
        flagged = [r.sample_id for r in review_queue(s)]  # today's order: lowest IoU first
        all_rows = [r.sample_id for r in review_queue(s, flagged_only=False)]
        assert 3 <= len(flagged) < len(all_rows)
        assert ordered_sample_ids(s, "disagreement") == flagged
        hard = ordered_sample_ids(s, "hardness")
        assert hard == _reference_hardness(project) and sorted(hard) == sorted(flagged)
        assert hard != flagged  # the scores matter
        assert ordered_sample_ids(s, "hardness", flagged_only=False) == _reference_hardness(project, False)
        r0, r0b, r1 = (ordered_sample_ids(s, "random", seed=k) for k in (0, 0, 1))
        assert r0 == r0b and sorted(r0) == sorted(flagged) and r0 != r1
        cls = s.scalar(select(Disagreement.sample_id).where(Disagreement.flagged.is_(True)))
        c = s.get(Sample, cls).defect_class
        by_class = ordered_sample_ids(s, "hardness", defect_class=c)
        assert by_class and all(s.get(Sample, sid).defect_class == c for sid in by_class)
        assert by_class == [sid for sid in hard if sid in set(by_class)]
        rows = ordered_queue(s, "hardness", limit=2)
        assert [r.sample_id for r in rows] == hard[:2] and rows[0].teacher_score is not None
        with pytest.raises(VerdictError, match="disagreement, hardness, random"):
            ordered_sample_ids(s, "easiest")
    record_verdict(project.db, hard[0], "teacher_better", "ana")
    with project.db.session() as s:
        assert ordered_sample_ids(s, "hardness", status="pending") == hard[1:]
        assert ordered_sample_ids(s, "hardness", status="reviewed") == hard[:1]
    assert ORDERS == ("disagreement", "hardness", "random")


def _listed(out: str) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(r"^\s+(\d+) ", out, re.M)]


def test_queue_cli_order(project: Project, capsys) -> None:
    from app.cli import main

    root = str(project.root)
    with project.db.session() as s:
        expected = {o: ordered_sample_ids(s, o, seed=3) for o in ORDERS}
    assert main(["queue", "--project", root, "--status", "all", "--limit", "100"]) == 0
    out = capsys.readouterr().out
    assert _listed(out) == expected["disagreement"] and "order: disagreement" in out  # default unchanged
    assert main(["queue", "--project", root, "--status", "all", "--limit", "100", "--order", "hardness"]) == 0
    out = capsys.readouterr().out
    assert _listed(out) == expected["hardness"] and "hard" in out.splitlines()[1]
    assert main(["queue", "--project", root, "--order", "random", "--seed", "3", "--status", "all"]) == 0
    assert _listed(capsys.readouterr().out) == expected["random"]
    assert main(["queue", "--project", root, "--order", "hardness", "--limit", "2"]) == 0
    assert _listed(capsys.readouterr().out) == expected["hardness"][:2]
    assert main(["queue", "--project", root, "--order", "hard"]) == 1
    err = capsys.readouterr().err
    assert "--order must be one of disagreement, hardness, random" in err and err.strip().count("\n") == 0
