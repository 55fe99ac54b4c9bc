"""Labels out: verified masks as COCO JSON (RLE), YOLO segmentation or labelme polygons, and the verdict trail as CSV.

A sample's verified mask is, in order: its latest corrected mask, the mask a human verdict approved (teacher better,
both good -> teacher's; student better -> student's), else its ingested ground truth. VLM verdicts never verify
a mask (seed 001: the judge re-weights, it does not label).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pycocotools import mask as mu
from sqlalchemy import select
from sqlalchemy.orm import Session

from review.verdicts import latest_verdicts
from store import rle as rle_mod
from store.db import Database
from store.polygons import mask_to_polygons
from store.schema import Mask, MaskSource, Prediction, Sample, Verdict, VerdictAuthorKind, VerdictKind

LABELME_VERSION = "5.5.0"  # the labelme file format these files follow


def _approved_mask_id(session: Session, verdict: Verdict) -> int | None:
    if verdict.verdict == VerdictKind.CORRECTED:
        return verdict.corrected_mask_id
    source = {
        VerdictKind.TEACHER_BETTER: MaskSource.TEACHER,
        VerdictKind.BOTH_GOOD: MaskSource.TEACHER,
        VerdictKind.STUDENT_BETTER: MaskSource.STUDENT,
    }.get(verdict.verdict)
    if source is None:
        return None
    return session.scalar(
        select(Mask.id)
        .join(Prediction, Prediction.mask_id == Mask.id)
        .where(Mask.sample_id == verdict.sample_id, Mask.source == source)
        .order_by(Mask.id.desc())
        .limit(1)
    )


@dataclass(frozen=True)
class VerifiedLabel:
    sample: Sample
    mask: Mask  # area 0: a verified defect-free crop
    source: str  # "human:<verdict>" or "ground_truth"


def verified_labels(db: Database) -> list[VerifiedLabel]:
    """Every sample that has a verified mask, in id order. Unlabelled crops are left out: writing them without a
    mask would tell a trainer they are defect-free."""
    out = []
    with db.session() as s:
        samples = s.scalars(select(Sample).order_by(Sample.id)).all()
        gt = {m.sample_id: m for m in s.scalars(select(Mask).where(Mask.source == MaskSource.GROUND_TRUTH))}
        human = latest_verdicts(s, VerdictAuthorKind.HUMAN)
        for smp in samples:
            mask, source = None, None
            v = human.get(smp.id)
            if v is not None:
                mid = _approved_mask_id(s, v)
                if mid is not None:
                    mask, source = s.get(Mask, mid), f"human:{v.verdict.value}"
            if mask is None and smp.id in gt:
                mask, source = gt[smp.id], "ground_truth"
            if mask is not None and source is not None:
                out.append(VerifiedLabel(smp, mask, source))
    return out


def _atomic_text(out: Path, text: str) -> None:
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)


def export_coco(db: Database, out: Path) -> int:
    labels = verified_labels(db)
    classes = sorted({lab.sample.defect_class for lab in labels})
    cat_ids = {c: i + 1 for i, c in enumerate(classes)}
    images, anns = [], []
    for lab in labels:
        smp, mask = lab.sample, lab.mask
        images.append({"id": smp.id, "file_name": smp.path, "width": smp.width, "height": smp.height,
                       "sha256": smp.sha256, "split": smp.split})
        if mask.area == 0:
            continue
        enc = {"size": mask.rle["size"], "counts": mask.rle["counts"].encode("ascii")}
        x, y, w, h = (float(v_) for v_ in mu.toBbox(enc))
        anns.append({"id": len(anns) + 1, "image_id": smp.id, "category_id": cat_ids[smp.defect_class],
                     "segmentation": mask.rle, "area": mask.area, "bbox": [x, y, w, h], "iscrowd": 0,
                     "maskbench_source": lab.source})
    doc = {
        "info": {"description": "maskbench verified masks", "date_created": dt.datetime.now(dt.timezone.utc).isoformat()},
        "images": images,
        "annotations": anns,
        "categories": [{"id": i, "name": c} for c, i in cat_ids.items()],
    }
    _atomic_text(out, json.dumps(doc))
    return len(anns)


def _export_name(smp: Sample) -> str:
    """A file name unique in the export (crops of different classes often share a name)."""
    return f"{smp.id:06d}_{Path(smp.path).name}"


def _polygons(lab: VerifiedLabel) -> list[Any]:
    return [] if lab.mask.area == 0 else mask_to_polygons(rle_mod.decode(lab.mask.rle))


def export_yolo(db: Database, out: Path) -> int:
    """YOLO segmentation (Ultralytics layout): images/<split>/, labels/<split>/ with one line per polygon
    `class x1 y1 x2 y2 ...` (coordinates / image size), data.yaml with the class names. A defect-free crop gets an
    empty label file (a background image). Returns the number of polygons."""
    labels = verified_labels(db)
    classes = sorted({lab.sample.defect_class for lab in labels if lab.mask.area > 0})
    ids = {c: i for i, c in enumerate(classes)}
    n = 0
    for lab in labels:
        smp = lab.sample
        split = smp.split or "train"
        name = _export_name(smp)
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(smp.path, out / "images" / split / name)
        lines = []
        for poly in _polygons(lab):
            coords = " ".join(f"{x / smp.width:.6f} {y / smp.height:.6f}" for x, y in poly)
            lines.append(f"{ids[smp.defect_class]} {coords}")
        n += len(lines)
        _atomic_text(out / "labels" / split / f"{Path(name).stem}.txt", "".join(f"{ln}\n" for ln in lines))
    splits = sorted({lab.sample.split or "train" for lab in labels})
    data = {"path": str(out.resolve()), **{sp: f"images/{sp}" for sp in splits},
            "names": dict(enumerate(classes))}
    _atomic_text(out / "data.yaml", yaml.safe_dump(data, sort_keys=False))
    return n


def export_labelme(db: Database, out: Path) -> int:
    """labelme: each crop copied next to its <name>.json (polygon shapes labelled with the defect class; none for a
    defect-free crop). Returns the number of polygons."""
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for lab in verified_labels(db):
        smp = lab.sample
        name = _export_name(smp)
        shutil.copyfile(smp.path, out / name)
        shapes = [{"label": smp.defect_class, "points": poly.tolist(), "group_id": None, "description": "",
                   "shape_type": "polygon", "flags": {}} for poly in _polygons(lab)]
        n += len(shapes)
        doc = {"version": LABELME_VERSION, "flags": {}, "shapes": shapes, "imagePath": name, "imageData": None,
               "imageHeight": smp.height, "imageWidth": smp.width,
               "maskbench": {"source": lab.source, "split": smp.split, "sha256": smp.sha256}}  # kept by labelme
        _atomic_text(out / f"{Path(name).stem}.json", json.dumps(doc, indent=1))
    return n


VERDICT_COLUMNS = ["verdict_id", "sample_id", "path", "defect_class", "author_kind", "author", "verdict",
                   "confidence", "reason", "corrected_mask_id", "supersedes_id", "created_at"]


def export_verdicts_csv(db: Database, out: Path) -> int:
    with db.session() as s:
        rows = s.execute(select(Verdict, Sample).join(Sample, Sample.id == Verdict.sample_id).order_by(Verdict.id)).all()
        tmp = out.with_suffix(out.suffix + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(VERDICT_COLUMNS)
            for v, smp in rows:
                w.writerow([v.id, smp.id, smp.path, smp.defect_class, v.author_kind.value, v.author, v.verdict.value,
                            v.confidence, v.reason, v.corrected_mask_id, v.supersedes_id, v.created_at.isoformat()])
    tmp.replace(out)
    return len(rows)
