"""Box and mask prompts at the model layer: the SAM 2 teacher decodes them (SAM 2's box= and mask_input=), the
student refuses them with the reason instead of ignoring them, and a binary mask becomes SAM 2's low-res logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infer_helpers import load_crops, pick_crops
from inference.segmenter import MASK_PROMPT_LOGIT, Prompt, PromptNotSupported, decode_prompt, mask_to_logits


def test_mask_to_logits_maps_coverage_to_plus_minus_l() -> None:
    m = np.zeros((40, 80), bool)
    m[:, :40] = True  # left half
    m[:, 41] = True  # one column of a 2-column cell on the 40-wide grid
    lg = mask_to_logits(m, (20, 40))
    assert lg.shape == (20, 40) and lg.dtype == np.float32
    assert np.all(lg[:, :20] == MASK_PROMPT_LOGIT)
    assert np.allclose(lg[:, 20], 0.0)  # half covered: on the threshold
    assert np.all(lg[:, 21:] == -MASK_PROMPT_LOGIT)
    assert np.array_equal(mask_to_logits(m, (20, 40)), lg)  # deterministic: a stored mask replays


@pytest.fixture(scope="module")
def crop(magnetic_tile_pairs: list) -> tuple[np.ndarray, np.ndarray]:
    img, gt, _ = load_crops(pick_crops(magnetic_tile_pairs, per_class=1))[1]
    return img, gt.astype(bool)


def test_teacher_decodes_box_and_mask_prompts(teacher_ckpt: Path, crop: tuple[np.ndarray, np.ndarray]) -> None:
    from inference.teacher import load_teacher_segmenter

    seg = load_teacher_segmenter(teacher_ckpt, "sam2.1_hiera_t", image_size=512)
    img, gt = crop
    h, w = gt.shape
    emb = seg.embed(img)
    pts, lbs = np.array([[w // 2, h // 2]], np.float32), np.array([1], np.int32)
    plain = decode_prompt(seg, emb, Prompt(pts, lbs))
    assert np.array_equal(plain.logits, seg.decode(emb, pts, lbs).logits)  # points only: the ordinary decode
    box = np.array([w * 0.2, h * 0.2, w * 0.7, h * 0.8], np.float32)
    boxed = decode_prompt(seg, emb, Prompt(pts, lbs, box=box))
    box_only = decode_prompt(seg, emb, Prompt(np.zeros((0, 2), np.float32), np.zeros(0, np.int32), box=box))
    masked = decode_prompt(seg, emb, Prompt(pts, lbs, mask=gt))
    both = decode_prompt(seg, emb, Prompt(pts, lbs, box=box, mask=gt))
    for d in (boxed, box_only, masked, both):
        assert d.logits.shape == (h, w) and np.isfinite(d.score)
    # each prompt reaches the decoder (none is dropped on the way)
    assert not np.allclose(boxed.logits, plain.logits)
    assert not np.allclose(masked.logits, plain.logits)
    assert not np.allclose(both.logits, boxed.logits)
    assert not np.allclose(box_only.logits, boxed.logits)
    # and decodes replay exactly (what a stored prediction relies on)
    again = decode_prompt(seg, emb, Prompt(pts, lbs, box=box.copy(), mask=gt.copy()))
    assert np.array_equal(again.logits, both.logits)
    # SAM 2's mask input: (1, S/4, S/4) logits for an S x S input
    assert seg.mask_input(gt).shape == (1, 128, 128)
    # predict() with a box or mask prompt goes through the same path
    [pred] = seg.predict([img], [Prompt(pts, lbs, box=box, mask=gt)])
    assert np.allclose(pred.logits, both.logits, atol=1e-4)
    from inference.cache import CachedSegmenter

    [cached] = CachedSegmenter(seg, None).predict([img], [Prompt(pts, lbs, box=box, mask=gt)])
    assert np.allclose(cached.logits, both.logits, atol=1e-4)  # the registry's wrapper passes them on too
    with pytest.raises(Exception, match="mask prompt is"):
        seg.decode_full(emb, Prompt(pts, lbs, mask=gt[:-1]))


def test_student_refuses_box_and_mask_prompts(student_ckpt: Path, crop: tuple[np.ndarray, np.ndarray]) -> None:
    from inference.cache import CachedSegmenter
    from inference.ort_backend import OrtStudentSegmenter
    from inference.runtime import StudentRuntime
    from inference.torch_backend import load_student_segmenter

    seg = load_student_segmenter(student_ckpt, name="student-random")
    img, gt = crop
    emb = seg.embed(img)
    pts, lbs = np.array([[10, 10]], np.float32), np.array([1], np.int32)
    assert decode_prompt(seg, emb, Prompt(pts, lbs)).logits.shape == gt.shape  # points: fine
    for prompt in (Prompt(pts, lbs, box=np.array([0, 0, 20, 20], np.float32)), Prompt(pts, lbs, mask=gt)):
        with pytest.raises(PromptNotSupported, match="student-random \\(student\\) takes point prompts only"):
            decode_prompt(seg, emb, prompt)
        with pytest.raises(PromptNotSupported):
            seg.predict([img], [prompt])
        with pytest.raises(PromptNotSupported):
            CachedSegmenter(seg, None).predict([img], [prompt])
    assert OrtStudentSegmenter.decode_full is StudentRuntime.decode_full  # the ONNX student refuses the same way

    class PointsOnly:  # any model without decode_full
        name, kind = "other", "student"

        def decode(self, *_a: object) -> None:
            raise AssertionError("must not be called with a box")

    with pytest.raises(PromptNotSupported, match="other"):
        decode_prompt(PointsOnly(), emb, Prompt(pts, lbs, box=np.array([0, 0, 5, 5], np.float32)))


def test_native_scale_teacher_decodes_box_and_mask_prompts_tile_by_tile(
        teacher_ckpt: Path, crop: tuple[np.ndarray, np.ndarray]) -> None:
    """At native scale on 256-pixel canvases a real crop spans several tiles: the box's tiles are decoded, the others
    stay background; a mask prompt reaches the decoder; decodes replay exactly."""
    from inference.layout import BACKGROUND_LOGIT
    from inference.teacher import load_teacher_segmenter

    seg = load_teacher_segmenter(teacher_ckpt, "sam2.1_hiera_t", image_size=256, scale=1.0)
    img, gt = crop
    h, w = gt.shape
    emb = seg.embed(img)
    lo = emb.layout
    assert len(lo.tiles) > 1
    none = (np.zeros((0, 2), np.float32), np.zeros(0, np.int32))
    box = np.array([4, 4, 60, 60], np.float32)  # inside the first tile only
    boxed = decode_prompt(seg, emb, Prompt(*none, box=box))
    assert boxed.logits.shape == (h, w)
    far = [(y0, x0) for y0, x0 in lo.tiles if y0 >= 60 + 64 or x0 >= 60 + 64]
    covered = np.zeros((h, w), bool)
    for y0, x0 in lo.tiles:
        if (y0, x0) not in far:
            covered[y0:y0 + 256, x0:x0 + 256] = True
    assert far and np.all(boxed.logits[~covered] == BACKGROUND_LOGIT)
    pts, lbs = np.array([[20, 20]], np.float32), np.array([1], np.int32)
    plain = decode_prompt(seg, emb, Prompt(pts, lbs))
    with_box = decode_prompt(seg, emb, Prompt(pts, lbs, box=box))
    with_mask = decode_prompt(seg, emb, Prompt(pts, lbs, mask=gt))
    assert not np.allclose(with_box.logits, plain.logits)
    assert not np.allclose(with_mask.logits, plain.logits)
    again = decode_prompt(seg, emb, Prompt(pts.copy(), lbs.copy(), box=box.copy(), mask=gt.copy()))
    assert np.array_equal(again.logits, decode_prompt(seg, emb, Prompt(pts, lbs, box=box, mask=gt)).logits)
    mask_only = decode_prompt(seg, emb, Prompt(*none, mask=gt))
    assert mask_only.logits.shape == (h, w) and np.isfinite(mask_only.score)
