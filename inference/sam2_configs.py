"""The one table of SAM 2 configurations, for the registry (inference.registry), prediction (inference.teacher),
training (inference.training) and export (inference.export): short names (sam2.1_hiera_s) -> the sam2 package's own
Hydra configs, and the derived configs, each one of those plus overrides. inference.sam2_net builds the model.

Derived configs are one of the package's configs plus Hydra overrides:
* "sam2.1_hiera_demo" is the teacher of the shipped demo models (assets/demo_models): SAM 2.1's architecture (Hiera
  trunk, FPN neck, prompt encoder, two-way mask decoder, memory modules) at a reduced size so that it trains on the
  synthetic demo crops in minutes and ships in a few MB. It is NOT SA-1B-pretrained SAM 2; replace it with an
  official checkpoint (`maskbench models download sam2.1_hiera_small --project P`).
* "sam2.1_resnet50d" is SAM 2.1 with a convolutional trunk (timm's ResNet-50-D, random init; inference.sam2_trunks)
  in place of Hiera: the teacher to train from scratch where the official weights cannot be had. Hiera from random
  weights does not learn from a few hundred crops; everything after the trunk is the package's SAM 2.1.
* "sam2.1_resnet50d_clicks" is that teacher with Gaussian maps of the clicks added where the decoder reads image
  features (CLICK_MAP_CONFIGS; inference.sam2_net.ClickMaps). SAM's decoder finds the clicked object through its
  prompt tokens' attention alone, which SA-1B teaches; from random weights on a few hundred crops it predicted a
  mask of the whole crop for its first ~110 s (docs/benchmarks.md). The student and the U-Net, which both learn,
  see their clicks as maps.

No torch or sam2 import here: the station install reads this module too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from inference.errors import ModelError

# Short names accepted by --config and distillation.teacher.model/config -> the package's Hydra config path.
PACKAGE_CONFIGS = {
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_t": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_b+": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_l": "configs/sam2/sam2_hiera_l.yaml",
}
SIZE_ALIASES = {"tiny": "t", "small": "s", "base_plus": "b+", "base+": "b+", "large": "l"}
# seed 001's project template called the default teacher this
NAME_ALIASES = {"sam2_small": "sam2.1_hiera_s"}

# short name -> (the package's Hydra config, overrides laid over it)
DERIVED_CONFIGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sam2.1_hiera_demo": (
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        (
            "++model.image_encoder.trunk.embed_dim=32",
            "++model.image_encoder.trunk.stages=[1,1,2,1]",
            "++model.image_encoder.trunk.global_att_blocks=[3]",
            "++model.image_encoder.neck.backbone_channel_list=[256,128,64,32]",
            "++model.memory_attention.num_layers=1",
            "++model.memory_attention.layer.dim_feedforward=256",
        ),
    ),
    "sam2.1_resnet50d": (
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        (
            "~model.image_encoder.trunk",
            "+model.image_encoder.trunk._target_=inference.sam2_trunks.TimmTrunk",
            "+model.image_encoder.trunk.backbone=resnet50d",
            "++model.image_encoder.neck.backbone_channel_list=[2048,1024,512,256]",  # the trunk's, checked by sam2
        ),
    ),
}
DERIVED_CONFIGS["sam2.1_resnet50d_clicks"] = DERIVED_CONFIGS["sam2.1_resnet50d"]
# configs whose mask decoder also reads click maps: built with inference.sam2_net.ClickMaps, whose weights are part
# of the checkpoint (so the package's own SAM2ImagePredictor, which never feeds them, cannot run such a model)
CLICK_MAP_CONFIGS = frozenset({"sam2.1_resnet50d_clicks"})
# configs with inference.sam2_trunks' convolutional trunk: the ones that learn from random weights
CONVOLUTIONAL_CONFIGS = frozenset({"sam2.1_resnet50d", "sam2.1_resnet50d_clicks"})


# the teacher to train from random weights where the official ones cannot be had (docs/benchmarks.md: on one H100,
# 260 s beside the plain ResNet-50-D config, validation IoU 0.496 against 0.285 and test mIoU@1 0.481 against 0.248
# on magnetic-tile; Hiera-T from random weights stays near 0.1)
SCRATCH_TEACHER = "sam2.1_resnet50d_clicks"

# every config a teacher can be built from: short name -> the package's Hydra config (a derived one's base)
CONFIGS: dict[str, str] = {**PACKAGE_CONFIGS, **{k: v[0] for k, v in DERIVED_CONFIGS.items()}}


def short_name(name: str) -> str:
    """'sam2.1_hiera_demo', 'sam2.1_hiera_demo.yaml' or a path ending in it -> 'sam2.1_hiera_demo'."""
    return Path(str(name).strip()).name.removesuffix(".yaml")


def resolve_config(name: str) -> tuple[str, str]:
    """'sam2.1_hiera_s', 'sam2.1_hiera_small', 'sam2.1/sam2.1_hiera_s.yaml' or 'configs/sam2.1/...yaml' ->
    (short name, Hydra config path)."""
    stem = short_name(name)
    stem = NAME_ALIASES.get(stem, stem)
    if stem in DERIVED_CONFIGS:
        return stem, CONFIGS[stem]
    m = re.fullmatch(r"(sam2(?:\.1)?)_hiera_([a-z_+]+)", stem)
    if m:
        size = SIZE_ALIASES.get(m.group(2), m.group(2))
        short = f"{m.group(1)}_hiera_{size}"
        if short in CONFIGS:
            return short, CONFIGS[short]
    known = ", ".join(k for k in CONFIGS if k.startswith("sam2.1"))
    raise ModelError(f"unknown SAM 2 config {name!r}; use one of {known} (or the sam2_hiera_* ones)")


def has_click_maps(name: str) -> bool:
    """Whether a config's mask decoder reads click maps (CLICK_MAP_CONFIGS; derived configs have no aliases)."""
    return short_name(name) in CLICK_MAP_CONFIGS


def native_scale_only(name: str) -> str:
    """The one-line refusal of a click-map config (`name`) where SAM's resize-to-square predictor would run it."""
    return (f"SAM 2 config {name} reads click maps, which SAM's resize-to-square predictor never feeds: it was "
            "trained here at native pixel scale; add it with --scale (1 unless it was trained at another)")


def hydra_config(name: str) -> tuple[str, list[str]]:
    """(Hydra config path, overrides) to pass to sam2's build_sam2. A name of the table resolves (a derived one to
    its base config plus overrides); a .yaml path outside it is passed on unchanged (a config of the user's own)."""
    try:
        short, path = resolve_config(name)
    except ModelError:
        if str(name).strip().endswith(".yaml"):
            return str(name).strip(), []
        raise
    return path, list(DERIVED_CONFIGS[short][1]) if short in DERIVED_CONFIGS else []


def teacher_config(teacher: dict[str, Any]) -> str:
    """The SAM 2 config a `distillation.teacher` section names: its `config`, else its `model` (seed 001's template
    key, default sam2.1_hiera_s) as the package's Hydra config path, a derived config as '<short name>.yaml'.
    Raises ModelError for a name not in the table."""
    if teacher.get("config"):
        return str(teacher["config"])
    model = str(teacher.get("model", "sam2.1_hiera_s"))
    if model.endswith(".yaml"):
        return model
    short, path = resolve_config(model)
    return f"{short}.yaml" if short in DERIVED_CONFIGS else path
