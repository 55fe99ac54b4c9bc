"""TensorRT engines from an exported ONNX file.

With the `tensorrt` package importable (a Jetson or a CUDA workstation), `build_engine` builds FP16 or INT8
engines with an optimisation profile over the dynamic batch and number of points; INT8 uses an entropy calibrator
over the same domain crops as the ONNX Runtime INT8 file and saves its calibration cache. Without it, the caller
records `trtexec_command(...)`: the exact command to run on the target device.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("maskbench.export")

NOT_AVAILABLE = "tensorrt is not installed here: run the trtexec command in the model card on the target device"


def available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure (missing CUDA libs too) means not available
        return False
    return True


@dataclass
class Profile:
    """Shapes of the merged graph's inputs for min / opt / max batch and number of points."""

    input_size: int
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    min_points: int = 1
    opt_points: int = 1
    max_points: int = 8

    def shapes(self, which: str) -> dict[str, tuple[int, ...]]:
        b = {"min": self.min_batch, "opt": self.opt_batch, "max": self.max_batch}[which]
        n = {"min": self.min_points, "opt": self.opt_points, "max": self.max_points}[which]
        s = self.input_size
        return {"image": (b, 3, s, s), "point_coords": (b, n, 2), "point_labels": (b, n)}


def _fmt(shapes: dict[str, tuple[int, ...]]) -> str:
    return ",".join(f"{k}:{'x'.join(str(d) for d in v)}" for k, v in shapes.items())


def trtexec_command(onnx_path: Path | str, precision: str, profile: Profile, engine_path: Path | str | None = None,
                    calib_cache: Path | str | None = None) -> str:
    """The trtexec line for the target device.

    precision fp16: `--fp16`. int8: pass the QDQ INT8 ONNX file (explicit quantisation: the scales calibrated on
    the project's crops are in the graph) with `--int8 --fp16` so layers left in float run in FP16; with a
    calibration cache from `build_engine` and the FP32 file, `--calib=` uses it instead."""
    onnx_path = Path(onnx_path)
    engine = Path(engine_path) if engine_path else onnx_path.with_suffix(f".{precision}.engine")
    parts = ["trtexec", f"--onnx={onnx_path.name}", f"--saveEngine={engine.name}"]
    if precision == "fp16":
        parts.append("--fp16")
    elif precision in ("int8", "int8_weight"):
        parts += ["--int8", "--fp16"]
        if calib_cache:
            parts.append(f"--calib={Path(calib_cache).name}")
    parts += [f"--minShapes={_fmt(profile.shapes('min'))}", f"--optShapes={_fmt(profile.shapes('opt'))}",
              f"--maxShapes={_fmt(profile.shapes('max'))}", "--memPoolSize=workspace:1024", "--skipInference"]
    return " ".join(shlex.quote(p) for p in parts)


def build_engine(onnx_path: Path, engine_path: Path, precision: str, profile: Profile,
                 calibration_batches: Callable[[], Any] | None = None, calib_cache: Path | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Path:  # pragma: no cover - needs a GPU
    """Build a serialized engine. calibration_batches(): an iterator of feeds dicts (numpy, batch 1)."""
    import numpy as np
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    opt = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        opt.set_shape(name, profile.shapes("min")[name], profile.shapes("opt")[name], profile.shapes("max")[name])
    config.add_optimization_profile(opt)
    config.set_flag(trt.BuilderFlag.FP16)
    if precision.startswith("int8"):
        config.set_flag(trt.BuilderFlag.INT8)
        if calibration_batches is not None:
            config.int8_calibrator = _entropy_calibrator(trt, np, calibration_batches, graph_input_dtypes(onnx_path),
                                                         calib_cache, progress)
            config.set_calibration_profile(opt)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    engine_path.write_bytes(bytes(serialized))
    return engine_path


def graph_input_dtypes(onnx_path: Path) -> dict[str, Any]:
    """Each graph input's numpy dtype, read from the file the engine is built from (the calibrator must hand TensorRT
    buffers of exactly these types: `point_labels` is float32 in this project's graphs, as in SAM's)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    return {v.name: helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
            for v in model.graph.input if v.name not in inits}


def calibration_arrays(feeds: dict[str, Any], dtypes: dict[str, Any]) -> dict[str, Any]:
    """One calibration batch as contiguous arrays in the graph's input types and order; a batch that lacks an
    input, or holds a value its type cannot represent (a fractional label for an integer input), is refused."""
    import numpy as np

    missing = sorted(set(dtypes) - set(feeds))
    if missing:
        raise ValueError(f"calibration batch lacks graph input(s) {', '.join(missing)}")
    out = {}
    for name, dtype in dtypes.items():
        arr = np.asarray(feeds[name])
        cast = np.ascontiguousarray(arr.astype(dtype, copy=False))
        if np.issubdtype(np.dtype(dtype), np.integer) and not np.array_equal(cast, arr):  # floats may round
            raise ValueError(f"calibration input {name} ({arr.dtype}) does not fit the graph's {np.dtype(dtype)}")
        out[name] = cast
    return out


def _entropy_calibrator(trt: Any, np: Any, batches: Callable[[], Any], dtypes: dict[str, Any], cache: Path | None,
                        progress: Callable[[int, int], None] | None) -> Any:  # pragma: no cover - needs a GPU
    from cuda.bindings import runtime as cudart  # cuda-python: the `tensorrt` extra installs it

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self._it = iter(batches())
            self._mem: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
            self._n = 0

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            feeds = next(self._it, None)
            if feeds is None:
                return None
            arrays = calibration_arrays(feeds, dtypes)
            ptrs = []
            for name in names:
                arr = arrays[name]
                ptr, size = self._mem.get(name, (0, 0))
                if size < arr.nbytes:  # batches may hold more points than the last one
                    if ptr:
                        cudart.cudaFree(ptr)
                    ptr, size = int(cudart.cudaMalloc(arr.nbytes)[1]), arr.nbytes
                    self._mem[name] = (ptr, size)
                cudart.cudaMemcpy(ptr, arr.ctypes.data, arr.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
                ptrs.append(ptr)
            self._n += 1
            if progress:
                progress(self._n, 0)
            return ptrs

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache is not None and cache.exists() else None

        def write_calibration_cache(self, data: bytes) -> None:
            if cache is not None:
                cache.write_bytes(bytes(data))

    return Calibrator()
