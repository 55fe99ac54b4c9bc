"""Point-prompt correction state for the crop on screen: points, brush edits, live mask.

Why one module of ~570 lines: the edits (points, box, mask prompt, brush strokes, automatic candidates) share one
undo stack and one "latest wins" sequence number with the three workers that answer them (encoder, decoder,
automatic masks); a result is only applied when the edit stack it was asked for is still the current one. Split
apart, every part would need the others' private state. The Qt-free parts already live elsewhere
(inference.interactive for prompts and decoding, inference.automask for the grid search).

The expensive encoder pass runs once per crop and model in a worker (and ahead of time for the next crops); each
click only decodes, in a second worker, against the cached embedding. Clicks that arrive while a decode is still
queued replace it (only the latest point set matters), and a result for an older point set is dropped.

The mask shown is `(base | painted) & ~erased`, where base is the decoded mask once there is a prompt, else the
chosen model's existing prediction (so the brush can touch up a prediction directly), else empty. Backspace takes
back the last action (point, box, mask prompt or brush stroke).

Box and mask prompts (the teacher's only, design seed 001): a dragged box and a mask given as SAM 2's mask input
(the current correction or the ground truth, to refine it) are decoded together with the points, in the same worker
and with the same "latest wins" rule. `prompt_record` hands the prompts and the model's answer to the save, which
stores them as a Prediction so the mask replays.

Automatic masks (U): inference.automask's grid of point prompts, decoded in a worker of their own against the crop's
cached embedding (no extra encoder pass; when the embedding is not there yet the search starts when it arrives).
The candidates, best first, are stepped through with U; the one shown is the grid point that produced it plus its
decoded mask, exactly as if the reviewer had clicked there, so further clicks refine it, the brush touches it up,
Backspace takes it back and Enter saves it like any correction.
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

from inference.automask import AutoMask, generate_masks
from inference.batch import AutoOptions
from inference.segmenter import Embedding, Prompt, Segmenter, decode_prompt
from review.verdicts import HumanPrompt
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
    autoMasksReady = Signal(int, str, int)  # sample id, kind, candidates found
    boxChanged = Signal(object)  # (x0, y0, x1, y1) in image pixels, or None

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
        # automatic masks get their own worker: a grid search (seconds, a minute for SAM 2 on a CPU) must not hold
        # up the clicks of a reviewer who goes on with points meanwhile (the teacher lock still serialises SAM 2)
        self.auto_pool = TaskPool("automask", workers=1)
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
        # teacher-only prompts (SAM 2's box= and mask_input=), decoded with the points; see set_box/set_mask_prompt
        self.box: tuple[float, float, float, float] | None = None
        self.mask_prompt: np.ndarray | None = None
        self.mask_prompt_source: str | None = None  # "current" | "ground_truth"
        self._decoded_meta: tuple[float, int | None] | None = None  # (score, model id) of the decode shown
        # automatic masks: the CLI's defaults (`predict --prompts auto`); candidates of one (kind, sample) at a time
        self.auto_options = AutoOptions()
        self._auto: list[AutoMask] | None = None
        self._auto_key: tuple[str, int] | None = None
        self._auto_index = -1
        self._auto_due = False
        self._auto_running: tuple[str, int] | None = None
        self.last_auto_ms: float | None = None

    # sample ---------------------------------------------------------------------------------------------------
    def set_sample(self, sample_id: int, image: np.ndarray, base_masks: dict[str, np.ndarray | None],
                   image_key: str | None = None) -> None:
        self.sample_id = sample_id
        if image_key:
            self._image_keys[sample_id] = image_key
        self.image = image
        self.base_masks = {"teacher": base_masks.get("teacher"), "student": base_masks.get("student")}
        self._reset_edits()
        self._auto, self._auto_key, self._auto_index, self._auto_due = None, None, -1, False
        self.pointsChanged.emit([], [])
        if self.provider is not None:
            self.ensure_embedding(sample_id, image, priority=0)

    def _reset_edits(self) -> None:
        self.points, self.labels, self._actions = [], [], []
        if self.box is not None:
            self.boxChanged.emit(None)
        self.box = None
        self.mask_prompt = self.mask_prompt_source = None
        self._decoded = None
        self._decoded_meta = None
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
        if kind == "student" and (self.box is not None or self.mask_prompt is not None):
            # the student takes points only: its decode would refuse these (and Enter would wait for it forever)
            self._actions = [a for a in self._actions if a[0] not in ("box", "mask_prompt")]
            self.box = self.mask_prompt = self.mask_prompt_source = None
            self.boxChanged.emit(None)
            self.statusChanged.emit("box and mask prompts dropped: the student takes points only")
        if self.sample_id is not None and self.image is not None and self.provider is not None:
            self.ensure_embedding(self.sample_id, self.image, priority=0)
            if self.has_prompts:
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
            if self._auto_due:
                self._run_auto()

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

    @property
    def has_prompts(self) -> bool:
        """Points, a box or a mask prompt: the base of the mask is a decode, not the stored prediction."""
        return bool(self.points) or self.box is not None or self.mask_prompt is not None

    def _teacher_only(self, what: str) -> bool:
        if self.kind == "teacher":
            return True
        self.statusChanged.emit(f"{what} prompts use the teacher (SAM 2); the student takes points only — press M")
        return False

    def set_box(self, x0: float, y0: float, x1: float, y1: float) -> bool:
        """A box prompt (teacher only), replacing the previous box; corners in image pixels, any order, clipped to
        the crop. Decoded with the points and mask prompt in the decode worker; Backspace takes it back."""
        if self.image is None or not self._teacher_only("box"):
            return False
        h, w = self.image.shape[:2]
        xa, xb = sorted((float(np.clip(x0, 0, w)), float(np.clip(x1, 0, w))))
        ya, yb = sorted((float(np.clip(y0, 0, h)), float(np.clip(y1, 0, h))))
        if xb - xa < 1 or yb - ya < 1:
            return False
        self._click_t = time.perf_counter()
        self._actions.append(("box", self.box))
        self.box = (xa, ya, xb, yb)
        self.boxChanged.emit(self.box)
        self._request_decode()
        return True

    def set_mask_prompt(self, mask: np.ndarray, source: str) -> bool:
        """SAM 2's mask input (teacher only): `mask` (bool, crop size) is refined by the teacher together with the
        points and box; `source` says where it came from ("current" correction or "ground_truth")."""
        if self.image is None or not self._teacher_only("mask"):
            return False
        m = np.asarray(mask).astype(bool)
        if m.shape != self.image.shape[:2]:
            self.statusChanged.emit(f"mask prompt is {m.shape[1]}×{m.shape[0]}, the crop is "
                                    f"{self.image.shape[1]}×{self.image.shape[0]}")
            return False
        self._click_t = time.perf_counter()
        self._actions.append(("mask_prompt", (self.mask_prompt, self.mask_prompt_source)))
        self.mask_prompt, self.mask_prompt_source = m.copy(), source
        self._request_decode()
        return True

    def prompt_record(self) -> HumanPrompt | None:
        """The prompts and the model's answer behind the mask on screen, for storing with a saved correction (None
        when the mask is not a decode of a registered model: brush only, an automatic mask, a decode in flight)."""
        if not self.has_prompts or self._decoded is None or self._decoded_meta is None or self.decoding():
            return None
        score, model_id = self._decoded_meta
        if model_id is None:
            return None
        return HumanPrompt(model_id=int(model_id), points=[[x, y] for x, y in self.points],
                           labels=list(self.labels), mask=self._decoded.copy(), score=score,
                           box=None if self.box is None else list(self.box),
                           mask_prompt=None if self.mask_prompt is None else self.mask_prompt.copy())

    def remove_last(self) -> bool:
        if not self._actions:
            return False
        kind, payload = self._actions.pop()
        if kind == "point":
            self.points.pop()
            self.labels.pop()
            self.pointsChanged.emit(list(self.points), list(self.labels))
        elif kind == "box":
            self.box = payload
            self.boxChanged.emit(self.box)
        elif kind == "mask_prompt":
            self.mask_prompt, self.mask_prompt_source = payload
        else:
            self._painted, self._erased = payload
        if kind in ("point", "box", "mask_prompt"):
            if self.has_prompts:
                self._request_decode()
                return True
            self._seq += 1
            self._decoded = None
            self._decoded_meta = None
            self._decode_due = False
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
        if not self.has_prompts:
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
        prompt = Prompt(np.asarray(self.points, np.float32).reshape(-1, 2), np.asarray(self.labels, np.int32),
                        box=None if self.box is None else np.asarray(self.box, np.float32),
                        mask=self.mask_prompt)

        def work() -> tuple[np.ndarray, float, float, int | None]:
            t0 = time.perf_counter()
            _torch_threads(1)
            seg = self._segmenter(kind)
            with self._guard(kind):
                out = decode_prompt(seg, emb, prompt)
            ms = (time.perf_counter() - t0) * 1000
            return np.asarray(out.mask, bool), ms, float(out.score), seg.model_id

        self.decode_pool.submit(work, priority=0, key="decode",
                                on_result=lambda r: self._decoded_ready(seq, sid, r),
                                on_error=lambda e: self.statusChanged.emit(f"decode failed: {e}"), owner=self)

    def _decoded_ready(self, seq: int, sample_id: int, result: tuple[np.ndarray, float, float, int | None]) -> None:
        if seq != self._seq or sample_id != self.sample_id:
            return  # a newer click or another crop superseded this decode
        mask, ms, score, model_id = result
        self._decoded = mask
        self._decoded_meta = (score, model_id)
        self._done_seq = seq
        self.last_decode_ms = ms
        self._emit_mask()
        if self._click_t is not None:
            self.last_click_to_mask_ms = (time.perf_counter() - self._click_t) * 1000
            self._click_t = None
        extra = (" + box" if self.box is not None else "") + (
            f" + {self.mask_prompt_source.replace('_', ' ')} mask" if self.mask_prompt is not None else "")
        self.statusChanged.emit(f"{self.kind}: {len(self.points)} point(s){extra}, decode {ms:.0f} ms")

    # automatic masks ----------------------------------------------------------------------------------------------
    def auto_candidates(self) -> list[AutoMask] | None:
        """The automatic masks found for the crop on screen with the current model (None: not searched yet)."""
        return self._auto if self._auto_key == (self.kind, self.sample_id) else None

    def request_auto(self) -> None:
        """U: search the crop on screen for automatic masks and show the best; once found, each call shows the next
        candidate (wrapping), replacing the edits made on the previous one."""
        if self.sample_id is None or self.image is None:
            return
        key = (self.kind, self.sample_id)
        found = self.auto_candidates()
        if found is not None:
            if found:
                self._select_auto((self._auto_index + 1) % len(found))
            else:
                self.statusChanged.emit(self._auto_none_message())
            return
        if self._auto_running == key:
            self.statusChanged.emit("automatic masks: still searching…")
            return
        if self.provider is None:
            self.statusChanged.emit("automatic masks need a model")
            return
        if key not in self._emb:
            self._auto_due = True  # runs when the embedding arrives (_embedded): never a second encoder pass
            if key in self._emb_wanted:
                self.statusChanged.emit(f"automatic masks: waiting for the {self.kind} embedding…")
            else:
                self.ensure_embedding(self.sample_id, self.image, priority=0)
            return
        self._run_auto()

    def _run_auto(self) -> None:
        self._auto_due = False
        if self.sample_id is None or self.image is None:
            return
        key = (self.kind, self.sample_id)
        emb = self._emb.get(key)
        if emb is None:
            return
        kind, image, opts = self.kind, self.image, self.auto_options
        mark = (self._seq, len(self._actions))  # edits made while it runs win over the result

        def work() -> tuple[list[AutoMask], float]:
            t0 = time.perf_counter()
            _torch_threads(None)  # a batch of grid prompts, not one click: all threads
            seg = self._segmenter(kind)
            with self._guard(kind):
                found = generate_masks(seg, image, embedding=emb, points_per_side=opts.points_per_side,
                                       pred_score_thresh=opts.min_score, stability_thresh=opts.min_stability,
                                       nms_thresh=opts.nms_iou)
            return found, (time.perf_counter() - t0) * 1000

        self._auto_running = key
        self.statusChanged.emit(f"automatic masks: {opts.points_per_side}×{opts.points_per_side} grid on the {kind}…")
        self.auto_pool.submit(work, priority=0, key="auto",
                                on_result=lambda r: self._auto_ready(key, mark, r),
                                on_error=lambda e: self._auto_failed(key, e), owner=self)

    def _auto_ready(self, key: tuple[str, int], mark: tuple[int, int],
                    result: tuple[list[AutoMask], float]) -> None:
        if self._auto_running == key:
            self._auto_running = None
        if key != (self.kind, self.sample_id):
            return  # another crop or model by now
        found, ms = result
        self._auto, self._auto_key, self._auto_index = found, key, -1
        self.last_auto_ms = ms
        self.autoMasksReady.emit(key[1], key[0], len(found))
        if not found:
            self.statusChanged.emit(self._auto_none_message())
        elif mark != (self._seq, len(self._actions)):
            self.statusChanged.emit(f"{len(found)} automatic mask(s) found ({ms:.0f} ms): U shows them")
        else:
            self._select_auto(0)

    def _auto_failed(self, key: tuple[str, int], exc: BaseException) -> None:
        if self._auto_running == key:
            self._auto_running = None
        log.warning("automatic masks failed for sample %s (%s): %s", key[1], key[0], exc)
        if key == (self.kind, self.sample_id):
            self.statusChanged.emit(f"automatic masks failed: {exc}")

    def _auto_none_message(self) -> str:
        o = self.auto_options
        return (f"no automatic mask passed the filters (score ≥ {o.min_score:g}, stability ≥ {o.min_stability:g}): "
                f"click points or paint")

    def _select_auto(self, index: int) -> None:
        """Show candidate `index` as a one-point correction: its grid point and its already decoded mask."""
        found = self._auto or []
        c = found[index]
        self._auto_index = index
        self._reset_edits()
        self.points, self.labels = [c.point], [1]
        self._actions = [("point", None)]
        self._decoded = c.mask.copy()
        self._done_seq = self._seq
        self.pointsChanged.emit(list(self.points), list(self.labels))
        self._emit_mask()
        self.statusChanged.emit(f"{self.kind}: automatic mask {index + 1}/{len(found)} (score {c.score:.2f}, "
                                f"stability {c.stability:.2f}, {c.area} px) · U next · Enter saves")

    # result -----------------------------------------------------------------------------------------------------
    def current_mask(self) -> np.ndarray | None:
        """The corrected mask as it stands, or None when nothing was edited on this crop."""
        if self.image is None or not self._actions:
            return None
        h, w = self.image.shape[:2]
        if self.has_prompts:
            base = self._decoded
            if base is None:
                return None  # the decode of the current prompts is still running
        else:
            base = self.base_masks.get(self.kind)
        out = np.zeros((h, w), bool) if base is None else base.copy()
        if self._painted is not None and self._erased is not None:
            out |= self._painted.view(bool)
            out &= ~self._erased.view(bool)
        return out

    def decoding(self) -> bool:
        """A decode for the current prompts has not come back yet."""
        return self.has_prompts and self._done_seq != self._seq

    def _emit_mask(self) -> None:
        self.maskChanged.emit(self.current_mask())

    def close(self) -> None:
        self.embed_pool.close()
        self.decode_pool.close()
        self.auto_pool.close()
