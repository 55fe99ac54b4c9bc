"""A latency run on a Jetson (or any SSH host with TensorRT): upload the ONNX file or engine, run trtexec with
the export's precision and shapes, parse its report, and describe the device (L4T release, power mode, clocks)."""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.bench import machine
from inference.bench.core import BenchResult, LogFn, _default_log
from inference.bench.errors import BenchError, ModelLoadError, TensorRTIncompatible, TrtexecMissing
from inference.bench.ssh import Remote
from inference.bench.stats import LatencyStats
from inference.bench.targets import Target
from inference.bench.trtexec import (
    BUILD_MODE,
    PRECISIONS,
    TrtexecOptions,
    build_command,
    command_line,
    format_shapes,
    parse_report,
    parse_shapes,
    require_summary,
    shapes_from_profile,
)
from inference.export import trt_compat

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
TRTEXEC_CANDIDATES = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec", "/opt/tensorrt/bin/trtexec")


@dataclass
class RemoteRunOptions:
    precision: str | None = None  # fp32 | fp16 | int8 | best; None: the export's, else fp16
    shapes: str | None = None  # trtexec syntax; None: derived from the ONNX file's dynamic inputs
    batch: int = 1
    input_size: int | None = None  # for dynamic H/W of image inputs
    calib: Path | None = None  # INT8 calibration cache, uploaded with the model
    warmup_ms: int = 500
    duration_s: float = 10.0
    percentiles: str | None = None
    use_cuda_graph: bool = True
    trtexec: str | None = None  # remote path; None: PATH, then /usr/src/tensorrt/bin/trtexec
    timeout_s: float = 1800.0  # engine build + timed run; Jetson builds can take many minutes
    connect_timeout_s: float = 15.0
    save_engine: bool = False
    label: str | None = None
    profile: dict[str, str] | None = None  # the export's --minShapes/--optShapes/--maxShapes (from its card)


def onnx_dynamic_inputs(path: Path) -> list[tuple[str, tuple[int | None, ...]]]:
    """(name, dims with None for dynamic) of each graph input, read without building a session when onnx is
    installed (a Jetson-sized model loads in milliseconds that way)."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        inits = {i.name for i in model.graph.initializer}
        out = []
        for inp in model.graph.input:
            if inp.name in inits:
                continue
            dims = tuple(
                (d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None)
                for d in inp.type.tensor_type.shape.dim
            )
            out.append((inp.name, dims))
        return out
    except ImportError:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return [(i.name, tuple(d if isinstance(d, int) and d > 0 else None for d in i.shape)) for i in sess.get_inputs()]


def shapes_for(path: Path, shapes: str | None, batch: int, input_size: int | None) -> str | None:
    """The --shapes argument: as given; else for an ONNX file with dynamic dimensions, batch for the first and
    input_size for H/W of (N, C, H, W) inputs; None for a fully static model (trtexec refuses shapes there)."""
    if shapes:
        parse_shapes(shapes)  # validate early, before connecting
        return shapes
    if path.suffix.lower() in ENGINE_SUFFIXES:
        return None
    try:
        inputs = onnx_dynamic_inputs(path)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot read the inputs of {path.name}: {exc}") from exc
    if all(None not in dims for _, dims in inputs):
        return None
    resolved: dict[str, tuple[int, ...]] = {}
    for name, dims in inputs:
        concrete = []
        for axis, d in enumerate(dims):
            if d is not None:
                concrete.append(d)
            elif axis == 0:
                concrete.append(batch)
            elif len(dims) == 4 and axis in (2, 3) and input_size:
                concrete.append(int(input_size))
            else:
                raise BenchError(
                    f"input {name} of {path.name} has a dynamic dimension {axis}; give the shapes with --shapes "
                    f"{name}:{'x'.join(str(x or '?') for x in dims)}"
                )
        resolved[name] = tuple(concrete)
    return format_shapes(resolved)


def normalize_precision(precision: str | None) -> str:
    p = (precision or "fp16").lower()
    if p not in BUILD_MODE:
        raise BenchError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return p


def find_trtexec(remote: Remote, configured: str | None) -> str:
    if configured:
        probe = f"[ -x {shlex.quote(configured)} ] && echo {shlex.quote(configured)}"
    else:
        alts = " ".join(shlex.quote(c) for c in TRTEXEC_CANDIDATES)
        probe = f"command -v trtexec 2>/dev/null || for p in {alts}; do [ -x \"$p\" ] && {{ echo \"$p\"; break; }}; done"
    _, out = remote.run(probe, timeout=30, what="looking for trtexec")
    found = out.strip().splitlines()[-1].strip() if out.strip() else ""
    if not found:
        where = configured or f"PATH, {', '.join(TRTEXEC_CANDIDATES)}"
        raise TrtexecMissing(
            f"trtexec not found on {remote.target.name} (looked in {where}); install TensorRT there "
            "(JetPack includes it as /usr/src/tensorrt/bin/trtexec) or pass --trtexec PATH"
        )
    return found


def _batch_of(shapes: str | None, report_shapes: dict[str, str], default: int) -> int:
    try:
        parsed = parse_shapes(shapes)
        if parsed:
            first = next(iter(parsed.values()))
            if first:
                return int(first[0])
        if report_shapes:
            dims = next(iter(report_shapes.values())).split("x")
            return int(dims[0])
    except (ValueError, IndexError):
        pass
    return default


def describe_device(remote: Remote) -> dict[str, Any]:
    _, out = remote.run(machine.REMOTE_PROBE, timeout=30, what="reading the device description")
    return machine.describe_remote(out, extra={"target": remote.target.name, "host": remote.target.host})


def run_remote(
    target: Target,
    model_path: Path | str,
    opts: RemoteRunOptions | None = None,
    log_fn: LogFn | None = None,
) -> BenchResult:
    out = log_fn or _default_log
    opts = opts or RemoteRunOptions()
    path = Path(model_path)
    if not path.is_file():
        raise ModelLoadError(f"no model file at {path}")
    is_engine = path.suffix.lower() in ENGINE_SUFFIXES
    if not is_engine:
        try:
            compat = trt_compat.check_file(path)
        except trt_compat.UnreadableOnnx as exc:
            raise ModelLoadError(str(exc)) from None
        if not compat.ok:
            raise TensorRTIncompatible(f"{path.name}: {compat.summary()}; nothing was uploaded")
    precision = normalize_precision(opts.precision) if not (is_engine and opts.precision is None) else "engine"
    profile = dict(opts.profile or {}) if not is_engine else {}
    if opts.shapes or not profile:
        shapes = shapes_for(path, opts.shapes, opts.batch, opts.input_size)
    else:
        shapes = shapes_from_profile(profile, opts.batch)
    if opts.calib is not None and not Path(opts.calib).is_file():
        raise ModelLoadError(f"no calibration cache at {opts.calib}")
    if precision == "int8" and opts.calib is None and not is_engine:  # an int8_weight export has its Q/DQ scales
        out("note: INT8 without a calibration cache: TensorRT uses placeholder scales unless the ONNX file holds "
            "Q/DQ nodes; the latency is right, the accuracy is not")
    out(f"connecting to {target.name} ({target.address})")
    with Remote.connect(target, timeout=opts.connect_timeout_s) as remote:
        device = describe_device(remote)
        out("device: " + ", ".join(
            f"{k} {device[k]}" for k in ("model", "l4t", "power_mode") if k in device
        ) + ", clocks " + ", ".join(f"{k} {v}" for k, v in device["clocks"].items()))
        trtexec = find_trtexec(remote, opts.trtexec)
        out(f"trtexec: {trtexec}")
        remote.makedirs(target.remote_dir)
        last = [-1]

        def progress(done: int, total: int) -> None:
            pct = int(100 * done / total) if total else 100
            if pct // 25 != last[0] // 25 or pct == 100 and last[0] != 100:
                last[0] = pct
                out(f"upload {path.name}: {pct}% of {total / 1e6:.1f} MB")

        remote_model = remote.upload(path, target.remote_dir, progress=progress)
        remote_calib = remote.upload(Path(opts.calib), target.remote_dir) if opts.calib else None
        topts = TrtexecOptions(
            precision=BUILD_MODE.get(precision, "fp32"),
            shapes=shapes,
            calib=remote_calib,
            warmup_ms=opts.warmup_ms,
            duration_s=opts.duration_s,
            percentiles=opts.percentiles,
            use_cuda_graph=opts.use_cuda_graph,
            save_engine=(posixpath.splitext(remote_model)[0] + f"-{precision}.engine") if opts.save_engine else None,
            extra=[f"--{flag}={profile[flag]}" for flag in ("minShapes", "optShapes", "maxShapes") if flag in profile],
        )
        cmd = build_command(trtexec, remote_model, topts, is_engine=is_engine)
        line = command_line(cmd)
        out(f"running: {line}")
        trace = [0]

        def stream(ln: str) -> None:
            # trtexec prints one "Average on 10 runs" line per 10 queries (thousands): they stay in the raw report
            if "] Average on " in ln and "GPU latency" in ln:
                trace[0] += 1
                return
            out(ln)

        status, text = remote.timed(line, timeout=opts.timeout_s, on_line=stream, what="trtexec", cwd=target.remote_dir)
        if trace[0]:
            out(f"({trace[0]} trace lines 'Average on N runs' kept in the stored report, not shown)")
    report = parse_report(text)
    require_summary(report, text, status, target.name)
    assert report.latency is not None
    lat = report.latency
    batch = _batch_of(shapes, report.shapes, opts.batch)
    stats = LatencyStats(
        batch=batch,
        iterations=0,
        p50_ms=float(lat.median_ms if lat.median_ms is not None else lat.mean_ms),  # type: ignore[arg-type]
        p90_ms=lat.pct(90),
        p99_ms=lat.pct(99),
        mean_ms=lat.mean_ms,
        min_ms=lat.min_ms,
        max_ms=lat.max_ms,
        throughput=(report.throughput_qps * batch) if report.throughput_qps is not None else None,
    )
    device.update({
        "tensorrt": report.trt_version or device.get("tensorrt_package") or machine.UNKNOWN,
        "gpu": report.device_name or machine.UNKNOWN,
    })
    summary = report.to_dict()
    options = {
        "trtexec": trtexec,
        "command": line,
        "shapes": shapes,
        "cuda_graph": report.cuda_graph if report.cuda_graph is not None else opts.use_cuda_graph,
        "calibration_cache": str(opts.calib) if opts.calib else None,
        "gpu_compute": summary.get("gpu_compute"),
        "enqueue": summary.get("enqueue"),
        "h2d": summary.get("h2d"),
        "d2h": summary.get("d2h"),
        "total_host_walltime_s": report.total_host_walltime_s,
        "total_gpu_compute_s": report.total_gpu_compute_s,
        "warnings": report.warnings[:10],
    }
    result = BenchResult(
        model_label=opts.label or path.stem,
        backend="trtexec",
        precision=precision,
        batch=batch,
        stats=stats,
        target=target.name,
        device=device,
        options=options,
        raw=text,
    )
    out(result.summary_line())
    gpu = report.gpu_compute
    if gpu is not None and gpu.median_ms is not None:
        out(f"GPU compute time: median {gpu.median_ms:.3f} ms"
            + (f", mean {gpu.mean_ms:.3f} ms" if gpu.mean_ms is not None else "")
            + (f", p99 {gpu.pct(99):.3f} ms" if gpu.pct(99) is not None else ""))
    return result
