"""Interactive evaluation: how many clicks an annotator needs, the standard NoC protocol (RITM, SimpleClick).

The one-click table says how good the first mask is; an annotator cares about how fast the mask becomes good
enough. This module simulates the annotator: the first click is exactly the ground-truth prompt of
`maskbench predict --prompts ground_truth` (so mIoU@1 here equals that table), every further click goes to the
centre of the largest error region of the current prediction, positive on a missed region, negative on a spill.
All clicks so far are decoded together (SAM's convention), and the image is embedded once: a click only decodes,
as in the GUI.

Reported: mIoU after k clicks and NoC@t (clicks needed to reach IoU t, capped at `max_clicks`; a crop that never
gets there counts `max_clicks` and is also counted as failed), overall (mean over crops, as the one-click table)
and per defect class. Defect-free crops have no object to click on and are skipped (and counted).

Works on anything with `embed(image) -> Embedding` and `decode(embedding, points, labels) -> Decoded`
(inference.segmenter): the teacher, a student, ONNX Runtime sessions, or a classical baseline. No torch here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence, Sized
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import cv2
import numpy as np

from inference.prompts import mask_prompt
from inference.segmenter import Decoded, Embedding, Prompt
from review.metrics import iou

ProgressFn = Callable[[int, int], None]


class ClickSegmenter(Protocol):
    """The part of inference.segmenter.Segmenter that interactive use needs."""

    name: str

    def embed(self, image: np.ndarray) -> Embedding: ...

    def decode(self, embedding: Embedding, points: np.ndarray, labels: np.ndarray) -> Decoded: ...


class InteractiveItem(NamedTuple):
    """One crop to evaluate: `image` (H, W, 3) uint8 RGB, `gt_mask` (H, W) bool."""

    sample_id: int
    defect_class: str
    image: np.ndarray
    gt_mask: np.ndarray


FirstClickFn = Callable[[InteractiveItem, int], Prompt]


class Click(NamedTuple):
    x: float
    y: float
    label: int  # 1 positive (missed defect), 0 negative (spill)


def ground_truth_first_click(item: InteractiveItem, seed: int) -> Prompt:
    """The prompt `maskbench predict --prompts ground_truth` gives this crop (inference.batch.make_prompt with one
    positive point), so click 1 here is the one-click table's click and mIoU@1 reproduces that table."""
    return mask_prompt(item.gt_mask, n_positive=1, n_negative=0, seed=(seed, int(item.sample_id)))


def _largest_component(mask: np.ndarray) -> tuple[np.ndarray | None, int]:
    """(bool mask of the largest 8-connected component, its area); (None, 0) for an empty mask."""
    if not mask.any():
        return None, 0
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:n, cv2.CC_STAT_AREA]
    best = int(np.argmax(areas))  # first of equal areas: deterministic
    return labels == best + 1, int(areas[best])


def _deepest_pixel(region: np.ndarray) -> tuple[int, int]:
    """(x, y) of the region's pixel farthest from its border. The crop border counts as border (zero padding):
    an annotator clicks in the middle of what is wrong, not on the edge of the picture."""
    padded = np.pad(region.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)  # first maximum in row order: deterministic
    return int(x), int(y)


def next_click(gt: np.ndarray, pred: np.ndarray) -> Click | None:
    """Where the simulated annotator clicks next: the centre of the largest connected error region, positive if
    the region is missed defect (gt & ~pred), negative if it is spill (pred & ~gt). A missed region wins a tie
    (finding the defect matters more than trimming). None when the prediction is already perfect."""
    gt = np.asarray(gt, bool)
    pred = np.asarray(pred, bool)
    if gt.shape != pred.shape:
        raise ValueError(f"mask shapes differ: {gt.shape} vs {pred.shape}")
    fn, fn_area = _largest_component(gt & ~pred)
    fp, fp_area = _largest_component(pred & ~gt)
    if fn is None and fp is None:
        return None
    positive = fn_area >= fp_area
    x, y = _deepest_pixel(fn if positive else fp)
    return Click(float(x), float(y), 1 if positive else 0)


@dataclass
class CropResult:
    """One crop's click trace. `ious[k-1]` is the IoU after k clicks, for every k up to `max_clicks`: clicks not
    simulated (early stop, or a perfect mask with nothing left to click) carry the last IoU forward, which is what
    the annotator would see."""

    sample_id: int
    defect_class: str
    clicks: list[Click]
    ious: list[float]
    noc: dict[float, int]  # threshold -> clicks needed (max_clicks if never reached)
    reached: dict[float, bool]


@dataclass
class GroupStats:
    """Aggregates over a set of crops (one class, or all)."""

    n: int
    miou_at: dict[int, float]
    noc: dict[float, float]  # mean NoC
    failed: dict[float, int]  # crops that never reached the threshold within max_clicks


@dataclass
class InteractiveReport:
    model: str
    max_clicks: int
    report_clicks: tuple[int, ...]
    thresholds: tuple[float, ...]
    seed: int
    skipped_empty: int
    decode_calls: int
    overall: GroupStats
    per_class: dict[str, GroupStats]
    crops: list[CropResult] = field(default_factory=list)

    def to_json(self, include_crops: bool = True) -> dict[str, Any]:
        """Plain dict (JSON-serialisable); keys `mIoU@k`, `NoC@85`, `failed@85` as in the papers' tables."""
        out: dict[str, Any] = {
            "model": self.model,
            "protocol": {"max_clicks": self.max_clicks, "report_clicks": list(self.report_clicks),
                         "thresholds": list(self.thresholds), "seed": self.seed,
                         "first_click": "ground_truth (as predict --prompts ground_truth)",
                         "next_click": "centre of the largest error region"},
            "skipped_empty": self.skipped_empty,
            "decode_calls": self.decode_calls,
            "overall": _group_json(self.overall),
            "per_class": {c: _group_json(g) for c, g in sorted(self.per_class.items())},
        }
        if include_crops:
            out["crops"] = [_crop_json(c) for c in self.crops]
        return out

    def to_markdown(self) -> str:
        return render_markdown(self)


def threshold_tag(t: float) -> str:
    """0.85 -> "85", 0.875 -> "87.5": the NoC@85 naming of RITM and SimpleClick."""
    return f"{round(t * 100, 6):g}"


def _finite(v: float, digits: int) -> float | None:
    """None for the NaN of an empty group: strict JSON has no NaN."""
    return round(v, digits) if np.isfinite(v) else None


def _group_json(g: GroupStats) -> dict[str, Any]:
    out: dict[str, Any] = {"n": g.n}
    out.update({f"mIoU@{k}": _finite(v, 6) for k, v in g.miou_at.items()})
    out.update({f"NoC@{threshold_tag(t)}": _finite(v, 4) for t, v in g.noc.items()})
    out.update({f"failed@{threshold_tag(t)}": v for t, v in g.failed.items()})
    return out


def _crop_json(c: CropResult) -> dict[str, Any]:
    return {
        "sample_id": c.sample_id,
        "defect_class": c.defect_class,
        "clicks": [[round(k.x, 3), round(k.y, 3), k.label] for k in c.clicks],
        "ious": [round(v, 6) for v in c.ious],
        "noc": {threshold_tag(t): v for t, v in c.noc.items()},
    }


def render_markdown(report: InteractiveReport) -> str:
    """One row per class and an "all" row: n, mIoU@k, NoC@t and how many crops failed t within the cap."""
    ks = report.report_clicks
    ts = report.thresholds
    head = (["class", "n"] + [f"mIoU@{k}" for k in ks] + [f"NoC@{threshold_tag(t)}" for t in ts]
            + [f">{report.max_clicks}@{threshold_tag(t)}" for t in ts])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    rows = [*sorted(report.per_class.items()), ("all", report.overall)]
    for name, g in rows:
        cells = ([name, str(g.n)] + [f"{g.miou_at[k]:.3f}" for k in ks] + [f"{g.noc[t]:.2f}" for t in ts]
                 + [str(g.failed[t]) for t in ts])
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"{report.model}: first click as `predict --prompts ground_truth` (seed {report.seed}), then the "
                 f"centre of the largest error region; NoC capped at {report.max_clicks} clicks; "
                 f"{report.skipped_empty} defect-free crops skipped.")
    return "\n".join(lines) + "\n"


def _noc(ious: Sequence[float], threshold: float, max_clicks: int) -> tuple[int, bool]:
    """(clicks needed to reach `threshold`, reached at all); max_clicks when never reached."""
    for k, v in enumerate(ious, start=1):
        if v >= threshold:
            return k, True
    return max_clicks, False


def _decode_mask(segmenter: ClickSegmenter, emb: Embedding, clicks: list[Click], shape: tuple[int, ...]) -> np.ndarray:
    points = np.array([[c.x, c.y] for c in clicks], np.float32).reshape(-1, 2)
    labels = np.array([c.label for c in clicks], np.int32)
    mask = np.asarray(segmenter.decode(emb, points, labels).mask, bool)
    if mask.shape != shape:
        raise ValueError(f"segmenter returned a {mask.shape} mask for a {shape} crop")
    return mask


def simulate_crop(
    segmenter: ClickSegmenter,
    item: InteractiveItem,
    first: Prompt,
    max_clicks: int,
    stop_after: int,
    stop_iou: float,
) -> tuple[list[Click], list[float]]:
    """Click until `max_clicks`, a perfect mask, or (early stop) IoU >= `stop_iou` once at least `stop_after`
    clicks are done: past that point nothing reported can change. Returns the clicks made and the IoU after each."""
    gt = np.asarray(item.gt_mask, bool)
    if len(first.points) != 1:
        raise ValueError(f"the first click must be one point, got {len(first.points)}")
    emb = segmenter.embed(item.image)
    clicks = [Click(float(first.points[0][0]), float(first.points[0][1]), int(first.labels[0]))]
    ious: list[float] = []
    while True:
        pred = _decode_mask(segmenter, emb, clicks, gt.shape)
        ious.append(iou(pred, gt))
        if len(clicks) >= max_clicks or (len(clicks) >= stop_after and ious[-1] >= stop_iou):
            break
        nxt = next_click(gt, pred)
        if nxt is None:
            break
        clicks.append(nxt)
    return clicks, ious


def _aggregate(crops: Sequence[CropResult], report_clicks: Sequence[int], thresholds: Sequence[float]) -> GroupStats:
    n = len(crops)

    def mean(vals: Iterable[float]) -> float:
        vals = list(vals)
        return float(np.mean(vals)) if vals else float("nan")

    return GroupStats(
        n=n,
        miou_at={k: mean(c.ious[k - 1] for c in crops) for k in report_clicks},
        noc={t: mean(c.noc[t] for c in crops) for t in thresholds},
        failed={t: sum(1 for c in crops if not c.reached[t]) for t in thresholds},
    )


def _check_protocol(max_clicks: int, report_clicks: Sequence[int], thresholds: Sequence[float]) -> None:
    if max_clicks < 1:
        raise ValueError(f"max_clicks must be at least 1, got {max_clicks}")
    if not report_clicks or not thresholds:
        raise ValueError("report_clicks and thresholds must not be empty")
    if min(report_clicks) < 1 or max(report_clicks) > max_clicks:
        raise ValueError(f"report_clicks must lie in 1..{max_clicks}, got {tuple(report_clicks)}")
    if not all(0.0 < t <= 1.0 for t in thresholds):
        raise ValueError(f"thresholds must lie in (0, 1], got {tuple(thresholds)}")


def evaluate(
    segmenter: ClickSegmenter,
    items: Iterable[InteractiveItem | tuple[int, str, np.ndarray, np.ndarray]],
    max_clicks: int = 20,
    report_clicks: Sequence[int] = (1, 3, 5),
    thresholds: Sequence[float] = (0.85, 0.90),
    seed: int = 0,
    first_click: FirstClickFn | None = None,
    progress: ProgressFn | None = None,
    total: int | None = None,
) -> InteractiveReport:
    """Simulate an annotator on every crop with a defect and aggregate. `items` may be a generator (crops are
    loaded one at a time); `total` (default len(items) when it has one) is only for `progress(done, total)`."""
    report_clicks = tuple(sorted(set(int(k) for k in report_clicks)))
    thresholds = tuple(sorted(set(float(t) for t in thresholds)))
    _check_protocol(max_clicks, report_clicks, thresholds)
    first_click = first_click or ground_truth_first_click
    if total is None:
        total = len(items) if isinstance(items, Sized) else 0
    crops: list[CropResult] = []
    skipped = 0
    decodes = 0
    for done, raw in enumerate(items, start=1):
        item = InteractiveItem(*raw)
        if not np.asarray(item.gt_mask, bool).any():
            skipped += 1
        else:
            crop = _evaluate_crop(segmenter, item, first_click(item, seed), max_clicks, report_clicks, thresholds)
            decodes += len(crop.clicks)
            crops.append(crop)
        if progress is not None:
            progress(done, max(total, done))
    by_class: dict[str, list[CropResult]] = {}
    for c in crops:
        by_class.setdefault(c.defect_class, []).append(c)
    return InteractiveReport(
        model=segmenter.name,
        max_clicks=max_clicks,
        report_clicks=report_clicks,
        thresholds=thresholds,
        seed=seed,
        skipped_empty=skipped,
        decode_calls=decodes,
        overall=_aggregate(crops, report_clicks, thresholds),
        per_class={cls: _aggregate(cs, report_clicks, thresholds) for cls, cs in sorted(by_class.items())},
        crops=crops,
    )


def _evaluate_crop(
    segmenter: ClickSegmenter,
    item: InteractiveItem,
    first: Prompt,
    max_clicks: int,
    report_clicks: tuple[int, ...],
    thresholds: tuple[float, ...],
) -> CropResult:
    clicks, ious = simulate_crop(segmenter, item, first, max_clicks, stop_after=max(report_clicks),
                                 stop_iou=max(thresholds))
    padded = ious + [ious[-1]] * (max_clicks - len(ious))
    noc = {t: _noc(ious, t, max_clicks) for t in thresholds}
    return CropResult(
        sample_id=int(item.sample_id),
        defect_class=str(item.defect_class),
        clicks=clicks,
        ious=padded,
        noc={t: v[0] for t, v in noc.items()},
        reached={t: v[1] for t, v in noc.items()},
    )
