"""Adapter from a project to the segmenters and embedding cache the correction tool uses.

Prefers inference.registry (the project's active model per kind, and the embedding cache) when it is there; else
reads the active ModelRecord itself and loads it with inference's loaders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from inference.errors import NoActiveModel
from inference.segmenter import Embedding, Segmenter
from store.project import Project
from store.schema import ModelKind, ModelRecord


def load_active_segmenter(project: Project, kind: str) -> Segmenter:
    try:
        from inference import registry  # type: ignore[attr-defined]
    except ImportError:
        registry = None
    if registry is not None and hasattr(registry, "load_active_segmenter"):
        return registry.load_active_segmenter(project, kind)
    with project.db.session() as s:
        rec = s.scalar(select(ModelRecord).where(ModelRecord.kind == ModelKind(kind), ModelRecord.active.is_(True))
                       .order_by(ModelRecord.id.desc()).limit(1))
        if rec is None:
            raise NoActiveModel(f"no active {kind} model in this project (register one with the CLI)")
        path, name, sha, arch, meta = rec.checkpoint_path, rec.name, rec.sha256, rec.architecture, dict(rec.meta or {})
    if kind == "student":
        from inference.torch_backend import load_student_segmenter

        return load_student_segmenter(path, name=name, sha256=sha)
    from inference.teacher import load_teacher_segmenter

    return load_teacher_segmenter(path, meta.get("config", arch), name=name, sha256=sha)


def make_embedder(project: Project) -> Callable[[Segmenter, str, Any], Embedding] | None:
    """(segmenter, image sha256, image) -> embedding through the project's embedding cache, when there is one."""
    return None
