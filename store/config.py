"""project.yaml: the project's settings, following seed 001's configuration template.

Kept as plain nested dicts merged over defaults, so a hand-edited file with missing keys gets the documented
defaults; the merged result is checked against the typed schema (store.settings_schema) on load, so a misspelled key
or a value of the wrong type is one ConfigError line naming the file and the key instead of a failure later on.
Keys nothing reads (settings_schema.DEPRECATED_KEYS, written by `maskbench init` before issue 17) are dropped with a
log warning.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import yaml

from store import settings_schema
from store.errors import ConfigError

log = logging.getLogger("maskbench.store")

# What `maskbench init` writes; store.settings_schema types every key (and the optional ones training adds).
DEFAULTS: dict[str, Any] = {
    "name": "maskbench project",
    "database_url": None,  # None: the project's maskbench.sqlite; any SQLAlchemy URL (e.g. postgresql://) otherwise
    "distillation": {
        "teacher": {"model": "sam2.1_hiera_s"},
        "student": {"backbone": "efficientnet_b0", "input_size": 512},
        "loss": {"feature_weight": 0.4, "soft_bce_weight": 0.3, "dice_weight": 0.3, "temperature": 2.0},
        "training": {
            "epochs": 150,
            "batch_size": 32,
            "lr": 1e-3,
            "weight_decay": 0.01,
            "grad_clip": 1.0,
            "split": [0.8, 0.1, 0.1],
            "split_seed": 1234,
        },
        "disagreement_threshold": 0.15,
    },
    "hardware": {"target_fps": 30, "calibration_samples": 500},
    "judge": {
        "model": "openai/gpt-4o",
        "fallbacks": ["anthropic/claude-3-5-sonnet-20240620"],
        "api_base": None,
        "budget_usd": 5.0,
        "workers": 4,
        "timeout_s": 60,
        "retries": 2,
        "swap": False,
        "prompt_version": "v2",
        # what the crops show, in the judge's prompt (assets/prompts/judge_v2.txt): the surface and a short
        # description per defect class
        "domain": {"surface": "an industrial surface", "defects": {}},
        "prices": {},  # model -> {"input_per_1k": USD, "output_per_1k": USD}, when LiteLLM does not know the model
    },
    "weights": {
        "student_better_teacher_scale": 0.3,
        "hard_sample_scale": 2.0,
        "vlm_trust": 0.5,
    },
    "embedding_cache": {"max_gb": 4.0},
    # SQLite stores only: a checked snapshot when the newest is older than every_hours (on open; 0: off), keep the
    # newest `keep` (store.integrity)
    "backup": {"every_hours": 24.0, "keep": 7},
}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


__all__ = ["DEFAULTS", "ConfigError", "deep_merge", "load", "save", "threshold"]


def load(path: Path) -> dict[str, Any]:
    """project.yaml merged over DEFAULTS and validated (ConfigError, one line, on a key or value the schema refuses)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    raw, dropped = settings_schema.strip_deprecated(raw)
    if dropped:
        log.warning("%s: ignoring settings nothing reads any more (safe to delete): %s", path, ", ".join(dropped))
    return settings_schema.validate_project(deep_merge(DEFAULTS, raw), str(path))


def save(path: Path, cfg: dict[str, Any]) -> None:
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    tmp.replace(path)


def threshold(cfg: dict[str, Any]) -> float:
    return float(cfg["distillation"]["disagreement_threshold"])
