"""Exponential moving average of a model's weights (validation and the best checkpoint use the average).

Why: with a few hundred crops every batch moves the weights a lot, and the validation IoU of the raw weights
jumps by several points from one epoch to the next; the average is smoother and better (a standard trick of
small-data training, e.g. YOLO's and timm's ModelEmaV2). The decay warms up ((1 + n) / (10 + n)) so the first
random weights do not linger.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.999, updates: int = 0) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.updates = int(updates)
        self._pairs: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None

    def rate(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One foreach call over all float tensors (the tensor lists are built once: a per-step state_dict walk
        costs milliseconds of Python on a large model)."""
        self.updates += 1
        if self._pairs is None:
            ema_sd, cur_sd = self.module.state_dict(keep_vars=True), model.state_dict(keep_vars=True)
            keys = [k for k, v in ema_sd.items() if v.dtype.is_floating_point]
            self._pairs = ([ema_sd[k].data for k in keys], [cur_sd[k].data for k in keys])
            self._ints = [(ema_sd[k], cur_sd[k]) for k in ema_sd if not ema_sd[k].dtype.is_floating_point]
        torch._foreach_lerp_(self._pairs[0], self._pairs[1], 1.0 - self.rate())
        for e, c in self._ints:
            e.copy_(c)

    def state_dict(self) -> dict[str, object]:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.module.load_state_dict(state["module"])  # type: ignore[arg-type]
        self.updates = int(state["updates"])  # type: ignore[arg-type]
