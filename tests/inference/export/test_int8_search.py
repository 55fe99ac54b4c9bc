"""The static INT8 search: per-layer sensitivity finds the layer whose activations cannot be held in 8 bits, the sweep
keeps it in float until parity is met, and the calibration method is the one with the best measured parity. A small
hand-built graph with a known bad layer, quantised and run by real ONNX Runtime sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from inference.export import int8_search, parity  # noqa: E402

N = 16


def two_branch_model(path: Path) -> Path:
    """x -> MatMul(good) -> MatMul(head) -> out_x and y -> MatMul(bad) -> MatMul(head) -> out_y. The heads stay
    float (the exporter never quantises an output head); `good` and `bad` get QDQ on their inputs x and y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((N, N)) / 4).astype(np.float32), n)
             for n in ("w_good", "w_head_x", "w_bad", "w_head_y")]
    nodes = [
        helper.make_node("MatMul", ["x", "w_good"], ["hx"], name="good"),
        helper.make_node("MatMul", ["hx", "w_head_x"], ["out_x"], name="head_x"),
        helper.make_node("MatMul", ["y", "w_bad"], ["hy"], name="bad"),
        helper.make_node("MatMul", ["hy", "w_head_y"], ["out_y"], name="head_y"),
    ]
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, N, N])  # noqa: E731
    graph = helper.make_graph(nodes, "two_branch", [vi("x"), vi("y")], [vi("out_x"), vi("out_y")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def feeds(n: int, outlier: bool, seed: int) -> list[dict[str, np.ndarray]]:
    """Calibration crops carry one huge value on y (min-max calibration then spends the whole INT8 range on it);
    evaluation crops do not, so y's ordinary values all round to zero in the QDQ graph."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.standard_normal((1, N, N)).astype(np.float32)
        y = rng.standard_normal((1, N, N)).astype(np.float32)
        if outlier:
            y[0, 0, 0] = 5000.0
        out.append({"x": x, "y": y})
    return out


def run(path: Path, fs: list[dict[str, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = []
    for f in fs:
        ox, oy = sess.run(None, f)
        outs.append((oy[0], ox[0, 0, :1]))  # y's branch as the "mask logits", a value of x's as the "score"
    return outs


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    return two_branch_model(tmp_path / "two_branch.onnx")


def test_sensitivity_ranks_the_layer_with_the_outlier_first(model: Path, tmp_path: Path) -> None:
    from inference.export import quantize

    pre = quantize.pre_process(model, tmp_path)
    qdq = quantize.quantize_qdq(pre, tmp_path / "qdq.onnx", int8_search.FeedList(feeds(4, True, 1)), "minmax")
    sens = int8_search.layer_sensitivity(pre, qdq, feeds(2, False, 2), tmp_path)
    by_node: dict[str, float] = {}
    for s in sens:
        by_node[s.node] = min(s.sqnr_db, by_node.get(s.node, np.inf))
    assert set(by_node) == {"good", "bad"}  # the heads stay float: their input's noise is charged to the layer before
    assert sens[0].node == "bad"
    assert by_node["bad"] < 5.0 < 30.0 < by_node["good"], by_node


def test_sweep_keeps_the_sensitive_layer_in_float_until_parity_is_met(model: Path, tmp_path: Path) -> None:
    evals = feeds(3, False, 3)
    refs = run(model, evals)

    def check(candidate: Path) -> parity.Parity:
        return parity.compare(refs, run(candidate, evals))

    found = int8_search.search_static_int8(
        model, tmp_path / "int8.onnx", lambda: int8_search.FeedList(feeds(4, True, 1)), check,
        methods=("minmax",), target=0.95, sensitivity_feeds=feeds(2, False, 2), steps=(1, 2))
    first, *rest = found.trials
    assert first.kept_float == [] and first.parity.mean_iou < 0.95  # quantised as is, y's branch is lost
    assert found.met and found.kept_float == ["bad"]
    assert len(rest) == 1 and rest[0].parity.mean_iou >= 0.95  # the sweep stopped at the first step that met it
    assert check(found.path).mean_iou == pytest.approx(rest[0].parity.mean_iou)  # the shipped file is that trial
    card = found.card()
    assert card["sensitivity_worst"][0]["node"] == "bad" and card["trials"][1]["kept_float"] == 1


def test_auto_keeps_the_calibration_method_with_the_best_parity(model: Path, tmp_path: Path) -> None:
    evals = feeds(3, False, 3)
    refs = run(model, evals)
    found = int8_search.search_static_int8(
        model, tmp_path / "int8.onnx", lambda: int8_search.FeedList(feeds(4, True, 1)),
        lambda c: parity.compare(refs, run(c, evals)), target=0.0, steps=())
    assert [t.method for t in found.trials] == ["minmax", "entropy", "percentile"]
    best = max(found.trials, key=lambda t: (t.parity.mean_iou, t.parity.iou))
    assert found.method == best.method and found.kept_float == []


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration_reads_the_set_in_slices(model: Path, tmp_path: Path, method: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Entropy and percentile calibrators hold every activation they have read until they bin it (441 crops of a
    512 px student: 24 GB, an export killed for memory); they read at most HISTOGRAM_SLICE crops at a time, and the
    ranges match those of one pass over the whole set."""
    import onnx as onnx_mod

    from inference.export import quantize

    class Recording(int8_search.FeedList):
        def __init__(self, fs: list[dict[str, np.ndarray]]) -> None:
            super().__init__(fs)
            self.slices: list[tuple[int, int]] = []

        def set_range(self, start_index: int, end_index: int) -> None:
            self.slices.append((start_index, end_index))
            super().set_range(start_index, end_index)

    def scales(path: Path) -> dict[str, float]:
        m = onnx_mod.load(str(path))
        inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        return {n.input[0]: float(inits[n.input[1]].ravel()[0]) for n in m.graph.node
                if n.op_type == "QuantizeLinear" and n.input[1] in inits}

    pre = quantize.pre_process(model, tmp_path)
    reader = Recording(feeds(12, False, 3))
    sliced = quantize.quantize_qdq(pre, tmp_path / "sliced.onnx", reader, method)
    assert quantize.calibration_slice(12) == 6 and reader.slices == [(0, 6), (6, 12)]
    assert quantize.calibration_slice(441) == 7 and quantize.calibration_slice(13) == 1
    monkeypatch.setattr(quantize, "HISTOGRAM_SLICE", 12)
    monkeypatch.setattr(quantize.calibration_slice, "__defaults__", (12,))
    whole_reader = Recording(feeds(12, False, 3))
    whole = quantize.quantize_qdq(pre, tmp_path / "whole.onnx", whole_reader, method)
    assert whole_reader.slices == [(0, 12)]
    a, b = scales(sliced), scales(whole)
    assert a.keys() == b.keys() and {"x", "y"} <= set(a)
    for name in a:
        assert a[name] == pytest.approx(b[name], rel=0.1), name


def test_attention_probabilities_stay_float(tmp_path: Path) -> None:
    """softmax(x W) @ y: the product of attention probabilities is left in float (INT8 over [0, 1] rounds
    probabilities of about 1/N to zero); the projection before the softmax is still quantised."""
    from inference.export import quantize

    rng = np.random.default_rng(0)
    w, w_out = (numpy_helper.from_array((rng.standard_normal((N, N)) / 4).astype(np.float32), n)
                for n in ("w", "w_out"))
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["logits"], name="proj"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["probs", "y"], ["mixed"], name="attn_v"),
        helper.make_node("Relu", ["mixed"], ["act"], name="relu"),
        helper.make_node("MatMul", ["act", "w_out"], ["out"], name="head"),  # the output head: float anyway
    ]
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, N, N])  # noqa: E731
    model = helper.make_model(helper.make_graph(nodes, "attn", [vi("x"), vi("y")], [vi("out")], [w, w_out]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "attn.onnx"))
    pre = quantize.pre_process(tmp_path / "attn.onnx", tmp_path)
    assert quantize.softmax_products(pre) == ["attn_v"]
    qdq = onnx.load(str(quantize.quantize_qdq(pre, tmp_path / "qdq.onnx", int8_search.FeedList(feeds(4, False, 5)))))
    quantised_inputs = {n.input[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear"}
    assert "x" in quantised_inputs and "probs" not in quantised_inputs


def test_squeeze_excitation_stays_float_with_int8_weights(tmp_path: Path) -> None:
    """The convs of a squeeze-excitation branch (on a globally pooled vector) are left in float, their weights
    still INT8 behind a DequantizeLinear; the convs on the feature map, the gate's consumer included, are
    quantised; the output head keeps float weights."""
    from inference.export import quantize

    rng = np.random.default_rng(1)
    c = 8

    def w(name: str, o: int, i: int) -> Any:
        return numpy_helper.from_array((rng.standard_normal((o, i, 1, 1)) / 2).astype(np.float32), name)

    inits = [w("w_in", c, 3), w("w_se1", 2, c), w("w_se2", c, 2), w("w_proj", c, c), w("w_head", 1, c)]
    nodes = [
        helper.make_node("Conv", ["x", "w_in"], ["f"], name="stem"),
        helper.make_node("ReduceMean", ["f"], ["pooled"], name="pool", axes=[2, 3], keepdims=1),
        helper.make_node("Conv", ["pooled", "w_se1"], ["s1"], name="se_reduce"),
        helper.make_node("Relu", ["s1"], ["s1r"], name="se_act"),
        helper.make_node("Conv", ["s1r", "w_se2"], ["s2"], name="se_expand"),
        helper.make_node("Sigmoid", ["s2"], ["gate"], name="se_gate"),
        helper.make_node("Mul", ["f", "gate"], ["g"], name="scale"),
        helper.make_node("Conv", ["g", "w_proj"], ["p"], name="proj"),
        helper.make_node("Conv", ["p", "w_head"], ["out"], name="head"),
    ]
    graph = helper.make_graph(nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "se.onnx"))
    pre = quantize.pre_process(tmp_path / "se.onnx", tmp_path)
    assert quantize.pooled_convs(pre) == ["se_reduce", "se_expand"]
    reader = int8_search.FeedList([{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)])
    qdq = onnx.load(str(quantize.quantize_qdq(pre, tmp_path / "qdq.onnx", reader)))
    quantised_inputs = {n.input[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear"}
    assert {"x", "g"} <= quantised_inputs and not {"pooled", "s1r"} & quantised_inputs
    types = {t.name: t.data_type for t in qdq.graph.initializer}
    assert types["w_se1_q8"] == TensorProto.INT8 and types["w_se2_q8"] == TensorProto.INT8
    assert types["w_head"] == TensorProto.FLOAT and "w_se1" not in types
