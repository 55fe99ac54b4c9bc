"""Reduced SAM 2 configurations, named in one place for the registry (inference.teacher), training
(inference.training) and export: each is one of the sam2 package's own Hydra configs plus overrides.

"sam2.1_hiera_demo" is the teacher of the shipped demo models (assets/demo_models): SAM 2.1's architecture (Hiera
trunk, FPN neck, prompt encoder, two-way mask decoder, memory modules) at a reduced size so that it trains on the
synthetic demo crops in minutes and ships in a few MB. It is NOT SA-1B-pretrained SAM 2; replace it with an official
checkpoint (`maskbench models download sam2.1_hiera_small --project P`).

No torch or sam2 import here: the station install reads this module too.
"""

from __future__ import annotations

from pathlib import Path

# short name -> (the package's Hydra config, overrides laid over it)
REDUCED_CONFIGS: dict[str, tuple[str, tuple[str, ...]]] = {
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
}


def short_name(name: str) -> str:
    """'sam2.1_hiera_demo', 'sam2.1_hiera_demo.yaml' or a path ending in it -> 'sam2.1_hiera_demo'."""
    return Path(str(name).strip()).name.removesuffix(".yaml")


def is_reduced(name: str | None) -> bool:
    return bool(name) and short_name(str(name)) in REDUCED_CONFIGS


def hydra_config(name: str) -> tuple[str, list[str]]:
    """(Hydra config path, overrides) to pass to sam2's build_sam2; a non-reduced name comes back unchanged."""
    if is_reduced(name):
        path, overrides = REDUCED_CONFIGS[short_name(name)]
        return path, list(overrides)
    return name, []
