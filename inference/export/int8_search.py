"""Static INT8 that meets a parity target, found by measurement rather than by a fixed recipe.

Post-training quantisation fails in two ways the quantisation literature (seeds 002, 003) names: a calibration
method that clips or wastes the range of some activations, and a few layers whose activations cannot be held in
8 bits at all. So the search

1. quantises with each calibration method (min-max, entropy, percentile) and keeps the one whose masks match the
   float model best (pooled parity IoU against PyTorch on the parity crops);
2. when that still misses the target, runs a per-layer sensitivity pass (ONNX Runtime's QDQ debugging tools: the
   signal-to-quantisation-noise ratio of every quantised activation, float graph vs QDQ graph on a few crops) and
   keeps the lowest-SQNR layers in float, 1, 2, 4, ... of them, until the target is met or the step list ends.

Every trial is reported (method, layers kept in float, parity, size), so the model card shows why the shipped file
is the one it is. Trial files live in a temporary folder; the chosen one is copied to `dst`.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inference.export import quantize
from inference.export.parity import Parity

CheckFn = Callable[[Path], Parity]  # a candidate file -> its parity against the float reference
ReaderFactory = Callable[[], Any]  # a fresh calibration reader (get_next() -> feeds | None)

EXCLUDE_STEPS = (4, 8, 16, 32, 64)


@dataclass
class LayerSensitivity:
    node: str  # the quantised node that reads the activation
    op_type: str
    tensor: str  # the activation the QDQ pair sits on
    sqnr_db: float  # the activation vs its INT8 round trip in the QDQ graph, in dB (lower: more damage)

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op_type": self.op_type, "tensor": self.tensor,
                "sqnr_db": round(self.sqnr_db, 2) if math.isfinite(self.sqnr_db) else None}


@dataclass
class Trial:
    method: str
    kept_float: list[str]
    parity: Parity
    size_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "kept_float": len(self.kept_float), "parity_iou": round(self.parity.iou, 6),
                "parity_mean_iou": round(self.parity.mean_iou, 6), "corr": round(self.parity.corr, 6),
                "size_mb": round(self.size_bytes / 1e6, 3)}


@dataclass
class Int8Search:
    path: Path
    method: str
    kept_float: list[str]
    target: float
    met: bool
    trials: list[Trial] = field(default_factory=list)
    sensitivity: list[LayerSensitivity] = field(default_factory=list)
    float_by_rule: dict[str, list[str]] = field(default_factory=dict)  # quantize.quantize_qdq's fixed exclusions

    def card(self, top: int = 12) -> dict[str, Any]:
        """What the model card shows: the chosen method, the layers kept in float, every trial, the worst layers."""
        return {"method": self.method, "target_parity_mean_iou": self.target, "met": self.met,
                "kept_float": self.kept_float, "trials": [t.as_dict() for t in self.trials],
                "sensitivity_worst": [s.as_dict() for s in self.sensitivity[:top]],
                "sensitivity_layers": len(self.sensitivity), "float_by_rule": self.float_by_rule}


class FeedList:
    """A calibration-data reader over feeds held in memory (the sensitivity pass runs the same few crops twice)."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self.feeds = list(feeds)
        self._i, self._end = 0, len(self.feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= self._end:
            return None
        self._i += 1
        return self.feeds[self._i - 1]

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.feeds)

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Serve feeds[start:end] next (ONNX Runtime's sliced calibration, quantize.quantize_qdq)."""
        self._i, self._end = start_index, min(end_index, len(self.feeds))


def layer_sensitivity(float_pre: Path, qdq: Path, feeds: Sequence[dict[str, np.ndarray]],
                      tmpdir: Path) -> list[LayerSensitivity]:
    """SQNR of every quantised activation against its own INT8 round trip in the QDQ graph (ONNX Runtime's
    qdq_err), worst first: the layers whose inputs one INT8 scale represents worst. Both graphs must
    carry the pre-processed graph's tensor names (`quantize.quantize_qdq`, not the compacted file)."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    aug_f, aug_q = tmpdir / "float.save_tensors.onnx", tmpdir / "qdq.save_tensors.onnx"
    modify_model_output_intermediate_tensors(float_pre, aug_f)
    modify_model_output_intermediate_tensors(qdq, aug_q)
    float_acts = collect_activations(str(aug_f), FeedList(feeds))
    qdq_acts = collect_activations(str(aug_q), FeedList(feeds))
    errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))

    qgraph = onnx.load(str(qdq), load_external_data=False).graph
    dq_outputs = {o for n in qgraph.node if n.op_type == "DequantizeLinear" for o in n.output}
    quantised = {n.name for n in qgraph.node if n.op_type in quantize.INT8_OPS and n.input and n.input[0] in dq_outputs}
    graph = onnx.load(str(float_pre), load_external_data=False).graph
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        if n.op_type in quantize.INT8_OPS and n.name in quantised:  # kept-float heads get no QDQ of their own
            for x in n.input[:1]:  # the activation input (weights are per-channel and rarely the problem)
                consumers.setdefault(x, []).append(n)
    # An output head stays float but reads the QDQ'd output of the layer before it: that layer is the one to keep
    # in float for such an activation (its output QDQ goes with it).
    heads = set(quantize.output_heads(float_pre))
    producer = {o: n for n in graph.node for o in n.output}
    out = []
    for tensor, err in errors.items():
        # the activation's own quantisation error (its values against their INT8 round trip in the QDQ graph), not
        # the error accumulated from the layers before it, which ranks the deepest layers worst whatever they hold
        sqnr = err["qdq_err"]
        owners = [n for n in consumers.get(tensor, []) if n.name not in heads]
        if not owners:
            p = producer.get(tensor)
            owners = [p] if p is not None and p.name in quantised and p.name not in heads else []
        for n in owners:
            out.append(LayerSensitivity(n.name, n.op_type, tensor, float(sqnr)))
    out.sort(key=lambda s: (s.sqnr_db if math.isfinite(s.sqnr_db) else math.inf, s.node))
    return out


def search_static_int8(src: Path, dst: Path, make_reader: ReaderFactory, check: CheckFn, *,
                       methods: Sequence[str] = quantize.CALIBRATION_METHODS, target: float = 0.95,
                       sensitivity_feeds: Sequence[dict[str, np.ndarray]] = (),
                       steps: Sequence[int] = EXCLUDE_STEPS, say: Callable[[str], None] = lambda _m: None,
                       ) -> Int8Search:
    """Quantise `src` (the exporter's raw FP32 graph) to `dst`: best calibration method first, then the most
    sensitive layers kept in float until the parity mean IoU reaches `target`. When no trial reaches it, the best
    trial ships and `met` is False (the export's own parity bound still decides ok / failed)."""
    with tempfile.TemporaryDirectory(prefix="int8-search-") as tmp_s:
        tmp = Path(tmp_s)
        pre = quantize.pre_process(src, tmp)
        trials: list[tuple[Trial, Path, Path]] = []

        def trial(method: str, kept: list[str]) -> tuple[Trial, Path, Path]:
            raw = tmp / f"trial{len(trials)}.raw.onnx"
            quantize.quantize_qdq(pre, raw, make_reader(), method, nodes_to_exclude=kept)
            small = tmp / f"trial{len(trials)}.onnx"
            shutil.copyfile(raw, small)
            quantize.compact(small, int8_tables=True)  # the form that ships, so parity and size are the shipped ones
            t = Trial(method, list(kept), check(small), small.stat().st_size)
            trials.append((t, raw, small))
            say(f"  int8 trial: {method}, {len(kept)} layer(s) in float: parity IoU {t.parity.iou:.4f} "
                f"(mean {t.parity.mean_iou:.4f}), {t.size_bytes / 1e6:.2f} MB")
            return t, raw, small

        for m in methods:
            trial(m, [])
        best, best_raw, best_small = max(trials, key=lambda tr: (tr[0].parity.mean_iou, tr[0].parity.iou))
        sens: list[LayerSensitivity] = []
        if best.parity.mean_iou < target and sensitivity_feeds:
            sens = layer_sensitivity(pre, best_raw, sensitivity_feeds, tmp)
            ranked = list(dict.fromkeys(s.node for s in sens))
            say(f"  int8 sensitivity: {len(ranked)} quantised layers; worst "
                + ", ".join(f"{s.node} {s.sqnr_db:.1f} dB" for s in sens[:3]))
            for k in steps:
                if k > len(ranked):
                    break
                t, raw, small = trial(best.method, ranked[:k])
                if (t.parity.mean_iou, t.parity.iou) > (best.parity.mean_iou, best.parity.iou):
                    best, best_raw, best_small = t, raw, small
                if t.parity.mean_iou >= target:
                    break
        shutil.copyfile(best_small, dst)
        rules = {"output_heads": quantize.output_heads(pre), "softmax_products": quantize.softmax_products(pre),
                 "squeeze_excitation": quantize.pooled_convs(pre)}
    return Int8Search(dst, best.method, best.kept_float, target, best.parity.mean_iou >= target,
                      [t for t, _r, _s in trials], sens, rules)
