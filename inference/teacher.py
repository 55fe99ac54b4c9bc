"""The SAM 2 teacher through the official `sam2` package.

The model is built by inference.sam2_net (`build_sam2` from the package's own Hydra configs) and the image predictor
(`SAM2ImagePredictor`) does the transforms, the embedding (`image_embed` + the two high-resolution feature maps) and
the prompt/mask decoding, so the teacher behaves exactly like upstream SAM 2. What we add: the embedding is handed
out as numpy (so it can be cached on disk and decoded later without recomputation), the input size can be changed
(`++model.image_size=...`, for CPU-sized tests), and a checkpoint is verified against its config with a message that
names the config that would fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from inference.errors import ModelError
from inference.runtime import CPU_ENCODE_CHUNK
from inference.sam2_configs import native_scale_only, resolve_config
from inference.sam2_net import FEATURES as FEATURE_NAMES
from inference.sam2_net import Sam2Net, choose_output, decoder_click_maps, load_model
from inference.segmenter import Decoded, Embedding, Prompt, mask_to_logits
from inference.torch_backend import autocast, check_precision, resolve_device


class Sam2Segmenter:
    """SAM 2 behind the Segmenter interface (teacher)."""

    kind = "teacher"
    model_id: int | None = None  # a bare model; inference.registry.load_segmenter's wrapper carries the record's
    decode_chunk = 32

    def __init__(
        self, model: torch.nn.Module, name: str = "teacher", sha256: str = "", device: str | None = "cpu",
        precision: str = "fp32", config: str = "",
    ) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        if decoder_click_maps(model) is not None:
            raise ModelError(native_scale_only(config or "of this teacher"))
        self.device = resolve_device(device)
        self.precision = check_precision(precision, self.device)
        self.model = model.to(self.device).eval()
        self.predictor = SAM2ImagePredictor(self.model)
        s = int(self.model.image_size)
        # the predictor hard-codes the 1024 feature sizes; derive them from the actual input size
        self.predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
        self.name = name
        self.sha256 = sha256
        self.config = config
        self.input_size = s
        self.encoder_images = 0

    def embed(self, image: np.ndarray) -> Embedding:
        return self.embed_batch([image])[0]

    def embed_batch(self, images: Sequence[np.ndarray]) -> list[Embedding]:
        from inference.preprocess import as_rgb

        if not images:
            return []
        imgs = [as_rgb(im) for im in images]
        with autocast(self.device, self.precision):
            self.predictor.set_image_batch(imgs)
        feats = self.predictor._features
        self.encoder_images += len(imgs)
        out = []
        for i, im in enumerate(imgs):
            arrays = [feats["image_embed"][i], feats["high_res_feats"][0][i], feats["high_res_feats"][1][i]]
            out.append(
                Embedding(
                    features={k: a.float().cpu().numpy() for k, a in zip(FEATURE_NAMES, arrays)},
                    orig_hw=(int(im.shape[0]), int(im.shape[1])),
                    input_size=self.input_size,
                    model_sha256=self.sha256,
                )
            )
        self.predictor.reset_predictor()
        return out

    def _set_embedding(self, embedding: Embedding) -> None:
        t = lambda k: torch.from_numpy(np.ascontiguousarray(embedding.features[k], np.float32))[None].to(self.device)  # noqa: E731
        p = self.predictor
        p.reset_predictor()
        p._features = {"image_embed": t("image_embed"), "high_res_feats": [t("high_res_0"), t("high_res_1")]}
        p._orig_hw = [tuple(embedding.orig_hw)]
        p._is_image_set = True

    def decode(self, embedding: Embedding, points: np.ndarray, labels: np.ndarray) -> Decoded:
        return self.decode_prompts(embedding, [(points, labels)])[0]

    def decode_prompts(self, embedding: Embedding, prompts: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Decoded]:
        """Prompts with the same number of points go through the decoder together (SAM 2's batched prompts)."""
        self._set_embedding(embedding)
        results: list[Decoded | None] = [None] * len(prompts)
        groups: dict[int, list[int]] = {}
        for i, (_, lb) in enumerate(prompts):
            groups.setdefault(len(np.asarray(lb).reshape(-1)), []).append(i)
        p = self.predictor
        try:
            for n, idxs in groups.items():
                for start in range(0, len(idxs), self.decode_chunk):
                    chunk = idxs[start : start + self.decode_chunk]
                    if n == 0:
                        coords = labels = None
                    else:
                        coords = np.stack([np.asarray(prompts[i][0], np.float32).reshape(n, 2) for i in chunk])
                        labels = np.stack([np.asarray(prompts[i][1], np.int32).reshape(n) for i in chunk])
                    multimask = n <= 1
                    with autocast(self.device, self.precision):
                        _, unnorm, lbl, _ = p._prep_prompts(coords, labels, None, None, True)
                        masks, ious, _ = p._predict(unnorm, lbl, None, None, multimask, return_logits=True)
                    masks = masks.float().cpu().numpy()  # (B, C, H, W) at the original size
                    ious = ious.float().cpu().numpy()
                    for j, i in enumerate(chunk):
                        k = int(np.argmax(ious[j])) if multimask else 0
                        results[i] = Decoded(logits=masks[j, k], score=float(ious[j, k]))
        finally:
            p.reset_predictor()
        return [r for r in results if r is not None]

    def mask_input(self, mask: np.ndarray) -> np.ndarray:
        """A bool mask at the crop's size -> SAM 2's mask input, (1, S/4, S/4) logits.

        The predictor resizes the crop to the S x S square without keeping its aspect ratio, and the prompt
        encoder's mask grid (`mask_input_size`, 256 x 256 for S = 1024) covers that square, so the mask is resized
        the same way (area averaging) and mapped to logits by inference.segmenter.mask_to_logits."""
        grid = tuple(int(v) for v in self.model.sam_prompt_encoder.mask_input_size)
        return mask_to_logits(mask, grid)[None]

    def decode_full(self, embedding: Embedding, prompt: Prompt) -> Decoded:
        """Points plus an optional box (x0, y0, x1, y1) and mask (SAM 2's `box=` and `mask_input=`).

        SAM's own rule for the output: the best of three candidates only for a single click, which is ambiguous; a
        box or a mask says which object is meant, so the single-mask output is used."""
        pts = np.asarray(prompt.points, np.float32).reshape(-1, 2)
        lbs = np.asarray(prompt.labels, np.int32).reshape(-1)
        box = None if prompt.box is None else np.asarray(prompt.box, np.float32).reshape(4)
        logits = None if prompt.mask is None else self.mask_input(prompt.mask)
        if logits is not None and tuple(np.asarray(prompt.mask).shape[:2]) != tuple(embedding.orig_hw):
            raise ModelError(f"mask prompt is {np.asarray(prompt.mask).shape[:2]}, the crop {embedding.orig_hw}")
        multimask = len(lbs) == 1 and box is None and logits is None
        self._set_embedding(embedding)
        p = self.predictor
        try:
            with autocast(self.device, self.precision):
                mask_in, unnorm, lbl, unnorm_box = p._prep_prompts(
                    pts[None] if len(lbs) else None, lbs[None] if len(lbs) else None, box, logits, True)
                masks, ious, _ = p._predict(unnorm, lbl, unnorm_box, mask_in, multimask, return_logits=True)
            masks = masks.float().cpu().numpy()
            ious = ious.float().cpu().numpy()
        finally:
            p.reset_predictor()
        k = int(np.argmax(ious[0])) if multimask else 0
        return Decoded(logits=masks[0, k], score=float(ious[0, k]))

    def decode_batch(self, embeddings: Sequence[Embedding], prompts: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Decoded]:
        return [self.decode(e, p, lb) for e, (p, lb) in zip(embeddings, prompts)]

    def predict(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Decoded]:
        if len(images) != len(prompts):
            raise ValueError("predict needs one prompt per image")
        embs = self.embed_batch(images)
        return [self.decode(e, p.points, p.labels) if p.points_only else self.decode_full(e, p)
                for e, p in zip(embs, prompts)]


class Sam2NativeSegmenter:
    """SAM 2 on crops at their own pixel scale (inference.layout): the teacher this project trains from scratch.

    SAM's resize-to-square (Sam2Segmenter) suits SA-1B checkpoints; a teacher fine-tuned here learned on canvases
    of native pixels (optionally at a fixed `scale`), so it must predict on the same canvases. Same rule for the
    mask choice as SAM (one click: best multimask candidate; more: the single-mask output)."""

    kind = "teacher"
    model_id: int | None = None  # a bare model; inference.registry.load_segmenter's wrapper carries the record's
    decode_chunk = 32
    encode_chunk = 8

    def __init__(
        self, model: torch.nn.Module, name: str = "teacher", sha256: str = "", device: str | None = "cpu",
        precision: str = "fp32", config: str = "", scale: float = 1.0,
    ) -> None:
        self.device = resolve_device(device)
        self.precision = check_precision(precision, self.device)
        self.net = Sam2Net(model).to(self.device).eval()
        if self.device.type == "cpu":  # inference.runtime.CPU_ENCODE_CHUNK
            self.encode_chunk = CPU_ENCODE_CHUNK
        self.name = name
        self.sha256 = sha256
        self.config = config
        self.scale = float(scale)
        self.input_size = self.net.image_size
        self.encoder_images = 0

    def embed(self, image: np.ndarray) -> Embedding:
        return self.embed_batch([image])[0]

    def embed_batch(self, images: Sequence[np.ndarray]) -> list[Embedding]:
        from inference import layout as lay
        from inference.preprocess import as_rgb

        imgs = [as_rgb(im) for im in images]
        layouts = [lay.plan(im.shape[:2], self.input_size, self.scale) for im in imgs]
        canv = np.concatenate([lay.normalised_canvases(im, lo) for im, lo in zip(imgs, layouts)]) if imgs else None
        feats: dict[str, list[np.ndarray]] = {k: [] for k in FEATURE_NAMES}
        for start in range(0, 0 if canv is None else len(canv), self.encode_chunk):
            x = torch.from_numpy(canv[start:start + self.encode_chunk]).to(self.device)
            with autocast(self.device, self.precision):
                out = self.net.encode_normalised(x)
            for k in FEATURE_NAMES:
                feats[k].append(out[k].float().cpu().numpy())
        self.encoder_images += len(imgs)
        stacked = {k: np.concatenate(v) for k, v in feats.items()} if imgs else {}
        embs, start = [], 0
        for im, lo in zip(imgs, layouts):
            end = start + len(lo.tiles)
            embs.append(Embedding(features={k: stacked[k][start:end] for k in FEATURE_NAMES},
                                  orig_hw=(int(im.shape[0]), int(im.shape[1])), input_size=self.input_size,
                                  model_sha256=self.sha256, layout=lo))
            start = end
        return embs

    def decode(self, embedding: Embedding, points: np.ndarray, labels: np.ndarray) -> Decoded:
        return self.decode_prompts(embedding, [(points, labels)])[0]

    def decode_prompts(self, embedding: Embedding, prompts: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Decoded]:
        from inference import layout as lay
        from inference.runtime import stitched

        lo = embedding.layout
        if lo is None:
            raise ModelError("this embedding was not made at native scale; re-embed the crop with this teacher")
        pieces: list[list[tuple[int, np.ndarray, float]]] = [[] for _ in prompts]
        for t, entries in lay.group_by_tile(lo, prompts).items():
            feats = {k: torch.from_numpy(np.ascontiguousarray(embedding.features[k][t:t + 1], np.float32)).to(self.device)
                     for k in FEATURE_NAMES}
            for start in range(0, len(entries), self.decode_chunk):
                chunk = entries[start:start + self.decode_chunk]
                coords, labels = lay.pad_points([(c, lb) for _, c, lb in chunk])
                c_t, l_t = torch.from_numpy(coords).to(self.device), torch.from_numpy(labels).to(self.device)
                with autocast(self.device, self.precision):
                    masks, iou = self.net.decode_all(feats, c_t, l_t)
                    chosen, idx = choose_output(masks, iou, l_t)
                chosen = chosen[:, 0].float().cpu().numpy()
                scores = iou.float().gather(1, idx[:, None])[:, 0].cpu().numpy()
                for j, (p, _, _) in enumerate(chunk):
                    pieces[p].append((t, chosen[j], float(scores[j])))
        return [stitched(lo, parts) for parts in pieces]

    def decode_full(self, embedding: Embedding, prompt: Prompt) -> Decoded:
        """Points plus an optional box and mask at native scale, tile by tile (inference.layout).

        A tile is decoded when the box overlaps it, or when it holds a positive click, or (with neither) when the
        mask prompt has pixels in it; each decoded tile sees its own clicks, the box clipped to it and the part of
        the mask prompt it covers on its canvas (padding is background), in canvas pixels. With a box or a mask the
        single-mask output is used (they are not ambiguous); otherwise SAM's rule (inference.sam2_net.choose_output).
        """
        from inference.runtime import stitched

        lo = embedding.layout
        if lo is None:
            raise ModelError("this embedding was not made at native scale; re-embed the crop with this teacher")
        s, sc = lo.canvas, lo.scale
        hs, ws = lo.scaled_hw
        pts = np.asarray(prompt.points, np.float32).reshape(-1, 2) * np.float32(sc)
        lbs = np.asarray(prompt.labels, np.float32).reshape(-1)
        box = None if prompt.box is None else np.asarray(prompt.box, np.float32).reshape(4) * np.float32(sc)
        scaled_mask = None
        if prompt.mask is not None:
            m = np.asarray(prompt.mask, np.float32)
            if m.shape != tuple(embedding.orig_hw):
                raise ModelError(f"mask prompt is {m.shape}, the crop {tuple(embedding.orig_hw)}")
            scaled_mask = m if (hs, ws) == m.shape else cv2.resize(m, (ws, hs), interpolation=cv2.INTER_AREA)
        grid = tuple(int(v) for v in self.net.model.sam_prompt_encoder.mask_input_size)
        parts: list[tuple[int, np.ndarray, float]] = []
        for t, (y0, x0) in enumerate(lo.tiles):
            local = pts - np.array([x0, y0], np.float32)
            inside = (local[:, 0] >= 0) & (local[:, 0] < s) & (local[:, 1] >= 0) & (local[:, 1] < s)
            tbox = None
            if box is not None:
                bx = np.clip(box - np.array([x0, y0, x0, y0], np.float32), 0, [min(s, ws - x0), min(s, hs - y0)] * 2)
                tbox = bx if bx[2] > bx[0] and bx[3] > bx[1] else None
            canvas = None
            if scaled_mask is not None:
                canvas = np.zeros((s, s), np.float32)
                part = scaled_mask[y0:y0 + s, x0:x0 + s]
                canvas[:part.shape[0], :part.shape[1]] = part
            if box is not None:
                wanted = tbox is not None or bool((lbs[inside] == 1).any())
            elif (lbs == 1).any():
                wanted = bool((lbs[inside] == 1).any())
            else:
                wanted = (canvas is not None and bool(canvas.any())) or bool(inside.any()) or not len(lbs)
            if not wanted:
                continue
            coords, labels = local[inside], lbs[inside]
            if tbox is not None:
                coords = np.concatenate([tbox.reshape(2, 2), coords])
                labels = np.concatenate([np.array([2, 3], np.float32), labels])
            feats = {k: torch.from_numpy(np.ascontiguousarray(embedding.features[k][t:t + 1], np.float32))
                     .to(self.device) for k in FEATURE_NAMES}
            c_t = torch.from_numpy(np.ascontiguousarray(coords, np.float32)[None]).to(self.device)
            l_t = torch.from_numpy(np.ascontiguousarray(labels, np.float32)[None]).to(self.device)
            m_t = None if canvas is None else torch.from_numpy(mask_to_logits(canvas, grid)[None, None]).to(self.device)
            with autocast(self.device, self.precision):
                masks, iou = self.net.decode_all(feats, c_t, l_t, mask_input=m_t)
                if tbox is None and m_t is None:
                    chosen, idx = choose_output(masks, iou, l_t)
                else:
                    chosen, idx = masks[:, :1], torch.zeros(1, dtype=torch.long, device=masks.device)
            score = float(iou.float().gather(1, idx[:, None])[0, 0].cpu())
            parts.append((t, chosen[0, 0].float().cpu().numpy(), score))
        return stitched(lo, parts)

    def decode_batch(self, embeddings: Sequence[Embedding], prompts: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Decoded]:
        return [self.decode(e, p, lb) for e, (p, lb) in zip(embeddings, prompts)]

    def predict(self, images: Sequence[np.ndarray], prompts: Sequence[Prompt]) -> list[Decoded]:
        if len(images) != len(prompts):
            raise ValueError("predict needs one prompt per image")
        embs = self.embed_batch(images)
        return [self.decode(e, p.points, p.labels) if p.points_only else self.decode_full(e, p)
                for e, p in zip(embs, prompts)]


def load_teacher_segmenter(
    path: Path | str, config: str, image_size: int = 1024, name: str = "teacher", sha256: str = "",
    device: str | None = "cpu", precision: str = "fp32", scale: float | None = None,
) -> Sam2Segmenter | Sam2NativeSegmenter:
    """`scale` None: SAM's resize-to-square predictor (SA-1B checkpoints); a number: native pixel scale."""
    dev = resolve_device(device)
    model = load_model(path, config, image_size=image_size, device=dev)
    if scale is not None:
        return Sam2NativeSegmenter(model, name=name, sha256=sha256, device=str(dev), precision=precision,
                                   config=resolve_config(config)[0], scale=scale)
    return Sam2Segmenter(model, name=name, sha256=sha256, device=str(dev), precision=precision,
                         config=resolve_config(config)[0])
