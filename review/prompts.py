"""Versioned judge prompt templates in assets/prompts/judge_<version>.txt."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from assets import ASSETS_DIR
from store.errors import UserError

PROMPTS_DIR = ASSETS_DIR / "prompts"


class PromptError(UserError):
    pass


class _Safe(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@dataclass(frozen=True)
class PromptTemplate:
    version: str
    sha256: str  # of the file's bytes: part of the request hash, so an edited prompt never hits old cache entries
    system: str
    user: str
    path: Path

    def render(self, **values: object) -> tuple[str, str]:
        vals = _Safe({k: str(v) for k, v in values.items()})
        return self.system.format_map(vals), self.user.format_map(vals)


def parse(text: str) -> tuple[str, str]:
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("===") and stripped.endswith("===") and len(stripped) > 6:
            current = stripped.strip("=").strip().lower()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    if "user" not in sections:
        raise PromptError("prompt template has no '=== user ===' section")
    return "\n".join(sections.get("system", [])).strip(), "\n".join(sections["user"]).strip()


def load(version: str = "v1", directory: Path | None = None) -> PromptTemplate:
    name = version if version.endswith(".txt") else f"judge_{version}.txt"
    path = (directory or PROMPTS_DIR) / name
    try:
        data = path.read_bytes()
    except OSError:
        raise PromptError(f"judge prompt version {version!r} not found (expected {path})") from None
    system, user = parse(data.decode("utf-8"))
    return PromptTemplate(version=version, sha256=hashlib.sha256(data).hexdigest(), system=system, user=user, path=path)
