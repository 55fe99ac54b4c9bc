"""The student the exporter exports: an inference.student.StudentModel, loaded as data only (torch imported lazily).

Checkpoints: `inference.student.save_checkpoint`'s format ({"format": "maskbench.student", ...}); the trainer's
best.pt is one. The graphs themselves are inference.export.graph's (merged) and inference.onnx_export's (the
interactive encoder/decoder pair).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store.errors import UserError

if TYPE_CHECKING:
    from inference.student import StudentModel


class StudentLoadError(UserError):
    pass


def describe(student: StudentModel, checkpoint: Path | str | None = None, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = meta or {}
    sha = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest() if checkpoint and Path(checkpoint).is_file() else ""
    from inference.student import ARCHITECTURE

    arch = meta.get("architecture") or ARCHITECTURE
    name = Path(checkpoint).parent.parent.name if checkpoint and Path(checkpoint).parent.name == "checkpoints" else (
        Path(checkpoint).stem if checkpoint else arch)
    return {"name": str(name).replace(" ", "_"), "kind": "student", "architecture": arch,
            "backbone": student.config.backbone, "mask_stride": student.config.mask_stride,
            "checkpoint": str(checkpoint) if checkpoint else None, "sha256": sha,
            "params": int(sum(p.numel() for p in student.parameters())),
            "input_size": int(meta.get("input_size") or student.input_size),
            "model_id": meta.get("model_id"), "training_run_id": meta.get("training_run_id")}


def load_checkpoint(path: Path | str) -> tuple[StudentModel, dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise StudentLoadError(f"checkpoint not found: {path}")
    import torch

    try:
        # weights_only: a checkpoint is data; a pickled nn.Module (arbitrary code on load) is refused below
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise StudentLoadError(f"{path}: holds pickled Python objects (a whole nn.Module?), which maskbench "
                                   "does not load; save {'model': state_dict, 'meta': {...}} instead") from None
        raise StudentLoadError(f"{path}: not a loadable checkpoint ({first[:160]})") from None
    if isinstance(obj, dict) and obj.get("format") == "maskbench.student":
        from inference.student import load_checkpoint as load_student_checkpoint

        try:
            return load_student_checkpoint(path).eval(), {"architecture": obj.get("architecture"),
                                                          **(obj.get("config") or {}), **(obj.get("meta") or {})}
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise StudentLoadError(f"{path}: not a loadable student checkpoint ({exc})") from None
    raise StudentLoadError(f"{path}: not a student checkpoint (a 'maskbench train' run's best.pt is one)")


def load_for_export(project: Any, checkpoint: Path | str | None) -> tuple[StudentModel, dict[str, Any]]:
    """The given checkpoint, or the project's active student (ModelRecord), or its best training run."""
    meta: dict[str, Any] = {}
    if checkpoint is None:
        from sqlalchemy import select

        from store.schema import ModelKind, ModelRecord, TrainingRun

        with project.db.session() as s:
            rec = s.scalars(select(ModelRecord).where(ModelRecord.kind == ModelKind.STUDENT, ModelRecord.active)
                            .order_by(ModelRecord.id.desc())).first()
            if rec is not None:
                checkpoint, meta["model_id"] = rec.checkpoint_path, rec.id
            else:
                run = s.scalars(select(TrainingRun).where(TrainingRun.best_checkpoint.is_not(None),
                                                          TrainingRun.mode.like("distill%") | (TrainingRun.mode == "qat"))
                                .order_by(TrainingRun.id.desc())).first()
                if run is not None:
                    checkpoint, meta["training_run_id"] = run.best_checkpoint, run.id
        if checkpoint is not None and not Path(checkpoint).is_absolute():  # stored relative to the project
            checkpoint = Path(project.root) / checkpoint
        if checkpoint is None:
            raise StudentLoadError("no student to export: pass --checkpoint or train/register a student first")
    model, ck_meta = load_checkpoint(checkpoint)
    return model, describe(model, checkpoint, {**ck_meta, **meta})
