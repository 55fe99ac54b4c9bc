"""Point-prompt correction state for the crop on screen: points, brush edits, live mask.

The expensive encoder pass runs once per crop and model in a worker (and ahead of time for the next crops); each
click only decodes, in a second worker, against the cached embedding. Clicks that arrive while a decode is still
queued replace it (only the latest point set matters), and a result for an older point set is dropped.

The mask shown is `(base | painted) & ~erased`, where base is the decoded mask once there is a point, else the
chosen model's existing prediction (so the brush can touch up a prediction directly), else empty. Backspace takes
back the last action (point or brush stroke).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from PySide6.QtCore import QObject, Signal

from inference.segmenter import Embedding, Segmenter
from widgets.workers import TaskPool

log = logging.getLogger("maskbench.correction")

SegmenterProvider = Callable[[str], Segmenter]  # kind ("teacher" | "student") -> loaded segmenter
Embedder = Callable[[Segmenter, str, np.ndarray], Embedding]  # (segmenter, image key (sha256), image) -> embedding


def _torch_threads(n: int | None) -> None:
    """Intra-op threads of torch for the calling worker thread (no-op without torch, e.g. ONNX Runtime only).

    A click's decode is small: one thread is fastest, and with all cores it spins against the encoder of the next
    crop being prefetched (measured: 21 ms vs 140+ ms p50 on 2 busy cores). The encoder gets the default."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    want = n or _DEFAULT_THREADS
    if torch.get_num_threads() != want:
        torch.set_num_threads(want)


_DEFAULT_THREADS = max(1, (os.cpu_count() or 1))


def plain_embed(seg: Segmenter, _key: str, image: np.ndarray) -> Embedding:
    return seg.embed(image)


class CorrectionController(QObject):
    maskChanged = Signal(object)  # bool HxW or None
    pointsChanged = Signal(object, object)  # points [(x, y)], labels [int]
    statusChanged = Signal(str)
    embeddingReady = Signal(int, str)  # sample id, kind

    def __init__(self, provider: SegmenterProvider | None = None, embedder: Embedder | None = None,
                 parent: QObject | None = None, embed_cache: int = 8) -> None:
        super().__init__(parent)
        self.provider = provider
        self.embedder = embedder or plain_embed
        self.kind = "student"
        self._segmenters: dict[str, Segmenter] = {}
        self._seg_errors: dict[str, str] = {}
        self._emb: OrderedDict[tuple[str, int], Embedding] = OrderedDict()
        self._emb_capacity = embed_cache
        self._emb_wanted: set[tuple[str, int]] = set()
        self._image_keys: dict[int, str] = {}
        # SAM 2's predictor keeps per-image state: its embed and decode must not overlap. The student is stateless.
        self._teacher_lock = threading.Lock()
        self.embed_pool = TaskPool("embed", workers=1)
        self.decode_pool = TaskPool("decode", workers=1)
        self.sample_id: int | None = None
        self.image: np.ndarray | None = None
        self.base_masks: dict[str, np.ndarray | None] = {}
        self.points: list[tuple[float, float]] = []
        self.labels: list[int] = []
        self._actions: list[tuple[str, Any]] = []
        self._decoded: np.ndarray | None = None
        self._painted: np.ndarray | None = None
        self._erased: np.ndarray | None = None
        self._seq = 0
        self._done_seq = 0
        self._decode_due = False
        self._click_t: float | None = None
        self.last_decode_ms: float | None = None  # worker time of the last decode
        self.last_click_to_mask_ms: float | None = None  # click to mask delivered on the GUI thread
        self.brush_radius = 6

    # sample ---------------------------------------------------------------------------------------------------
    def set_sample(self, sample_id: int, image: np.ndarray, base_masks: dict[str, np.ndarray | None],
                   image_key: str | None = None) -> None:
        self.sample_id = sample_id
        if image_key:
            self._image_keys[sample_id] = image_key
        self.image = image
        self.base_masks = {"teacher": base_masks.get("teacher"), "student": base_masks.get("student")}
        self._reset_edits()
        self.pointsChanged.emit([], [])
        if self.provider is not None:
            self.ensure_embedding(sample_id, image, priority=0)

    def _reset_edits(self) -> None:
        self.points, self.labels, self._actions = [], [], []
        self._decoded = None
        self._painted = self._erased = None
        self._seq += 1
        self._decode_due = False

    @property
    def active(self) -> bool:
        """True once the reviewer has clicked or painted on this crop."""
        return bool(self._actions)

    def set_kind(self, kind: str) -> None:
        if kind not in ("teacher", "student") or kind == self.kind:
            return
        self.kind = kind
        if self.sample_id is not None and self.image is not None and self.provider is not None:
            self.ensure_embedding(self.sample_id, self.image, priority=0)
            if self.points:
                self._request_decode()
            else:
                self._emit_mask()

    # models and embeddings --------------------------------------------------------------------------------------
    def _segmenter(self, kind: str) -> Segmenter:
        """Worker-thread side: load (once) the project's active model of that kind."""
        seg = self._segmenters.get(kind)
        if seg is None:
            if self.provider is None:
                raise RuntimeError("no model provider")
            seg = self.provider(kind)
            self._segmenters[kind] = seg
        return seg

    def _guard(self, kind: str) -> contextlib.AbstractContextManager[object]:
        return self._teacher_lock if kind == "teacher" else contextlib.nullcontext()

    def has_embedding(self, sample_id: int, kind: str | None = None) -> bool:
        return ((kind or self.kind), sample_id) in self._emb

    def ensure_embedding(self, sample_id: int, image: np.ndarray, priority: int = 5, kind: str | None = None,
                         image_key: str | None = None) -> None:
        kind = kind or self.kind
        if image_key:
            self._image_keys[sample_id] = image_key
        if self.provider is None:
            return
        key = (kind, sample_id)
        if key in self._emb:
            self._emb.move_to_end(key)
            return
        if key in self._emb_wanted and priority > 0:
            return
        if kind in self._seg_errors:
            if sample_id == self.sample_id:
                self.statusChanged.emit(self._seg_errors[kind])
            return
        self._emb_wanted.add(key)
        if sample_id == self.sample_id:
            self.statusChanged.emit(f"computing {kind} embedding…")

        image_key_ = self._image_keys.get(sample_id, f"sample-{sample_id}")

        def work() -> tuple[Embedding, float]:
            t0 = time.perf_counter()
            _torch_threads(None)
            seg = self._segmenter(kind)
            with self._guard(kind):
                emb = self.embedder(seg, image_key_, image)
            return emb, (time.perf_counter() - t0) * 1000

        self.embed_pool.submit(work, priority=priority, key=f"emb:{kind}:{sample_id}",
                               on_result=lambda r: self._embedded(key, r),
                               on_error=lambda e: self._embed_failed(key, e), owner=self)

    def _embedded(self, key: tuple[str, int], result: tuple[Embedding, float]) -> None:
        emb, ms = result
        self._emb_wanted.discard(key)
        self._emb[key] = emb
        self._emb.move_to_end(key)
        while len(self._emb) > self._emb_capacity:
            self._emb.popitem(last=False)
        kind, sid = key
        self.embeddingReady.emit(sid, kind)
        if sid == self.sample_id and kind == self.kind:
            self.statusChanged.emit(f"{kind} ready (embedding {ms:.0f} ms)")
            if self._decode_due:
                self._request_decode()

    def _embed_failed(self, key: tuple[str, int], exc: BaseException) -> None:
        self._emb_wanted.discard(key)
        kind, sid = key
        msg = f"points need a {kind} model ({exc}); the brush works without one"
        if kind not in self._segmenters:  # the model itself did not load: do not retry for every crop
            if kind not in self._seg_errors:
                log.warning("%s model unavailable: %s", kind, exc)
            self._seg_errors[kind] = msg
        else:
            log.warning("embedding failed for sample %s (%s): %s", sid, kind, exc)
        if sid == self.sample_id:
            self.statusChanged.emit(msg)

    def forget_model(self, kind: str | None = None) -> None:
        """Drop loaded models and embeddings (after training registers a new student, for instance)."""
        for k in [kind] if kind else ["teacher", "student"]:
            self._segmenters.pop(k, None)
            self._seg_errors.pop(k, None)
            for key in [x for x in self._emb if x[0] == k]:
                del self._emb[key]

    # edits ------------------------------------------------------------------------------------------------------
    def add_point(self, x: float, y: float, label: int) -> None:
        if self.image is None:
            return
        self._click_t = time.perf_counter()
        self.points.append((float(x), float(y)))
        self.labels.append(1 if label else 0)
        self._actions.append(("point", None))
        self.pointsChanged.emit(list(self.points), list(self.labels))
        self._request_decode()

    def remove_last(self) -> bool:
        if not self._actions:
            return False
        kind, payload = self._actions.pop()
        if kind == "point":
            self.points.pop()
            self.labels.pop()
            self.pointsChanged.emit(list(self.points), list(self.labels))
            if self.points:
                self._request_decode()
                return True
            self._seq += 1
            self._decoded = None
            self._decode_due = False
        else:
            self._painted, self._erased = payload
        self._emit_mask()
        return True

    def clear(self) -> None:
        self._reset_edits()
        self.pointsChanged.emit([], [])
        self.maskChanged.emit(None)

    def brush(self, x0: float, y0: float, x1: float, y1: float, paint: bool, new_stroke: bool = False) -> None:
        if self.image is None:
            return
        h, w = self.image.shape[:2]
        if self._painted is None or self._erased is None:
            self._painted = np.zeros((h, w), np.uint8)
            self._erased = np.zeros((h, w), np.uint8)
        if new_stroke:
            self._actions.append(("stroke", (self._painted.copy(), self._erased.copy())))
        target, other = (self._painted, self._erased) if paint else (self._erased, self._painted)
        r = max(1, int(self.brush_radius))
        # the pixel under the cursor (scene x in [i, i+1) is pixel i), as for point prompts
        p0, p1 = (math.floor(x0), math.floor(y0)), (math.floor(x1), math.floor(y1))
        stroke = np.zeros((h, w), np.uint8)
        cv2.line(stroke, p0, p1, 1, thickness=2 * r, lineType=cv2.LINE_8)
        cv2.circle(stroke, p0, r, 1, -1)
        cv2.circle(stroke, p1, r, 1, -1)
        target |= stroke
        other &= ~stroke & 1
        self._emit_mask()

    # decoding ---------------------------------------------------------------------------------------------------
    def _request_decode(self) -> None:
        if self.sample_id is None or self.image is None:
            return
        self._seq += 1
        if not self.points:
            self._decoded = None
            self._emit_mask()
            return
        key = (self.kind, self.sample_id)
        emb = self._emb.get(key)
        if emb is None:
            self._decode_due = True
            if self.provider is None:
                self.statusChanged.emit("no model to decode points with")
            else:
                self.ensure_embedding(self.sample_id, self.image, priority=0)
            return
        self._decode_due = False
        seq, sid, kind = self._seq, self.sample_id, self.kind
        pts = np.asarray(self.points, np.float32).reshape(-1, 2)
        labs = np.asarray(self.labels, np.int32)

        def work() -> tuple[np.ndarray, float]:
            t0 = time.perf_counter()
            _torch_threads(1)
            seg = self._segmenter(kind)
            with self._guard(kind):
                out = seg.decode(emb, pts, labs)
            return np.asarray(out.mask, bool), (time.perf_counter() - t0) * 1000

        self.decode_pool.submit(work, priority=0, key="decode",
                                on_result=lambda r: self._decoded_ready(seq, sid, r),
                                on_error=lambda e: self.statusChanged.emit(f"decode failed: {e}"), owner=self)

    def _decoded_ready(self, seq: int, sample_id: int, result: tuple[np.ndarray, float]) -> None:
        if seq != self._seq or sample_id != self.sample_id:
            return  # a newer click or another crop superseded this decode
        mask, ms = result
        self._decoded = mask
        self._done_seq = seq
        self.last_decode_ms = ms
        self._emit_mask()
        if self._click_t is not None:
            self.last_click_to_mask_ms = (time.perf_counter() - self._click_t) * 1000
            self._click_t = None
        self.statusChanged.emit(f"{self.kind}: {len(self.points)} point(s), decode {ms:.0f} ms")

    # result -----------------------------------------------------------------------------------------------------
    def current_mask(self) -> np.ndarray | None:
        """The corrected mask as it stands, or None when nothing was edited on this crop."""
        if self.image is None or not self._actions:
            return None
        h, w = self.image.shape[:2]
        if self.points:
            base = self._decoded
            if base is None:
                return None  # the decode of the current points is still running
        else:
            base = self.base_masks.get(self.kind)
        out = np.zeros((h, w), bool) if base is None else base.copy()
        if self._painted is not None and self._erased is not None:
            out |= self._painted.view(bool)
            out &= ~self._erased.view(bool)
        return out

    def decoding(self) -> bool:
        """A decode for the current point set has not come back yet."""
        return bool(self.points) and self._done_seq != self._seq

    def _emit_mask(self) -> None:
        self.maskChanged.emit(self.current_mask())

    def close(self) -> None:
        self.embed_pool.close()
        self.decode_pool.close()
