"""The Training tab shows, before a run starts, what the next run trains on: labelled, unlabelled, corrected,
approved and verdict-weighted crops of the train split (review.training_set), counted off the GUI thread."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from review.flagging import flag
from review.verdicts import record_verdict
from store.images import load_mask
from store.ingest import ingest
from store.project import Project
from store.schema import Mask, MaskSource, ModelKind, Sample

from gui_helpers import _model, _predict


def _labelled_project(root: Path, pairs: list[tuple[Path, Path, str]]) -> Project:
    data = root / "crops"
    for cls in ("MT_Break", "MT_Uneven"):
        for img, mask, _ in [p for p in pairs if p[2] == cls][:6]:
            (data / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(img, data / cls)
            shutil.copy(mask, data / cls)
    p = Project.create(root / "project")
    ingest(p.db, data, workers=2)
    return p


def _train_labelled(p: Project) -> int:
    with p.db.session() as s:
        return int(s.scalar(select(func.count(func.distinct(Sample.id))).join(Mask, Mask.sample_id == Sample.id)
                            .where(Sample.split == "train", Mask.source == MaskSource.GROUND_TRUTH)))


def _wait_text(qtbot: Any, panel: Any, text: str) -> None:
    qtbot.waitUntil(lambda: panel.counts_label.text() == text, timeout=20_000)


def test_training_tab_counts_labelled_unlabelled_corrected_approved(qtbot: Any, tmp_path: Path,
                                                                    magnetic_tile_pairs: list) -> None:
    from widgets.training_panel import TrainingPanel

    project = _labelled_project(tmp_path, magnetic_tile_pairs)
    n = _train_labelled(project)
    assert n >= 8
    panel = TrainingPanel(project)
    qtbot.addWidget(panel)
    _wait_text(qtbot, panel, f"training set (train split): {n} labelled, 0 unlabelled; 0 corrected, 0 approved, "
                             "0 verdict-weighted")

    # a correction on a labelled train crop
    with project.db.session() as s:
        sid = s.scalar(select(Sample.id).where(Sample.split == "train").order_by(Sample.id))
        smp = s.get(Sample, sid)
        fixed = np.zeros((smp.height, smp.width), bool)
    fixed[4:20, 4:30] = True
    record_verdict(project.db, sid, "corrected", "ana", corrected_mask=fixed)
    # three crops ingested without masks: one the teacher and the student predicted and a human approved, one only
    # the teacher predicted, one nobody predicted
    crack = [(i, m) for i, m, c in magnetic_tile_pairs if c == "MT_Crack"][:3]
    unl = tmp_path / "unlabelled" / "MT_Crack"
    unl.mkdir(parents=True)
    for img, _m in crack:
        shutil.copy(img, unl)
    report = ingest(project.db, unl.parent, workers=2)
    assert report.added_total == 3 and report.without_mask_total == 3
    with project.db.session() as s:
        new = {Path(x.path).name: x for x in s.scalars(select(Sample).where(Sample.defect_class == "crack"))}
    assert all(x.split == "train" for x in new.values())
    t_id, s_id = _model(project, ModelKind.TEACHER, "teacher"), _model(project, ModelKind.STUDENT, "student")
    (a_img, a_mask), (b_img, b_mask), _ = crack
    a = new[a_img.name].id
    _predict(project, a, t_id, ModelKind.TEACHER, load_mask(a_mask))
    _predict(project, a, s_id, ModelKind.STUDENT, np.roll(load_mask(a_mask), 15, axis=1))
    _predict(project, new[b_img.name].id, t_id, ModelKind.TEACHER, load_mask(b_mask))
    flag(project.db, 0.15, workers=1)
    record_verdict(project.db, a, "teacher_better", "ana")

    panel.show()  # the tab comes into view: counted again
    qtbot.waitExposed(panel)
    _wait_text(qtbot, panel, f"training set (train split): {n + 1} labelled, 1 unlabelled (+1 without a teacher "
                             "prediction, left out); 1 corrected, 1 approved, 2 verdict-weighted")

    # an invalid weights section is shown there, before any run starts
    project.config["weights"]["vlm_trst"] = 0.2
    panel.refresh_counts()
    qtbot.waitUntil(lambda: "unknown key 'vlm_trst' (did you mean 'vlm_trust'?)" in panel.counts_label.text(),
                    timeout=20_000)
    panel.shutdown()
    project.close()
