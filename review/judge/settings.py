"""Judge settings: the `judge:` section of project.yaml (with command-line overrides) checked once, up front.

It exists so that every other part of the judge reads one validated JudgeSettings instead of raw config, and so that
a wrong setting is one clear JudgeError before any key is looked up or any call is made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from store.errors import UserError


class JudgeError(UserError):
    pass


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

