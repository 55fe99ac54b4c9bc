"""Small real models for the latency tests: a conv net (TinySegNet) and its ONNX export with a dynamic batch."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

try:
    import torch
except ImportError:  # station profile: only the torch-free tests run
    torch = None

_Module = torch.nn.Module if torch is not None else object


class TinySegNet(_Module):  # type: ignore[misc,valid-type]
    """Conv encoder/decoder producing a 1-channel mask logit map at input size."""

    input_shape = (3, 32, 32)

    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
        )
        self.dec = torch.nn.Sequential(
            torch.nn.ConvTranspose2d(16, 8, 2, stride=2), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 1, 1),
        )

    def forward(self, x):  # noqa: ANN001
        return self.dec(self.enc(x))


def export_onnx(path: Path, dynamic_batch: bool = True) -> Path:
    if torch is None:
        pytest.skip("torch is not installed (needed to export the test model)")
    torch.manual_seed(0)
    model = TinySegNet().eval()
    x = torch.rand(1, *TinySegNet.input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), str(path), input_names=["image"], output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None,
            opset_version=17, dynamo=False,
        )
    return path
