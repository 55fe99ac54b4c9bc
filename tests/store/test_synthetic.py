"""The demo generator is deterministic and draws masks that match the drawn defects."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from store.synthetic import CLASSES, make_crop, write_dataset


def test_same_seed_same_crop_different_seed_different_crop() -> None:
    a, b, c = make_crop(11), make_crop(11), make_crop(12)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.image.shape[:2] != c.image.shape[:2] or not np.array_equal(a.image, c.image)


def test_every_class_has_a_visible_defect_under_its_mask() -> None:
    for i, cls in enumerate(CLASSES):
        crop = make_crop(500 + i, cls, (256, 256))
        assert crop.defect_class == cls
        assert 0 < crop.mask.mean() < 0.5
        grey = crop.image.mean(axis=2)
        inside, outside = grey[crop.mask].mean(), grey[~crop.mask].mean()
        assert abs(inside - outside) > 5, cls  # the defect is visible, not only in the mask


def test_write_dataset_is_byte_identical_across_runs(tmp_path: Path) -> None:
    a = write_dataset(tmp_path / "a", 10, seed=5)
    b = write_dataset(tmp_path / "b", 10, seed=5)
    for pa, pb in zip(a, b):
        assert pa.read_bytes() == pb.read_bytes()
        assert pa.with_suffix(".png").read_bytes() == pb.with_suffix(".png").read_bytes()
    assert {p.parent.name for p in a} == set(CLASSES)
