"""Distillation weights follow the policy of docs/weights.md: human verdicts set it, VLM verdicts only scale
towards it by confidence x trust, corrected masks become the Dice target and make the sample hard, and on crops
without ground truth a human verdict promotes the mask it approved to the Dice target. An invalid weights section
is a one-line error."""

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


# --------------------------------------------------------------------------------------------------------------------
# Approved masks as Dice targets (docs/weights.md, "Dice target")


@pytest.fixture
def unlabelled_project(tmp_path: Path, magnetic_tile_pairs: list) -> Any:
    """2 labelled crack crops plus 5 fray crops ingested WITHOUT masks; every crop has a teacher and a student
    prediction (on the fray crops: teacher = the mask file we withheld, student = it dilated) and a disagreement
    record."""
    from review.flagging import flag
    from store.images import load_mask
    from store.schema import ModelKind, ModelRecord

    from review_helpers import add_prediction, perturb

    data = copy_crops(magnetic_tile_pairs, tmp_path / "data", per_class=2, classes=("MT_Crack",))
    fray = [(i, m) for i, m, c in magnetic_tile_pairs if c == "MT_Fray"][:5]
    (data / "MT_Fray").mkdir()
    for img, _m in fray:
        shutil.copy(img, data / "MT_Fray")
    p, _ = build_project(tmp_path / "p", data, scheme="dilate")
    with p.db.session() as s:
        models = {m.kind: m.id for m in s.scalars(select(ModelRecord))}
        by_name = {Path(smp.path).name: smp.id for smp in s.scalars(select(Sample))}
    for img, mask in fray:
        withheld = load_mask(mask)
        sid = by_name[img.name]
        add_prediction(p, sid, models[ModelKind.TEACHER], ModelKind.TEACHER, withheld)
        add_prediction(p, sid, models[ModelKind.STUDENT], ModelKind.STUDENT, perturb(withheld, "dilate"))
    flag(p.db, 0.15, workers=1)
    yield p
    p.close()


def _pair_masks(p: Project, sid: int) -> tuple[int, int]:
    """(teacher mask id, student mask id) of the sample's latest disagreement record."""
    from store.schema import Disagreement, Prediction

    with p.db.session() as s:
        d = s.scalar(select(Disagreement).where(Disagreement.sample_id == sid).order_by(Disagreement.id.desc()))
        return (s.get(Prediction, d.teacher_prediction_id).mask_id, s.get(Prediction, d.student_prediction_id).mask_id)


def _target(ws: dict[int, SampleWeights], sid: int) -> tuple[str | None, int | None, float]:
    return ws[sid].dice_target, ws[sid].dice_mask_id, ws[sid].dice


def test_human_verdicts_promote_approved_masks_on_unlabelled_crops(unlabelled_project: Project) -> None:
    from review.training_set import counts, training_samples
    from store.schema import Mask

    p, db = unlabelled_project, unlabelled_project.db
    ids = _ids(p)
    (c0, c1), (u0, u1, u2, u3, u4) = ids["crack"], ids["fray"]
    ws = sample_weights(p)
    assert all(_target(ws, u) == (None, None, 0.0) for u in ids["fray"])  # unlabelled: no Dice before review
    record_verdict(db, u0, "teacher_better", "ana")
    record_verdict(db, u1, "both_good", "ana")
    record_verdict(db, u2, "student_better", "ana")
    record_verdict(db, u3, "both_bad", "ana")
    record_verdict(db, u4, "teacher_better", "vlm:m", author_kind="vlm", confidence=1.0)
    record_verdict(db, c0, "student_better", "ana")  # ingested ground truth wins over the approved student mask
    record_verdict(db, c1, "teacher_better", "vlm:m", author_kind="vlm", confidence=0.9)
    ws = sample_weights(p)
    assert _target(ws, u0) == ("approved_teacher", _pair_masks(p, u0)[0], 1.0) and _w(ws, u0) == (1, 1, 1, False)
    assert _target(ws, u1) == ("approved_teacher", _pair_masks(p, u1)[0], 1.0)
    assert _target(ws, u2) == ("approved_student", _pair_masks(p, u2)[1], 1.0) and _w(ws, u2) == (0.3, 0.3, 1, False)
    assert _target(ws, u3) == (None, None, 0.0) and _w(ws, u3) == (0, 0, 0, False)  # both bad approves nothing
    assert _target(ws, u4) == (None, None, 0.0) and ws[u4].source == "vlm"  # the VLM never promotes
    with db.session() as s:
        gt_c0 = s.scalar(select(Mask.id).where(Mask.sample_id == c0, Mask.source == "ground_truth"))
    assert _target(ws, c0) == ("ground_truth", gt_c0, 1.0) and _w(ws, c0) == (0.3, 0.3, 1, False)
    assert ws[c1].dice_target == "ground_truth"

    # the training seam sees the approved masks as labelled crops with that mask as the target
    with db.session() as s:
        teacher_rle = s.get(Mask, _pair_masks(p, u0)[0]).rle
    samples = {x.sample_id: x for x in training_samples(p, ("train", "val", "test"), weights=ws)}
    assert samples[u0].labelled and samples[u0].target_rle == teacher_rle and samples[u0].prompt_points is None
    assert not samples[u3].labelled and samples[u3].prompt_points == ((1.0, 1.0),)
    c = counts(samples.values())
    assert (c.labelled, c.unlabelled, c.approved, c.corrected, c.verdict_weighted) == (5, 2, 3, 0, 7)


def test_undoing_the_verdict_removes_the_promotion(unlabelled_project: Project) -> None:
    p, db = unlabelled_project, unlabelled_project.db
    u0, u1 = _ids(p)["fray"][:2]
    t_mask, s_mask = _pair_masks(p, u0)
    record_verdict(db, u0, "teacher_better", "ana")
    assert _target(sample_weights(p), u0) == ("approved_teacher", t_mask, 1.0)
    undo_last(db, "ana")
    assert _target(sample_weights(p), u0) == (None, None, 0.0)
    # a later verdict replaces the approval; undoing it brings the earlier one back
    record_verdict(db, u0, "teacher_better", "ana")
    record_verdict(db, u0, "student_better", "bo")
    assert _target(sample_weights(p), u0) == ("approved_student", s_mask, 1.0)
    undo_last(db, "bo")
    assert _target(sample_weights(p), u0) == ("approved_teacher", t_mask, 1.0)
    record_verdict(db, u0, "both_bad", "bo")  # a later "both bad" withdraws it
    assert _target(sample_weights(p), u0) == (None, None, 0.0)
    # undoing a VLM verdict never touches a human approval
    record_verdict(db, u1, "both_good", "ana")
    record_verdict(db, u1, "both_bad", "vlm:m", author_kind="vlm", confidence=1.0)
    undo_last(db, "vlm:m", author_kind="vlm")
    assert sample_weights(p)[u1].dice_target == "approved_teacher"


def test_a_later_correction_wins_over_an_approved_mask(unlabelled_project: Project) -> None:
    p, db = unlabelled_project, unlabelled_project.db
    u0 = _ids(p)["fray"][0]
    t_mask, _ = _pair_masks(p, u0)
    record_verdict(db, u0, "teacher_better", "ana")
    with db.session() as s:
        smp = s.get(Sample, u0)
        fixed = np.zeros((smp.height, smp.width), bool)
    fixed[3:12, 4:20] = True
    v = record_verdict(db, u0, "corrected", "bo", corrected_mask=fixed)
    ws = sample_weights(p)
    assert _target(ws, u0) == ("corrected", v.corrected_mask_id, 2.0) and _w(ws, u0) == (2, 0, 2, True)
    # the correction stays the target whatever verdict follows, until it is undone
    record_verdict(db, u0, "teacher_better", "cy")
    assert sample_weights(p)[u0].dice_target == "corrected"
    undo_last(db, "cy")
    undo_last(db, "bo")
    assert _target(sample_weights(p), u0) == ("approved_teacher", t_mask, 1.0)


def test_the_approved_mask_is_the_one_reviewed(unlabelled_project: Project) -> None:
    """A re-prediction and re-flag after the verdict: the approval stays on the mask the reviewer saw; a new verdict
    on the new pair approves the new mask."""
    import time

    from review.flagging import flag
    from store import rle as rle_mod
    from store.schema import Mask, ModelKind, ModelRecord

    from review_helpers import add_prediction, perturb

    p, db = unlabelled_project, unlabelled_project.db
    u0 = _ids(p)["fray"][0]
    old_teacher, _ = _pair_masks(p, u0)
    record_verdict(db, u0, "teacher_better", "ana")
    time.sleep(0.01)
    with db.session() as s:
        teacher = s.scalar(select(ModelRecord.id).where(ModelRecord.kind == ModelKind.TEACHER))
        old = rle_mod.decode(s.get(Mask, old_teacher).rle)
    add_prediction(p, u0, teacher, ModelKind.TEACHER, perturb(old, "erode"))
    assert flag(db, 0.15, workers=1).written == 1
    new_teacher, _ = _pair_masks(p, u0)
    assert new_teacher != old_teacher
    assert _target(sample_weights(p), u0) == ("approved_teacher", old_teacher, 1.0)
    time.sleep(0.01)
    record_verdict(db, u0, "both_good", "ana")
    assert _target(sample_weights(p), u0) == ("approved_teacher", new_teacher, 1.0)


# --------------------------------------------------------------------------------------------------------------------
# The weights section: one typed interface, clear one-line errors


@pytest.mark.parametrize("section, message", [
    ({"vlm_trst": 0.4}, "project.yaml weights: unknown key 'vlm_trst' (did you mean 'vlm_trust'?)"),
    ({"hard_scale": 3}, "unknown key 'hard_scale' (did you mean 'hard_sample_scale'?)"),
    ({"zzz": 1}, "unknown key 'zzz' (valid keys: student_better_teacher_scale, both_bad_teacher_scale, "
                 "hard_sample_scale, corrected_soft_scale, vlm_trust)"),
    ({"vlm_trust": "high"}, "project.yaml weights.vlm_trust must be a number (float), got str 'high'"),
    ({"hard_sample_scale": True}, "weights.hard_sample_scale must be a number (float), got bool True"),
    ({"both_bad_teacher_scale": [0.1]}, "weights.both_bad_teacher_scale must be a number (float), got list"),
    ({"corrected_soft_scale": -0.5}, "weights.corrected_soft_scale must be a finite number >= 0"),
    ({"vlm_trust": 1.5}, "weights.vlm_trust must be within 0..1"),
])
def test_invalid_weights_section_is_a_one_line_error(section: dict, message: str) -> None:
    with pytest.raises(WeightsError) as exc:
        WeightPolicy.from_config({"weights": section})
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_weights_section_types_and_errors_before_training(project: Project, tmp_path: Path, capsys) -> None:
    from app.cli import main
    from store.errors import UserError

    assert WeightPolicy.from_config({"weights": {"vlm_trust": 1, "hard_sample_scale": 3}}) == WeightPolicy(
        vlm_trust=1.0, hard_sample_scale=3.0)
    assert WeightPolicy.from_config({"weights": None}) == WeightPolicy()
    with pytest.raises(WeightsError, match="weights must be a mapping"):
        WeightPolicy.from_config({"weights": [1, 2]})
    project.config["weights"]["student_better_scale"] = 0.2
    with pytest.raises(UserError, match="did you mean 'student_better_teacher_scale'"):
        sample_weights(project)
    from review.training_set import training_samples

    with pytest.raises(WeightsError, match="student_better_scale"):
        training_samples(project)
    # the CLI: one line on stderr, exit 1, nothing written
    project.save_config()
    out = tmp_path / "w.csv"
    assert main(["weights", "--project", str(project.root), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "unknown key 'student_better_scale'" in err and not out.exists()
