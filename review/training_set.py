"""What the next distillation run trains on, read from the review store: the seam between review and training.

Every crop of a split takes part (issue 15): a crop with a verified mask (a human correction, an approved model mask,
or the ingested ground truth; review.weights decides which) is *labelled* and gets the Dice term; a crop without
one is *unlabelled* and still gets the feature and soft terms, prompted with the points stored with the teacher's
latest prediction on it (a crop the teacher never predicted has no prompt and is left out, and counted).
Per-sample weights come from review.weights.sample_weights, so verdicts reach the loss through one typed interface.
Masks are identified by their row id, so a correction made after a run is the next run's target: nothing here is
cached.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from review.weights import SampleWeights, sample_weights
from store.schema import HUMAN_PROMPT_SOURCE, Mask, ModelKind, ModelRecord, Prediction, Sample


@dataclass(frozen=True)
class TrainingSample:
    sample_id: int
    path: str
    sha256: str
    defect_class: str
    split: str
    weights: SampleWeights
    target_rle: dict[str, Any] | None  # the Dice target; None: unlabelled
    prompt_points: tuple[tuple[float, float], ...] | None  # teacher's stored prompt (original pixels)
    prompt_labels: tuple[int, ...] | None

    @property
    def labelled(self) -> bool:
        return self.target_rle is not None

    @property
    def target_mask_id(self) -> int | None:
        return self.weights.dice_mask_id


@dataclass(frozen=True)
class TrainingSetCounts:
    labelled: int
    unlabelled: int  # unlabelled crops that take part (they have a teacher prompt)
    unlabelled_without_prompt: int  # left out: the teacher never predicted them
    corrected: int  # Dice target is a human-corrected mask
    approved: int  # Dice target is a model mask a human approved
    verdict_weighted: int  # weights moved by a human or VLM verdict

    def line(self) -> str:
        return (f"{self.labelled} labelled, {self.unlabelled} unlabelled"
                + (f" (+{self.unlabelled_without_prompt} without a teacher prediction, left out)"
                   if self.unlabelled_without_prompt else "")
                + f"; {self.corrected} corrected, {self.approved} approved, {self.verdict_weighted} verdict-weighted")


def latest_teacher_prompts(session: Any, ids: list[int]) -> dict[int, tuple[list[Any], list[Any]]]:
    """sample_id -> (points, labels) of the latest teacher prediction on it."""
    latest = (select(func.max(Prediction.id).label("pid"))
              .join(ModelRecord, ModelRecord.id == Prediction.model_id)
              .where(ModelRecord.kind == ModelKind.TEACHER, Prediction.sample_id.in_(ids),
                     Prediction.prompt_source != HUMAN_PROMPT_SOURCE)  # points alone would not replay a box
              .group_by(Prediction.sample_id).subquery())
    rows = session.execute(select(Prediction.sample_id, Prediction.points, Prediction.labels)
                           .join(latest, latest.c.pid == Prediction.id)).all()
    return {sid: (pts, lbs) for sid, pts, lbs in rows}


def training_samples(project: Any, splits: Iterable[str] = ("train", "val"),
                     weights: dict[int, SampleWeights] | None = None) -> list[TrainingSample]:
    """All samples of `splits` (sorted by id), labelled or not; unlabelled ones without a teacher prompt are
    included with prompt None (the trainer leaves them out; `counts` reports them). Raises review.weights'
    WeightsError on an invalid weights section, before any training starts."""
    weights = sample_weights(project) if weights is None else weights
    with project.db.session() as s:
        rows = s.execute(select(Sample.id, Sample.path, Sample.sha256, Sample.defect_class, Sample.split)
                         .where(Sample.split.in_(list(splits))).order_by(Sample.id)).all()
        ids = [r.id for r in rows]
        idset = set(ids)
        target_ids = {sid: w.dice_mask_id for sid, w in weights.items() if sid in idset and w.dice_mask_id}
        rles = dict(s.execute(select(Mask.id, Mask.rle).where(Mask.id.in_(list(target_ids.values())))).all())
        unlabelled = [sid for sid in ids if sid not in target_ids]
        prompts = latest_teacher_prompts(s, unlabelled) if unlabelled else {}
    out = []
    for r in rows:
        w = weights[r.id]
        mid = target_ids.get(r.id)
        pts = lbs = None
        if mid is None and r.id in prompts:
            pts = tuple((float(x), float(y)) for x, y in prompts[r.id][0])
            lbs = tuple(int(v) for v in prompts[r.id][1])
        out.append(TrainingSample(r.id, r.path, r.sha256, r.defect_class, r.split, w,
                                  rles[mid] if mid is not None else None, pts, lbs))
    return out


def counts(samples: Iterable[TrainingSample]) -> TrainingSetCounts:
    samples = list(samples)
    unl = [x for x in samples if not x.labelled]
    return TrainingSetCounts(
        labelled=sum(x.labelled for x in samples),
        unlabelled=sum(x.prompt_points is not None for x in unl),
        unlabelled_without_prompt=sum(x.prompt_points is None for x in unl),
        corrected=sum(x.weights.dice_target == "corrected" for x in samples),
        approved=sum((x.weights.dice_target or "").startswith("approved") for x in samples),
        verdict_weighted=sum(x.weights.source != "none" for x in samples),
    )
