"""Per-sample loss weights from the review core (review.weights, helper B), normalised to (feat, soft, dice).

Accepts what `review.weights.sample_weights(project)` returns: {sample_id: entry} where entry is a mapping or an
object with feature/soft/dice weights (several spellings accepted) and optionally `hard`. Missing review module or
missing samples: weight 1.0 for every term.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

log = logging.getLogger("maskbench.training")

_NAMES = {
    "feat": ("feat", "feature", "w_feat", "feature_weight", "feat_weight", "w_feature"),
    "soft": ("soft", "soft_bce", "w_soft", "soft_weight", "soft_bce_weight", "teacher", "w_teacher"),
    "dice": ("dice", "w_dice", "dice_weight", "gt", "w_gt"),
}


def _get(entry: Any, names: tuple[str, ...]) -> float | None:
    for n in names:
        if isinstance(entry, dict) and n in entry:
            return float(entry[n])
        if not isinstance(entry, dict) and hasattr(entry, n):
            return float(getattr(entry, n))
    return None


def normalise(raw: dict[int, Any]) -> dict[int, tuple[float, float, float]]:
    out: dict[int, tuple[float, float, float]] = {}
    for sid, entry in raw.items():
        if isinstance(entry, (int, float)):
            out[int(sid)] = (float(entry),) * 3
            continue
        if isinstance(entry, (tuple, list)) and len(entry) >= 3:
            out[int(sid)] = (float(entry[0]), float(entry[1]), float(entry[2]))
            continue
        vals = [_get(entry, _NAMES[k]) for k in ("feat", "soft", "dice")]
        out[int(sid)] = tuple(1.0 if v is None else v for v in vals)  # type: ignore[assignment]
    return out


def review_weights(project: Any) -> tuple[dict[int, tuple[float, float, float]], str]:
    """(weights, source) where source says where they came from ("review.weights" or "uniform")."""
    try:
        mod = importlib.import_module("review.weights")
    except ImportError:
        return {}, "uniform"
    fn = getattr(mod, "sample_weights", None)
    if fn is None:
        return {}, "uniform"
    try:
        raw = fn(project)
    except Exception as exc:  # noqa: BLE001 - training goes on with uniform weights, the log says why
        log.warning("review.weights.sample_weights failed, using uniform weights: %s", exc)
        return {}, "uniform"
    return normalise(dict(raw or {})), "review.weights"
