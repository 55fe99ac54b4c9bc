"""Point prompts: saliency on real crops, seeded ground-truth sampling, human clicks, the automatic-mask grid."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inference.prompts import (
    grid_points,
    human_prompt,
    mask_prompt,
    prompt_from_json,
    prompt_to_json,
    saliency_prompt,
)
from infer_helpers import load_crops, pick_crops


def test_saliency_finds_defects_on_held_out_crops(magnetic_tile_pairs: list) -> None:
    """The saliency pass was tuned on the first 40 crops of each class; these are crops 40.. (held out).
    A point counts when it lands on the defect or within 3 px of it (the decoder's receptive field covers that)."""
    crops = [c for c in load_crops(pick_crops(magnetic_tile_pairs, per_class=6, offset=40)) if c[1].any()]
    assert len(crops) >= 20
    hits = []
    for image, gt, _ in crops:
        p = saliency_prompt(image)
        assert p.source == "saliency" and p.points.shape == (1, 2) and p.labels.tolist() == [1]
        x, y = p.points[0]
        assert 0 <= x < image.shape[1] and 0 <= y < image.shape[0]
        near = cv2.dilate(gt.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        hits.append(bool(near[int(y), int(x)]))
    rate = float(np.mean(hits))
    assert rate >= 0.45, f"saliency hit rate {rate:.2f}"
    again = saliency_prompt(crops[0][0])
    assert np.array_equal(again.points, saliency_prompt(crops[0][0]).points)  # deterministic


def test_saliency_multiple_points_are_separated(magnetic_tile_pairs: list) -> None:
    image = load_crops(magnetic_tile_pairs[:1])[0][0]
    p = saliency_prompt(image, max_points=3, min_relative_peak=0.0)
    assert len(p.points) == 3
    d = np.linalg.norm(p.points[:, None] - p.points[None], axis=-1)[np.triu_indices(3, 1)]
    assert d.min() >= min(image.shape[:2]) / 8 - 1


def test_mask_prompt_seeded_and_inside(magnetic_tile_pairs: list) -> None:
    image, gt, _ = next(c for c in load_crops(pick_crops(magnetic_tile_pairs, 3)) if c[1].sum() > 200)
    a = mask_prompt(gt, n_positive=3, n_negative=2, seed=(7, 42))
    b = mask_prompt(gt, n_positive=3, n_negative=2, seed=(7, 42))
    c = mask_prompt(gt, n_positive=3, n_negative=2, seed=(8, 42))
    assert np.array_equal(a.points, b.points) and not np.array_equal(a.points, c.points)
    assert a.labels.tolist() == [1, 1, 1, 0, 0] and a.source == "ground_truth"
    for (x, y), lab in zip(a.points, a.labels):
        assert gt[int(y), int(x)] == bool(lab)
    empty = mask_prompt(np.zeros_like(gt), n_positive=1, seed=1)  # defect-free crop: "nothing here"
    assert empty.labels.tolist() == [0]


def test_human_prompt_and_json_roundtrip() -> None:
    p = human_prompt([[10, 20.5], [3, 4]], [1, 0])
    pts, lbs = prompt_to_json(p)
    assert pts == [[10.0, 20.5], [3.0, 4.0]] and lbs == [1, 0]
    back = prompt_from_json(pts, lbs, "human")
    assert np.array_equal(back.points, p.points) and np.array_equal(back.labels, p.labels)
    with pytest.raises(ValueError):
        human_prompt([[1, 2]], [1, 0])
    with pytest.raises(ValueError):
        human_prompt([[1, 2]], [2])


def test_grid_points_cover_the_crop() -> None:
    g = grid_points((100, 200), 4)
    assert g.shape == (16, 2)
    assert g[:, 0].min() == pytest.approx(25.0) and g[:, 0].max() == pytest.approx(175.0)
    assert g[:, 1].min() == pytest.approx(12.5) and g[:, 1].max() == pytest.approx(87.5)
