"""Disagreement flagging: teacher vs student (and each vs the ground truth) per sample, stored as Disagreement rows.

For every sample the latest prediction of an active teacher model and the latest of an active student model are
compared. A sample is flagged when their IoU is below 1 - threshold (project.yaml
distillation.disagreement_threshold, 0.15 by default). A record is only added when something changed (new
predictions or a new threshold), so running `maskbench flag` twice writes nothing the second time. Rows are written
in batches, each batch one transaction, so a killed run leaves only whole records and never holds the database for
long.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from store import rle as rle_mod
from store.db import Database
from store.errors import UserError
from store.schema import HUMAN_PROMPT_SOURCE, Disagreement, Mask, ModelKind, ModelRecord, Prediction, Sample

from review.metrics import PairMetrics, is_flagged, pair_metrics
from review.verdicts import ground_truth_masks, latest_disagreements_subquery

ProgressFn = Callable[[int, int], None]


class FlagError(UserError):
    pass


@dataclass
class FlagReport:
    threshold: float
    total: Counter[str] = field(default_factory=Counter)  # per class: samples with a teacher/student pair
    flagged: Counter[str] = field(default_factory=Counter)  # per class: flagged among them
    written: int = 0  # new disagreement records
    unchanged: int = 0  # pairs whose latest record was already up to date
    missing_pair: int = 0  # samples with a prediction from only one side
    bad: list[tuple[int, str]] = field(default_factory=list)  # (sample id, reason)

    @property
    def flagged_total(self) -> int:
        return sum(self.flagged.values())

    @property
    def pairs_total(self) -> int:
        return sum(self.total.values())


def latest_predictions_subquery(kind: ModelKind, model_id: int | None = None):  # noqa: ANN201 - SQLAlchemy subquery
    """Subquery (sample_id, pid): each sample's latest prediction by an active model of `kind` (or by model_id).
    Predictions a reviewer prompted in the correction tool are not the model's own answer and are left out."""
    q = select(Prediction.sample_id.label("sample_id"), func.max(Prediction.id).label("pid")).join(
        ModelRecord, ModelRecord.id == Prediction.model_id).where(Prediction.prompt_source != HUMAN_PROMPT_SOURCE)
    if model_id is not None:
        q = q.where(ModelRecord.id == model_id)
    else:
        q = q.where(ModelRecord.kind == kind, ModelRecord.active.is_(True))
    return q.group_by(Prediction.sample_id).subquery()


@dataclass
class _Pair:
    sample_id: int
    defect_class: str
    teacher_pred: int
    teacher_mask: int
    student_pred: int
    student_mask: int


def _pairs(s: Session, teacher_model_id: int | None, student_model_id: int | None) -> tuple[list[_Pair], int]:
    ts = latest_predictions_subquery(ModelKind.TEACHER, teacher_model_id)
    ss = latest_predictions_subquery(ModelKind.STUDENT, student_model_id)
    tp, sp = aliased(Prediction), aliased(Prediction)
    rows = s.execute(
        select(Sample.id, Sample.defect_class, tp.id, tp.mask_id, sp.id, sp.mask_id)
        .join(ts, ts.c.sample_id == Sample.id)
        .join(ss, ss.c.sample_id == Sample.id)
        .join(tp, tp.id == ts.c.pid)
        .join(sp, sp.id == ss.c.pid)
        .order_by(Sample.id)
    ).all()
    pairs = [_Pair(*r) for r in rows]
    with_any = s.scalar(
        select(func.count()).select_from(
            select(ts.c.sample_id).union(select(ss.c.sample_id)).subquery()
        )
    ) or 0
    return pairs, int(with_any) - len(pairs)


def _compute(pair: _Pair, masks: dict[int, dict], gt_id: int | None) -> PairMetrics | str:
    try:
        t = rle_mod.decode(masks[pair.teacher_mask])
        st = rle_mod.decode(masks[pair.student_mask])
        gt = rle_mod.decode(masks[gt_id]) if gt_id is not None else None
        if t.shape != st.shape:
            return f"teacher mask {t.shape} and student mask {st.shape} differ in size"
        if gt is not None and gt.shape != t.shape:
            return f"ground truth {gt.shape} and predictions {t.shape} differ in size"
        return pair_metrics(t, st, gt)
    except Exception as exc:  # noqa: BLE001 - one broken record must not stop a 100k-sample run
        return f"{exc.__class__.__name__}: {exc}"


def flag(
    db: Database,
    threshold: float = 0.15,
    *,
    progress: ProgressFn | None = None,
    teacher_model_id: int | None = None,
    student_model_id: int | None = None,
    force: bool = False,
    batch_size: int = 256,
    workers: int = 4,
) -> FlagReport:
    """Compute and store disagreement records; returns per-class counts of pairs and flagged samples."""
    if not 0.0 <= threshold < 1.0:
        raise FlagError(f"disagreement threshold must be within [0, 1), got {threshold}")
    report = FlagReport(threshold=threshold)
    with db.session() as s:
        pairs, report.missing_pair = _pairs(s, teacher_model_id, student_model_id)
        latest = latest_disagreements_subquery()
        existing = {
            r[0]: r[1:]
            for r in s.execute(
                select(Disagreement.sample_id, Disagreement.teacher_prediction_id, Disagreement.student_prediction_id,
                       Disagreement.threshold, Disagreement.flagged)
                .join(latest, latest.c.did == Disagreement.id)
            )
        }
        gt = {sid: mid for sid, (mid, _src) in ground_truth_masks(s).items()}
    if not pairs:
        if report.missing_pair:
            raise FlagError(f"{report.missing_pair} sample(s) have predictions from only one side; flagging needs "
                            "both a teacher and a student prediction (run predict for the missing model)")
        raise FlagError("no teacher and student predictions in this project yet; run predict first")

    todo: list[_Pair] = []
    for p in pairs:
        report.total[p.defect_class] += 1
        old = existing.get(p.sample_id)
        if (not force and old is not None and old[0] == p.teacher_pred and old[1] == p.student_pred
                and abs(old[2] - threshold) < 1e-12):
            report.unchanged += 1
            if old[3]:
                report.flagged[p.defect_class] += 1
        else:
            todo.append(p)

    done = report.unchanged
    if progress:
        progress(done, len(pairs))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            ids = {m for p in chunk for m in (p.teacher_mask, p.student_mask, gt.get(p.sample_id)) if m is not None}
            with db.session() as s:
                masks = {mid: rle for mid, rle in s.execute(select(Mask.id, Mask.rle).where(Mask.id.in_(ids)))}
            results = list(pool.map(lambda p: _compute(p, masks, gt.get(p.sample_id)), chunk))
            with db.session() as s:
                for p, res in zip(chunk, results):
                    if isinstance(res, str):
                        report.bad.append((p.sample_id, res))
                        continue
                    flagged = is_flagged(res.iou_ts, threshold)
                    s.add(Disagreement(
                        sample_id=p.sample_id, teacher_prediction_id=p.teacher_pred,
                        student_prediction_id=p.student_pred, iou_ts=res.iou_ts, dice_ts=res.dice_ts,
                        iou_teacher_gt=res.iou_teacher_gt, iou_student_gt=res.iou_student_gt,
                        dice_teacher_gt=res.dice_teacher_gt, dice_student_gt=res.dice_student_gt,
                        boundary_f=res.boundary_f, threshold=threshold, flagged=flagged,
                    ))
                    report.written += 1
                    if flagged:
                        report.flagged[p.defect_class] += 1
            done += len(chunk)
            if progress:
                progress(done, len(pairs))
    return report
