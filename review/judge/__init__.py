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

The package, by job: settings (project.yaml's judge section), access (API keys and the model chain), budget (prices,
token estimates, spend caps), parsing (the model's answer), items (pending samples) and run (threads, Router, store
writes). This module exports the run API only; import helpers from their submodule.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the cost map from the internet

from review.judge.run import JudgeRun, JudgeStats, judge_project  # noqa: E402 - after the cost-map setting
from review.judge.settings import JudgeError, JudgeSettings  # noqa: E402

__all__ = ["JudgeError", "JudgeRun", "JudgeSettings", "JudgeStats", "judge_project"]
