"""The VLM judge: for each flagged crop, ask a vision model which mask follows the defect contour better.

Calls go through LiteLLM's Router: a primary model and fallbacks (another provider when the first rate-limits or
fails), retries with backoff on 429/5xx/timeouts, then fallback. Each request carries the crop and both masks drawn
over it as base64 PNG data URIs in the OpenAI `image_url` format, labelled A and B in a per-sample random order that
is recorded (JudgeCall.a_is), and asks for a JSON answer (label A / B / both_good / both_bad, confidence, reason).

The judge only re-weights distillation (review.weights); it never creates ground truth (seed 001).

Guarantees of a run:
  * Cache: a request identical to one answered before (prompt file, model, crop sha, both masks in their positions,
    rendering) is answered from the store with no call.
  * Budget: before every call a worker reserves the call's worst-case cost (estimated prompt tokens + max_tokens at
    the most expensive model of the chain) against the run cap and, when set, the per-key cap; the reservation is
    replaced by the real cost afterwards. The cap is never exceeded as long as a provider bills no more prompt tokens
    than estimated (set judge.max_prompt_tokens to bound it yourself). When nothing fits any more the run stops
    cleanly; the remaining samples stay pending for the next run.
  * Every call is a JudgeCall row (model actually used, latency, tokens, cost, cache hit, error). API keys come from
    the environment or the keyring, are passed to LiteLLM in memory only, and are scrubbed from any stored error.
  * Bad answers (not JSON, unknown label) are recorded as bad_answer and asked once more; nothing crashes the run.

For a GUI: `JudgeRun(...).run()` in a worker thread, with a `progress(done, total)` callback (called from worker
threads), a `cancel` threading.Event and live `stats` (spend, calls, cache hits, errors).
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the cost map from the internet

import hashlib
import json
import logging
import math
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from store import rle as rle_mod
from store.db import Database
from store.errors import UserError
from store.images import load_image
from store.schema import (
    Disagreement,
    JudgeCall,
    Mask,
    Prediction,
    Sample,
    Verdict,
    VerdictAuthorKind,
    VerdictKind,
)

from review import prompts as prompts_mod
from review import render
from review.verdicts import add_verdict, latest_disagreements_subquery, latest_verdicts

log = logging.getLogger("maskbench.judge")

ProgressFn = Callable[[int, int], None]
LABELS = ("A", "B", "both_good", "both_bad")
PLACEHOLDER_KEY = "sk-maskbench-no-key"  # for OpenAI-compatible servers on loopback that need no key
KEYRING_SERVICE = "maskbench"
PROVIDER_KEY_VARS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "text-completion-openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "azure": ("AZURE_API_KEY",),
    "mistral": ("MISTRAL_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY", "OR_API_KEY"),
    "together_ai": ("TOGETHERAI_API_KEY", "TOGETHER_API_KEY"),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "xai": ("XAI_API_KEY",),
    "fireworks_ai": ("FIREWORKS_AI_API_KEY", "FIREWORKS_API_KEY"),
    "hosted_vllm": ("HOSTED_VLLM_API_KEY",),
}


class JudgeError(UserError):
    pass


class BadAnswer(ValueError):
    pass


# --------------------------------------------------------------------------------------------------------------------
# Settings


@dataclass
class JudgeSettings:
    model: str = "openai/gpt-4o"
    fallbacks: list[str] = field(default_factory=list)
    api_base: str | None = None
    api_bases: dict[str, str] = field(default_factory=dict)  # per-model api_base, wins over api_base
    budget_usd: float = 5.0
    key_budget_usd: float | None = None  # cap on all runs' spend per API key (None: no per-key cap)
    workers: int = 4
    timeout_s: float = 60.0
    retries: int = 2
    swap: bool = False
    prompt_version: str = "v2"
    # what the crops show, for the prompt:
    # {"surface": "a magnetic tile surface", "defects": {"crack": "a thin dark line"}}
    domain: dict[str, Any] = field(default_factory=lambda: {"surface": "an industrial surface", "defects": {}})
    prices: dict[str, dict[str, float]] = field(default_factory=dict)
    max_tokens: int = 300
    max_prompt_tokens: int | None = None  # worst-case prompt tokens per call; None: estimated from text and images
    max_image_side: int = 768
    order_seed: int = 0
    temperature: float = 0.0
    max_consecutive_errors: int = 10
    cooldown_s: float = 0.0  # > 0: LiteLLM cools a failing deployment down this long (skips straight to fallback)

    @classmethod
    def from_config(cls, cfg: dict[str, Any], **overrides: Any) -> JudgeSettings:
        j = dict(cfg.get("judge") or {})
        known = {f for f in cls.__dataclass_fields__}
        vals = {k: v for k, v in j.items() if k in known}
        vals.update({k: v for k, v in overrides.items() if v is not None})
        s = cls(**vals)
        s.fallbacks = [f for f in (s.fallbacks or []) if f and f != s.model]
        s.prices = dict(s.prices or {})
        s.api_bases = dict(s.api_bases or {})
        s.validate()
        return s

    def validate(self) -> None:
        if not self.model:
            raise JudgeError("no judge model configured (judge.model in project.yaml or --model)")
        if self.workers < 1:
            raise JudgeError(f"judge workers must be at least 1, got {self.workers}")
        if self.budget_usd is None or self.budget_usd < 0:
            raise JudgeError(f"judge budget must be a number of USD >= 0, got {self.budget_usd}")
        if self.timeout_s <= 0:
            raise JudgeError(f"judge timeout must be positive, got {self.timeout_s}")
        if self.retries < 0:
            raise JudgeError(f"judge retries must be >= 0, got {self.retries}")
        surface = self.domain.get("surface") if isinstance(self.domain, dict) else None
        defects = self.domain.get("defects", {}) if isinstance(self.domain, dict) else None
        if not isinstance(surface, str) or not surface.strip():
            raise JudgeError("judge.domain.surface must name what the crops show, e.g. 'a magnetic tile surface'")
        if not isinstance(defects, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in defects.items()):
            raise JudgeError("judge.domain.defects must map each defect class to a short description (text)")
        unknown = set(self.domain) - {"surface", "defects"}
        if unknown:
            raise JudgeError(f"judge.domain has unknown keys {sorted(unknown)} (known: surface, defects)")

    def prompt_values(self, defect_class: str) -> dict[str, str]:
        """The domain placeholders of the prompt for one crop's class."""
        note = (self.domain.get("defects") or {}).get(defect_class)
        return {"surface": self.domain["surface"].strip(), "defect_note": f" ({note.strip()})" if note else ""}

    @property
    def chain(self) -> list[str]:
        out: list[str] = []
        for m in [self.model, *self.fallbacks]:
            if m not in out:
                out.append(m)
        return out

    def api_base_for(self, model: str) -> str | None:
        if model in self.api_bases:
            return self.api_bases[model]
        # --api-base points the primary at a server; fallbacks of the same provider prefix go there too.
        if self.api_base and _provider(model) == _provider(self.model):
            return self.api_base
        return None


def _provider(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else "openai"


def _is_loopback(url: str | None) -> bool:
    if not url:
        return False
    host = (urlparse(url).hostname or "").lower()
    return host in {"127.0.0.1", "localhost", "::1"} or host.startswith("127.")


# --------------------------------------------------------------------------------------------------------------------
# Keys and prices


@dataclass(frozen=True)
class ModelAccess:
    model: str
    api_base: str | None
    api_key: str | None = field(repr=False)
    key_source: str  # env | keyring | placeholder | none
    key_id: str | None  # non-secret fingerprint
    input_per_token: float
    output_per_token: float
    price_source: str  # config | litellm


def key_fingerprint(key: str) -> str:
    return hashlib.sha256(b"maskbench-key-id:" + key.encode()).hexdigest()[:16]


def _keyring_get(var: str) -> str | None:
    if os.environ.get("MASKBENCH_NO_KEYRING") == "1":
        return None
    try:
        import keyring

        return keyring.get_password(KEYRING_SERVICE, var) or None
    except Exception:  # noqa: BLE001 - no keyring backend: behave as if the key is not stored there
        return None


def resolve_key(model: str, api_base: str | None) -> tuple[str | None, str, str | None]:
    """(api_key, source, key_id) for a model; raises JudgeError with one clear line when a key is missing."""
    import litellm

    try:
        provider = litellm.get_llm_provider(model)[1]
    except Exception:  # noqa: BLE001 - unknown provider prefix
        raise JudgeError(f"judge model {model!r} is not a LiteLLM model name (expected provider/model, "
                         "e.g. openai/gpt-4o)") from None
    env = litellm.validate_environment(model=model, api_base=api_base)
    key_vars = PROVIDER_KEY_VARS.get(provider, ())
    missing = [v for v in env.get("missing_keys", []) if v]
    key_missing = [v for v in missing if "KEY" in v or "TOKEN" in v]
    other_missing = [v for v in missing if v not in key_missing and not (api_base and "BASE" in v)]
    if other_missing:
        raise JudgeError(f"judge model {model} needs {', '.join(other_missing)} set in the environment")
    if not key_missing:  # the key is in the environment (or the provider needs none)
        for var in key_vars:
            if os.environ.get(var):
                return os.environ[var], "env", key_fingerprint(os.environ[var])
        return None, "none", None
    for var in key_missing:
        stored = _keyring_get(var)
        if stored:
            return stored, "keyring", key_fingerprint(stored)
    if _is_loopback(api_base):
        return PLACEHOLDER_KEY, "placeholder", None
    hint = "" if os.environ.get("MASKBENCH_NO_KEYRING") == "1" else \
        f" (or store it in the keyring: service '{KEYRING_SERVICE}', name '{key_missing[0]}')"
    raise JudgeError(f"no API key for judge model {model}: set {' or '.join(key_missing)} in the environment{hint}")


def resolve_price(model: str, prices: dict[str, dict[str, float]]) -> tuple[float, float, str] | None:
    """(USD per input token, USD per output token, source) from judge.prices, else LiteLLM's cost map."""
    for key in (model, model.split("/", 1)[-1]):
        p = prices.get(key)
        if p:
            if "input_per_1k" in p or "output_per_1k" in p:
                return float(p.get("input_per_1k", 0)) / 1000, float(p.get("output_per_1k", 0)) / 1000, "config"
            if "input_per_1m" in p or "output_per_1m" in p:
                return float(p.get("input_per_1m", 0)) / 1e6, float(p.get("output_per_1m", 0)) / 1e6, "config"
            raise JudgeError(f"judge.prices[{key!r}] needs input_per_1k and output_per_1k (USD)")
    import litellm

    for key in (model, model.split("/", 1)[-1]):
        info = litellm.model_cost.get(key)
        if info and info.get("input_cost_per_token") is not None:
            return float(info["input_cost_per_token"]), float(info.get("output_cost_per_token") or 0), "litellm"
    try:
        info = litellm.get_model_info(model)
        if info.get("input_cost_per_token") is not None:
            return float(info["input_cost_per_token"]), float(info.get("output_cost_per_token") or 0), "litellm"
    except Exception:  # noqa: BLE001 - unknown to LiteLLM
        pass
    return None


def resolve_access(settings: JudgeSettings) -> tuple[list[ModelAccess], list[str]]:
    """Keys and prices for the model chain. The primary must have both (else JudgeError); a fallback without a key
    or a price is dropped with a warning, since a call that cannot be priced cannot be held under the budget cap."""
    out: list[ModelAccess] = []
    warnings: list[str] = []
    for i, model in enumerate(settings.chain):
        base = settings.api_base_for(model)
        try:
            key, source, key_id = resolve_key(model, base)
            price = resolve_price(model, settings.prices)
            if price is None:
                raise JudgeError(f"no price known for judge model {model}: add judge.prices['{model}'] = "
                                 "{input_per_1k: USD, output_per_1k: USD} to project.yaml")
        except JudgeError as exc:
            if i == 0:
                raise
            warnings.append(f"fallback skipped: {exc}")
            continue
        out.append(ModelAccess(model, base, key, source, key_id, price[0], price[1], price[2]))
    return out, warnings


# --------------------------------------------------------------------------------------------------------------------
# Budget


class Budget:
    """Thread-safe spend accounting with worst-case reservations against several caps (the run, each API key).

    `acquire` reserves or, when the reservation does not fit but calls are in flight, waits for them to settle (their
    real cost is usually below the reservation); it gives up only when nothing is in flight and it still does not fit.
    """

    def __init__(self, caps: dict[str, float], spent_before: dict[str, float] | None = None) -> None:
        self.caps = dict(caps)
        self.spent = {k: float((spent_before or {}).get(k, 0.0)) for k in caps}
        self.reserved = dict.fromkeys(caps, 0.0)
        self.run_spent = 0.0
        self.in_flight = 0
        self._cond = threading.Condition()

    def _fits(self, amount: float, accounts: list[str]) -> bool:
        return all(self.spent[a] + self.reserved[a] + amount <= self.caps[a] + 1e-12 for a in accounts if a in self.caps)

    def acquire(self, amount: float, accounts: list[str], cancel: threading.Event | None = None) -> bool:
        with self._cond:
            while True:
                if cancel is not None and cancel.is_set():
                    return False
                if self._fits(amount, accounts):
                    for a in accounts:
                        if a in self.caps:
                            self.reserved[a] += amount
                    self.in_flight += 1
                    return True
                if self.in_flight == 0:
                    return False
                self._cond.wait(0.2)

    def settle(self, reserved: float, accounts: list[str], actual: float, charged: list[str]) -> None:
        """Release a reservation and book the real cost on the run and on the key that actually paid."""
        with self._cond:
            for a in accounts:
                if a in self.caps:
                    self.reserved[a] = max(0.0, self.reserved[a] - reserved)
            for a in charged:
                if a in self.caps:
                    self.spent[a] += actual
            self.run_spent += actual
            self.in_flight -= 1
            self._cond.notify_all()

    @property
    def reserved_total(self) -> float:
        with self._cond:
            return self.reserved.get("run", 0.0)


def image_tokens(width: int, height: int) -> int:
    """Upper estimate of the prompt tokens one image costs: the larger of OpenAI's high-detail tile count and
    Anthropic's w*h/750."""
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        s = 2048 / max(w, h)
        w, h = w * s, h * s
    if min(w, h) > 768:
        s = 768 / min(w, h)
        w, h = w * s, h * s
    openai = 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)
    anthropic = math.ceil(width * height / 750)
    return int(max(openai, anthropic, 258))


def estimate_prompt_tokens(text: str, width: int, height: int, n_images: int = 3) -> int:
    """Worst-case prompt tokens of one judge request: ~2 characters per token (tokenizers do better), three images,
    message overhead, and a 20% margin."""
    return int(math.ceil((len(text) / 2 + 60 + n_images * image_tokens(width, height)) * 1.2))


# --------------------------------------------------------------------------------------------------------------------
# Answers


def parse_answer(text: str | None) -> tuple[str, float, str]:
    """(label, confidence, reason) from the model's JSON; raises BadAnswer for anything unusable."""
    if not text or not text.strip():
        raise BadAnswer("empty answer")
    raw = text.strip()
    raw = re.sub(r"^```(?:json)?\s*|\s*```$", "", raw, flags=re.IGNORECASE).strip()
    try:
        obj = json.loads(raw)
    except ValueError:
        m = re.search(r"\{.*\}", raw, flags=re.DOTALL)
        if not m:
            raise BadAnswer("answer is not JSON") from None
        try:
            obj = json.loads(m.group(0))
        except ValueError:
            raise BadAnswer("answer is not JSON") from None
    if not isinstance(obj, dict):
        raise BadAnswer("answer is not a JSON object")
    label_raw = obj.get("label", obj.get("answer", obj.get("verdict")))
    if not isinstance(label_raw, str):
        raise BadAnswer(f"answer has no label: {str(obj)[:80]}")
    norm = re.sub(r"[\s\-]+", "_", label_raw.strip().lower())
    label = {"a": "A", "mask_a": "A", "b": "B", "mask_b": "B", "both_good": "both_good", "both_bad": "both_bad",
             "bothgood": "both_good", "bothbad": "both_bad"}.get(norm)
    if label is None:
        raise BadAnswer(f"unknown label {label_raw!r}")
    if "confidence" not in obj:
        raise BadAnswer("answer has no confidence")
    conf_raw = obj["confidence"]
    try:
        conf = float(conf_raw)
    except (TypeError, ValueError):
        raise BadAnswer(f"confidence is not a number: {conf_raw!r}") from None
    if not math.isfinite(conf):
        raise BadAnswer(f"confidence is not a number: {conf_raw!r}")
    if 1.0 < conf <= 100.0:
        conf /= 100.0
    conf = min(1.0, max(0.0, conf))
    reason = str(obj.get("reason") or "")[:500]
    return label, conf, reason


def label_to_verdict(label: str, a_is: str) -> VerdictKind:
    if label == "both_good":
        return VerdictKind.BOTH_GOOD
    if label == "both_bad":
        return VerdictKind.BOTH_BAD
    winner = a_is if label == "A" else ("student" if a_is == "teacher" else "teacher")
    return VerdictKind.TEACHER_BETTER if winner == "teacher" else VerdictKind.STUDENT_BETTER


# --------------------------------------------------------------------------------------------------------------------
# Work items and the run


@dataclass
class Item:
    sample_id: int
    disagreement_id: int
    defect_class: str
    path: str
    sha256: str
    width: int
    height: int
    iou_ts: float
    teacher_rle: dict[str, Any]
    student_rle: dict[str, Any]

    def mask_shas(self) -> dict[str, str]:
        return {"teacher": render.mask_sha(self.teacher_rle), "student": render.mask_sha(self.student_rle)}


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


def pending_items(db: Database, *, rejudge: bool = False, defect_class: str | None = None,
                  limit: int | None = None, skip_reviewed: bool = False) -> list[Item]:
    """Flagged samples (latest disagreement record) without a VLM verdict for that record, most disagreeing first."""
    latest = latest_disagreements_subquery()
    tp, sp = aliased(Prediction), aliased(Prediction)
    tm, sm = aliased(Mask), aliased(Mask)
    q = (
        select(Disagreement.id, Disagreement.iou_ts, Sample.id, Sample.defect_class, Sample.path, Sample.sha256,
               Sample.width, Sample.height, tm.rle, sm.rle)
        .join(latest, latest.c.did == Disagreement.id)
        .join(Sample, Sample.id == Disagreement.sample_id)
        .join(tp, tp.id == Disagreement.teacher_prediction_id)
        .join(sp, sp.id == Disagreement.student_prediction_id)
        .join(tm, tm.id == tp.mask_id)
        .join(sm, sm.id == sp.mask_id)
        .where(Disagreement.flagged.is_(True))
    )
    if not rejudge:
        judged = (select(JudgeCall.disagreement_id).join(Verdict, Verdict.judge_call_id == JudgeCall.id)
                  .where(Verdict.author_kind == VerdictAuthorKind.VLM, JudgeCall.disagreement_id.is_not(None)))
        q = q.where(Disagreement.id.not_in(judged))
    if defect_class:
        q = q.where(Sample.defect_class == defect_class)
    q = q.order_by(Disagreement.iou_ts.asc(), Sample.id.asc())
    with db.session() as s:
        rows = s.execute(q).all()
        if skip_reviewed:
            reviewed = set(latest_verdicts(s, VerdictAuthorKind.HUMAN, [r[2] for r in rows]))
            rows = [r for r in rows if r[2] not in reviewed]
    items = [Item(sample_id=r[2], disagreement_id=r[0], defect_class=r[3], path=r[4], sha256=r[5], width=r[6],
                  height=r[7], iou_ts=r[1], teacher_rle=r[8], student_rle=r[9]) for r in rows]
    return items[:limit] if limit is not None else items


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
        for secret in self._secrets:
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return re.sub(r"(sk-[A-Za-z0-9_\-]{2})[A-Za-z0-9_\-]{8,}", r"\1***", text)

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
            used = _model_used(resp, self.settings.model)
            acc = self._by_model.get(used) or self._by_model[self.settings.model]
            p_tok, c_tok = _usage(resp)
            cost = _cost(resp, acc, p_tok, c_tok, reserve)
            charged = ["run"] + ([f"key:{acc.key_id}"] if acc.key_id else [])
            self.budget.settle(reserve, self._accounts, cost, charged)
            text = _content(resp)
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


def _model_used(resp: Any, default: str) -> str:
    hp = getattr(resp, "_hidden_params", None) or {}
    name = hp.get("litellm_model_name") or (hp.get("additional_headers") or {}).get("x-litellm-model-group")
    return str(name or getattr(resp, "model", None) or default)


def _usage(resp: Any) -> tuple[int | None, int | None]:
    u = getattr(resp, "usage", None)
    if u is None:
        return None, None
    return getattr(u, "prompt_tokens", None), getattr(u, "completion_tokens", None)


def _cost(resp: Any, acc: ModelAccess, p_tok: int | None, c_tok: int | None, reserve: float) -> float:
    if p_tok is None or c_tok is None:
        return reserve  # unknown usage: book the worst case
    ours = acc.input_per_token * p_tok + acc.output_per_token * c_tok
    if acc.price_source == "config":
        return ours
    hp = getattr(resp, "_hidden_params", None) or {}
    tracked = hp.get("response_cost")
    return float(tracked) if isinstance(tracked, (int, float)) and tracked > 0 else ours


def _content(resp: Any) -> str | None:
    try:
        return resp.choices[0].message.content
    except (AttributeError, IndexError):
        return None


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


__all__ = [
    "BadAnswer", "Budget", "Item", "JudgeError", "JudgeRun", "JudgeSettings", "JudgeStats", "build_router",
    "estimate_prompt_tokens", "image_tokens", "judge_project", "label_to_verdict", "parse_answer", "pending_items",
    "resolve_access", "resolve_key", "resolve_price",
]
