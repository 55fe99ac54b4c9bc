"""torch latency for any nn.Module: eager or torch.compile'd, fp32 / fp16 / bf16, CPU or CUDA, optionally
replayed from a CUDA graph. torch is imported inside the functions (the station profile has no torch).

Measured on an H100 (the 5.9M-parameter student at 512 px, fp16): batch 1 eager 8.4 ms, the same forward replayed
from one captured CUDA graph ("cudagraph") 1.6 ms, torch.compile default 10 ms, torch.compile reduce-overhead
1.4 ms; batch 8: eager 14.7 ms, cudagraph 4.2 ms, compile default 7.7 ms, reduce-overhead 2.7 ms. The model is
launch-bound at small batches, which is why the graph-based variants exist here.

Checkpoints become modules through `load_torch_model(path)`: maskbench student checkpoints through
inference.student.load_checkpoint, other files as torch.export (.pt2) or TorchScript archives.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from inference.bench.core import BenchResult, LogFn, PeakRss, TimingConfig, _default_log, time_loop
from inference.bench.errors import BenchError, ModelLoadError, ProviderUnavailable
from inference.bench.stats import LatencyStats

TORCH_PRECISIONS = ("fp32", "fp16", "bf16")
MODES = ("eager", "compiled", "cudagraph")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class TorchModel:
    """A module to benchmark and how to make its inputs. `example_inputs(batch)` returns a tuple of tensors on
    the CPU in fp32; the benchmark moves and casts them. Without it, one (batch, *input_shape) tensor is used."""

    module: Any
    label: str
    input_shape: tuple[int, ...] = (3, 512, 512)
    example_inputs: Callable[[int], tuple[Any, ...]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def inputs(self, batch: int) -> tuple[Any, ...]:
        import torch

        if self.example_inputs is not None:
            made = self.example_inputs(batch)
            return tuple(made) if isinstance(made, (tuple, list)) else (made,)
        g = torch.Generator().manual_seed(0)
        return (torch.rand((batch, *self.input_shape), generator=g),)


# --- checkpoints -------------------------------------------------------------------------------------------------


def _student_model(student: Any, path: Path) -> TorchModel:
    """A rebuilt student (inference.student.StudentModel): image + point prompts in, at its own input size."""
    size = int(student.input_size)
    model = TorchModel(module=student, label=path.stem, input_shape=(3, size, size),
                       meta={"loader": "inference.student.load_checkpoint"})
    model.example_inputs = lambda batch, m=model: point_prompt_inputs(batch, m.input_shape)
    return model


def point_prompt_inputs(batch: int, input_shape: tuple[int, ...]) -> tuple[Any, ...]:
    """One positive point at the image centre per sample: (image (B, C, H, W) in [0, 1), points (B, 1, 2) in
    input pixels, labels (B, 1))."""
    import torch

    g = torch.Generator().manual_seed(0)
    image = torch.rand((batch, *input_shape), generator=g)
    h, w = input_shape[-2], input_shape[-1]
    points = torch.tensor([[[w / 2.0, h / 2.0]]]).expand(batch, 1, 2).contiguous()
    labels = torch.ones((batch, 1), dtype=torch.int64)
    return image, points, labels


def load_torch_model(path: Path | str, input_size: int | None = None) -> TorchModel:
    """Turn a checkpoint file into a benchmarkable module.

    A maskbench student checkpoint is rebuilt by inference.student.load_checkpoint; anything else must be a
    torch.export archive (.pt2) or a TorchScript archive. Plain state_dict checkpoints carry no architecture and are
    refused with a line saying so.
    """
    import torch

    from inference.errors import CheckpointError
    from inference.student import CHECKPOINT_FORMAT, load_checkpoint, read_checkpoint

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"no checkpoint at {path}")
    tried: list[str] = []
    try:
        is_student = read_checkpoint(path).get("format") == CHECKPOINT_FORMAT
    except CheckpointError:  # not a weights-only pickle (a TorchScript / torch.export archive): the loaders below
        is_student = False
    if is_student:
        model = _student_model(load_checkpoint(path), path)
        if input_size:
            model.input_shape = (3, int(input_size), int(input_size))
        return model
    loaders: list[tuple[str, Callable[[], Any]]] = [
        ("torch.export.load", lambda: torch.export.load(str(path)).module()),
        ("torch.jit.load", lambda: torch.jit.load(str(path), map_location="cpu")),
    ]
    if path.suffix != ".pt2":
        loaders.reverse()
    for name, load in loaders:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, still loads
                module = load()
        except Exception:  # noqa: BLE001 - not this format
            tried.append(name)
            continue
        model = TorchModel(module=module, label=path.stem, meta={"loader": name})
        if input_size:
            model.input_shape = (3, int(input_size), int(input_size))
        return model
    raise ModelLoadError(
        f"cannot turn {path.name} into a model (tried {', '.join(tried) or 'nothing'}); a weights-only checkpoint "
        "needs the student/teacher loader, which only maskbench student checkpoints name: export it to ONNX and "
        "benchmark the .onnx"
    )


# --- the benchmark -----------------------------------------------------------------------------------------------


def _dtype(precision: str) -> Any:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ProviderUnavailable(f"torch {torch.__version__} here sees no CUDA device")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise BenchError(f"device must be cpu, cuda or auto, not {device!r}")
    return device


def _cast_inputs(inputs: tuple[Any, ...], device: str, dtype: Any) -> tuple[Any, ...]:
    import torch

    out = []
    for t in inputs:
        if isinstance(t, torch.Tensor):
            t = t.to(device)
            if t.is_floating_point():
                t = t.to(dtype)
        out.append(t)
    return tuple(out)


def bench_torch(
    model: TorchModel | Any,
    *,
    label: str | None = None,
    device: str = "auto",
    precisions: Sequence[str] = ("fp32",),
    modes: Sequence[str] = ("eager",),
    batches: Sequence[int] = (1,),
    compile_mode: str = "default",
    compile_backend: str = "inductor",
    channels_last: bool = False,
    timing: TimingConfig | None = None,
    log_fn: LogFn | None = None,
) -> list[BenchResult]:
    """Benchmark a module (TorchModel, an nn.Module, or a zero-argument factory returning one) for every
    precision x mode x batch. Combinations the device cannot run are logged and skipped."""
    import torch

    out = log_fn or _default_log
    timing = timing or TimingConfig()
    if not isinstance(model, TorchModel):
        module = model() if callable(model) and not isinstance(model, torch.nn.Module) else model
        if not isinstance(module, torch.nn.Module):
            raise BenchError("the factory must return a torch.nn.Module")
        model = TorchModel(module=module, label=label or module.__class__.__name__,
                           input_shape=tuple(getattr(module, "input_shape", (3, 512, 512))))
    label = label or model.label
    dev = resolve_device(device)
    for p in precisions:
        if p not in TORCH_PRECISIONS:
            raise BenchError(f"precision must be one of {', '.join(TORCH_PRECISIONS)}, not {p!r}")
    for m in modes:
        if m not in MODES:
            raise BenchError(f"mode must be one of {', '.join(MODES)}, not {m!r}")
    if compile_mode not in COMPILE_MODES:
        raise BenchError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, not {compile_mode!r}")
    base = model.module
    try:
        base = base.eval()
    except NotImplementedError:  # torch.export programs have no train/eval switch (they are traced in eval)
        pass
    results: list[BenchResult] = []
    sync = torch.cuda.synchronize if dev.startswith("cuda") else None
    run_device = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else "cpu"
    for precision in precisions:
        dtype = _dtype(precision)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # deep-copying a ScriptModule touches .grad of non-leaf tensors
                module = copy.deepcopy(base).to(device=dev, dtype=dtype)
        except Exception as exc:  # noqa: BLE001 - e.g. a TorchScript module that cannot be copied
            module = base.to(device=dev, dtype=dtype)
            out(f"note: model could not be copied ({exc.__class__.__name__}); casting it in place")
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        for mode in modes:
            if mode == "cudagraph" and not dev.startswith("cuda"):
                out("cudagraph: skipped, CUDA graphs need a CUDA device")
                continue
            runner = module
            backend = "torch"
            if mode == "compiled":
                backend = "torch-compiled" if compile_mode == "default" else f"torch-compiled:{compile_mode}"
                kwargs: dict[str, Any] = {"backend": compile_backend, "dynamic": False}
                if compile_mode != "default":
                    kwargs["mode"] = compile_mode
                runner = torch.compile(module, **kwargs)
            elif mode == "cudagraph":
                backend = "torch-cudagraph"
            for batch in batches:
                what = f"[{backend} {precision} b{batch}] "
                inputs = _cast_inputs(model.inputs(batch), dev, dtype)
                if channels_last:
                    inputs = tuple(t.contiguous(memory_format=torch.channels_last) if getattr(t, "dim", lambda: 0)() == 4 else t
                                   for t in inputs)
                try:
                    with torch.inference_mode():
                        if mode == "compiled":
                            # One eager call first fills lazy module caches (e.g. timm TinyViT's attention-bias
                            # cache) with ordinary tensors; filled inside compiled CUDA graphs they would hold
                            # graph outputs that the next replay overwrites.
                            module(*inputs)
                            out(f"{what}compiling (first call)...")
                        step = _make_step(runner, inputs, mode, dev,
                                          cudagraph_trees=mode == "compiled" and compile_mode != "default"
                                          and dev.startswith("cuda"))
                        if dev.startswith("cuda"):
                            torch.cuda.reset_peak_memory_stats(dev)
                        with PeakRss() as mem:
                            samples, wall = time_loop(step, timing, sync=sync, log_fn=out, what=what)
                except (RuntimeError, NotImplementedError, TypeError, AssertionError) as exc:
                    # e.g. fp16 kernels missing on this device, a torch.export program traced at another batch
                    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc.__class__.__name__
                    out(f"{what}skipped: {first}")
                    continue
                peak = (torch.cuda.max_memory_allocated(dev) / 2**20) if dev.startswith("cuda") else mem.peak_mb
                stats = LatencyStats.from_samples(samples, batch, wall)
                res = BenchResult(
                    model_label=label,
                    backend=backend,
                    precision=precision,
                    batch=batch,
                    stats=stats,
                    peak_mem_mb=peak,
                    device={"run_device": run_device},
                    options={
                        "device": dev,
                        "mode": mode,
                        "compile_mode": compile_mode if mode == "compiled" else None,
                        "compile_backend": compile_backend if mode == "compiled" else None,
                        "channels_last": channels_last,
                        "input_shapes": [list(t.shape) for t in inputs if hasattr(t, "shape")],
                        "warmup": timing.warmup,
                        "iterations": stats.iterations,
                        "peak_mem_kind": "cuda_max_allocated" if dev.startswith("cuda") else "process_rss",
                    },
                )
                out(res.summary_line())
                results.append(res)
    if not results:
        raise BenchError("no configuration could run (see the log for why each was skipped)")
    return results


def _make_step(runner: Any, inputs: tuple[Any, ...], mode: str, dev: str, cudagraph_trees: bool = False) -> Callable[[], Any]:
    import torch

    if cudagraph_trees:
        # torch.compile's CUDA graphs (reduce-overhead / max-autotune) reuse their output buffers: each timed
        # call starts a new step, so the previous call's outputs may be overwritten.
        def step_tree() -> Any:
            torch.compiler.cudagraph_mark_step_begin()
            return runner(*inputs)

        return step_tree
    if mode != "cudagraph":
        return lambda: runner(*inputs)
    # Capture once on a side stream after a few warm-up calls (cuDNN/cuBLAS pick their kernels there), then
    # every timed step is one graph replay: no Python or launch overhead per kernel.
    stream = torch.cuda.Stream(device=dev)
    stream.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(stream):
        for _ in range(3):
            runner(*inputs)
    torch.cuda.current_stream(dev).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = runner(*inputs)
    keep = (graph, static_out, inputs)  # the graph reads and writes these buffers: keep them alive

    def step() -> None:
        keep[0].replay()

    return step
