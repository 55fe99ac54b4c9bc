"""Models > Predict and flag's domain call on real crops with real (random-weight) models: both models predict,
the pairs are flagged, a rerun resumes; a stop between batches keeps what was stored and flags nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from inference.errors import ModelError, NoActiveModel
from inference.predict_flag import PredictFlagOptions, predict_and_flag
from inference.registry import add_model
from store.schema import Disagreement, ModelKind, ModelRecord, Prediction


def _views(project) -> dict[str, set[int]]:
    with project.db.session() as s:
        rows = s.execute(select(ModelRecord.kind, Prediction.views).join(ModelRecord,
                                                                          ModelRecord.id == Prediction.model_id))
        out: dict[str, set[int]] = {}
        for kind, views in rows:
            out.setdefault(ModelKind(kind).value, set()).add(views)
    return out


def test_both_models_predict_then_the_pairs_are_flagged(project, teacher_ckpt: Path, student_ckpt: Path) -> None:
    add_model(project, "teacher", teacher_ckpt, config="sam2.1_hiera_t", image_size=512)
    add_model(project, "student", student_ckpt)
    seen: list[tuple[int, int]] = []
    opts = PredictFlagOptions(prompts="ground_truth", teacher_flip_views=2, batch_size=4)
    report = predict_and_flag(project, opts, progress=lambda d, t: seen.append((d, t)))
    assert [(r.kind, r.predicted) for r in report.predictions] == [("teacher", 6), ("student", 6)]
    assert report.flagging is not None and report.flagging.pairs_total == 6 and not report.cancelled
    assert _views(project) == {"teacher": {2}, "student": {1}}  # mirrors for the teacher only
    with project.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Disagreement)) == 6
    # one bar over three phases, never backwards, ending full
    assert all(t == 3000 for _, t in seen) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert seen[-1] == (3000, 3000)
    assert "flagged" in report.summary()

    again = predict_and_flag(project, opts)
    assert [(r.predicted, r.already) for r in again.predictions] == [(0, 6), (0, 6)]
    assert again.flagging is not None and again.flagging.written == 0 and again.flagging.unchanged == 6


def test_a_stop_keeps_the_stored_predictions_and_flags_nothing(project, student_ckpt: Path) -> None:
    add_model(project, "student", student_ckpt)
    stop = threading.Event()
    opts = PredictFlagOptions(models="student", prompts="ground_truth", batch_size=2)
    # the first batch's progress sets the stop: predict looks at it before the next batch
    report = predict_and_flag(project, opts, progress=lambda d, t: stop.set() if d > 0 else None, cancel=stop)
    assert report.cancelled and report.flagging is None
    assert report.predictions[0].predicted == 2 and "stopped" in report.summary()
    resumed = predict_and_flag(project, opts)
    assert (resumed.predictions[0].predicted, resumed.predictions[0].already) == (4, 2)
    assert resumed.flagging is None  # no teacher: nothing to pair, and the summary says so
    assert resumed.skipped[0].startswith("not flagged: 6 sample(s) have predictions from only one side")


def test_what_cannot_predict_is_one_clear_error(project) -> None:
    with pytest.raises(NoActiveModel, match="no teacher or student model can predict"):
        predict_and_flag(project, PredictFlagOptions())
    with pytest.raises(ModelError, match="choose the student only"):
        predict_and_flag(project, PredictFlagOptions(models="both", prompts="teacher"))
