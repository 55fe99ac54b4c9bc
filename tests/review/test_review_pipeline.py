"""End to end on real magnetic-tile crops: ingest, predictions, `maskbench flag`, `maskbench judge` against a local
OpenAI-compatible judge that looks at the overlays, human verdicts, `maskbench weights` and `maskbench stats`."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.cli import main
from review.stats import agreement_stats
from review.verdicts import record_verdict
from store.project import Project
from store.schema import Disagreement, JudgeCall, Sample, Verdict, VerdictAuthorKind

from fake_openai import FakeOpenAI
from review_helpers import Oracle, build_project, copy_crops, expected_verdict, judge_config

# docs/weights.md defaults: verdict -> (feature, soft, dice, hard)
POLICY = {"teacher_better": (1, 1, 1), "both_good": (1, 1, 1), "uncertain": (1, 1, 1),
          "student_better": (0.3, 0.3, 1), "both_bad": (0, 0, 1), "corrected": (2, 0, 2)}
TRUST = 0.5


def _expected(verdict: str | None, source: str, conf: float | None) -> tuple[float, float, float, int]:
    if verdict is None:
        return 1.0, 1.0, 1.0, 0
    f, s, d = POLICY[verdict]
    if source == "vlm":
        k = TRUST * (conf or 0.0)
        return 1 + k * (f - 1), 1 + k * (s - 1), 1 + k * (d - 1), 0
    return f, s, d, int(verdict == "corrected")


def test_flag_judge_weights_stats_on_real_crops(tmp_path: Path, magnetic_tile_pairs: list, server: FakeOpenAI,
                                                capsys: Any) -> None:
    data = copy_crops(magnetic_tile_pairs, tmp_path / "data", per_class=10)
    project, truth = build_project(tmp_path / "proj", data, judge_config(server.url, workers=4))
    server.answer = Oracle(project)
    root = str(project.root)
    project.close()

    assert main(["flag", "--project", root]) == 0
    out = capsys.readouterr().out
    assert "free" in out and "blowhole" in out
    with Project.open(root) as p, p.db.session() as s:
        flagged = {d.sample_id for d in s.scalars(select(Disagreement).where(Disagreement.flagged.is_(True)))}
        classes = {sid: cls for sid, cls in s.execute(select(Sample.id, Sample.defect_class))}
    assert 20 <= len(flagged) < len(truth)
    assert not {sid for sid in flagged if classes[sid] == "free"}  # empty vs empty never flagged

    assert main(["judge", "--project", root]) == 0
    out = capsys.readouterr().out
    assert f"verdicts {len(flagged)}" in out and "errors 0" in out
    assert server.violations == [] and server.calls() == len(flagged)

    with Project.open(root) as p:
        with p.db.session() as s:
            vlm = {v.sample_id: v for v in s.scalars(select(Verdict).where(
                Verdict.author_kind == VerdictAuthorKind.VLM))}
            orders = {c.a_is for c in s.scalars(select(JudgeCall))}
        assert set(vlm) == flagged and orders == {"teacher", "student"}
        for sid in flagged:
            t = truth[sid]
            assert vlm[sid].verdict.value == expected_verdict(t["gt"], t["teacher"], t["student"]), sid
        kinds = {v.verdict.value for v in vlm.values()}
        assert {"teacher_better", "student_better"} <= kinds  # the plan has teacher-wins and student-wins cases

        # two human reviews: agree with the VLM on one sample, correct the mask of another
        a, b = sorted(flagged)[:2]
        record_verdict(p.db, a, vlm[a].verdict, "ana")
        record_verdict(p.db, b, "corrected", "ana", corrected_mask=truth[b]["gt"])
        st = agreement_stats(p.db)
        assert st.total.compared == 1 and st.total.agreed == 1 and st.total.not_comparable == 1

    # a second judge run makes no call
    server.reset()
    assert main(["judge", "--project", root]) == 0
    assert "nothing to judge" in capsys.readouterr().out and server.calls() == 0

    csv_path = tmp_path / "weights.csv"
    assert main(["weights", "--project", root, "--out", str(csv_path)]) == 0
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == len(truth)
    for r in rows:
        sid = int(r["sample_id"])
        conf = float(r["confidence"]) if r["confidence"] else None
        f, s_, d, hard = _expected(r["verdict"] or None, r["source"], conf)
        assert (float(r["feature"]), float(r["soft"]), float(r["dice"])) == pytest.approx((f, s_, d), abs=1e-6), r
        assert int(r["hard"]) == hard
        if sid == b:
            assert r["source"] == "human" and r["verdict"] == "corrected" and r["dice_target"] == "corrected"
        elif sid == a:
            assert r["source"] == "human"
        elif sid in flagged:
            assert r["source"] == "vlm" and r["verdict"] == vlm[sid].verdict.value
        else:
            assert r["source"] == "none" and (r["feature"], r["soft"], r["dice"]) == ("1", "1", "1")
        assert r["dice_target"] in ("ground_truth", "corrected")
    student_rows = [r for r in rows if r["verdict"] == "student_better" and r["source"] == "vlm"]
    assert student_rows and all(float(r["feature"]) < 1 for r in student_rows)

    assert main(["stats", "--project", root]) == 0
    out = capsys.readouterr().out
    assert "agree" in out and "student wins" in out and "all" in out
