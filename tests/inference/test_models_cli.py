"""`maskbench models add|list` and `maskbench predict` through the CLI entry point, on real crops.

The teacher is SAM 2.1 hiera-tiny from the package's config with random weights (run at 512 to stay CPU-sized),
saved as {"model": state_dict} like Meta's files; the student is the seed-001 student with random weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import func, select

from app.cli import main
from inference.registry import active_model, list_models
from store import rle
from store.images import sha256_file
from store.schema import Mask, MaskSource, ModelRecord, Prediction, Sample


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_add_teacher_and_student_then_predict_all(project, teacher_ckpt: Path, student_ckpt: Path, capsys) -> None:
    root = project.root
    code, out, err = _run(capsys, "models", "add", "teacher", teacher_ckpt, "-p", root, "--config", "sam2.1_hiera_t",
                          "--image-size", "512")
    assert code == 0, err
    assert "imported and active" in out
    code, out, err = _run(capsys, "models", "add", "student", student_ckpt, "-p", root)
    assert code == 0, err

    t = active_model(project, "teacher")
    assert t.sha256 == sha256_file(teacher_ckpt) and t.architecture == "sam2.1_hiera_t" and t.input_size == 512
    copied = root / t.checkpoint_path
    assert copied.parent == project.models_dir and sha256_file(copied) == t.sha256  # copied into the project
    s = active_model(project, "student")
    assert s.sha256 == sha256_file(student_ckpt) and 1_600_000 <= s.params <= 6_000_000

    code, out, _ = _run(capsys, "models", "list", "-p", root)
    assert code == 0 and "sam2.1_hiera_t" in out and "tinyvit5m_pointdec" in out and out.count("*") == 2

    code, out, err = _run(capsys, "predict", "-p", root, "--model", "all", "--batch", "4")
    assert code == 0, err
    with project.db.session() as sess:
        n_samples = sess.scalar(select(func.count(Sample.id)))
        for kind, source, info in (("teacher", MaskSource.TEACHER, t), ("student", MaskSource.STUDENT, s)):
            preds = sess.scalars(select(Prediction).where(Prediction.model_id == info.id)).all()
            assert len(preds) == n_samples == 6, kind
            for p in preds:
                m = sess.get(Mask, p.mask_id)
                assert m.source == source and m.model_id == info.id and m.sample_id == p.sample_id
                sample = sess.get(Sample, p.sample_id)
                assert rle.decode(m.rle).shape == (sample.height, sample.width)
                assert m.area == int(rle.decode(m.rle).sum())
                assert p.prompt_source == "saliency" and len(p.points) == len(p.labels) >= 1
                assert 0.0 <= p.score <= 1.0 and p.device == "cpu" and p.precision == "fp32"
        # teacher and student got the same clicks on each sample (a fair comparison for the disagreement flags)
        by_model = {}
        for p in sess.scalars(select(Prediction)):
            by_model.setdefault(p.sample_id, {})[p.model_id] = p.points
        assert all(v[t.id] == v[s.id] for v in by_model.values())

    # resume: nothing left to do
    code, out, err = _run(capsys, "predict", "-p", root, "--model", "student")
    assert code == 0 and "0 predicted, 6 already done" in out
    with project.db.session() as sess:
        assert sess.scalar(select(func.count(Prediction.id))) == 12


def test_active_model_switches_and_readding_is_idempotent(project, student_ckpt: Path, tmp_path: Path, capsys) -> None:
    from inference.student import StudentConfig, StudentModel, save_checkpoint

    torch.manual_seed(5)
    other = save_checkpoint(StudentModel(StudentConfig(input_size=256)), tmp_path / "other.pt")
    assert _run(capsys, "models", "add", "student", student_ckpt, "-p", project.root)[0] == 0
    assert _run(capsys, "models", "add", "student", other, "-p", project.root, "--name", "small")[0] == 0
    assert active_model(project, "student").name == "small"
    code, out, _ = _run(capsys, "models", "add", "student", student_ckpt, "-p", project.root)
    assert code == 0 and "already imported; now active" in out
    rows = list_models(project)
    assert len(rows) == 2 and [r.active for r in rows].count(True) == 1
    assert active_model(project, "student").sha256 == sha256_file(student_ckpt)


def _one_line_error(capsys, *args) -> str:
    code, out, err = _run(capsys, *args)
    assert code == 1, (out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_broken_and_mismatched_checkpoints_are_refused(project, teacher_ckpt: Path, student_ckpt: Path,
                                                        tmp_path: Path, capsys) -> None:
    root = project.root
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(teacher_ckpt.read_bytes()[: 1 << 20])
    msg = _one_line_error(capsys, "models", "add", "teacher", truncated, "-p", root, "--config", "sam2.1_hiera_t")
    assert "truncated.pt is not a readable PyTorch checkpoint" in msg

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    assert "not a readable PyTorch checkpoint" in _one_line_error(capsys, "models", "add", "student", garbage, "-p", root)

    msg = _one_line_error(capsys, "models", "add", "teacher", student_ckpt, "-p", root)
    assert "is a maskbench student checkpoint" in msg and "models add student" in msg

    msg = _one_line_error(capsys, "models", "add", "teacher", teacher_ckpt, "-p", root, "--config", "sam2.1_hiera_s")
    assert "does not match config sam2.1_hiera_s" in msg and "--config sam2.1_hiera_t" in msg

    msg = _one_line_error(capsys, "models", "add", "student", teacher_ckpt, "-p", root)
    assert "is a SAM 2 checkpoint, not a student" in msg

    assert "unknown SAM 2 config" in _one_line_error(
        capsys, "models", "add", "teacher", teacher_ckpt, "-p", root, "--config", "sam3_hiera_x")
    assert "no active student" in _one_line_error(capsys, "predict", "-p", root, "--model", "student")

    with project.db.session() as sess:  # nothing was recorded or copied
        assert sess.scalar(select(func.count(ModelRecord.id))) == 0
    assert not any(project.models_dir.iterdir())


def test_shards_split_the_project_without_overlap(project, student_ckpt: Path, capsys) -> None:
    assert _run(capsys, "models", "add", "student", student_ckpt, "-p", project.root)[0] == 0
    for shard in ("0/2", "1/2"):
        code, out, err = _run(capsys, "predict", "-p", project.root, "--model", "student", "--shard", shard,
                              "--prompts", "ground_truth")
        assert code == 0, err
    with project.db.session() as sess:
        rows = sess.execute(select(Prediction.sample_id, Prediction.prompt_source, Prediction.labels)).all()
        ids = [r[0] for r in rows]
        assert sorted(ids) == sorted(sess.scalars(select(Sample.id)))  # every sample exactly once
        assert {r[1] for r in rows} == {"ground_truth"}
        free = sess.scalar(select(Sample.id).where(Sample.defect_class == "free"))
        assert next(r[2] for r in rows if r[0] == free) == [0]  # defect-free crop: a negative click only
    assert "--shard must look like i/n" in _one_line_error(capsys, "predict", "-p", project.root, "--shard", "x")
    assert "need 0 <= i < n" in _one_line_error(capsys, "predict", "-p", project.root, "--shard", "2/2")


def test_missing_model_file_is_reported(project, student_ckpt: Path, capsys) -> None:
    assert _run(capsys, "models", "add", "student", student_ckpt, "-p", project.root)[0] == 0
    info = active_model(project, "student")
    (project.root / info.checkpoint_path).unlink()
    assert "model file is missing" in _one_line_error(capsys, "predict", "-p", project.root, "--model", "student")
    shutil.copy(student_ckpt, project.root / info.checkpoint_path)


def test_predict_with_automatic_masks_stores_a_reproducible_prompt(project, student_ckpt: Path, capsys) -> None:
    from inference.registry import load_segmenter
    from store import rle as rle_mod
    from store.images import load_image

    assert _run(capsys, "models", "add", "student", student_ckpt, "-p", project.root)[0] == 0
    code, out, err = _run(capsys, "predict", "-p", project.root, "--model", "student", "--prompts", "auto",
                          "--auto-grid", "4", "--auto-min-score", "0", "--auto-min-stability", "0", "--limit", "3")
    assert code == 0, err
    seg = load_segmenter(project, "student")
    with project.db.session() as sess:
        rows = sess.execute(select(Prediction, Sample.path).join(Sample, Sample.id == Prediction.sample_id)).all()
        assert len(rows) == 3 and {p.prompt_source for p, _ in rows} == {"auto"}
        for pred, path in rows:  # the stored grid point gives the stored mask back
            assert pred.labels == [1] and len(pred.points) == 1
            stored = rle_mod.decode(sess.get(Mask, pred.mask_id).rle)
            again = seg.decode(seg.embed(load_image(path)), np.asarray(pred.points, np.float32),
                               np.asarray(pred.labels, np.int32)).mask
            union = (stored | again).sum()
            assert union == 0 or (stored & again).sum() / union >= 0.99
    # filters nothing passes: an empty mask, no points (nothing found), still one prediction per crop
    code, _, err = _run(capsys, "predict", "-p", project.root, "--model", "student", "--prompts", "auto",
                        "--auto-grid", "2", "--auto-min-score", "1.01", "--limit", "2")
    assert code == 0, err
    with project.db.session() as sess:  # the first three were done already: the run resumes with the next two
        new = list(sess.scalars(select(Prediction).order_by(Prediction.id)))[3:]
        assert len(new) == 2
        for pred in new:
            assert pred.points == [] and pred.labels == [] and sess.get(Mask, pred.mask_id).area == 0
