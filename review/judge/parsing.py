"""Reading the judge model's answer: the JSON verdict (label, confidence, reason), the label mapped to a verdict
through the recorded A/B order, and the model, usage and text of a LiteLLM response.

It exists because models answer loosely (code fences, percentages, prose around the JSON); all the tolerance and
every BadAnswer live here, testable without a server.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from store.schema import VerdictKind

LABELS = ("A", "B", "both_good", "both_bad")


class BadAnswer(ValueError):
    pass


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



def response_model(resp: Any, default: str) -> str:
    hp = getattr(resp, "_hidden_params", None) or {}
    name = hp.get("litellm_model_name") or (hp.get("additional_headers") or {}).get("x-litellm-model-group")
    return str(name or getattr(resp, "model", None) or default)


def response_usage(resp: Any) -> tuple[int | None, int | None]:
    u = getattr(resp, "usage", None)
    if u is None:
        return None, None
    return getattr(u, "prompt_tokens", None), getattr(u, "completion_tokens", None)


def response_text(resp: Any) -> str | None:
    try:
        return resp.choices[0].message.content
    except (AttributeError, IndexError):
        return None

