"""FP16 and INT8 variants of an FP32 ONNX file (ONNX Runtime tooling, no torch).

* `to_fp16`: weights and compute in float16, inputs and outputs stay float32 (callers feed what they fed before).
* `to_int8_static`: QDQ, per-channel symmetric INT8 weights, symmetric INT8 activations calibrated on domain crops
  (symmetric so the same file builds an explicit-quantisation TensorRT engine).
* `to_int8_weight`: dynamic quantisation, INT8 weights only, activations quantised at run time: the smallest file,
  no calibration.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("maskbench.export")

# Ops kept in float32 in the FP16 graph: range-sensitive reductions and normalisations whose float16 overflow
# would show up as NaNs on bright crops.
FP16_BLOCK = ["Resize", "Range", "CumSum", "NonZero", "TopK", "RandomNormalLike", "Einsum"]


def to_fp16(src: Path, dst: Path, block_ops: Sequence[str] = ()) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP16_BLOCK) | set(block_ops))
    fp16 = convert_float_to_float16(model, keep_io_types=True, op_block_list=block)
    onnx.save(fp16, str(dst))
    return dst


def _pre_process(src: Path, tmpdir: Path) -> Path:
    """Shape inference and graph cleanup ORT recommends before quantisation; falls back to the input file."""
    out = tmpdir / "pre.onnx"
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(src), str(out), skip_symbolic_shape=False)
        return out
    except Exception as exc:  # noqa: BLE001 - pre-processing is an optimisation, not a requirement
        log.info("quantisation pre-processing skipped: %s", exc)
        return src


def to_int8_static(src: Path, dst: Path, reader: Any, method: str = "minmax",
                   op_types: Sequence[str] | None = None, nodes_to_exclude: Sequence[str] = ()) -> Path:
    """reader: an object with get_next() -> feeds | None (e.g. calibration.CropReader)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory() as tmp:
        pre = _pre_process(src, Path(tmp))
        quantize_static(
            str(pre), str(dst), reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(op_types) if op_types else None,
            nodes_to_exclude=list(nodes_to_exclude) or None,
            calibrate_method=methods[method],
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                           "CalibMovingAverage": method == "minmax", "CalibTensorRangeSymmetric": True},
        )
    return dst


def to_int8_weight(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        pre = _pre_process(src, Path(tmp))
        quantize_dynamic(str(pre), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm", "Conv"])
    return dst
