"""Review queue order: which flagged crop a reviewer should look at next.

Three orders (ORDERS):

* ``disagreement``: lowest teacher/student IoU first (the queue's historical order).
* ``hardness``: expected gain of a human verdict first (below).
* ``random``: a seeded shuffle (the baseline every ordering has to beat).

Hardness: where a verdict changes the next run the most
--------------------------------------------------------
By default the next distillation run follows the teacher: its mask is the soft target, its embedding the feature
target, both at weight 1 (docs/weights.md). A human verdict changes that training signal only when it *overturns*
the teacher: "student better" cuts the teacher terms to 0.3 and makes the student's mask the Dice target, "both bad"
turns them off and asks for a correction. A verdict that confirms the teacher ("teacher better", "both good") leaves
the weights at 1 (on an unlabelled crop it adds a Dice target, the same mask the soft term already follows). So the
expected change is

    gain = P(the verdict overturns the teacher) x (how much of the target it changes)

* How much changes: ``1 - IoU_ts``, the share of the two masks' union on which the teacher's and the student's
  targets differ, i.e. the pixels of the soft and Dice targets a verdict can flip. Two masks that agree leave
  nothing to decide, whatever the verdict.
* P(overturn): each prediction's ``score`` (SAM's predicted IoU for the teacher, the student's IoU head) estimates
  the probability that its mask is good, ``s_t`` and ``s_s`` (clipped to 0..1). With independent errors and two
  masks that disagree (they cannot both be good), the outcomes left are teacher good/student bad
  ``s_t (1 - s_s)``, teacher bad/student good ``(1 - s_t) s_s`` and both bad ``(1 - s_t)(1 - s_s)``; the two last
  overturn the teacher, so ``P = (1 - s_t) / (1 - s_t s_s)``. Two fully confident models that disagree
  (``s_t = s_s = 1``) give 0/0; that is a coin flip, 0.5.

    hardness = (1 - IoU_ts) * (1 - s_t) / (1 - s_t * s_s)

This is FiftyOne Brain's *mistakenness* applied to the teacher's mask as the label and the student as the second
opinion, scaled by the size of the disagreement: a confident student against an unsure teacher on very different
masks comes first; a confident teacher against an unsure student comes late even when the masks differ (the verdict
is predictably "teacher better", which changes almost nothing); equal confidences sit in between. Compared with the
symmetric ``(1 - IoU) (1 - |s_t - s_s|)`` (verdict entropy), it does not spend reviews on crops where the student is
the one predictably wrong. Ties go to the lower IoU, then the lower sample id.

Everything here is Qt-free; the GUI's queue calls `hardness` on its columns, the CLI `maskbench queue --order`.
"""

from __future__ import annotations

import random
from typing import Any, overload

import numpy as np
from sqlalchemy.orm import Session

from review.queue_rows import QueueRow, review_queue
from review.verdicts import VerdictError

ORDERS = ("disagreement", "hardness", "random")


@overload
def hardness(iou_ts: float, score_teacher: float | None, score_student: float | None) -> float: ...


@overload
def hardness(iou_ts: np.ndarray, score_teacher: np.ndarray, score_student: np.ndarray) -> np.ndarray: ...


def hardness(iou_ts: Any, score_teacher: Any, score_student: Any) -> Any:
    """(1 - IoU_ts) * (1 - s_t) / (1 - s_t * s_s): expected change a verdict makes (module docstring).

    Scalars give a float, arrays an array (float64, elementwise; NaN where the IoU is NaN). A missing score (None
    or NaN) counts as 0.5, an uninformative confidence."""
    scalar = np.ndim(iou_ts) == 0 and np.ndim(score_teacher) == 0 and np.ndim(score_student) == 0
    iou = np.asarray(iou_ts, np.float64)
    st = np.asarray(np.nan if score_teacher is None else score_teacher, np.float64)
    ss = np.asarray(np.nan if score_student is None else score_student, np.float64)
    st = np.clip(np.where(np.isnan(st), 0.5, st), 0.0, 1.0)
    ss = np.clip(np.where(np.isnan(ss), 0.5, ss), 0.0, 1.0)
    num = 1.0 - st
    den = 1.0 - st * ss
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(den > 1e-12, num / np.where(den > 1e-12, den, 1.0), 0.5)
    out = (1.0 - np.clip(iou, 0.0, 1.0)) * p
    return float(out) if scalar else out


def row_hardness(row: QueueRow) -> float:
    return hardness(row.iou_ts, row.teacher_score, row.student_score)


def ordered_queue(
    session: Session,
    order: str,
    *,
    seed: int = 0,
    flagged_only: bool = True,
    defect_class: str | None = None,
    status: str = "all",
    limit: int | None = None,
) -> list[QueueRow]:
    """The review queue's rows (review.queue_rows.review_queue filters: class, status all | pending | reviewed,
    flagged only) in `order`, at most `limit` of them."""
    if order not in ORDERS:
        raise VerdictError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    rows = review_queue(session, defect_class=defect_class, status=status, flagged_only=flagged_only, order="sample")
    if order == "disagreement":
        rows.sort(key=lambda r: (r.iou_ts, r.sample_id))
    elif order == "hardness":
        h = hardness(np.array([r.iou_ts for r in rows], np.float64),
                     np.array([np.nan if r.teacher_score is None else r.teacher_score for r in rows], np.float64),
                     np.array([np.nan if r.student_score is None else r.student_score for r in rows], np.float64))
        keyed = sorted(zip(h.tolist(), rows), key=lambda hr: (-hr[0], hr[1].iou_ts, hr[1].sample_id))
        rows = [r for _h, r in keyed]
    else:  # random: a seeded shuffle of the rows in sample id order, the same for the same seed and queue
        random.Random(seed).shuffle(rows)
    return rows if limit is None else rows[:limit]


def ordered_sample_ids(
    session: Session,
    order: str,
    *,
    seed: int = 0,
    flagged_only: bool = True,
    defect_class: str | None = None,
    status: str = "all",
) -> list[int]:
    """Sample ids of the review queue in `order` (ORDERS): "disagreement" lowest teacher/student IoU first,
    "hardness" highest expected gain first, "random" a shuffle seeded by `seed`."""
    return [r.sample_id for r in ordered_queue(session, order, seed=seed, flagged_only=flagged_only,
                                               defect_class=defect_class, status=status)]


__all__ = ["ORDERS", "hardness", "ordered_queue", "ordered_sample_ids", "row_hardness"]
