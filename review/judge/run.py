"""The judge run: the worker threads, the LiteLLM Router with its fallbacks and retries, the cache, and every
JudgeCall and VLM verdict written to the store.

It exists as the one place where calls are sent and their outcomes recorded; settings, keys, prices, answer parsing
and the pending-sample query it uses live in the sibling modules (see review.judge for the run's guarantees).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sqlalchemy import func, select

from store import rle as rle_mod
from store.db import Database
from store.images import load_image
from store.schema import JudgeCall, Sample, VerdictAuthorKind, VerdictKind

from review import prompts as prompts_mod
from review import render
from review.judge.access import PLACEHOLDER_KEY, ModelAccess, resolve_access, scrub_secrets
from review.judge.budget import Budget, call_cost, estimate_prompt_tokens
from review.judge.items import Item, pending_items
from review.judge.parsing import BadAnswer, label_to_verdict, parse_answer, response_model, response_text, response_usage
from review.judge.settings import JudgeSettings
from review.verdicts import add_verdict

log = logging.getLogger("maskbench.judge")

ProgressFn = Callable[[int, int], None]


@dataclass
class Answer:
    label: str
    confidence: float
    reason: str
    a_is: str
    call_id: int
    model_used: str | None


@dataclass
class JudgeStats:
    run_id: str = ""
    total: int = 0
    done: int = 0
    calls: int = 0  # requests sent through the Router (each may include retries and fallbacks)
    cache_hits: int = 0
    errors: int = 0
    bad_answers: int = 0
    verdicts: int = 0
    uncertain: int = 0
    spent_usd: float = 0.0
    reserved_usd: float = 0.0
    budget_usd: float = 0.0
    stopped: str | None = None  # None | "budget" | "cancelled" | "errors"
    warnings: list[str] = field(default_factory=list)
    by_model: dict[str, int] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        return self.total - self.done

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pending"] = self.pending
        return d



_FAILED = object()


class JudgeRun:
    """One judge run over the pending flagged samples of a store.

    Construct, optionally look at `estimate()`, then `run()` (blocking; call it from a worker thread in a GUI).
    `cancel.set()` stops the run after the calls in flight; `stats` is a live snapshot at any time.
    """

    def __init__(
        self,
        db: Database,
        settings: JudgeSettings,
        *,
        progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        rejudge: bool = False,
        defect_class: str | None = None,
        limit: int | None = None,
        skip_reviewed: bool = False,
        router: Any | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.progress = progress
        self.cancel = cancel or threading.Event()
        self.prompt = prompts_mod.load(settings.prompt_version)
        self.access, warnings = resolve_access(settings)
        self._by_model = {a.model: a for a in self.access}
        self._secrets = [a.api_key for a in self.access if a.api_key and a.api_key != PLACEHOLDER_KEY]
        self.items = pending_items(db, rejudge=rejudge, defect_class=defect_class, limit=limit,
                                   skip_reviewed=skip_reviewed)
        self.run_id = time.strftime("j%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self._stats = JudgeStats(run_id=self.run_id, total=len(self.items), budget_usd=float(settings.budget_usd),
                                 warnings=list(warnings))
        self._lock = threading.Lock()
        self._db_lock = threading.Lock()
        self._stop = threading.Event()
        self._consecutive_errors = 0
        self._router = router
        caps = {"run": float(settings.budget_usd)}
        spent_before: dict[str, float] = {}
        key_ids = sorted({a.key_id for a in self.access if a.key_id})
        if settings.key_budget_usd is not None and key_ids:
            with db.session() as s:
                rows = s.execute(select(JudgeCall.key_id, func.coalesce(func.sum(JudgeCall.cost_usd), 0.0))
                                 .where(JudgeCall.key_id.in_(key_ids)).group_by(JudgeCall.key_id)).all()
            for kid in key_ids:
                caps[f"key:{kid}"] = float(settings.key_budget_usd)
            spent_before = {f"key:{kid}": float(v) for kid, v in rows}
        self.budget = Budget(caps, spent_before)
        self._accounts = list(caps)

    # -- public ----------------------------------------------------------------------------------------------------
    @property
    def stats(self) -> JudgeStats:
        with self._lock:
            snap = replace(self._stats, warnings=list(self._stats.warnings), by_model=dict(self._stats.by_model))
        snap.spent_usd = self.budget.run_spent
        snap.reserved_usd = self.budget.reserved_total
        return snap

    def worst_case_cost(self, item: Item | None = None) -> float:
        """The reservation for one call: worst-case prompt tokens and max_tokens at the dearest model of the chain."""
        if self.settings.max_prompt_tokens is not None:
            p_tokens = int(self.settings.max_prompt_tokens)
        else:
            w, h = (item.width, item.height) if item is not None else (self.settings.max_image_side,) * 2
            scale = min(1.0, self.settings.max_image_side / max(w, h)) if self.settings.max_image_side else 1.0
            text = "".join(self._prompt_text(item)) if item is not None else self.prompt.system + self.prompt.user
            p_tokens = estimate_prompt_tokens(text, round(w * scale), round(h * scale))
        return max(a.input_per_token * p_tokens + a.output_per_token * self.settings.max_tokens for a in self.access)

    def estimate(self) -> tuple[int, float]:
        """(pending samples, worst-case USD to judge them all, swap mode and one bad-answer retry not counted)."""
        per = sum(self.worst_case_cost(it) for it in self.items) * (2 if self.settings.swap else 1)
        return len(self.items), per

    def run(self) -> JudgeStats:
        if not self.items:
            return self.stats
        work: queue.Queue[Item] = queue.Queue()
        for it in self.items:
            work.put(it)
        if self.progress:
            self.progress(0, len(self.items))
        threads = [threading.Thread(target=self._worker, args=(work,), name=f"judge-{i}", daemon=True)
                   for i in range(min(self.settings.workers, len(self.items)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with self._lock:
            if self._stats.stopped is None and self.cancel.is_set():
                self._stats.stopped = "cancelled"
        log.info("judge run %s: %s", self.run_id, json.dumps(self.stats.as_dict(), default=str))
        return self.stats

    # -- internals -------------------------------------------------------------------------------------------------
    def _halted(self) -> bool:
        return self._stop.is_set() or self.cancel.is_set()

    def _halt(self, reason: str) -> None:
        with self._lock:
            if self._stats.stopped is None:
                self._stats.stopped = reason
        self._stop.set()

    def _worker(self, work: queue.Queue[Item]) -> None:
        while not self._halted():
            try:
                item = work.get_nowait()
            except queue.Empty:
                return
            try:
                finished = self._judge_item(item)
            except Exception as exc:  # noqa: BLE001 - a broken sample must never end the run
                log.exception("judge: sample %s failed", item.sample_id)
                self._record_failure(item, f"{exc.__class__.__name__}: {self._scrub(str(exc))}")
                finished = True
            if finished:
                with self._lock:
                    self._stats.done += 1
                    done, total = self._stats.done, self._stats.total
                if self.progress:
                    self.progress(done, total)

    def _a_is(self, item: Item) -> str:
        """Per-sample random (but reproducible) position of the teacher's mask, so identical requests repeat."""
        h = hashlib.sha256(f"{self.settings.order_seed}:{item.sha256}:{item.mask_shas()['teacher']}".encode())
        return "teacher" if h.digest()[0] % 2 == 0 else "student"

    def request_hash(self, item: Item, a_is: str) -> str:
        shas = item.mask_shas()
        b_is = "student" if a_is == "teacher" else "teacher"
        key = {
            "prompt_version": self.settings.prompt_version, "prompt_sha": self.prompt.sha256,
            "model": self.settings.model, "crop": item.sha256, "mask_a": shas[a_is], "mask_b": shas[b_is],
            "render": render.RENDER_VERSION, "max_side": self.settings.max_image_side,
            "max_tokens": self.settings.max_tokens,
            # the rendered text: a changed judge.domain is a different request
            "text": hashlib.sha256("\n".join(self._prompt_text(item)).encode()).hexdigest(),
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    def _judge_item(self, item: Item) -> bool:
        """Judge one sample; True when it is finished (verdict or given up), False when the run stopped first."""
        first = self._a_is(item)
        orders = [first] + ([("student" if first == "teacher" else "teacher")] if self.settings.swap else [])
        images: dict[str, tuple[str, str, str]] = {}
        answers: list[Answer] = []
        for i, a_is in enumerate(orders):
            ans = self._ask(item, a_is, swapped=i > 0, images=images)
            if ans is _FAILED:
                return True  # error or two bad answers: recorded, no verdict; a later run tries again
            if ans is None:
                return False  # stopped (budget, cancel) before asking: stays pending
            answers.append(ans)
        kinds = [label_to_verdict(a.label, a.a_is) for a in answers]
        if len(set(kinds)) == 1:
            kind = kinds[0]
            conf = sum(a.confidence for a in answers) / len(answers)
            reason = answers[0].reason
        else:
            kind, conf = VerdictKind.UNCERTAIN, None
            reason = "swapped answers disagree: " + " vs ".join(
                f"{k.value} (A={a.a_is}, {a.confidence:.2f})" for k, a in zip(kinds, answers))
        author = f"vlm:{answers[-1].model_used or self.settings.model}"
        with self._db_lock, self.db.session() as s:
            sample = s.get(Sample, item.sample_id)
            add_verdict(s, sample, kind, author, author_kind=VerdictAuthorKind.VLM, confidence=conf, reason=reason,
                        judge_call_id=answers[-1].call_id)
        with self._lock:
            self._stats.verdicts += 1
            if kind == VerdictKind.UNCERTAIN:
                self._stats.uncertain += 1
        return True

    def _render(self, item: Item, a_is: str, images: dict[str, tuple[str, str, str]]) -> tuple[str, str, str]:
        if a_is not in images:
            img = load_image(item.path)
            t, s = rle_mod.decode(item.teacher_rle), rle_mod.decode(item.student_rle)
            a, b = (t, s) if a_is == "teacher" else (s, t)
            images[a_is] = render.judge_images(img, a, b, self.settings.max_image_side)
        return images[a_is]

    def _prompt_text(self, item: Item) -> tuple[str, str]:
        return self.prompt.render(defect_class=item.defect_class, width=item.width, height=item.height,
                                  **self.settings.prompt_values(item.defect_class))

    def _messages(self, item: Item, uris: tuple[str, str, str]) -> list[dict[str, Any]]:
        system, user = self._prompt_text(item)
        content: list[dict[str, Any]] = [{"type": "text", "text": user}]
        for label, uri in zip(("Crop:", "Mask A:", "Mask B:"), uris):
            content.append({"type": "text", "text": label})
            content.append({"type": "image_url", "image_url": {"url": uri}})
        msgs: list[dict[str, Any]] = []
        if system:
            msgs.append({"role": "system", "content": system})
        msgs.append({"role": "user", "content": content})
        return msgs

    def _cached(self, request_hash: str) -> JudgeCall | None:
        with self.db.session() as s:
            return s.scalar(select(JudgeCall).where(JudgeCall.request_hash == request_hash,
                                                    JudgeCall.status == "ok").order_by(JudgeCall.id.desc()).limit(1))

    def _record(self, **values: Any) -> int:
        with self._db_lock, self.db.session() as s:
            row = JudgeCall(run_id=self.run_id, prompt_version=self.settings.prompt_version,
                            model_requested=self.settings.model, **values)
            s.add(row)
            s.flush()
            return row.id

    def _record_failure(self, item: Item, error: str) -> None:
        self._record(sample_id=item.sample_id, disagreement_id=item.disagreement_id,
                     request_hash=self.request_hash(item, self._a_is(item)), a_is=self._a_is(item), swapped=False,
                     status="error", error=error[:2000])
        with self._lock:
            self._stats.errors += 1

    def _scrub(self, text: str) -> str:
        return scrub_secrets(text, self._secrets)

    def _get_router(self) -> Any:
        with self._lock:
            if self._router is None:
                self._router = build_router(self.settings, self.access)
            return self._router

    def _ask(self, item: Item, a_is: str, swapped: bool,
             images: dict[str, tuple[str, str, str]]) -> Answer | object | None:
        """An Answer; _FAILED when the sample got an error or two bad answers; None when the run stopped first."""
        h = self.request_hash(item, a_is)
        base = dict(sample_id=item.sample_id, disagreement_id=item.disagreement_id, request_hash=h, a_is=a_is,
                    swapped=swapped)
        hit = self._cached(h)
        if hit is not None:
            call_id = self._record(**base, model_used=hit.model_used, status="cached", label=hit.label,
                                   confidence=hit.confidence, reason=hit.reason, answer_raw=hit.answer_raw,
                                   latency_ms=0.0, cost_usd=0.0, cache_hit=True)
            with self._lock:
                self._stats.cache_hits += 1
            return Answer(hit.label or "", hit.confidence or 0.0, hit.reason or "", a_is, call_id, hit.model_used)

        try:
            uris = self._render(item, a_is, images)
        except Exception as exc:  # noqa: BLE001 - unreadable crop: recorded, run goes on
            self._record(**base, status="error", error=f"crop unreadable: {exc}"[:2000])
            with self._lock:
                self._stats.errors += 1
            return _FAILED
        messages = self._messages(item, uris)
        reserve = self.worst_case_cost(item)
        for attempt in range(2):  # a bad answer is asked once more
            if self._halted():
                return None
            if not self.budget.acquire(reserve, self._accounts, self.cancel):
                if not self.cancel.is_set():
                    self._halt("budget")
                return None
            t0 = time.perf_counter()
            resp, err = None, None
            try:
                resp = self._get_router().completion(
                    model=self.settings.model, messages=messages, response_format={"type": "json_object"},
                    max_tokens=self.settings.max_tokens, temperature=self.settings.temperature,
                    timeout=self.settings.timeout_s,
                )
            except Exception as exc:  # noqa: BLE001 - every provider error becomes a recorded 'error' call
                err = f"{exc.__class__.__name__}: {self._scrub(str(exc))}".replace("\n", " ")[:2000]
            latency = (time.perf_counter() - t0) * 1000
            with self._lock:
                self._stats.calls += 1
            if resp is None:
                self.budget.settle(reserve, self._accounts, 0.0, [])
                self._record(**base, status="error", error=err, latency_ms=latency)
                with self._lock:
                    self._stats.errors += 1
                    self._consecutive_errors += 1
                    too_many = self._consecutive_errors >= self.settings.max_consecutive_errors
                if too_many:
                    self._halt("errors")
                return _FAILED
            used = response_model(resp, self.settings.model)
            acc = self._by_model.get(used) or self._by_model[self.settings.model]
            p_tok, c_tok = response_usage(resp)
            cost = call_cost(resp, acc, p_tok, c_tok, reserve)
            charged = ["run"] + ([f"key:{acc.key_id}"] if acc.key_id else [])
            self.budget.settle(reserve, self._accounts, cost, charged)
            text = response_text(resp)
            with self._lock:
                self._consecutive_errors = 0
                self._stats.by_model[used] = self._stats.by_model.get(used, 0) + 1
            try:
                label, conf, reason = parse_answer(text)
            except BadAnswer as exc:
                self._record(**base, model_used=used, status="bad_answer", answer_raw=(text or "")[:4000],
                             latency_ms=latency, prompt_tokens=p_tok, completion_tokens=c_tok, cost_usd=cost,
                             error=str(exc)[:500], key_id=acc.key_id)
                with self._lock:
                    self._stats.bad_answers += 1
                # the second try says what was wrong with the first (a model told "no confidence" adds it); its
                # reservation grows by the worst-case tokens of the two added messages
                feedback = (f"That answer could not be used: {exc}. Answer again with only the JSON object asked "
                            "for, with all three fields: label, confidence, reason.")
                previous = (text or "")[:2000]
                messages = [*messages, {"role": "assistant", "content": previous},
                            {"role": "user", "content": feedback}]
                extra_tokens = math.ceil((len(previous) + len(feedback)) / 2 * 1.2) + 20
                reserve += max(a.input_per_token for a in self.access) * extra_tokens
                continue
            call_id = self._record(**base, model_used=used, status="ok", label=label, confidence=conf, reason=reason,
                                   answer_raw=(text or "")[:4000], latency_ms=latency, prompt_tokens=p_tok,
                                   completion_tokens=c_tok, cost_usd=cost, key_id=acc.key_id)
            return Answer(label, conf, reason, a_is, call_id, used)
        return _FAILED  # two bad answers: no verdict; the sample stays pending for a later run


def build_router(settings: JudgeSettings, access: list[ModelAccess]) -> Any:
    """LiteLLM Router: one deployment per model, the primary falling back to the others in order; retries with
    backoff on rate limits, server errors and timeouts, no retry on bad requests or auth errors."""
    import litellm
    from litellm import Router
    from litellm.types.router import RetryPolicy

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    # LiteLLM logs failed attempts to stderr at ERROR; every attempt's outcome is a JudgeCall row instead.
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    model_list = []
    for a in access:
        params: dict[str, Any] = {"model": a.model, "timeout": settings.timeout_s, "max_retries": 0}
        if a.api_key:
            params["api_key"] = a.api_key
        if a.api_base:
            params["api_base"] = a.api_base
        model_list.append({"model_name": a.model, "litellm_params": params})
    r = settings.retries
    policy = RetryPolicy(RateLimitErrorRetries=r, InternalServerErrorRetries=r, TimeoutErrorRetries=r,
                         ServiceUnavailableErrorRetries=r, DefaultRetries=r, BadRequestErrorRetries=0,
                         AuthenticationErrorRetries=0, ContentPolicyViolationErrorRetries=0, NotFoundErrorRetries=0)
    fallbacks = [{access[0].model: [a.model for a in access[1:]]}] if len(access) > 1 else []
    cooldown: dict[str, Any] = (
        {"cooldown_time": settings.cooldown_s} if settings.cooldown_s > 0 else {"disable_cooldowns": True})
    return Router(model_list=model_list, fallbacks=fallbacks, retry_policy=policy, num_retries=r,
                  timeout=settings.timeout_s, set_verbose=False, **cooldown)


def judge_project(project: Any, *, progress: ProgressFn | None = None, cancel: threading.Event | None = None,
                  rejudge: bool = False, defect_class: str | None = None, limit: int | None = None,
                  skip_reviewed: bool = False, **overrides: Any) -> JudgeStats:
    """Judge a project's pending flagged samples with project.yaml's judge settings, `overrides` winning."""
    settings = JudgeSettings.from_config(project.config, **overrides)
    run = JudgeRun(project.db, settings, progress=progress, cancel=cancel, rejudge=rejudge,
                   defect_class=defect_class, limit=limit, skip_reviewed=skip_reviewed)
    return run.run()

