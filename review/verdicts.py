"""Verdicts: the append-only review trail, and the queries the GUI and the weights read from it.

Rows are only ever inserted. An undo is a new `VerdictKind.UNDO` row whose `supersedes_id` names the verdict it
cancels; the cancelled row stays for the audit. Human and VLM verdicts are separate records: for a sample the
effective verdict is its latest non-undone human verdict, else its latest VLM verdict. Only a human can store a
corrected mask (it becomes the sample's ground truth); only the VLM can say `uncertain`.

A reviewer can take the VLM judge's verdict over (`accept_vlm_verdict`: a human verdict of the same kind whose
`supersedes_id` and `judge_call_id` name the VLM verdict and its judge call) or reject it without judging the crop
(`reject_vlm_verdict`: a human UNDO row superseding the VLM verdict, so it stops counting anywhere, the weights
included, and the crop stays pending for a human verdict). A rejection is the one UNDO row an undo can take back.

Everything that reads "latest per sample" does it in SQL (max(id) per sample in a subquery), so a 100k-row review
table is one query, not one per row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session, aliased

from store import rle as rle_mod
from store.db import Database
from store.errors import UserError
from store.schema import (
    HUMAN_PROMPT_SOURCE,
    Disagreement,
    Mask,
    MaskSource,
    Prediction,
    Sample,
    Verdict,
    VerdictAuthorKind,
    VerdictKind,
)

HUMAN_KINDS = frozenset({VerdictKind.TEACHER_BETTER, VerdictKind.STUDENT_BETTER, VerdictKind.BOTH_GOOD,
                         VerdictKind.BOTH_BAD, VerdictKind.CORRECTED})
VLM_KINDS = frozenset({VerdictKind.TEACHER_BETTER, VerdictKind.STUDENT_BETTER, VerdictKind.BOTH_GOOD,
                       VerdictKind.BOTH_BAD, VerdictKind.UNCERTAIN})


class VerdictError(UserError):
    pass


def as_verdict_kind(verdict: VerdictKind | str) -> VerdictKind:
    if isinstance(verdict, VerdictKind):
        return verdict
    try:
        return VerdictKind(str(verdict).strip().lower().replace(" ", "_").replace("-", "_"))
    except ValueError:
        names = ", ".join(k.value for k in VerdictKind if k != VerdictKind.UNDO)
        raise VerdictError(f"unknown verdict {verdict!r}; use one of: {names}") from None


def _author_kind(kind: VerdictAuthorKind | str) -> VerdictAuthorKind:
    return kind if isinstance(kind, VerdictAuthorKind) else VerdictAuthorKind(str(kind))


# --------------------------------------------------------------------------------------------------------------------
# Writing


def add_verdict(
    session: Session,
    sample: Sample,
    verdict: VerdictKind | str,
    author: str,
    *,
    author_kind: VerdictAuthorKind | str = VerdictAuthorKind.HUMAN,
    confidence: float | None = None,
    reason: str | None = None,
    corrected_mask: np.ndarray | None = None,
    judge_call_id: int | None = None,
) -> Verdict:
    """Validate and add one verdict (and its corrected mask) to an open session; the caller commits."""
    kind, akind = as_verdict_kind(verdict), _author_kind(author_kind)
    if kind == VerdictKind.UNDO:
        raise VerdictError("an undo is recorded with undo_last(), not as a verdict")
    allowed = HUMAN_KINDS if akind == VerdictAuthorKind.HUMAN else VLM_KINDS
    if kind not in allowed:
        who = "a human" if akind == VerdictAuthorKind.HUMAN else "the VLM judge"
        raise VerdictError(f"verdict {kind.value!r} cannot come from {who}")
    if not author or not author.strip():
        raise VerdictError("a verdict needs an author")
    if confidence is not None and not 0.0 <= float(confidence) <= 1.0:
        raise VerdictError(f"confidence must be within 0..1, got {confidence}")
    mask_row = None
    if kind == VerdictKind.CORRECTED:
        if corrected_mask is None:
            raise VerdictError("a corrected verdict needs the corrected mask")
        m = np.asarray(corrected_mask).astype(bool)
        if m.shape != (sample.height, sample.width):
            raise VerdictError(f"corrected mask is {m.shape[1]}x{m.shape[0]}, "
                               f"sample {sample.id} is {sample.width}x{sample.height}")
        mask_row = Mask(sample_id=sample.id, source=MaskSource.CORRECTED, rle=rle_mod.encode(m),
                        area=int(np.count_nonzero(m)))
        session.add(mask_row)
        session.flush()
    elif corrected_mask is not None:
        raise VerdictError(f"a mask can only be stored with a corrected verdict, not {kind.value!r}")
    row = Verdict(
        sample_id=sample.id,
        author_kind=akind,
        author=author.strip(),
        verdict=kind,
        confidence=None if confidence is None else float(confidence),
        reason=reason,
        corrected_mask_id=mask_row.id if mask_row is not None else None,
        judge_call_id=judge_call_id,
    )
    session.add(row)
    session.flush()
    return row


def record_verdict(
    db: Database,
    sample_id: int,
    verdict: VerdictKind | str,
    author: str,
    *,
    author_kind: VerdictAuthorKind | str = VerdictAuthorKind.HUMAN,
    confidence: float | None = None,
    reason: str | None = None,
    corrected_mask: np.ndarray | None = None,
    judge_call_id: int | None = None,
    prompt: HumanPrompt | None = None,
) -> Verdict:
    """Store one verdict, committed at once in its own transaction (with its corrected mask, if any). With `prompt`
    (a corrected verdict whose mask came from prompts in the correction tool), the prompted Prediction is written in
    the same transaction, so a stored correction never lacks the prompts that made it, nor the reverse."""
    with db.session() as s:
        sample = s.get(Sample, sample_id)
        if sample is None:
            raise VerdictError(f"no sample with id {sample_id}")
        row = add_verdict(s, sample, verdict, author, author_kind=author_kind, confidence=confidence,
                          reason=reason, corrected_mask=corrected_mask, judge_call_id=judge_call_id)
        if prompt is not None:
            if row.verdict != VerdictKind.CORRECTED:
                raise VerdictError("prompts are stored only with a corrected verdict")
            add_prompted_prediction(s, sample, prompt, corrected_mask_id=row.corrected_mask_id)
        return row


@dataclass(frozen=True)
class HumanPrompt:
    """The prompts a reviewer gave a model in the correction tool and what the model answered, before any brush edits.

    Stored as a Prediction with prompt_source "human" (points, labels, box, mask prompt) so the mask replays: decode
    the same prompts with the same model and compare with the prediction's mask."""

    model_id: int
    points: list[list[float]]  # [[x, y], ...] image pixels
    labels: list[int]
    mask: np.ndarray  # the decoded mask (bool, crop size)
    score: float
    box: list[float] | None = None  # [x0, y0, x1, y1], teacher only
    mask_prompt: np.ndarray | None = None  # the mask given as SAM 2's mask input (bool, crop size), teacher only
    mask_prompt_id: int | None = None  # an existing mask row that is that mask (the ground truth): no copy stored


def add_prompted_prediction(session: Session, sample: Sample, prompt: HumanPrompt,
                            corrected_mask_id: int | None = None) -> Prediction:
    """Add the Prediction (and its mask rows) of a human-prompted decode to an open session; the caller commits.

    The decoded mask reuses the corrected mask row when they are the same pixels (no brush edits), else it is kept as
    a "prompted" mask; a mask prompt not already stored (the current correction, say) is kept as a "mask_prompt"
    row. Neither source is read as the model's own prediction or as ground truth."""
    shape = (sample.height, sample.width)

    def mask_row(m: np.ndarray, source: MaskSource) -> Mask:
        m = np.asarray(m).astype(bool)
        if m.shape != shape:
            raise VerdictError(f"prompt mask is {m.shape[1]}x{m.shape[0]}, sample {sample.id} is "
                               f"{sample.width}x{sample.height}")
        row = Mask(sample_id=sample.id, source=source, model_id=prompt.model_id if source == MaskSource.PROMPTED
                   else None, rle=rle_mod.encode(m), area=int(np.count_nonzero(m)))
        session.add(row)
        session.flush()
        return row

    if len(prompt.points) != len(prompt.labels):
        raise VerdictError("a prompt needs one label per point")
    if prompt.box is not None and len(prompt.box) != 4:
        raise VerdictError("a box prompt is [x0, y0, x1, y1]")
    decoded = np.asarray(prompt.mask).astype(bool)
    mask_id = None
    if corrected_mask_id is not None:
        corrected = session.get(Mask, corrected_mask_id)
        if corrected is not None and np.array_equal(rle_mod.decode(corrected.rle).astype(bool), decoded):
            mask_id = corrected.id
    if mask_id is None:
        mask_id = mask_row(decoded, MaskSource.PROMPTED).id
    mp_id = prompt.mask_prompt_id
    if mp_id is not None:
        mp = session.get(Mask, mp_id)
        if mp is None or mp.sample_id != sample.id:
            raise VerdictError(f"mask {mp_id} is not a mask of sample {sample.id}")
    elif prompt.mask_prompt is not None:
        gt = session.scalar(select(Mask).where(Mask.sample_id == sample.id, Mask.source == MaskSource.GROUND_TRUTH)
                            .order_by(Mask.id.desc()).limit(1))
        if gt is not None and np.array_equal(rle_mod.decode(gt.rle).astype(bool),
                                             np.asarray(prompt.mask_prompt).astype(bool)):
            mp_id = gt.id  # refining the ground truth: point at it rather than store a copy
        else:
            mp_id = mask_row(prompt.mask_prompt, MaskSource.MASK_PROMPT).id
    row = Prediction(sample_id=sample.id, model_id=prompt.model_id, mask_id=mask_id,
                     points=[[float(x), float(y)] for x, y in prompt.points], labels=[int(v) for v in prompt.labels],
                     prompt_source=HUMAN_PROMPT_SOURCE, score=float(prompt.score),
                     box=None if prompt.box is None else [float(v) for v in prompt.box], mask_prompt_id=mp_id)
    session.add(row)
    session.flush()
    return row


def _undone_ids() -> Select[Any]:
    """Ids of the rows cancelled by an UNDO row that is itself in effect (only a rejection of a VLM verdict can be
    undone in turn, which puts the VLM verdict back)."""
    u = aliased(Verdict)
    undone_undos = select(u.supersedes_id).where(u.verdict == VerdictKind.UNDO, u.supersedes_id.is_not(None))
    return select(Verdict.supersedes_id).where(Verdict.verdict == VerdictKind.UNDO,
                                                Verdict.supersedes_id.is_not(None),
                                                Verdict.id.not_in(undone_undos))


def _rejections() -> Select[Any]:
    """Ids of the human UNDO rows that cancel a VLM verdict (rejections, see reject_vlm_verdict)."""
    target = aliased(Verdict)
    return (select(Verdict.id).join(target, target.id == Verdict.supersedes_id)
            .where(Verdict.verdict == VerdictKind.UNDO, Verdict.author_kind == VerdictAuthorKind.HUMAN,
                   target.author_kind == VerdictAuthorKind.VLM))


def undo_last(db: Database, author: str,
              author_kind: VerdictAuthorKind | str = VerdictAuthorKind.HUMAN) -> Verdict | None:
    """Cancel `author`'s latest verdict that is still in effect; returns the UNDO row, or None if nothing is left.

    Repeated calls walk back through the author's verdicts, newest first. A human's rejection of a VLM verdict
    counts as one of their verdicts: undoing it puts the VLM verdict back in effect.
    """
    akind = _author_kind(author_kind)
    with db.session() as s:
        target = s.scalar(
            select(Verdict)
            .where(Verdict.author == author, Verdict.author_kind == akind,
                   or_(Verdict.verdict != VerdictKind.UNDO, Verdict.id.in_(_rejections())),
                   Verdict.id.not_in(_undone_ids()))
            .order_by(Verdict.id.desc())
            .limit(1)
        )
        if target is None:
            return None
        what = (f"the rejection of VLM verdict {target.supersedes_id}" if target.verdict == VerdictKind.UNDO
                else target.verdict.value)
        row = Verdict(sample_id=target.sample_id, author_kind=akind, author=author, verdict=VerdictKind.UNDO,
                      supersedes_id=target.id, reason=f"undo of verdict {target.id} ({what})")
        s.add(row)
        s.flush()
        return row


def _vlm_verdict_in_effect(session: Session, sample_id: int, vlm_verdict_id: int | None) -> Verdict:
    """The sample's VLM verdict in effect; when `vlm_verdict_id` is given it must be that one (the reviewer acted on
    what was on screen: a judge run or another reviewer since then must not have them accept something else)."""
    if session.get(Sample, sample_id) is None:
        raise VerdictError(f"no sample with id {sample_id}")
    vlm = latest_verdicts(session, VerdictAuthorKind.VLM, [sample_id]).get(sample_id)
    if vlm is None:
        raise VerdictError(f"sample {sample_id} has no VLM verdict in effect")
    if vlm_verdict_id is not None and vlm.id != vlm_verdict_id:
        raise VerdictError(f"the VLM verdict on sample {sample_id} changed (now verdict {vlm.id}, "
                           f"not {vlm_verdict_id}): reload the queue and look again")
    return vlm


def accept_vlm_verdict(db: Database, sample_id: int, author: str, vlm_verdict_id: int | None = None) -> Verdict:
    """A reviewer takes the VLM judge's verdict as their own: a human verdict of the same kind, committed at once,
    whose `supersedes_id` names the VLM verdict and `judge_call_id` its judge call (the trail shows it was accepted,
    not judged independently). From then on it weighs as any human verdict: the policy at face value, and teacher
    better / student better / both good approve that model's mask as the Dice target. An `uncertain` VLM verdict
    cannot be accepted (no human verdict says that)."""
    with db.session() as s:
        vlm = _vlm_verdict_in_effect(s, sample_id, vlm_verdict_id)
        if vlm.verdict not in HUMAN_KINDS:
            raise VerdictError(f"the VLM judge said {vlm.verdict.value!r} on sample {sample_id}: nothing to accept, "
                               f"give your own verdict")
        row = add_verdict(s, s.get(Sample, sample_id), vlm.verdict, author,
                          reason=f"accepted VLM verdict {vlm.id} ({vlm.author})", judge_call_id=vlm.judge_call_id)
        row.supersedes_id = vlm.id
        s.flush()
        return row


def reject_vlm_verdict(db: Database, sample_id: int, author: str, vlm_verdict_id: int | None = None) -> Verdict:
    """A reviewer says the VLM judge is wrong on this crop without giving a verdict of their own: a human UNDO row
    superseding the VLM verdict, committed at once. The rejected verdict then counts nowhere (queue, agreement
    statistics, and the training weights, which fall back to 1 instead of leaning towards a verdict a human called
    wrong); the crop keeps no human verdict, so it stays pending for one. An older VLM verdict on the same crop (a
    re-judged one), if any, becomes the one in effect. `undo_last` takes a rejection back like any verdict."""
    if not author or not author.strip():
        raise VerdictError("a verdict needs an author")
    with db.session() as s:
        vlm = _vlm_verdict_in_effect(s, sample_id, vlm_verdict_id)
        row = Verdict(sample_id=sample_id, author_kind=VerdictAuthorKind.HUMAN, author=author.strip(),
                      verdict=VerdictKind.UNDO, supersedes_id=vlm.id, judge_call_id=vlm.judge_call_id,
                      reason=f"rejected VLM verdict {vlm.id} ({vlm.verdict.value}, {vlm.author})")
        s.add(row)
        s.flush()
        return row


# --------------------------------------------------------------------------------------------------------------------
# Reading


def latest_verdict_ids(author_kind: VerdictAuthorKind, kinds: Iterable[VerdictKind] | None = None) -> Any:
    """Subquery (sample_id, vid): id of each sample's latest verdict of that author kind still in effect."""
    q = select(Verdict.sample_id.label("sample_id"), func.max(Verdict.id).label("vid")).where(
        Verdict.author_kind == author_kind, Verdict.verdict != VerdictKind.UNDO, Verdict.id.not_in(_undone_ids()))
    if kinds is not None:
        q = q.where(Verdict.verdict.in_(list(kinds)))
    return q.group_by(Verdict.sample_id).subquery()


def latest_verdicts(session: Session, author_kind: VerdictAuthorKind | str,
                    sample_ids: Iterable[int] | None = None) -> dict[int, Verdict]:
    """Latest verdict still in effect per sample, for one author kind (one query)."""
    sub = latest_verdict_ids(_author_kind(author_kind))
    q = select(Verdict).join(sub, sub.c.vid == Verdict.id)
    if sample_ids is not None:
        q = q.where(Verdict.sample_id.in_(list(sample_ids)))
    return {v.sample_id: v for v in session.scalars(q)}


def effective_verdicts(session: Session, sample_ids: Iterable[int] | None = None) -> dict[int, Verdict]:
    """Per sample: the latest non-undone human verdict, else the latest VLM verdict."""
    ids = None if sample_ids is None else list(sample_ids)
    out = latest_verdicts(session, VerdictAuthorKind.VLM, ids)
    out.update(latest_verdicts(session, VerdictAuthorKind.HUMAN, ids))
    return out


def effective_verdict(session: Session, sample_id: int) -> Verdict | None:
    return effective_verdicts(session, [sample_id]).get(sample_id)


def corrected_masks(session: Session, sample_ids: Iterable[int] | None = None) -> dict[int, int]:
    """sample_id -> mask id of the latest corrected mask whose human verdict is still in effect."""
    sub = latest_verdict_ids(VerdictAuthorKind.HUMAN, [VerdictKind.CORRECTED])
    q = select(Verdict.sample_id, Verdict.corrected_mask_id).join(sub, sub.c.vid == Verdict.id)
    if sample_ids is not None:
        q = q.where(Verdict.sample_id.in_(list(sample_ids)))
    return {sid: mid for sid, mid in session.execute(q) if mid is not None}


def ground_truth_masks(session: Session, sample_ids: Iterable[int] | None = None) -> dict[int, tuple[int, str]]:
    """sample_id -> (mask id, "corrected" | "ground_truth"): a human-corrected mask wins over the ingested one."""
    ids = None if sample_ids is None else list(sample_ids)
    q = select(Mask.sample_id, func.max(Mask.id)).where(Mask.source == MaskSource.GROUND_TRUTH)
    if ids is not None:
        q = q.where(Mask.sample_id.in_(ids))
    out = {sid: (mid, "ground_truth") for sid, mid in session.execute(q.group_by(Mask.sample_id))}
    out.update({sid: (mid, "corrected") for sid, mid in corrected_masks(session, ids).items()})
    return out


# A human verdict approving one model's mask: verdict -> (Dice target kind, which side of the reviewed pair).
APPROVED_SIDE = {
    VerdictKind.TEACHER_BETTER: ("approved_teacher", "teacher"),
    VerdictKind.BOTH_GOOD: ("approved_teacher", "teacher"),
    VerdictKind.STUDENT_BETTER: ("approved_student", "student"),
}


def approved_masks(session: Session, sample_ids: Iterable[int] | None = None) -> dict[int, tuple[int, str]]:
    """sample_id -> (mask id, "approved_teacher" | "approved_student") for samples whose effective human verdict
    (latest, not undone) approves a model mask: teacher better / both good -> the teacher's mask, student better ->
    the student's. The mask is the one the reviewer saw: of the pair the sample's latest disagreement record made
    before the verdict points at (a re-prediction after the review is not approved). VLM verdicts never approve.
    One query."""
    sub = latest_verdict_ids(VerdictAuthorKind.HUMAN)
    reviewed = (
        select(Verdict.sample_id.label("sample_id"), Verdict.verdict.label("verdict"),
               func.max(Disagreement.id).label("did"))
        .join(sub, sub.c.vid == Verdict.id)
        .join(Disagreement, and_(Disagreement.sample_id == Verdict.sample_id,
                                 Disagreement.created_at <= Verdict.created_at))
        .where(Verdict.verdict.in_(list(APPROVED_SIDE)))
        .group_by(Verdict.id, Verdict.sample_id, Verdict.verdict)
    )
    if sample_ids is not None:
        reviewed = reviewed.where(Verdict.sample_id.in_(list(sample_ids)))
    r = reviewed.subquery()
    d, tp, sp = aliased(Disagreement), aliased(Prediction), aliased(Prediction)
    q = (select(r.c.sample_id, r.c.verdict, tp.mask_id, sp.mask_id)
         .join(d, d.id == r.c.did)
         .join(tp, tp.id == d.teacher_prediction_id)
         .join(sp, sp.id == d.student_prediction_id))
    out = {}
    for sid, kind, t_mask, s_mask in session.execute(q):
        target, side = APPROVED_SIDE[VerdictKind(kind)]
        out[sid] = (t_mask if side == "teacher" else s_mask, target)
    return out


def latest_disagreements_subquery() -> Any:
    """Subquery (sample_id, did): each sample's latest disagreement record."""
    return (select(Disagreement.sample_id.label("sample_id"), func.max(Disagreement.id).label("did"))
            .group_by(Disagreement.sample_id).subquery())


def trail(session: Session, sample_id: int) -> list[Verdict]:
    """Every verdict row of a sample, oldest first, undo rows included."""
    return list(session.scalars(select(Verdict).where(Verdict.sample_id == sample_id).order_by(Verdict.id)))


__all__ = [
    "APPROVED_SIDE", "HumanPrompt", "VerdictError", "as_verdict_kind", "latest_disagreements_subquery",
    "latest_verdict_ids", "accept_vlm_verdict", "add_prompted_prediction",
    "add_verdict", "approved_masks",
    "corrected_masks", "reject_vlm_verdict",
    "effective_verdict", "effective_verdicts",
    "ground_truth_masks", "latest_verdicts", "record_verdict",
    "trail", "undo_last",
]
