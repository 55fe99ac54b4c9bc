"""PyTorch execution for segmenters: device and precision handling, and the student on torch.

Precision is applied with autocast (fp16/bf16) rather than by casting the weights, so LayerNorms and softmaxes stay
in fp32 and the same checkpoint runs at any precision; outputs always come back as float32 numpy arrays. On CPU
only fp32 and bf16 are sensible (fp16 matmuls are emulated there), so fp16 on CPU is refused with a clear message.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from inference.errors import ModelError
from inference.runtime import CPU_ENCODE_CHUNK, StudentRuntime
from inference.student import StudentModel, load_checkpoint

PRECISIONS = ("fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str | None) -> torch.device:
    """'cpu', 'cuda', 'cuda:1' or None/'auto' (CUDA when present)."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but no CUDA GPU is available to PyTorch; use --device cpu")
    return dev


def check_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ModelError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise ModelError("fp16 needs a GPU; on CPU use fp32 or bf16")
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    with torch.inference_mode():
        if precision == "fp32":
            yield
        else:
            with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
                yield


def fuse_for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """Fold timm TinyViT's Conv+BatchNorm pairs (eval-only speed-up; the checkpoint itself is untouched)."""
    try:
        from timm.models.tiny_vit import ConvNorm
    except ImportError:  # pragma: no cover - timm is a hard dependency of the torch student
        return model

    def walk(mod: torch.nn.Module) -> None:
        for name, child in mod.named_children():
            if isinstance(child, ConvNorm):
                setattr(mod, name, child.fuse())
            else:
                walk(child)

    walk(model)
    return model


class StudentTorchSegmenter(StudentRuntime):
    """The student on PyTorch (CPU or CUDA, fp32/fp16/bf16)."""

    def __init__(
        self,
        model: StudentModel,
        name: str = "student",
        sha256: str = "",
        device: str | None = "cpu",
        precision: str = "fp32",
        fuse: bool = True,
    ) -> None:
        super().__init__()
        self.device = resolve_device(device)
        self.precision = check_precision(precision, self.device)
        model = model.eval()
        if fuse:
            model = fuse_for_inference(model)
        self.model = model.to(self.device)
        if self.device.type == "cpu":
            # channels-last convolutions are markedly faster in oneDNN for TinyViT's MBConv stage
            self.model = self.model.to(memory_format=torch.channels_last)
            self.encode_chunk = CPU_ENCODE_CHUNK
        self.name = name
        self.sha256 = sha256
        self.input_size = model.input_size
        self.set_layout(model.config.to_dict())

    def _run_encoder(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(batch).to(self.device)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            emb, hi = self.model.encode(x)
        return {"image_embed": emb.float().cpu().numpy(), "high_res": hi.float().cpu().numpy()}

    def _run_decoder(
        self, image_embed: np.ndarray, high_res: np.ndarray, coords: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(self.device)  # noqa: E731
        with autocast(self.device, self.precision):
            masks, scores = self.model.decoder(t(image_embed), t(high_res), t(coords), t(labels))
        return masks.float().cpu().numpy(), scores.float().cpu().numpy()


def load_student_segmenter(
    path: Path | str, name: str = "student", sha256: str = "", device: str | None = "cpu", precision: str = "fp32",
    **kw: Any,
) -> StudentTorchSegmenter:
    return StudentTorchSegmenter(load_checkpoint(path), name=name, sha256=sha256, device=device, precision=precision, **kw)
