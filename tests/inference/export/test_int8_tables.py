"""Folded attention-bias tables in INT8 files: stored as bias vectors plus one shared relative-offset index per
window shape (lossless), so the student's INT8 files stay within 6.5 MB at its default 512 px input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from timm.models.tiny_vit import Attention  # noqa: E402

from inference.export.quantize import (  # noqa: E402
    int8_constants,
    relative_offset_index,
    to_int8_static,
    to_int8_weight,
)


@pytest.mark.parametrize("window", [(16, 16), (8, 8), (4, 6)])
def test_relative_offset_index_is_tinyvits_numbering(window: tuple[int, int]) -> None:
    attn = Attention(dim=32, key_dim=8, num_heads=2, resolution=window)
    assert np.array_equal(attn.attention_bias_idxs.numpy(), relative_offset_index(*window))


def _bias_table(window: tuple[int, int], heads: int, seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    attn = Attention(dim=32, key_dim=8, num_heads=heads, resolution=window)
    with torch.no_grad():
        attn.attention_biases.normal_()  # trained biases differ per offset
        return attn.attention_biases[:, attn.attention_bias_idxs].numpy()


def test_bias_tables_share_one_index_and_compute_exactly_what_they_stored(tmp_path: Path) -> None:
    tables = {"t_a": _bias_table((8, 8), 4, 0), "t_b": _bias_table((8, 8), 4, 1),
              "t_c": _bias_table((8, 8), 2, 2)[None], "t_d": _bias_table((4, 6), 3, 3),
              "t_rand": np.random.default_rng(0).normal(size=(4, 64, 64)).astype(np.float32)}
    nodes, outputs = [], []
    for name, table in tables.items():
        nodes.append(helper.make_node("Add", ["x_" + name, name], ["y_" + name]))
        outputs.append(helper.make_tensor_value_info("y_" + name, TensorProto.FLOAT, list(table.shape)))
    inputs = [helper.make_tensor_value_info("x_" + n, TensorProto.FLOAT, list(t.shape)) for n, t in tables.items()]
    graph = helper.make_graph(nodes, "tables", inputs, outputs,
                              [numpy_helper.from_array(t, n) for n, t in tables.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    before, after = tmp_path / "before.onnx", tmp_path / "after.onnx"
    onnx.save(model, str(before))
    assert int8_constants(model, min_bytes=1024) == 5
    onnx.checker.check_model(model)
    onnx.save(model, str(after))

    names = [t.name for t in model.graph.initializer]
    assert names.count("relative_offset_index_8x8_codes") == 1  # t_a, t_b and t_c share it
    assert "relative_offset_index_4x6_codes" in names
    assert after.stat().st_size < before.stat().st_size / 3
    feeds = {"x_" + n: np.zeros(t.shape, np.float32) for n, t in tables.items()}
    ref = ort.InferenceSession(str(before), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ort.InferenceSession(str(after), providers=["CPUExecutionProvider"]).run(None, feeds)
    for name, r, g in zip(tables, ref, got):
        if name == "t_rand":  # no lookup: INT8 with a per-tensor scale
            assert np.abs(r - g).max() <= np.abs(r).max() / 127
        else:
            assert np.array_equal(r, g), name


class _Reader:
    """Two calibration batches: the file's size, not its accuracy, is under test here."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.items = [{"image": rng.normal(size=(1, 3, 512, 512)).astype(np.float32),
                       "point_coords": np.array([[[200.0, 220.0]]], np.float32),
                       "point_labels": np.ones((1, 1), np.float32)} for _ in range(2)]

    def get_next(self) -> dict[str, np.ndarray] | None:
        return self.items.pop() if self.items else None


# each backbone with its head: EfficientNet-B0 with the default 1/2 head, TinyViT (no stride-2 feature) with 1/4
@pytest.mark.parametrize(("backbone", "stride"), [("efficientnet_b0", 2), ("tiny_vit_5m_224", 4)])
def test_student_int8_files_fit_the_budget_at_512(tmp_path: Path, backbone: str, stride: int) -> None:
    from inference.export.graph import export_student_single
    from inference.student import StudentConfig, StudentModel

    torch.manual_seed(0)
    student = StudentModel(StudentConfig(input_size=512, backbone=backbone, mask_stride=stride)).eval()
    with torch.no_grad():
        for name, p in student.named_parameters():
            if "attention_biases" in name:
                p.normal_()
    fp32 = export_student_single(student, tmp_path / "fp32.onnx", 512)
    weight_only = to_int8_weight(fp32, tmp_path / "int8w.onnx")
    static = to_int8_static(fp32, tmp_path / "int8.onnx", _Reader())
    sizes = {p.name: round(p.stat().st_size / 1e6, 3) for p in (fp32, weight_only, static)}
    print(f"\n{backbone}: INT8 sizes at 512 px (MB):", sizes)
    assert weight_only.stat().st_size <= 6.5e6 and static.stat().st_size <= 6.5e6
    if backbone != "tiny_vit_5m_224":
        return  # a CNN has no attention-bias tables
    for path in (weight_only, static):  # one offset index per window shape (16 x 16 and 8 x 8), names compacted
        index_tables = [tuple(t.dims) for t in onnx.load(str(path)).graph.initializer
                        if t.data_type == TensorProto.UINT8 and len(t.dims) == 2 and t.dims[0] == t.dims[1]]
        assert sorted(index_tables) == [(64, 64), (256, 256)]
