"""The static TensorRT-compatibility check: real exports pass, graphs with what the parser lacks are rejected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from inference.export.trt_compat import check_file, check_model, load_matrix


def _model(nodes: list, inits: list, inputs: list, outputs: list, opset: int = 17,
           extra_opsets: tuple = ()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    imports = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in extra_opsets)]
    return helper.make_model(graph, opset_imports=imports)


def _matmul_model(tmp_path: Path) -> Path:
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32), "w")
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [w],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])])
    path = tmp_path / "matmul.onnx"
    onnx.save(m, str(path))
    return path


def test_matrix_file_names_its_source_and_version() -> None:
    m = load_matrix()
    assert m["source"].startswith("https://github.com/onnx/onnx-tensorrt") and m["version"].startswith("TensorRT 10")
    assert m["operators"]["MatMulInteger"]["supported"] is False and m["operators"]["Conv"]["supported"]


def test_quantize_dynamic_output_is_rejected_and_the_float_graph_passes(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = _matmul_model(tmp_path)
    assert check_file(src).ok
    dyn = tmp_path / "dynamic.onnx"
    quantize_dynamic(str(src), str(dyn), weight_type=QuantType.QInt8)  # what the old weight-only export wrote
    report = check_file(dyn)
    assert not report.ok
    text = report.summary()
    assert "MatMulInteger" in text and "DynamicQuantizeLinear" in text and "not supported by the parser" in text
    assert report.as_dict()["compatible"] is False


def test_attribute_type_domain_opset_and_zero_point_rules() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 16, 16])
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    cubic = _model([helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="cubic")], [scales],
                   [x], [y])
    assert "mode='cubic' not supported" in check_model(cubic).summary()
    linear = _model([helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="linear")], [scales],
                    [x], [y])
    assert check_model(linear).ok
    custom = _model([helper.make_node("FusedGelu", ["x"], ["y"], name="g", domain="com.microsoft")], [], [x], [x],
                    extra_opsets=(("com.microsoft", 1),))
    assert "custom domain 'com.microsoft'" in check_model(custom).summary()
    old = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [], [x], [x], opset=8)
    assert "opset 8 is outside" in check_model(old).summary()
    q = numpy_helper.from_array(np.ones((4,), np.int8), "q")
    s = numpy_helper.from_array(np.float32(0.1), "s")
    zp = numpy_helper.from_array(np.int8(3), "zp")
    asym = _model([helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq")], [q, s, zp], [],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    assert "zero point must be zero" in check_model(asym).summary()
    d = helper.make_tensor_value_info("d", TensorProto.DOUBLE, [4])
    dbl = _model([helper.make_node("Sqrt", ["d"], ["e"], name="sq")], [], [d],
                 [helper.make_tensor_value_info("e", TensorProto.DOUBLE, [4])])
    assert "input type DOUBLE not supported" in check_model(dbl).summary()


# each backbone with its head: EfficientNet-B0 with the default 1/2 head, TinyViT (no stride-2 feature) with 1/4
@pytest.mark.parametrize(("backbone", "stride"), [("efficientnet_b0", 2), ("tiny_vit_5m_224", 4)])
def test_student_exports_pass(tmp_path: Path, backbone: str, stride: int) -> None:
    from inference.export.graph import export_student_single
    from inference.export.quantize import to_int8_weight
    from inference.student import StudentConfig, StudentModel

    torch.manual_seed(0)
    student = StudentModel(StudentConfig(input_size=64, backbone=backbone, mask_stride=stride)).eval()
    fp32 = export_student_single(student, tmp_path / "s.onnx", 64)
    for path in (fp32, to_int8_weight(fp32, tmp_path / "s_int8w.onnx")):
        report = check_file(path)
        assert report.ok, report.summary()
        assert report.op_counts.get("Conv", 0) > 0


def test_an_unreadable_file_is_one_clear_error(tmp_path: Path) -> None:
    from inference.export.trt_compat import UnreadableOnnx

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\xff" * 300)
    with pytest.raises(UnreadableOnnx, match="junk.onnx is not a readable ONNX file"):
        check_file(junk)
