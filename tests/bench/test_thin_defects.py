"""The thin-defect check set: real cracks plus scratches of a known width on the real defect-free tiles, with exact
masks, in the layout `maskbench ingest` reads."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.thin_defects import WIDTHS, build, draw_scratch, scratch_mask  # noqa: E402
from store.ingest import ingest  # noqa: E402
from store.project import Project  # noqa: E402


def test_a_scratch_mask_is_as_wide_as_stated_across_the_line() -> None:
    for width in WIDTHS:
        flat = scratch_mask(np.array([[[10, 40]], [[150, 40]]], np.int32), (80, 160), width)
        assert set(np.unique(flat)) == {0, 255}
        assert ((flat[:, 20:140] > 0).sum(axis=0) == width).all()  # a straight scratch: exactly `width` rows
        diagonal = scratch_mask(np.array([[[20, 20]], [[120, 120]]], np.int32), (140, 140), width)
        n, _ = cv2.connectedComponents((diagonal > 0).astype(np.uint8), connectivity=8)
        assert n == 2  # one piece, no gaps
        across = []  # area over length, over directions from 0 to 84 degrees: the mean width across the line
        for deg in range(0, 90, 7):
            end = np.round(100 + 80 * np.array([np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))])).astype(np.int32)
            m = scratch_mask(np.array([[[100, 100]], [end]], np.int32), (200, 200), width)
            across.append((m > 0).sum() / np.linalg.norm(end - 100))
        assert (0.85 if width == 1 else width - 0.15) <= np.mean(across) <= width + 0.3


def test_a_drawn_scratch_changes_the_tile_where_its_mask_is_and_nowhere_else(magnetic_tile_dir: Path) -> None:
    tile = cv2.imread(str(sorted((magnetic_tile_dir / "MT_Free").glob("*.jpg"))[0]), cv2.IMREAD_UNCHANGED)
    for width in WIDTHS:
        drawn, mask = draw_scratch(np.random.default_rng(width), tile, width)
        on = mask > 0
        assert on.sum() > 40
        diff = np.abs(drawn.astype(np.int16) - tile.astype(np.int16))
        diff = diff.max(axis=-1) if diff.ndim == 3 else diff
        assert diff[on].mean() >= 10
        far = cv2.dilate(mask, np.ones((7, 7), np.uint8)) == 0
        assert diff[far].max() == 0


def test_build_is_reproducible_and_ingests_as_one_class_per_width(tmp_path: Path, magnetic_tile_dir: Path) -> None:
    counts = build(magnetic_tile_dir, tmp_path / "a", seed=3, per_width=4)
    build(magnetic_tile_dir, tmp_path / "b", seed=3, per_width=4)
    crack_count = len(list((magnetic_tile_dir / "MT_Crack").glob("*.png")))
    assert counts == {"crack": crack_count, **{f"scratch_{w}px": 4 for w in WIDTHS}}
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.*"))
    assert files_a == files_b
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)

    with Project.create(tmp_path / "project") as p:
        report = ingest(p.db, tmp_path / "a", workers=1)
    assert dict(report.added) == counts and report.without_mask_total == 0 and not report.bad
