"""FP16 and INT8 variants of an FP32 ONNX file (ONNX Runtime tooling, no torch).

* `to_fp16`: weights and compute in float16, inputs and outputs stay float32 (callers feed what they fed before).
* `to_int8_static`: QDQ, per-channel symmetric INT8 weights, symmetric INT8 activations calibrated on domain crops
  (symmetric so the same file builds an explicit-quantisation TensorRT engine).
* `to_int8_weight`: INT8 weights behind DequantizeLinear, float compute (TensorRT's weight-only form): no
  calibration, parity independent of the CPU's integer instructions.
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


def output_heads(path: Path, ops: Sequence[str] = ("Conv", "ConvTranspose", "MatMul", "Gemm")) -> list[str]:
    """Names of the compute nodes that produce the graph outputs (walking back through reshapes, gathers and
    element-wise ops): the mask logits' last MatMul. Static INT8 leaves them in float, standard practice for the
    layer whose output is the answer."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    prod = {o: n for n in model.graph.node for o in n.output}
    out, seen = [], set()
    stack = [v.name for v in model.graph.output]
    while stack:
        name = stack.pop()
        node = prod.get(name)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type in ops:
            out.append(node.name)
            continue
        stack.extend(node.input)
    return out


def softmax_products(path: Path) -> list[str]:
    """Names of the MatMul nodes that multiply attention probabilities (a Softmax output) with values. Static INT8
    leaves them in float: symmetric per-tensor INT8 over [0, 1] has a step of 1/127, so the probabilities of a
    softmax over hundreds of tokens (about 1/N each) round to zero and the attention output collapses (in a
    trained student's per-layer sensitivity sweep the three worst of 141 quantised layers were such products, at
    -1.4, -0.5 and 0.5 dB SQNR)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    prod = {o: n for n in model.graph.node for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and any(prod.get(i) is not None and prod[i].op_type == "Softmax"
                                             for i in n.input)]


def pooled_convs(path: Path) -> list[str]:
    """Names of the Conv nodes that read a globally pooled tensor: the squeeze-excitation branches of
    EfficientNet-style encoders (global mean -> 1x1 conv -> activation -> 1x1 conv -> sigmoid gate). Static INT8
    leaves them in float (their weights still go to INT8 behind a DequantizeLinear, `keep_weights_int8`): a pooled
    vector has a few large channels and many small ones, so one per-tensor INT8 scale loses the small ones (local
    SQNR 4-17 dB on a trained EfficientNet-B0 student, the worst activations of the graph). They cost a few
    hundred multiply-adds per crop. A tensor is pooled when a ReduceMean / GlobalAveragePool made it or when every
    activation input of the node that made it is pooled (the gate's Mul with the full feature map is not)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    pooled: set[str] = set()
    for n in model.graph.node:  # ONNX graphs are topologically sorted
        acts = [i for i in n.input if i and i not in inits]
        if n.op_type in ("ReduceMean", "GlobalAveragePool") or (acts and all(a in pooled for a in acts)):
            pooled.update(n.output)
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.input and n.input[0] in pooled]


def _codebook(arr: Any) -> tuple[Any, Any] | None:
    """Lossless compression of a lookup table T (H, ...) = B[:, C[...]] whose H-vectors along axis 0 take at most
    256 distinct values (attention biases gathered by relative offset): (codes uint8 of shape T.shape[1:],
    book float32 (H, U)); None when the table is not of that form."""
    import numpy as np

    if arr.ndim < 2:
        return None
    cols = arr.reshape(arr.shape[0], -1).T
    uniq, inv = np.unique(cols, axis=0, return_inverse=True)
    if len(uniq) > 256:
        return None
    return inv.reshape(arr.shape[1:]).astype(np.uint8), np.ascontiguousarray(uniq.T.astype(np.float32))


def relative_offset_index(rows: int, cols: int) -> Any:
    """(N, N) index of the relative offset between two tokens of a rows x cols window, N = rows * cols, in the order
    TinyViT (and LeViT) number their attention-bias offsets: offset (|dr|, |dc|) is number |dr| * cols + |dc|."""
    import numpy as np

    r, c = np.divmod(np.arange(rows * cols), cols)
    return np.abs(r[:, None] - r[None, :]) * cols + np.abs(c[:, None] - c[None, :])


def _relative_bias_table(arr: Any) -> tuple[Any, tuple[int, int]] | None:
    """When a folded table T (..., N, N) is attention biases gathered by relative offset, T = B[..., idx] with
    idx = relative_offset_index(rows, cols): (B (H, N) float32, (rows, cols)). The offsets of token 0 to every
    token are all distinct and in index order, so B is T's first row; the match is checked exactly."""
    import numpy as np

    if arr.ndim < 2 or arr.shape[-1] != arr.shape[-2]:
        return None
    n = arr.shape[-1]
    table = arr.reshape(-1, n, n)
    book = np.ascontiguousarray(table[:, 0, :])
    for cols in sorted({d for d in range(1, n + 1) if n % d == 0}, key=lambda d: abs(d * d - n)):
        if np.array_equal(book[:, relative_offset_index(n // cols, cols)], table):
            return book.astype(np.float32), (n // cols, cols)
    return None


def int8_constants(model: Any, min_bytes: int = 16384) -> int:
    """Float initializers left in an INT8 graph (tables the exporter folded: attention-bias lookups) stored in a
    quarter of the bytes or less. Attention biases gathered by relative offset keep only their bias vectors; the
    offset index is computed once per window shape and shared by every block that uses that window (TinyViT at 512
    px has six blocks with 16 x 16 windows: one index table instead of six). Other lookups of at most 256 distinct
    vectors become uint8 codes into a small codebook (Cast + Gather); anything else becomes INT8 with a per-tensor
    scale (DequantizeLinear). All but the last are lossless. Returns how many initializers were converted."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    dq_inputs = {n.input[0] for n in g.node if n.op_type == "DequantizeLinear"}
    graph_inputs = {v.name for v in g.input}
    converted = 0
    keep, new_nodes = [], []
    shared_index: dict[tuple[int, int], str] = {}
    for t in g.initializer:
        if t.data_type != 1 or t.name in dq_inputs or t.name in graph_inputs:
            keep.append(t)
            continue
        arr = numpy_helper.to_array(t)
        if arr.nbytes < min_bytes:
            keep.append(t)
            continue
        n = t.name
        rel = _relative_bias_table(arr)
        cb = None if rel is not None else _codebook(arr)
        if rel is not None:
            book, window = rel
            if window not in shared_index:
                idx = relative_offset_index(*window)
                name = f"relative_offset_index_{window[0]}x{window[1]}"
                codes = idx.astype(np.uint8 if idx.max() < 256 else np.int32)
                keep.append(numpy_helper.from_array(codes, name + "_codes"))
                if codes.dtype == np.uint8:
                    new_nodes.append(helper.make_node("Cast", [name + "_codes"], [name], to=TensorProto.INT32))
                else:
                    new_nodes.append(helper.make_node("Identity", [name + "_codes"], [name]))
                shared_index[window] = name
            keep.append(numpy_helper.from_array(book, n + "_book"))
            gathered = n if arr.ndim == 3 else n + "_hnn"
            new_nodes.append(helper.make_node("Gather", [n + "_book", shared_index[window]], [gathered], axis=1))
            if arr.ndim != 3:
                keep.append(numpy_helper.from_array(np.array(arr.shape, np.int64), n + "_shape"))
                new_nodes.append(helper.make_node("Reshape", [gathered, n + "_shape"], [n]))
        elif cb is not None:
            codes, book = cb
            keep += [numpy_helper.from_array(codes, n + "_codes"), numpy_helper.from_array(book, n + "_book")]
            new_nodes.append(helper.make_node("Cast", [n + "_codes"], [n + "_ci"], to=TensorProto.INT32))
            new_nodes.append(helper.make_node("Gather", [n + "_book", n + "_ci"], [n], axis=1))
        else:
            amax = float(np.abs(arr).max()) or 1.0
            scale = np.float32(amax / 127.0)
            q = np.clip(np.round(arr / scale), -127, 127).astype(np.int8)
            keep += [numpy_helper.from_array(q, n + "_q8"), numpy_helper.from_array(np.array(scale), n + "_s"),
                     numpy_helper.from_array(np.array(0, np.int8), n + "_z")]
            new_nodes.append(helper.make_node("DequantizeLinear", [n + "_q8", n + "_s", n + "_z"], [n]))
        converted += 1
    if converted:
        del g.initializer[:]
        g.initializer.extend(keep)
        nodes = list(g.node)
        del g.node[:]
        g.node.extend(new_nodes + nodes)
    return converted


def compact(path: Path, int8_tables: bool = False) -> Path:
    """Shrink an ONNX file in place without changing what it computes: short names for nodes and intermediate
    tensors (QDQ graphs spend megabytes on long generated names), int32 indices for constant Gather tables, no
    doc strings. Graph input and output names are kept."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    if int8_tables:
        int8_constants(model)
    g = model.graph
    keep = {v.name for v in g.input} | {v.name for v in g.output} | {""}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if name in keep:
            return name
        if name not in names:
            names[name] = f"t{len(names):x}"
        return names[name]

    inits = {t.name: t for t in g.initializer}
    gather_idx = {n.input[1] for n in g.node if n.op_type == "Gather" and len(n.input) > 1}
    for name in gather_idx:
        t = inits.get(name)
        if t is not None and t.data_type == onnx.TensorProto.INT64:
            arr = numpy_helper.to_array(t)
            if arr.size > 64 and arr.min() >= np.iinfo(np.int32).min and arr.max() <= np.iinfo(np.int32).max:
                t.CopyFrom(numpy_helper.from_array(arr.astype(np.int32), name))
    for n in g.node:
        if n.op_type == "Constant" and n.output[0] in gather_idx:
            for at in n.attribute:
                if at.name == "value" and at.t.data_type == onnx.TensorProto.INT64:
                    arr = numpy_helper.to_array(at.t)
                    if arr.size > 64 and arr.min() >= np.iinfo(np.int32).min and arr.max() <= np.iinfo(np.int32).max:
                        at.t.CopyFrom(numpy_helper.from_array(arr.astype(np.int32)))
    for t in g.initializer:
        t.name = short(t.name)
        t.doc_string = ""
    for i, n in enumerate(g.node):
        n.name = f"n{i:x}"
        n.doc_string = ""
        n.input[:] = [short(x) for x in n.input]
        n.output[:] = [short(x) for x in n.output]
    for v in g.value_info:
        v.name = short(v.name)
    del g.value_info[:]
    model.doc_string = ""
    onnx.save(model, str(path))
    return path


def compact_copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copyfile(src, dst)
    return compact(dst)


def to_fp16(src: Path, dst: Path, block_ops: Sequence[str] = ()) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP16_BLOCK) | set(block_ops))
    fp16 = convert_float_to_float16(model, keep_io_types=True, op_block_list=block)
    onnx.save(fp16, str(dst))
    return compact(dst)


def fold_identities(path: Path, out: Path) -> Path:
    """Point consumers of `Identity(initializer)` straight at the initializer (the TorchScript exporter emits these
    for shared parameters; ORT's quantisers want Conv/MatMul weights to be initializers)."""
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    inits = {t.name for t in g.initializer}
    outputs = {v.name for v in g.output}
    alias = {n.output[0]: n.input[0] for n in g.node
             if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs}
    if alias:
        keep = [n for n in g.node if not (n.op_type == "Identity" and n.output[0] in alias)]
        for n in keep:
            n.input[:] = [alias.get(x, x) for x in n.input]
        del g.node[:]
        g.node.extend(keep)
    onnx.save(model, str(out))
    return out


def pre_process(src: Path, tmpdir: Path) -> Path:
    """Shape inference and graph cleanup ORT recommends before quantisation (symbolic shapes when they resolve),
    then Identity folding."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = tmpdir / "pre.onnx"
    try:
        # Symbolic shape inference is skipped: it does not complete on these graphs, and when it fails ONNX Runtime
        # dumps sym_shape_infer_temp.onnx plus its external data into the *current folder* (a user's repo or home).
        quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    except Exception as exc:  # noqa: BLE001 - pre-processing is an optimisation, not a requirement
        log.info("quantisation pre-processing failed: %s", exc)
        out = src
    return fold_identities(out, tmpdir / "folded.onnx")


# Static INT8 quantises the compute-heavy ops only; element-wise ops stay float between them (fewer Q/DQ pairs:
# a smaller file and a better match to FP32 than quantising every Add and Mul).
INT8_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def to_int8_static(src: Path, dst: Path, reader: Any, method: str = "minmax",
                   op_types: Sequence[str] | None = INT8_OPS, nodes_to_exclude: Sequence[str] = ()) -> Path:
    """reader: get_next() -> feeds | None, len() and set_range(start, end) (e.g. calibration.CropReader)."""
    with tempfile.TemporaryDirectory() as tmp:
        pre = pre_process(src, Path(tmp))
        quantize_qdq(pre, dst, reader, method, op_types, nodes_to_exclude)
    return compact(dst, int8_tables=True)


CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# Histogram calibrators (entropy, percentile) keep every activation of every crop they have read until they bin
# them: 441 crops of a 512 px student took 24 GB and the export was killed on a 23 GB machine. They read the set in
# slices of at most this many crops instead (ONNX Runtime merges the slices' histograms).
HISTOGRAM_SLICE = 8


def calibration_slice(n: int, most: int = HISTOGRAM_SLICE) -> int:
    """The largest slice length <= `most` that divides `n` (ONNX Runtime's sliced calibration needs a divisor)."""
    return max(d for d in range(1, max(1, min(n, most)) + 1) if n % d == 0)


def quantize_qdq(pre: Path, dst: Path, reader: Any, method: str = "minmax",
                 op_types: Sequence[str] | None = INT8_OPS, nodes_to_exclude: Sequence[str] = ()) -> Path:
    """Static QDQ INT8 of an already pre-processed graph (`pre_process`), tensor names kept as they are (the
    per-layer sensitivity pass matches the QDQ graph's activations to the float graph's by name; `compact`
    renames them)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"unknown calibration method {method!r}; use {', '.join(CALIBRATION_METHODS)} or auto")
    # min-max keeps two numbers per tensor and crop, so it reads the whole set in one pass (its moving average
    # runs over the whole set); the histogram methods read it in slices (HISTOGRAM_SLICE)
    sliced = {} if method == "minmax" else {"CalibStridedMinMax": calibration_slice(len(reader))}
    quantize_static(
        str(pre), str(dst), reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=list(op_types) if op_types else None,
        nodes_to_exclude=list(nodes_to_exclude) + output_heads(pre) + softmax_products(pre) + pooled_convs(pre),
        calibrate_method=methods[method],
        # symmetric (zero points 0) and float biases: TensorRT's explicit-quantisation form (its parser takes
        # no INT32 DequantizeLinear, which is what quantised biases become; inference.export.trt_compat checks)
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                       "CalibMovingAverage": method == "minmax", "CalibTensorRangeSymmetric": True, **sliced},
    )
    keep_weights_int8(dst, output_heads(pre))
    return dst


def keep_weights_int8(path: Path, float_weights: Sequence[str] = ()) -> int:
    """Layers a static INT8 graph keeps in float (excluded by rule or by the sensitivity sweep) still store INT8
    weights behind a DequantizeLinear (`weight_only_int8`), so keeping a layer in float costs compute precision,
    not file size; `float_weights` (the output heads) keep float weights. Returns how many weights it converted."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    n = weight_only_int8(model, exclude=float_weights)
    if n:
        onnx.save(model, str(path))
    return n


def weight_only_int8(model: Any, exclude: Sequence[str] = ()) -> int:
    """Replace the float weights of Conv / ConvTranspose / MatMul / Gemm with per-output-channel symmetric INT8
    initializers behind a DequantizeLinear: TensorRT's explicit weight-only form. Compute stays in float, so the
    file holds no MatMulInteger / ConvInteger / DynamicQuantizeLinear (which TensorRT's parser refuses) and its
    parity does not depend on the CPU: ONNX Runtime's u8s8 integer kernels saturate on AVX2 machines without VNNI
    (an untrained student's parity IoU fell to 0.77 on this project's 2-core EPYC). Nodes in `exclude` keep float
    weights. Returns how many weights were converted."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 13:
        raise ValueError(f"weight-only INT8 needs ONNX opset >= 13 (per-channel DequantizeLinear), this graph has "
                         f"{opset}")
    inits = {t.name: t for t in g.initializer}
    skip = set(exclude)
    kept_float = {x for n in g.node if n.name in skip for x in n.input}  # a weight an excluded node shares
    axes: dict[str, int] = {}
    for n in g.node:
        if n.op_type not in ("Conv", "ConvTranspose", "MatMul", "Gemm") or n.name in skip or len(n.input) < 2:
            continue
        t = inits.get(n.input[1])
        if (t is None or t.data_type != TensorProto.FLOAT or len(t.dims) < 2 or n.input[1] in axes
                or n.input[1] in kept_float):
            continue
        if n.op_type == "Gemm":
            trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
            axes[n.input[1]] = 0 if trans_b else 1
        else:
            axes[n.input[1]] = {"Conv": 0, "ConvTranspose": 1}.get(n.op_type, len(t.dims) - 1)
    if not axes:
        return 0
    keep, dq_nodes = [], []
    for t in g.initializer:
        if t.name not in axes:
            keep.append(t)
            continue
        arr = numpy_helper.to_array(t).astype(np.float32)
        axis = axes[t.name]
        others = tuple(i for i in range(arr.ndim) if i != axis)
        amax = np.abs(arr).max(axis=others)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        shape = [1] * arr.ndim
        shape[axis] = -1
        q = np.clip(np.round(arr / scale.reshape(shape)), -127, 127).astype(np.int8)
        n = t.name
        keep += [numpy_helper.from_array(q, n + "_q8"), numpy_helper.from_array(scale, n + "_scale"),
                 numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), n + "_zp")]
        dq_nodes.append(helper.make_node("DequantizeLinear", [n + "_q8", n + "_scale", n + "_zp"], [n], axis=axis))
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(dq_nodes + nodes)
    return len(axes)


def to_int8_weight(src: Path, dst: Path) -> Path:
    """INT8 weights, float compute (`weight_only_int8`); the output heads keep float weights, as in static INT8."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        pre = pre_process(src, Path(tmp))
        model = onnx.load(str(pre))
        weight_only_int8(model, exclude=output_heads(pre))
        onnx.save(model, str(dst))
    return compact(dst, int8_tables=True)
