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


def _single_module(student: Any) -> Any:
    """Wrap a student into the merged graph's module (normalisation + encoder + decoder, first mask only)."""
    from torch import nn

    from inference.export import student_api

    class MergedStudent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.student = student

        def forward(self, image: Any, point_coords: Any, point_labels: Any) -> tuple[Any, Any]:
            masks, scores = student_api.forward_pixels(self.student, image, point_coords, point_labels)
            return student_api.select_mask(masks, scores, point_labels)

    return MergedStudent().eval()


def single_module(student: Any) -> Any:
    return _single_module(student)


def export_student_single(student: Any, path: Path, input_size: int) -> Path:
    torch = _torch()
    module = _single_module(student)
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


def build_teacher(config: str = "configs/sam2.1/sam2.1_hiera_t.yaml", checkpoint: str | None = None,
                  image_size: int | None = None) -> Any:
    """A SAM2Base on CPU; random weights when no checkpoint is given (tests, graph checks)."""
    from sam2.build_sam import build_sam2

    from inference.sam2_configs import hydra_config

    config, reduced = hydra_config(config)
    extra = reduced + ([f"++model.image_size={int(image_size)}"] if image_size else [])
    return build_sam2(config, ckpt_path=checkpoint, device="cpu", mode="eval", hydra_overrides_extra=extra)


def teacher_modules(sam: Any) -> tuple[Any, Any]:
    torch = _torch()
    from torch import nn

    size = int(sam.image_size)
    feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]

    class TeacherEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sam = sam
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        def forward(self, image: Any) -> tuple[Any, Any, Any]:
            x = (image - self.mean) / self.std
            backbone_out = self.sam.forward_image(x)
            _, vision_feats, _, _ = self.sam._prepare_backbone_features(backbone_out)
            if self.sam.directly_add_no_mem_embed:
                vision_feats[-1] = vision_feats[-1] + self.sam.no_mem_embed
            b = image.shape[0]
            feats = [f.permute(1, 2, 0).reshape(b, -1, *hw) for f, hw in zip(vision_feats, feat_sizes)]
            return feats[2], feats[0], feats[1]

    class TeacherDecoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sam = sam

        def forward(self, image_embed: Any, high_res_0: Any, high_res_1: Any, point_coords: Any,
                    point_labels: Any) -> tuple[Any, Any]:
            sparse, dense = self.sam.sam_prompt_encoder(points=(point_coords, point_labels.to(torch.int32)),
                                                        boxes=None, masks=None)
            masks, iou, _, _ = self.sam.sam_mask_decoder(
                image_embeddings=image_embed, image_pe=self.sam.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False,
                repeat_image=False, high_res_features=[high_res_0, high_res_1],
            )
            return masks[:, :1], iou[:, :1]

    return TeacherEncoder().eval(), TeacherDecoder().eval()


def export_teacher_pair(sam: Any, encoder_path: Path, decoder_path: Path) -> tuple[Path, Path]:
    torch = _torch()
    enc, dec = teacher_modules(sam)
    size = int(sam.image_size)
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
