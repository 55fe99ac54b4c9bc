"""The ONNX pair: same masks as PyTorch on real crops, dynamic shapes, and a run with torch blocked (station)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx

from infer_helpers import load_crops, pick_crops
from inference.ort_backend import OrtStudentSegmenter, resolve_providers
from inference.preprocess import mask_iou
from inference.prompts import saliency_prompt

REPO = Path(__file__).resolve().parents[2]


def test_graphs_are_opset_17_with_dynamic_axes(student_onnx: dict[str, Path]) -> None:
    enc = onnx.load(str(student_onnx["encoder"]))
    dec = onnx.load(str(student_onnx["decoder"]))
    assert {o.version for o in enc.opset_import if o.domain in ("", "ai.onnx")} == {17}
    meta = {p.key: p.value for p in enc.metadata_props}
    assert meta["maskbench.input_size"] == "512" and json.loads(meta["maskbench.config"])["embed_dim"] == 256
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in dec.graph.input}
    assert dims["point_coords"][:2] == ["batch", "num_points"] and dims["image_embed"][0] == "image_batch"
    assert [d.dim_param for d in enc.graph.input[0].type.tensor_type.shape.dim][0] == "batch"


def test_ort_matches_torch_on_20_real_crops(student_model, student_onnx: dict[str, Path], magnetic_tile_pairs) -> None:
    import copy

    from inference.torch_backend import StudentTorchSegmenter

    crops = load_crops(pick_crops(magnetic_tile_pairs, per_class=4, offset=3))[:20]
    assert len(crops) == 20
    pt = StudentTorchSegmenter(copy.deepcopy(student_model))
    ort_seg = OrtStudentSegmenter(student_onnx["encoder"], student_onnx["decoder"], providers=["cpu"])
    images = [c[0] for c in crops]
    e_pt = pt.embed_batch(images[:10]) + pt.embed_batch(images[10:])
    e_ort = ort_seg.embed_batch(images[:10]) + ort_seg.embed_batch(images[10:])
    ious, ious_median, max_diff = [], [], 0.0
    for (image, gt, _), a, b in zip(crops, e_pt, e_ort):
        p = saliency_prompt(image)
        pts = np.concatenate([p.points, [[image.shape[1] - 5.0, 5.0]]])  # plus a negative click
        lbl = np.array([1, 0])
        da, db = pt.decode(a, pts, lbl), ort_seg.decode(b, pts, lbl)
        ious.append(mask_iou(da.mask, db.mask))
        # random weights give small masks at logit 0; also compare at the median so half the crop is "mask"
        t = float(np.median(da.logits))
        ious_median.append(mask_iou(da.logits > t, db.logits > t))
        max_diff = max(max_diff, float(np.abs(da.logits - db.logits).max()))
        assert abs(da.score - db.score) < 1e-3
    assert min(ious) >= 0.99 and min(ious_median) >= 0.99, (ious, ious_median)
    assert max_diff < 1e-2


def test_dynamic_batch_and_points(student_onnx: dict[str, Path], magnetic_tile_pairs) -> None:
    crops = load_crops(pick_crops(magnetic_tile_pairs, per_class=1))[:3]
    seg = OrtStudentSegmenter(student_onnx["encoder"], student_onnx["decoder"])
    assert seg.providers[-1] == "CPUExecutionProvider"
    embs = seg.embed_batch([c[0] for c in crops])  # batch 3
    single = seg.embed(crops[1][0])
    np.testing.assert_allclose(single.features["image_embed"], embs[1].features["image_embed"], atol=1e-4)
    prompts = [(np.array([[5.0, 5.0]]), np.array([1])),
               (np.array([[5.0, 5.0], [30, 40], [50, 60]]), np.array([1, 0, 1])),
               (np.zeros((0, 2)), np.zeros(0))]
    outs = seg.decode_prompts(embs[0], prompts)  # one image, three prompts of 1, 3 and 0 points
    assert len(outs) == 3 and all(o.logits.shape == crops[0][0].shape[:2] for o in outs)
    batch = seg.decode_batch(embs, prompts)  # three images, one prompt each
    assert [d.logits.shape for d in batch] == [c[0].shape[:2] for c in crops]
    assert np.allclose(batch[0].logits, outs[0].logits, atol=1e-4)
    assert resolve_providers(["tensorrt", "cuda", "cpu"])[-1] == "CPUExecutionProvider"


NO_TORCH = r"""
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import json
import numpy as np
from store.project import Project
from store.images import load_image
import inference.ort_backend, inference.registry, inference.cache, inference.prompts, inference.automask
from inference.registry import add_onnx_student, load_segmenter
from inference.prompts import saliency_prompt

args = json.loads(sys.argv[1])
project = Project.create(args["project"])
info, _ = add_onnx_student(project, args["encoder"], args["decoder"], name="station")
seg = load_segmenter(project, "student", device="cpu")
image = load_image(args["image"])
prompt = saliency_prompt(image)
[dec] = seg.predict([image], [prompt], image_sha256s=["a" * 64])
again = seg.decode(seg.embed(image, "a" * 64), prompt.points, prompt.labels)  # from the cache
assert seg.encoder_images == 1
assert np.array_equal(dec.mask, again.mask)
bad = [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
bad = [m for m in bad if sys.modules[m] is not None]
print(json.dumps({"backend": info.backend, "shape": list(dec.logits.shape), "score": dec.score,
                  "torch_modules": bad, "kind": seg.kind}))
"""


def test_ort_backend_runs_without_torch(student_onnx: dict[str, Path], magnetic_tile_pairs, tmp_path: Path) -> None:
    image = magnetic_tile_pairs[0][0]
    args = json.dumps({"project": str(tmp_path / "station"), "encoder": str(student_onnx["encoder"]),
                       "decoder": str(student_onnx["decoder"]), "image": str(image)})
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    from store.images import load_image

    assert out["backend"] == "onnx" and out["kind"] == "student" and out["torch_modules"] == []
    assert out["shape"] == list(load_image(image).shape[:2])
