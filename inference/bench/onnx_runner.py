"""ONNX Runtime latency: CPU, CUDA and TensorRT execution providers, with or without IO binding.

IO binding (ort.IOBinding) binds the inputs once and the outputs to buffers allocated once, before the timed loop;
each timed run then does no allocation of outputs, and on a GPU provider no host<->device copies. The benchmark
labels those runs "...+iob" so they can be compared with plain `session.run` on the same model
(`compare_plain`); by default it is used with the GPU providers only (see `bench_onnx`).
Works without torch (station profile).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from inference.bench.core import BenchResult, LogFn, PeakRss, TimingConfig, _default_log, time_loop
from inference.bench.errors import BenchError, ModelLoadError, ProviderUnavailable
from inference.bench.stats import LatencyStats
from inference.bench.trtexec import parse_shapes

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


@dataclass
class InputSpec:
    name: str
    dims: tuple[int | None, ...]  # None: dynamic
    dtype: Any


def input_specs(session: Any) -> list[InputSpec]:
    specs = []
    for i in session.get_inputs():
        dims = tuple(d if isinstance(d, int) and d > 0 else None for d in i.shape)
        dtype = _ORT_TYPES.get(i.type)
        if dtype is None:
            raise BenchError(f"input {i.name!r} has type {i.type}, which the benchmark cannot fill")
        specs.append(InputSpec(i.name, dims, dtype))
    return specs


def resolve_shape(spec: InputSpec, batch: int, given: dict[str, tuple[int, ...]], input_size: int | None) -> tuple[int, ...] | None:
    """The concrete shape for one input at `batch`. None when the model's batch dimension is fixed to another
    size. Dynamic spatial dimensions of an image-like (N, C, H, W) input take `input_size`."""
    if spec.name in given:
        dims = list(given[spec.name])
        if len(dims) != len(spec.dims):
            raise BenchError(f"--shapes gives {spec.name} {len(dims)} dimensions; the model has {len(spec.dims)}")
        if spec.dims and spec.dims[0] is None:
            dims[0] = batch
        elif spec.dims and spec.dims[0] != batch:
            return None
        return tuple(dims)
    dims2: list[int] = []
    for axis, d in enumerate(spec.dims):
        if axis == 0:
            if d is None:
                dims2.append(batch)
            elif d != batch:
                return None
            else:
                dims2.append(d)
        elif d is not None:
            dims2.append(d)
        elif len(spec.dims) == 4 and axis in (2, 3) and input_size:
            dims2.append(int(input_size))
        else:
            raise BenchError(
                f"input {spec.name} has a dynamic dimension {axis}; give its shape with --shapes "
                f"{spec.name}:{'x'.join(str(x or '?') for x in spec.dims)}"
            )
    return tuple(dims2)


def make_inputs(specs: Sequence[InputSpec], shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = shapes[spec.name]
        if np.issubdtype(spec.dtype, np.floating):
            feeds[spec.name] = rng.random(shape, dtype=np.float32).astype(spec.dtype)
        elif spec.dtype == np.bool_:
            feeds[spec.name] = np.zeros(shape, dtype=np.bool_)
        else:
            feeds[spec.name] = np.ones(shape, dtype=spec.dtype)  # point labels, counts: 1 is always valid
    return feeds


def onnx_precision(path: Path, specs: Sequence[InputSpec] | None = None) -> str:
    """fp16 when the model computes in float16, int8 when it holds quantize/dequantize nodes, else fp32."""
    try:
        import onnx  # optional (not in the station profile)

        model = onnx.load(str(path), load_external_data=False)
        ops = {n.op_type for n in model.graph.node}
        if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear",
                  "MatMulInteger", "ConvInteger"}:
            return "int8"
        if any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer):
            return "fp16"
        return "fp32"
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - a detection failure only means the label falls back to the input type
        pass
    if specs and any(s.dtype == np.float16 for s in specs):
        return "fp16"
    return "fp32"


def _session(path: Path, provider: str, precision: str | None, threads: int | None, cache_dir: Path | None) -> Any:
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise BenchError(f"provider must be one of {', '.join(PROVIDERS)} (or torch for checkpoints), not {provider!r}")
    ep = PROVIDERS[provider]
    available = ort.get_available_providers()
    if ep not in available:
        hint = "install onnxruntime-gpu with a matching CUDA" if provider != "cpu" else ""
        raise ProviderUnavailable(
            f"ONNX Runtime {ort.__version__} here has no {ep} (available: {', '.join(available)}){'; ' + hint if hint else ''}"
        )
    providers: list[Any] = []
    if provider == "tensorrt":
        opts: dict[str, Any] = {"trt_fp16_enable": precision in ("fp16", "int8"), "trt_int8_enable": precision == "int8"}
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir))
        providers.append((ep, opts))
        providers.append("CUDAExecutionProvider")
    elif provider == "cuda":
        providers.append(ep)
    providers.append("CPUExecutionProvider")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
    try:
        sess = ort.InferenceSession(str(path), sess_options=so, providers=providers)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types; the user gets one line
        raise ModelLoadError(f"ONNX Runtime cannot load {path.name}: {str(exc).splitlines()[0][:300]}") from exc
    used = sess.get_providers()
    if used[0] != ep:
        raise ProviderUnavailable(f"ONNX Runtime fell back to {used[0]} instead of {ep} for {path.name}")
    return sess


def _device_of(provider: str) -> str:
    return "cpu" if provider == "cpu" else "cuda"


def make_binding(sess: Any, feeds: dict[str, np.ndarray], provider: str) -> tuple[Any, list[Any]]:
    """An IOBinding with the inputs placed on the provider's device once and every output bound to a buffer
    preallocated there from one plain run's output shapes. Returns (binding, the OrtValues it uses; keep them)."""
    import onnxruntime as ort

    device = _device_of(provider)
    binding = sess.io_binding()
    keep: list[Any] = []  # OrtValues must outlive the binding
    for name, arr in feeds.items():
        value = ort.OrtValue.ortvalue_from_numpy(arr, device, 0)
        keep.append(value)
        binding.bind_ortvalue_input(name, value)
    outputs = sess.run(None, feeds)
    for meta, out in zip(sess.get_outputs(), outputs):
        arr = np.asarray(out)
        try:
            value = ort.OrtValue.ortvalue_from_shape_and_type(list(arr.shape), arr.dtype, device, 0)
        except Exception:  # noqa: BLE001 - odd output types: let ORT allocate on the device
            binding.bind_output(meta.name, device)
            continue
        keep.append(value)
        binding.bind_ortvalue_output(meta.name, value)
    return binding, keep


def _bound_step(sess: Any, feeds: dict[str, np.ndarray], provider: str) -> tuple[Any, Any]:
    binding, keep = make_binding(sess, feeds, provider)

    def step(keep: list[Any] = keep) -> None:
        sess.run_with_iobinding(binding)

    sync = binding.synchronize_outputs if _device_of(provider) != "cpu" else None
    return step, sync


def bench_onnx(
    path: Path | str,
    *,
    provider: str = "cpu",
    batches: Sequence[int] = (1,),
    shapes: str | None = None,
    input_size: int | None = None,
    io_binding: bool | None = None,
    compare_plain: bool = False,
    precision: str | None = None,
    label: str | None = None,
    threads: int | None = None,
    cache_dir: Path | None = None,
    timing: TimingConfig | None = None,
    log_fn: LogFn | None = None,
) -> list[BenchResult]:
    """One result per batch size (and per variant when `compare_plain` times both session.run and IO binding).

    `io_binding=None` picks what paid off in measurements: on for the GPU providers (inputs and outputs stay on
    the device; no copies per run), off for the CPU provider, where binding only saves the output allocation and
    made no measurable difference (the 5.9M-parameter student at 512 px: 42.5 vs 45.1 ms at batch 1, 253 vs 238 ms
    at batch 8, 16 cores)."""
    out = log_fn or _default_log
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"no ONNX file at {path}")
    timing = timing or TimingConfig()
    given = parse_shapes(shapes)
    sess = _session(path, provider, precision, threads, cache_dir)
    specs = input_specs(sess)
    precision = precision or onnx_precision(path, specs)
    label = label or path.stem
    out(f"{path.name}: ONNX Runtime {sess.get_providers()[0]}, precision {precision}, inputs "
        + ", ".join(f"{s.name}{list(d if d else '?' for d in s.dims)}" for s in specs))
    if io_binding is None:
        io_binding = provider != "cpu"
    variants = [io_binding] if not compare_plain else [False, True]
    results: list[BenchResult] = []
    for batch in batches:
        resolved = {s.name: resolve_shape(s, batch, given, input_size) for s in specs}
        if any(v is None for v in resolved.values()):
            out(f"batch {batch}: skipped, the model's batch size is fixed to {specs[0].dims[0]}")
            continue
        shapes_b: dict[str, tuple[int, ...]] = {k: v for k, v in resolved.items() if v is not None}
        feeds = make_inputs(specs, shapes_b)
        for bound in variants:
            backend = f"onnxruntime-{provider}" + ("+iob" if bound else "")
            what = f"[{backend} b{batch}] "
            with PeakRss() as mem:
                if bound:
                    step, sync = _bound_step(sess, feeds, provider)
                else:
                    def step(feeds: dict[str, np.ndarray] = feeds) -> None:
                        sess.run(None, feeds)

                    sync = None
                samples, wall = time_loop(step, timing, sync=sync, log_fn=out, what=what)
            stats = LatencyStats.from_samples(samples, batch, wall)
            res = BenchResult(
                model_label=label,
                backend=backend,
                precision=precision,
                batch=batch,
                stats=stats,
                peak_mem_mb=mem.peak_mb if provider == "cpu" else None,
                options={
                    "provider": sess.get_providers()[0],
                    "io_binding": bound,
                    "shapes": {k: list(v) for k, v in shapes_b.items()},
                    "threads": threads,
                    "warmup": timing.warmup,
                    "iterations": stats.iterations,
                },
            )
            out(res.summary_line())
            results.append(res)
    if not results:
        raise BenchError(f"no batch size could run on {path.name} (its batch size is fixed to {specs[0].dims[0]})")
    return results
