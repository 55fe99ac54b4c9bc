"""Building review test projects: real magnetic-tile crops ingested into a store, with teacher and student
predictions written directly (the real models are another package's business): the ground truth and a perturbed
copy of it (dilated, eroded or shifted), so which mask is better is known."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sqlalchemy import select

from store import rle as rle_mod
from store.images import load_image
from store.ingest import ingest
from store.project import Project
from store.schema import Mask, MaskSource, ModelKind, ModelRecord, Prediction, Sample

from fake_openai import request_images

DUMMY_KEY = "sk-test-DUMMYSECRET-0123456789abcdef"
PRICES = {"openai/judge-a": {"input_per_1k": 0.01, "output_per_1k": 0.02},
          "openai/judge-b": {"input_per_1k": 0.005, "output_per_1k": 0.01}}


def judge_config(url: str, **extra: Any) -> dict[str, Any]:
    """project.yaml overrides pointing the judge at the fake server, with known prices."""
    j = {"model": "openai/judge-a", "fallbacks": ["openai/judge-b"], "api_base": url, "prices": PRICES,
         "budget_usd": 5.0, "workers": 2, "timeout_s": 5, "retries": 1, "swap": False}
    j.update(extra)
    return {"judge": j}


def copy_crops(pairs: list[tuple[Path, Path, str]], dest: Path, per_class: int,
               classes: tuple[str, ...] | None = None) -> Path:
    taken: dict[str, int] = {}
    for img, mask, cls in pairs:
        if classes is not None and cls not in classes:
            continue
        if taken.get(cls, 0) >= per_class:
            continue
        taken[cls] = taken.get(cls, 0) + 1
        (dest / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(img, dest / cls)
        shutil.copy(mask, dest / cls)
    return dest


def perturb(gt: np.ndarray, how: str) -> np.ndarray:
    m = gt.astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    if how == "dilate":
        out = cv2.dilate(m, k, iterations=8)
    elif how == "erode":
        out = cv2.erode(m, k, iterations=3)
    elif how == "shift":
        out = np.roll(m, (9, 9), axis=(0, 1))
    elif how == "same":
        out = m
    else:
        raise ValueError(how)
    return out.astype(bool)


def add_model(project: Project, kind: ModelKind, name: str, active: bool = True) -> int:
    with project.db.session() as s:
        m = ModelRecord(name=name, kind=kind, architecture="test", checkpoint_path="-",
                        sha256=hashlib.sha256(name.encode()).hexdigest(), active=active)
        s.add(m)
        s.flush()
        return m.id


def add_prediction(project: Project, sample_id: int, model_id: int, kind: ModelKind, mask: np.ndarray) -> int:
    source = MaskSource.TEACHER if kind == ModelKind.TEACHER else MaskSource.STUDENT
    with project.db.session() as s:
        row = Mask(sample_id=sample_id, source=source, model_id=model_id, rle=rle_mod.encode(mask),
                   area=int(mask.sum()))
        s.add(row)
        s.flush()
        p = Prediction(sample_id=sample_id, model_id=model_id, mask_id=row.id, points=[[1, 1]], labels=[1],
                       prompt_source="ground_truth", score=0.9)
        s.add(p)
        s.flush()
        return p.id


def gt_masks(project: Project) -> dict[int, np.ndarray]:
    with project.db.session() as s:
        rows = s.execute(select(Mask.sample_id, Mask.rle).where(Mask.source == MaskSource.GROUND_TRUTH)).all()
    return {sid: rle_mod.decode(r) for sid, r in rows}


def build_project(root: Path, data: Path, overrides: dict[str, Any] | None = None,
                  scheme: str = "mixed") -> tuple[Project, dict[int, dict[str, np.ndarray]]]:
    """Ingest `data`, then predictions per sample i (in id order): scheme "mixed" cycles through
    teacher=GT/student dilated, teacher=GT/student shifted, teacher dilated/student=GT, teacher=GT/student eroded,
    both=GT. Returns the project and {sample_id: {"gt", "teacher", "student"}}."""
    project = Project.create(root, overrides=overrides or {})
    ingest(project.db, data, workers=2)
    t_id = add_model(project, ModelKind.TEACHER, "teacher-test")
    s_id = add_model(project, ModelKind.STUDENT, "student-test")
    gts = gt_masks(project)
    plan = [("same", "dilate"), ("same", "shift"), ("dilate", "same"), ("same", "erode"), ("same", "same")]
    out: dict[int, dict[str, np.ndarray]] = {}
    for i, sid in enumerate(sorted(gts)):
        gt = gts[sid]
        th, sh = plan[i % len(plan)] if scheme == "mixed" else ("same", "dilate")
        t, st = perturb(gt, th), perturb(gt, sh)
        add_prediction(project, sid, t_id, ModelKind.TEACHER, t)
        add_prediction(project, sid, s_id, ModelKind.STUDENT, st)
        out[sid] = {"gt": gt, "teacher": t, "student": st}
    return project, out


def crop_key(rgb: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rgb).tobytes() + str(rgb.shape).encode()).hexdigest()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.count_nonzero(a | b)
    return 1.0 if u == 0 else np.count_nonzero(a & b) / u


def oracle_label(iou_a: float, iou_b: float) -> str:
    if iou_a >= 0.9 and iou_b >= 0.9:
        return "both_good"
    if iou_a < 0.5 and iou_b < 0.5:
        return "both_bad"
    return "A" if iou_a > iou_b else "B"


def expected_verdict(gt: np.ndarray, teacher: np.ndarray, student: np.ndarray) -> str:
    lab = oracle_label(iou(teacher, gt), iou(student, gt))
    return {"A": "teacher_better", "B": "student_better"}.get(lab, lab)


class Oracle:
    """A judge that looks: it finds the ground truth of the crop it was sent, recovers each mask from its overlay
    (the pixels that differ from the crop) and prefers the one closer to the ground truth."""

    def __init__(self, project: Project) -> None:
        self.gt: dict[str, np.ndarray] = {}
        masks = gt_masks(project)
        with project.db.session() as s:
            for sid, path in s.execute(select(Sample.id, Sample.path)):
                self.gt[crop_key(load_image(path))] = masks[sid]
        self.seen: list[tuple[float, float]] = []

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        crop, a, b = request_images(body)[:3]
        gt = self.gt[crop_key(crop)]
        ma = np.abs(a.astype(int) - crop.astype(int)).max(axis=2) > 3
        mb = np.abs(b.astype(int) - crop.astype(int)).max(axis=2) > 3
        ia, ib = iou(ma, gt), iou(mb, gt)
        self.seen.append((ia, ib))
        return {"label": oracle_label(ia, ib), "confidence": round(min(1.0, 0.5 + abs(ia - ib)), 3),
                "reason": f"iou {ia:.2f} vs {ib:.2f}"}
