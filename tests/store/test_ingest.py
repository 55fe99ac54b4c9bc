"""Ingest on the real magnetic-tile data and on deliberately broken folders."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import func, select

from store import rle
from store.ingest import IngestError, ingest
from store.project import Project
from store.schema import Mask, MaskSource, Sample


def _counts(project: Project) -> tuple[int, int]:
    with project.db.session() as s:
        return s.scalar(select(func.count(Sample.id))), s.scalar(select(func.count(Mask.id)))


def test_magnetic_tile_full_ingest_and_reingest(tmp_path: Path, magnetic_tile_dir: Path) -> None:
    project = Project.create(tmp_path / "mt")
    report = ingest(project.db, magnetic_tile_dir)
    assert report.layout == "side-by-side"
    assert report.bad == []
    assert dict(report.added) == {"blowhole": 115, "break": 85, "crack": 57, "fray": 32, "uneven": 103, "free": 159}
    assert report.added_total == 551
    assert sum(n for c, n in report.added.items() if c != "free") == 392
    again = ingest(project.db, magnetic_tile_dir)
    assert again.added_total == 0 and again.skipped_existing == 551
    assert _counts(project) == (551, 551)
    with project.db.session() as s:
        splits = Counter(s.scalars(select(Sample.split)))
        # Free crops have all-zero masks: the stored RLE must decode to an empty mask of the right size.
        free = s.scalars(select(Sample).where(Sample.defect_class == "free").limit(1)).one()
        m = s.scalars(select(Mask).where(Mask.sample_id == free.id)).one()
        assert m.area == 0 and rle.decode(m.rle).shape == (free.height, free.width)
    assert splits["train"] > splits["val"] > 0 and splits["test"] > 0 and None not in splits


def test_mask_is_binarised_at_128(tmp_path: Path, magnetic_tile_pairs: list) -> None:
    img, mask_path, _ = next(p for p in magnetic_tile_pairs if p[2] == "MT_Break")
    d = tmp_path / "data" / "MT_Break"
    d.mkdir(parents=True)
    shutil.copy(img, d)
    shutil.copy(mask_path, d)
    project = Project.create(tmp_path / "p")
    ingest(project.db, tmp_path / "data")
    raw = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
    with project.db.session() as s:
        m = s.scalars(select(Mask)).one()
    assert np.array_equal(rle.decode(m.rle), raw >= 128)
    assert m.area == int((raw >= 128).sum())


def _broken_folder(root: Path, pairs: list) -> Path:
    d = root / "MT_Crack"
    d.mkdir(parents=True)
    good = [p for p in pairs if p[2] == "MT_Crack"][:3]
    for img, mask, _ in good:
        shutil.copy(img, d)
        shutil.copy(mask, d)
    img, mask, _ = [p for p in pairs if p[2] == "MT_Crack"][3]
    data = img.read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    shutil.copy(mask, d / "truncated.png")
    img, mask, _ = [p for p in pairs if p[2] == "MT_Crack"][4]
    shutil.copy(img, d / "wrongsize.jpg")
    m = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(d / "wrongsize.png"), cv2.resize(m, (m.shape[1] // 2, m.shape[0])))
    img, _, _ = [p for p in pairs if p[2] == "MT_Crack"][5]
    shutil.copy(img, d / "textmask.jpg")
    (d / "textmask.png").write_text("this is not a png, just text\n")
    return root


def test_bad_files_are_reported_and_good_pairs_stored(tmp_path: Path, magnetic_tile_pairs: list) -> None:
    data = _broken_folder(tmp_path / "data", magnetic_tile_pairs)
    project = Project.create(tmp_path / "p")
    report = ingest(project.db, data)
    reasons = {Path(p).name: r for p, r in report.bad}
    assert set(reasons) == {"truncated.jpg", "wrongsize.jpg", "textmask.jpg"}
    assert "truncated" in reasons["truncated.jpg"]
    assert "mask is" in reasons["wrongsize.jpg"] and "image is" in reasons["wrongsize.jpg"]
    assert "not an image" in reasons["textmask.jpg"]
    assert report.added_total == 3
    assert _counts(project) == (3, 3)


def test_strict_stores_nothing(tmp_path: Path, magnetic_tile_pairs: list) -> None:
    data = _broken_folder(tmp_path / "data", magnetic_tile_pairs)
    project = Project.create(tmp_path / "p")
    with pytest.raises(IngestError, match="--strict: 3 bad file"):
        ingest(project.db, data, strict=True)
    assert _counts(project) == (0, 0)


def test_images_and_masks_folders_layout(tmp_path: Path, magnetic_tile_pairs: list) -> None:
    root = tmp_path / "ds"
    for img, mask, cls in magnetic_tile_pairs[::60]:
        (root / "images" / cls).mkdir(parents=True, exist_ok=True)
        (root / "masks" / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(img, root / "images" / cls / img.name)
        shutil.copy(mask, root / "masks" / cls / mask.name)
    project = Project.create(tmp_path / "p")
    report = ingest(project.db, root)
    n = len(magnetic_tile_pairs[::60])
    assert report.layout == "images+masks" and report.added_total == n and report.bad == []
    assert _counts(project) == (n, n)
    assert {c for c in report.added} <= {"blowhole", "break", "crack", "fray", "free", "uneven"}


def test_coco_json_with_rle_and_polygons(tmp_path: Path, magnetic_tile_pairs: list) -> None:
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    picks = [p for p in magnetic_tile_pairs if p[2] == "MT_Break"][:2] + [
        p for p in magnetic_tile_pairs if p[2] == "MT_Uneven"][:2]
    images, anns = [], []
    expected = {}
    for i, (img, mask, cls) in enumerate(picks, start=1):
        shutil.copy(img, root / "images" / img.name)
        m = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE) >= 128
        h, w = m.shape
        images.append({"id": i, "file_name": img.name, "height": h, "width": w})
        if i % 2:
            seg = rle.encode(m)
            expected[img.name] = m
        else:  # polygons: rasterising a polygon is not pixel-identical, compare by IoU below
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            seg = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
            expected[img.name] = m
        anns.append({"id": i, "image_id": i, "category_id": 1 if cls == "MT_Break" else 2, "segmentation": seg,
                     "iscrowd": 0})
    (root / "annotations.json").write_text(json.dumps({
        "images": images, "annotations": anns,
        "categories": [{"id": 1, "name": "Break"}, {"id": 2, "name": "Uneven"}],
    }))
    project = Project.create(tmp_path / "p")
    report = ingest(project.db, root)
    assert report.layout == "coco" and report.added_total == 4 and report.bad == []
    assert set(report.added) == {"break", "uneven"}
    with project.db.session() as s:
        for smp in s.scalars(select(Sample)):
            got = rle.decode(s.scalars(select(Mask).where(Mask.sample_id == smp.id,
                                                          Mask.source == MaskSource.GROUND_TRUTH)).one().rle)
            exp = expected[Path(smp.path).name]
            iou = (got & exp).sum() / max((got | exp).sum(), 1)
            assert iou > 0.9


def test_images_without_masks_are_stored_unlabelled(tmp_path: Path, magnetic_tile_pairs: list) -> None:
    """A folder of images only: every image is a sample with no ground-truth mask, counted as such; mixed with
    labelled pairs, only the images without a mask are; re-ingesting adds nothing."""
    data = tmp_path / "unlabelled"
    picks = [p for p in magnetic_tile_pairs if p[2] == "MT_Crack"][:4] + \
        [p for p in magnetic_tile_pairs if p[2] == "MT_Fray"][:3]
    for img, _mask, cls in picks:
        (data / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(img, data / cls)  # the image only
    labelled = [p for p in magnetic_tile_pairs if p[2] == "MT_Break"][:2]
    for img, mask, cls in labelled:
        (data / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(img, data / cls)
        shutil.copy(mask, data / cls)
    project = Project.create(tmp_path / "p")
    report = ingest(project.db, data)
    assert report.layout == "side-by-side" and report.bad == []
    assert dict(report.added) == {"crack": 4, "fray": 3, "break": 2}
    assert dict(report.without_mask) == {"crack": 4, "fray": 3} and report.without_mask_total == 7
    assert _counts(project) == (9, 2)
    with project.db.session() as s:
        rows = s.execute(select(Sample.defect_class, Sample.origin, Sample.split, func.count(Mask.id))
                         .outerjoin(Mask, Mask.sample_id == Sample.id).group_by(Sample.id)).all()
    for cls, origin, split, n_masks in rows:
        assert split is not None
        assert (n_masks, origin is None) == ((1, False) if cls == "break" else (0, True))
    again = ingest(project.db, data)
    assert again.added_total == 0 and again.without_mask_total == 0 and again.skipped_existing == 9
    project.close()

    # images/ + masks/ with one mask missing: that image is stored unlabelled, not reported bad
    root = tmp_path / "ds"
    for i, (img, mask, cls) in enumerate(labelled + picks[:1]):
        (root / "images" / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(img, root / "images" / cls / img.name)
        if i < 2:
            (root / "masks" / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(mask, root / "masks" / cls / mask.name)
    p2 = Project.create(tmp_path / "p2")
    report = ingest(p2.db, root)
    assert report.layout == "images+masks" and report.bad == [] and report.added_total == 3
    assert dict(report.without_mask) == {"crack": 1} and _counts(p2) == (3, 2)
    p2.close()
