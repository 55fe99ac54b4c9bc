"""Interactive evaluation (NoC protocol): click placement, NoC counting, the cap, early stop, aggregation, real crops.

The segmenters here are small real algorithms, not mocks: a disk painter (a disk around each positive click minus
disks around the negative ones), a region picker (the dark connected regions of the image under the positive
clicks, minus those under the negative ones), and the classical baseline.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from infer_helpers import pick_crops
from inference.baselines.classical import ClassicalParams, ClassicalSegmenter, defect_map
from inference.interactive import (
    Click,
    InteractiveItem,
    evaluate,
    ground_truth_first_click,
    next_click,
    render_markdown,
    simulate_crop,
)
from inference.prompts import mask_prompt
from inference.segmenter import Decoded, Embedding
from review.metrics import iou


class DiskSegmenter:
    """Disk of `radius` around every positive click, minus disks around every negative click."""

    name = "disk"

    def __init__(self, radius: int) -> None:
        self.radius = radius

    def embed(self, image: np.ndarray) -> Embedding:
        return Embedding(features={}, orig_hw=image.shape[:2], input_size=0)

    def decode(self, embedding: Embedding, points: np.ndarray, labels: np.ndarray) -> Decoded:
        pos = np.zeros(embedding.orig_hw, np.uint8)
        neg = np.zeros(embedding.orig_hw, np.uint8)
        for (x, y), lab in zip(points, labels):
            cv2.circle(pos if lab == 1 else neg, (int(round(x)), int(round(y))), self.radius, 1, -1)
        mask = (pos > 0) & (neg == 0)
        return Decoded(logits=np.where(mask, 1.0, -1.0).astype(np.float32), score=1.0)


class RegionSegmenter:
    """Selects whole regions of a label map (computed once in `embed`): every region under a positive click, minus
    every region under a negative click. `regions(image)` makes the label map (0 = background)."""

    name = "regions"

    def __init__(self, regions=None, disk: int = 0) -> None:
        self.regions = regions or (lambda im: cv2.connectedComponents((im[:, :, 0] < 128).astype(np.uint8), 8)[1])
        self.disk = disk  # a click on background paints a disk of this radius (0: nothing)

    def embed(self, image: np.ndarray) -> Embedding:
        return Embedding(features={"labels": self.regions(image)}, orig_hw=image.shape[:2], input_size=0)

    def decode(self, embedding: Embedding, points: np.ndarray, labels: np.ndarray) -> Decoded:
        lab_map = embedding.features["labels"]
        keep = np.zeros(lab_map.shape, bool)
        drop = np.zeros(lab_map.shape, bool)
        for (x, y), lab in zip(points, labels):
            xi, yi = int(round(x)), int(round(y))
            target = keep if lab == 1 else drop
            region = lab_map[yi, xi]
            if region > 0:
                target |= lab_map == region
            if self.disk:
                disk = np.zeros(lab_map.shape, np.uint8)
                cv2.circle(disk, (xi, yi), self.disk, 1, -1)
                target |= disk > 0
        mask = keep & ~drop
        return Decoded(logits=np.where(mask, 1.0, -1.0).astype(np.float32), score=1.0)


def squares_image(shape: tuple[int, int], boxes: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Bright RGB image with dark squares (x, y, side) and the matching ground-truth mask."""
    gt = np.zeros(shape, bool)
    for x, y, side in boxes:
        gt[y : y + side, x : x + side] = True
    image = np.where(gt[:, :, None], 40, 200).astype(np.uint8).repeat(3, axis=2)
    return image, gt


# --- click placement ------------------------------------------------------------------------------------------


def test_next_click_positive_at_centre_of_largest_missed_region() -> None:
    gt = np.zeros((80, 80), bool)
    gt[10:30, 10:30] = True  # 400 px
    gt[50:60, 50:60] = True  # 100 px
    click = next_click(gt, np.zeros_like(gt))
    assert click is not None and click.label == 1
    assert abs(click.x - 19.5) <= 0.5 and abs(click.y - 19.5) <= 0.5  # the centre of the big square


def test_next_click_negative_at_centre_of_spill() -> None:
    gt = np.zeros((80, 80), bool)
    gt[10:20, 10:20] = True
    pred = gt.copy()
    pred[40:70, 30:60] = True  # a 30 x 30 false positive, much larger than any missed part
    pred[10:12, 10:20] = False  # a small miss too
    click = next_click(gt, pred)
    assert click == Click(click.x, click.y, 0)
    assert 44 <= click.x <= 45 and 54 <= click.y <= 55
    assert not gt[int(click.y), int(click.x)]


def test_next_click_compares_regions_not_totals() -> None:
    """Two small misses (40 px each) lose against one 64 px spill: the largest *connected* region wins."""
    gt = np.zeros((60, 60), bool)
    gt[0:8, 0:5] = True
    gt[50:58, 50:55] = True
    pred = np.zeros_like(gt)
    pred[25:33, 25:33] = True
    click = next_click(gt, pred)
    assert click is not None and click.label == 0 and pred[int(click.y), int(click.x)]


def test_next_click_region_on_the_border_is_clicked_inside() -> None:
    """The crop border counts as the region's border: the click goes to the middle of a corner square, not into
    the corner (where an unpadded distance transform would put it)."""
    gt = np.zeros((40, 40), bool)
    gt[:20, :20] = True
    click = next_click(gt, np.zeros_like(gt))
    assert click is not None and click.label == 1
    assert 9 <= click.x <= 10 and 9 <= click.y <= 10
    unpadded = cv2.distanceTransform(gt.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    assert np.unravel_index(int(np.argmax(unpadded)), gt.shape) == (0, 0)


def test_next_click_none_when_perfect_and_shape_checked() -> None:
    gt = np.zeros((20, 20), bool)
    gt[5:9, 5:9] = True
    assert next_click(gt, gt.copy()) is None
    with pytest.raises(ValueError):
        next_click(gt, np.zeros((20, 21), bool))


def test_first_click_is_the_predict_ground_truth_prompt() -> None:
    from inference.batch import make_prompt
    from store import rle

    image, gt = squares_image((64, 64), [(5, 5, 20), (40, 30, 15)])
    for sid, seed in ((7, 0), (12, 3)):
        report = evaluate(DiskSegmenter(6), [(sid, "x", image, gt)], max_clicks=3, report_clicks=(1,), seed=seed)
        first = report.crops[0].clicks[0]
        ref = mask_prompt(gt, 1, 0, seed=(seed, sid))
        batch = make_prompt("ground_truth", image, rle.encode(gt), sid, seed)
        assert (first.x, first.y, first.label) == (ref.points[0][0], ref.points[0][1], 1)
        np.testing.assert_array_equal(batch.points, ref.points)
        np.testing.assert_array_equal(batch.labels, ref.labels)


# --- NoC counting -----------------------------------------------------------------------------------------------


def test_three_regions_need_exactly_three_clicks() -> None:
    boxes = [(5, 5, 30), (60, 8, 28), (20, 60, 26)]
    image, gt = squares_image((100, 100), boxes)
    report = evaluate(RegionSegmenter(), [(1, "blob", image, gt)], max_clicks=20, report_clicks=(1, 3, 5))
    crop = report.crops[0]
    assert [c.label for c in crop.clicks] == [1, 1, 1]
    assert crop.noc == {0.85: 3, 0.9: 3} and crop.reached == {0.85: True, 0.9: True}
    assert crop.ious[2] == 1.0 and crop.ious[0] < crop.ious[1] < 1.0
    # clicks 2 and 3: the centres of the two squares missed so far, the larger first
    x0, y0 = crop.clicks[0].x, crop.clicks[0].y
    first_box = next(b for b in boxes if b[0] <= x0 < b[0] + b[2] and b[1] <= y0 < b[1] + b[2])
    rest = sorted((b for b in boxes if b != first_box), key=lambda b: -b[2])
    for click, (x, y, side) in zip(crop.clicks[1:], rest):
        assert abs(click.x - (x + (side - 1) / 2)) <= 0.5 and abs(click.y - (y + (side - 1) / 2)) <= 0.5
    assert report.overall.noc == {0.85: 3.0, 0.9: 3.0}
    assert report.overall.miou_at[3] == 1.0 and report.overall.miou_at[5] == 1.0  # perfect: nothing left to click
    assert report.overall.failed == {0.85: 0, 0.9: 0}
    assert report.decode_calls == 3


def test_cap_at_max_clicks_when_never_reached() -> None:
    """The classical baseline ignores clicks: a crop it gets half right stays half right and counts max_clicks."""
    image, gt = squares_image((80, 80), [(10, 10, 20)])
    image[10:20, 10:30] = 150  # the top half of the defect is too faint for the threshold
    seg = ClassicalSegmenter(ClassicalParams(0.0, 10.0, "dark", 60.0))
    report = evaluate(seg, [(3, "faint", image, gt)], max_clicks=4, report_clicks=(1, 3))
    crop = report.crops[0]
    assert 0.2 < crop.ious[0] < 0.85 and len(set(crop.ious)) == 1
    assert crop.noc == {0.85: 4, 0.9: 4} and crop.reached == {0.85: False, 0.9: False}
    assert report.overall.failed == {0.85: 1, 0.9: 1}
    assert len(crop.clicks) == 4 and report.decode_calls == 4


def test_negative_click_when_prediction_spills() -> None:
    gt = np.zeros((80, 80), bool)
    cv2.circle(gt.view(np.uint8), (40, 40), 6, 1, -1)
    image = np.full((80, 80, 3), 128, np.uint8)
    report = evaluate(DiskSegmenter(14), [(5, "spill", image, gt)], max_clicks=3, report_clicks=(1, 2))
    crop = report.crops[0]
    second = crop.clicks[1]
    assert second.label == 0 and not gt[int(second.y), int(second.x)]
    first_point = np.array([[crop.clicks[0].x, crop.clicks[0].y]], np.float32)
    first_mask = DiskSegmenter(14).decode(Embedding({}, (80, 80), 0), first_point, np.array([1], np.int32)).mask
    assert first_mask[int(second.y), int(second.x)]  # the negative click sits on the spill


def test_early_stop_only_after_the_reported_clicks() -> None:
    """Three big squares and a tiny one: IoU passes 0.90 at click 3; the tiny square needs a 4th click."""
    image, gt = squares_image((100, 100), [(5, 5, 30), (60, 8, 30), (20, 60, 30), (80, 80, 4)])
    items = [(1, "blob", image, gt)]
    short = evaluate(RegionSegmenter(), items, max_clicks=20, report_clicks=(1, 3))
    assert len(short.crops[0].clicks) == 3 and short.decode_calls == 3
    assert short.crops[0].noc == {0.85: 3, 0.9: 3}
    long = evaluate(RegionSegmenter(), items, max_clicks=20, report_clicks=(1, 3, 5))
    assert len(long.crops[0].clicks) == 4 and long.overall.miou_at[5] == 1.0
    assert long.overall.miou_at[3] == short.overall.miou_at[3] < 1.0
    assert long.crops[0].noc == short.crops[0].noc


def test_per_class_aggregation_skips_empty_ground_truth_and_reports_progress() -> None:
    three, gt3 = squares_image((100, 100), [(5, 5, 30), (60, 8, 28), (20, 60, 26)])
    one, gt1 = squares_image((60, 60), [(10, 10, 30)])
    free = np.full((50, 50, 3), 200, np.uint8)
    items = [
        InteractiveItem(1, "triple", three, gt3),
        (2, "single", one, gt1),
        (3, "free", free, np.zeros((50, 50), bool)),
        (4, "single", one, gt1),
    ]
    calls: list[tuple[int, int]] = []
    report = evaluate(RegionSegmenter(), items, max_clicks=20, report_clicks=(1, 3),
                      progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert report.skipped_empty == 1 and len(report.crops) == 3
    assert set(report.per_class) == {"triple", "single"}
    assert report.per_class["single"].n == 2 and report.per_class["single"].noc == {0.85: 1.0, 0.9: 1.0}
    assert report.per_class["triple"].noc == {0.85: 3.0, 0.9: 3.0}
    assert report.overall.noc[0.85] == pytest.approx((3 + 1 + 1) / 3)  # mean over crops, as the one-click table
    triple_1 = report.per_class["triple"].miou_at[1]
    assert report.per_class["single"].miou_at[1] == 1.0
    assert report.overall.miou_at[1] == pytest.approx((triple_1 + 2.0) / 3)

    data = json.loads(json.dumps(report.to_json()))
    assert data["overall"]["NoC@85"] == pytest.approx(5 / 3, abs=1e-4) and data["overall"]["failed@90"] == 0
    assert data["per_class"]["single"]["mIoU@3"] == 1.0 and data["skipped_empty"] == 1
    assert len(data["crops"]) == 3 and data["crops"][0]["noc"] == {"85": 3, "90": 3}
    md = render_markdown(report)
    assert "| class | n | mIoU@1 | mIoU@3 | NoC@85 | NoC@90 | >20@85 | >20@90 |" in md
    assert "| all | 3 |" in md and "| single | 2 | 1.000 | 1.000 | 1.00 | 1.00 | 0 | 0 |" in md


def test_protocol_is_validated_and_an_all_free_set_gives_strict_json() -> None:
    image, gt = squares_image((30, 30), [(5, 5, 10)])
    with pytest.raises(ValueError):
        evaluate(DiskSegmenter(3), [(1, "x", image, gt)], max_clicks=3, report_clicks=(1, 5))
    with pytest.raises(ValueError):
        evaluate(DiskSegmenter(3), [(1, "x", image, gt)], thresholds=(85,))
    only_free = evaluate(DiskSegmenter(3), [(1, "free", image, np.zeros_like(gt))], max_clicks=3, report_clicks=(1,))
    assert only_free.skipped_empty == 1 and only_free.overall.n == 0
    assert json.loads(json.dumps(only_free.to_json(), allow_nan=False))["overall"]["mIoU@1"] is None
    two_points = mask_prompt(gt, 2, 0, seed=0)
    with pytest.raises(ValueError):
        simulate_crop(DiskSegmenter(3), InteractiveItem(1, "x", image, gt), two_points, 3, 1, 0.9)


# --- real data --------------------------------------------------------------------------------------------------


def test_runs_on_real_magnetic_tile_crops(magnetic_tile_pairs: list) -> None:
    """Three real crops, the classical defect map as regions: a click keeps (or drops) the thresholded region
    under it, or paints a small disk where the map found nothing. Each simulated click must sit on an error of the
    mask it corrects, with the right label."""
    from store.images import load_image

    params = ClassicalParams(1.0, 10.0, "dark", 26.0)
    crops = [p for p in pick_crops(magnetic_tile_pairs, per_class=1) if p[2] in ("MT_Blowhole", "MT_Crack", "MT_Break")]
    items = [(i, cls, load_image(img), cv2.imread(str(mask), 0) >= 128) for i, (img, mask, cls) in enumerate(crops)]
    assert len(items) == 3 and all(gt.any() for *_, gt in items)

    def regions(image: np.ndarray) -> np.ndarray:
        return cv2.connectedComponents((defect_map(image, params) > params.threshold).astype(np.uint8), 8)[1]

    seg = RegionSegmenter(regions, disk=3)
    report = evaluate(seg, items, max_clicks=8, report_clicks=(1, 3, 5))
    assert report.overall.n == 3 and report.skipped_empty == 0
    assert set(report.per_class) == {"MT_Blowhole", "MT_Crack", "MT_Break"}
    for k, v in report.overall.miou_at.items():
        assert 0.0 <= v <= 1.0
    assert report.overall.miou_at[5] > report.overall.miou_at[1]  # clicks fix what the map got wrong
    for crop, (sid, cls, image, gt) in zip(report.crops, items):
        assert crop.clicks[0] == Click(*ground_truth_first_click(InteractiveItem(sid, cls, image, gt), 0).points[0], 1)
        assert all(1 <= n <= 8 for n in crop.noc.values())
        emb = seg.embed(image)
        for k in range(1, len(crop.clicks)):
            pts = np.array([[c.x, c.y] for c in crop.clicks[:k]], np.float32)
            lbs = np.array([c.label for c in crop.clicks[:k]], np.int32)
            pred = seg.decode(emb, pts, lbs).mask
            assert iou(pred, gt) == pytest.approx(crop.ious[k - 1])
            c = crop.clicks[k]
            x, y = int(c.x), int(c.y)
            assert (gt[y, x] and not pred[y, x]) if c.label == 1 else (pred[y, x] and not gt[y, x])
    json.dumps(report.to_json())
