"""A correction made with prompts is stored with them: the verdict and a human-prompted Prediction (points, labels,
box, mask prompt) in one transaction; that prediction never stands in for the model's own one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from review.flagging import flag
from review.training_set import latest_teacher_prompts
from review.verdicts import HumanPrompt, VerdictError, record_verdict
from store import rle as rle_mod
from store.schema import (
    HUMAN_PROMPT_SOURCE,
    Disagreement,
    Mask,
    MaskSource,
    ModelKind,
    ModelRecord,
    Prediction,
    Verdict,
)

from review_helpers import build_project, copy_crops


@pytest.fixture
def project(tmp_path: Path, magnetic_tile_pairs: list):  # noqa: ANN201
    data = copy_crops(magnetic_tile_pairs, tmp_path / "data", per_class=1, classes=("MT_Crack", "MT_Blowhole"))
    p, truth = build_project(tmp_path / "p", data)
    yield p, truth
    p.close()


def _teacher_id(p) -> int:  # noqa: ANN001
    with p.db.session() as s:
        return s.scalar(select(ModelRecord.id).where(ModelRecord.kind == ModelKind.TEACHER))


def test_prompted_correction_is_stored_with_its_prompts(project) -> None:  # noqa: ANN001
    p, truth = project
    sid = sorted(truth)[0]
    gt = truth[sid]["gt"].astype(bool)
    h, w = gt.shape
    decoded = np.zeros((h, w), bool)
    decoded[5:20, 5:30] = True
    painted = decoded.copy()
    painted[0:3, 0:3] = True
    own = np.zeros((h, w), bool)
    own[1:4, 1:9] = True
    t_id = _teacher_id(p)
    with p.db.session() as s:
        before = s.scalar(select(func.max(Prediction.id)))
    # 1) mask prompt = the ground truth, brush edits on top: the decoded mask gets its own "prompted" row
    v = record_verdict(p.db, sid, "corrected", "ana", corrected_mask=painted,
                       prompt=HumanPrompt(model_id=t_id, points=[[7.0, 9.0]], labels=[1], mask=decoded, score=0.7,
                                          box=[1.0, 2.0, 40.0, 30.0], mask_prompt=gt))
    # 2) mask prompt = some other mask, no brush edits: the prediction's mask is the corrected row itself
    v2 = record_verdict(p.db, sid, "corrected", "ana", corrected_mask=decoded,
                        prompt=HumanPrompt(model_id=t_id, points=[], labels=[], mask=decoded, score=0.5,
                                           mask_prompt=own))
    with p.db.session() as s:
        preds = s.scalars(select(Prediction).where(Prediction.id > before).order_by(Prediction.id)).all()
        assert [x.prompt_source for x in preds] == [HUMAN_PROMPT_SOURCE] * 2
        a, b = preds
        assert (a.points, a.labels, a.box, a.score) == ([[7.0, 9.0]], [1], [1.0, 2.0, 40.0, 30.0], 0.7)
        ma = s.get(Mask, a.mask_id)
        assert ma.source == MaskSource.PROMPTED and ma.model_id == t_id
        assert np.array_equal(rle_mod.decode(ma.rle), decoded)
        gt_row = s.get(Mask, a.mask_prompt_id)
        assert gt_row.source == MaskSource.GROUND_TRUTH  # the ingested row, not a copy
        assert s.get(Verdict, v.id).corrected_mask_id != a.mask_id
        assert b.box is None and b.points == [] and b.mask_id == s.get(Verdict, v2.id).corrected_mask_id
        mp = s.get(Mask, b.mask_prompt_id)
        assert mp.source == MaskSource.MASK_PROMPT and np.array_equal(rle_mod.decode(mp.rle), own)

    # the teacher's own prediction is still what flagging compares and what training prompts with
    flag(p.db, 0.15, workers=1)
    with p.db.session() as s:
        d = s.scalar(select(Disagreement).where(Disagreement.sample_id == sid).order_by(Disagreement.id.desc()))
        assert s.get(Prediction, d.teacher_prediction_id).prompt_source != HUMAN_PROMPT_SOURCE
        assert latest_teacher_prompts(s, [sid])[sid][0] != [[7.0, 9.0]]


@pytest.mark.parametrize("bad", ["shape", "labels", "box", "foreign_mask", "not_corrected"])
def test_a_bad_prompt_stores_nothing(project, bad: str) -> None:  # noqa: ANN001
    """Verdict and prediction are one transaction: a prompt that cannot be stored leaves no verdict either."""
    p, truth = project
    sid, other = sorted(truth)[:2]
    h, w = truth[sid]["gt"].shape
    ok = np.zeros((h, w), bool)
    kw: dict = dict(model_id=_teacher_id(p), points=[[1.0, 1.0]], labels=[1], mask=ok, score=0.5)
    if bad == "shape":
        kw["mask_prompt"] = np.zeros((h + 1, w), bool)
    elif bad == "labels":
        kw["labels"] = [1, 0]
    elif bad == "box":
        kw["box"] = [1.0, 2.0]
    elif bad == "foreign_mask":
        with p.db.session() as s:
            kw["mask_prompt_id"] = s.scalar(select(Mask.id).where(Mask.sample_id == other))
    with p.db.session() as s:
        counts = (s.scalar(select(func.count(Verdict.id))), s.scalar(select(func.count(Prediction.id))),
                  s.scalar(select(func.count(Mask.id))))
    with pytest.raises(VerdictError):
        if bad == "not_corrected":
            record_verdict(p.db, sid, "both_bad", "ana", prompt=HumanPrompt(**kw))
        else:
            record_verdict(p.db, sid, "corrected", "ana", corrected_mask=ok, prompt=HumanPrompt(**kw))
    with p.db.session() as s:
        assert (s.scalar(select(func.count(Verdict.id))), s.scalar(select(func.count(Prediction.id))),
                s.scalar(select(func.count(Mask.id)))) == counts
