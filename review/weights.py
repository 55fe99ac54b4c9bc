"""Per-sample distillation weights from the review verdicts (policy documented in docs/weights.md).

Three loss terms get their own weight: `feature` (teacher embedding alignment), `soft` (teacher soft-mask BCE) and
`dice` (supervised Dice against a verified mask). Human verdicts set the policy weights outright and can create
ground truth (a corrected mask) or, on a crop without ground truth, promote the model mask they approved to the Dice
target; VLM verdicts only re-weight, scaled by their confidence and a trust factor:
w = 1 + trust * confidence * (w_policy - 1). Samples without a verdict keep 1.

Dice target, first that applies: a human-corrected mask ("corrected"), the ingested ground truth ("ground_truth"),
the teacher's mask a human "teacher better" / "both good" approved ("approved_teacher"), the student's mask a human
"student better" approved ("approved_student"); else none and dice = 0.

The trainer reads `sample_weights(project)`; `maskbench weights --out weights.csv` writes the same numbers.
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.db import Database
from store.errors import UserError
from store.schema import Sample, Verdict, VerdictAuthorKind, VerdictKind

from review.verdicts import approved_masks, ground_truth_masks, latest_verdicts


class WeightsError(UserError):
    pass


# Dice target kinds, strongest first: a correction or the ingested ground truth always wins over an approved mask.
DICE_TARGETS = ("corrected", "ground_truth", "approved_teacher", "approved_student")


@dataclass(frozen=True)
class SampleWeights:
    feature: float
    soft: float
    dice: float
    hard: bool
    verdict: str | None = None  # the verdict the weights follow
    source: str = "none"  # human | vlm | none
    confidence: float | None = None
    dice_target: str | None = None  # one of DICE_TARGETS, or None (no Dice target: dice weight 0)
    dice_mask_id: int | None = None


@dataclass(frozen=True)
class WeightPolicy:
    student_better_teacher_scale: float = 0.3  # teacher terms when the student's mask is better
    both_bad_teacher_scale: float = 0.0  # teacher terms when both masks are bad (until a corrected mask exists)
    hard_sample_scale: float = 2.0  # every term of a sample with a human-corrected mask
    corrected_soft_scale: float = 0.0  # soft term of a corrected sample, before the hard scale
    vlm_trust: float = 0.5  # how far a VLM verdict moves the weights towards the policy (0: ignore the VLM)

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> WeightPolicy:
        """The policy of project.yaml's `weights:` section (missing keys take the defaults). Raises WeightsError,
        one line, on an unknown key (naming the closest valid one), a value that is not a number, a negative value
        or vlm_trust above 1."""
        w = (cfg or {}).get("weights")
        if w is None:
            w = {}
        if not isinstance(w, dict):
            raise WeightsError(f"project.yaml weights must be a mapping of names to numbers, "
                               f"got {type(w).__name__}")
        known = [f.name for f in fields(cls)]
        values: dict[str, float] = {}
        for key, value in w.items():
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(known)}"
                raise WeightsError(f"project.yaml weights: unknown key {key!r} ({hint})")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise WeightsError(f"project.yaml weights.{key} must be a number (float), "
                                   f"got {type(value).__name__} {value!r}")
            values[key] = float(value)
        policy = cls(**values)
        for f in fields(policy):
            v = getattr(policy, f.name)
            if not v >= 0 or v == float("inf"):  # NaN fails too
                raise WeightsError(f"project.yaml weights.{f.name} must be a finite number >= 0, got {v}")
        if policy.vlm_trust > 1:
            raise WeightsError("project.yaml weights.vlm_trust must be within 0..1")
        return policy

    def base(self, kind: VerdictKind | None) -> tuple[float, float, float, bool]:
        """(feature, soft, dice, hard) for a verdict taken at face value."""
        if kind == VerdictKind.STUDENT_BETTER:
            s = self.student_better_teacher_scale
            return s, s, 1.0, False
        if kind == VerdictKind.BOTH_BAD:
            s = self.both_bad_teacher_scale
            return s, s, 1.0, False
        if kind == VerdictKind.CORRECTED:
            h = self.hard_sample_scale
            return h, self.corrected_soft_scale * h, h, True
        return 1.0, 1.0, 1.0, False  # teacher better, both good, uncertain, none


def weights_for(policy: WeightPolicy, human: Verdict | None, vlm: Verdict | None, has_corrected: bool,
                dice_target: tuple[int, str] | None) -> SampleWeights:
    """Weights of one sample from its effective human verdict, else its latest VLM verdict."""
    target_id, target_kind = dice_target if dice_target is not None else (None, None)
    if human is not None:
        kind = human.verdict
        if kind == VerdictKind.BOTH_BAD and has_corrected:
            kind = VerdictKind.CORRECTED  # both bad, then a corrected mask: the corrected policy applies
        f, s, d, hard = policy.base(kind)
        src, verdict, conf = "human", human.verdict.value, human.confidence
    elif vlm is not None:
        pf, ps, pd, _ = policy.base(vlm.verdict)
        k = policy.vlm_trust * float(vlm.confidence or 0.0)
        f, s, d = (1 + k * (pf - 1), 1 + k * (ps - 1), 1 + k * (pd - 1))
        hard, src, verdict, conf = False, "vlm", vlm.verdict.value, vlm.confidence
    else:
        f, s, d, hard, src, verdict, conf = 1.0, 1.0, 1.0, False, "none", None, None
    if target_id is None:
        d = 0.0  # nothing to supervise the Dice term with
    return SampleWeights(round(f, 6), round(s, 6), round(d, 6), hard, verdict, src, conf, target_kind, target_id)


def dice_targets(session: Session, sample_ids: Iterable[int] | None = None) -> dict[int, tuple[int, str]]:
    """sample_id -> (mask id, kind in DICE_TARGETS): a human-corrected mask, else the ingested ground truth, else the
    model mask the effective human verdict approved (docs/weights.md, "Dice target")."""
    ids = None if sample_ids is None else list(sample_ids)
    out = approved_masks(session, ids)
    out.update(ground_truth_masks(session, ids))  # ingested ground truth and corrections win over approvals
    return out


def compute_weights(session: Session, policy: WeightPolicy) -> dict[int, SampleWeights]:
    ids = list(session.scalars(select(Sample.id).order_by(Sample.id)))
    human = latest_verdicts(session, VerdictAuthorKind.HUMAN)
    vlm = latest_verdicts(session, VerdictAuthorKind.VLM)
    targets = dice_targets(session)
    return {sid: weights_for(policy, human.get(sid), vlm.get(sid), targets.get(sid, (None, ""))[1] == "corrected",
                             targets.get(sid)) for sid in ids}


def sample_weights(project: Any = None, *, db: Database | None = None,
                   config: dict[str, Any] | None = None) -> dict[int, SampleWeights]:
    """sample_id -> SampleWeights for every sample of a project (or of `db` with `config`'s weights section)."""
    if project is not None:
        db, config = project.db, project.config if config is None else config
    if db is None:
        raise WeightsError("sample_weights needs a project or a database")
    policy = WeightPolicy.from_config(config)
    with db.session() as s:
        return compute_weights(s, policy)


CSV_COLUMNS = ["sample_id", "path", "defect_class", "split", "feature", "soft", "dice", "hard", "verdict", "source",
               "confidence", "dice_target", "dice_mask_id"]


def write_csv(project: Any, out: Path | str) -> dict[str, int]:
    """Write every sample's weights; returns counts per weight source (human / vlm / none)."""
    out = Path(out)
    weights = sample_weights(project)
    with project.db.session() as s:
        meta = {r[0]: r[1:] for r in s.execute(select(Sample.id, Sample.path, Sample.defect_class, Sample.split))}
    counts = {"human": 0, "vlm": 0, "none": 0}
    if out.parent and not out.parent.exists():
        raise WeightsError(f"cannot write {out}: folder {out.parent} does not exist")
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for sid, sw in weights.items():
            path, cls, split = meta[sid]
            counts[sw.source] += 1
            w.writerow([sid, path, cls, split, f"{sw.feature:g}", f"{sw.soft:g}", f"{sw.dice:g}", int(sw.hard),
                        sw.verdict or "", sw.source, "" if sw.confidence is None else f"{sw.confidence:g}",
                        sw.dice_target or "", "" if sw.dice_mask_id is None else sw.dice_mask_id])
    tmp.replace(out)
    return counts
