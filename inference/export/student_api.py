"""How the exporter calls a student, whichever implementation it is (torch imported lazily).

Supported, in this order:
* the runtime contract of `inference.runtime` (helper A's student): `encode(x_normalised) -> {"image_embed",
  "high_res"}` (or a tuple) and `decode(image_embed, high_res, coords, labels) -> (masks (B,K,h,w), scores (B,K))`;
* a module whose `forward(images01, points, labels)` returns `(masks, scores)` or `(embedding, masks)` (then the
  score is the mask's peak probability).

Checkpoints: `inference.student.save_checkpoint`'s format ({"format": "maskbench.student", ...}); the trainer's
best.pt is one.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from typing import Any

from inference.export.calibration import IMAGENET_MEAN, IMAGENET_STD
from store.errors import UserError


class StudentLoadError(UserError):
    pass


def unwrap(student: Any) -> Any:
    """The trainer's wrapper (StudentForTraining) -> the StudentModel inside."""
    inner = getattr(student, "student", None)
    return inner if inner is not None and callable(getattr(inner, "encode", None)) else student


def forward_pixels(student: Any, image: Any, coords: Any, labels: Any) -> tuple[Any, Any]:
    """image (B,3,S,S) float in [0,255] -> (masks (B,K,h,w), scores (B,K))."""
    import torch

    student = unwrap(student)
    if callable(getattr(student, "encode", None)):
        mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=image.dtype).view(1, 3, 1, 1)
        feats = student.encode((image - mean) / std)
        emb, hi = (feats["image_embed"], feats["high_res"]) if isinstance(feats, dict) else (feats[0], feats[1])
        decode = getattr(student, "decode", None) or student.decoder
        return decode(emb, hi, coords, labels)
    out = student(image / 255.0, coords, labels)
    if len(out) == 3:  # (embedding, masks, scores)
        return out[1], out[2]
    a, b = out[0], out[1]
    if b.dim() == 2:  # (masks, scores)
        return a, b
    # (embedding, masks): no score head; the score is the mask's peak probability
    return b, torch.sigmoid(b.flatten(2)).amax(dim=2)


def select_mask(masks: Any, scores: Any, labels: Any) -> tuple[Any, Any]:
    """In-graph version of inference.preprocess.choose_mask: one real click and K > 1 -> best of outputs 1..K-1,
    otherwise output 0. Returns (B, 1, h, w), (B, 1)."""
    import torch

    k = masks.shape[1]
    if k == 1:
        return masks, scores
    n_real = (labels >= 0).sum(dim=1)
    best = torch.argmax(scores[:, 1:], dim=1) + 1
    idx = torch.where(n_real == 1, best, torch.zeros_like(best))
    b = torch.arange(masks.shape[0])
    return masks[b, idx].unsqueeze(1), scores[b, idx].unsqueeze(1)


def input_size(student: Any, default: int = 512) -> int:
    return int(getattr(unwrap(student), "input_size", default) or default)


def describe(student: Any, checkpoint: Path | str | None = None, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = meta or {}
    sha = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest() if checkpoint and Path(checkpoint).is_file() else ""
    arch = meta.get("architecture") or getattr(importlib.import_module(type(unwrap(student)).__module__),
                                               "ARCHITECTURE", type(unwrap(student)).__name__)
    name = Path(checkpoint).parent.parent.name if checkpoint and Path(checkpoint).parent.name == "checkpoints" else (
        Path(checkpoint).stem if checkpoint else arch)
    return {"name": str(name).replace(" ", "_"), "kind": "student", "architecture": arch,
            "checkpoint": str(checkpoint) if checkpoint else None, "sha256": sha,
            "params": int(sum(p.numel() for p in student.parameters())),
            "input_size": int(meta.get("input_size") or input_size(student)),
            "model_id": meta.get("model_id"), "training_run_id": meta.get("training_run_id")}


def load_checkpoint(path: Path | str) -> tuple[Any, dict[str, Any]]:
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


def load_for_export(project: Any, checkpoint: Path | str | None) -> tuple[Any, dict[str, Any]]:
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


def export_split(student: Any, out_dir: Path, size: int) -> list[tuple[str, Path]]:
    """The interactive encoder/decoder pair, written by helper A's `inference.onnx_export` when it is there."""
    try:
        mod = importlib.import_module("inference.onnx_export")
    except ImportError:
        return []
    for fn_name in ("export_student_pair", "export_student", "export_split"):
        fn = getattr(mod, fn_name, None)
        if fn is None:
            continue
        res = fn(student, out_dir, size) if fn_name != "export_student" else fn(student, out_dir)
        if isinstance(res, dict):
            return [(k, Path(v)) for k, v in res.items() if k in ("encoder", "decoder")]
        enc, dec = res
        return [("encoder", Path(enc)), ("decoder", Path(dec))]
    return []
