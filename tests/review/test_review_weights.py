"""Distillation weights follow the policy of docs/weights.md: human verdicts set it, VLM verdicts only scale
towards it by confidence x trust, corrected masks become the Dice target and make the sample hard."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from review.verdicts import record_verdict, undo_last
from review.weights import SampleWeights, WeightPolicy, WeightsError, sample_weights
from store.project import Project
from store.schema import Sample

from review_helpers import build_project, copy_crops


@pytest.fixture
def project(tmp_path: Path, magnetic_tile_pairs: list) -> Any:
    data = copy_crops(magnetic_tile_pairs, tmp_path / "data", per_class=4, classes=("MT_Blowhole", "MT_Crack"))
    # one crop without a mask: no ground truth, so no Dice target
    img = next(i for i, _m, c in magnetic_tile_pairs if c == "MT_Fray")
    (data / "MT_Fray").mkdir()
    shutil.copy(img, data / "MT_Fray")
    p, _ = build_project(tmp_path / "p", data, scheme="dilate")
    yield p
    p.close()


def _ids(p: Project) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    with p.db.session() as s:
        for sid, cls in s.execute(select(Sample.id, Sample.defect_class).order_by(Sample.id)):
            out.setdefault(cls, []).append(sid)
    return out


def _w(ws: dict[int, SampleWeights], sid: int) -> tuple[float, float, float, bool]:
    w = ws[sid]
    return (w.feature, w.soft, w.dice, w.hard)


def test_policy_per_verdict(project: Project) -> None:
    ids = _ids(project)
    (b0, b1, b2, b3), (c0, c1, c2, c3), (fray,) = ids["blowhole"], ids["crack"], ids["fray"]
    db = project.db
    record_verdict(db, b0, "teacher_better", "ana")
    record_verdict(db, b1, "student_better", "ana")
    record_verdict(db, b2, "both_bad", "ana")
    record_verdict(db, b3, "both_good", "ana")
    record_verdict(db, c0, "student_better", "vlm:m", author_kind="vlm", confidence=0.8)
    record_verdict(db, c1, "both_bad", "vlm:m", author_kind="vlm", confidence=1.0)
    record_verdict(db, c2, "uncertain", "vlm:m", author_kind="vlm")
    record_verdict(db, c3, "both_bad", "vlm:m", author_kind="vlm", confidence=0.9)
    record_verdict(db, c3, "teacher_better", "ana")  # the human wins over the VLM
    ws = sample_weights(project)
    assert _w(ws, b0) == (1, 1, 1, False) and ws[b0].source == "human" and ws[b0].dice_target == "ground_truth"
    assert _w(ws, b1) == (0.3, 0.3, 1, False)
    assert _w(ws, b2) == (0, 0, 1, False)
    assert _w(ws, b3) == (1, 1, 1, False)
    assert _w(ws, c0) == pytest.approx((1 + 0.5 * 0.8 * (0.3 - 1), 1 + 0.5 * 0.8 * (0.3 - 1), 1, False))
    assert ws[c0].source == "vlm" and ws[c0].confidence == 0.8 and ws[c0].verdict == "student_better"
    assert _w(ws, c1) == pytest.approx((0.5, 0.5, 1, False))
    assert _w(ws, c2) == (1, 1, 1, False) and ws[c2].verdict == "uncertain"
    assert _w(ws, c3) == (1, 1, 1, False) and ws[c3].source == "human"
    assert _w(ws, fray) == (1, 1, 0, False) and ws[fray].dice_target is None  # no ground truth, no Dice
    assert all(not w.hard for w in ws.values())  # the VLM never makes a sample hard

    # both bad, then a corrected mask: the corrected mask is the Dice target and the sample is hard (x2)
    with db.session() as s:
        smp = s.get(Sample, b2)
        fixed = np.zeros((smp.height, smp.width), bool)
    fixed[2:10, 2:10] = True
    v = record_verdict(db, b2, "corrected", "ana", corrected_mask=fixed)
    ws = sample_weights(project)
    assert _w(ws, b2) == (2, 0, 2, True)
    assert ws[b2].dice_target == "corrected" and ws[b2].dice_mask_id == v.corrected_mask_id
    undo_last(db, "ana")  # undoing the correction brings both-bad back
    assert _w(sample_weights(project), b2) == (0, 0, 1, False)


def test_policy_comes_from_project_yaml(project: Project) -> None:
    ids = _ids(project)
    b0, c0 = ids["blowhole"][0], ids["crack"][0]
    record_verdict(project.db, b0, "student_better", "ana")
    record_verdict(project.db, c0, "both_bad", "vlm:m", author_kind="vlm", confidence=0.5)
    project.config["weights"].update({"student_better_teacher_scale": 0.5, "vlm_trust": 1.0})
    ws = sample_weights(project)
    assert _w(ws, b0) == (0.5, 0.5, 1, False)
    assert _w(ws, c0) == pytest.approx((0.5, 0.5, 1, False))
    project.config["weights"]["vlm_trust"] = 0.0  # trust 0: the VLM changes nothing
    assert _w(sample_weights(project), c0) == (1, 1, 1, False)
    project.config["weights"]["vlm_trust"] = 2.0
    with pytest.raises(WeightsError, match="vlm_trust"):
        sample_weights(project)
    assert WeightPolicy.from_config({}).hard_sample_scale == 2.0


def test_weights_cli_writes_csv(project: Project, tmp_path: Path, capsys) -> None:
    from app.cli import main

    ids = _ids(project)
    record_verdict(project.db, ids["blowhole"][0], "student_better", "ana")
    record_verdict(project.db, ids["crack"][0], "both_bad", "vlm:m", author_kind="vlm", confidence=0.6)
    out = tmp_path / "weights.csv"
    assert main(["weights", "--project", str(project.root), "--out", str(out)]) == 0
    assert "wrote 9 samples" in capsys.readouterr().out
    rows = {int(r["sample_id"]): r for r in csv.DictReader(out.open())}
    assert len(rows) == 9
    r = rows[ids["blowhole"][0]]
    assert (r["feature"], r["soft"], r["dice"], r["hard"], r["source"]) == ("0.3", "0.3", "1", "0", "human")
    r = rows[ids["crack"][0]]
    assert float(r["feature"]) == pytest.approx(1 - 0.5 * 0.6) and r["source"] == "vlm" and r["confidence"] == "0.6"
    assert main(["weights", "--project", str(project.root), "--out", str(tmp_path / "no" / "w.csv")]) == 1
