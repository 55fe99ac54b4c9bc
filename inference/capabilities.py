"""What this install can do: a station bundle has no torch stack (packaging/station.spec), so training, export and
the live SAM 2 teacher are not there. Views ask here to disable those tools with a reason instead of failing when
they are used. Imports nothing heavy (find_spec only looks for the package)."""

from __future__ import annotations

import importlib.util

TORCH_STACK = ("torch", "timm", "sam2")


def missing(modules: tuple[str, ...] = TORCH_STACK) -> list[str]:
    """The modules of `modules` that this Python cannot import."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def torch_stack_reason(what: str, absent: list[str]) -> str | None:
    """One line for a view that needs the torch stack ("Training", "Export"); None when everything is there."""
    if not absent:
        return None
    return (f"{what} needs {', '.join(absent)}, which this install does not have (a station runs review, annotation "
            "and ONNX Runtime models only); use a full install for it.")
