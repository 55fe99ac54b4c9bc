"""ONNX graphs: the student merged into one graph, and the SAM 2 teacher as an encoder/decoder pair.

Merged student ("single"):
  inputs  image (B, 3, S, S) float32 RGB in [0, 255], resized to S x S (inference.preprocess conventions);
          point_coords (B, N, 2) float32 x/y in input pixels; point_labels (B, N) float32, 1 positive /
          0 negative / -1 padding
  outputs mask_logits (B, 1, h, w) float32 at the decoder's resolution; score (B, 1) float32
  Normalisation and the choice among multimask outputs (inference.preprocess.choose_mask) are inside the graph,
  so a station feeds pixels and gets one mask. B and N are dynamic.

Teacher pair (SAM 2 image encoder; prompt encoder + mask decoder with the high-res features as decoder inputs):
  encoder: image (B, 3, T, T) float32 RGB in [0, 255] -> image_embed, high_res_0, high_res_1
  decoder: image_embed, high_res_0, high_res_1, point_coords (B, N, 2) in input pixels, point_labels (B, N)
           -> mask_logits (B, 1, T/4, T/4), score (B, 1)

torch is imported inside the functions (this module imports on a station without torch).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from inference.export.calibration import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger("maskbench.export")

OPSET = 18
SINGLE_INPUTS = ("image", "point_coords", "point_labels")
SINGLE_OUTPUTS = ("mask_logits", "score")


def _torch() -> Any:
    import torch

    return torch


def _export(module: Any, args: tuple[Any, ...], path: Path, input_names: list[str], output_names: list[str],
            dynamic_axes: dict[str, dict[int, str]]) -> Path:
    """torch.onnx.export with the TorchScript exporter (stable names, dynamic axes, no onnxscript rewrites),
    falling back to the dynamo exporter. Weights inline: the student is a few MB."""
    torch = _torch()
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True,
                              dynamo=False)
        except Exception as exc:  # noqa: BLE001 - the TorchScript exporter is deprecated; try dynamo
            log.info("TorchScript ONNX export failed (%s); trying the dynamo exporter", exc)
            dims = {k: {i: torch.export.Dim.AUTO for i in v} for k, v in dynamic_axes.items() if k in input_names}
            prog = torch.onnx.export(module, args, input_names=input_names, output_names=output_names,
                                     dynamic_shapes=dims, opset_version=OPSET, dynamo=True, external_data=False)
            prog.save(str(path), external_data=False)
    import onnx

    onnx.checker.check_model(str(path))
    return path


# --- student ------------------------------------------------------------------------------------------------


def select_mask(masks: Any, scores: Any, labels: Any) -> tuple[Any, Any]:
    """In-graph version of inference.preprocess.choose_mask: one real click and K > 1 -> best of outputs 1..K-1,
    otherwise output 0. Returns (B, 1, h, w), (B, 1)."""
    torch = _torch()

    k = masks.shape[1]
    if k == 1:
        return masks, scores
    n_real = (labels >= 0).sum(dim=1)
    best = torch.argmax(scores[:, 1:], dim=1) + 1
    idx = torch.where(n_real == 1, best, torch.zeros_like(best))
    b = torch.arange(masks.shape[0])
    return masks[b, idx].unsqueeze(1), scores[b, idx].unsqueeze(1)


def single_module(student: Any) -> Any:
    """A StudentModel (inference.student) as the merged graph's module: normalisation, encoder, decoder, one mask."""
    torch = _torch()
    from torch import nn

    class MergedStudent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.student = student
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        def forward(self, image: Any, point_coords: Any, point_labels: Any) -> tuple[Any, Any]:
            emb, hi = self.student.encode((image - self.mean) / self.std)
            masks, scores = self.student.decoder(emb, hi, point_coords, point_labels)
            return select_mask(masks, scores, point_labels)

    return MergedStudent().eval()


def export_student_single(student: Any, path: Path, input_size: int) -> Path:
    torch = _torch()
    module = single_module(student)
    args = (torch.rand(2, 3, input_size, input_size) * 255, torch.rand(2, 2, 2) * input_size,
            torch.tensor([[1.0, 0.0], [1.0, -1.0]]))
    dyn = {"image": {0: "batch"}, "point_coords": {0: "batch", 1: "points"}, "point_labels": {0: "batch", 1: "points"},
           "mask_logits": {0: "batch"}, "score": {0: "batch"}}
    return _export(module, args, path, list(SINGLE_INPUTS), list(SINGLE_OUTPUTS), dyn)


def torch_runner(module: Any) -> Any:
    """A callable feeds -> (logits (h, w), score) running the merged module in PyTorch (the parity reference)."""
    torch = _torch()

    def run(feeds: dict[str, Any]) -> tuple[Any, Any]:
        with torch.no_grad():
            logits, score = module(*(torch.from_numpy(feeds[k]) for k in SINGLE_INPUTS))
        return logits[0, 0].numpy(), score[0].numpy()

    return run


def count_params(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


# --- SAM 2 teacher --------------------------------------------------------------------------------------------


def teacher_modules(net: Any) -> tuple[Any, Any]:
    """The ONNX teacher pair's modules around a SAM 2 (inference.sam2_net.Sam2Net): encoder from [0, 255] pixels,
    decoder with the high-res features as inputs."""
    torch = _torch()
    from torch import nn

    class TeacherEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        def forward(self, image: Any) -> tuple[Any, Any, Any]:
            f = self.net.encode_normalised((image - self.mean) / self.std)
            return f["image_embed"], f["high_res_0"], f["high_res_1"]

    class TeacherDecoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, image_embed: Any, high_res_0: Any, high_res_1: Any, point_coords: Any,
                    point_labels: Any) -> tuple[Any, Any]:
            feats = {"image_embed": image_embed, "high_res_0": high_res_0, "high_res_1": high_res_1}
            return self.net.decode_single(feats, point_coords, point_labels)

    return TeacherEncoder().eval(), TeacherDecoder().eval()


def export_teacher_pair(net: Any, encoder_path: Path, decoder_path: Path) -> tuple[Path, Path]:
    torch = _torch()
    enc, dec = teacher_modules(net)
    size = net.image_size
    image = torch.rand(1, 3, size, size) * 255
    _export(enc, (image,), encoder_path, ["image"], ["image_embed", "high_res_0", "high_res_1"],
            {"image": {0: "batch"}, "image_embed": {0: "batch"}, "high_res_0": {0: "batch"},
             "high_res_1": {0: "batch"}})
    with torch.no_grad():
        feats = enc(image)
    coords = torch.rand(1, 2, 2) * size
    labels = torch.tensor([[1.0, 0.0]])
    names = ["image_embed", "high_res_0", "high_res_1", "point_coords", "point_labels"]
    _export(dec, (*feats, coords, labels), decoder_path, names, ["mask_logits", "score"],
            {"image_embed": {0: "batch"}, "high_res_0": {0: "batch"}, "high_res_1": {0: "batch"},
             "point_coords": {0: "batch", 1: "points"}, "point_labels": {0: "batch", 1: "points"},
             "mask_logits": {0: "batch"}, "score": {0: "batch"}})
    return encoder_path, decoder_path
