"""Latency statistics shared by the local and the remote runs, and the target-FPS check."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence


def percentile(sorted_ms: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of an already sorted sequence; q in [0, 100]."""
    if not sorted_ms:
        raise ValueError("no samples")
    if len(sorted_ms) == 1:
        return float(sorted_ms[0])
    pos = (len(sorted_ms) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_ms) - 1)
    frac = pos - lo
    return float(sorted_ms[lo] + (sorted_ms[hi] - sorted_ms[lo]) * frac)


@dataclass
class LatencyStats:
    """Per-iteration latency of one configuration. One iteration processes `batch` images."""

    batch: int
    iterations: int
    p50_ms: float
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    min_ms: float | None = None
    max_ms: float | None = None
    throughput: float | None = None  # images per second
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], batch: int, wall_s: float | None = None) -> LatencyStats:
        """`wall_s`: wall time of the whole timed loop; throughput is then images / wall time, otherwise it is
        derived from the mean latency (identical for a synchronous loop)."""
        s = sorted(float(x) for x in samples_ms)
        if not s:
            raise ValueError("no samples")
        mean = sum(s) / len(s)
        if wall_s and wall_s > 0:
            throughput = batch * len(s) / wall_s
        else:
            throughput = batch * 1000.0 / mean if mean > 0 else None
        return cls(
            batch=batch,
            iterations=len(s),
            p50_ms=percentile(s, 50),
            p90_ms=percentile(s, 90),
            p99_ms=percentile(s, 99),
            mean_ms=mean,
            min_ms=s[0],
            max_ms=s[-1],
            throughput=throughput,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FpsCheck:
    """The project's real-time target (hardware.target_fps) against one result."""

    target_fps: float
    budget_ms: float  # 1000 / target_fps: the time one frame may take
    fps: float | None  # images per second achieved
    latency_ms: float | None  # p99 (or p50 when no p99) latency of one iteration
    meets_throughput: bool | None
    meets_latency: bool | None

    @property
    def ok(self) -> bool | None:
        checks = [c for c in (self.meets_throughput, self.meets_latency) if c is not None]
        return all(checks) if checks else None

    def line(self) -> str:
        if self.ok is None:
            return f"target {self.target_fps:g} FPS ({self.budget_ms:.1f} ms/frame): not enough data to check"
        parts = []
        if self.fps is not None:
            parts.append(f"{self.fps:.1f} FPS")
        if self.latency_ms is not None:
            parts.append(f"{self.latency_ms:.2f} ms latency")
        verdict = "meets" if self.ok else "MISSES"
        return f"{verdict} target {self.target_fps:g} FPS ({self.budget_ms:.1f} ms/frame): " + ", ".join(parts)


def check_target_fps(
    target_fps: float,
    *,
    throughput: float | None,
    p99_ms: float | None,
    p50_ms: float | None = None,
    batch: int = 1,
) -> FpsCheck:
    """Throughput must reach the target; for batch 1 (a camera stream, one frame at a time) the p99 latency must
    also fit the frame budget. Larger batches trade latency for throughput, so only throughput is checked."""
    target = float(target_fps)
    budget = 1000.0 / target if target > 0 else math.inf
    latency = p99_ms if p99_ms is not None else p50_ms
    fps = throughput
    if fps is None and p50_ms:
        fps = batch * 1000.0 / p50_ms
    meets_tp = None if fps is None else fps >= target
    meets_lat = None if (latency is None or batch != 1) else latency <= budget
    return FpsCheck(target, budget, fps, latency, meets_tp, meets_lat)


def target_fps_from_config(cfg: dict[str, Any] | None) -> float:
    try:
        return float((cfg or {}).get("hardware", {}).get("target_fps") or 30)
    except (TypeError, ValueError):
        return 30.0
