"""The VLM judge against a real OpenAI-compatible HTTP server on 127.0.0.1 (tests/review/fake_openai.py).

Covers the request format (data URIs, JSON mode), verdict mapping through the random A/B order, fallback on 429,
retry on 500, timeout then fallback, bad answers, the cache (a second run makes no call), swap mode, the budget
cap with 8 concurrent workers, the per-key cap, cancel, missing keys and keys never reaching the store or log.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from review.judge import JudgeError, JudgeRun, JudgeSettings
from review.judge.budget import estimate_prompt_tokens
from review.judge.items import pending_items
from review.judge.parsing import BadAnswer, label_to_verdict, parse_answer
from store.schema import JudgeCall, Verdict, VerdictAuthorKind, VerdictKind

from fake_openai import FakeOpenAI, request_text
from review_helpers import DUMMY_KEY, Oracle

COST_A = 1000 * 0.01 / 1000 + 50 * 0.02 / 1000  # judge-a prices, server usage (1000, 50)
COST_B = 1000 * 0.005 / 1000 + 50 * 0.01 / 1000


def _run(project: Any, **overrides: Any) -> tuple[JudgeRun, Any]:
    kw = {k: overrides.pop(k) for k in ("rejudge", "limit", "cancel", "progress", "defect_class") if k in overrides}
    settings = JudgeSettings.from_config(project.config, **overrides)
    run = JudgeRun(project.db, settings, **kw)
    return run, run.run()


def _calls(project: Any) -> list[JudgeCall]:
    with project.db.session() as s:
        return list(s.scalars(select(JudgeCall).order_by(JudgeCall.id)))


def _vlm_verdicts(project: Any) -> dict[int, Verdict]:
    with project.db.session() as s:
        return {v.sample_id: v for v in s.scalars(
            select(Verdict).where(Verdict.author_kind == VerdictAuthorKind.VLM).order_by(Verdict.id))}


# -- answers -----------------------------------------------------------------------------------------------------------


def test_parse_answer_accepts_json_and_rejects_the_rest() -> None:
    assert parse_answer('{"label": "A", "confidence": 0.8, "reason": "tight"}') == ("A", 0.8, "tight")
    assert parse_answer('```json\n{"label": "both good", "confidence": 85}\n```')[:2] == ("both_good", 0.85)
    assert parse_answer('Sure! {"label": "b", "confidence": "0.6"}')[:2] == ("B", 0.6)
    for bad in ("", "I think the first one", '{"label": "C", "confidence": 0.5}', '["A"]',
                '{"confidence": 0.5}', '{"label": "A", "confidence": "high"}', '{"label": "A", "reason": "x"}'):
        with pytest.raises(BadAnswer):
            parse_answer(bad)


def test_labels_map_through_the_recorded_order() -> None:
    assert label_to_verdict("A", "teacher") == VerdictKind.TEACHER_BETTER
    assert label_to_verdict("A", "student") == VerdictKind.STUDENT_BETTER
    assert label_to_verdict("B", "teacher") == VerdictKind.STUDENT_BETTER
    assert label_to_verdict("B", "student") == VerdictKind.TEACHER_BETTER
    assert label_to_verdict("both_bad", "student") == VerdictKind.BOTH_BAD


# -- the happy path, then the cache ------------------------------------------------------------------------------------


def test_judge_sends_images_as_data_uris_asks_json_and_caches(flagged_project: Any, server: FakeOpenAI) -> None:
    project = flagged_project
    server.answer = Oracle(project)
    done: list[tuple[int, int]] = []
    run, st = _run(project, progress=lambda d, t: done.append((d, t)))
    assert st.total == 9 and st.verdicts == 9 and st.calls == 9 and st.errors == 0 and st.stopped is None
    assert done[-1] == (9, 9)
    assert server.violations == []
    assert server.calls() == 9 and server.calls("judge-a") == 9
    body = server.requests[0]["body"]
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"][0]["role"] == "system"
    assert '"label"' in request_text(body) and "Mask A" in request_text(body)
    assert server.requests[0]["auth"] == f"Bearer {DUMMY_KEY}"

    calls = _calls(project)
    assert len(calls) == 9 and {c.status for c in calls} == {"ok"}
    assert {c.a_is for c in calls} == {"teacher", "student"}  # the order really varies
    for c in calls:
        assert c.model_used == "openai/judge-a" and c.model_requested == "openai/judge-a"
        assert (c.prompt_tokens, c.completion_tokens) == (1000, 50)
        assert c.cost_usd == pytest.approx(COST_A) and not c.cache_hit and c.latency_ms > 0
        assert c.prompt_version == "v2" and c.run_id == st.run_id
    assert st.spent_usd == pytest.approx(9 * COST_A)
    # teacher = ground truth, student = dilated: the looking judge prefers the teacher whatever the position
    verdicts = _vlm_verdicts(project)
    assert {v.verdict for v in verdicts.values()} == {VerdictKind.TEACHER_BETTER}
    assert all(v.author == "vlm:openai/judge-a" and 0.5 <= v.confidence <= 1 for v in verdicts.values())

    # second run: nothing pending, no call
    server.reset()
    _, st2 = _run(project)
    assert st2.total == 0 and server.calls() == 0
    # re-judging the same samples: identical requests are answered from the store
    _, st3 = _run(project, rejudge=True)
    assert server.calls() == 0 and st3.cache_hits == 9 and st3.calls == 0 and st3.verdicts == 9
    cached = [c for c in _calls(project) if c.run_id == st3.run_id]
    assert {c.status for c in cached} == {"cached"} and all(c.cache_hit and c.cost_usd == 0 for c in cached)
    assert {v.verdict for v in _vlm_verdicts(project).values()} == {VerdictKind.TEACHER_BETTER}
    # another model is another request: no cache hit
    _, st4 = _run(project, rejudge=True, model="openai/judge-b", fallbacks=[], limit=1)
    assert st4.cache_hits == 0 and server.calls("judge-b") == 1


# -- failures ------------------------------------------------------------------------------------------------------


def test_rate_limited_primary_falls_back(flagged_project: Any, server: FakeOpenAI) -> None:
    server.set_mode("judge-a", "429")
    _, st = _run(flagged_project, limit=2)
    assert st.verdicts == 2 and st.errors == 0 and st.by_model == {"openai/judge-b": 2}
    assert server.calls("judge-a", "429") == 4  # first try + 1 retry per sample, then the fallback
    assert server.calls("judge-b") == 2
    calls = _calls(flagged_project)
    assert {c.model_used for c in calls} == {"openai/judge-b"}
    assert all(c.cost_usd == pytest.approx(COST_B) for c in calls)
    assert {v.author for v in _vlm_verdicts(flagged_project).values()} == {"vlm:openai/judge-b"}


def test_server_error_is_retried_on_the_same_model(flagged_project: Any, server: FakeOpenAI) -> None:
    server.queue("judge-a", "500")
    _, st = _run(flagged_project, limit=1, workers=1)
    assert st.verdicts == 1 and server.calls("judge-a") == 2 and server.calls("judge-b") == 0
    assert _calls(flagged_project)[0].model_used == "openai/judge-a"


def test_hanging_primary_times_out_then_falls_back(flagged_project: Any, server: FakeOpenAI) -> None:
    server.queue("judge-a", "hang", "hang")
    _, st = _run(flagged_project, limit=1, workers=1, timeout_s=1.0)
    assert st.verdicts == 1 and server.calls("judge-a", "hang") == 2 and server.calls("judge-b") == 1
    (call,) = _calls(flagged_project)
    assert call.model_used == "openai/judge-b" and call.latency_ms >= 2000


def test_prompt_speaks_of_the_projects_domain(flagged_project: Any, server: FakeOpenAI) -> None:
    _run(flagged_project, limit=1, workers=1)
    text = request_text(server.requests[0]["body"])
    assert "crop of an industrial surface with a" in text and "magnetic" not in text
    server.reset()
    domain = {"surface": "a sintered magnetic tile", "defects": {c: f"the {c} look of a tile" for c in
                                                             ("blowhole", "break", "crack", "fray", "uneven")}}
    _, st = _run(flagged_project, limit=1, workers=1, rejudge=True, domain=domain)
    text = request_text(server.requests[0]["body"])
    assert "crop of a sintered magnetic tile with a" in text and "look of a tile)" in text
    assert st.cache_hits == 0 and st.calls == 1  # another domain is another request, never a cache hit
    with pytest.raises(JudgeError, match="judge.domain.surface"):
        JudgeSettings.from_config(flagged_project.config, domain={"defects": {}})
    with pytest.raises(JudgeError, match="unknown keys"):
        JudgeSettings.from_config(flagged_project.config, domain={"surface": "x", "vocabulary": {}})


def test_a_bad_answers_retry_says_what_was_wrong(flagged_project: Any, server: FakeOpenAI) -> None:
    answers = iter([{"label": "A", "reason": "forgot it"}, {"label": "A", "confidence": 0.8, "reason": "ok"}])
    server.answer = lambda body: next(answers)
    _, st = _run(flagged_project, limit=1, workers=1)
    assert st.bad_answers == 1 and st.verdicts == 1  # a missing confidence is a bad answer, not 0.5
    first, second = (r["body"]["messages"] for r in server.requests)
    assert len(second) == len(first) + 2
    assert second[-2] == {"role": "assistant", "content": '{"label": "A", "reason": "forgot it"}'}
    assert "could not be used: answer has no confidence" in second[-1]["content"]
    assert [c.status for c in _calls(flagged_project)] == ["bad_answer", "ok"]


def test_bad_answers_are_recorded_retried_once_and_never_crash(flagged_project: Any, server: FakeOpenAI) -> None:
    server.queue("judge-a", "garbage", "ok", "unknown_label", "unknown_label")
    _, st = _run(flagged_project, limit=2, workers=1)
    # sample 1: garbage then a good answer; sample 2: two unknown labels, no verdict, still pending
    assert st.bad_answers == 3 and st.verdicts == 1 and st.errors == 0 and st.done == 2
    statuses = [c.status for c in _calls(flagged_project)]
    assert statuses == ["bad_answer", "ok", "bad_answer", "bad_answer"]
    bad = _calls(flagged_project)[0]
    assert bad.answer_raw.startswith("I think") and "not JSON" in bad.error and bad.cost_usd == pytest.approx(COST_A)
    assert "unknown label" in _calls(flagged_project)[2].error
    assert len(pending_items(flagged_project.db)) == 8  # bad answers are never cached: next run asks again
    server.reset()
    _, st2 = _run(flagged_project, limit=1, workers=1)
    assert st2.verdicts == 1 and server.calls() == 1


def test_failed_calls_are_recorded_and_keys_scrubbed(flagged_project: Any, server: FakeOpenAI,
                                                     tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    server.set_mode("judge-a", "401")  # the server echoes the key in its error, like OpenAI does
    server.set_mode("judge-b", "500")
    flagged_project.config["judge"]["max_consecutive_errors"] = 3
    flagged_project.save_config()
    env = {**os.environ, "MASKBENCH_LOG_DIR": str(tmp_path / "logs"), "OPENAI_API_KEY": DUMMY_KEY}
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "main.py", "judge", "--project", str(flagged_project.root),
                           "--workers", "1", "--retries", "0"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "errors 3" in proc.stdout and "too many consecutive errors" in proc.stdout
    calls = _calls(flagged_project)
    assert len(calls) == 3 and {c.status for c in calls} == {"error"}
    assert all(c.error and c.cost_usd == 0 and c.model_used is None for c in calls)
    assert server.calls("judge-a") == 3  # auth errors are not retried
    assert not _vlm_verdicts(flagged_project)
    # the key never reaches the store (SQLite file and WAL), the log, or the terminal
    secret = "DUMMYSECRET"
    files = list(flagged_project.root.glob("maskbench.sqlite*")) + list((tmp_path / "logs").glob("*"))
    assert any(f.name.startswith("maskbench.log") for f in files)
    for f in files:
        assert secret.encode() not in f.read_bytes(), f
    assert secret not in proc.stdout + proc.stderr


# -- swap --------------------------------------------------------------------------------------------------------------


def test_swap_mode_cancels_position_bias(flagged_project: Any, server: FakeOpenAI) -> None:
    # a judge that always says "A" is pure position bias: both orders disagree -> uncertain
    _, st = _run(flagged_project, swap=True, limit=3)
    assert st.verdicts == 3 and st.uncertain == 3 and st.calls == 6
    assert {v.verdict for v in _vlm_verdicts(flagged_project).values()} == {VerdictKind.UNCERTAIN}
    calls = _calls(flagged_project)
    by_sample: dict[int, list[JudgeCall]] = {}
    for c in calls:
        by_sample.setdefault(c.sample_id, []).append(c)
    for pair in by_sample.values():
        assert [c.swapped for c in pair] == [False, True] and pair[0].a_is != pair[1].a_is
    # a judge that looks agrees with itself in both orders
    server.answer = Oracle(flagged_project)
    _, st2 = _run(flagged_project, swap=True, limit=3)
    assert st2.uncertain == 0 and st2.verdicts == 3
    assert sorted(v.verdict.value for v in _vlm_verdicts(flagged_project).values()).count("teacher_better") == 3


# -- budget ------------------------------------------------------------------------------------------------------------


def test_budget_allows_exactly_n_calls_with_8_workers(flagged_project: Any, server: FakeOpenAI) -> None:
    server.set_mode("judge-a", "delay")  # slow answers: the 8 workers really overlap
    n = 5
    budget = n * COST_A + COST_A / 2
    run, st = _run(flagged_project, workers=8, budget_usd=budget, max_prompt_tokens=1000, max_tokens=50)
    assert run.worst_case_cost() == pytest.approx(COST_A)
    assert server.calls() == n and st.calls == n and st.verdicts == n
    assert server.max_in_flight >= 2
    assert st.stopped == "budget" and st.spent_usd <= budget and st.pending == 9 - n
    assert sum(c.cost_usd for c in _calls(flagged_project)) <= budget
    assert len(pending_items(flagged_project.db)) == 9 - n  # the rest stay pending for the next run


def test_budget_holds_with_estimated_reservations(flagged_project: Any, server: FakeOpenAI) -> None:
    server.set_mode("judge-a", "delay")
    settings = JudgeSettings.from_config(flagged_project.config)
    probe = JudgeRun(flagged_project.db, settings)
    reserve = max(probe.worst_case_cost(it) for it in probe.items)
    assert reserve > COST_A  # the estimate (prompt text, 3 images, max_tokens) is above what the server bills
    budget = 3 * reserve
    _, st = _run(flagged_project, workers=8, budget_usd=budget)
    assert st.spent_usd <= budget and server.calls() >= 3
    assert st.stopped == "budget" or st.verdicts == 9


def test_zero_budget_makes_no_call(flagged_project: Any, server: FakeOpenAI) -> None:
    _, st = _run(flagged_project, budget_usd=0)
    assert server.calls() == 0 and st.stopped == "budget" and st.verdicts == 0 and st.pending == 9


def test_per_key_budget_spans_runs(flagged_project: Any, server: FakeOpenAI) -> None:
    cap = 2 * COST_A + COST_A / 2
    _, st = _run(flagged_project, key_budget_usd=cap, max_prompt_tokens=1000, max_tokens=50, workers=4)
    assert server.calls() == 2 and st.stopped == "budget"
    assert {c.key_id for c in _calls(flagged_project)} != {None}
    _, st2 = _run(flagged_project, key_budget_usd=cap, max_prompt_tokens=1000, max_tokens=50)
    assert server.calls() == 2 and st2.stopped == "budget"  # the key's earlier spend counts


def test_cancel_stops_cleanly(flagged_project: Any, server: FakeOpenAI) -> None:
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done >= 2:
            cancel.set()

    _, st = _run(flagged_project, workers=1, cancel=cancel, progress=progress)
    assert st.stopped == "cancelled" and st.verdicts == 2 and server.calls() == 2
    assert len(pending_items(flagged_project.db)) == 7


# -- keys and the command line -----------------------------------------------------------------------------------------


def test_missing_key_is_one_clear_error(flagged_project: Any, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from app.cli import main

    monkeypatch.delenv("OPENAI_API_KEY")
    settings = JudgeSettings.from_config(flagged_project.config, api_base="https://judge.example.invalid/v1")
    with pytest.raises(JudgeError, match="OPENAI_API_KEY"):
        JudgeRun(flagged_project.db, settings)
    code = main(["judge", "--project", str(flagged_project.root), "--api-base", "https://judge.example.invalid/v1"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: no API key for judge model openai/judge-a")
    assert err.strip().count("\n") == 0


def test_local_server_needs_no_key(flagged_project: Any, server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    _, st = _run(flagged_project, limit=1)
    assert st.verdicts == 1 and server.requests[0]["auth"] == "Bearer sk-maskbench-no-key"


def test_unpriced_fallback_is_skipped_with_a_warning(flagged_project: Any, server: FakeOpenAI) -> None:
    run, st = _run(flagged_project, fallbacks=["openai/judge-unpriced"], limit=1)
    assert [a.model for a in run.access] == ["openai/judge-a"]
    assert any("judge-unpriced" in w and "price" in w for w in st.warnings)
    with pytest.raises(JudgeError, match="no price known"):
        _run(flagged_project, model="openai/judge-unpriced")


def test_cli_flags_override_project_yaml(flagged_project: Any, server: FakeOpenAI, capsys) -> None:
    from app.cli import main

    root = str(flagged_project.root)
    assert main(["judge", "--project", root, "--dry-run"]) == 0
    assert "9 pending" in capsys.readouterr().out and server.calls() == 0
    code = main(["judge", "--project", root, "--model", "openai/judge-b", "--no-fallbacks", "--api-base", server.url,
                 "--budget-usd", "1", "--workers", "3", "--swap", "--limit", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert server.calls("judge-b") == 4 and server.calls("judge-a") == 0
    assert "verdicts 2" in out and "calls 4" in out
    with flagged_project.db.session() as s:
        assert {c.model_requested for c in s.scalars(select(JudgeCall))} == {"openai/judge-b"}


def test_prompt_estimate_counts_images() -> None:
    small = estimate_prompt_tokens("x" * 100, 100, 100)
    big = estimate_prompt_tokens("x" * 100, 1500, 1500)
    assert 0 < small < big
