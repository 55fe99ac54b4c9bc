"""The seed-001 student: size budget, shapes (1/8 masks, teacher-alignable embedding), checkpoints, precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inference.errors import CheckpointError, ModelError, ModelMismatchError
from inference.student import (
    BACKBONES,
    EmbeddingAligner,
    StudentConfig,
    StudentModel,
    adapted_windows,
    align_embedding,
    load_checkpoint,
    model_summary,
    read_checkpoint,
)
from inference.torch_backend import StudentTorchSegmenter


def test_size_budget(student_model: StudentModel) -> None:
    s = model_summary(student_model)
    assert 1_600_000 <= s["params"] <= 6_000_000, s
    assert s["int8_bytes"] <= 6.3e6  # seed 001: ~6.3 MB at INT8
    assert s["parts"]["encoder.backbone"] > 0.75 * s["params"]  # the timm backbone is the bulk, as designed


def test_shapes_at_512_and_alignment_to_teacher(student_model: StudentModel) -> None:
    x = torch.randn(2, 3, 512, 512)
    pts = torch.tensor([[[100.0, 200.0]], [[30.0, 40.0]]])
    lbl = torch.ones(2, 1)
    with torch.no_grad():
        emb, masks, scores = student_model(x, pts, lbl)
    assert emb.shape == (2, 256, 32, 32)  # SAM 2's channels, 1/16 of the input
    assert masks.shape == (2, 1, 256, 256)  # 1/2 of the input: the default head (SAM's decoder: 1/4)
    assert scores.shape == (2, 1) and bool(((scores >= 0) & (scores <= 1)).all())
    teacher_hw = (64, 64)  # SAM 2 image embedding at 1024
    assert align_embedding(emb, teacher_hw).shape == (2, 256, 64, 64)
    assert EmbeddingAligner(256, 256)(emb, teacher_hw).shape == (2, 256, 64, 64)
    narrow = EmbeddingAligner(128, 256)
    assert narrow(torch.randn(1, 128, 32, 32), teacher_hw).shape == (1, 256, 64, 64)


@pytest.mark.parametrize(("backbone", "stride"), [("tiny_vit_5m_224", 4), ("efficientnet_b0", 2)])
def test_input_size_1024_matches_sam_grid(backbone: str, stride: int) -> None:
    cfg = StudentConfig(input_size=1024, backbone=backbone, mask_stride=stride)
    if backbone.startswith("tiny_vit"):
        assert cfg.window_sizes == adapted_windows(1024)
        assert all((1024 // 2 ** (i + 2)) % w == 0 for i, w in enumerate(cfg.window_sizes) if i > 0)
    else:
        assert cfg.window_sizes == ()  # a CNN has no attention windows
    m = StudentModel(cfg).eval()
    with torch.no_grad():
        emb, hi = m.encode(torch.randn(1, 3, 1024, 1024))
    assert emb.shape == (1, 256, 64, 64)  # same H x W as SAM 2's embedding: no resize needed to align
    # the skip feature lives on the mask grid; at 1/2 with a quarter of the channels (the same number of values)
    assert hi.shape == ((1, 64, 256, 256) if stride == 4 else (1, 16, 512, 512))
    with pytest.raises(ValueError):
        StudentConfig(input_size=500)


def test_checkpoint_roundtrip_weights_only(student_model: StudentModel, student_ckpt: Path) -> None:
    obj = torch.load(student_ckpt, map_location="cpu", weights_only=True)  # plain data only
    assert obj["format"] == "maskbench.student" and obj["config"]["input_size"] == 512
    loaded = load_checkpoint(student_ckpt)
    x = torch.randn(1, 3, 512, 512)
    pts, lbl = torch.tensor([[[10.0, 20.0], [300.0, 100.0]]]), torch.tensor([[1.0, 0.0]])
    with torch.no_grad():
        a = student_model(x, pts, lbl)
        b = loaded(x, pts, lbl)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def test_broken_and_foreign_student_files(tmp_path: Path, student_ckpt: Path, teacher_ckpt: Path) -> None:
    cut = tmp_path / "cut.pt"
    cut.write_bytes(student_ckpt.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(cut)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError):
        read_checkpoint(junk)
    with pytest.raises(ModelMismatchError, match="SAM 2 checkpoint"):
        load_checkpoint(teacher_ckpt)
    obj = torch.load(student_ckpt, weights_only=True)
    obj["config"]["decoder_dim"] = 96  # config and weights disagree
    bad = tmp_path / "bad_cfg.pt"
    torch.save(obj, bad)
    with pytest.raises(ModelMismatchError, match="do not match"):
        load_checkpoint(bad)


def test_backbone_choices_are_checked() -> None:
    with pytest.raises(ValueError, match="backbone must be one of"):
        StudentConfig(backbone="resnet50")
    with pytest.raises(ValueError, match="TinyViT setting"):
        StudentConfig(backbone="efficientnet_b0", window_sizes=(7, 7, 14, 7))
    assert StudentConfig().backbone == "efficientnet_b0"  # the default since issue 14's backbone sweep


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_gives_the_same_interface(backbone: str) -> None:
    m = StudentModel(StudentConfig(input_size=128, backbone=backbone, mask_stride=4))  # 4: every backbone has it
    emb, logits, _ = m(torch.rand(2, 3, 128, 128), torch.rand(2, 1, 2) * 128, torch.ones(2, 1))
    assert emb.shape == (2, 256, 8, 8) and logits.shape == (2, 1, 32, 32)
    logits.mean().backward()
    assert all(p.grad is not None for p in m.encoder.backbone.parameters() if p.requires_grad)


@pytest.mark.parametrize("stride", [4, 8])
def test_training_contract(stride: int) -> None:
    cfg = StudentConfig.from_project({"input_size": 128, "backbone": "tinyvit_5m", "quantization": "x",
                                      "mask_stride": stride})
    assert cfg.backbone == "tiny_vit_5m_224"  # project.yaml's name
    model = StudentModel(cfg)
    emb, logits, scores = model(torch.rand(2, 3, 128, 128), torch.rand(2, 1, 2) * 128, torch.ones(2, 1))
    assert emb.shape == (2, 256, 8, 8) and logits.shape == (2, 1, 128 // stride, 128 // stride)
    logits.mean().backward()  # trainable end to end
    assert model.encoder.backbone.patch_embed.conv1.conv.weight.grad is not None


def test_half_resolution_head_keeps_the_skip_feature_size_and_draws_a_one_pixel_line() -> None:
    """mask_stride 2: logits at 1/2, the cached skip feature holds as many values as the 1/4 head's, and the head
    can learn a 1 px line that the 1/4 head cannot draw (its logits are four pixels wide)."""
    torch.manual_seed(0)
    cfg2, cfg4 = StudentConfig(input_size=64, mask_stride=2), StudentConfig(input_size=64, mask_stride=4)
    assert cfg2.high_res_channels * cfg2.high_res_hw**2 == cfg4.high_res_channels * cfg4.high_res_hw**2
    with pytest.raises(ValueError, match="stride-2 feature"):
        StudentConfig(mask_stride=2, backbone="tinyvit_5m")
    target = torch.zeros(1, 1, 64, 64)
    target[..., 20:44, 31] = 1.0  # a vertical line one pixel wide
    x = torch.rand(1, 3, 64, 64)
    pts, lbs = torch.tensor([[[31.0, 32.0]]]), torch.ones(1, 1)
    best = {}
    for cfg in (cfg2, cfg4):
        torch.manual_seed(0)
        model = StudentModel(cfg)
        _, hi = model.encode(x)
        assert hi.shape == (1, cfg.high_res_channels, 64 // cfg.mask_stride, 64 // cfg.mask_stride)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(150):
            logits = F.interpolate(model(x, pts, lbs)[1], size=(64, 64), mode="bilinear", align_corners=False)
            loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(20.0))
            opt.zero_grad()
            loss.backward()
            opt.step()
        pred = logits.detach() > 0
        best[cfg.mask_stride] = float((pred & (target > 0)).sum() / (pred | (target > 0)).sum())
    assert best[2] > 0.5 and best[2] > best[4] + 0.15, best


def test_precision_options(magnetic_tile_pairs: list) -> None:
    import copy

    from store.images import load_image

    img = load_image(magnetic_tile_pairs[0][0])
    torch.manual_seed(1)
    small = StudentModel(StudentConfig(input_size=128)).eval()
    with pytest.raises(ModelError, match="fp16 needs a GPU"):
        StudentTorchSegmenter(small, precision="fp16", fuse=False)
    fp32 = StudentTorchSegmenter(copy.deepcopy(small))
    bf16 = StudentTorchSegmenter(copy.deepcopy(small), precision="bf16")
    a, b = fp32.embed(img), bf16.embed(img)
    assert b.features["image_embed"].dtype == np.float32
    cos = float(np.dot(a.features["image_embed"].ravel(), b.features["image_embed"].ravel()) / (
        np.linalg.norm(a.features["image_embed"]) * np.linalg.norm(b.features["image_embed"])))
    assert cos > 0.99


def assert_exported_decoder_matches(model: StudentModel, x: torch.Tensor, pts: torch.Tensor, lbl: torch.Tensor,
                                    tmp_path: Path) -> None:
    """The decoder on ONNX Runtime answers as in PyTorch (eval mode) for these clicks."""
    import onnxruntime as ort

    from inference.onnx_export import export_decoder

    model.eval()
    with torch.no_grad():
        emb, hi = model.encode(x)
        want = model.decoder(emb, hi, pts, lbl)[0].numpy()
    path = export_decoder(model, tmp_path / "decoder.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image_embed": emb.numpy(), "high_res": hi.numpy(), "point_coords": pts.numpy(),
                          "point_labels": lbl.numpy()})[0]
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-3)


def test_refine_blocks_start_as_the_identity_train_and_export(tmp_path: Path) -> None:
    """student.refine_blocks: residual 3x3 convs on the mask grid. Zero-initialised, a student with them answers as
    the same weights without them (so the read-out trains as before from the first step); they take gradients;
    checkpoints written before the key existed load without them; ONNX Runtime matches PyTorch."""
    torch.manual_seed(0)
    plain = StudentModel(StudentConfig(input_size=64)).eval()
    refined = StudentModel(StudentConfig(input_size=64, refine_blocks=2)).eval()
    missing, unexpected = refined.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("decoder.refine.") for k in missing)
    x, pts, lbl = torch.rand(1, 3, 64, 64), torch.tensor([[[20.0, 30.0], [40.0, 10.0]]]), torch.tensor([[1.0, 0.0]])
    with torch.no_grad():
        assert torch.equal(plain(x, pts, lbl)[1], refined(x, pts, lbl)[1])
    refined.train()
    refined(x, pts, lbl)[1].square().mean().backward()
    assert all(p.grad is not None for p in refined.decoder.refine.parameters())
    assert float(refined.decoder.refine[0].conv2.weight.grad.abs().sum()) > 0

    old = plain.config.to_dict()
    del old["refine_blocks"]  # a checkpoint from before the key
    assert StudentConfig.from_dict(old).refine_blocks == 0
    with pytest.raises(ValueError, match="refine_blocks must be >= 0"):
        StudentConfig(refine_blocks=-1)

    with torch.no_grad():  # weights away from the identity, then the exported decoder against PyTorch
        for p in refined.decoder.refine.parameters():
            p.normal_(0, 0.1)
    assert_exported_decoder_matches(refined, x, pts, lbl, tmp_path)


@pytest.mark.parametrize("stride", [2, 4])
def test_context_blocks_widen_the_click_aware_grid_start_as_the_identity_and_export(tmp_path: Path,
                                                                                 stride: int) -> None:
    """student.context_blocks: dilated depthwise residual blocks on the 1/8 grid, which the clicks then enter. The
    blocks start as the identity (the rest of the decoder trains as before from the first step); they and the 1/8
    clicks take gradients; a change on the 1/8 grid reaches 15 cells either side through four blocks (4 without the
    dilations); checkpoints without the key load as without blocks; ONNX Runtime matches PyTorch; the 1/8 head
    refuses them and has none by default."""
    old = StudentConfig(input_size=128).to_dict()
    del old["context_blocks"]  # a checkpoint from before the key
    assert StudentConfig.from_dict(old).context_blocks == 0
    # left out: four on heads 2 and 4, none on the 1/8 head
    assert StudentConfig(mask_stride=stride).context_blocks == 4 and StudentConfig(mask_stride=8).context_blocks == 0
    torch.manual_seed(0)
    plain = StudentModel(StudentConfig(input_size=128, mask_stride=stride, context_blocks=0)).eval()
    ctx = StudentModel(StudentConfig(input_size=128, mask_stride=stride, context_blocks=4)).eval()
    missing, unexpected = ctx.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith(("decoder.context.", "decoder.clicks0.")) for k in missing)
    assert [b.dw.dilation[0] for b in ctx.decoder.context] == [1, 2, 4, 8]
    x, pts, lbl = torch.rand(1, 3, 128, 128), torch.tensor([[[40.0, 60.0], [90.0, 20.0]]]), torch.tensor([[1.0, 0.0]])
    with torch.no_grad():
        # the blocks start as the identity; the 1/8 clicks are new input, so zeroed they give the plain answer
        no_clicks = ctx.decoder.clicks0.weight.clone()
        ctx.decoder.clicks0.weight.zero_()
        ctx.decoder.clicks0.bias.zero_()
        assert torch.equal(plain(x, pts, lbl)[1], ctx(x, pts, lbl)[1])
        ctx.decoder.clicks0.weight.copy_(no_clicks)
        assert not torch.equal(plain(x, pts, lbl)[1], ctx(x, pts, lbl)[1])
    ctx.train()
    ctx(x, pts, lbl)[1].square().mean().backward()
    assert all(p.grad is not None for p in [*ctx.decoder.context.parameters(), *ctx.decoder.clicks0.parameters()])
    assert float(ctx.decoder.context[0].pw2.weight.grad.abs().sum()) > 0

    with torch.no_grad():  # weights away from the identity: one changed cell on the 1/8 grid reaches 15 cells away
        for p in ctx.decoder.context.parameters():
            p.normal_(0, 0.1)
        grid = torch.zeros(1, ctx.decoder.context[0].dw.in_channels, 32, 32)
        poked = grid.clone()
        poked[..., 0, 0] = 1.0
        reach = (ctx.decoder.context(poked) - ctx.decoder.context(grid)).abs().sum(1)[0]
        assert float(reach[15, 15]) > 0 and float(reach[16, 16]) == 0 and float(reach[0, 16]) == 0
    assert_exported_decoder_matches(ctx, x, pts, lbl, tmp_path)

    with pytest.raises(ValueError, match="context_blocks work on the 1/8 grid"):
        StudentConfig(mask_stride=8, context_blocks=2)
    with pytest.raises(ValueError, match="context_blocks must be >= 0"):
        StudentConfig(context_blocks=-1)


def test_a_training_window_carries_the_canvas_positions_it_was_cut_from() -> None:
    """A window cut at (x0, y0) of a canvas: its cells' encodings are the canvas cells' at that place and its clicks
    are encoded where they lie on the canvas, so training on windows teaches the positions the whole canvas shows
    at prediction (before, every window was encoded as the canvas's top-left corner)."""
    torch.manual_seed(0)
    dec = StudentModel(StudentConfig(input_size=128)).decoder.eval()
    whole = dec.prompt.dense_pe(8, 8)  # a 128 px canvas: 8 x 8 cells
    origin = torch.tensor([[64.0, 32.0], [0.0, 0.0]])  # x, y in pixels: cells (x 4, y 2) and the corner
    window = dec.prompt.dense_pe(4, 4, origin)  # 64 px windows
    torch.testing.assert_close(window[0], whole[:, 2:6, 4:8])
    torch.testing.assert_close(window[1], whole[:, 0:4, 0:4])

    emb, hi = torch.randn(2, 256, 4, 4), torch.randn(2, dec.skip1.in_channels // 4, 32, 32)
    pts, lbl = torch.tensor([[[10.0, 20.0]], [[10.0, 20.0]]]), torch.ones(2, 1)
    with torch.no_grad():
        at_corner = dec(emb, hi, pts, lbl)[0]
        placed = dec(emb, hi, pts, lbl, origin)[0]
    torch.testing.assert_close(placed[1], at_corner[1])  # a window at the corner is the corner
    assert not torch.allclose(placed[0], at_corner[0])  # one further in is told where it is
