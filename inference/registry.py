"""The project's models: importing checkpoints into the store, the active model per kind, opening a segmenter.

* `add_model(project, kind, path, ...)` verifies a checkpoint before anything is written (it must load with
  weights_only=True and fit its architecture), copies it into project.models_dir under its sha256, and records a
  ModelRecord that becomes the active one of its kind, all in one transaction. Re-adding the same file reactivates
  its record instead of duplicating it.
* `load_segmenter(project, kind)` is what the GUI, review, training and batch predict call: the active model of a
  kind, on the backend its record names ("torch" or "onnx"), wrapped with the project's embedding cache. The ONNX path
  imports no torch, so it works on a station install.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from inference.errors import CheckpointError, ModelError, NoActiveModel
from store.images import sha256_file
from store.schema import ModelKind, ModelRecord

KINDS = ("teacher", "student")
# a model recorded with its masks only, no runnable weights: the demo teacher of a station install (app.demo_models)
PRECOMPUTED_BACKEND = "precomputed"


@dataclass
class ModelInfo:
    """A detached copy of a ModelRecord (safe to use after the session closed, and across threads)."""

    id: int
    name: str
    kind: str
    architecture: str
    backend: str
    checkpoint_path: str
    sha256: str
    params: int | None
    size_bytes: int | None
    input_size: int | None
    active: bool
    meta: dict[str, Any]

    @classmethod
    def of(cls, r: ModelRecord) -> ModelInfo:
        return cls(id=r.id, name=r.name, kind=r.kind.value if isinstance(r.kind, ModelKind) else str(r.kind),
                   architecture=r.architecture, backend=r.backend, checkpoint_path=r.checkpoint_path, sha256=r.sha256,
                   params=r.params, size_bytes=r.size_bytes, input_size=r.input_size, active=bool(r.active),
                   meta=dict(r.meta or {}))

    def resolve(self, project: Any, rel: str | None = None) -> Path:
        p = Path(rel or self.checkpoint_path)
        return p if p.is_absolute() else project.root / p


def _kind(kind: str) -> ModelKind:
    try:
        return ModelKind(kind)
    except ValueError:
        raise ModelError(f"model kind must be teacher or student, not {kind!r}") from None


def list_models(project: Any) -> list[ModelInfo]:
    with project.db.session() as s:
        return [ModelInfo.of(r) for r in s.scalars(select(ModelRecord).order_by(ModelRecord.kind, ModelRecord.id))]


def active_model(project: Any, kind: str) -> ModelInfo:
    k = _kind(kind)
    with project.db.session() as s:
        rec = s.scalars(
            select(ModelRecord).where(ModelRecord.kind == k, ModelRecord.active).order_by(ModelRecord.id.desc())
        ).first()
        if rec is None:
            hint = "--config sam2.1_hiera_s" if kind == "teacher" else ""
            raise NoActiveModel(f"no active {kind} model in this project; add one with 'maskbench models add {kind} PATH {hint}'".rstrip())
        return ModelInfo.of(rec)


def get_model(project: Any, model_id: int) -> ModelInfo:
    with project.db.session() as s:
        rec = s.get(ModelRecord, model_id)
        if rec is None:
            raise ModelError(f"no model with id {model_id}")
        return ModelInfo.of(rec)


def _copy_into(project: Any, src: Path, kind: str, sha: str, suffix: str) -> str:
    """Copy (atomically) into models_dir as <kind>-<sha12><suffix>; returns the project-relative path."""
    dest = project.models_dir / f"{kind}-{sha[:12]}{suffix}"
    if not dest.exists() or sha256_file(dest) != sha:
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    return str(dest.relative_to(project.root))


def _record(project: Any, kind: str, fields: dict[str, Any]) -> tuple[ModelInfo, bool]:
    """Insert (or reactivate) the record and make it the only active one of its kind; one transaction."""
    k = _kind(kind)
    with project.db.session() as s:
        for r in s.scalars(select(ModelRecord).where(ModelRecord.kind == k, ModelRecord.active)):
            r.active = False
        rec = s.scalars(select(ModelRecord).where(ModelRecord.kind == k, ModelRecord.sha256 == fields["sha256"])).first()
        existed = rec is not None
        if rec is None:
            rec = ModelRecord(kind=k, **fields)
            s.add(rec)
        else:
            for key, value in fields.items():
                setattr(rec, key, value)
        rec.active = True
        s.flush()
        return ModelInfo.of(rec), existed


def add_model(
    project: Any,
    kind: str,
    path: Path | str,
    config: str | None = None,
    name: str | None = None,
    image_size: int | None = None,
    decoder: Path | str | None = None,
    scale: float | None = None,
) -> tuple[ModelInfo, bool]:
    """Verify and import a checkpoint. Returns (record, already_present). `scale` (teachers): the checkpoint was
    trained on crops at native pixel scale times `scale` (inference.layout); None: SAM's resize-to-square."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if kind == "student" and (path.suffix.lower() == ".onnx" or decoder is not None):
        return add_onnx_student(project, path, decoder, name=name)
    if kind == "teacher":
        return _add_teacher(project, path, config or "sam2.1_hiera_s", name, image_size, scale)
    if scale is not None:
        raise ModelError("--scale is for teachers; a student checkpoint carries its own layout")
    if kind == "student":
        return _add_student(project, path, name)
    _kind(kind)
    raise AssertionError


def _add_teacher(project: Any, path: Path, config: str, name: str | None, image_size: int | None,
                 scale: float | None):
    from inference.sam2_configs import has_click_maps, native_scale_only, resolve_config
    from inference.sam2_net import load_model

    if scale is not None and not scale > 0:
        raise ModelError(f"--scale must be > 0, not {scale}")
    short, cfg_path = resolve_config(config)
    if scale is None and has_click_maps(short):  # inference.teacher.Sam2Segmenter would refuse it at every predict
        raise ModelError(native_scale_only(short))
    size = int(image_size or 1024)
    model = load_model(path, short, image_size=size)  # raises CheckpointError / ModelMismatchError
    params = sum(p.numel() for p in model.parameters())
    del model
    sha = sha256_file(path)
    rel = _copy_into(project, path, "teacher", sha, path.suffix or ".pt")
    return _record(project, "teacher", dict(
        name=name or path.stem, architecture=short, backend="torch", checkpoint_path=rel, sha256=sha,
        params=params, size_bytes=path.stat().st_size, input_size=size,
        meta={"config": cfg_path, "image_size": size, "source": str(path.resolve()),
              "layout": "resize" if scale is None else "native", **({} if scale is None else {"scale": float(scale)})},
    ))


def _add_student(project: Any, path: Path, name: str | None):
    from inference import student as st

    model = st.load_checkpoint(path)  # raises CheckpointError / ModelMismatchError
    summary = st.model_summary(model)
    sha = sha256_file(path)
    rel = _copy_into(project, path, "student", sha, path.suffix or ".pt")
    return _record(project, "student", dict(
        name=name or path.stem, architecture=st.ARCHITECTURE, backend="torch", checkpoint_path=rel, sha256=sha,
        params=summary["params"], size_bytes=path.stat().st_size, input_size=model.config.input_size,
        meta={"config": model.config.to_dict(), "source": str(path.resolve()), "int8_bytes": summary["int8_bytes"]},
    ))


def add_onnx_student(project: Any, encoder: Path | str, decoder: Path | str | None, name: str | None = None):
    """Register an encoder/decoder ONNX pair (backend "onnx"); verified by opening both with ONNX Runtime."""
    from inference.ort_backend import OrtStudentSegmenter

    encoder = Path(encoder)
    if decoder is None:
        raise ModelError("an ONNX student needs both graphs: pass the decoder with --decoder PATH")
    decoder = Path(decoder)
    seg = OrtStudentSegmenter(encoder, decoder, providers=["CPUExecutionProvider"])
    sha_e, sha_d = sha256_file(encoder), sha256_file(decoder)
    sha = hashlib.sha256(f"{sha_e}:{sha_d}".encode()).hexdigest()  # identity of the pair (cache key)
    rel_e = _copy_into(project, encoder, "student", sha_e, "-encoder.onnx")
    rel_d = _copy_into(project, decoder, "student", sha_d, "-decoder.onnx")
    return _record(project, "student", dict(
        name=name or encoder.stem.removesuffix("_encoder"), architecture="tinyvit5m_pointdec", backend="onnx",
        checkpoint_path=rel_e, sha256=sha, params=None,
        size_bytes=encoder.stat().st_size + decoder.stat().st_size, input_size=seg.input_size,
        meta={"decoder_path": rel_d, "encoder_sha256": sha_e, "decoder_sha256": sha_d, "config": seg.config},
    ))


def open_segmenter(
    project: Any, info: ModelInfo, device: str | None = "cpu", precision: str = "fp32",
    providers: list[str] | None = None,
) -> Any:
    """The raw segmenter of a model record (no cache)."""
    path = info.resolve(project)
    if not path.is_file():
        raise ModelError(f"the {info.kind} model file is missing: {path} (re-add it with 'maskbench models add')")
    if info.backend == "onnx":
        from inference.ort_backend import OrtStudentSegmenter, providers_for_device

        dec = info.resolve(project, info.meta.get("decoder_path"))
        return OrtStudentSegmenter(path, dec, providers=providers or providers_for_device(device), name=info.name,
                                   sha256=info.sha256, input_size=info.input_size)
    if info.backend != "torch":
        raise ModelError(f"unknown backend {info.backend!r} for model {info.name}")
    if info.kind == "teacher":
        from inference.teacher import load_teacher_segmenter

        scale = info.meta.get("scale") if info.meta.get("layout") == "native" else None
        return load_teacher_segmenter(path, info.architecture, image_size=info.input_size or 1024, name=info.name,
                                      sha256=info.sha256, device=device, precision=precision,
                                      scale=None if scale is None else float(scale))
    from inference.torch_backend import load_student_segmenter

    return load_student_segmenter(path, name=info.name, sha256=info.sha256, device=device, precision=precision)


def load_segmenter(
    project: Any, kind: str, device: str | None = "cpu", precision: str = "fp32", cache: bool = True,
    providers: list[str] | None = None,
) -> Any:
    """The active segmenter of `kind` (teacher | student) with the project's embedding cache and its record
    (`.info`, `.model_id`)."""
    from inference.cache import CachedSegmenter, EmbeddingCache

    info = active_model(project, kind)
    seg = open_segmenter(project, info, device=device, precision=precision, providers=providers)
    return CachedSegmenter(seg, EmbeddingCache.for_project(project) if cache else None, info=info)
