"""The one interface every model the workbench runs implements (teacher or student, torch or ONNX Runtime).

Interactive work needs the split: `embed` is the expensive per-image encoder pass (cached on disk), `decode` the
cheap per-click decoder pass. Coordinates are always (x, y) in original image pixels, so stored prompts replay
exactly whatever the model's input size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from inference.layout import Layout


@dataclass
class Embedding:
    """Encoder output for one image. `features` holds float arrays, e.g. "image_embed" and, for SAM 2,
    "high_res_0"/"high_res_1": (C, H, W) for a crop resized to the square input (`layout` None, SAM's convention),
    (T, C, H, W) with one entry per tile for a crop at native pixel scale (`layout`, inference.layout)."""

    features: dict[str, np.ndarray]
    orig_hw: tuple[int, int]
    input_size: int
    model_sha256: str = ""
    layout: Layout | None = None


@dataclass
class Prompt:
    points: np.ndarray  # (N, 2) float32, x/y in original image pixels
    labels: np.ndarray  # (N,) int32, 1 positive, 0 negative
    source: str = "human"  # saliency | ground_truth | human | grid
    meta: dict[str, object] = field(default_factory=dict)


@dataclass
class Decoded:
    logits: np.ndarray  # (H, W) float32 at original image size; mask = logits > 0
    score: float

    @property
    def mask(self) -> np.ndarray:
        return self.logits > 0


@runtime_checkable
class Segmenter(Protocol):
    name: str
    kind: str  # "teacher" | "student"
    sha256: str
    input_size: int

    def embed(self, image: np.ndarray) -> Embedding:
        """image: (H, W, 3) uint8 RGB."""
        ...

    def decode(self, embedding: Embedding, points: np.ndarray, labels: np.ndarray) -> Decoded: ...

    def predict(self, images: list[np.ndarray], prompts: list[Prompt]) -> list[Decoded]: ...
