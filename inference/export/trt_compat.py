"""Will TensorRT's ONNX parser take this file? A static check against the parser's published support matrix.

Why: TensorRT cannot be installed on the machines that make the exports, so an engine is only ever built on the
target (a Jetson, over `bench-remote`). A file the parser rejects (MatMulInteger from `quantize_dynamic`, a
custom-domain op, a Resize mode it lacks) would otherwise be found there, after the upload. Every node's op type,
the attributes the matrix restricts and its data input's element type are checked against
`tensorrt_onnx_support.json` (transcribed from onnx-tensorrt's docs/operators.md; source and version inside), so
the verdict is in the model card and the Export panel, and `bench-remote` refuses a rejected file before it connects.

What it cannot promise: a graph that passes may still fail to build (shape limits, memory, tactics); the check
catches what the parser's matrix says it does not support, nothing more.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

MATRIX_FILE = Path(__file__).with_name("tensorrt_onnx_support.json")
DEFAULT_DOMAINS = ("", "ai.onnx")
# ONNX TensorProto element types -> the matrix's names
_TYPE_NAMES = {1: "FP32", 2: "UINT8", 3: "INT8", 5: "INT16", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FP16",
               11: "DOUBLE", 12: "UINT32", 13: "UINT64", 16: "BF16", 17: "FP8", 18: "FP8", 19: "FP8", 20: "FP8",
               22: "INT4", 23: "FP4", 21: "UINT4", 4: "UINT16", 8: "STRING"}


@dataclass(frozen=True)
class Finding:
    node: str
    op: str
    reason: str

    def line(self) -> str:
        return f"{self.op} ({self.node}): {self.reason}" if self.node else f"{self.op}: {self.reason}"


@dataclass
class CompatReport:
    matrix: str  # "TensorRT 10.15"
    source: str
    nodes: int
    op_counts: dict[str, int]
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        """One line: the verdict, and for a rejection the problems grouped by op and reason."""
        if self.ok:
            return f"{self.matrix} ONNX parser: compatible ({self.nodes} nodes, {len(self.op_counts)} op types)"
        groups = Counter((f.op, f.reason) for f in self.findings)
        parts = [f"{op} x{n}: {reason}" if n > 1 else f"{op}: {reason}" for (op, reason), n in groups.items()]
        return f"{self.matrix} ONNX parser would reject it: " + "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"compatible": self.ok, "matrix": self.matrix, "source": self.source, "nodes": self.nodes,
                "summary": self.summary(), "findings": [f.line() for f in self.findings[:50]],
                "findings_total": len(self.findings)}


@lru_cache(maxsize=1)
def load_matrix(path: Path = MATRIX_FILE) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _attr(node: Any, name: str) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


def _as_text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _elem_types(model: Any) -> dict[str, int]:
    """Element type of every named tensor the file declares or shape inference can tell."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, ValueError):  # keep what the file declares
        inferred = model
    g = inferred.graph
    types = {t.name: t.data_type for t in g.initializer}
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for node in g.node:
        if node.op_type == "Constant" and node.output:
            value = _attr(node, "value")
            if value is not None:
                types[node.output[0]] = value.data_type
    return types


def _constants(model: Any) -> dict[str, Any]:
    """Initializers and Constant outputs by name, as TensorProtos (converted only where a rule reads one)."""
    values = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output and _attr(node, "value") is not None:
            values[node.output[0]] = _attr(node, "value")
    return values


def check_model(model: Any, matrix: dict[str, Any] | None = None) -> CompatReport:
    """Check an onnx.ModelProto (subgraphs of If/Loop/Scan included)."""
    m = matrix or load_matrix()
    ops, rules = m["operators"], m["rules"]
    lo, hi = m["opset"]
    report = CompatReport(matrix=m["version"], source=m["source"], nodes=0, op_counts={})
    for imp in model.opset_import:
        if imp.domain in DEFAULT_DOMAINS and not lo <= imp.version <= hi:
            report.findings.append(Finding("", "opset", f"opset {imp.version} is outside the parser's {lo}-{hi}"))
    types = _elem_types(model)
    consts = _constants(model)
    counts: Counter[str] = Counter()

    def visit(graph: Any) -> None:
        for node in graph.node:
            report.nodes += 1
            counts[node.op_type] += 1
            _check_node(node, ops, rules, types, consts, report.findings)
            for a in node.attribute:
                if a.g.node:
                    visit(a.g)
                for sub in a.graphs:
                    visit(sub)

    visit(model.graph)
    report.op_counts = dict(counts)
    return report


def _check_node(node: Any, ops: dict[str, Any], rules: dict[str, Any], types: dict[str, int],
                consts: dict[str, Any], findings: list[Finding]) -> None:
    name, op = node.name, node.op_type
    if node.domain not in DEFAULT_DOMAINS:
        findings.append(Finding(name, op, f"custom domain {node.domain!r} (needs a TensorRT plugin)"))
        return
    entry = ops.get(op)
    if entry is None:
        findings.append(Finding(name, op, "not in the parser's support matrix"))
        return
    if not entry["supported"]:
        findings.append(Finding(name, op, "not supported by the parser"))
        return
    if node.input and node.input[0] in types:
        t = _TYPE_NAMES.get(types[node.input[0]], str(types[node.input[0]]))
        if t not in entry["types"]:
            findings.append(Finding(name, op, f"input type {t} not supported (takes {', '.join(entry['types'])})"))
    rule = rules.get(op) or {}
    for attr, allowed in (rule.get("attribute_in") or {}).items():
        value = _as_text(_attr(node, attr))
        if value is not None and value not in allowed:
            findings.append(Finding(name, op, f"{attr}={value!r} not supported (takes {allowed})"))
    for attr in rule.get("attribute_all_ones") or []:
        value = _attr(node, attr)
        if value is not None and any(int(v) != 1 for v in value):
            findings.append(Finding(name, op, f"{attr}={list(value)} must be all ones"))
    for attr in rule.get("attribute_absent") or []:
        if _attr(node, attr) is not None:
            findings.append(Finding(name, op, f"attribute {attr} not supported"))
    if "max_outputs" in rule and sum(1 for o in node.output if o) > rule["max_outputs"]:
        findings.append(Finding(name, op, f"only the first {rule['max_outputs']} output(s) are supported"))
    zi = rule.get("zero_input")
    if zi is not None and len(node.input) > zi and node.input[zi]:
        from onnx import numpy_helper

        zp = consts.get(node.input[zi])
        if zp is None:
            findings.append(Finding(name, op, "zero point is not a constant (must be zero)"))
        elif numpy_helper.to_array(zp).any():
            findings.append(Finding(name, op, "zero point must be zero (TensorRT quantises symmetrically)"))


class UnreadableOnnx(ValueError):
    pass


def check_file(path: Path | str) -> CompatReport:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError) as exc:
        raise UnreadableOnnx(f"{Path(path).name} is not a readable ONNX file ({exc})") from None
    return check_model(model)
