"""Fixtures of the latency tests: the tiny conv net and its ONNX export in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_models import TinySegNet, export_onnx, torch


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    return export_onnx(tmp_path / "tiny.onnx")


@pytest.fixture
def tiny_net() -> TinySegNet:
    if torch is None:
        pytest.skip("torch is not installed")
    torch.manual_seed(0)
    return TinySegNet().eval()
