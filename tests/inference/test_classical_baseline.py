"""The five-line classical baseline: the vectorised grid search against brute force, tuning on synthetic defects,
grey/RGB input, the segmenter wrapper, and tuning on real magnetic-tile crops with held-out ones."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from infer_helpers import pick_crops
from inference.baselines.classical import (
    POLARITIES,
    ClassicalParams,
    ClassicalSegmenter,
    defect_map,
    predict,
    tune,
)
from review.metrics import iou


def textured_crop(rng: np.random.Generator, size: int = 160, polarity: str = "dark") -> tuple[np.ndarray, np.ndarray]:
    """A grey surface with grinding stripes, slow shading and noise, carrying dark (or bright) blobs and a line
    with soft edges (45 grey levels deep in the middle)."""
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    surface = 120 + 30 * (xx / w) + 6 * np.sin(xx / 2.5) + rng.normal(0, 8, (h, w))
    surface = cv2.GaussianBlur(surface.astype(np.float32), (0, 0), 0.8)
    gt = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(1, 4)):
        cx, cy = (int(v) for v in rng.integers(20, size - 20, 2))
        cv2.circle(gt, (cx, cy), int(rng.integers(5, 12)), 1, -1)
    if rng.random() < 0.5:
        x0, y0, x1, y1 = (int(v) for v in rng.integers(10, size - 10, 4))
        cv2.line(gt, (x0, y0), (x1, y1), 1, 4)
    sign = -1.0 if polarity == "dark" else 1.0
    depth = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 1.0)
    image = np.clip(surface + sign * 45.0 * depth, 0, 255).astype(np.uint8)
    return np.repeat(image[:, :, None], 3, axis=2), gt.astype(bool)


def synthetic_set(n: int, seed: int, polarity: str = "dark") -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [textured_crop(rng, polarity=polarity) for _ in range(n)]


def mean_iou(items: list[tuple[np.ndarray, np.ndarray]], params: ClassicalParams) -> float:
    return float(np.mean([iou(predict(im, params), gt) for im, gt in items if gt.any()]))


def test_tuning_on_synthetic_dark_defects() -> None:
    train, held_out = synthetic_set(8, seed=1), synthetic_set(4, seed=2)
    calls: list[tuple[int, int]] = []
    params, train_miou = tune(train, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (8, 8) and len(calls) == 8
    assert params.polarity == "dark"
    assert 10.0 <= params.threshold <= 35.0  # between the texture noise (8 grey levels) and the defect depth (45)
    assert params.sigma_small < params.sigma_large
    assert train_miou > 0.7
    assert train_miou == pytest.approx(mean_iou(train, params), abs=1e-9)  # the search scores what predict does
    assert mean_iou(held_out, params) > 0.7


def test_bright_defects_pick_a_bright_polarity() -> None:
    params, train_miou = tune(synthetic_set(6, seed=3, polarity="bright"))
    assert params.polarity == "bright" and train_miou > 0.7


def test_grid_search_matches_brute_force() -> None:
    """The histogram trick scores every threshold at once; it must pick what trying each one would."""
    items = synthetic_set(3, seed=4)
    grid = {"sigmas_small": (0.0, 1.0), "sigmas_large": (1.0, 6.0), "threshold_step": 0.5, "n_thresholds": 60}
    params, best = tune(items, **grid)
    brute = {}
    for ss, sl, pol, k in itertools.product((0.0, 1.0), (1.0, 6.0), POLARITIES, range(1, 61)):
        if ss < sl:
            p = ClassicalParams(ss, sl, pol, k * 0.5)
            brute[p] = mean_iou(items, p)
    top = max(brute.values())
    assert best == pytest.approx(top, abs=1e-12)
    assert brute[params] == pytest.approx(top, abs=1e-12)


def test_crops_without_defect_do_not_count_and_none_at_all_is_an_error() -> None:
    items = synthetic_set(4, seed=5)
    free = (np.full((50, 60, 3), 128, np.uint8), np.zeros((50, 60), bool))
    assert tune(items) == tune([items[0], free, *items[1:]])
    with pytest.raises(ValueError):
        tune([free])
    with pytest.raises(ValueError):
        tune([(items[0][0], items[0][1][:-1])])  # image and mask sizes differ


def test_predict_on_grey_and_rgb() -> None:
    rgb, gt = synthetic_set(1, seed=6)[0]
    params = ClassicalParams(1.0, 10.0, "dark", 20.0)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    mask_rgb, mask_grey = predict(rgb, params), predict(grey, params)
    assert mask_rgb.dtype == bool and mask_rgb.shape == gt.shape
    np.testing.assert_array_equal(mask_rgb, mask_grey)
    np.testing.assert_array_equal(predict(grey[:, :, None], params), mask_grey)
    assert iou(mask_rgb, gt) > 0.7
    colour = rgb.copy()
    colour[..., 0] = 255  # a tinted crop is thresholded on its grey level, as documented
    assert predict(colour, params).shape == gt.shape
    with pytest.raises(ValueError):
        predict(np.zeros((4, 4, 3, 2), np.uint8), params)


def test_polarity_selects_the_sign() -> None:
    image = np.full((60, 60), 128, np.uint8)
    image[10:20, 10:20] = 60  # dark square
    image[40:50, 40:50] = 200  # bright square
    dark = predict(image, ClassicalParams(0.0, 8.0, "dark", 20.0))
    bright = predict(image, ClassicalParams(0.0, 8.0, "bright", 20.0))
    both = predict(image, ClassicalParams(0.0, 8.0, "both", 20.0))
    assert dark[15, 15] and not dark[45, 45]
    assert bright[45, 45] and not bright[15, 15]
    np.testing.assert_array_equal(both, dark | bright)


def test_params_validate_and_round_trip() -> None:
    p = ClassicalParams(1.0, 20.0, "both", 12.5)
    assert ClassicalParams.from_json(p.to_json()) == p
    with pytest.raises(ValueError):
        ClassicalParams(1.0, 20.0, "grey", 12.5)
    with pytest.raises(ValueError):
        ClassicalParams(5.0, 5.0, "dark", 12.5)


def test_segmenter_thresholds_the_embedded_map_and_ignores_clicks() -> None:
    image, _ = synthetic_set(1, seed=7)[0]
    params = ClassicalParams(1.0, 10.0, "dark", 18.5)
    seg = ClassicalSegmenter(params)
    emb = seg.embed(image)
    np.testing.assert_array_equal(emb.features["defect_map"], defect_map(image, params))
    assert emb.orig_hw == image.shape[:2]
    a = seg.decode(emb, np.zeros((0, 2), np.float32), np.zeros(0, np.int32))
    b = seg.decode(emb, np.array([[3, 4], [50, 60]], np.float32), np.array([1, 0], np.int32))
    assert a.logits.dtype == np.float32
    np.testing.assert_array_equal(a.mask, predict(image, params))
    np.testing.assert_array_equal(a.mask, b.mask)
    assert seg.sha256 != ClassicalSegmenter(ClassicalParams(1.0, 10.0, "dark", 19.0)).sha256


def test_tuning_on_real_magnetic_tile_crops(magnetic_tile_pairs: list) -> None:
    """Six Blowhole and six Crack crops to tune on, four of each held out: the baseline must find something on the
    held-out crops (it is a weak baseline; the point is that it runs on real data and generalises at all)."""
    from store.images import load_image

    def load(offset: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        picked = [p for p in pick_crops(magnetic_tile_pairs, per_class=n, offset=offset)
                  if p[2] in ("MT_Blowhole", "MT_Crack")]
        return [(load_image(img), cv2.imread(str(mask), 0) >= 128) for img, mask, _ in picked]

    train, held_out = load(0, 6), load(6, 4)
    assert len(train) == 12 and len(held_out) == 8
    params, train_miou = tune(train)
    assert 0.0 < train_miou <= 1.0
    assert train_miou == pytest.approx(mean_iou(train, params), abs=1e-9)
    assert mean_iou(held_out, params) > 0.0
