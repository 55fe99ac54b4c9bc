"""Native pixel scale: how a crop of any size becomes fixed-size model canvases and how masks come back.

Why not resize every crop to a square (SAM's convention, and this project's until issue 14): a 2 px crack in a
600 px crop resized to 512 and predicted at 1/8 is a quarter of a logit wide, and every crop gets a different
pixel scale, so the model never learns what a defect of a given size looks like. Here a crop keeps its own pixels
(or a fixed `scale`, e.g. 2.0 for a teacher that looks closer): it is placed at the top-left of an S x S canvas and
the rest is padded with the mean colour (zero after normalisation); a crop larger than S is covered by overlapping
S x S tiles. Training builds its canvases the same way (inference.training.canvas), so the model sees at training
time exactly the geometry it sees at prediction time.

Prompts: a click belongs to the tiles that contain it. A tile is decoded when it holds at least one positive click
(or, for a prompt of negative clicks only, any click); each decoded tile sees only its own clicks, in its own
coordinates. Logits of decoded tiles are stitched with a maximum where tiles overlap; pixels no decoded tile covers
are background. numpy + OpenCV only: the ONNX Runtime student on a station runs this file unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0
BACKGROUND_LOGIT = -20.0  # logits of pixels no decoded tile covers
PAD_LABEL = -1


@dataclass(frozen=True)
class Layout:
    """Where the tiles of one crop lie. Tile origins are (y0, x0) in scaled pixels (original * scale)."""

    orig_hw: tuple[int, int]
    canvas: int
    scale: float
    tiles: tuple[tuple[int, int], ...]

    @property
    def scaled_hw(self) -> tuple[int, int]:
        return scaled_size(self.orig_hw, self.scale)

    def to_json(self) -> list[int | float]:
        return [self.orig_hw[0], self.orig_hw[1], self.canvas, self.scale, *[v for t in self.tiles for v in t]]

    @classmethod
    def from_json(cls, v: Sequence[float]) -> Layout:
        tiles = tuple((int(v[i]), int(v[i + 1])) for i in range(4, len(v), 2))
        return cls((int(v[0]), int(v[1])), int(v[2]), float(v[3]), tiles)


def scaled_size(orig_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    h, w = orig_hw
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


def tile_starts(length: int, canvas: int, min_overlap: int) -> list[int]:
    """Evenly spaced tile origins covering [0, length) with tiles of `canvas`, neighbours overlapping by at least
    `min_overlap` (so an object cut by one tile edge lies whole in the next tile if it is smaller than the overlap)."""
    if length <= canvas:
        return [0]
    stride = max(1, canvas - min_overlap)
    n = 1 + math.ceil((length - canvas) / stride)
    last = length - canvas
    return sorted({int(round(i * last / (n - 1))) for i in range(n)})


def plan(orig_hw: tuple[int, int], canvas: int, scale: float = 1.0, min_overlap: int | None = None) -> Layout:
    hs, ws = scaled_size(orig_hw, scale)
    ov = canvas // 4 if min_overlap is None else int(min_overlap)
    tiles = tuple((y, x) for y in tile_starts(hs, canvas, ov) for x in tile_starts(ws, canvas, ov))
    return Layout((int(orig_hw[0]), int(orig_hw[1])), int(canvas), float(scale), tiles)


def scaled_image(image: np.ndarray, layout: Layout) -> np.ndarray:
    if layout.scale == 1.0:
        return image
    hs, ws = layout.scaled_hw
    interp = cv2.INTER_AREA if layout.scale < 1.0 else cv2.INTER_LINEAR
    return cv2.resize(image, (ws, hs), interpolation=interp)


def pixel_canvases(image: np.ndarray, layout: Layout) -> np.ndarray:
    """(T, S, S, 3) uint8 canvases in [0, 255], padded with the mean colour: what a graph that normalises inside
    (the merged ONNX student) is fed."""
    img = scaled_image(image, layout)
    s = layout.canvas
    out = np.empty((len(layout.tiles), s, s, 3), np.uint8)
    out[:] = np.round(MEAN).astype(np.uint8)
    for i, (y0, x0) in enumerate(layout.tiles):
        part = img[y0:y0 + s, x0:x0 + s]
        out[i, : part.shape[0], : part.shape[1]] = part
    return out


def normalised_canvases(image: np.ndarray, layout: Layout) -> np.ndarray:
    """(T, 3, S, S) float32, ImageNet-normalised; the padding is exactly 0."""
    img = scaled_image(image, layout)
    s = layout.canvas
    out = np.zeros((len(layout.tiles), 3, s, s), np.float32)
    norm = ((img.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1)
    for i, (y0, x0) in enumerate(layout.tiles):
        part = norm[:, y0:y0 + s, x0:x0 + s]
        out[i, :, : part.shape[1], : part.shape[2]] = part
    return out


def tile_prompts(layout: Layout, points: np.ndarray, labels: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """[(tile index, coords (n, 2) in canvas pixels, labels (n,))] for the tiles to decode (see module doc)."""
    pts = np.asarray(points, np.float32).reshape(-1, 2) * np.float32(layout.scale)
    lbs = np.asarray(labels).reshape(-1)
    s = layout.canvas
    chosen: list[tuple[int, np.ndarray, np.ndarray]] = []
    fallback: list[tuple[int, np.ndarray, np.ndarray]] = []
    for i, (y0, x0) in enumerate(layout.tiles):
        local = pts - np.array([x0, y0], np.float32)
        inside = (local[:, 0] >= 0) & (local[:, 0] < s) & (local[:, 1] >= 0) & (local[:, 1] < s)
        if not inside.any():
            continue
        entry = (i, local[inside], lbs[inside])
        (chosen if (lbs[inside] == 1).any() else fallback).append(entry)
    if not len(lbs):  # no clicks at all: every tile decodes its padding prompt
        return [(i, np.zeros((0, 2), np.float32), np.zeros((0,), np.float32)) for i in range(len(layout.tiles))]
    return chosen or fallback


def group_by_tile(layout: Layout, prompts: Sequence[tuple[np.ndarray, np.ndarray]],
                  ) -> dict[int, list[tuple[int, np.ndarray, np.ndarray]]]:
    """tile -> [(prompt index, coords, labels)]: which prompts each tile decodes (several prompts on one image)."""
    per_tile: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for p, (pts, lbs) in enumerate(prompts):
        for t, coords, tl in tile_prompts(layout, pts, lbs):
            per_tile.setdefault(t, []).append((p, coords, tl))
    return per_tile


def pad_points(prompts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Stack prompts of different lengths into (B, N, 2) coords and (B, N) float labels, padded with label -1."""
    n = max(1, max((len(np.asarray(lb).reshape(-1)) for _, lb in prompts), default=1))
    coords = np.zeros((len(prompts), n, 2), np.float32)
    labels = np.full((len(prompts), n), PAD_LABEL, np.float32)
    for i, (pts, lbs) in enumerate(prompts):
        lbs = np.asarray(lbs).reshape(-1)
        if len(lbs):
            coords[i, : len(lbs)] = np.asarray(pts, np.float32).reshape(-1, 2)
            labels[i, : len(lbs)] = lbs
    return coords, labels


def stitch(layout: Layout, tile_logits: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    """Low-resolution logits of decoded tiles -> (H, W) float32 logits of the original crop.

    Each tile's logits are upsampled bilinearly (half-pixel centres, as F.interpolate with align_corners=False) to the
    canvas, cut to the part of the tile that holds the crop, and laid into the scaled crop with a maximum."""
    hs, ws = layout.scaled_hw
    s = layout.canvas
    out = np.full((hs, ws), BACKGROUND_LOGIT, np.float32)
    for i, logits in tile_logits:
        y0, x0 = layout.tiles[i]
        full = np.asarray(logits, np.float32)
        if full.shape != (s, s):
            full = cv2.resize(np.ascontiguousarray(full), (s, s), interpolation=cv2.INTER_LINEAR)
        h, w = min(s, hs - y0), min(s, ws - x0)
        np.maximum(out[y0:y0 + h, x0:x0 + w], full[:h, :w], out=out[y0:y0 + h, x0:x0 + w])
    if layout.scale != 1.0:
        out = cv2.resize(out, (layout.orig_hw[1], layout.orig_hw[0]), interpolation=cv2.INTER_LINEAR)
    return out
