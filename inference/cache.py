"""On-disk embedding cache: the encoder runs once per (model, image, input size), ever.

Layout: `<project>/cache/embeddings/<model sha256>/<image sha256>_<input size>.npz`, features stored as fp16 (half the
disk, and well inside the noise of a mask decoder), with the original size alongside. The image key is the stored
sample's content sha256, so the batch predictor, the GUI and a second process share entries.

Concurrency: writers write a private temp file in the same folder and `os.replace` it into place, so a reader sees
either nothing or a whole file. A reader that loses a race with eviction (file gone, or unreadable) just misses.
Size is bounded by `embedding_cache.max_gb`: when the running total goes over, the least recently used files (by
mtime, which a hit refreshes) are deleted down to 90% of the bound.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inference.layout import Layout
from inference.segmenter import Decoded, Embedding, Prompt, Segmenter, decode_prompt

if TYPE_CHECKING:
    from inference.registry import ModelInfo

log = logging.getLogger("maskbench.cache")
TMP_PREFIX = ".tmp-"
STALE_TMP_S = 3600.0


def array_sha256(image: np.ndarray) -> str:
    """Key for an image that did not come from the store (no file hash): its pixels and shape."""
    h = hashlib.sha256(f"array:{image.shape}:{image.dtype}".encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


class EmbeddingCache:
    def __init__(self, root: Path | str, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self.evicted = 0
        self._total: int | None = None  # lazily scanned running estimate of the bytes on disk

    @classmethod
    def for_project(cls, project: Any) -> EmbeddingCache:
        gb = float(project.config.get("embedding_cache", {}).get("max_gb", 4.0))
        return cls(project.cache_dir / "embeddings", int(gb * 1e9))

    def path_for(self, model_sha: str, image_sha: str, input_size: int) -> Path:
        return self.root / (model_sha or "unknown") / f"{image_sha}_{int(input_size)}.npz"

    def get(self, model_sha: str, image_sha: str, input_size: int) -> Embedding | None:
        path = self.path_for(model_sha, image_sha, input_size)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = z["__meta__"]
                layout = Layout.from_json(z["__layout__"].tolist()) if "__layout__" in z.files else None
                feats = {k: z[k].astype(np.float32) for k in z.files if not k.startswith("__")}
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            # a half-deleted or foreign file: treat as a miss and drop it (someone else may have already)
            log.warning("embedding cache: unreadable %s (%s); recomputing", path.name, exc.__class__.__name__)
            self.misses += 1
            try:
                path.unlink()
            except OSError:
                pass
            return None
        try:
            os.utime(path)  # LRU: a hit makes the entry young again
        except OSError:
            pass
        self.hits += 1
        return Embedding(features=feats, orig_hw=(int(meta[0]), int(meta[1])), input_size=int(meta[2]),
                         model_sha256=model_sha, layout=layout)

    def put(self, embedding: Embedding, image_sha: str) -> Path:
        path = self.path_for(embedding.model_sha256, image_sha, embedding.input_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}.npz")
        arrays = {k: np.asarray(v).astype(np.float16) for k, v in embedding.features.items()}
        arrays["__meta__"] = np.array([embedding.orig_hw[0], embedding.orig_hw[1], embedding.input_size], np.int64)
        if embedding.layout is not None:
            arrays["__layout__"] = np.array(embedding.layout.to_json(), np.float64)
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise
        self.writes += 1
        size = path.stat().st_size
        if self._total is None:
            self._total = self._scan_total()
        else:
            self._total += size
        if self._total > self.max_bytes:
            self.evict(int(self.max_bytes * 0.9))
        return path

    def _entries(self) -> list[tuple[float, int, Path]]:
        out = []
        if not self.root.is_dir():
            return out
        now = time.time()
        for p in self.root.glob("*/*.npz"):
            try:
                st = p.stat()
            except OSError:
                continue
            if p.name.startswith(TMP_PREFIX):
                if now - st.st_mtime > STALE_TMP_S:  # left by a killed writer
                    try:
                        p.unlink()
                    except OSError:
                        pass
                continue
            out.append((st.st_mtime, st.st_size, p))
        return out

    def _scan_total(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def size_bytes(self) -> int:
        self._total = self._scan_total()
        return self._total

    def evict(self, target_bytes: int) -> int:
        """Delete least recently used entries until at most `target_bytes` remain; returns the number deleted."""
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        n = 0
        for _, size, p in entries:
            if total <= target_bytes:
                break
            try:
                p.unlink()
                n += 1
            except FileNotFoundError:
                pass  # another process evicted it first
            except OSError:
                continue
            total -= size
        self._total = total
        self.evicted += n
        return n

    def clear(self) -> None:
        self.evict(0)


class CachedSegmenter:
    """A segmenter whose `embed` goes through the cache; decode calls pass straight to the model.

    With a cache, fresh embeddings are rounded through fp16 as stored, so fresh and cached give identical masks.

    `embed_batch` sends only the misses to the model, as one batch (what makes batched GPU encoding and caching
    work together). The wrapped model is `.inner`; `encoder_images` counts images the model actually encoded.
    `info` is the project's model record it was loaded from (inference.registry.load_segmenter), `model_id` its id
    (None for a model that is not in a project)."""

    def __init__(self, inner: Segmenter, cache: EmbeddingCache | None, info: ModelInfo | None = None) -> None:
        self.inner = inner
        self.cache = cache
        self.info = info
        self.model_id: int | None = None if info is None else info.id

    name = property(lambda self: self.inner.name)
    kind = property(lambda self: self.inner.kind)
    sha256 = property(lambda self: self.inner.sha256)
    input_size = property(lambda self: self.inner.input_size)
    encoder_images = property(lambda self: self.inner.encoder_images)

    def __getattr__(self, item: str) -> Any:  # device, precision, model, ... of the wrapped segmenter
        return getattr(self.inner, item)

    def embed(self, image: np.ndarray, image_sha256: str | None = None) -> Embedding:
        return self.embed_batch([image], [image_sha256])[0]

    def embed_batch(self, images: Sequence[np.ndarray], image_sha256s: Sequence[str | None] | None = None) -> list[Embedding]:
        shas = [s or array_sha256(im) for im, s in zip(images, image_sha256s or [None] * len(images))]
        out: list[Embedding | None] = [None] * len(images)
        if self.cache is not None:
            for i, sha in enumerate(shas):
                out[i] = self.cache.get(self.sha256, sha, self.input_size)
        todo = [i for i, e in enumerate(out) if e is None]
        if todo:
            fresh = self.inner.embed_batch([images[i] for i in todo])
            for i, emb in zip(todo, fresh):
                if self.cache is not None:
                    # hand out exactly what a later cache hit returns, so a result never depends on whether
                    # its embedding was fresh or cached (predictions replay bit for bit)
                    emb.features = {k: np.asarray(v).astype(np.float16).astype(np.float32)
                                    for k, v in emb.features.items()}
                out[i] = emb
                if self.cache is not None:
                    try:
                        self.cache.put(emb, shas[i])
                    except OSError as exc:  # a full disk must not stop predictions
                        log.warning("embedding cache: cannot write (%s)", exc)
        return [e for e in out if e is not None]

    def decode(self, embedding: Embedding, points: np.ndarray, labels: np.ndarray) -> Decoded:
        return self.inner.decode(embedding, points, labels)

    def decode_prompts(self, embedding: Embedding, prompts: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Decoded]:
        return self.inner.decode_prompts(embedding, prompts)

    def decode_batch(self, embeddings: Sequence[Embedding], prompts: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Decoded]:
        return self.inner.decode_batch(embeddings, prompts)

    def predict(
        self, images: Sequence[np.ndarray], prompts: Sequence[Prompt], image_sha256s: Sequence[str | None] | None = None
    ) -> list[Decoded]:
        if len(images) != len(prompts):
            raise ValueError("predict needs one prompt per image")
        embs = self.embed_batch(images, image_sha256s)
        if not all(p.points_only for p in prompts):  # a box or mask: never dropped on the way
            return [decode_prompt(self.inner, e, p) for e, p in zip(embs, prompts)]
        return self.decode_batch(embs, [(p.points, p.labels) for p in prompts])
