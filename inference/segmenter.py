"""The one interface every model the workbench runs implements (teacher or student, torch or ONNX Runtime).

Interactive work needs the split: `embed` is the expensive per-image encoder pass (cached on disk), `decode` the
cheap per-click decoder pass. Coordinates are always (x, y) in original image pixels, so stored prompts replay
exactly whatever the model's input size.

Box and mask prompts (SAM 2's `box=` and `mask_input=`) are the teacher's only: the student was distilled on point
prompts and has no box or mask encoder (design seed 001). They go through `decode_prompt`, which refuses them for a
model without `decode_full` instead of dropping them, so a box never silently turns into "no prompt".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from inference.errors import ModelError
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
    box: np.ndarray | None = None  # (4,) float32 x0, y0, x1, y1 in original image pixels (teacher only)
    mask: np.ndarray | None = None  # (H, W) bool at original image size, SAM 2's mask input (teacher only)

    @property
    def points_only(self) -> bool:
        return self.box is None and self.mask is None


class PromptNotSupported(ModelError):
    """A box or mask prompt for a model that only takes points (the student)."""


def decode_prompt(segmenter: Segmenter, embedding: Embedding, prompt: Prompt) -> Decoded:
    """Decode points, plus a box and/or a mask when the prompt has them. A points-only prompt is the ordinary
    `decode`; box and mask need the model's `decode_full` (the SAM 2 teacher) and are refused, never ignored, by a
    model without it."""
    if prompt.points_only:
        return segmenter.decode(embedding, prompt.points, prompt.labels)
    if not isinstance(segmenter, BoxMaskSegmenter):
        raise PromptNotSupported(not_supported_message(segmenter))
    return segmenter.decode_full(embedding, prompt)


@runtime_checkable
class BoxMaskSegmenter(Protocol):
    """A model that takes box and mask prompts besides points (the SAM 2 teacher)."""

    def decode_full(self, embedding: Embedding, prompt: Prompt) -> Decoded: ...


def not_supported_message(segmenter: Segmenter) -> str:
    return (f"{segmenter.name} ({segmenter.kind}) takes point prompts only; box and mask prompts need the SAM 2 teacher "
            "(switch the correction model to the teacher)")


# SAM 2's mask input is the decoder's own low-resolution logits (the previous prediction's, in SAM's iterative
# refinement; SAM2ImagePredictor.predict documents it as 1 x H x W, 256 x 256 for a 1024 input). A stored binary
# mask becomes logits of this magnitude: +L inside, -L outside, linear in the covered fraction at boundary cells.
# 10 saturates the sigmoid (p > 0.9999), so the mask reads as a confident previous prediction, and the mapping is
# deterministic, so a stored mask replays to the same logits.
MASK_PROMPT_LOGIT = 10.0


def mask_to_logits(mask: np.ndarray, grid_hw: tuple[int, int]) -> np.ndarray:
    """A bool (H, W) mask -> float32 logits on a (h, w) grid: area-averaged coverage f mapped to L * (2f - 1)."""
    import cv2

    m = np.asarray(mask, np.float32)
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    frac = cv2.resize(m, (gw, gh), interpolation=cv2.INTER_AREA) if m.shape != (gh, gw) else m
    return (MASK_PROMPT_LOGIT * (2.0 * np.clip(frac, 0.0, 1.0) - 1.0)).astype(np.float32)


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
    model_id: int | None  # the project's ModelRecord it was loaded from (inference.registry); None for a bare model
    encoder_images: int  # images that went through the encoder (tests and benchmarks read it)

    def embed(self, image: np.ndarray) -> Embedding:
        """image: (H, W, 3) uint8 RGB."""
        ...

    def embed_batch(self, images: Sequence[np.ndarray]) -> list[Embedding]: ...

    def decode(self, embedding: Embedding, points: np.ndarray, labels: np.ndarray) -> Decoded: ...

    def decode_prompts(self, embedding: Embedding, prompts: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Decoded]:
        """Several point prompts on one embedding (batched decoder calls)."""
        ...

    def decode_batch(self, embeddings: Sequence[Embedding], prompts: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Decoded]:
        """One point prompt per embedding."""
        ...

    def predict(self, images: list[np.ndarray], prompts: list[Prompt]) -> list[Decoded]: ...
