"""trtexec: the command line for a run, and the parser of its report.

The parser reads what TensorRT 8.x and 10.x print (tests/data/trtexec holds real reports of both): the
"=== Performance summary ===" block ("Throughput: N qps", "Latency: min = .. ms, max = .., mean = .., median = ..,
percentile(P%) = .. ms" for Latency, Enqueue Time, H2D Latency, GPU Compute Time, D2H Latency, then "Total Host
Walltime" and "Total GPU Compute Time"), and from the header the TensorRT version, the device, precision, shapes
and whether CUDA graphs were on. Lines may carry the "[date-time] [I]" prefix or not (reports pasted by hand, or
wrapped by other tools with their own prefix).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

from inference.bench.errors import EngineBuildFailed, ReportParseError

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_SECTIONS = {
    "Latency": "latency",
    "End-to-End Host Latency": "end_to_end",
    "Enqueue Time": "enqueue",
    "H2D Latency": "h2d",
    "GPU Compute Time": "gpu_compute",
    "D2H Latency": "d2h",
}
_SECTION_RE = re.compile(r"(?:^|\]\s*|\s)(" + "|".join(re.escape(k) for k in _SECTIONS) + r"):\s*(min\b.*)$")
_STAT_RE = re.compile(r"\b(min|max|mean|median)\s*=?\s*" + _NUM + r"\s*ms")
_PCT_RE = re.compile(r"percentile\((\d+(?:\.\d+)?)%\)\s*=?\s*" + _NUM + r"\s*ms")
_THROUGHPUT_RE = re.compile(r"Throughput:\s*" + _NUM + r"\s*qps")
_WALL_RE = re.compile(r"Total Host Walltime:\s*" + _NUM + r"\s*s\b")
_GPU_TOTAL_RE = re.compile(r"Total GPU Compute Time:\s*" + _NUM + r"\s*s\b")
_VERSION_LINE_RE = re.compile(r"TensorRT version:\s*(\d+(?:\.\d+)+)")
_VERSION_TAG_RE = re.compile(r"\[TensorRT v(\d{4,6})\]")
_DEVICE_RE = re.compile(r"Selected Device:\s*(.+?)\s*$")
_PRECISION_RE = re.compile(r"\]\s*Precision:\s*(.+?)\s*$")
_CUDA_GRAPH_RE = re.compile(r"CUDA Graph:\s*(Enabled|Disabled)")
_SHAPE_RE = re.compile(r"Input inference shape\s*:\s*(\S+?)=(\S+)")
_BINDING_RE = re.compile(r"Input binding for (\S+) with dimensions (\S+)")
_CMD_RE = re.compile(r"^&&&& (RUNNING|PASSED|FAILED) TensorRT\.trtexec \[[^\]]*\](?: \[[^\]]*\])? # (.*)$")


@dataclass
class TimingStats:
    min_ms: float | None = None
    max_ms: float | None = None
    mean_ms: float | None = None
    median_ms: float | None = None
    percentiles: dict[float, float] = field(default_factory=dict)  # {99.0: ms}

    def pct(self, q: float) -> float | None:
        return self.percentiles.get(float(q))


@dataclass
class TrtexecReport:
    throughput_qps: float | None = None
    latency: TimingStats | None = None
    gpu_compute: TimingStats | None = None
    enqueue: TimingStats | None = None
    h2d: TimingStats | None = None
    d2h: TimingStats | None = None
    end_to_end: TimingStats | None = None
    total_host_walltime_s: float | None = None
    total_gpu_compute_s: float | None = None
    trt_version: str | None = None
    device_name: str | None = None
    precision: str | None = None
    cuda_graph: bool | None = None
    shapes: dict[str, str] = field(default_factory=dict)
    command: str | None = None
    status: str = "unknown"  # passed | failed | unknown (the report had no "&&&& PASSED/FAILED" line)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    inference_started: bool = False

    @property
    def has_summary(self) -> bool:
        return self.latency is not None and self.latency.median_ms is not None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("latency", "gpu_compute", "enqueue", "h2d", "d2h", "end_to_end"):
            if d[key] is not None:
                d[key]["percentiles"] = {f"{k:g}": v for k, v in d[key]["percentiles"].items()}
        return d


def decode_version_tag(tag: str) -> str:
    """'8502' -> '8.5.2' (major*1000 + minor*100 + patch), '101600' -> '10.16.0' (major*10000 + minor*100 +
    patch, TensorRT 10 and later)."""
    n = int(tag)
    if len(tag) == 4:
        return f"{n // 1000}.{(n // 100) % 10}.{n % 100}"
    return f"{n // 10000}.{(n // 100) % 100}.{n % 100}"


def _timing(body: str) -> TimingStats:
    t = TimingStats()
    for name, value in _STAT_RE.findall(body):
        setattr(t, f"{name}_ms", float(value))
    for q, value in _PCT_RE.findall(body):
        t.percentiles[float(q)] = float(value)
    return t


def parse_report(text: str) -> TrtexecReport:
    """Parse trtexec's output. Never raises: what is missing stays None; see `require_summary`."""
    r = TrtexecReport()
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line:
            continue
        m = _CMD_RE.search(line)
        if m:
            if m.group(1) == "RUNNING":
                r.command = m.group(2)
            else:
                r.status = m.group(1).lower()
                r.command = r.command or m.group(2)
        tag = _VERSION_TAG_RE.search(line)
        if tag and r.trt_version is None:
            r.trt_version = decode_version_tag(tag.group(1))
        m = _VERSION_LINE_RE.search(line)
        if m:
            r.trt_version = m.group(1)
        if "[E]" in line or line.startswith("Error") or "ERROR:" in line:
            r.errors.append(line)
        elif "[W]" in line:
            r.warnings.append(line)
        if "Starting inference" in line:
            r.inference_started = True
        m = _DEVICE_RE.search(line)
        if m:
            r.device_name = m.group(1)
        m = _PRECISION_RE.search(line)
        if m:
            r.precision = m.group(1)
        m = _CUDA_GRAPH_RE.search(line)
        if m:
            r.cuda_graph = m.group(1) == "Enabled"
        m = _SHAPE_RE.search(line)
        if m:
            r.shapes[m.group(1)] = m.group(2)
        m = _BINDING_RE.search(line)
        if m:
            r.shapes.setdefault(m.group(1), m.group(2))
        m = _THROUGHPUT_RE.search(line)
        if m:
            r.throughput_qps = float(m.group(1))
            continue
        m = _SECTION_RE.search(line)
        if m:
            setattr(r, _SECTIONS[m.group(1)], _timing(m.group(2)))
            continue
        m = _WALL_RE.search(line)
        if m:
            r.total_host_walltime_s = float(m.group(1))
            continue
        m = _GPU_TOTAL_RE.search(line)
        if m:
            r.total_gpu_compute_s = float(m.group(1))
    return r


def first_error(report: TrtexecReport, text: str) -> str:
    for line in report.errors:
        msg = line.split("[E]", 1)[1].strip() if "[E]" in line else line.strip()
        if msg:
            return msg
    tail = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("&&&&")]
    return tail[-1] if tail else "no output"


def require_summary(report: TrtexecReport, text: str, exit_status: int | None, where: str) -> None:
    """Turn a failed or summary-less run into one clear error."""
    failed = report.status == "failed" or (exit_status not in (None, 0))
    if failed or not report.has_summary:
        reason = first_error(report, text)
        if not report.inference_started:
            raise EngineBuildFailed(f"trtexec could not build or load the engine on {where}: {reason}")
        if failed:
            raise EngineBuildFailed(f"trtexec failed during inference on {where}: {reason}")
        raise ReportParseError(f"trtexec on {where} printed no performance summary (last line: {reason})")


# --- the command -------------------------------------------------------------------------------------------------

PRECISIONS = ("fp32", "fp16", "int8", "best")
# Export precisions (store.schema.Export.precision) -> the trtexec build mode. Weight-only INT8 exports carry
# Q/DQ weights, which TensorRT runs with --int8 (layers left in float in FP16), like the export's own card does.
BUILD_MODE = {"fp32": "fp32", "fp16": "fp16", "int8": "int8", "int8_weight": "int8", "best": "best"}
PROFILE_FLAGS = ("minShapes", "optShapes", "maxShapes")


@dataclass
class TrtexecOptions:
    precision: str = "fp16"  # fp32 | fp16 | int8 (with fp16 fallback) | best
    shapes: str | None = None  # trtexec syntax: "input:1x3x512x512,other:1x2"
    calib: str | None = None  # remote path of an INT8 calibration cache
    warmup_ms: int = 500
    duration_s: float = 10.0
    iterations: int | None = None
    percentiles: str | None = None  # passed as --percentile= (8.5 takes one value, 8.6+ a list)
    use_cuda_graph: bool = True
    use_spin_wait: bool = False
    no_data_transfers: bool = False
    save_engine: str | None = None
    extra: list[str] = field(default_factory=list)


def build_command(trtexec: str, model_path: str, opts: TrtexecOptions, is_engine: bool = False) -> list[str]:
    if opts.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    cmd = [trtexec, f"--loadEngine={model_path}" if is_engine else f"--onnx={model_path}"]
    if not is_engine:
        # An engine carries its precision; flags only matter when building from ONNX.
        if opts.precision == "fp16":
            cmd.append("--fp16")
        elif opts.precision == "int8":
            cmd += ["--int8", "--fp16"]  # INT8 with FP16 fallback for layers without INT8 kernels
            if opts.calib:
                cmd.append(f"--calib={opts.calib}")
        elif opts.precision == "best":
            cmd.append("--best")
        if opts.save_engine:
            cmd.append(f"--saveEngine={opts.save_engine}")
    if opts.shapes:
        cmd.append(f"--shapes={opts.shapes}")
    cmd.append(f"--warmUp={int(opts.warmup_ms)}")
    cmd.append(f"--duration={opts.duration_s:g}")
    if opts.iterations:
        cmd.append(f"--iterations={int(opts.iterations)}")
    if opts.percentiles:
        cmd.append(f"--percentile={opts.percentiles}")
    if opts.use_cuda_graph:
        cmd.append("--useCudaGraph")
    if opts.use_spin_wait:
        cmd.append("--useSpinWait")
    if opts.no_data_transfers:
        cmd.append("--noDataTransfers")
    cmd += list(opts.extra)
    return cmd


def command_line(cmd: list[str]) -> str:
    return shlex.join(cmd)


def parse_shapes(spec: str | None) -> dict[str, tuple[int, ...]]:
    """'x:1x3x64x64,y:2' -> {'x': (1, 3, 64, 64), 'y': (2,)} (trtexec's --shapes syntax)."""
    out: dict[str, tuple[int, ...]] = {}
    if not spec:
        return out
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, dims = part.rpartition(":")
        if not sep or not name:
            raise ValueError(f"bad shape {part!r}: expected NAME:DxDxD, e.g. image:1x3x512x512")
        try:
            out[name.strip("'\"")] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            raise ValueError(f"bad shape {part!r}: dimensions must be integers joined by 'x'") from None
    return out


def format_shapes(shapes: dict[str, tuple[int, ...]]) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in dims)}" for name, dims in shapes.items())


def profile_from_command(command: str | None) -> dict[str, str]:
    """The optimisation profile (--minShapes/--optShapes/--maxShapes) of a trtexec command line, e.g. the one an
    export's card records for building its engine."""
    out: dict[str, str] = {}
    if not command:
        return out
    try:
        parts = shlex.split(command)
    except ValueError:
        return out
    for part in parts:
        for flag in PROFILE_FLAGS:
            prefix = f"--{flag}="
            if part.startswith(prefix):
                out[flag] = part[len(prefix):]
    return out


def shapes_from_profile(profile: dict[str, str], batch: int) -> str | None:
    """--shapes for a run: the profile's opt shapes with the batch dimension set to `batch` (kept inside the
    profile's min..max batch)."""
    opt = parse_shapes(profile.get("optShapes"))
    if not opt:
        return None
    lo = parse_shapes(profile.get("minShapes"))
    hi = parse_shapes(profile.get("maxShapes"))
    out: dict[str, tuple[int, ...]] = {}
    for name, dims in opt.items():
        b = batch
        if name in lo and lo[name]:
            b = max(b, lo[name][0])
        if name in hi and hi[name]:
            b = min(b, hi[name][0])
        out[name] = (b, *dims[1:]) if dims else dims
    return format_shapes(out)
