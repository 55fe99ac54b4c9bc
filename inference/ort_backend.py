"""The student on ONNX Runtime (encoder .onnx + decoder .onnx), for stations without torch.

This module imports numpy, OpenCV and onnxruntime only (never torch, at any level: a test imports and runs it with
torch blocked). Pre- and post-processing are inference.preprocess's, the same code the PyTorch student runs, so the
two backends give the same masks up to the networks' float differences.

Providers: the caller's list filtered to what this onnxruntime build offers, CPU always last as the fallback; by
default TensorRT, then CUDA, then CPU, whichever are present.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from inference.errors import ModelError
from inference.runtime import CPU_ENCODE_CHUNK, StudentRuntime

log = logging.getLogger("maskbench.ort")
PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
            "trt": "TensorrtExecutionProvider"}


def resolve_providers(providers: Sequence[str] | None = None) -> list[str]:
    available = set(ort.get_available_providers())
    wanted = [_ALIASES.get(p.lower(), p) for p in (providers or PREFERRED)]
    missing = [p for p in wanted if p not in available]
    if providers and missing:
        log.warning("ONNX Runtime providers not available here, skipped: %s", ", ".join(missing))
    chosen = [p for p in wanted if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def providers_for_device(device: str | None) -> list[str] | None:
    """--device cpu|cuda|tensorrt|auto as a provider list (None: the default order)."""
    if device in (None, "", "auto"):
        return None
    d = device.split(":")[0].lower()
    if d == "cpu":
        return ["CPUExecutionProvider"]
    if d == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if d in ("tensorrt", "trt"):
        return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ModelError(f"unknown device {device!r} for ONNX Runtime (cpu, cuda, tensorrt)")


class OrtStudentSegmenter(StudentRuntime):
    def __init__(
        self,
        encoder_path: Path | str,
        decoder_path: Path | str,
        providers: Sequence[str] | None = None,
        name: str = "student-onnx",
        sha256: str = "",
        input_size: int | None = None,
        session_options: ort.SessionOptions | None = None,
    ) -> None:
        super().__init__()
        for p in (encoder_path, decoder_path):
            if not Path(p).is_file():
                raise ModelError(f"ONNX model not found: {p}")
        self.providers = resolve_providers(providers)
        opts = session_options or ort.SessionOptions()
        try:
            self.encoder = ort.InferenceSession(str(encoder_path), sess_options=opts, providers=self.providers)
            self.decoder = ort.InferenceSession(str(decoder_path), sess_options=opts, providers=self.providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph types
            raise ModelError(f"cannot open the student ONNX pair: {str(exc).splitlines()[0][:240]}") from None
        meta = self.encoder.get_modelmeta().custom_metadata_map
        shape = self.encoder.get_inputs()[0].shape
        size = input_size or int(meta.get("maskbench.input_size", 0)) or (shape[-1] if isinstance(shape[-1], int) else 0)
        if not size:
            raise ModelError(f"{Path(encoder_path).name}: cannot tell the encoder's input size; pass input_size")
        self.input_size = int(size)
        self.config = json.loads(meta.get("maskbench.config", "{}") or "{}")
        self.set_layout(self.config)
        self.name = name
        self.sha256 = sha256
        self.device = "cuda" if self.providers[0] != "CPUExecutionProvider" else "cpu"
        if self.device == "cpu":
            self.encode_chunk = CPU_ENCODE_CHUNK
        self.precision = "fp32"
        self._enc_in = self.encoder.get_inputs()[0].name
        self._enc_out = [o.name for o in self.encoder.get_outputs()]
        self._dec_in = [i.name for i in self.decoder.get_inputs()]

    def _run_encoder(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.encoder.run(None, {self._enc_in: batch.astype(np.float32, copy=False)})
        return dict(zip(self._enc_out, outs))

    def _run_decoder(
        self, image_embed: np.ndarray, high_res: np.ndarray, coords: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        feeds = dict(zip(self._dec_in, (image_embed, high_res, coords, labels)))
        feeds = {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()}
        masks, scores = self.decoder.run(None, feeds)
        return masks, scores
