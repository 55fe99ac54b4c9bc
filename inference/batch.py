"""Batch predict: every sample of a project through the active teacher or student, results into the store.

* Resumable: samples that already have a Prediction by this model with this prompt source (and flip views) are
  skipped, so a killed run continues where it stopped and a second run does nothing.
* Shardable: `--shard i/n` takes the samples whose id % n == i; n processes (or machines sharing a PostgreSQL store)
  split a project with no coordination and no overlap.
* Each sample's Mask and Prediction are written in one transaction: a crash never leaves a mask without the
  prediction (points, labels, prompt source, score) that explains it.
* Batches: the encoder runs over `batch_size` images at once (the GPU win); embeddings come from the project's
  embedding cache when present, so a second pass with other prompts runs no encoder at all.
* Flip averaging (`flip_views` 2 or 4, inference.flip_ensemble): each crop and its mirrors are encoded and decoded
  one crop at a time and the logits averaged; +0.02-0.03 test IoU at one click on magnetic-tile for the teacher, the
  student and the U-Net alike (docs/benchmarks.md), at 2-4x the compute, so for offline passes (the teacher's).
  Such predictions are stored with their `views` and resume apart from plain ones.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select

from inference.cache import CachedSegmenter
from inference.errors import ModelError
from inference.prompts import mask_prompt, prompt_from_json, prompt_to_json, saliency_prompt
from inference.segmenter import Decoded, Prompt
from store import rle as rle_mod
from store.images import BadFile, load_image
from store.schema import Mask, MaskSource, Prediction, Sample

log = logging.getLogger("maskbench.predict")
ProgressFn = Callable[[int, int], None]
BATCH_PROMPT_SOURCES = ("saliency", "ground_truth", "teacher", "auto")


@dataclass
class PredictReport:
    kind: str
    model_id: int
    model_name: str
    prompt_source: str
    shard: tuple[int, int]
    total: int = 0  # samples in this shard
    already: int = 0  # predicted by an earlier run (skipped)
    predicted: int = 0
    encoded: int = 0  # images that went through the encoder (cache misses)
    failed: list[tuple[int, str]] = field(default_factory=list)
    views: int = 1  # mirror views averaged per crop
    cancelled: bool = False  # stopped by its cancel event; what was predicted is stored, a rerun resumes

    def summary(self) -> str:
        i, n = self.shard
        shard = f" (shard {i}/{n})" if n > 1 else ""
        cached = max(0, self.predicted * self.views - self.encoded)
        line = (f"{self.kind} '{self.model_name}'{shard}: {self.predicted} predicted, {self.already} already done, "
                f"{len(self.failed)} failed; {self.encoded} images encoded, {cached} embeddings from the cache; "
                f"prompts: {self.prompt_source}" + (f"; {self.views} mirror views averaged" if self.views > 1 else "")
                + ("; stopped (a rerun resumes)" if self.cancelled else ""))
        return line


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/n' with 0 <= i < n."""
    if not text:
        return 0, 1
    try:
        a, b = (int(x) for x in text.split("/"))
    except ValueError:
        raise ModelError(f"--shard must look like i/n (e.g. 0/4), not {text!r}") from None
    if b < 1 or not 0 <= a < b:
        raise ModelError(f"--shard {text}: need 0 <= i < n")
    return a, b


def _gt_masks(session: Any, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Per sample, the human-corrected mask if any, else the ingested ground truth (latest of each)."""
    rows = session.execute(
        select(Mask.sample_id, Mask.source, Mask.rle)
        .where(Mask.sample_id.in_(ids), Mask.source.in_([MaskSource.GROUND_TRUTH, MaskSource.CORRECTED]))
        .order_by(Mask.id)
    ).all()
    out: dict[int, dict[str, Any]] = {}
    rank: dict[int, int] = {}
    for sid, src, rle in rows:
        r = 1 if src == MaskSource.CORRECTED else 0
        if r >= rank.get(sid, -1):
            out[sid], rank[sid] = rle, r
    return out


def _teacher_prompts(session: Any, ids: list[int]) -> dict[int, Prompt]:
    """Per sample, the clicks of its latest teacher prediction (so a student answers exactly what the teacher was
    asked: their disagreement is about the masks, not the prompts)."""
    from review.training_set import latest_teacher_prompts

    return {sid: prompt_from_json(pts, lbs, "teacher") for sid, (pts, lbs) in latest_teacher_prompts(session, ids).items()}


def make_prompt(
    source: str, image: np.ndarray, gt_rle: dict[str, Any] | None, sample_id: int, seed: int = 0,
    gt_points: int = 1, gt_negative: int = 0,
) -> Prompt:
    if source == "saliency":
        return saliency_prompt(image)
    if source == "ground_truth":
        if gt_rle is None:
            raise ValueError("no ground-truth mask")
        return mask_prompt(rle_mod.decode(gt_rle), n_positive=gt_points, n_negative=gt_negative, seed=(seed, sample_id))
    raise ModelError(f"prompt source must be one of {', '.join(BATCH_PROMPT_SOURCES)}, not {source!r}")


@dataclass(frozen=True)
class AutoOptions:
    """`--prompts auto`: inference.automask's grid, filters and NMS; the best mask found is the prediction."""

    points_per_side: int = 16
    min_score: float = 0.7
    min_stability: float = 0.8
    nms_iou: float = 0.7


def auto_prediction(segmenter: CachedSegmenter, image: np.ndarray, sha256: str,
                    opts: AutoOptions) -> tuple[Prompt, Decoded]:
    """The automatic-mask generator's best mask, with the grid point that produced it as the prompt (so decoding
    that point reproduces the mask); no mask passing the filters: an empty mask and no points (nothing found)."""
    from inference.automask import generate_masks

    found = generate_masks(segmenter, image, embedding=segmenter.embed(image, sha256),
                           points_per_side=opts.points_per_side,
                           pred_score_thresh=opts.min_score, stability_thresh=opts.min_stability,
                           nms_thresh=opts.nms_iou)
    h, w = image.shape[:2]
    if not found:
        empty = Prompt(np.zeros((0, 2), np.float32), np.zeros(0, np.int32), "auto", {"found": 0})
        return empty, Decoded(logits=np.full((h, w), -1.0, np.float32), score=0.0)
    best = found[0]
    prompt = Prompt(np.asarray([best.point], np.float32), np.ones(1, np.int32), "auto",
                    {"found": len(found), "stability": best.stability})
    return prompt, Decoded(logits=np.where(best.mask, 1.0, -1.0).astype(np.float32), score=best.score)


def predict_project(
    project: Any,
    kind: str,
    device: str | None = "cpu",
    precision: str = "fp32",
    shard: tuple[int, int] = (0, 1),
    batch_size: int = 8,
    prompt_source: str = "saliency",
    progress: ProgressFn | None = None,
    segmenter: CachedSegmenter | None = None,
    seed: int = 0,
    gt_points: int = 1,
    gt_negative: int = 0,
    limit: int | None = None,
    split: str | None = None,
    auto: AutoOptions | None = None,
    flip_views: int = 1,
    cancel: threading.Event | None = None,
) -> PredictReport:
    """Predict `kind`'s masks for the samples it has not predicted with these prompts and views, one transaction per
    sample. `cancel` is looked at between batches: a stop keeps every stored prediction (the GUI's Stop)."""
    if prompt_source not in BATCH_PROMPT_SOURCES:
        raise ModelError(f"prompt source must be one of {', '.join(BATCH_PROMPT_SOURCES)}, not {prompt_source!r}")
    if flip_views not in (1, 2, 4):
        raise ModelError(f"flip views must be 1 (off), 2 or 4, not {flip_views}")
    if flip_views > 1 and prompt_source == "auto":
        raise ModelError("flip averaging takes the clicks of one prompt per crop; --prompts auto finds its own "
                         "(use --flip-views 1 with it)")
    if segmenter is None:
        from inference.registry import load_segmenter

        segmenter = load_segmenter(project, kind, device=device, precision=precision)
    model_id = int(segmenter.model_id)
    i, n = shard
    report = PredictReport(kind=kind, model_id=model_id, model_name=segmenter.name, prompt_source=prompt_source,
                           shard=shard, views=flip_views)
    flips = None
    if flip_views > 1:
        from inference.flip_ensemble import FlipEnsemble

        flips = FlipEnsemble(segmenter, flip_views)
    with project.db.session() as s:
        q = select(Sample.id, Sample.path, Sample.sha256).where(Sample.id % n == i)
        if split is not None:
            q = q.where(Sample.split == split)
        rows = s.execute(q.order_by(Sample.id)).all()
        done = set(s.scalars(select(Prediction.sample_id).where(
            Prediction.model_id == model_id, Prediction.prompt_source == prompt_source,
            Prediction.views == flip_views)))
    todo = [r for r in rows if r.id not in done]
    if limit is not None:
        todo = todo[: max(0, int(limit))]
    report.total = len(rows)
    report.already = len(rows) - len([r for r in rows if r.id not in done])
    count = report.already
    if progress:
        progress(count, report.total)
    dev = str(getattr(segmenter, "device", device) or "")
    prec = str(getattr(segmenter, "precision", precision) or "")
    before = segmenter.encoder_images
    source_enum = MaskSource.TEACHER if kind == "teacher" else MaskSource.STUDENT
    for start in range(0, len(todo), max(1, batch_size)):
        if cancel is not None and cancel.is_set():
            report.cancelled = True
            break
        chunk = todo[start : start + max(1, batch_size)]
        gts: dict[int, dict[str, Any]] = {}
        stored: dict[int, Prompt] = {}
        if prompt_source == "ground_truth":
            with project.db.session() as s:
                gts = _gt_masks(s, [r.id for r in chunk])
        if prompt_source == "teacher":
            with project.db.session() as s:
                stored = _teacher_prompts(s, [r.id for r in chunk])
        items: list[tuple[Any, np.ndarray, Prompt]] = []
        for r in chunk:
            try:
                image = load_image(r.path)
                if prompt_source == "teacher":
                    if r.id not in stored:
                        raise ValueError("no teacher prediction to take the clicks from")
                    if len(stored[r.id].labels) == 0:
                        raise ValueError("the teacher's prediction has no clicks (its automatic masks found nothing)")
                    prompt = stored[r.id]
                elif prompt_source == "auto":
                    prompt = Prompt(np.zeros((0, 2), np.float32), np.zeros(0, np.int32), "auto")  # found below
                else:
                    prompt = make_prompt(prompt_source, image, gts.get(r.id), r.id, seed, gt_points, gt_negative)
            except (BadFile, OSError, ValueError) as exc:
                report.failed.append((r.id, f"{r.path}: {exc}"))
                count += 1
                continue
            items.append((r, image, prompt))
        if items:
            if prompt_source == "auto":  # one grid of prompts per crop on its one embedding
                pairs = [auto_prediction(segmenter, im, r.sha256, auto or AutoOptions()) for r, im, _ in items]
                items = [(r, im, pr) for (r, im, _), (pr, _) in zip(items, pairs)]
                decoded = [dec for _, dec in pairs]
            elif flips is not None:
                embs = flips.embed_stored(segmenter, [im for _, im, _ in items], [r.sha256 for r, _, _ in items])
                decoded = [flips.decode(e, pr.points, pr.labels) for e, (_, _, pr) in zip(embs, items)]
            else:
                decoded = segmenter.predict([it[1] for it in items], [it[2] for it in items],
                                            image_sha256s=[it[0].sha256 for it in items])
            for (r, _, prompt), dec in zip(items, decoded):
                mask = dec.mask
                points, labels = prompt_to_json(prompt)
                with project.db.session() as s:  # one sample = one transaction
                    m = Mask(sample_id=r.id, source=source_enum, model_id=model_id, rle=rle_mod.encode(mask),
                             area=int(mask.sum()))
                    s.add(m)
                    s.flush()
                    s.add(Prediction(sample_id=r.id, model_id=model_id, mask_id=m.id, points=points, labels=labels,
                                     prompt_source=prompt.source, score=float(dec.score), device=dev, precision=prec,
                                     views=flip_views))
                report.predicted += 1
        count += len(items)
        if progress:
            progress(count, report.total)
    report.encoded = segmenter.encoder_images - before
    for sid, why in report.failed:
        log.warning("predict: sample %s skipped: %s", sid, why)
    return report
