"""Projects for the GUI tests: real magnetic-tile crops ingested into a store; some get teacher/student predictions
(perturbed copies of the ground truth, so a disagreement is real and known), flagging and a VLM verdict, the rest
stay plain (point-prompt annotation work)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import select

from review.flagging import flag
from review.verdicts import record_verdict
from store import rle as rle_mod
from store.ingest import ingest
from store.project import Project
from store.schema import Mask, MaskSource, ModelKind, ModelRecord, Prediction

CLASSES = ("MT_Blowhole", "MT_Break", "MT_Crack", "MT_Fray", "MT_Uneven")


def copy_crops(pairs: list[tuple[Path, Path, str]], dest: Path, per_class: int = 3) -> Path:
    taken: dict[str, int] = {}
    for img, mask, cls in pairs:
        if cls not in CLASSES or taken.get(cls, 0) >= per_class:
            continue
        taken[cls] = taken.get(cls, 0) + 1
        (dest / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(img, dest / cls)
        shutil.copy(mask, dest / cls)
    return dest


def _model(project: Project, kind: ModelKind, name: str) -> int:
    with project.db.session() as s:
        m = ModelRecord(name=name, kind=kind, architecture="test", checkpoint_path="-",
                        sha256=hashlib.sha256(name.encode()).hexdigest(), active=True)
        s.add(m)
        s.flush()
        return m.id


def _predict(project: Project, sid: int, model_id: int, kind: ModelKind, mask: np.ndarray) -> None:
    source = MaskSource.TEACHER if kind == ModelKind.TEACHER else MaskSource.STUDENT
    with project.db.session() as s:
        row = Mask(sample_id=sid, source=source, model_id=model_id, rle=rle_mod.encode(mask), area=int(mask.sum()))
        s.add(row)
        s.flush()
        s.add(Prediction(sample_id=sid, model_id=model_id, mask_id=row.id, points=[[1, 1]], labels=[1],
                         prompt_source="ground_truth", score=0.9))


def build_tile_project(root: Path, pairs: list[tuple[Path, Path, str]], predicted: int = 10) -> dict[str, list[int]]:
    """15 crops; the first `predicted` (by id) get predictions and disagreement records, two of the flagged ones a
    VLM verdict. Returns {"all", "predicted", "plain", "vlm"} sample ids."""
    data = copy_crops(pairs, root.parent / f"{root.name}-data")
    with Project.create(root) as project:
        ingest(project.db, data, workers=2)
        with project.db.session() as s:
            gts = {sid: rle_mod.decode(r) for sid, r in
                   s.execute(select(Mask.sample_id, Mask.rle).where(Mask.source == MaskSource.GROUND_TRUTH))}
        ids = sorted(gts)
        t_id = _model(project, ModelKind.TEACHER, "teacher-test")
        s_id = _model(project, ModelKind.STUDENT, "student-test")
        k = np.ones((3, 3), np.uint8)
        for i, sid in enumerate(ids[:predicted]):
            gt = gts[sid].astype(np.uint8)
            teacher = gt.astype(bool)
            student = cv2.dilate(gt, k, iterations=1 + 2 * (i % 4)).astype(bool) if i % 3 else teacher.copy()
            _predict(project, sid, t_id, ModelKind.TEACHER, teacher)
            _predict(project, sid, s_id, ModelKind.STUDENT, student)
        flag(project.db, 0.15, workers=1)
        from store.schema import Disagreement

        with project.db.session() as s:
            flagged = [r for r in s.scalars(select(Disagreement.sample_id).where(Disagreement.flagged.is_(True)))]
        vlm = sorted(flagged)[:2]
        for sid, v in zip(vlm, ("teacher_better", "both_bad")):
            record_verdict(project.db, sid, v, "openai/judge-test", author_kind="vlm", confidence=0.8,
                           reason="the teacher mask follows the crack edge; the student bleeds into the texture")
    return {"all": ids, "predicted": ids[:predicted], "plain": ids[predicted:], "vlm": vlm, "flagged": sorted(flagged)}
