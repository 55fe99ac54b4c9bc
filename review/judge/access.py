"""API keys and model access for the judge: which key and price each model of the chain uses.

Keys come from the environment or the OS keyring (service 'maskbench') and are only ever held in memory, in
ModelAccess (never in its repr) and in the LiteLLM Router; the store sees a non-secret fingerprint (key_id) only, and
`scrub_secrets` removes keys from any text (provider errors) before it is stored or logged. Keeping all of this in
one module keeps the places that touch a secret few and easy to check.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlparse

from review.judge.budget import resolve_price
from review.judge.settings import JudgeError, JudgeSettings

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


def _is_loopback(url: str | None) -> bool:
    if not url:
        return False
    host = (urlparse(url).hostname or "").lower()
    return host in {"127.0.0.1", "localhost", "::1"} or host.startswith("127.")



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



def scrub_secrets(text: str, secrets: list[str]) -> str:
    """`text` with every known key, and anything shaped like an OpenAI-style key, masked."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return re.sub(r"(sk-[A-Za-z0-9_\-]{2})[A-Za-z0-9_\-]{8,}", r"\1***", text)
