"""Plain ONNX export of the student as an encoder graph + a decoder graph (opset 17).

The pair mirrors the interactive split: the encoder runs once per image, the decoder once per click. Contracts
(what inference.ort_backend feeds them, via inference.preprocess):

  encoder  image (B, 3, S, S) float32, resized + ImageNet-normalised
           -> image_embed (B, 256, S/16, S/16), high_res (B, C, S/k, S/k)   (k: mask stride 2, 4, 8; C: high_res_channels)
  decoder  image_embed (B|1, 256, S/16, S/16), high_res (B|1, C, S/k, S/k),
           point_coords (B, N, 2) float32 x/y in input pixels, point_labels (B, N) float32 (1, 0, -1 = padding)
           -> masks (B, K, S/k, S/k) logits, scores (B, K)

B and N are dynamic; an image side of batch 1 is broadcast over B prompts. The functions take a model and a path
and return the path, so quantisation / TensorRT / graph-merging code can reuse them; metadata_props carry the input
size, the architecture and the student config, so a station can open the pair with no other file.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

OPSET = 17
ENCODER_INPUTS = ("image",)
ENCODER_OUTPUTS = ("image_embed", "high_res")
DECODER_INPUTS = ("image_embed", "high_res", "point_coords", "point_labels")
DECODER_OUTPUTS = ("masks", "scores")


def _metadata(model: Any, part: str) -> dict[str, str]:
    cfg = model.config
    return {
        "maskbench.part": part,
        "maskbench.architecture": "tinyvit5m_pointdec",
        "maskbench.input_size": str(cfg.input_size),
        "maskbench.config": json.dumps(cfg.to_dict(), sort_keys=True),
    }


def _add_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    m = onnx.load(str(path))
    for k, v in meta.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(m, str(path))


def _export(module: Any, args: tuple[Any, ...], path: Path, inputs: tuple[str, ...], outputs: tuple[str, ...],
            dynamic_axes: dict[str, dict[int, str]], opset: int) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic that is constant for a fixed S
        torch.onnx.export(
            module, args, str(path), input_names=list(inputs), output_names=list(outputs),
            dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False,
        )


class _EncoderModule:
    """Wraps the student's encoder as a Module whose forward takes only the image (fixes the export signature)."""

    @staticmethod
    def make(model: Any) -> Any:
        import torch

        class Enc(torch.nn.Module):
            def __init__(self, m: Any) -> None:
                super().__init__()
                self.encoder = m.encoder

            def forward(self, image: torch.Tensor):
                return self.encoder(image)

        return Enc(model).eval()


def export_encoder(model: Any, path: Path | str, opset: int = OPSET, batch: int = 1) -> Path:
    """The image encoder (timm TinyViT-5M + neck) of a StudentModel; dynamic batch."""
    import copy

    import torch

    path = Path(path)
    s = model.config.input_size
    enc = _EncoderModule.make(copy.deepcopy(model).float().eval())
    x = torch.randn(batch, 3, s, s)
    _export(enc, (x,), path, ENCODER_INPUTS, ENCODER_OUTPUTS,
            {"image": {0: "batch"}, "image_embed": {0: "batch"}, "high_res": {0: "batch"}}, opset)
    _add_metadata(path, _metadata(model, "encoder"))
    return path


def export_decoder(model: Any, path: Path | str, opset: int = OPSET) -> Path:
    """Prompt encoder + mask decoder of a StudentModel; dynamic prompt batch and number of points."""
    import copy

    import torch

    path = Path(path)
    cfg = model.config
    dec = copy.deepcopy(model.decoder).float().eval()
    e = cfg.embed_hw
    emb = torch.randn(2, cfg.embed_dim, e, e)
    hi = torch.randn(2, cfg.high_res_channels, cfg.high_res_hw, cfg.high_res_hw)
    pts = torch.rand(2, 3, 2) * cfg.input_size
    lbl = torch.tensor([[1.0, 0.0, -1.0], [1.0, 1.0, 0.0]])
    axes = {
        "image_embed": {0: "image_batch"},
        "high_res": {0: "image_batch"},
        "point_coords": {0: "batch", 1: "num_points"},
        "point_labels": {0: "batch", 1: "num_points"},
        "masks": {0: "batch"},
        "scores": {0: "batch"},
    }
    _export(dec, (emb, hi, pts, lbl), path, DECODER_INPUTS, DECODER_OUTPUTS, axes, opset)
    _add_metadata(path, _metadata(model, "decoder"))
    return path


def export_student(model: Any, out_dir: Path | str, stem: str = "student", opset: int = OPSET) -> dict[str, Path]:
    """Both graphs into `out_dir` as <stem>_encoder.onnx and <stem>_decoder.onnx."""
    out = Path(out_dir)
    return {
        "encoder": export_encoder(model, out / f"{stem}_encoder.onnx", opset=opset),
        "decoder": export_decoder(model, out / f"{stem}_decoder.onnx", opset=opset),
    }


def export_student_checkpoint(checkpoint: Path | str, out_dir: Path | str, stem: str | None = None) -> dict[str, Path]:
    from inference.student import load_checkpoint

    ck = Path(checkpoint)
    return export_student(load_checkpoint(ck), out_dir, stem=stem or ck.stem)
