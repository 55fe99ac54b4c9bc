"""The timing loop, peak-memory probe and result record shared by the ONNX Runtime and torch benchmarks."""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from inference.bench.stats import LatencyStats

log = logging.getLogger("maskbench.bench")

LogFn = Callable[[str], None]


def _default_log(msg: str) -> None:
    log.info(msg)


@dataclass
class TimingConfig:
    """Warm-up, then timed iterations. The timed loop stops after `iterations` runs once `min_time_s` has passed,
    or at `max_time_s` whatever the count (so a slow model cannot hold the machine for hours)."""

    warmup: int = 10
    iterations: int = 100
    min_time_s: float = 0.0
    max_time_s: float = 120.0
    warmup_time_s: float = 0.0  # keep warming up at least this long (GPU clocks ramp up)


@dataclass
class BenchResult:
    model_label: str
    backend: str  # torch | torch-compiled | torch-cudagraph | onnxruntime-cpu(+iob) | trtexec ...
    precision: str
    batch: int
    stats: LatencyStats
    target: str = "local"
    peak_mem_mb: float | None = None
    device: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    raw: str | None = None

    def summary_line(self) -> str:
        s = self.stats
        p99 = f"{s.p99_ms:.3f}" if s.p99_ms is not None else "-"
        p90 = f"{s.p90_ms:.3f}" if s.p90_ms is not None else "-"
        tp = f"{s.throughput:.1f} img/s" if s.throughput is not None else "- img/s"
        mem = f", peak {self.peak_mem_mb:.0f} MB" if self.peak_mem_mb is not None else ""
        return (
            f"{self.backend:<24} {self.precision:<5} batch {self.batch:>3}: p50 {s.p50_ms:.3f} ms, p90 {p90} ms, "
            f"p99 {p99} ms, {tp}{mem}"
        )


def time_loop(
    step: Callable[[], Any],
    cfg: TimingConfig,
    sync: Callable[[], None] | None = None,
    log_fn: LogFn | None = None,
    what: str = "",
) -> tuple[list[float], float]:
    """Run `step` cfg.warmup times (and at least warmup_time_s), then time each call. `sync` (e.g.
    torch.cuda.synchronize) is called after every step so asynchronous devices are timed to completion.
    Returns (per-iteration milliseconds, wall seconds of the timed loop)."""
    out = log_fn or _default_log
    t0 = time.perf_counter()
    n = 0
    while n < cfg.warmup or (time.perf_counter() - t0) < cfg.warmup_time_s:
        step()
        if sync:
            sync()
        n += 1
        if time.perf_counter() - t0 > cfg.max_time_s:
            break
    out(f"{what}warm-up: {n} runs in {time.perf_counter() - t0:.2f} s")
    samples: list[float] = []
    clock = time.perf_counter_ns
    start = time.perf_counter()
    while True:
        a = clock()
        step()
        if sync:
            sync()
        samples.append((clock() - a) / 1e6)
        elapsed = time.perf_counter() - start
        if len(samples) >= cfg.iterations and elapsed >= cfg.min_time_s:
            break
        if elapsed >= cfg.max_time_s:
            out(f"{what}stopped after {len(samples)} runs: max time {cfg.max_time_s:g} s reached")
            break
    return samples, time.perf_counter() - start


class PeakRss:
    """Peak resident memory of this process while the block runs, in MB. Linux resets the high-water mark when
    '5' is written to /proc/self/clear_refs; elsewhere ru_maxrss (peak since start) is the best there is."""

    def __init__(self) -> None:
        self.reset_ok = False
        self.peak_mb: float | None = None

    def __enter__(self) -> PeakRss:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset_ok = True
        except OSError:
            self.reset_ok = False
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_mb = self.read()

    def read(self) -> float | None:
        if self.reset_ok:
            try:
                with open("/proc/self/status", encoding="utf-8") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            return int(line.split()[1]) / 1024
            except (OSError, ValueError):
                pass
        try:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        except (OSError, ValueError):
            return None


def parse_batches(spec: str | list[int] | tuple[int, ...] | None) -> list[int]:
    if spec is None or spec == "":
        return [1]
    if isinstance(spec, (list, tuple)):
        values = [int(v) for v in spec]
    else:
        try:
            values = [int(v) for v in str(spec).replace(" ", "").split(",") if v]
        except ValueError:
            from inference.bench.errors import BenchError

            raise BenchError(f"--batch must be comma-separated integers like 1,8,32, not {spec!r}") from None
    if not values or any(v < 1 for v in values):
        from inference.bench.errors import BenchError

        raise BenchError(f"batch sizes must be positive integers, not {spec!r}")
    return list(dict.fromkeys(values))
