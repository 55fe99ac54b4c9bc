"""QAT (issue 16): the fake quantisation rounds as the INT8 export does and passes gradients straight through,
prepare/strip leaves the plain student, the layers kept float are the export's output heads, and a real
`train --mode qat` run on real crops writes a plain student checkpoint that exports as QDQ INT8."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn

from inference.student import StudentConfig, StudentModel, load_checkpoint, read_checkpoint, save_checkpoint
from inference.training import qat
from inference.training.runner import TrainOptions, train
from store.errors import UserError
from store.project import Project


def _manual_int8(w: np.ndarray, axis: int) -> np.ndarray:
    """The export's per-channel symmetric INT8 (quantize.weight_only_int8's arithmetic), back to float."""
    others = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=others)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    return np.clip(np.round(w / scale.reshape(shape)), -127, 127) * scale.reshape(shape)


@pytest.mark.parametrize("layer", [nn.Conv2d(3, 8, 3), nn.ConvTranspose2d(6, 4, 2, stride=2), nn.Linear(7, 5)])
def test_weight_fake_quant_is_per_channel_symmetric_int8_with_a_straight_through_gradient(layer: nn.Module) -> None:
    torch.manual_seed(0)
    axis = qat.weight_axis(layer)
    w = layer.weight.detach().clone()
    w.select(axis, 1).zero_()  # an all-zero output channel (scale 1, as the export)
    w.select(axis, 2).mul_(40.0)  # a channel with a far larger range than the others: scales are per channel
    w.requires_grad_(True)
    fq = qat.fake_quant_weight(w, axis)
    np.testing.assert_allclose(fq.detach().numpy(), _manual_int8(w.detach().numpy(), axis), rtol=0, atol=1e-6)
    # the grid is 255 levels per channel: at most 255 distinct values in each output channel
    for c in range(w.shape[axis]):
        assert len(torch.unique(fq.select(axis, c))) <= 255
    g = torch.randn_like(w)
    (fq * g).sum().backward()
    assert torch.equal(w.grad, g)  # the identity: scale = max|w| / 127 never clips a weight


def test_activation_observer_averages_then_freezes_and_clips_with_a_straight_through_gradient() -> None:
    obs = qat.ActivationFakeQuant(momentum=0.9).train()
    x1, x2 = torch.linspace(-2.0, 1.0, 50), torch.linspace(-0.5, 4.0, 50)
    obs(x1)
    assert float(obs.amax) == pytest.approx(2.0)  # the first batch sets the range
    obs(x2)
    assert float(obs.amax) == pytest.approx(0.9 * 2.0 + 0.1 * 4.0)
    model = nn.Sequential(obs)
    qat.set_observing(model, False)
    x3 = torch.linspace(-10.0, 10.0, 101, requires_grad=True)
    y = obs(x3)
    amax = 0.9 * 2.0 + 0.1 * 4.0
    assert float(obs.amax) == pytest.approx(amax) and int(obs.seen) == 2  # frozen
    scale = np.float32(amax) / np.float32(127)
    expected = np.clip(np.round(x3.detach().numpy() / scale), -127, 127) * scale
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=0, atol=1e-5)
    y.sum().backward()
    inside = (x3.detach().abs() <= amax).float()
    assert torch.equal(x3.grad, inside)  # straight through inside the range, zero where clipped
    fresh = qat.ActivationFakeQuant().eval()
    assert torch.equal(fresh(x3), x3)  # never observed: left float


def _inputs(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return (torch.randn(2, 3, size, size, generator=g), torch.rand(2, 2, 2, generator=g) * size,
            torch.tensor([[1.0, 0.0], [1.0, -1.0]]))


def test_prepare_then_strip_gives_back_the_plain_student() -> None:
    torch.manual_seed(0)
    model = StudentModel(StudentConfig(input_size=64)).eval()
    keys = set(model.state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, pts, lbs = _inputs(64)
    with torch.no_grad():
        ref = model(x, pts, lbs)[1]
    qat.prepare_qat(model)
    assert qat.is_prepared(model)
    prepared_keys = set(model.state_dict())
    assert any(".parametrizations.weight.original" in k for k in prepared_keys)
    assert any(k.endswith("qat_input.amax") for k in prepared_keys)
    # the float heads have neither a parametrization nor an observer
    assert "decoder.iou_head.layers.1.weight" in prepared_keys
    assert "decoder.iou_head.layers.1.qat_input.amax" not in prepared_keys
    with torch.no_grad():
        assert not torch.allclose(model(x, pts, lbs)[1], ref)  # INT8 weights change the answer
    with pytest.raises(ValueError):
        qat.prepare_qat(model)
    # the copy checkpoints are written from: plain, the latent weights, and the prepared model left as it was
    plain = qat.stripped_copy(model)
    assert not qat.is_prepared(plain) and set(plain.state_dict()) == keys
    assert all(torch.equal(v, before[k]) for k, v in plain.state_dict().items())
    assert qat.is_prepared(model) and set(model.state_dict()) == prepared_keys
    qat.strip_qat(model)
    assert not qat.is_prepared(model)
    assert set(model.state_dict()) == keys
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(type(m).__name__.startswith("Parametrized") or m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x, pts, lbs)[1], ref)


@pytest.mark.parametrize("stride", [2, 4, 8])
def test_layers_kept_float_are_the_exports_output_heads(tmp_path: Path, stride: int) -> None:
    from inference.export import graph, quantize

    model = StudentModel(StudentConfig(input_size=64, mask_stride=stride))
    path = graph.export_student_single(model, tmp_path / "s.onnx", 64)
    layers = {n for n, m in model.named_modules() if isinstance(m, qat.QUANT_TYPES)}
    # TorchScript export names a module's node /decoder/iou_head/layers.1/Gemm
    heads = {".".join(n.strip("/").split("/")[:-1]) for n in quantize.output_heads(path)}
    assert qat.float_heads(model) == heads & layers
    assert len(qat.quantised_layers(model)) == len(layers) - len(heads & layers) > 50


def test_checkpoint_option_is_only_for_a_new_qat_run_and_qat_needs_a_student(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--checkpoint"):
        train(TrainOptions(project=tmp_path, mode="distill", checkpoint=tmp_path / "x.pt", progress=False))
    Project.create(tmp_path / "p").close()
    with pytest.raises(UserError, match="no active student"):
        train(TrainOptions(project=tmp_path / "p", mode="qat", progress=False, emit=lambda _e: None))
    with pytest.raises(UserError, match="not found"):
        train(TrainOptions(project=tmp_path / "p", mode="qat", checkpoint=tmp_path / "none.pt", progress=False,
                           emit=lambda _e: None))


def test_qat_run_fine_tunes_the_active_student_and_its_checkpoint_exports_as_qdq_int8(
        fresh_training_project) -> None:
    """The run starts from the project's active student (a random one: the test is about the mechanics), trains with
    fake quantisation, records mode qat, writes a plain student checkpoint that the normal loader and the normal
    export take, and the export's INT8 file is QDQ."""
    import onnx

    from inference.export.pipeline import ExportOptions, run_export
    from inference.registry import add_model

    project = fresh_training_project(per_class=6)  # 8 train crops (2 steps of 4), 2 validation crops
    torch.manual_seed(5)
    source = project.parent / "source.pt"
    # the training tests' student: 128 px canvas at a quarter of the crop pixels (conftest.TEST_OVERRIDES)
    save_checkpoint(StudentModel(StudentConfig(input_size=128, scale=0.25)), source)
    with Project.open(project) as p:
        info, _ = add_model(p, "student", source, name="source")
        stored = info.resolve(p)
    events: list[dict[str, Any]] = []
    summary = train(TrainOptions(project=project, mode="qat", epochs=1, name="qat", progress=False,
                                 emit=events.append, overrides={"qat": {"observer_warmup": 0.5}}))
    assert summary["status"] == "finished"
    start = next(e for e in events if e["event"] == "start")
    assert start["mode"] == "qat" and start["epochs"] == 1 and start["steps_per_epoch"] == 2
    steps = [e for e in events if e["event"] == "step"]
    assert all(np.isfinite(e["loss"]) for e in steps) and {"loss_feat", "loss_soft", "loss_dice"} <= set(steps[0])
    assert max(e["lr"] for e in steps) <= 3e-4 + 1e-12  # a tenth of the test's distillation rate (3e-3)
    epoch = next(e for e in events if e["event"] == "epoch")
    assert epoch["val_iou_gt"] is not None  # validation ran on the fake-quantised EMA model

    from store.schema import TrainingRun

    with Project.open(project) as p, p.db.session() as s:
        row = s.get(TrainingRun, summary["run_id"])
        assert row.mode == "qat" and row.status == "finished" and row.epochs_done == 1
        assert row.best_checkpoint == summary["best_checkpoint"]
        assert row.config["distillation"]["qat"]["checkpoint"] == str(stored)

    # best.pt: a plain student (the normal loader, strict keys), tagged as QAT of the source, weights moved
    best = Path(summary["best_checkpoint"])
    meta = read_checkpoint(best)["meta"]
    assert meta["qat"] is True and meta["source_checkpoint"] == str(stored) and meta["mode"] == "qat"
    tuned, original = load_checkpoint(best), load_checkpoint(source)
    assert set(tuned.state_dict()) == set(original.state_dict())
    assert not qat.is_prepared(tuned)
    assert not torch.equal(tuned.decoder.in_proj.weight, original.decoder.in_proj.weight)
    run_dir = Path(summary["run_dir"])
    assert set(torch.load(run_dir / "checkpoints" / "epoch_001.pt", weights_only=True)["model"]) == set(
        original.state_dict())
    # last.pt keeps the fake-quantised state (resume); the observers stopped after ceil(0.5 * 2) = 1 of the 2 steps
    # (the encoder runs once per training step; validation uses the EMA copy in eval mode, which observes nothing)
    last = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    seen = {k: int(v) for k, v in last.items() if k.startswith("encoder.") and k.endswith("qat_input.seen")}
    assert len(seen) > 20 and set(seen.values()) == {1}

    with Project.open(project) as p:
        s = run_export(p, checkpoint=best, options=ExportOptions(
            precisions=["int8"], split_pair=False, calibration_samples=4, parity_samples=2, val_limit=2,
            calibration_method="minmax", int8_keep_float_steps=(), latency_runs=0, command="pytest qat"))
    row = next(r for r in s.rows if r["precision"] == "int8")  # ok or failed/: a random student's parity is poor
    assert row["card"]["model"]["checkpoint"] == str(best)
    graph = onnx.load(row["path"]).graph
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "MatMul"} <= {n.op_type for n in graph.node}

    # the export's INT8 weights are the integers training saw: a plain conv's exactly, and the stem conv's after
    # the export folded its BatchNorm into it (per-channel symmetric rounding ignores a per-channel factor)
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}

    def int8_codes(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        found = [(inits[n.input[0]], inits[n.input[1]]) for n in graph.node if n.op_type == "DequantizeLinear"
                 and n.input[0] in inits and inits[n.input[0]].dtype == np.int8 and inits[n.input[0]].shape == shape]
        assert len(found) == 1, (shape, len(found))
        return found[0]

    w = tuned.decoder.in_proj.weight.detach()
    q, scale = int8_codes(tuple(w.shape))
    np.testing.assert_array_equal(q * scale.reshape(-1, 1, 1, 1), qat.fake_quant_weight(w, 0).numpy())
    stem, bn = tuned.encoder.backbone.conv_stem, tuned.encoder.backbone.bn1
    w = stem.weight.detach()
    q, _ = int8_codes(tuple(w.shape))
    sign = torch.sign(bn.weight.detach()).view(-1, 1, 1, 1)
    codes = torch.round(qat.fake_quant_weight(w, 0) / qat.weight_scale(w, 0).view(-1, 1, 1, 1)) * sign
    np.testing.assert_array_equal(q, codes.numpy())
