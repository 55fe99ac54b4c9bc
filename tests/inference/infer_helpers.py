"""Helpers shared by the model-layer tests (a uniquely named module: test folders have no __init__.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pick_crops(pairs: list[tuple[Path, Path, str]], per_class: int, offset: int = 0) -> list[tuple[Path, Path, str]]:
    """`per_class` (image, mask, class) of every class, from position `offset` of each class's sorted list."""
    by: dict[str, list[tuple[Path, Path, str]]] = {}
    for p in pairs:
        by.setdefault(p[2], []).append(p)
    out = []
    for cls in sorted(by):
        out += by[cls][offset : offset + per_class]
    return out


def load_crops(pairs: list[tuple[Path, Path, str]]) -> list[tuple[np.ndarray, np.ndarray, str]]:
    from store.images import load_image, load_mask

    return [(load_image(i), load_mask(m), c) for i, m, c in pairs]
