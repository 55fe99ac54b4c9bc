"""Binary masks <-> COCO RLE, through pycocotools, so exports are readable by any COCO tool."""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def encode(mask: np.ndarray) -> dict[str, Any]:
    """Encode a HxW boolean/uint8 mask as JSON-ready compressed RLE ({"size": [h, w], "counts": str})."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8, copy=False)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode(rle: dict[str, Any]) -> np.ndarray:
    """Decode compressed or uncompressed RLE to a HxW bool array."""
    obj = dict(rle)
    counts = obj["counts"]
    if isinstance(counts, list):  # uncompressed RLE as found in COCO files
        obj = mask_utils.frPyObjects(obj, obj["size"][0], obj["size"][1])
    elif isinstance(counts, str):
        obj["counts"] = counts.encode("ascii")
    return mask_utils.decode(obj).astype(bool)


def area(rle: dict[str, Any]) -> int:
    obj = dict(rle)
    if isinstance(obj["counts"], str):
        obj["counts"] = obj["counts"].encode("ascii")
    return int(mask_utils.area(obj))


def from_polygons(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons (list of flat [x1, y1, x2, y2, ...] lists) to a HxW bool mask."""
    rles = mask_utils.frPyObjects(polygons, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
