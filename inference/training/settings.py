"""Resolve a run's settings from the project's YAML (seed 001's `distillation` template) plus CLI overrides.

Keys this package adds to the template (all optional in project.yaml, defaults here):
  distillation.teacher.config / .checkpoint / .image_size / .scale : SAM 2 Hydra config, weights, canvas size, and
      the pixel scale the teacher is fine-tuned at (2.0: it looks at crops twice as close as a scale-1 student)
  distillation.student.mask_stride / .layout / .scale : the 1/2, 1/4 or 1/8 mask head, native or resized crops
  distillation.training.amp / .log_every / .checkpoint_every / .val_every / .val_share / .seed / .augment / .min_lr /
      .warmup / .class_balance / .pos_weight / .ema_decay / .clicks / .compile / .crop_size / .teacher_flip_views
  distillation.finetune_teacher.{lr, epochs, batch_size, train_image_encoder}
  distillation.unet.{epochs, batch_size, lr, width, crop_size} : the plain baseline of the distillation table
  distillation.qat.{epochs, batch_size, lr, lr_scale, checkpoint, observer_warmup, observer_momentum} : the
      quantisation-aware fine-tune of a trained student (lr None: training.lr x lr_scale; checkpoint None: the
      project's active student)
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

from inference.errors import ModelError
from inference.sam2_configs import teacher_config
from store import config as config_mod
from store import settings_schema
from store.errors import UserError

EXTRA_DEFAULTS: dict[str, Any] = {
    "distillation": {
        "teacher": {"config": None, "checkpoint": None, "image_size": 1024, "scale": 1.0},
        "student": {"mask_stride": 2, "layout": "native", "scale": 1.0},
        "training": {
            "amp": True,
            "log_every": 10,
            "checkpoint_every": 10,  # epochs between best.pt / epoch_NNN.pt / last.pt writes (and on stop)
            "val_every": 1,
            "val_share": 0.1,  # validation + checkpoints at most this share of the training time (0: no cap)
            "seed": 0,
            "min_lr": 0.0,
            "warmup": 0.1,  # share of the steps the one-cycle schedule warms up for
            "class_balance": 0.5,  # sampling weight 1 / n_class ** this (0: natural, 1: classes equally often)
            "pos_weight": 3.0,  # defect pixels in the BCE terms
            "ema_decay": 0.999,  # 0: no EMA
            # the soft term's and unlabelled crops' teacher masks averaged over 1, 2 or 4 mirror views (needs dihedral)
            "teacher_flip_views": 1,
            "compile": None,  # a torch.compile mode for the student's encoder and decoder; None: eager
            "crop_size": None,  # the student's random training windows (px, a multiple of 32); None: whole canvases
            # one_click_share: crops whose first prompt is exactly one positive click (the one-click protocol)
            "clicks": {"max_positive": 3, "max_negative": 2, "follow_up": 1, "one_click_share": 0.0},
            "augment": {
                "dihedral": True,  # the 8 flips/rotations (distillation caches the teacher for each)
                # the student's crops move about their canvases in 32 px steps (the teacher's maps move with them)
                "shift": False,
                "exposure": 0.5,  # probability; shift in stops drawn from +-exposure_stops
                "exposure_stops": 0.5,
                "noise": 0.3,
                "noise_sigma": 0.03,
                "blur": 0.2,
                "blur_sigma_max": 1.5,
            },
        },
        "finetune_teacher": {"lr": 1e-4, "epochs": None, "batch_size": 8, "train_image_encoder": True},
        "unet": {"epochs": None, "batch_size": None, "lr": 3e-3, "width": 16, "crop_size": 256},
        # a few epochs at a tenth of distillation's rate: the weights only have to settle into the INT8 grid;
        # the activation observers learn their ranges over the first observer_warmup share of the steps
        "qat": {"epochs": 5, "batch_size": None, "lr": None, "lr_scale": 0.1, "checkpoint": None,
                "observer_warmup": 0.2, "observer_momentum": 0.9},
    }
}


class TrainConfigError(UserError):
    pass


def resolve(project_cfg: dict[str, Any], config_file: Path | None = None) -> dict[str, Any]:
    """The `distillation` section of the project config (+ an optional YAML file laid over it), with defaults."""
    cfg = config_mod.deep_merge(EXTRA_DEFAULTS, {"distillation": project_cfg.get("distillation", {})})
    if config_file is not None:
        import yaml

        path = Path(config_file)
        if not path.is_file():
            raise TrainConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise TrainConfigError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(raw, dict):
            raise TrainConfigError(f"{path}: expected a mapping at the top level")
        # the distillation section alone or a project.yaml-shaped file, checked against store.settings_schema:
        # an unknown key or a wrong type is one ConfigError line naming the file and the key
        raw = settings_schema.validate_overlay(raw, str(path))
        cfg = config_mod.deep_merge(cfg, {"distillation": raw})
    return copy.deepcopy(cfg["distillation"])


def teacher_config_name(dist: dict[str, Any]) -> str:
    """The run's SAM 2 config (inference.sam2_configs.teacher_config), refused as a settings error when unknown."""
    try:
        return teacher_config(dist["teacher"])
    except ModelError:
        model = dist["teacher"].get("model")
        raise TrainConfigError(f"unknown teacher model {model!r}; set distillation.teacher.config to a SAM 2 config") from None


def teacher_from_store(project: Any, dist: dict[str, Any]) -> bool:
    """Use the project's active teacher model (`maskbench models add teacher ...`) when project.yaml names no teacher
    checkpoint, so adding a teacher is all a user does before distilling. Returns whether the store's teacher was
    taken. ONNX teachers cannot be trained against (no gradients needed, but no torch graph either) and are skipped."""
    t = dist["teacher"]
    if t.get("checkpoint"):
        return False
    try:
        from inference.registry import active_model

        info = active_model(project, "teacher")
    except UserError:
        return False
    if info.backend != "torch":
        return False
    t["checkpoint"] = str(info.resolve(project))
    t["config"] = info.architecture
    if info.input_size:
        t["image_size"] = int(info.input_size)
    return True


def data_hash(samples: list[Any], extra: Any = None) -> str:
    """Identity of a run's data: which crops, their split and the verified mask (row id) each one trains on."""
    h = hashlib.sha256()
    for s in sorted(samples, key=lambda x: x.sha256):
        h.update(f"{s.sha256}:{s.split}:{s.target_mask_id}:{s.prompt_points}\n".encode())
    h.update(repr(extra).encode())
    return h.hexdigest()


# Modes: (--mode, --no-feature-loss) -> the run's mode name (TrainingRun.mode). Here, not in the runner, so the
# Training panel reads and writes each mode's schedule without importing torch.
MODE_NAMES = {("distill", False): "distill", ("distill", True): "distill_naive",
              ("finetune-teacher", False): "finetune_teacher", ("unet", False): "unet", ("qat", False): "qat"}
MODES = ("distill", "finetune-teacher", "unet", "qat")


def mode_schedule(mode_name: str, dist_cfg: dict[str, Any]) -> dict[str, Any]:
    """epochs, batch size and learning rate of the mode (teacher fine-tuning and the U-Net have their own)."""
    tcfg = dist_cfg["training"]
    if mode_name == "finetune_teacher":
        ft = dist_cfg["finetune_teacher"]
        return {"epochs": ft.get("epochs") or tcfg["epochs"], "batch_size": ft["batch_size"], "lr": ft["lr"]}
    if mode_name == "unet":
        u = dist_cfg.get("unet") or {}
        return {"epochs": u.get("epochs") or tcfg["epochs"], "batch_size": u.get("batch_size") or tcfg["batch_size"],
                "lr": u.get("lr") or tcfg["lr"]}
    if mode_name == "qat":  # a short fine-tune of trained weights: a fraction of distillation's learning rate
        q = dist_cfg["qat"]
        return {"epochs": q["epochs"], "batch_size": q.get("batch_size") or tcfg["batch_size"],
                "lr": q.get("lr") or float(tcfg["lr"]) * float(q["lr_scale"])}
    return {"epochs": tcfg["epochs"], "batch_size": tcfg["batch_size"], "lr": tcfg["lr"]}


def set_schedule(dist_cfg: dict[str, Any], mode_name: str, key: str, value: float) -> None:
    section = {"finetune_teacher": "finetune_teacher", "unet": "unet", "qat": "qat"}.get(mode_name, "training")
    dist_cfg.setdefault(section, {})[key] = value
