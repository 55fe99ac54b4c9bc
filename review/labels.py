"""Labels out: verified masks as COCO JSON (RLE) and the verdict trail as CSV.

A sample's verified mask is, in order: its latest corrected mask, the mask a human verdict approved (teacher better,
both good -> teacher's; student better -> student's), else its ingested ground truth. VLM verdicts never verify
a mask (seed 001: the judge re-weights, it does not label).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

from pycocotools import mask as mu
from sqlalchemy import select
from sqlalchemy.orm import Session

from review.verdicts import latest_verdicts
from store.db import Database
from store.schema import Mask, MaskSource, Prediction, Sample, Verdict, VerdictAuthorKind, VerdictKind


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


def export_coco(db: Database, out: Path) -> int:
    with db.session() as s:
        samples = s.scalars(select(Sample).order_by(Sample.id)).all()
        gt = {m.sample_id: m for m in s.scalars(select(Mask).where(Mask.source == MaskSource.GROUND_TRUTH))}
        human = latest_verdicts(s, VerdictAuthorKind.HUMAN)
        classes = sorted({x.defect_class for x in samples})
        cat_ids = {c: i + 1 for i, c in enumerate(classes)}
        images, anns = [], []
        for smp in samples:
            images.append({"id": smp.id, "file_name": smp.path, "width": smp.width, "height": smp.height,
                           "sha256": smp.sha256, "split": smp.split})
            mask, source = None, None
            v = human.get(smp.id)
            if v is not None:
                mid = _approved_mask_id(s, v)
                if mid is not None:
                    mask, source = s.get(Mask, mid), f"human:{v.verdict.value}"
            if mask is None and smp.id in gt:
                mask, source = gt[smp.id], "ground_truth"
            if mask is None or mask.area == 0:
                continue
            enc = {"size": mask.rle["size"], "counts": mask.rle["counts"].encode("ascii")}
            x, y, w, h = (float(v_) for v_ in mu.toBbox(enc))
            anns.append({"id": len(anns) + 1, "image_id": smp.id, "category_id": cat_ids[smp.defect_class],
                         "segmentation": mask.rle, "area": mask.area, "bbox": [x, y, w, h], "iscrowd": 0,
                         "maskbench_source": source})
    doc = {
        "info": {"description": "maskbench verified masks", "date_created": dt.datetime.now(dt.timezone.utc).isoformat()},
        "images": images,
        "annotations": anns,
        "categories": [{"id": i, "name": c} for c, i in cat_ids.items()],
    }
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    tmp.replace(out)
    return len(anns)


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
