"""The student segmenter logic that does not depend on the backend (numpy only).

A backend supplies two raw calls: `_run_encoder((B,3,S,S) float32) -> {"image_embed", "high_res"}` and
`_run_decoder(image_embed, high_res, coords (B,N,2), labels (B,N)) -> (masks (B,K,h,w), scores (B,K))`. Everything
around them (canvases or resize, normalise, coordinate mapping, padding of prompts, mask choice, stitching back to
the crop) lives here, so the PyTorch and the ONNX Runtime students cannot drift apart, and the ONNX path needs no
torch.

Two layouts, named by the student's config (`layout`): "native" (issue 14: the crop keeps its pixel scale on S x S
canvases, tiled when larger; inference.layout) and "resize" (students trained before it: the crop is resized to a
square S x S, SAM's convention).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inference import layout as lay
from inference import preprocess as pp
from inference.segmenter import Decoded, Embedding, Prompt, PromptNotSupported, not_supported_message

STUDENT_FEATURES = ("image_embed", "high_res")
# canvases per encoder call on a CPU: on a 2-core CPU calls of 4-16 canvases took 1.1-3x the time per canvas of
# single ones, for the torch student and teacher and for the ONNX Runtime student (bench/bench_encode_batch.py);
# GPUs keep batches (encode_chunk)
CPU_ENCODE_CHUNK = 1
LAYOUTS = ("native", "resize")


def stitched(lo: lay.Layout, parts: list[tuple[int, np.ndarray, float]]) -> Decoded:
    """The mask of one prompt from its decoded tiles [(tile, low-res logits, score)]: logits stitched back onto the
    crop, the best tile's score."""
    return Decoded(logits=lay.stitch(lo, [(t, m) for t, m, _ in parts]), score=max((s for _, _, s in parts), default=0.0))


class StudentRuntime:
    kind = "student"
    name: str
    sha256: str
    input_size: int
    model_id: int | None = None  # a bare model; inference.registry.load_segmenter's wrapper carries the record's
    layout_mode: str = "resize"  # backends set it (and scale) from the student's config
    scale: float = 1.0
    decode_chunk = 64  # prompts per decoder call when many prompts share one image (automatic masks)
    encode_chunk = 16  # canvases per encoder call (tiles of large crops add up); CPU_ENCODE_CHUNK on a CPU

    def __init__(self) -> None:
        self.encoder_images = 0  # images that went through the encoder; tests and benchmarks read it

    # Backends implement these two.
    def _run_encoder(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _run_decoder(
        self, image_embed: np.ndarray, high_res: np.ndarray, coords: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def set_layout(self, config: dict[str, object]) -> None:
        """From a student config dict (checkpoint or ONNX metadata); configs older than issue 14 mean "resize"."""
        mode = str(config.get("layout", "resize"))
        if mode not in LAYOUTS:
            raise ValueError(f"unknown student layout {mode!r} (expected one of {', '.join(LAYOUTS)})")
        self.layout_mode = mode
        self.scale = float(config.get("scale", 1.0))

    # Segmenter interface
    def embed(self, image: np.ndarray) -> Embedding:
        return self.embed_batch([image])[0]

    def _encode(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        parts = [self._run_encoder(batch[i : i + self.encode_chunk]) for i in range(0, len(batch), self.encode_chunk)]
        return {k: np.concatenate([p[k] for p in parts]) for k in STUDENT_FEATURES}

    def embed_batch(self, images: Sequence[np.ndarray]) -> list[Embedding]:
        if not images:
            return []
        rgbs = [pp.as_rgb(im) for im in images]
        self.encoder_images += len(images)
        if self.layout_mode == "resize":
            out = self._encode(pp.images_to_batch(rgbs, self.input_size))
            return [
                Embedding(features={k: np.asarray(out[k][i], np.float32) for k in STUDENT_FEATURES},
                          orig_hw=(int(im.shape[0]), int(im.shape[1])), input_size=self.input_size,
                          model_sha256=self.sha256)
                for i, im in enumerate(rgbs)
            ]
        layouts = [lay.plan(im.shape[:2], self.input_size, self.scale) for im in rgbs]
        out = self._encode(np.concatenate([lay.normalised_canvases(im, lo) for im, lo in zip(rgbs, layouts)]))
        embs, start = [], 0
        for im, lo in zip(rgbs, layouts):
            end = start + len(lo.tiles)
            embs.append(Embedding(features={k: np.asarray(out[k][start:end], np.float32) for k in STUDENT_FEATURES},
                                  orig_hw=(int(im.shape[0]), int(im.shape[1])), input_size=self.input_size,
                                  model_sha256=self.sha256, layout=lo))
            start = end
        return embs

    def decode(self, embedding: Embedding, points: np.ndarray, labels: np.ndarray) -> Decoded:
        return self.decode_prompts(embedding, [(points, labels)])[0]

    def decode_prompts(self, embedding: Embedding, prompts: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Decoded]:
        """Several prompts on one image in batched decoder calls (the embedding is broadcast, not copied)."""
        if embedding.layout is None:
            return self._decode_resized(embedding, prompts)
        lo = embedding.layout
        pieces: list[list[tuple[int, np.ndarray, float]]] = [[] for _ in prompts]
        for t, entries in lay.group_by_tile(lo, prompts).items():
            emb = embedding.features["image_embed"][t : t + 1].astype(np.float32, copy=False)
            hi = embedding.features["high_res"][t : t + 1].astype(np.float32, copy=False)
            for start in range(0, len(entries), self.decode_chunk):
                chunk = entries[start : start + self.decode_chunk]
                coords, labels = lay.pad_points([(c, lb) for _, c, lb in chunk])
                masks, scores = self._run_decoder(emb, hi, coords, labels)
                for j, (p, _, lb) in enumerate(chunk):
                    idx = pp.choose_mask(masks[j], scores[j], len(lb))
                    pieces[p].append((t, masks[j, idx], float(scores[j, idx])))
        return [stitched(lo, parts) for parts in pieces]

    def _decode_resized(self, embedding: Embedding, prompts: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Decoded]:
        out: list[Decoded] = []
        emb = embedding.features["image_embed"][None].astype(np.float32, copy=False)
        hi = embedding.features["high_res"][None].astype(np.float32, copy=False)
        for start in range(0, len(prompts), self.decode_chunk):
            chunk = prompts[start : start + self.decode_chunk]
            coords, labels = pp.pad_prompts(chunk, [embedding.orig_hw] * len(chunk), self.input_size)
            masks, scores = self._run_decoder(emb, hi, coords, labels)
            for i, (_, lbs) in enumerate(chunk):
                out.append(self._finish(masks[i], scores[i], len(np.asarray(lbs).reshape(-1)), embedding.orig_hw))
        return out

    def decode_full(self, embedding: Embedding, prompt: Prompt) -> Decoded:
        """The student has no box or mask encoder (it is distilled on point prompts, design seed 001): a box or mask
        prompt is refused with the reason rather than decoded as if it were not there."""
        if prompt.points_only:
            return self.decode(embedding, prompt.points, prompt.labels)
        raise PromptNotSupported(not_supported_message(self))

    def predict(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Decoded]:
        """Batched encoder pass, then one decoder call for the whole batch (one prompt per image)."""
        if len(images) != len(prompts):
            raise ValueError("predict needs one prompt per image")
        if not all(p.points_only for p in prompts):
            raise PromptNotSupported(not_supported_message(self))
        if not images:
            return []
        embs = self.embed_batch(images)
        return self.decode_batch(embs, [(p.points, p.labels) for p in prompts])

    def decode_batch(
        self, embeddings: Sequence[Embedding], prompts: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> list[Decoded]:
        """One prompt per embedding, in one decoder call (what batch predict uses on a GPU)."""
        if any(e.layout is None for e in embeddings):
            emb = np.stack([e.features["image_embed"] for e in embeddings]).astype(np.float32, copy=False)
            hi = np.stack([e.features["high_res"] for e in embeddings]).astype(np.float32, copy=False)
            coords, labels = pp.pad_prompts(prompts, [e.orig_hw for e in embeddings], self.input_size)
            masks, scores = self._run_decoder(emb, hi, coords, labels)
            return [
                self._finish(masks[i], scores[i], len(np.asarray(lb).reshape(-1)), e.orig_hw)
                for i, (e, (_, lb)) in enumerate(zip(embeddings, prompts))
            ]
        entries = [(i, t, c, lb) for i, (e, (pts, lbs)) in enumerate(zip(embeddings, prompts))
                   for t, c, lb in lay.tile_prompts(e.layout, pts, lbs)]
        pieces: list[list[tuple[int, np.ndarray, float]]] = [[] for _ in embeddings]
        if entries:
            emb = np.stack([embeddings[i].features["image_embed"][t] for i, t, _, _ in entries]).astype(np.float32)
            hi = np.stack([embeddings[i].features["high_res"][t] for i, t, _, _ in entries]).astype(np.float32)
            coords, labels = lay.pad_points([(c, lb) for _, _, c, lb in entries])
            masks, scores = self._run_decoder(emb, hi, coords, labels)
            for j, (i, t, _, lb) in enumerate(entries):
                idx = pp.choose_mask(masks[j], scores[j], len(lb))
                pieces[i].append((t, masks[j, idx], float(scores[j, idx])))
        return [stitched(e.layout, parts) for e, parts in zip(embeddings, pieces)]  # type: ignore[arg-type]

    @staticmethod
    def _finish(masks: np.ndarray, scores: np.ndarray, n_points: int, orig_hw: tuple[int, int]) -> Decoded:
        idx = pp.choose_mask(masks, scores, n_points)
        return Decoded(logits=pp.logits_to_original(masks[idx], orig_hw), score=float(scores[idx]))
