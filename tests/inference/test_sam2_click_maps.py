"""`sam2.1_resnet50d_clicks`: SAM 2's decoder with Gaussian click maps (inference.sam2_net.ClickMaps).

A teacher trained here from random weights cannot learn from a few hundred crops to find the clicked object through
its prompt tokens' attention alone; it sees its clicks as maps, as the student does. These tests check that the maps
land at the click, that zeroed maps leave plain SAM 2 unchanged, and that the checkpoint, the native-scale teacher and
the ONNX teacher pair all keep them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.errors import ModelError, ModelMismatchError
from inference.sam2_net import ClickMaps, Sam2Net, build_model, guess_config, load_model

SIZE = 128
CLICKS = "sam2.1_resnet50d_clicks"
PLAIN = "sam2.1_resnet50d"
CLICK_KEYS = sorted(f"sam_mask_decoder.click_maps.{c}.{p}" for c in ("embed", "s0", "s1") for p in ("weight", "bias"))


def _convs(cm: ClickMaps) -> list[torch.nn.Conv2d]:
    return [cm.embed, cm.s0, cm.s1]


def _set_click_weights(cm: ClickMaps, pos: float, neg: float) -> None:
    """Every output channel = pos * positive map + neg * negative map (no bias)."""
    with torch.no_grad():
        for conv in _convs(cm):
            conv.bias.zero_()
            conv.weight.zero_()
            conv.weight[:, 0] = pos
            conv.weight[:, 1] = neg


def _argmax_cell(t: torch.Tensor) -> tuple[int, int]:
    hw = t.shape[-1]
    i = int(torch.argmax(t))
    return i // hw, i % hw


def test_click_maps_are_drawn_at_the_click_on_each_grid() -> None:
    torch.manual_seed(0)
    net = Sam2Net(build_model(CLICKS, image_size=SIZE)).eval()
    cm = net.clicks
    assert isinstance(cm, ClickMaps)
    _set_click_weights(cm, pos=1.0, neg=0.0)
    dense = torch.zeros(1, 256, 8, 8)
    hi = [torch.zeros(1, 32, 32, 32), torch.zeros(1, 64, 16, 16)]
    x, y = 50.0, 90.0
    points = torch.tensor([[[x, y], [110.0, 22.0], [0.0, 0.0]]])  # no click on a cell border
    labels = torch.tensor([[1.0, 0.0, -1.0]])
    with torch.no_grad():
        d, (h0, h1) = net.clicks(points, labels, SIZE, dense, hi)
    assert d.shape == dense.shape and h0.shape == hi[0].shape and h1.shape == hi[1].shape
    for out, stride in ((d, 16), (h0, 4), (h1, 8)):
        assert _argmax_cell(out[0, 0]) == (int(y) // stride, int(x) // stride), stride
        # every output channel got the same map (weights 1 on the positive channel)
        torch.testing.assert_close(out[0], out[0, :1].expand_as(out[0]))
        assert 0.5 < float(out.max()) <= 1.0

    # the negative click and the padding point draw nothing on the positive channel
    with torch.no_grad():
        d, (h0, h1) = net.clicks(points[:, 1:], labels[:, 1:], SIZE, dense, hi)
    for out in (d, h0, h1):
        assert torch.count_nonzero(out) == 0
    # and the negative channel has the negative click where it is
    _set_click_weights(cm, pos=0.0, neg=1.0)
    with torch.no_grad():
        d, (h0, h1) = net.clicks(points, labels, SIZE, dense, hi)
    for out, stride in ((d, 16), (h0, 4), (h1, 8)):
        assert _argmax_cell(out[0, 0]) == (22 // stride, 110 // stride), stride


def test_zeroed_click_maps_give_plain_sam2s_outputs() -> None:
    torch.manual_seed(0)
    plain = build_model(PLAIN, image_size=SIZE)
    clicks = build_model(CLICKS, image_size=SIZE)
    missing, unexpected = clicks.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and sorted(missing) == CLICK_KEYS
    p_net, c_net = Sam2Net(plain).eval(), Sam2Net(clicks).eval()
    assert p_net.clicks is None and c_net.clicks is not None
    random_click_state = {k: v.clone() for k, v in c_net.clicks.state_dict().items()}
    with torch.no_grad():
        for conv in _convs(c_net.clicks):
            conv.weight.zero_()
            conv.bias.zero_()

    image = torch.rand(1, 3, SIZE, SIZE)
    # two prompts on one image (the decoder's repeat path), one with a negative click and one padded
    points = torch.tensor([[[40.0, 50.0], [100.0, 90.0]], [[70.0, 30.0], [0.0, 0.0]]])
    labels = torch.tensor([[1.0, 0.0], [1.0, -1.0]])
    with torch.no_grad():
        p_masks, p_iou = p_net.decode_all(p_net.encode(image), points, labels)
        c_masks, c_iou = c_net.decode_all(c_net.encode(image), points, labels)
    assert c_masks.shape == (2, 4, SIZE // 4, SIZE // 4)
    torch.testing.assert_close(c_masks, p_masks, rtol=0, atol=0)
    torch.testing.assert_close(c_iou, p_iou, rtol=0, atol=0)

    c_net.clicks.load_state_dict(random_click_state)
    with torch.no_grad():
        c_masks, _ = c_net.decode_all(c_net.encode(image), points, labels)
    assert float((c_masks - p_masks).abs().max()) > 1e-3


def test_a_clicks_checkpoint_round_trips_and_is_told_apart_from_the_plain_one(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(CLICKS, image_size=SIZE)
    state = model.state_dict()
    assert sorted(k for k in state if "click_maps" in k) == CLICK_KEYS
    ckpt = tmp_path / "clicks.pt"
    torch.save({"model": state}, ckpt)
    loaded = load_model(ckpt, CLICKS, image_size=SIZE)  # strict
    assert loaded.state_dict().keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(loaded.state_dict()[k], v), k

    plain_state = build_model(PLAIN, image_size=SIZE).state_dict()
    plain = tmp_path / "plain.pt"
    torch.save({"model": plain_state}, plain)
    assert guess_config(state) == CLICKS and guess_config(plain_state) == PLAIN
    # either way round, the refusal names the config that fits
    for path, config, fits in ((ckpt, PLAIN, CLICKS), (plain, CLICKS, PLAIN)):
        refusal = re.escape(f"looks like a {fits} checkpoint (use --config {fits})")
        with pytest.raises(ModelMismatchError, match=refusal):
            load_model(path, config, image_size=SIZE)


def test_only_the_native_scale_teacher_runs_a_clicks_model() -> None:
    from inference.teacher import Sam2NativeSegmenter, Sam2Segmenter

    torch.manual_seed(0)
    model = build_model(CLICKS, image_size=SIZE)
    with pytest.raises(ModelError, match="--scale"):
        Sam2Segmenter(model, config=CLICKS)
    seg = Sam2NativeSegmenter(model, config=CLICKS, scale=1.0)
    image = np.random.default_rng(0).integers(0, 256, (100, 140, 3), dtype=np.uint8)
    emb = seg.embed(image)
    out = seg.decode(emb, np.array([[70.0, 40.0]], np.float32), np.array([1.0], np.float32))
    assert out.logits.shape == (100, 140)
    assert np.isfinite(out.logits).all() and np.isfinite(out.score)
    # box and mask prompts go through SAM 2's own inputs; the clicks still enter as maps beside them
    from inference.segmenter import Prompt

    mask = np.zeros((100, 140), bool)
    mask[30:50, 60:90] = True
    pts, lbs = np.array([[70.0, 40.0], [20.0, 80.0]], np.float32), np.array([1, 0], np.int32)
    prompt = Prompt(pts, lbs, box=np.array([55, 25, 95, 55], np.float32), mask=mask)
    full = seg.decode_full(emb, prompt)
    assert full.logits.shape == (100, 140) and np.isfinite(full.logits).all()
    with torch.no_grad():
        for conv in _convs(seg.net.clicks):
            conv.weight.zero_()
            conv.bias.zero_()
    assert np.abs(seg.decode_full(emb, prompt).logits - full.logits).max() > 1e-3  # the maps were in that answer


def test_the_onnx_teacher_decoder_keeps_the_click_maps(tmp_path: Path) -> None:
    import onnxruntime as ort

    from inference.export.graph import export_teacher_pair

    torch.manual_seed(0)
    net = Sam2Net(build_model(CLICKS, image_size=SIZE)).eval()
    enc_path, dec_path = export_teacher_pair(net, tmp_path / "enc.onnx", tmp_path / "dec.onnx")

    image = torch.rand(1, 3, SIZE, SIZE) * 255
    pts = torch.tensor([[[45.0, 70.0], [100.0, 30.0]]])
    lbs = torch.tensor([[1.0, 0.0]])
    enc = ort.InferenceSession(str(enc_path), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(dec_path), providers=["CPUExecutionProvider"])
    feats = dict(zip(("image_embed", "high_res_0", "high_res_1"), enc.run(None, {"image": image.numpy()})))
    logits, score = dec.run(["mask_logits", "score"],
                            {**feats, "point_coords": pts.numpy(), "point_labels": lbs.numpy()})
    with torch.no_grad():
        ref_feats = net.encode(image / 255)
        ref_logits, ref_score = net.decode_single(ref_feats, pts, lbs)
    for k, v in feats.items():
        np.testing.assert_allclose(v, ref_feats[k].numpy(), atol=1e-4, rtol=0, err_msg=k)
    assert logits.shape == (1, 1, SIZE // 4, SIZE // 4)
    np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(score, ref_score.numpy(), atol=1e-4, rtol=0)

    # the graph's answer is the one with the maps: without them PyTorch answers otherwise
    with torch.no_grad():
        for conv in _convs(net.clicks):
            conv.weight.zero_()
            conv.bias.zero_()
        no_maps, _ = net.decode_single(ref_feats, pts, lbs)
    assert float(np.abs(logits - no_maps.numpy()).max()) > 1e-2


def test_a_clicks_teacher_is_registered_at_native_scale_only(tmp_path: Path) -> None:
    # refused at `models add` without --scale, not at every later predict
    from inference.registry import add_model, open_segmenter
    from inference.teacher import Sam2NativeSegmenter
    from store.project import Project

    project = Project.create(tmp_path / "proj")
    ckpt = tmp_path / "clicks.pt"
    torch.save({"model": build_model(CLICKS, image_size=SIZE).state_dict()}, ckpt)
    with pytest.raises(ModelError, match=r"reads click maps.*add it with --scale"):
        add_model(project, "teacher", ckpt, config=CLICKS, image_size=SIZE)
    info, existed = add_model(project, "teacher", ckpt, config=CLICKS, image_size=SIZE, scale=1.0)
    assert not existed and info.meta["layout"] == "native" and info.architecture == CLICKS
    assert isinstance(open_segmenter(project, info), Sam2NativeSegmenter)
