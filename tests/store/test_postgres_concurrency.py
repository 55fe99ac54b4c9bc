"""Stations as separate OS processes on one PostgreSQL project. Three opening a new shared store at once all get it
migrated (one migrates, the others wait). Two recording verdicts at the same time on the same samples: all arrive, and the append-only trail stays consistent (ids unique and in each station's order, every undo
cancelling that station's own latest verdict, corrected masks stored with their verdicts, the effective verdict per
sample the one the trail implies).

Why processes and not threads: stations are separate machines with separate connection pools; threads in one
process would share a pool and the GIL and could hide what two independent writers do to the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import yaml
from sqlalchemy import func, select, text

from review.verdicts import effective_verdicts, trail
from store.db import head_revision, make_engine
from store.ingest import ingest
from store.project import Project
from store.schema import Mask, MaskSource, Sample, Verdict, VerdictAuthorKind, VerdictKind

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests" / "review") not in sys.path:  # review_helpers: the crop picking the review tests use
    sys.path.append(str(REPO / "tests" / "review"))
from review_helpers import copy_crops  # noqa: E402

WRITER = Path(__file__).with_name("pg_verdict_writer.py")
PER_STATION = 150


OPENER = """
import sys
from store.project import Project
from store.db import current_revision
print("ready", flush=True)
sys.stdin.readline()
with Project.open(sys.argv[1]) as project:
    print(current_revision(project.db.engine), flush=True)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _release(procs: dict[str, subprocess.Popen[str]]) -> None:
    """Wait until every process said "ready", then let them all go at once."""
    for name, p in procs.items():
        line = p.stdout.readline().strip()
        assert line == "ready", f"{name} did not start: {line} {p.stderr.read() if p.poll() is not None else ''}"
    for p in procs.values():
        p.stdin.write("go\n")
        p.stdin.flush()


def _kill(procs: dict[str, subprocess.Popen[str]]) -> None:
    """A failed test leaves no station process behind (they hold connections the server stop would wait for)."""
    for p in procs.values():
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)


def test_stations_opening_a_new_shared_store_at_once_all_get_it_migrated(tmp_path: Path, postgres_url: str) -> None:
    """The first open of an empty database creates the schema; three stations starting together must not race
    (without a lock the losers fail with "relation already exists" or a duplicate alembic_version row)."""
    from store import config as config_mod

    root = tmp_path / "new-shared-project"
    root.mkdir()
    config_mod.save(root / "project.yaml", config_mod.deep_merge(config_mod.DEFAULTS, {
        "name": "shared", "database_url": postgres_url}))
    procs = {f"station-{i}": subprocess.Popen([sys.executable, "-c", OPENER, str(root)], cwd=REPO, env=_env(),
                                              text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE) for i in range(3)}
    try:
        _release(procs)
        for name, p in procs.items():
            stdout, stderr = p.communicate(timeout=300)
            assert p.returncode == 0, f"{name} could not open the new shared store:\n{stderr[-3000:]}"
            assert stdout.strip() == head_revision()
    finally:
        _kill(procs)
    engine = make_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()


def _station(root: Path, author: str, sample_ids: list[int]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(WRITER), str(root), author, str(PER_STATION),
                             ",".join(map(str, sample_ids))], cwd=REPO, env=_env(), text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_stations_record_verdicts_concurrently(tmp_path: Path, postgres_url: str,
                                                   magnetic_tile_pairs: list) -> None:
    data = copy_crops(magnetic_tile_pairs, tmp_path / "data", per_class=2, classes=("MT_Blowhole", "MT_Crack"))
    root = tmp_path / "shared-project"
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)  # as a user writes it in project.yaml
    with Project.create(root, overrides={"database_url": plain}) as project:
        assert ingest(project.db, data, workers=2).added_total == 4
        with project.db.session() as s:
            sids = sorted(s.scalars(select(Sample.id)))
    assert yaml.safe_load((root / "project.yaml").read_text())["database_url"] == plain
    assert not (root / "maskbench.sqlite").exists()  # the store is the server, not a local file

    # both stations write to every sample (in opposite orders, so they collide on the same rows' neighbours)
    stations = {"station-a": _station(root, "station-a", sids), "station-b": _station(root, "station-b", sids[::-1])}
    out = {}
    try:
        _release(stations)
        for name, p in stations.items():
            stdout, stderr = p.communicate(timeout=300)
            assert p.returncode == 0, f"{name} failed:\n{stderr[-4000:]}"
            out[name] = json.loads(stdout.strip().splitlines()[-1])
    finally:
        _kill(stations)

    written = {name: o["written"] for name, o in out.items()}
    undos = {name: o["undos"] for name, o in out.items()}
    n_written = sum(len(w) + len(undos[name]) for name, w in written.items())
    assert n_written == 2 * (PER_STATION + PER_STATION // 7)
    # the writes really overlapped in time: each station's ids fall inside the other's range
    ranges = {name: (min(r[0] for r in w), max(r[0] for r in w)) for name, w in written.items()}
    a, b = ranges["station-a"], ranges["station-b"]
    assert a[0] < b[1] and b[0] < a[1], f"the two stations did not write concurrently: {ranges}"

    with Project.open(root) as project, project.db.session() as s:
        rows = {v.id: v for v in s.scalars(select(Verdict))}
        # nothing lost, nothing extra
        expected_ids = {r[0] for w in written.values() for r in w} | {u[0] for us in undos.values() for u in us}
        assert len(expected_ids) == n_written  # ids unique across stations
        assert set(rows) == expected_ids
        print(f"\n{n_written} verdicts written concurrently by 2 processes, {len(rows)} read back")
        assert len(rows) == n_written
        for name, w in written.items():
            ids = [r[0] for r in w]
            assert ids == sorted(ids), f"{name}'s verdicts are out of its own order"
            for vid, sid, kind, reason, mask_id in w:
                v = rows[vid]
                assert (v.sample_id, v.verdict.value, v.reason, v.author, v.author_kind) == (
                    sid, kind, reason, name, VerdictAuthorKind.HUMAN)
                assert v.created_at.tzinfo is not None  # timestamptz comes back aware (server at +05:30)
                if kind == VerdictKind.CORRECTED.value:
                    m = s.get(Mask, mask_id)
                    assert m is not None and m.sample_id == sid and m.source == MaskSource.CORRECTED
        # every undo cancels the station's own latest verdict still in effect at that moment
        for name, us in undos.items():
            mine = [r[0] for r in written[name]]
            cancelled: set[int] = set()
            for uid, target in us:
                u = rows[uid]
                assert u.verdict == VerdictKind.UNDO and u.author == name and u.supersedes_id == target
                live = [vid for vid in mine if vid < uid and vid not in cancelled]
                assert target == live[-1]
                cancelled.add(target)
        # the trail per sample is every row of that sample, oldest first; the effective verdict follows from it
        per_sample = defaultdict(list)
        for v in rows.values():
            per_sample[v.sample_id].append(v.id)
        undone = {v.supersedes_id for v in rows.values() if v.verdict == VerdictKind.UNDO}
        effective = effective_verdicts(s, sids)
        for sid in sids:
            t = trail(s, sid)
            assert [v.id for v in t] == sorted(per_sample[sid])
            live = [v for v in t if v.verdict != VerdictKind.UNDO and v.id not in undone]
            assert effective[sid].id == live[-1].id
        assert s.scalar(select(func.count()).select_from(Verdict)) == n_written
