"""Verdict trail: separate human/VLM records, append-only undo, effective verdict, corrected masks as ground
truth, and the review queue as one query over many rows."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event, insert, select

from review.flagging import flag
from review.queue_rows import next_pending, queue_count, review_queue
from review.verdicts import (
    VerdictError,
    accept_vlm_verdict,
    effective_verdict,
    ground_truth_masks,
    record_verdict,
    reject_vlm_verdict,
    trail,
    undo_last,
)
from store.db import Database
from store.project import Project
from store.schema import (
    Disagreement,
    Mask,
    MaskSource,
    Sample,
    Verdict,
    VerdictAuthorKind,
    VerdictKind,
)

from review_helpers import build_project, copy_crops


@pytest.fixture
def project(tmp_path: Path, magnetic_tile_pairs: list) -> Any:
    data = copy_crops(magnetic_tile_pairs, tmp_path / "data", per_class=2, classes=("MT_Blowhole", "MT_Crack"))
    p, _ = build_project(tmp_path / "p", data, scheme="dilate")
    flag(p.db, 0.15)
    yield p
    p.close()


def _ids(p: Project) -> list[int]:
    with p.db.session() as s:
        return list(s.scalars(select(Sample.id).order_by(Sample.id)))


def test_human_wins_over_vlm_and_undo_supersedes(project: Project) -> None:
    a, b = _ids(project)[:2]
    vlm = record_verdict(project.db, a, "student_better", "vlm:openai/x", author_kind="vlm", confidence=0.9)
    with project.db.session() as s:
        assert effective_verdict(s, a).id == vlm.id
    h1 = record_verdict(project.db, a, VerdictKind.TEACHER_BETTER, "ana")
    h2 = record_verdict(project.db, b, "both good", "ana")
    with project.db.session() as s:
        assert effective_verdict(s, a).id == h1.id  # human wins whatever the order
    undo = undo_last(project.db, "ana")
    assert undo.verdict == VerdictKind.UNDO and undo.supersedes_id == h2.id and undo.sample_id == b
    undo2 = undo_last(project.db, "ana")
    assert undo2.supersedes_id == h1.id
    assert undo_last(project.db, "ana") is None  # nothing left to undo
    assert undo_last(project.db, "bob") is None
    with project.db.session() as s:
        assert effective_verdict(s, a).id == vlm.id  # back to the VLM
        assert effective_verdict(s, b) is None
        rows = trail(s, a)
        # append-only: every row is still there, the undo is a new row
        assert [r.verdict for r in rows] == [VerdictKind.STUDENT_BETTER, VerdictKind.TEACHER_BETTER, VerdictKind.UNDO]
        assert s.scalar(select(Verdict).where(Verdict.id == h1.id)) is not None


def test_kinds_are_checked(project: Project) -> None:
    sid = _ids(project)[0]
    with pytest.raises(VerdictError, match="cannot come from a human"):
        record_verdict(project.db, sid, "uncertain", "ana")
    with pytest.raises(VerdictError, match="cannot come from the VLM"):
        record_verdict(project.db, sid, "corrected", "vlm:x", author_kind="vlm",
                       corrected_mask=np.zeros((10, 10), bool))
    with pytest.raises(VerdictError, match="needs the corrected mask"):
        record_verdict(project.db, sid, "corrected", "ana")
    with pytest.raises(VerdictError, match="unknown verdict"):
        record_verdict(project.db, sid, "meh", "ana")
    with pytest.raises(VerdictError, match="no sample"):
        record_verdict(project.db, 999_999, "both_bad", "ana")
    with project.db.session() as s:
        assert s.scalar(select(Verdict.id)) is None  # nothing half-written


def test_corrected_mask_becomes_ground_truth_until_undone(project: Project) -> None:
    sid = _ids(project)[0]
    with project.db.session() as s:
        smp = s.get(Sample, sid)
        h, w = smp.height, smp.width
        gt_id = s.scalar(select(Mask.id).where(Mask.sample_id == sid, Mask.source == MaskSource.GROUND_TRUTH))
    with pytest.raises(VerdictError, match="corrected mask is"):
        record_verdict(project.db, sid, "corrected", "ana", corrected_mask=np.zeros((h + 1, w), bool))
    fixed = np.zeros((h, w), bool)
    fixed[5:20, 5:30] = True
    v = record_verdict(project.db, sid, "corrected", "ana", corrected_mask=fixed)
    with project.db.session() as s:
        m = s.get(Mask, v.corrected_mask_id)
        assert m.source == MaskSource.CORRECTED and m.area == int(fixed.sum())
        assert ground_truth_masks(s)[sid] == (m.id, "corrected")
    undo_last(project.db, "ana")
    with project.db.session() as s:
        assert ground_truth_masks(s)[sid] == (gt_id, "ground_truth")
        assert s.get(Mask, v.corrected_mask_id) is not None  # kept for the audit


def test_queue_rows_filters_and_next_pending(project: Project) -> None:
    ids = _ids(project)
    record_verdict(project.db, ids[0], "teacher_better", "vlm:m", author_kind="vlm", confidence=0.7)
    record_verdict(project.db, ids[1], "both_bad", "ana")
    with project.db.session() as s:
        rows = review_queue(s)
        assert len(rows) == queue_count(s) == len(ids)
        assert [r.iou_ts for r in rows] == sorted(r.iou_ts for r in rows)
        by_id = {r.sample_id: r for r in rows}
        assert (by_id[ids[0]].vlm_verdict, by_id[ids[0]].vlm_confidence) == ("teacher_better", 0.7)
        assert by_id[ids[0]].human_status == "pending"
        assert by_id[ids[1]].human_verdict == "both_bad" and by_id[ids[1]].human_author == "ana"
        assert queue_count(s, status="pending") == len(ids) - 1
        assert [r.sample_id for r in review_queue(s, status="reviewed")] == [ids[1]]
        assert {r.defect_class for r in review_queue(s, defect_class="crack")} == {"crack"}
        assert [r.sample_id for r in review_queue(s, vlm="teacher_better")] == [ids[0]]
        assert len(review_queue(s, limit=2, offset=1)) == 2
        nxt = next_pending(s)
        assert nxt is not None and nxt != ids[1]
        assert next_pending(s, after_sample_id=nxt) != nxt


def test_queue_is_one_query_over_many_rows(tmp_path: Path) -> None:
    """100k flagged samples: one SELECT per page, and a page comes back fast."""
    db = Database(f"sqlite:///{tmp_path / 'big.sqlite'}")
    n = 100_000
    rng = np.random.default_rng(0)
    classes = ["crack", "blowhole", "break", "fray", "uneven"]
    with db.engine.begin() as conn:
        conn.execute(insert(Sample), [
            {"id": i + 1, "path": f"/d/{i}.jpg", "sha256": f"{i:064x}", "width": 64, "height": 64,
             "defect_class": classes[i % 5]} for i in range(n)])
        conn.exec_driver_sql("INSERT INTO models (id, name, kind, architecture, backend, checkpoint_path, sha256, "
                             "active, meta, created_at) VALUES (1, 't', 'teacher', 'x', 'torch', '-', 'a', 1, '{}', "
                             "'2026-01-01')")
        conn.exec_driver_sql("INSERT INTO masks (id, sample_id, source, rle, area, created_at) VALUES "
                             "(1, 1, 'teacher', '{}', 0, '2026-01-01')")
        conn.exec_driver_sql("INSERT INTO predictions (id, sample_id, model_id, mask_id, points, labels, "
                             "prompt_source, score, created_at) VALUES (1, 1, 1, 1, '[]', '[]', 'grid', 1, "
                             "'2026-01-01')")
        ious = rng.uniform(0, 0.85, n)
        conn.execute(insert(Disagreement), [
            {"sample_id": i + 1, "teacher_prediction_id": 1, "student_prediction_id": 1, "iou_ts": float(ious[i]),
             "dice_ts": 0.5, "boundary_f": 0.5, "threshold": 0.15, "flagged": True} for i in range(n)])
        conn.execute(insert(Verdict), [
            {"sample_id": i + 1, "author_kind": "vlm", "author": "vlm:m", "verdict": "student_better",
             "confidence": 0.8} for i in range(0, n, 3)])
        conn.execute(insert(Verdict), [
            {"sample_id": i + 1, "author_kind": "human", "author": "ana", "verdict": "teacher_better"}
            for i in range(0, n, 7)])
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    with db.session() as s:
        t0 = time.perf_counter()
        page = review_queue(s, limit=200, offset=1000)
        first_page = time.perf_counter() - t0
        total = queue_count(s)
        pending = queue_count(s, status="pending")
    selects = [q for q in statements if q.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 3  # page, count, pending count: no per-row queries
    assert len(page) == 200 and total == n and pending == n - len(range(0, n, 7))
    assert all(page[i].iou_ts <= page[i + 1].iou_ts for i in range(199))
    assert sum(r.vlm_verdict == "student_better" for r in page) > 0
    print(f"queue page over {n} rows: {first_page * 1000:.0f} ms")
    assert first_page < 5.0, first_page
    db.close()


def test_vlm_author_kind_enum_roundtrip(project: Project) -> None:
    sid = _ids(project)[0]
    v = record_verdict(project.db, sid, "uncertain", "vlm:m", author_kind=VerdictAuthorKind.VLM)
    assert v.author_kind == VerdictAuthorKind.VLM and v.confidence is None


def test_accept_and_reject_the_vlm_verdict_and_undo_a_rejection(project: Project) -> None:
    from review.verdicts import latest_verdicts
    from review.weights import WeightPolicy, compute_weights

    a, b, c = _ids(project)[:3]
    va = record_verdict(project.db, a, "student_better", "vlm:openai/x", author_kind="vlm", confidence=0.9)
    vb = record_verdict(project.db, b, "student_better", "vlm:openai/x", author_kind="vlm", confidence=0.9)
    vc = record_verdict(project.db, c, "uncertain", "vlm:openai/x", author_kind="vlm", confidence=0.4)
    policy = WeightPolicy()
    with project.db.session() as s:
        before = compute_weights(s, policy)
    assert before[b].source == "vlm" and before[b].feature == pytest.approx(1 + 0.5 * 0.9 * (0.3 - 1))

    acc = accept_vlm_verdict(project.db, a, "ana", va.id)
    assert (acc.author_kind, acc.verdict, acc.supersedes_id) == (VerdictAuthorKind.HUMAN, VerdictKind.STUDENT_BETTER,
                                                                 va.id)
    assert "accepted VLM verdict" in acc.reason and acc.confidence is None
    rej = reject_vlm_verdict(project.db, b, "ana", vb.id)
    assert (rej.author_kind, rej.verdict, rej.supersedes_id) == (VerdictAuthorKind.HUMAN, VerdictKind.UNDO, vb.id)
    with pytest.raises(VerdictError, match="nothing to accept"):
        accept_vlm_verdict(project.db, c, "ana", vc.id)
    with pytest.raises(VerdictError, match="changed"):
        accept_vlm_verdict(project.db, c, "ana", va.id)  # not the verdict on screen
    with pytest.raises(VerdictError, match="no VLM verdict"):
        reject_vlm_verdict(project.db, b, "ana", vb.id)  # already rejected: nothing in effect
    with project.db.session() as s:
        human = latest_verdicts(s, VerdictAuthorKind.HUMAN)
        vlm = latest_verdicts(s, VerdictAuthorKind.VLM)
        w = compute_weights(s, policy)
    assert human[a].id == acc.id and b not in human  # a rejection is no verdict: b stays pending
    assert b not in vlm and vlm[a].id == va.id
    assert w[a].source == "human" and w[a].feature == pytest.approx(0.3)  # full policy, no VLM trust scaling
    assert w[b].source == "none" and (w[b].feature, w[b].soft) == (1.0, 1.0)  # the rejected verdict weighs nothing
    with project.db.session() as s:
        assert s.scalar(select(Verdict).where(Verdict.sample_id == b, Verdict.author_kind == VerdictAuthorKind.HUMAN,
                                              Verdict.verdict != VerdictKind.UNDO)) is None

    # undo walks back: first the rejection (the VLM verdict is back), then the acceptance
    u1 = undo_last(project.db, "ana")
    assert u1.supersedes_id == rej.id and "rejection of VLM verdict" in u1.reason
    with project.db.session() as s:
        assert latest_verdicts(s, VerdictAuthorKind.VLM)[b].id == vb.id
        assert compute_weights(s, policy)[b] == before[b]
    u2 = undo_last(project.db, "ana")
    assert u2.supersedes_id == acc.id
    assert undo_last(project.db, "ana") is None  # undo rows themselves are never undone
    with project.db.session() as s:
        assert latest_verdicts(s, VerdictAuthorKind.HUMAN) == {}
        assert compute_weights(s, policy) == before
