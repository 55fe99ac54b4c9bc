"""torch latency for any nn.Module: eager or torch.compile'd, fp32 / fp16 / bf16, CPU or CUDA, optionally
replayed from a CUDA graph. torch is imported inside the functions (the station profile has no torch).

Measured on an H100 (the 5.9M-parameter student at 512 px, fp16): batch 1 eager 8.4 ms, the same forward replayed
from one captured CUDA graph ("cudagraph") 1.6 ms, torch.compile default 10 ms, torch.compile reduce-overhead
1.4 ms; batch 8: eager 14.7 ms, cudagraph 4.2 ms, compile default 7.7 ms, reduce-overhead 2.7 ms. The model is
launch-bound at small batches, which is why the graph-based variants exist here.

Checkpoints become modules through `load_torch_model(path)`: the one hook where the student/teacher loaders
plug in (inference.registry or inference.student, when those modules exist), with TorchScript and torch.export
archives as the fallback.
"""

from __future__ import annotations

import copy
import importlib
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


# --- the checkpoint hook -----------------------------------------------------------------------------------------

# (module, function names tried in order). The first that exists is called with the checkpoint path.
LOADER_HOOKS: list[tuple[str, tuple[str, ...]]] = [
    ("inference.registry", ("load_torch_model", "load_model", "load_checkpoint", "load")),
    ("inference.student", ("load_torch_model", "load_student", "load_checkpoint", "load")),
]


def _optional_module(name: str) -> Any | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == name or name.startswith(exc.name + ".")):
            return None  # the module itself is not there (yet)
        raise  # the module exists but one of its own imports failed: that is a real error


def _as_torch_model(obj: Any, path: Path, source: str) -> TorchModel | None:
    import torch

    if isinstance(obj, TorchModel):
        return obj
    module = obj
    if not isinstance(module, torch.nn.Module):
        for attr in ("module", "model", "net"):
            inner = getattr(obj, attr, None)
            if isinstance(inner, torch.nn.Module):
                module = inner
                break
        else:
            return None
    size = getattr(obj, "input_size", None) or getattr(module, "input_size", None)
    shape = (3, int(size), int(size)) if isinstance(size, int) else (3, 512, 512)
    maker = getattr(obj, "example_inputs", None) or getattr(module, "example_inputs", None)
    model = TorchModel(
        module=module,
        label=path.stem,
        input_shape=tuple(getattr(obj, "input_shape", shape)),
        example_inputs=maker if callable(maker) else None,
        meta={"loader": source},
    )
    if model.example_inputs is None and prompt_signature(module):
        model.example_inputs = lambda batch, m=model: point_prompt_inputs(batch, m.input_shape)
    return model


def prompt_signature(module: Any) -> bool:
    """True for a promptable segmenter: forward(image, points, labels) (the student's and SAM's decoders)."""
    import inspect

    try:
        params = [p for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return False
    names = [p.name.lower() for p in params]
    return len(names) >= 3 and "point" in names[1] and "label" in names[2]


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

    Order: `inference.registry` / `inference.student` loaders if those modules exist (checked with importlib, so
    this works before and after they land), then a torch.export archive (.pt2) or a TorchScript archive.
    Plain state_dict checkpoints need the architecture, so they need one of the loaders.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"no checkpoint at {path}")
    tried: list[str] = []
    for mod_name, fn_names in LOADER_HOOKS:
        mod = _optional_module(mod_name)
        if mod is None:
            continue
        for fn_name in fn_names:
            fn = getattr(mod, fn_name, None)
            if callable(fn):
                tried.append(f"{mod_name}.{fn_name}")
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        obj = fn(path)
                    except Exception as exc:  # noqa: BLE001 - a loader that does not know this file: try the next
                        tried[-1] += f" ({exc.__class__.__name__}: {str(exc)[:120]})"
                        break
                for w in caught:  # warnings of the loader that worked still reach the user
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                model = _as_torch_model(obj, path, f"{mod_name}.{fn_name}")
                if model is not None:
                    if input_size:
                        model.input_shape = (model.input_shape[0], int(input_size), int(input_size))
                    return model
                break
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
        "needs the student/teacher loader (inference.registry), or export it to ONNX and benchmark the .onnx"
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
