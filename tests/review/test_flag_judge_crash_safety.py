"""SIGKILL in the middle of `flag` and of `judge` (real `python -m app.cli` processes, issue 18 item 7).

After the kill the store opens, passes PRAGMA integrity_check and foreign_key_check, and holds whole records only:
  * flag writes its Disagreement rows in batches, one transaction each: the rows present are exactly the first whole
    batches (a batch killed between its INSERTs and its COMMIT leaves nothing), every row is complete, and a new run
    finishes the rest and ends where an uninterrupted run on a copy of the project ends.
  * judge records each answered call (JudgeCall) in one transaction and the VLM verdict pointing at it in the next:
    every row is complete, every VLM verdict points at an answered call of its sample, and a new run judges the rest,
    answering the calls answered before the kill from the store (no request to the model), and ends with the same
    verdicts as an uninterrupted run on a copy.

The kill is made deterministic: the child is either held inside a chosen transaction (an SQLAlchemy after_flush hook
in the child writes a mark, then sleeps: the rows are INSERTed, the COMMIT has not run) or left running freely and
killed once rows are visible (flag slowed down, so whole batches remain). Judge runs against the fake OpenAI server
of tests/review/fake_openai.py, which answers a fixed number of requests and holds every later one, so the kill
always lands with crops left to judge; the held variants kill inside the third answered call's transaction and
inside the third verdict's (that call committed, its verdict not).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from review.judge import JudgeRun, JudgeSettings
from review.judge.parsing import LABELS, label_to_verdict
from store.project import DB_NAME, Project
from store.schema import Disagreement, JudgeCall, ModelKind, ModelRecord, Prediction, Verdict, VerdictAuthorKind

from fake_openai import FakeOpenAI
from review_helpers import build_project, copy_crops, judge_config

REPO = Path(__file__).resolve().parents[2]
ANSWER = {"label": "A", "confidence": 0.8, "reason": "A follows the edge"}  # verdict then follows the A/B order


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=240)


def _count(root: Path, sql: str) -> int:
    """A count read with plain sqlite3 while the child writes (WAL: never blocks it)."""
    con = sqlite3.connect(root / DB_NAME, timeout=30)
    try:
        return int(con.execute(sql).fetchone()[0])
    finally:
        con.close()


def _wait(proc: subprocess.Popen, ready, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None, "the process ended before it could be killed"
        assert time.monotonic() < deadline, "the process made no progress"
        time.sleep(0.02)


def _kill(proc: subprocess.Popen) -> None:
    assert proc.poll() is None, "the process ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _check_store(root: Path) -> Project:
    """Open the project the way the CLI does (its damaged-store check included); integrity and foreign keys ok."""
    p = Project.open(root, scheduled_backup=False)
    assert p.db.integrity_check() == "ok"
    with p.db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
    return p


# -- flag --------------------------------------------------------------------------------------------------------------

N_FLAG = 24  # 8 crops of each of three classes
BATCH = 4  # flag's batch size in the child (the CLI has no option for it; 256 by default)

FLAG_CHILD = r"""
import os, sys, time
from pathlib import Path
from sqlalchemy import event
from sqlalchemy.orm import Session
import review.flagging as flagging

flagging.flag.__kwdefaults__["batch_size"] = int(os.environ["T_BATCH"])
marks, hold_at, slow = Path(os.environ["T_MARKS"]), int(os.environ["T_HOLD_AT"]), float(os.environ["T_SLOW"])
batches = 0

if slow:
    compute = flagging._compute
    def _slow(*args):
        time.sleep(slow)
        return compute(*args)
    flagging._compute = _slow

@event.listens_for(Session, "after_flush")
def _flushed(session, ctx):
    # the batch's INSERTs have run inside its transaction; the COMMIT has not
    global batches
    if any(isinstance(o, flagging.Disagreement) for o in session.new):
        batches += 1
        with marks.open("a") as f:
            f.write(f"{batches}\n")
        if batches == hold_at:
            time.sleep(600)

from app.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _flag_rows(p: Project) -> dict[int, tuple]:
    """sample id -> the record's content (everything but id and time), checking each row is whole."""
    out: dict[int, tuple] = {}
    with p.db.session() as s:
        kinds = dict(s.execute(select(Prediction.id, ModelRecord.kind).join(
            ModelRecord, ModelRecord.id == Prediction.model_id)).all())
        pred_sample = dict(s.execute(select(Prediction.id, Prediction.sample_id)).all())
        for d in s.scalars(select(Disagreement).order_by(Disagreement.id)):
            assert d.sample_id not in out, f"two records for sample {d.sample_id}"
            assert kinds.get(d.teacher_prediction_id) == ModelKind.TEACHER
            assert kinds.get(d.student_prediction_id) == ModelKind.STUDENT
            assert pred_sample[d.teacher_prediction_id] == pred_sample[d.student_prediction_id] == d.sample_id
            values = (d.teacher_prediction_id, d.student_prediction_id, d.iou_ts, d.dice_ts, d.iou_teacher_gt,
                      d.iou_student_gt, d.dice_teacher_gt, d.dice_student_gt, d.boundary_f, d.threshold, d.flagged)
            assert None not in values and d.created_at is not None, f"incomplete record {d.id}"  # all have a GT
            assert 0.0 <= d.iou_ts <= 1.0 and d.flagged == (d.iou_ts < 1 - d.threshold)
            out[d.sample_id] = values
    return out


@pytest.fixture
def flag_project(tmp_path: Path, magnetic_tile_pairs: list) -> tuple[Path, Path]:
    """A project with a teacher and a student prediction for 24 crops (some flagged, some not), and a copy."""
    data = copy_crops(magnetic_tile_pairs, tmp_path / "data", per_class=8,
                      classes=("MT_Blowhole", "MT_Break", "MT_Crack"))
    project, truth = build_project(tmp_path / "proj", data, scheme="mixed")
    project.close()
    assert len(truth) == N_FLAG
    shutil.copytree(tmp_path / "proj", tmp_path / "copy")
    return tmp_path / "proj", tmp_path / "copy"


@pytest.mark.parametrize("mode", ["inside_transaction", "between_batches"])
def test_sigkill_mid_flag_leaves_whole_batches_and_a_rerun_completes(tmp_path: Path, flag_project: tuple[Path, Path],
                                                                     mode: str) -> None:
    root, copy = flag_project
    marks = tmp_path / "marks"
    hold_at = 3 if mode == "inside_transaction" else 0  # 0: never hold, run slowly and get killed on the way
    env = _env(T_BATCH=str(BATCH), T_MARKS=str(marks), T_HOLD_AT=str(hold_at),
               T_SLOW="0" if hold_at else "0.1")
    proc = subprocess.Popen([sys.executable, "-c", FLAG_CHILD, "flag", "-p", str(root), "--workers", "1"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if hold_at:
            # the third batch's rows are INSERTed, its transaction open: kill before the COMMIT
            _wait(proc, lambda: marks.exists() and len(marks.read_text().split()) >= hold_at)
            time.sleep(0.1)  # (it sleeps right after writing the mark)
        else:
            _wait(proc, lambda: _count(root, "SELECT count(*) FROM disagreements") >= 2 * BATCH)
        _kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    with _check_store(root) as p:
        rows = _flag_rows(p)
    with Project.open(copy, scheduled_backup=False) as c, c.db.session() as s:
        all_samples = sorted(s.scalars(select(Prediction.sample_id).distinct()))
    assert len(all_samples) == N_FLAG
    if hold_at:
        assert len(rows) == (hold_at - 1) * BATCH  # exactly the committed batches; the open one left nothing
    else:
        assert len(rows) % BATCH == 0 and 2 * BATCH <= len(rows) < N_FLAG  # whole batches only
    assert sorted(rows) == all_samples[:len(rows)]  # batches go in sample order: a prefix

    again = _run_cli("flag", "-p", str(root))
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"new records {N_FLAG - len(rows)}, unchanged {len(rows)}" in again.stdout, again.stdout
    whole = _run_cli("flag", "-p", str(copy))  # uninterrupted, on the copy made before the kill
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert f"new records {N_FLAG}, unchanged 0" in whole.stdout, whole.stdout
    # the same report (per-class flagged counts) and the same records
    assert again.stdout.split("\nflagged ")[0] == whole.stdout.split("\nflagged ")[0]
    with _check_store(root) as p, _check_store(copy) as c:
        resumed, reference = _flag_rows(p), _flag_rows(c)
    assert len(resumed) == N_FLAG and resumed == reference
    assert 0 < sum(v[-1] for v in reference.values()) < N_FLAG  # both flagged and unflagged samples took part


# -- judge -------------------------------------------------------------------------------------------------------------

N_JUDGE = 15  # 5 crops of each of three classes, all flagged (the student mask is a dilated ground truth)
ANSWERED = 6  # the server answers this many requests, then holds every later one until the kill


class Gate:
    """The fake server's answer: the first `free` requests are answered, later ones wait until `release`."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.served = 0
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.reached = threading.Event()

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.served += 1
            k = self.served
        if k > self.free:
            self.release.wait(120)
        elif k == self.free:
            self.reached.set()
        return dict(ANSWER)


@pytest.fixture
def judge_server() -> FakeOpenAI:
    with FakeOpenAI() as srv:
        yield srv


@pytest.fixture
def judge_project(tmp_path: Path, magnetic_tile_pairs: list, judge_server: FakeOpenAI) -> tuple[Path, Path]:
    from review.flagging import flag

    data = copy_crops(magnetic_tile_pairs, tmp_path / "data", per_class=5,
                      classes=("MT_Blowhole", "MT_Break", "MT_Crack"))
    project, truth = build_project(tmp_path / "proj", data, judge_config(judge_server.url), scheme="dilate")
    assert flag(project.db, 0.15).flagged_total == len(truth) == N_JUDGE
    project.close()
    shutil.copytree(tmp_path / "proj", tmp_path / "copy")
    return tmp_path / "proj", tmp_path / "copy"


JUDGE_ARGS = ("--workers", "4", "--timeout", "60", "--retries", "0", "--no-fallbacks")
JUDGE_SETTINGS = {"workers": 4, "timeout_s": 60.0, "retries": 0, "fallbacks": []}  # the same, for JudgeRun


def _judge_state(p: Project) -> tuple[dict[int, JudgeCall], dict[int, Verdict], list[JudgeCall]]:
    """(sample -> its answered call, sample -> its VLM verdict, all calls), checking every row is whole."""
    with p.db.session() as s:
        calls = list(s.scalars(select(JudgeCall).order_by(JudgeCall.id)))
        verdicts = list(s.scalars(select(Verdict).where(Verdict.author_kind == VerdictAuthorKind.VLM)
                                  .order_by(Verdict.id)))
        latest_d = dict(s.execute(select(Disagreement.sample_id, Disagreement.id)).all())
    by_id = {c.id: c for c in calls}
    answered: dict[int, JudgeCall] = {}
    for c in calls:
        assert c.status in ("ok", "cached"), (c.id, c.status, c.error)  # no error: the kill is no failed call
        assert c.run_id and c.request_hash and c.prompt_version and c.model_requested and c.created_at
        assert c.a_is in ("teacher", "student") and c.disagreement_id == latest_d[c.sample_id]
        assert c.label in LABELS and c.confidence is not None and c.answer_raw and c.model_used, f"incomplete {c.id}"
        if c.status == "ok":
            assert not c.cache_hit and c.cost_usd > 0 and c.prompt_tokens == 1000 and c.latency_ms > 0
            assert c.sample_id not in answered, f"sample {c.sample_id} was asked twice"
            answered[c.sample_id] = c
        else:
            assert c.cache_hit and c.cost_usd == 0
    by_sample: dict[int, Verdict] = {}
    for v in verdicts:
        assert v.sample_id not in by_sample, f"two VLM verdicts for sample {v.sample_id}"
        call = by_id.get(v.judge_call_id)
        assert call is not None, f"verdict {v.id} without its judge call"
        assert call.sample_id == v.sample_id and v.verdict == label_to_verdict(call.label, call.a_is)
        assert v.confidence == pytest.approx(call.confidence) and v.author == f"vlm:{call.model_used}"
        by_sample[v.sample_id] = v
    return answered, by_sample, calls


HOLD_AT = 3  # the held transaction: the third answered call's, or the third verdict's
JUDGE_CHILD = r"""
import os, sys, time
from pathlib import Path
from sqlalchemy import event
from sqlalchemy.orm import Session
from store.schema import JudgeCall, Verdict

marks, hold_at = Path(os.environ["T_MARKS"]), int(os.environ["T_HOLD_AT"])
kind = {"call": JudgeCall, "verdict": Verdict}[os.environ["T_HOLD"]]
seen = 0

@event.listens_for(Session, "after_flush")
def _flushed(session, ctx):
    # the row is INSERTed inside its transaction, the COMMIT has not run (the judge writes under one lock, so the
    # other workers wait behind this one)
    global seen
    if any(isinstance(o, kind) for o in session.new):
        seen += 1
        if seen == hold_at:
            marks.write_text("held")
            time.sleep(600)

from app.cli import main
sys.exit(main(sys.argv[1:]))
"""

RERUN_CHILD = r"""
import os, sys, time
from pathlib import Path
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import review.judge
from litellm import Router  # the command's slow imports, done while the killed process still runs
go, deadline = Path(os.environ["T_GO"]), time.monotonic() + 300
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.02)
from app.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _uninterrupted(copy: Path, url: str, out: dict[str, Any]) -> None:
    """The reference run on the copy made before the kill, in this process (the command is a thin wrapper over
    JudgeRun), in a thread while the child processes start: a third process would cost another LiteLLM import."""
    try:
        with Project.open(copy, scheduled_backup=False) as c:
            out["stats"] = JudgeRun(c.db, JudgeSettings.from_config(c.config, api_base=url, **JUDGE_SETTINGS)).run()
    except BaseException as exc:  # noqa: BLE001 - re-raised in the test
        out["error"] = exc


@pytest.mark.parametrize("hold", ["", "call", "verdict"],
                         ids=["free", "inside_call_transaction", "inside_verdict_transaction"])
def test_sigkill_mid_judge_keeps_whole_calls_and_a_rerun_asks_only_the_rest(
        judge_project: tuple[Path, Path], judge_server: FakeOpenAI, hold: str) -> None:
    root, copy = judge_project
    server = judge_server
    gate = Gate(ANSWERED)
    server.answer = gate
    reference_server = FakeOpenAI(answer=lambda body: dict(ANSWER)).__enter__()
    ref: dict[str, Any] = {}
    ref_thread = threading.Thread(target=_uninterrupted, args=(copy, reference_server.url, ref), daemon=True)
    go = root.parent / "go"
    # the re-run: a second `judge` process, started now so its imports overlap the first one's; it waits for `go`
    rerun = subprocess.Popen([sys.executable, "-c", RERUN_CHILD, "judge", "-p", str(root), *JUDGE_ARGS], cwd=REPO,
                             env=_env(T_GO=str(go)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marks = root.parent / "held"
    child = ["-c", JUDGE_CHILD] if hold else ["-m", "app.cli"]
    proc = subprocess.Popen([sys.executable, *child, "judge", "-p", str(root), *JUDGE_ARGS], cwd=REPO,
                            env=_env(T_HOLD=hold, T_HOLD_AT=str(HOLD_AT), T_MARKS=str(marks)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ref_thread.start()
    try:
        _judge_kill_and_rerun(root, copy, server, gate, proc, rerun, go, hold, marks, ref_thread, ref,
                              reference_server)
    finally:
        gate.release.set()
        for p in (proc, rerun):
            if p.poll() is None:
                p.kill()
                p.communicate()
        reference_server.__exit__(None, None, None)


def _judge_kill_and_rerun(root: Path, copy: Path, server: FakeOpenAI, gate: Gate, proc: subprocess.Popen,
                          rerun: subprocess.Popen, go: Path, hold: str, marks: Path, ref_thread: threading.Thread,
                          ref: dict[str, Any], reference_server: FakeOpenAI) -> None:
    try:
        if hold:  # held inside the chosen transaction
            _wait(proc, marks.exists)
            time.sleep(0.1)
        else:  # the last free answer is on its way and the child has recorded one: kill while it records the rest
            _wait(proc, lambda: gate.reached.is_set()
                  and _count(root, "SELECT count(*) FROM judge_calls WHERE status = 'ok'") >= 1)
        _kill(proc)
    finally:
        gate.release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert server.violations == []

    with _check_store(root) as p:
        answered, verdicts, calls = _judge_state(p)
    assert 1 <= len(answered) <= ANSWERED and len(calls) == len(answered)
    assert set(verdicts) <= set(answered)  # a verdict only with its call (the call may lack its verdict yet)
    unfinished = set(answered) - set(verdicts)  # answered, killed before the verdict was written
    if hold == "call":  # the held call was answered by the server but never committed: not there, asked again
        assert len(answered) == HOLD_AT - 1
    elif hold == "verdict":  # its call is committed, the verdict is not: answered again from the store
        assert len(verdicts) == HOLD_AT - 1 and len(answered) >= HOLD_AT and unfinished

    server.reset()
    server.answer = lambda body: dict(ANSWER)
    go.touch()
    out, err = rerun.communicate(timeout=240)
    again = subprocess.CompletedProcess(rerun.args, rerun.returncode, out, err)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{N_JUDGE - len(verdicts)} pending sample(s)" in again.stdout, again.stdout
    assert f"cache hits {len(unfinished)};" in again.stdout and "not attempted 0" in again.stdout, again.stdout
    assert server.calls() == N_JUDGE - len(answered)  # answered crops are never asked again
    with _check_store(root) as p:
        answered2, verdicts2, calls2 = _judge_state(p)
    assert len(answered2) == N_JUDGE and answered2.keys() == verdicts2.keys()
    for sid, c in answered.items():
        assert answered2[sid].id == c.id  # the call answered before the kill is the one that counts
    cached = [c for c in calls2 if c.status == "cached"]
    assert sorted(c.sample_id for c in cached) == sorted(unfinished)
    for sid in unfinished:  # its verdict comes from the cached copy of the answer given before the kill
        v = verdicts2[sid]
        assert next(c for c in cached if c.id == v.judge_call_id).request_hash == answered[sid].request_hash

    ref_thread.join(120)
    assert not ref_thread.is_alive() and "error" not in ref, ref.get("error")
    whole = ref["stats"]
    assert whole.verdicts == N_JUDGE and whole.pending == 0 and whole.stopped is None
    assert reference_server.calls() == N_JUDGE and whole.calls == N_JUDGE and whole.cache_hits == 0
    with _check_store(copy) as c:
        _, reference, _ = _judge_state(c)
    assert {s: (v.verdict, v.confidence) for s, v in verdicts2.items()} == \
        {s: (v.verdict, v.confidence) for s, v in reference.items()}
    assert len({v.verdict for v in reference.values()}) == 2  # A/B order varies: teacher and student both won
