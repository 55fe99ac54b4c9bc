"""What judge calls cost: model prices, worst-case token estimates, and the thread-safe budget that holds a run
(and each API key) under its cap.

It exists so the money rules, which decide whether a call may be sent at all, sit apart from the code that sends it.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any

from review.judge.settings import JudgeError

if TYPE_CHECKING:  # access needs resolve_price from here at import time
    from review.judge.access import ModelAccess


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


def call_cost(resp: Any, acc: ModelAccess, p_tok: int | None, c_tok: int | None, reserve: float) -> float:
    """What a finished call cost: our price for its usage, or LiteLLM's tracked cost when the price is LiteLLM's;
    the reservation when the provider reported no usage."""
    if p_tok is None or c_tok is None:
        return reserve  # unknown usage: book the worst case
    ours = acc.input_per_token * p_tok + acc.output_per_token * c_tok
    if acc.price_source == "config":
        return ours
    hp = getattr(resp, "_hidden_params", None) or {}
    tracked = hp.get("response_cost")
    return float(tracked) if isinstance(tracked, (int, float)) and tracked > 0 else ours
