"""Flip test-time augmentation for any point-prompt segmenter: the crop and its clicks mirrored, each view encoded
and decoded by the model, the logits mirrored back and averaged.

Why (docs/benchmarks.md, issue 14): in the GPU-trained magnetic-tile table the average of the four mirror views
gave +0.019 to +0.025 test IoU at one click to the teacher, the feature-aligned student and the U-Net alike (+0.016
to +0.035 at five clicks); on a CPU-trained student on the thin-defect set, +0.06 validation / +0.09 test. The views
cost one encoder and one decoder call each, so this is for offline work (a teacher's predictions), not the
interactive station."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inference.cache import CachedSegmenter
from inference.interactive import ClickSegmenter
from inference.segmenter import Decoded, Embedding

# (mirror left-right, mirror top-bottom) of each view; the first is the crop itself
FLIPS: tuple[tuple[bool, bool], ...] = ((False, False), (True, False), (False, True), (True, True))
_KEY_SUFFIX = {(False, False): "", (True, False): "-mirror-lr", (False, True): "-mirror-tb",
               (True, True): "-mirror-lrtb"}


@dataclass(frozen=True)
class FlipEmbedding:
    """The base model's embedding of each mirrored view, in FLIPS order."""

    views: tuple[Embedding, ...]
    orig_hw: tuple[int, int]


def _mirror(a: np.ndarray, lr: bool, tb: bool) -> np.ndarray:
    if lr:
        a = a[:, ::-1]
    if tb:
        a = a[::-1]
    return np.ascontiguousarray(a)


class FlipEnsemble:
    """A ClickSegmenter over `views` mirror views of `base` (2: the crop and its left-right mirror; 4: all four),
    whose embedding is a FlipEmbedding of the base model's."""

    def __init__(self, base: ClickSegmenter, views: int = 4) -> None:
        if views not in (2, 4):
            raise ValueError(f"a flip ensemble has 2 or 4 views, not {views}")
        self.base = base
        self.flips = FLIPS[:views]
        self.name = f"{base.name}+flips{views}"

    def embed(self, image: np.ndarray) -> FlipEmbedding:
        h, w = image.shape[:2]
        return FlipEmbedding(tuple(self.base.embed(_mirror(image, lr, tb)) for lr, tb in self.flips), (h, w))

    def embed_stored(self, cached: CachedSegmenter, images: Sequence[np.ndarray],
                     image_sha256s: Sequence[str]) -> list[FlipEmbedding]:
        """Embeddings of stored crops through `cached` (the base model with the project's cache): every view of every
        crop in one embedding call (the encoder batches them as its device suits), the crop itself under its content
        hash, so a flip pass after a plain one encodes only the mirrors (3 of 4 views), and a mirror under its hash
        plus the mirror's name (no pixel hashing)."""
        views = [_mirror(im, lr, tb) for im in images for lr, tb in self.flips]
        keys = [sha + _KEY_SUFFIX[f] for sha in image_sha256s for f in self.flips]
        embs = cached.embed_batch(views, keys)
        n = len(self.flips)
        return [FlipEmbedding(tuple(embs[i * n:(i + 1) * n]), im.shape[:2]) for i, im in enumerate(images)]

    def decode(self, embedding: FlipEmbedding, points: np.ndarray, labels: np.ndarray) -> Decoded:
        h, w = embedding.orig_hw
        pts = np.asarray(points, np.float32).reshape(-1, 2)
        total = np.zeros((h, w), np.float32)
        score = 0.0
        for emb, (lr, tb) in zip(embedding.views, self.flips):
            p = pts.copy()
            if lr:  # pixel x of the crop is pixel w - 1 - x of its mirror
                p[:, 0] = w - 1 - p[:, 0]
            if tb:
                p[:, 1] = h - 1 - p[:, 1]
            d = self.base.decode(emb, p, labels)
            total += _mirror(d.logits, lr, tb)
            score += d.score
        n = len(self.flips)
        return Decoded(logits=total / n, score=score / n)
