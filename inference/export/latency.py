"""CPU latency of each exported precision through ONNX Runtime, measured in one interleaved run.

Timing the files one after another lets machine noise (another process, a frequency change) land on one of them;
interleaving one run of each per round puts every file under the same conditions, so the ratios to FP32 that the
model card shows are comparable even where the absolute milliseconds are not.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def cpu_latency(paths: Mapping[str, Path], feeds: dict[str, np.ndarray], *, threads: int = 1, warmup: int = 3,
                runs: int = 20) -> dict[str, dict[str, Any]]:
    """{name: {p50_ms, p95_ms, runs, threads, vs_fp32}} for every file, on the same feeds. `vs_fp32` is the p50
    ratio to the entry named "fp32" (None without one)."""
    import onnxruntime as ort

    sessions = {}
    for name, path in paths.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inputs = {i.name: feeds[i.name] for i in sess.get_inputs()}
        for _ in range(warmup):
            sess.run(None, inputs)
        sessions[name] = (sess, inputs)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    names = list(sessions)
    for r in range(runs):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate who goes first
            sess, inputs = sessions[name]
            t0 = time.perf_counter()
            sess.run(None, inputs)
            times[name].append((time.perf_counter() - t0) * 1000.0)
    out = {name: {"p50_ms": round(float(np.percentile(ts, 50)), 3), "p95_ms": round(float(np.percentile(ts, 95)), 3),
                  "runs": runs, "threads": threads} for name, ts in times.items()}
    base = out.get("fp32", {}).get("p50_ms")
    for v in out.values():
        v["vs_fp32"] = round(v["p50_ms"] / base, 3) if base else None
    return out
