"""Embedding cache: fp16 round trip, LRU bound, atomic writes, readers racing eviction, the cached segmenter."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from inference.cache import CachedSegmenter, EmbeddingCache, array_sha256
from inference.segmenter import Embedding


def _emb(seed: int, model: str = "m" * 64) -> Embedding:
    rng = np.random.default_rng(seed)
    return Embedding(
        features={"image_embed": rng.normal(size=(256, 16, 16)).astype(np.float32),
                  "high_res": rng.normal(size=(64, 32, 32)).astype(np.float32)},
        orig_hw=(120, 300), input_size=256, model_sha256=model,
    )


def test_roundtrip_is_fp16_and_keyed(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, max_bytes=10**9)
    e = _emb(0)
    path = cache.put(e, "a" * 64)
    assert path == tmp_path / ("m" * 64) / f"{'a' * 64}_256.npz"
    got = cache.get("m" * 64, "a" * 64, 256)
    assert got is not None and got.orig_hw == (120, 300) and got.input_size == 256
    for k, v in e.features.items():
        assert got.features[k].dtype == np.float32
        np.testing.assert_allclose(got.features[k], v.astype(np.float16).astype(np.float32))
    assert cache.get("m" * 64, "a" * 64, 512) is None  # other input size
    assert cache.get("x" * 64, "a" * 64, 256) is None  # other model
    assert cache.hits == 1 and cache.misses == 2
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_lru_eviction_keeps_the_bound(tmp_path: Path) -> None:
    one = EmbeddingCache(tmp_path / "probe", 10**9).put(_emb(0), "p" * 64).stat().st_size
    cache = EmbeddingCache(tmp_path / "c", max_bytes=int(one * 3.5))
    for i in range(3):
        cache.put(_emb(i), f"{i:064d}")
        t = time.time() - 100 + i
        os.utime(cache.path_for("m" * 64, f"{i:064d}", 256), (t, t))
    assert cache.get("m" * 64, f"{0:064d}", 256) is not None  # touch 0: now the most recent
    cache.put(_emb(3), f"{3:064d}")  # over the bound: evict the least recently used (1), down to 90%
    assert cache.get("m" * 64, f"{1:064d}", 256) is None
    assert cache.get("m" * 64, f"{0:064d}", 256) is not None
    assert cache.size_bytes() <= cache.max_bytes


def test_corrupt_entry_is_a_miss(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, max_bytes=10**9)
    path = cache.put(_emb(0), "b" * 64)
    path.write_bytes(b"PK\x03\x04 not really a zip")
    assert cache.get("m" * 64, "b" * 64, 256) is None
    assert not path.exists()


def test_concurrent_readers_with_eviction(tmp_path: Path) -> None:
    """Readers in threads while a writer keeps a tiny cache full: every read is a whole entry or a miss."""
    size = EmbeddingCache(tmp_path / "probe", 10**9).put(_emb(0), "p" * 64).stat().st_size
    root = tmp_path / "c"
    writer = EmbeddingCache(root, max_bytes=size * 3)
    keys = [f"{i:064d}" for i in range(8)]
    expected = {k: _emb(i) for i, k in enumerate(keys)}
    errors: list[BaseException] = []
    stop = threading.Event()
    seen = {"hit": 0, "miss": 0}

    def read() -> None:
        reader = EmbeddingCache(root, max_bytes=size * 3)
        try:
            while not stop.is_set():
                for k in keys:
                    got = reader.get("m" * 64, k, 256)
                    if got is None:
                        seen["miss"] += 1
                        continue
                    seen["hit"] += 1
                    want = expected[k].features["image_embed"].astype(np.float16).astype(np.float32)
                    assert np.array_equal(got.features["image_embed"], want)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(6):
        for k in keys:
            writer.put(expected[k], k)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert seen["hit"] > 0
    assert writer.size_bytes() <= size * 3


class _CountingModel:
    name, kind, sha256, input_size = "fake", "student", "f" * 64, 256

    def __init__(self) -> None:
        self.encoder_images = 0

    def embed_batch(self, images):
        self.encoder_images += len(images)
        return [Embedding({"image_embed": np.full((4, 2, 2), float(im.mean()), np.float32)}, im.shape[:2], 256,
                          self.sha256) for im in images]


def test_cached_segmenter_encodes_only_misses(tmp_path: Path) -> None:
    inner = _CountingModel()
    seg = CachedSegmenter(inner, EmbeddingCache(tmp_path, 10**9))
    imgs = [np.full((10, 20, 3), i, np.uint8) for i in range(4)]
    shas = [f"{i:064d}" for i in range(4)]
    seg.embed_batch(imgs[:2], shas[:2])
    out = seg.embed_batch(imgs, shas)
    assert inner.encoder_images == 4  # 2 + only the 2 new ones
    assert [float(e.features["image_embed"][0, 0, 0]) for e in out] == [0.0, 1.0, 2.0, 3.0]
    seg.embed(imgs[3])  # no store hash: keyed by pixels
    seg.embed(imgs[3].copy())
    assert inner.encoder_images == 5
    assert array_sha256(imgs[0]) != array_sha256(imgs[0][:, :10])
