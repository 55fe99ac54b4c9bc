"""YOLO segmentation and labelme exports of the verified masks, re-ingested: the same crops, classes and masks
(within polygon tolerance); unlabelled crops are not written as defect-free."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from sqlalchemy import select

from app.cli import main
from store import rle as rle_mod
from store.ingest import ingest
from store.project import Project
from store.schema import Mask, MaskSource, Sample


def _gt_by_sha(root: Path) -> dict[str, tuple[str, np.ndarray | None]]:
    with Project.open(root) as p, p.db.session() as s:
        out = {}
        for smp in s.scalars(select(Sample)):
            m = s.scalar(select(Mask).where(Mask.sample_id == smp.id, Mask.source == MaskSource.GROUND_TRUTH))
            out[smp.sha256] = (smp.defect_class, None if m is None else rle_mod.decode(m.rle))
        return out


@pytest.fixture
def labelled_project(tmp_path: Path, magnetic_tile_pairs: list) -> Path:
    data = tmp_path / "data"
    picks = ([p for p in magnetic_tile_pairs if p[2] == "MT_Crack"][:4] + [p for p in magnetic_tile_pairs
             if p[2] == "MT_Blowhole"][:3] + [p for p in magnetic_tile_pairs if p[2] == "MT_Free"][:2])
    for img, mask, cls in picks:
        (data / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(img, data / cls)
        shutil.copy(mask, data / cls)
    bare = [p for p in magnetic_tile_pairs if p[2] == "MT_Fray"][0]
    (data / "MT_Fray").mkdir()
    shutil.copy(bare[0], data / "MT_Fray")  # no mask: an unlabelled crop
    with Project.create(tmp_path / "src") as p:
        report = ingest(p.db, data)
    assert report.added_total == 10 and report.without_mask_total == 1
    return tmp_path / "src"


@pytest.mark.parametrize("fmt", ["yolo", "labelme"])
def test_export_and_reingest_round_trip(labelled_project: Path, tmp_path: Path, fmt: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"out-{fmt}"
    assert main(["export-labels", "--project", str(labelled_project), "--format", fmt, "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("wrote ")
    if fmt == "yolo":
        data = yaml.safe_load((out / "data.yaml").read_text())
        assert set(data["names"].values()) == {"crack", "blowhole"}
        assert len(list((out / "labels").rglob("*.txt"))) == 9  # 7 defects + 2 background files, no unlabelled
    else:
        assert len(list(out.glob("*.json"))) == 9
    assert main(["ingest", str(out), "--project", str(tmp_path / f"back-{fmt}")]) == 0
    assert f"layout: {fmt};" in capsys.readouterr().out
    before, after = _gt_by_sha(labelled_project), _gt_by_sha(tmp_path / f"back-{fmt}")
    labelled = {sha: v for sha, v in before.items() if v[1] is not None}
    assert set(after) == set(labelled)  # the unlabelled crop stayed out
    for sha, (cls, mask) in labelled.items():
        cls2, mask2 = after[sha]
        assert cls2 == cls and mask2 is not None
        union = (mask | mask2).sum()
        iou = (mask & mask2).sum() / union if union else 1.0
        assert iou >= 0.99, (cls, iou)


def test_coco_export_leaves_unlabelled_crops_out(labelled_project: Path, tmp_path: Path) -> None:
    """A COCO image without annotations reads as defect-free (ingest stores it so), so unlabelled crops are not
    listed at all."""
    import json

    assert main(["export-labels", "--project", str(labelled_project), "--format", "coco",
                 "--out", str(tmp_path / "c.json")]) == 0
    doc = json.loads((tmp_path / "c.json").read_text())
    assert len(doc["images"]) == 9 and len(doc["annotations"]) == 7
    assert not any("MT_Fray" in im["file_name"] for im in doc["images"])
