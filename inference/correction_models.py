"""The correction tool's view of a project's models: inference.registry's active segmenter per kind (wrapped with
the project's on-disk embedding cache), and an embed call keyed by the sample's sha256, the key batch predict uses
too, so an embedding computed by either is reused by the other.

Qt-free, so it lives here rather than in widgets/ (the review view's correction controller calls it through the
window); it is inference's own business which segmenter is active and how it embeds, so not review/'s (review/ may
not import inference)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inference.segmenter import Embedding, Segmenter
from store.project import Project


def load_active_segmenter(project: Project, kind: str) -> Segmenter:
    from inference.errors import ModelError
    from inference.registry import PRECOMPUTED_BACKEND, active_model, load_segmenter

    info = active_model(project, kind)
    if info.backend == PRECOMPUTED_BACKEND:  # the demo teacher on a station install (app.demo_models)
        raise ModelError(f"the {kind} '{info.name}' has precomputed masks only on this install (no torch); point "
                         "prompts need the full install or an ONNX model ('maskbench models add')")
    return load_segmenter(project, kind)


def make_embedder(_project: Project) -> Callable[[Segmenter, str, Any], Embedding]:
    def embed(seg: Segmenter, image_sha256: str, image: Any) -> Embedding:
        if hasattr(seg, "cache"):  # inference.cache.CachedSegmenter
            return seg.embed(image, image_sha256=image_sha256)  # type: ignore[call-arg]
        return seg.embed(image)

    return embed
