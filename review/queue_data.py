"""The review queue as column arrays, and the numpy filters over them.

The table model never asks the database per row: `load_queue` reads every sample's queue fields in one pass
(review.queue_rows.review_queue: samples joined with their latest disagreement, latest VLM and standing human
verdict, plus review.queue_order.hardness of each compared crop), and filters are boolean masks over these arrays,
so 100,000 rows filter in a few milliseconds. The sort orders of the queue's columns live here too
(`QueueColumns.sorted_rows`), so the table model and review.session.ReviewSession order the queue alike.

Qt-free (moved from widgets/): the review session and the CLI-side tests read the queue without a display.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select

from review.queue_order import hardness
from review.queue_rows import review_queue
from review.verdicts import latest_verdicts
from store.db import Database
from store.schema import Sample, VerdictAuthorKind

# Codes for verdict columns; -1 means none.
VERDICTS = ("teacher_better", "student_better", "both_good", "both_bad", "corrected", "uncertain")
VERDICT_CODE = {v: i for i, v in enumerate(VERDICTS)}
VERDICT_LABEL = {
    "teacher_better": "teacher better",
    "student_better": "student better",
    "both_good": "both good",
    "both_bad": "both bad",
    "corrected": "corrected",
    "uncertain": "uncertain",
}
STATUSES = ("pending", "judged", "reviewed")
SORT_COLUMNS = ("id", "class", "iou", "hardness", "vlm", "vlm_conf", "human")


@dataclass
class QueueColumns:
    sample_id: np.ndarray  # int64
    path: np.ndarray  # object (str)
    cls: np.ndarray  # int16 code into `classes`
    classes: list[str]
    iou: np.ndarray  # float32 teacher/student IoU, NaN when the sample has no disagreement record
    flagged: np.ndarray  # bool
    vlm: np.ndarray  # int8 code into VERDICTS, -1 none
    vlm_conf: np.ndarray  # float32, NaN none
    human: np.ndarray  # int8 code into VERDICTS, -1 none
    # float64 expected gain of a verdict (review.queue_order.hardness), NaN without a disagreement record
    hardness: np.ndarray | None = None
    row_of: dict[int, int] = field(default_factory=dict)  # sample id -> row

    def __post_init__(self) -> None:
        if self.hardness is None:
            self.hardness = np.full(len(self.sample_id), np.nan, np.float64)
        if not self.row_of:
            self.row_of = {int(s): i for i, s in enumerate(self.sample_id)}

    def __len__(self) -> int:
        return int(self.sample_id.shape[0])

    @staticmethod
    def empty() -> QueueColumns:
        return QueueColumns(np.zeros(0, np.int64), np.zeros(0, object), np.zeros(0, np.int16), [],
                            np.zeros(0, np.float32), np.zeros(0, bool), np.zeros(0, np.int8),
                            np.zeros(0, np.float32), np.zeros(0, np.int8))

    def status_code(self) -> np.ndarray:
        """0 pending, 1 judged (VLM only), 2 reviewed (a human verdict stands)."""
        out = np.zeros(len(self), np.int8)
        out[self.vlm >= 0] = 1
        out[self.human >= 0] = 2
        return out

    def disagreement(self) -> np.ndarray:
        """VLM and human both gave a verdict and they differ (a human correction agrees with 'both bad')."""
        both = (self.vlm >= 0) & (self.human >= 0)
        human = np.where(self.human == VERDICT_CODE["corrected"], VERDICT_CODE["both_bad"], self.human)
        return both & (human != self.vlm)

    def default_order(self) -> np.ndarray:
        """Flagged first, then most disagreement (lowest IoU) first, samples without a comparison last."""
        iou = np.where(np.isnan(self.iou), 2.0, self.iou)
        return np.lexsort((self.sample_id, iou, ~self.flagged)).astype(np.int64)

    def sorted_rows(self, column: str | None = None, descending: bool = False) -> np.ndarray:
        """Queue rows sorted by one of SORT_COLUMNS (stable; NaN IoU or confidence last); None: default_order."""
        if column == "hardness":
            return self._hardness_order(descending)
        key: np.ndarray
        if column == "id":
            key = self.sample_id
        elif column == "class":
            key = self.cls
        elif column in ("iou", "vlm_conf"):
            vals = self.iou if column == "iou" else self.vlm_conf
            key = np.where(np.isnan(vals), np.inf, vals)
        elif column in ("vlm", "human"):
            key = self.vlm if column == "vlm" else self.human
        else:
            return self.default_order()
        idx = np.argsort(key, kind="stable")
        return idx[::-1].copy() if descending else idx

    def _hardness_order(self, descending: bool) -> np.ndarray:
        """By hardness (descending: review.queue_order's "hardness" order, ties to the lower IoU, then the lower
        sample id); crops without a comparison last in both directions."""
        h = self.hardness
        missing = np.isnan(h)
        key = np.where(missing, 0.0, h)
        iou = np.where(np.isnan(self.iou), 2.0, self.iou.astype(np.float64))
        if descending:
            return np.lexsort((self.sample_id, iou, -key, missing)).astype(np.int64)
        return np.lexsort((self.sample_id, -iou, key, missing)).astype(np.int64)

    def shown_rows(self, f: QueueFilter | None = None, column: str | None = None,
                   descending: bool = False) -> np.ndarray:
        """The rows a view shows, in order: sorted_rows, then those passing the filter."""
        base = self.sorted_rows(column, descending)
        return base if f is None else base[f.mask(self)[base]]


@dataclass
class QueueFilter:
    statuses: frozenset[str] | None = None  # subset of STATUSES; None: all
    classes: frozenset[str] | None = None
    iou_min: float = 0.0
    iou_max: float = 1.0
    include_no_iou: bool = True  # samples not compared yet pass the IoU range when it is the full range
    vlm: frozenset[str] | None = None  # verdict names, plus "none" for not judged
    disagreement_only: bool = False
    flagged_only: bool = False

    def mask(self, q: QueueColumns) -> np.ndarray:
        m = np.ones(len(q), bool)
        if self.statuses is not None:
            codes = [STATUSES.index(s) for s in self.statuses]
            m &= np.isin(q.status_code(), codes)
        if self.classes is not None:
            codes = [q.classes.index(c) for c in self.classes if c in q.classes]
            m &= np.isin(q.cls, codes)
        full = self.iou_min <= 0.0 and self.iou_max >= 1.0
        if not full:
            with np.errstate(invalid="ignore"):
                m &= (q.iou >= self.iou_min) & (q.iou <= self.iou_max)
        elif not self.include_no_iou:
            m &= ~np.isnan(q.iou)
        if self.vlm is not None:
            codes = [VERDICT_CODE[v] for v in self.vlm if v in VERDICT_CODE] + ([-1] if "none" in self.vlm else [])
            m &= np.isin(q.vlm, codes)
        if self.disagreement_only:
            m &= q.disagreement()
        if self.flagged_only:
            m &= q.flagged
        return m


def load_queue(db: Database) -> QueueColumns:
    """Every sample of the project: those compared by teacher/student through review.queue_rows.review_queue (one
    query), plus crops with no comparison yet (plain annotation work) with their human verdicts."""
    with db.session() as s:
        rows = review_queue(s, flagged_only=False, order="sample")
        compared = {r.sample_id for r in rows}
        rest = [r for r in s.execute(select(Sample.id, Sample.path, Sample.defect_class).order_by(Sample.id))
                if r[0] not in compared]
        rest_human = latest_verdicts(s, VerdictAuthorKind.HUMAN, [r[0] for r in rest]) if rest else {}
        rest_human_v = {sid: v.verdict.value for sid, v in rest_human.items()}
    n = len(rows) + len(rest)
    if n == 0:
        return QueueColumns.empty()
    ids = [r.sample_id for r in rows] + [r[0] for r in rest]
    cls_names = [r.defect_class for r in rows] + [r[2] for r in rest]
    classes = sorted(set(cls_names))
    cls_index = {c: i for i, c in enumerate(classes)}
    nan = float("nan")
    k = len(rest)
    return QueueColumns(
        sample_id=np.array(ids, np.int64),
        path=np.array([r.path for r in rows] + [r[1] for r in rest], dtype=object),
        cls=np.fromiter((cls_index[c] for c in cls_names), np.int16, n),
        classes=classes,
        iou=np.array([r.iou_ts for r in rows] + [nan] * k, np.float32),
        flagged=np.array([r.flagged for r in rows] + [False] * k, bool),
        vlm=np.array([VERDICT_CODE.get(r.vlm_verdict or "", -1) for r in rows] + [-1] * k, np.int8),
        vlm_conf=np.array([nan if r.vlm_confidence is None else r.vlm_confidence for r in rows] + [nan] * k,
                          np.float32),
        human=np.array([VERDICT_CODE.get(r.human_verdict or "", -1) for r in rows]
                       + [VERDICT_CODE.get(rest_human_v.get(r[0], ""), -1) for r in rest], np.int8),
        hardness=np.concatenate([_hardness(rows), np.full(k, nan, np.float64)]),
    )


def _hardness(rows: list) -> np.ndarray:
    """review.queue_order.hardness over the compared rows, computed as the domain's ordering does (float64)."""
    def arr(vals: list[float | None]) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in vals], np.float64)

    if not rows:
        return np.zeros(0, np.float64)
    return hardness(arr([r.iou_ts for r in rows]), arr([r.teacher_score for r in rows]),
                    arr([r.student_score for r in rows]))
