"""The typed schema of project.yaml (pydantic): every section and key a project may set, with its type and default.

project.yaml stays a plain nested dict for the code that reads it (store.config.load merges the file over
store.config.DEFAULTS, then validates the result here and hands back the same dict shape with values coerced to
their types: `lr: 1e-4`, a string to YAML, comes back as the float 0.0001). What the schema adds is the refusal, at
open time, of a file the code would misread: an unknown (misspelled) key, or a value of the wrong type, is one
ConfigError line naming the file and the key path, with the closest valid key for a misspelling:

    project.yaml: unknown key distillation.training.batch_sise (did you mean distillation.training.batch_size?)
    project.yaml: distillation.training.lr must be a number, got 'banana'

Defaults here equal store.config.DEFAULTS (what `maskbench init` writes) and, for the keys training adds,
inference.training.settings.EXTRA_DEFAULTS (tests/store/test_settings_schema.py checks both). A section the code
tolerates as empty (`judge:`, `backup:`, `unet:`, `augment:`) may be null; one it indexes into may not.

Not typed here: `weights` (a mapping of names to numbers). review.weights.WeightPolicy validates it when weights are
computed, with its own one-line errors (`project.yaml weights: unknown key 'vlm_trst' (did you mean 'vlm_trust'?)`);
the store cannot import review.

Keys nothing reads any more (DEPRECATED_KEYS): `maskbench init` wrote seed 001's into every project.yaml before
issue 17, and training read a few more before issue 14's rewrite, so they are accepted, dropped from the loaded
settings and named in a log warning instead of failing the open.
"""

from __future__ import annotations

import copy
import difflib
import logging
import re
import types
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from store.errors import ConfigError

log = logging.getLogger("maskbench.store")


def _number_to_text(v: Any) -> Any:
    # YAML reads `name: 2024` or `model: 5` as numbers; text fields take them as written
    return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


Text = Annotated[str, BeforeValidator(_number_to_text)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------------------------------
# distillation


class TeacherSettings(Section):
    model: Text = "sam2.1_hiera_s"  # a name of inference.sam2_configs (or a SAM 2 config .yaml)
    config: Optional[Text] = None  # SAM 2 Hydra config; wins over model
    checkpoint: Optional[Text] = None  # None: the project's active teacher (maskbench models add teacher ...)
    image_size: int = 1024
    scale: float = 1.0


class StudentSettings(Section):
    """The fields of inference.student.StudentConfig (StudentConfig.from_project reads these)."""

    backbone: Text = "efficientnet_b0"
    input_size: int = 512
    window_sizes: list[int] = Field(default_factory=list)
    embed_dim: int = 256
    high_res_dim: int = 64
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    decoder_mlp_dim: int = 512
    upscale_dim: int = 32
    num_multimask_outputs: int = 0
    mask_stride: int = 2
    click_sigma: float = 1.5
    refine_blocks: int = Field(0, ge=0)
    context_blocks: Optional[int] = Field(None, ge=0)  # null: 4 for heads 2 and 4, 0 for the 1/8 head
    layout: Text = "native"
    scale: float = 1.0


class LossSettings(Section):
    feature_weight: float = 0.4
    soft_bce_weight: float = 0.3
    dice_weight: float = 0.3
    temperature: float = 2.0


class ClickSettings(Section):
    max_positive: int = 3
    max_negative: int = 2
    follow_up: int = 1
    one_click_share: float = Field(0.0, ge=0.0, le=1.0)


class AugmentSettings(Section):
    dihedral: bool = True
    shift: bool = False
    exposure: float = 0.5
    exposure_stops: float = 0.5
    noise: float = 0.3
    noise_sigma: float = 0.03
    blur: float = 0.2
    blur_sigma_max: float = 1.5


def _off_is_none(v: Any) -> Any:
    return None if v is False else v  # `augment: false`: no augmentation, as null


class TrainingSettings(Section):
    epochs: int = 150
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    grad_clip: Optional[float] = 1.0  # 0 or null: no clipping
    split: list[float] = Field(default_factory=lambda: [0.8, 0.1, 0.1])
    split_seed: int = 1234
    amp: bool = True
    log_every: int = 10
    checkpoint_every: int = 10
    val_every: int = 1
    # validation + checkpoint seconds at most this share of the training seconds: an epoch end that val_every calls
    # for is skipped while one more validation would pass it (the last epoch and a stop always validate); 0: no cap
    val_share: float = Field(default=0.1, ge=0.0, le=1.0)
    seed: int = 0
    min_lr: Optional[float] = 0.0
    warmup: float = 0.1
    class_balance: float = 0.5
    pos_weight: float = 3.0
    ema_decay: float = 0.999
    clicks: Optional[ClickSettings] = Field(default_factory=ClickSettings)
    augment: Optional[AugmentSettings] = Field(default_factory=AugmentSettings)
    device: Optional[Text] = None  # the Training panel's device choice (cpu, cuda)
    time_budget_s: Optional[float] = None  # > 0: the schedule runs on wall time (bench scripts)
    # torch.compile of the student's encoder and decoder in distillation runs, a torch.compile mode;
    # null: eager. Costs a compile at the start of a run (and of a resume); see docs/benchmarks.md for what it gains.
    # No CUDA-graph modes (reduce-overhead): not measured here, and their outputs live in buffers that a later replay
    # overwrites while a step still holds them (the decoder runs twice per step)
    compile: Optional[Literal["default", "max-autotune-no-cudagraphs"]] = None
    # distillation: the teacher's masks (soft term, unlabelled crops' follow-up target) averaged over the view and its
    # 1 or 3 mirrors, like `predict --flip-views`; decoder calls only (the mirrors are cached dihedral views)
    teacher_flip_views: Literal[1, 2, 4] = 1
    # The side of the random windows a student (distill, qat) trains on, in crop pixels, a multiple of 32 up to
    # student.input_size; null: the whole canvas. Validation and prediction keep whole canvases. The U-Net baseline's
    # windows are unet.crop_size.
    crop_size: Optional[int] = Field(default=None, ge=32, multiple_of=32)

    @field_validator("clicks", "augment", mode="before")
    @classmethod
    def off_is_none(cls, v: Any) -> Any:
        return _off_is_none(v)


class FinetuneTeacherSettings(Section):
    lr: float = 1e-4
    epochs: Optional[int] = None  # None: training.epochs
    batch_size: int = 8
    train_image_encoder: bool = True
    clicks: Optional[ClickSettings] = None  # None: training.clicks
    augment: Optional[AugmentSettings] = None  # None: training.augment

    @field_validator("clicks", "augment", mode="before")
    @classmethod
    def off_is_none(cls, v: Any) -> Any:
        return _off_is_none(v)


class UNetSettings(Section):
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = 3e-3
    width: int = 16
    crop_size: int = 256


class QATSettings(Section):
    epochs: int = 5
    batch_size: Optional[int] = None
    lr: Optional[float] = None  # None: training.lr x lr_scale
    lr_scale: float = 0.1
    checkpoint: Optional[Text] = None  # None: the project's active student
    observer_warmup: float = 0.2
    observer_momentum: float = 0.9


class DistillationSettings(Section):
    teacher: TeacherSettings = Field(default_factory=TeacherSettings)
    student: StudentSettings = Field(default_factory=StudentSettings)
    loss: LossSettings = Field(default_factory=LossSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    disagreement_threshold: float = 0.15
    finetune_teacher: FinetuneTeacherSettings = Field(default_factory=FinetuneTeacherSettings)
    unet: Optional[UNetSettings] = Field(default_factory=UNetSettings)
    qat: QATSettings = Field(default_factory=QATSettings)


# --------------------------------------------------------------------------------------------------------------------
# the other sections


class HardwareSettings(Section):
    target_fps: Optional[float] = 30  # null: 30
    calibration_samples: int = 500


class DomainSettings(Section):
    surface: Text = "an industrial surface"
    defects: dict[str, Text] = Field(default_factory=dict)  # defect class -> short description


class JudgeSettingsSchema(Section):
    """The fields of review.judge.JudgeSettings (JudgeSettings.from_config reads these)."""

    model: Optional[Text] = "openai/gpt-4o"  # null: --model on the command line
    fallbacks: Optional[list[Text]] = Field(default_factory=lambda: ["anthropic/claude-3-5-sonnet-20240620"])
    api_base: Optional[Text] = None
    api_bases: Optional[dict[str, Text]] = None
    budget_usd: float = 5.0
    key_budget_usd: Optional[float] = None
    workers: int = 4
    timeout_s: float = 60
    retries: int = 2
    swap: bool = False
    prompt_version: Text = "v2"
    domain: DomainSettings = Field(default_factory=DomainSettings)
    prices: Optional[dict[str, dict[str, float]]] = Field(default_factory=dict)
    max_tokens: int = 300
    max_prompt_tokens: Optional[int] = None
    max_image_side: int = 768
    order_seed: int = 0
    temperature: float = 0.0
    max_consecutive_errors: int = 10
    cooldown_s: float = 0.0


class EmbeddingCacheSettings(Section):
    max_gb: float = 4.0


class BackupSettings(Section):
    every_hours: float = 24.0
    keep: int = 7


class ProjectSettings(Section):
    name: Optional[Text] = "maskbench project"
    database_url: Optional[Text] = None
    distillation: DistillationSettings = Field(default_factory=DistillationSettings)
    hardware: HardwareSettings = Field(default_factory=HardwareSettings)
    judge: Optional[JudgeSettingsSchema] = Field(default_factory=JudgeSettingsSchema)
    weights: Optional[dict[str, Any]] = Field(default_factory=lambda: {
        "student_better_teacher_scale": 0.3, "hard_sample_scale": 2.0, "vlm_trust": 0.5})
    embedding_cache: EmbeddingCacheSettings = Field(default_factory=EmbeddingCacheSettings)
    backup: Optional[BackupSettings] = Field(default_factory=BackupSettings)  # null: no scheduled backups


# --------------------------------------------------------------------------------------------------------------------
# keys nothing reads (written by `maskbench init` before issue 17): accepted, dropped, named in a warning

DEPRECATED_KEYS: dict[str, str] = {
    "judge.trust": "the weights use weights.vlm_trust",
    "distillation.vlm_review": "VLM verdicts count whenever `maskbench review judge` has run (weights.vlm_trust 0: off)",
    "distillation.teacher.freeze": "distillation never trains the teacher; --mode finetune-teacher does",
    "distillation.teacher.precision": "the teacher runs in the training run's AMP precision (training.amp)",
    "distillation.student.decoder_upsample": "the mask head is set by distillation.student.mask_stride (2, 4 or 8)",
    "distillation.student.prompt_encoder": "the student's prompt encoder is fixed (dense click maps)",
    "distillation.student.quantization": "export precisions are chosen by `maskbench export --precision`",
    "distillation.training.scheduler": "the schedule is one-cycle (training.warmup, training.min_lr)",
    "distillation.training.points_per_sample": "clicks per sample are distillation.training.clicks",
    "hardware.target": "benchmark targets are named by `maskbench bench-remote --target`",
    # training settings of the data loader before issue 14's rewrite (crops now sit in memory on the device)
    "distillation.training.num_workers": "crops are decoded once onto the training device",
    "distillation.training.prompt_seed": "clicks follow training.seed",
    "distillation.training.augment.hflip": "flips and rotations are training.augment.dihedral",
    "distillation.training.augment.vflip": "flips and rotations are training.augment.dihedral",
    "distillation.training.augment.rot90": "flips and rotations are training.augment.dihedral",
    "distillation.training.augment.motion_blur": "blur is training.augment.blur",
    "distillation.training.augment.motion_blur_max": "blur is training.augment.blur_sigma_max",
}


def strip_deprecated(raw: dict[str, Any], base: tuple[str, ...] = ()) -> tuple[dict[str, Any], list[str]]:
    """(raw without the DEPRECATED_KEYS it has, their paths). `base`: where raw sits in project.yaml (an overlay file
    holding the distillation section alone has base ("distillation",)); paths come back relative to raw."""
    out = copy.deepcopy(raw)
    found: list[str] = []
    for dotted in DEPRECATED_KEYS:
        path = tuple(dotted.split("."))
        if path[:len(base)] != base or len(path) == len(base):
            continue
        rel = path[len(base):]
        node: Any = out
        for part in rel[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and rel[-1] in node:
            del node[rel[-1]]
            found.append(".".join(rel))
    return out, found


# --------------------------------------------------------------------------------------------------------------------
# validation and its one-line messages


def validate_project(cfg: dict[str, Any], source: str) -> dict[str, Any]:
    """The merged project settings, checked against ProjectSettings, as the same dict shape with coerced values.
    Raises ConfigError (one line, prefixed with `source`)."""
    return _validate(ProjectSettings, cfg, source, "")


def validate_overlay(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """A `maskbench train --config` file: either the distillation section itself or a project.yaml-shaped mapping
    with a `distillation:` key (its other sections are checked, then ignored). Returns the distillation keys the file
    sets (coerced), for laying over the project's."""
    if "distillation" in raw:
        raw, dropped = strip_deprecated(raw)
        _warn_deprecated(source, dropped)
        return _validate(ProjectSettings, raw, source, "").get("distillation") or {}
    raw, dropped = strip_deprecated(raw, ("distillation",))
    _warn_deprecated(source, dropped)
    return _validate(DistillationSettings, raw, source, "")


def _warn_deprecated(source: str, dropped: list[str]) -> None:
    if dropped:
        log.warning("%s: ignoring settings nothing reads any more (safe to delete): %s", source, ", ".join(dropped))


def _validate(model: type[BaseModel], data: Any, source: str, prefix: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return model.model_validate(data).model_dump(exclude_unset=True)
    except ValidationError as exc:
        raise ConfigError(error_line(exc, source, model, prefix)) from None


_EXPECTED = {"float": "a number", "int": "an integer", "bool": "true or false", "string": "text", "list": "a list",
             "tuple": "a list", "dict": "a mapping", "model": "a mapping", "none": "empty (null)"}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def error_line(exc: ValidationError, source: str, model: type[BaseModel], prefix: str = "") -> str:
    """The first error of `exc` as one line: `SOURCE: unknown key A.B (did you mean A.C?)` or
    `SOURCE: A.B must be a number, got 'banana'`."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    key = key_path(loc, prefix)
    if err["type"] == "extra_forbidden":
        hint = _suggest(model, loc, prefix)
        return f"{source}: unknown key {key} ({hint})"
    kind = err["type"]
    expected = "an integer" if kind == "int_from_float" else _EXPECTED.get(kind.split("_")[0])
    if expected is not None and (kind.endswith(("_type", "_parsing")) or kind == "int_from_float"):
        return f"{source}: {key} must be {expected}, got {_show(err.get('input'))}"
    msg = str(err.get("msg", "invalid value"))
    return f"{source}: {key}: {msg[:1].lower() + msg[1:]}, got {_show(err.get('input'))}"


def key_path(loc: tuple[Any, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.match(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{str(part)!r}]"
    return out


def _show(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The section model inside an annotation (Optional[X], X | None), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None or part not in current.model_fields:
            return None
        current = _model_of(current.model_fields[part].annotation)
    return current


def _paths(model: type[BaseModel], base: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        out.append((*base, name))
        sub = _model_of(info.annotation)
        if sub is not None:
            out.extend(_paths(sub, (*base, name)))
    return out


def _suggest(model: type[BaseModel], loc: tuple[Any, ...], prefix: str) -> str:
    bad, parent_loc = str(loc[-1]), loc[:-1]
    parent = _model_at(model, parent_loc)
    siblings = list(parent.model_fields) if parent is not None else []
    close = difflib.get_close_matches(bad, siblings, n=1)
    if close:
        return f"did you mean {key_path((*parent_loc, close[0]), prefix)}?"
    # the right name in another section (`distillation.lr` for distillation.training.lr)
    scored = []
    for path in _paths(model):
        ratio = difflib.SequenceMatcher(None, bad, path[-1]).ratio()
        if ratio >= 0.8 and path[:-1] != parent_loc:
            shared = next((i for i, (a, b) in enumerate(zip(path, parent_loc)) if a != b), min(len(path), len(parent_loc)))
            scored.append((-ratio, -shared, len(path), path))
    if scored:
        best = min(scored, key=lambda s: s[:3])  # min is stable: declaration order breaks ties
        return f"did you mean {key_path(best[3], prefix)}?"
    if siblings:
        where = key_path(parent_loc, prefix)
        return f"valid keys in {where}: {', '.join(siblings)}" if where else f"valid keys: {', '.join(siblings)}"
    return "not a setting"
