"""One local benchmark run: an ONNX export through ONNX Runtime, or a checkpoint through torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from inference.bench.core import BenchResult, LogFn, TimingConfig, _default_log
from inference.bench.errors import BenchError, ModelLoadError

ONNX_PROVIDERS = ("cpu", "cuda", "tensorrt")
ALL_PROVIDERS = (*ONNX_PROVIDERS, "torch")


@dataclass
class LocalRunOptions:
    provider: str | None = None  # cpu | cuda | tensorrt (ONNX Runtime) | torch; None: cpu for .onnx, torch else
    batches: Sequence[int] = (1,)
    precisions: Sequence[str] | None = None  # torch: fp32/fp16/bf16 (default fp32 + fp16 on CUDA, bf16 on CPU)
    # torch: eager / compiled / cudagraph. None: eager + compiled, and on CUDA also cudagraph.
    modes: Sequence[str] | None = None
    device: str = "auto"  # torch: cpu | cuda | auto
    # torch.compile mode. None: reduce-overhead (compiled CUDA graphs) on CUDA, default on CPU.
    compile_mode: str | None = None
    shapes: str | None = None
    input_size: int | None = None
    io_binding: bool | None = None  # None: on for the GPU providers, off for cpu
    compare_plain: bool = False  # ONNX: also time plain session.run next to IO binding
    threads: int | None = None
    label: str | None = None
    onnx_precision: str | None = None  # the export's precision, when known
    timing: TimingConfig = field(default_factory=TimingConfig)
    cache_dir: Path | None = None  # TensorRT EP engine cache


def is_onnx(path: Path) -> bool:
    return path.suffix.lower() == ".onnx"


def run_local(model_path: Path | str, opts: LocalRunOptions | None = None, log_fn: LogFn | None = None) -> list[BenchResult]:
    out = log_fn or _default_log
    opts = opts or LocalRunOptions()
    path = Path(model_path)
    if not path.is_file():
        raise ModelLoadError(f"no model file at {path}")
    provider = opts.provider or ("cpu" if is_onnx(path) else "torch")
    if provider not in ALL_PROVIDERS:
        raise BenchError(f"--provider must be one of {', '.join(ALL_PROVIDERS)}, not {provider!r}")
    if is_onnx(path):
        if provider == "torch":
            raise BenchError(f"{path.name} is an ONNX file: use --provider cpu, cuda or tensorrt (torch runs checkpoints)")
        from inference.bench.onnx_runner import bench_onnx

        return bench_onnx(
            path,
            provider=provider,
            batches=opts.batches,
            shapes=opts.shapes,
            input_size=opts.input_size,
            io_binding=opts.io_binding,
            compare_plain=opts.compare_plain,
            precision=opts.onnx_precision,
            label=opts.label,
            threads=opts.threads,
            cache_dir=opts.cache_dir,
            timing=opts.timing,
            log_fn=out,
        )
    if provider == "tensorrt":
        raise BenchError("the tensorrt provider runs ONNX exports; export the checkpoint to ONNX first")
    device = opts.device if provider == "torch" else provider  # --provider cpu/cuda with a checkpoint: torch there
    import torch

    from inference.bench.torch_runner import bench_torch, load_torch_model, resolve_device

    if opts.threads:
        torch.set_num_threads(int(opts.threads))
    dev = resolve_device(device)
    model = load_torch_model(path, input_size=opts.input_size)
    if opts.label:
        model.label = opts.label
    out(f"{path.name}: torch {torch.__version__} on {dev}, loaded with {model.meta.get('loader')}")
    cuda = dev.startswith("cuda")
    precisions = list(opts.precisions or (["fp32", "fp16"] if cuda else ["fp32", "bf16"]))
    # Defaults follow what measurements showed (student, 512 px, H100, fp16, batch 1): eager 8.4 ms, one captured
    # CUDA graph 1.6 ms, torch.compile default 10 ms, torch.compile reduce-overhead 1.4 ms. The student is
    # launch-bound at small batches, so on CUDA the graph-based variants are the ones worth timing.
    modes = list(opts.modes or (["eager", "cudagraph", "compiled"] if cuda else ["eager", "compiled"]))
    compile_mode = opts.compile_mode or ("reduce-overhead" if cuda else "default")
    return bench_torch(
        model,
        device=dev,
        precisions=precisions,
        modes=modes,
        batches=opts.batches,
        compile_mode=compile_mode,
        timing=opts.timing,
        log_fn=out,
    )
