"""The student segmenter logic that does not depend on the backend (numpy only).

A backend supplies two raw calls: `_run_encoder((B,3,S,S) float32) -> {"image_embed", "high_res"}` and
`_run_decoder(image_embed, high_res, coords (B,N,2), labels (B,N)) -> (masks (B,K,h,w), scores (B,K))`. Everything
around them (resize, normalise, coordinate mapping, padding of prompts, mask choice, resize back) lives here, so the
PyTorch and the ONNX Runtime students cannot drift apart, and the ONNX path needs no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inference import preprocess as pp
from inference.segmenter import Decoded, Embedding, Prompt

STUDENT_FEATURES = ("image_embed", "high_res")


class StudentRuntime:
    kind = "student"
    name: str
    sha256: str
    input_size: int
    decode_chunk = 64  # prompts per decoder call when many prompts share one image (automatic masks)

    def __init__(self) -> None:
        self.encoder_images = 0  # images that went through the encoder; tests and benchmarks read it

    # Backends implement these two.
    def _run_encoder(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _run_decoder(
        self, image_embed: np.ndarray, high_res: np.ndarray, coords: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    # Segmenter interface
    def embed(self, image: np.ndarray) -> Embedding:
        return self.embed_batch([image])[0]

    def embed_batch(self, images: Sequence[np.ndarray]) -> list[Embedding]:
        if not images:
            return []
        batch = pp.images_to_batch(images, self.input_size)
        out = self._run_encoder(batch)
        self.encoder_images += len(images)
        return [
            Embedding(
                features={k: np.asarray(out[k][i], np.float32) for k in STUDENT_FEATURES},
                orig_hw=(int(im.shape[0]), int(im.shape[1])),
                input_size=self.input_size,
                model_sha256=self.sha256,
            )
            for i, im in enumerate(images)
        ]

    def decode(self, embedding: Embedding, points: np.ndarray, labels: np.ndarray) -> Decoded:
        return self.decode_prompts(embedding, [(points, labels)])[0]

    def decode_prompts(self, embedding: Embedding, prompts: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Decoded]:
        """Several prompts on one image in batched decoder calls (the embedding is broadcast, not copied)."""
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

    def predict(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Decoded]:
        """Batched encoder pass, then one decoder call for the whole batch (one prompt per image)."""
        if len(images) != len(prompts):
            raise ValueError("predict needs one prompt per image")
        if not images:
            return []
        embs = self.embed_batch(images)
        return self.decode_batch(embs, [(p.points, p.labels) for p in prompts])

    def decode_batch(
        self, embeddings: Sequence[Embedding], prompts: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> list[Decoded]:
        """One prompt per embedding, in one decoder call (what batch predict uses on a GPU)."""
        emb = np.stack([e.features["image_embed"] for e in embeddings]).astype(np.float32, copy=False)
        hi = np.stack([e.features["high_res"] for e in embeddings]).astype(np.float32, copy=False)
        coords, labels = pp.pad_prompts(prompts, [e.orig_hw for e in embeddings], self.input_size)
        masks, scores = self._run_decoder(emb, hi, coords, labels)
        return [
            self._finish(masks[i], scores[i], len(np.asarray(lb).reshape(-1)), e.orig_hw)
            for i, (e, (_, lb)) in enumerate(zip(embeddings, prompts))
        ]

    @staticmethod
    def _finish(masks: np.ndarray, scores: np.ndarray, n_points: int, orig_hw: tuple[int, int]) -> Decoded:
        idx = pp.choose_mask(masks, scores, n_points)
        return Decoded(logits=pp.logits_to_original(masks[idx], orig_hw), score=float(scores[idx]))
