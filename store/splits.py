"""Stratified, seeded train/val/test split stored on the samples.

Only samples without a split are assigned, so re-ingesting or adding data never moves a sample between splits
(a test crop must never become a training crop between two runs). Order within a class comes from a hash of the
content sha256 and the seed, so the split does not depend on file names or ingest order.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

from sqlalchemy import bindparam, select

from store.db import Database
from store.schema import Sample

SPLITS = ("train", "val", "test")


def _key(sha: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{sha}".encode()).hexdigest()


def assign_splits(db: Database, ratios: tuple[float, ...] = (0.8, 0.1, 0.1), seed: int = 1234) -> int:
    if len(ratios) != 3 or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"split ratios must be three numbers summing to 1, got {ratios}")
    with db.session() as s:
        rows = s.execute(select(Sample.id, Sample.sha256, Sample.defect_class).where(Sample.split.is_(None))).all()
        by_class: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for sid, sha, cls in rows:
            by_class[cls].append((sid, sha))
        updates: list[dict[str, object]] = []
        for items in by_class.values():
            items.sort(key=lambda it: _key(it[1], seed))
            n = len(items)
            n_val = round(n * ratios[1])
            n_test = round(n * ratios[2])
            n_train = n - n_val - n_test
            for i, (sid, _) in enumerate(items):
                split = "train" if i < n_train else ("val" if i < n_train + n_val else "test")
                updates.append({"id": sid, "split": split})
        if updates:
            table = Sample.__table__
            s.execute(table.update().where(table.c.id == bindparam("b_id")),
                      [{"b_id": u["id"], "split": u["split"]} for u in updates])
    return len(updates)
