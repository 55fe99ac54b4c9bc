"""The review queue in SQL: one query joins every flagged sample with its latest disagreement, its latest VLM
verdict and its standing human verdict (review.verdicts' "latest per sample" subqueries), so the table, the CLI and
`next_pending` page a 100k-row queue without a query per row. Split from review.verdicts, which keeps the trail.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, aliased

from review.verdicts import VerdictError, as_verdict_kind, latest_disagreements_subquery, latest_verdict_ids
from store.schema import Disagreement, Prediction, Sample, Verdict, VerdictAuthorKind


@dataclass(frozen=True)
class QueueRow:
    sample_id: int
    path: str
    defect_class: str
    split: str | None
    disagreement_id: int
    iou_ts: float
    dice_ts: float
    boundary_f: float
    iou_teacher_gt: float | None
    iou_student_gt: float | None
    flagged: bool
    vlm_verdict: str | None
    vlm_confidence: float | None
    human_verdict: str | None  # None: not reviewed by a human yet
    human_author: str | None
    human_at: dt.datetime | None
    teacher_score: float | None = None  # Prediction.score of the teacher prediction the disagreement compared
    student_score: float | None = None  # and of the student prediction

    @property
    def human_status(self) -> str:
        return "pending" if self.human_verdict is None else "reviewed"


ORDERS = ("disagreement", "class", "sample")


def _queue_select(defect_class: str | None, status: str, flagged_only: bool, vlm: str | None) -> Select[Any]:
    latest_d = latest_disagreements_subquery()
    vlm_ids = latest_verdict_ids(VerdictAuthorKind.VLM)
    human_ids = latest_verdict_ids(VerdictAuthorKind.HUMAN)
    vv, hv = aliased(Verdict), aliased(Verdict)
    tp, sp = aliased(Prediction), aliased(Prediction)
    q = (
        select(
            Sample.id, Sample.path, Sample.defect_class, Sample.split, Disagreement.id, Disagreement.iou_ts,
            Disagreement.dice_ts, Disagreement.boundary_f, Disagreement.iou_teacher_gt, Disagreement.iou_student_gt,
            Disagreement.flagged, vv.verdict, vv.confidence, hv.verdict, hv.author, hv.created_at, tp.score,
            sp.score,
        )
        .select_from(latest_d)
        .join(Disagreement, Disagreement.id == latest_d.c.did)
        .join(Sample, Sample.id == latest_d.c.sample_id)
        .outerjoin(tp, tp.id == Disagreement.teacher_prediction_id)
        .outerjoin(sp, sp.id == Disagreement.student_prediction_id)
        .outerjoin(vlm_ids, vlm_ids.c.sample_id == Sample.id)
        .outerjoin(vv, vv.id == vlm_ids.c.vid)
        .outerjoin(human_ids, human_ids.c.sample_id == Sample.id)
        .outerjoin(hv, hv.id == human_ids.c.vid)
    )
    if flagged_only:
        q = q.where(Disagreement.flagged.is_(True))
    if defect_class:
        q = q.where(Sample.defect_class == defect_class)
    if status == "pending":
        q = q.where(hv.id.is_(None))
    elif status == "reviewed":
        q = q.where(hv.id.is_not(None))
    elif status != "all":
        raise VerdictError(f"status must be all, pending or reviewed, not {status!r}")
    if vlm == "none":
        q = q.where(vv.id.is_(None))
    elif vlm:
        q = q.where(vv.verdict == as_verdict_kind(vlm))
    return q


def review_queue(
    session: Session,
    *,
    defect_class: str | None = None,
    status: str = "all",
    vlm: str | None = None,
    flagged_only: bool = True,
    order: str = "disagreement",
    limit: int | None = None,
    offset: int = 0,
) -> list[QueueRow]:
    """Rows for the review table in one query: flagged samples, most disagreeing first (lowest teacher/student IoU),
    with class, IoU, the VLM verdict and confidence and the human status. `limit`/`offset` page through it."""
    q = _queue_select(defect_class, status, flagged_only, vlm)
    if order == "disagreement":
        q = q.order_by(Disagreement.iou_ts.asc(), Sample.id.asc())
    elif order == "class":
        q = q.order_by(Sample.defect_class.asc(), Disagreement.iou_ts.asc(), Sample.id.asc())
    elif order == "sample":
        q = q.order_by(Sample.id.asc())
    else:
        raise VerdictError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    if limit is not None:
        q = q.limit(limit)
    if offset:
        q = q.offset(offset)
    out = []
    for r in session.execute(q):
        out.append(QueueRow(
            sample_id=r[0], path=r[1], defect_class=r[2], split=r[3], disagreement_id=r[4], iou_ts=r[5],
            dice_ts=r[6], boundary_f=r[7], iou_teacher_gt=r[8], iou_student_gt=r[9], flagged=bool(r[10]),
            vlm_verdict=r[11].value if r[11] is not None else None, vlm_confidence=r[12],
            human_verdict=r[13].value if r[13] is not None else None, human_author=r[14], human_at=r[15],
            teacher_score=r[16], student_score=r[17],
        ))
    return out


def queue_count(session: Session, *, defect_class: str | None = None, status: str = "all", vlm: str | None = None,
                flagged_only: bool = True) -> int:
    sub = _queue_select(defect_class, status, flagged_only, vlm).subquery()
    return int(session.scalar(select(func.count()).select_from(sub)) or 0)


def next_pending(session: Session, after_sample_id: int | None = None, defect_class: str | None = None) -> int | None:
    """The most disagreeing flagged sample without a human verdict (other than `after_sample_id`), or None."""
    q = _queue_select(defect_class, "pending", True, None).order_by(Disagreement.iou_ts.asc(), Sample.id.asc())
    if after_sample_id is not None:
        q = q.where(Sample.id != after_sample_id)
    row = session.execute(q.limit(1)).first()
    return None if row is None else int(row[0])


__all__ = ["ORDERS", "QueueRow", "next_pending", "queue_count", "review_queue"]
