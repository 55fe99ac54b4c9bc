"""Automatic masks: grid prompts, score and stability filtering, NMS; on a scripted segmenter and a real crop."""

from __future__ import annotations

import numpy as np

from inference.automask import generate_masks, nms, stability_score
from inference.segmenter import Decoded, Embedding


class _Blobs:
    """A fake segmenter that knows two blobs: a click inside one returns that blob (sharp logits, high score);
    a click elsewhere returns a vague low-score mask. Lets the test check the filters exactly."""

    name, kind, sha256, input_size = "fake", "student", "0" * 64, 64

    def __init__(self, h: int = 60, w: int = 80) -> None:
        yy, xx = np.mgrid[:h, :w]
        self.blobs = [((yy - 20) ** 2 + (xx - 20) ** 2) <= 64, ((yy - 40) ** 2 + (xx - 60) ** 2) <= 100]
        self.hw = (h, w)
        self.encoder_images = 0

    def embed(self, image):
        self.encoder_images += 1
        return Embedding({}, self.hw, 64, self.sha256)

    def decode(self, emb, points, labels):
        x, y = (int(v) for v in points[0])
        for b in self.blobs:
            if b[y, x]:
                return Decoded(np.where(b, 8.0, -8.0).astype(np.float32), 0.95)
        vague = np.full(self.hw, -0.5, np.float32)
        vague[max(0, y - 3) : y + 3, max(0, x - 3) : x + 3] = 0.5  # flips with the threshold: unstable
        return Decoded(vague, 0.9)

    def decode_prompts(self, emb, prompts):
        return [self.decode(emb, p, lb) for p, lb in prompts]


def test_filters_and_nms_on_scripted_segmenter() -> None:
    seg = _Blobs()
    found = generate_masks(seg, np.zeros((60, 80, 3), np.uint8), points_per_side=16)
    assert seg.encoder_images == 1  # one embedding for the whole grid
    assert len(found) == 2  # many grid points per blob, one mask each after NMS; vague masks filtered
    areas = sorted(m.area for m in found)
    assert areas == sorted(int(b.sum()) for b in seg.blobs)
    for m in found:
        assert m.stability == 1.0 and m.score == 0.95
        assert any(np.array_equal(m.mask, b) for b in seg.blobs)
        x, y = m.point
        assert m.mask[int(y), int(x)]
    assert generate_masks(seg, np.zeros((60, 80, 3), np.uint8), points_per_side=16, pred_score_thresh=0.99) == []


def test_stability_and_nms_helpers() -> None:
    sharp = np.where(np.arange(100).reshape(10, 10) < 50, 5.0, -5.0)
    assert stability_score(sharp) == 1.0
    soft = np.linspace(-2, 2, 100).reshape(10, 10)
    assert stability_score(soft) < 0.5
    from inference.automask import AutoMask, mask_box

    a = np.zeros((10, 10), bool)
    a[2:6, 2:6] = True
    b = a.copy()
    b[2:6, 6] = True
    c = np.zeros((10, 10), bool)
    c[8:, 8:] = True
    cands = [AutoMask(m, s, 1.0, (0, 0), mask_box(m), int(m.sum())) for m, s in ((a, 0.8), (b, 0.9), (c, 0.7))]
    kept = nms(cands, 0.7)
    assert [k.score for k in kept] == [0.9, 0.7]


def test_runs_on_the_student_and_a_real_crop(student_model, magnetic_tile_pairs) -> None:
    import copy

    from inference.torch_backend import StudentTorchSegmenter
    from store.images import load_image

    seg = StudentTorchSegmenter(copy.deepcopy(student_model))
    image = load_image(magnetic_tile_pairs[0][0])
    found = generate_masks(seg, image, points_per_side=8, pred_score_thresh=0.0, stability_thresh=0.0,
                           min_area=1, max_area_frac=1.0)
    assert seg.encoder_images == 1
    for m in found:  # random weights: no claim on quality, only on the contract
        assert m.mask.shape == image.shape[:2] and m.area == int(m.mask.sum()) > 0
    ious = [(np.logical_and(p.mask, q.mask).sum() / np.logical_or(p.mask, q.mask).sum())
            for i, p in enumerate(found) for q in found[i + 1 :]]
    assert all(v <= 0.7 for v in ious)
