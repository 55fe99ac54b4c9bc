"""A second predict over a project runs no encoder; stored predictions replay exactly; the teacher adapter matches
the sam2 package's own image predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import select

from inference.batch import predict_project
from inference.prompts import prompt_from_json
from inference.registry import add_model, load_segmenter
from store import rle
from store.images import load_image
from store.schema import Mask, Prediction, Sample


def test_second_predict_runs_no_encoder(project, teacher_ckpt: Path, student_ckpt: Path, monkeypatch) -> None:
    from sam2.modeling.sam2_base import SAM2Base

    from inference.torch_backend import StudentTorchSegmenter

    calls = {"teacher": 0, "student": 0}
    real_image = SAM2Base.forward_image
    real_student = StudentTorchSegmenter._run_encoder

    def count_teacher(self, x):
        calls["teacher"] += int(x.shape[0])
        return real_image(self, x)

    def count_student(self, batch):
        calls["student"] += int(batch.shape[0])
        return real_student(self, batch)

    monkeypatch.setattr(SAM2Base, "forward_image", count_teacher)
    monkeypatch.setattr(StudentTorchSegmenter, "_run_encoder", count_student)
    add_model(project, "teacher", teacher_ckpt, config="sam2.1_hiera_t", image_size=512)
    add_model(project, "student", student_ckpt)

    first = {k: predict_project(project, k, batch_size=3, prompt_source="saliency") for k in ("teacher", "student")}
    # the student works at native pixel scale: a crop wider than its 512 px canvas is two canvases (tiles)
    from inference.layout import plan

    with project.db.session() as s:
        canvases = sum(len(plan((h, w), 512).tiles) for h, w in s.execute(select(Sample.height, Sample.width)))
    assert calls == {"teacher": 6, "student": canvases}
    assert first["student"].encoded == 6 and first["student"].predicted == 6
    cached = list((project.cache_dir / "embeddings").glob("*/*.npz"))
    assert len(cached) == 12  # 6 crops x 2 models

    # the second pass (other prompts, fresh segmenters as in a new process) takes every embedding from disk
    second = {k: predict_project(project, k, batch_size=3, prompt_source="ground_truth") for k in ("teacher", "student")}
    assert calls == {"teacher": 6, "student": canvases}
    assert all(r.predicted == 6 and r.encoded == 0 for r in second.values())

    # a third identical pass has nothing to do at all
    again = predict_project(project, "student", prompt_source="ground_truth")
    assert again.predicted == 0 and again.already == 6


def test_stored_prediction_replays_exactly(project, student_ckpt: Path) -> None:
    add_model(project, "student", student_ckpt)
    predict_project(project, "student", prompt_source="ground_truth", seed=3)
    seg = load_segmenter(project, "student")
    with project.db.session() as s:
        rows = s.execute(select(Prediction, Mask, Sample).join(Mask, Mask.id == Prediction.mask_id)
                         .join(Sample, Sample.id == Prediction.sample_id)).all()
    assert len(rows) == 6
    for pred, mask, sample in rows:
        prompt = prompt_from_json(pred.points, pred.labels, pred.prompt_source)
        emb = seg.embed(load_image(sample.path), sample.sha256)
        dec = seg.decode(emb, prompt.points, prompt.labels)
        # the same mask; a pixel may only differ where its logit is a float rounding away from the threshold
        # (the stored mask came from a batched decoder call, the replay from a single one)
        differ = dec.mask != rle.decode(mask.rle)
        assert differ.sum() <= 3 and (np.abs(dec.logits[differ]) < 1e-5).all()
        assert abs(dec.score - pred.score) < 1e-6
    assert seg.encoder_images == 0  # all six from the cache


def test_teacher_adapter_matches_official_predictor(teacher_ckpt: Path, magnetic_tile_pairs) -> None:
    import torch
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from inference.sam2_net import load_model
    from inference.teacher import Sam2Segmenter

    model = load_model(teacher_ckpt, "sam2.1/sam2.1_hiera_t.yaml", image_size=512)
    seg = Sam2Segmenter(model)
    image = load_image(magnetic_tile_pairs[0][0])
    emb = seg.embed(image)
    assert emb.features["image_embed"].shape == (256, 32, 32)
    assert emb.features["high_res_0"].shape == (32, 128, 128) and emb.features["high_res_1"].shape == (64, 64, 64)
    ref = SAM2ImagePredictor(model)
    ref._bb_feat_sizes = [(128, 128), (64, 64), (32, 32)]
    ref.set_image(image)
    for pts, lbl, multi in (([[60.0, 80.0]], [1], True), ([[60.0, 80.0], [10.0, 300.0]], [1, 0], False)):
        masks, ious, _ = ref.predict(np.array(pts), np.array(lbl), multimask_output=multi, return_logits=True)
        k = int(np.argmax(ious)) if multi else 0
        dec = seg.decode(emb, np.array(pts), np.array(lbl))
        assert dec.logits.shape == image.shape[:2]
        assert np.abs(dec.logits - masks[k]).max() < 1e-3 and abs(dec.score - float(ious[k])) < 1e-5
    many = seg.decode_prompts(emb, [(np.array([[float(x), 50.0]]), np.array([1])) for x in range(10, 200, 20)])
    one = seg.decode(emb, np.array([[30.0, 50.0]]), np.array([1]))
    assert len(many) == 10 and np.abs(many[1].logits - one.logits).max() < 1e-3
    assert torch.is_grad_enabled()  # inference mode did not leak out


def test_flip_averaged_predictions_are_the_ensembles_masks_and_resume_apart(project, student_ckpt: Path) -> None:
    from inference.flip_ensemble import FlipEnsemble

    add_model(project, "student", student_ckpt)
    plain = predict_project(project, "student", prompt_source="ground_truth")
    flipped = predict_project(project, "student", prompt_source="ground_truth", flip_views=4)
    assert plain.predicted == flipped.predicted == 6  # the plain run does not count as done for flip averaging
    # the crop itself comes from the plain run's cache (its content hash): only the three mirrors are encoded
    assert plain.encoded == 6 and flipped.encoded == 18
    assert "6 embeddings from the cache" in flipped.summary()
    assert flipped.summary().endswith("prompts: ground_truth; 4 mirror views averaged")
    assert predict_project(project, "student", prompt_source="ground_truth", flip_views=4).already == 6
    seg = load_segmenter(project, "student")
    ensemble = FlipEnsemble(seg, 4)
    with project.db.session() as s:
        rows = s.execute(select(Prediction, Mask, Sample).join(Mask, Mask.id == Prediction.mask_id)
                         .join(Sample, Sample.id == Prediction.sample_id).order_by(Prediction.id)).all()
    assert [pred.views for pred, _, _ in rows] == [1] * 6 + [4] * 6
    changed = 0
    for pred, mask, sample in rows[6:]:
        image = load_image(sample.path)
        prompt = prompt_from_json(pred.points, pred.labels, pred.prompt_source)
        dec = ensemble.decode(ensemble.embed(image), prompt.points, prompt.labels)
        differ = dec.mask != rle.decode(mask.rle)
        assert differ.sum() <= 3 and (np.abs(dec.logits[differ]) < 1e-4).all()
        assert abs(dec.score - pred.score) < 1e-5
        changed += int((rle.decode(mask.rle) != seg.decode(seg.embed(image), prompt.points, prompt.labels).mask).any())
    assert changed > 0  # averaging the mirrors is not the plain mask


def test_flip_averaging_refuses_automatic_prompts_and_other_view_counts(project, student_ckpt: Path) -> None:
    import pytest

    from inference.errors import ModelError

    add_model(project, "student", student_ckpt)
    with pytest.raises(ModelError, match="flip averaging takes the clicks of one prompt per crop"):
        predict_project(project, "student", prompt_source="auto", flip_views=4)
    with pytest.raises(ModelError, match="flip views must be 1 \\(off\\), 2 or 4, not 3"):
        predict_project(project, "student", prompt_source="ground_truth", flip_views=3)
