"""Make a run's best checkpoint a project model, through the model registry (inference.registry.add_model):
a distilled student becomes the active student, a fine-tuned SAM 2 the active teacher. The TrainingRun row is
linked to the model record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from store.errors import UserError


def _link(project: Any, training_run_id: int | None, model_id: int) -> None:
    if training_run_id is None:
        return
    from store.schema import TrainingRun

    with project.db.session() as s:
        row = s.get(TrainingRun, training_run_id)
        if row is not None:
            row.model_id = model_id


def register_student_checkpoint(project: Any, path: Path, name: str | None = None,
                                training_run_id: int | None = None) -> int:
    from inference.registry import add_model

    try:
        info, _ = add_model(project, "student", path, name=name)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - the registry's own errors are UserErrors; anything else, one line
        raise UserError(f"cannot register {path}: {exc}") from None
    _link(project, training_run_id, info.id)
    return info.id


def register_teacher_checkpoint(project: Any, run_dir: Path, name: str | None = None,
                                training_run_id: int | None = None) -> int:
    """A finetune-teacher run's teacher.pt (official {"model": state_dict}) as the active teacher, at the pixel scale
    it was trained at."""
    import yaml

    from inference.registry import add_model

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["distillation"]
    from inference.training.settings import teacher_config_name

    config = teacher_config_name(cfg)
    short = Path(config).stem  # registry names configs by their short name (sam2.1_hiera_s)
    # runs fine-tune at native pixel scale (the run's teacher.scale): predict the way the teacher learned
    info, _ = add_model(project, "teacher", run_dir / "teacher.pt", config=short, name=name or run_dir.name,
                        image_size=int(cfg["teacher"].get("image_size", 1024)),
                        scale=float(cfg["teacher"].get("scale", 1.0)))
    _link(project, training_run_id, info.id)
    return info.id
