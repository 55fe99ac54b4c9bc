"""The store on a real PostgreSQL server (tests/store/pg_server.py), the way stations share one: the Alembic chain
from an empty database to head (and back), head equal to the ORM models, and a project whose project.yaml names the
server going through ingest, predict, flag, the VLM judge with 8 workers and the review queries.

Why: every other store test runs on SQLite, which accepts things PostgreSQL refuses (numpy scalars as parameters,
GROUP BY gaps, JSON equality, naive timestamps); these run the same code against the server a site would use."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from store.db import (
    Database,
    StoreError,
    alembic_config,
    current_revision,
    driver_url,
    head_revision,
    make_engine,
    upgrade,
)
from store.schema import Base

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests" / "review") not in sys.path:  # the review tests' fake judge server and crop picking
    sys.path.append(str(REPO / "tests" / "review"))
from fake_openai import FakeOpenAI  # noqa: E402
from review_helpers import DUMMY_KEY, copy_crops, judge_config  # noqa: E402


def _revisions() -> list[str]:
    """Every revision from the first to head, in order."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [r.revision for r in reversed(list(script.walk_revisions("base", "heads")))]


def _schema_diff(engine: Any) -> list[Any]:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


def test_migrations_from_empty_to_head_match_the_models_and_keep_data(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    assert current_revision(engine) is None
    revisions = _revisions()
    assert revisions[-1] == head_revision() and len(revisions) >= 3
    upgrade(engine, postgres_url, revisions[0])
    with engine.begin() as conn:  # a row at the first revision, with JSON, must survive the later migrations
        conn.execute(text(
            "INSERT INTO samples (path, sha256, width, height, defect_class, created_at) "
            "VALUES ('/data/a.jpg', :sha, 640, 320, 'crack', '2026-01-01 00:00:00+00')"), {"sha": "ab" * 32})
        conn.execute(text(
            "INSERT INTO masks (sample_id, source, rle, area, created_at) "
            "VALUES (1, 'ground_truth', '{\"size\": [320, 640], \"counts\": \"0\"}', 0, '2026-01-01 00:00:00+00')"))
    for rev in revisions[1:]:  # one step at a time: each migration's DDL runs on PostgreSQL by itself
        upgrade(engine, postgres_url, rev)
        assert current_revision(engine) == rev
    engine.dispose()

    db = Database(postgres_url)  # opening at head: nothing to do, no backup (that is SQLite only)
    assert current_revision(db.engine) == head_revision()
    assert _schema_diff(db.engine) == []  # the chain builds exactly what store/schema.py declares
    assert db.integrity_check() == "ok"
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT path, sha256, width, defect_class FROM samples")).one() == (
            "/data/a.jpg", "ab" * 32, 640, "crack")
        assert conn.execute(text("SELECT rle FROM masks")).scalar() == {"size": [320, 640], "counts": "0"}
        # ids come from real sequences: the next insert after an explicit-id-free row gets 2, not a clash
        nxt = conn.execute(text("INSERT INTO samples (path, sha256, width, height, defect_class, created_at) "
                                "VALUES ('/b', :sha, 1, 1, 'x', now()) RETURNING id"), {"sha": "cd" * 32}).scalar()
        assert nxt == 2

    cfg = alembic_config(postgres_url)  # and back down to nothing, and up again
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
    assert current_revision(db.engine) is None
    upgrade(db.engine, postgres_url)
    assert current_revision(db.engine) == head_revision() and _schema_diff(db.engine) == []
    db.close()


def test_postgres_urls_go_to_psycopg_and_a_missing_driver_is_one_clear_error(postgres_url: str) -> None:
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    assert driver_url(plain) == driver_url(plain.replace("postgresql://", "postgres://", 1)) == postgres_url
    assert driver_url("sqlite:///x.sqlite") == "sqlite:///x.sqlite"
    db = Database(plain)  # whatever SQLAlchemy's default PostgreSQL driver is, this install's psycopg is used
    assert db.engine.dialect.driver == "psycopg" and current_revision(db.engine) == head_revision()
    db.close()
    for scheme in ("postgresql+pg8000", "postgresql+nosuchdriver"):  # known but not installed; unknown
        with pytest.raises(StoreError, match=f"no Python driver .*{scheme.replace('+', '.')}.*psycopg") as err:
            Database(plain.replace("postgresql", scheme, 1))
        assert "@" not in str(err.value)  # the URL (it may hold a password) is not echoed


@pytest.mark.torch
def test_shared_project_ingest_predict_flag_judge(tmp_path: Path, postgres_url: str, magnetic_tile_pairs: list,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from app.demo_models import demo_models_dir, load_manifest
    from inference.batch import predict_project
    from inference.registry import add_model, add_onnx_student
    from review.flagging import flag
    from review.judge import JudgeRun, JudgeSettings
    from review.judge.items import pending_items
    from review.judge.parsing import label_to_verdict
    from review.queue_rows import queue_count, review_queue
    from review.verdicts import approved_masks, effective_verdicts, record_verdict, undo_last
    from store.ingest import ingest
    from store.project import Project
    from store.schema import Disagreement, JudgeCall, Mask, Prediction, Sample, Verdict, VerdictAuthorKind, VerdictKind

    monkeypatch.setenv("OPENAI_API_KEY", DUMMY_KEY)
    monkeypatch.setenv("MASKBENCH_NO_KEYRING", "1")
    for var in ("ANTHROPIC_API_KEY", "OPENAI_API_BASE", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    data = copy_crops(magnetic_tile_pairs, tmp_path / "data", per_class=2,
                      classes=("MT_Blowhole", "MT_Break", "MT_Crack"))
    n = 6  # crops: enough for the 8 judge workers to overlap, few enough for the CPU teacher
    with FakeOpenAI() as server:
        root = tmp_path / "station-project"
        project = Project.create(root, overrides={"database_url": postgres_url, **judge_config(server.url)})
        project.close()
        with Project.open(root) as project:  # as a station would: the URL comes from project.yaml
            assert project.db.url == postgres_url and not (root / "maskbench.sqlite").exists()

            # ingest: real crops and masks; a second ingest finds them all by sha256
            first = ingest(project.db, data, workers=2)
            assert first.added_total == n and not first.bad
            again = ingest(project.db, data, workers=2)
            assert again.added_total == 0 and again.skipped_existing == n
            with project.db.session() as s:
                samples = list(s.scalars(select(Sample).order_by(Sample.id)))
                assert len(samples) == n and all(x.split in ("train", "val", "test") for x in samples)
                assert s.scalar(select(Mask).limit(1)).created_at.tzinfo is not None

            # predict: the shipped demo teacher (torch) and the shipped INT8 ONNX student, through the registry
            models = demo_models_dir()
            manifest = load_manifest(models)
            t, st = manifest["teacher"], manifest["student"]
            add_model(project, "teacher", models / t["file"], config=t["config"], image_size=int(t["image_size"]),
                      scale=t.get("scale"))
            add_onnx_student(project, models / st["encoder"], models / st["decoder"])
            teacher = predict_project(project, "teacher", prompt_source="ground_truth", batch_size=4)
            assert teacher.predicted == n and not teacher.failed
            # the student in two shards (Sample.id % n on the server), as two machines would split it
            shards = [predict_project(project, "student", prompt_source="ground_truth", shard=(i, 2))
                      for i in range(2)]
            assert sum(r.predicted for r in shards) == n and all(r.predicted > 0 for r in shards)
            assert predict_project(project, "student", prompt_source="ground_truth").already == n  # resumable
            with project.db.session() as s:
                assert len(s.scalars(select(Prediction)).all()) == 2 * n

            # flag: threshold 0 flags every pair whose masks differ at all (two different models: all of them)
            report = flag(project.db, 0.0)
            assert sum(report.total.values()) == n and report.flagged_total >= 1
            n_flagged = report.flagged_total
            assert flag(project.db, 0.0).unchanged == n  # second run: nothing to recompute
            with project.db.session() as s:
                assert queue_count(s) == n_flagged and len(review_queue(s)) == n_flagged

            # judge: 8 workers against the fake OpenAI-compatible server, slow answers so they overlap
            server.set_mode("judge-a", "delay")
            settings = JudgeSettings.from_config(project.config, workers=8)
            run = JudgeRun(project.db, settings)
            stats = run.run()
            assert stats.total == n_flagged and stats.verdicts == n_flagged and stats.errors == 0, stats
            assert server.violations == [] and server.calls("judge-a") == n_flagged
            assert n_flagged < 2 or server.max_in_flight >= 2
            with project.db.session() as s:
                calls = {c.id: c for c in s.scalars(select(JudgeCall))}
                vlm = list(s.scalars(select(Verdict).where(Verdict.author_kind == VerdictAuthorKind.VLM)))
                assert len(calls) == n_flagged and {c.status for c in calls.values()} == {"ok"}
                assert len(vlm) == n_flagged and len({v.sample_id for v in vlm}) == n_flagged
                for v in vlm:  # the fake judge always says "A": the verdict follows the order A/B was shown in
                    assert v.verdict == label_to_verdict("A", calls[v.judge_call_id].a_is)
                    assert v.author == "vlm:openai/judge-a" and v.confidence == pytest.approx(0.9)
                    now = dt.datetime.now(dt.timezone.utc)
                    assert v.created_at.tzinfo is not None and abs((now - v.created_at).total_seconds()) < 600
                assert sum(c.cost_usd for c in calls.values()) == pytest.approx(stats.spent_usd)
            print(f"\nPostgreSQL station project: {n} crops ingested, {2 * n} predictions, {n_flagged} flagged, "
                  f"{stats.verdicts} VLM verdicts from 8 workers (up to {server.max_in_flight} calls in flight)")
            assert pending_items(project.db) == []
            assert JudgeRun(project.db, settings).run().total == 0  # nothing left: no second call
            assert server.calls() == n_flagged

            # review on top: a human verdict wins over the VLM one, approves the teacher's mask, and undoes cleanly
            with project.db.session() as s:
                row = review_queue(s, status="pending")[0]
                d = s.get(Disagreement, row.disagreement_id)
                teacher_mask = s.get(Prediction, d.teacher_prediction_id).mask_id
            record_verdict(project.db, row.sample_id, "teacher_better", "alice")
            with project.db.session() as s:
                assert effective_verdicts(s, [row.sample_id])[row.sample_id].author == "alice"
                assert approved_masks(s, [row.sample_id]) == {row.sample_id: (teacher_mask, "approved_teacher")}
                assert queue_count(s, status="reviewed") == 1 and queue_count(s, status="pending") == n_flagged - 1
            assert undo_last(project.db, "alice").verdict == VerdictKind.UNDO
            with project.db.session() as s:
                assert effective_verdicts(s, [row.sample_id])[row.sample_id].author_kind == VerdictAuthorKind.VLM
                assert approved_masks(s) == {}
