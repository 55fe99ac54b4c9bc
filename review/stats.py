"""Review statistics per class: VLM-vs-human agreement and the share of disagreements the student wins.

Only flagged samples (latest disagreement record) count. Agreement compares the VLM's latest verdict with the
human's effective verdict where both exist; pairs where the human corrected the mask or the VLM was uncertain are
not comparable and are counted apart. "Student wins" is student_better over all decided verdicts (teacher better,
student better, both good, both bad), by human verdicts alone and by effective verdicts (human, else VLM).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import select

from store.db import Database
from store.schema import Disagreement, Sample, VerdictAuthorKind, VerdictKind

from review.verdicts import latest_disagreements_subquery, latest_verdicts

DECIDED = frozenset({VerdictKind.TEACHER_BETTER, VerdictKind.STUDENT_BETTER, VerdictKind.BOTH_GOOD,
                     VerdictKind.BOTH_BAD})


def _share(n: int, d: int) -> float | None:
    return n / d if d else None


@dataclass
class ClassStats:
    flagged: int = 0
    vlm: int = 0
    human: int = 0
    compared: int = 0  # both verdicts, comparable
    agreed: int = 0
    not_comparable: int = 0  # both verdicts, but human corrected or VLM uncertain
    decided_human: int = 0
    student_wins_human: int = 0
    decided: int = 0  # effective verdicts (human, else VLM)
    student_wins: int = 0
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)  # (human, vlm) -> count

    @property
    def agreement(self) -> float | None:
        return _share(self.agreed, self.compared)

    @property
    def student_win_share_human(self) -> float | None:
        return _share(self.student_wins_human, self.decided_human)

    @property
    def student_win_share(self) -> float | None:
        return _share(self.student_wins, self.decided)

    def add(self, other: ClassStats) -> None:
        for name in ("flagged", "vlm", "human", "compared", "agreed", "not_comparable", "decided_human",
                     "student_wins_human", "decided", "student_wins"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.confusion.update(other.confusion)


@dataclass
class AgreementStats:
    per_class: dict[str, ClassStats]
    total: ClassStats


def agreement_stats(db: Database) -> AgreementStats:
    latest = latest_disagreements_subquery()
    with db.session() as s:
        rows = s.execute(
            select(Sample.id, Sample.defect_class)
            .join(latest, latest.c.sample_id == Sample.id)
            .join(Disagreement, Disagreement.id == latest.c.did)
            .where(Disagreement.flagged.is_(True))
        ).all()
        human = latest_verdicts(s, VerdictAuthorKind.HUMAN)
        vlm = latest_verdicts(s, VerdictAuthorKind.VLM)
    per: dict[str, ClassStats] = {}
    for sid, cls in rows:
        c = per.setdefault(cls, ClassStats())
        c.flagged += 1
        h, v = human.get(sid), vlm.get(sid)
        c.human += h is not None
        c.vlm += v is not None
        if h is not None and v is not None:
            c.confusion[(h.verdict.value, v.verdict.value)] += 1
            if h.verdict in DECIDED and v.verdict in DECIDED:
                c.compared += 1
                c.agreed += h.verdict == v.verdict
            else:
                c.not_comparable += 1
        if h is not None and h.verdict in DECIDED:
            c.decided_human += 1
            c.student_wins_human += h.verdict == VerdictKind.STUDENT_BETTER
        eff = h if h is not None else v
        if eff is not None and eff.verdict in DECIDED:
            c.decided += 1
            c.student_wins += eff.verdict == VerdictKind.STUDENT_BETTER
    total = ClassStats()
    for c in per.values():
        total.add(c)
    return AgreementStats(dict(sorted(per.items())), total)
