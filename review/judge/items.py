"""The judge's work items: the flagged samples still waiting for a VLM verdict, read from the store with both masks.

It exists so that "what is pending" is one query that the run, the dry-run estimate and the tests share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import aliased

from store.db import Database
from store.schema import Disagreement, JudgeCall, Mask, Prediction, Sample, Verdict, VerdictAuthorKind

from review import render
from review.verdicts import latest_disagreements_subquery, latest_verdicts


@dataclass
class Item:
    sample_id: int
    disagreement_id: int
    defect_class: str
    path: str
    sha256: str
    width: int
    height: int
    iou_ts: float
    teacher_rle: dict[str, Any]
    student_rle: dict[str, Any]

    def mask_shas(self) -> dict[str, str]:
        return {"teacher": render.mask_sha(self.teacher_rle), "student": render.mask_sha(self.student_rle)}



def pending_items(db: Database, *, rejudge: bool = False, defect_class: str | None = None,
                  limit: int | None = None, skip_reviewed: bool = False) -> list[Item]:
    """Flagged samples (latest disagreement record) without a VLM verdict for that record, most disagreeing first."""
    latest = latest_disagreements_subquery()
    tp, sp = aliased(Prediction), aliased(Prediction)
    tm, sm = aliased(Mask), aliased(Mask)
    q = (
        select(Disagreement.id, Disagreement.iou_ts, Sample.id, Sample.defect_class, Sample.path, Sample.sha256,
               Sample.width, Sample.height, tm.rle, sm.rle)
        .join(latest, latest.c.did == Disagreement.id)
        .join(Sample, Sample.id == Disagreement.sample_id)
        .join(tp, tp.id == Disagreement.teacher_prediction_id)
        .join(sp, sp.id == Disagreement.student_prediction_id)
        .join(tm, tm.id == tp.mask_id)
        .join(sm, sm.id == sp.mask_id)
        .where(Disagreement.flagged.is_(True))
    )
    if not rejudge:
        judged = (select(JudgeCall.disagreement_id).join(Verdict, Verdict.judge_call_id == JudgeCall.id)
                  .where(Verdict.author_kind == VerdictAuthorKind.VLM, JudgeCall.disagreement_id.is_not(None)))
        q = q.where(Disagreement.id.not_in(judged))
    if defect_class:
        q = q.where(Sample.defect_class == defect_class)
    q = q.order_by(Disagreement.iou_ts.asc(), Sample.id.asc())
    with db.session() as s:
        rows = s.execute(q).all()
        if skip_reviewed:
            reviewed = set(latest_verdicts(s, VerdictAuthorKind.HUMAN, [r[2] for r in rows]))
            rows = [r for r in rows if r[2] not in reviewed]
    items = [Item(sample_id=r[2], disagreement_id=r[0], defect_class=r[3], path=r[4], sha256=r[5], width=r[6],
                  height=r[7], iou_ts=r[1], teacher_rle=r[8], student_rle=r[9]) for r in rows]
    return items[:limit] if limit is not None else items

