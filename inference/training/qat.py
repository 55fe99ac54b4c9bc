"""Quantisation-aware training (QAT): fake INT8 quantisation that mirrors what the static INT8 export does, so a
fine-tune sees the export's rounding noise and the weights move to where that noise hurts least.

What the export does (inference.export.quantize.quantize_qdq, ONNX Runtime QDQ) and what is simulated here:
* weights of Conv / ConvTranspose / MatMul / Gemm: per-output-channel symmetric INT8, scale = max|w| / 127 per
  output channel, integers in [-127, 127]. Simulated exactly on every nn.Conv2d / nn.ConvTranspose2d / nn.Linear
  (a parametrization: the layer computes with the rounded weight, the gradient passes straight through to the
  latent float weight). The exported graph folds BatchNorm into the preceding convolution, i.e. scales each output
  channel by a constant; per-channel symmetric rounding is invariant to such scaling, so quantising the unfolded
  weight here rounds exactly as the export rounds the folded one.
* activations entering those ops: per-tensor symmetric INT8, scale = range / 127, with a calibrated range.
  Simulated by a running max-abs observer (an exponential moving average of each batch's max |x|) that freezes
  after a warm-up share of the steps, then fake-quantises with a straight-through gradient.
* output heads (the compute nodes that produce the graph outputs, `quantize.output_heads`) stay float in the
  export. For the student these are the score head's last Linear, the mask logits' MatMul (hyper-network tokens @
  upscaled features: a tensor product, not a module) and, because that walk also follows the Reshape's shape
  input back through the element-wise ops, the three layers summed into the upscaled features (`decoder.upscale`,
  `decoder.skip`, `decoder.clicks`). `float_heads` names them; test_qat checks the names against the exported
  graph, so a change of the export's rule or of the decoder shows up there.

Not simulated (the export does them, a module hook cannot see them): the QDQ pairs ONNX Runtime also puts on the
*outputs* of Conv/Gemm (after a folded BatchNorm, which the unfolded torch graph does not have yet), the two
activation inputs of the attention MatMuls (q @ k^T, attn @ v), and the constant Fourier matrix of the prompt
encoder's positional encoding. The simulation is therefore a close but not complete copy of the export's noise.

The learned activation ranges are not carried into the export: `strip_qat` returns a plain float module with the
fine-tuned latent weights, and `maskbench export` re-calibrates the activation ranges on domain crops as for any
checkpoint (its INT8 weights are the same rounding as here). What QAT transfers is weights that tolerate rounding.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.utils.parametrize as parametrize

QMIN, QMAX = -127, 127  # symmetric INT8 as the export's (ActivationSymmetric / WeightSymmetric): no -128
QUANT_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
OBSERVER = "qat_input"  # the child module holding a layer's activation observer


def weight_axis(module: nn.Module) -> int:
    """The output-channel axis of a layer's weight: 1 for a transposed convolution ((in, out, kh, kw), as ONNX's
    ConvTranspose and the export's per-channel axis), 0 otherwise."""
    return 1 if isinstance(module, nn.ConvTranspose2d) else 0


def weight_scale(w: torch.Tensor, axis: int) -> torch.Tensor:
    """max|w| / 127 per output channel (1 for an all-zero channel, as the export)."""
    others = tuple(i for i in range(w.dim()) if i != axis)
    amax = w.detach().abs().amax(dim=others).float()
    return torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))


def fake_quant_weight(w: torch.Tensor, axis: int) -> torch.Tensor:
    """Per-channel symmetric INT8 round trip of `w`; the gradient is the identity (straight-through estimator: the
    scale is max|w| / 127, so no weight is ever clipped)."""
    scale = weight_scale(w, axis)
    zero = torch.zeros(scale.shape, dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w.float(), scale, zero, axis, QMIN, QMAX).to(w.dtype)


class WeightFakeQuant(nn.Module):
    """The parametrization a quantised layer's weight goes through (no state: the scale follows the weight)."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return fake_quant_weight(w, self.axis)


class ActivationFakeQuant(nn.Module):
    """Per-tensor symmetric INT8 fake quantisation of a layer's input with a running max-abs range.

    While `observing` (and in training mode) each call moves the range towards the batch's max |x| (exponential
    moving average, the first batch sets it); afterwards the range is fixed, as a calibrated export's is. The range
    is a buffer, so it is in the training state (resume) and the EMA copy of the model averages it like a weight."""

    def __init__(self, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = float(momentum)
        self.observing = True  # set by `set_observing` from the step count (not state: resume recomputes it)
        self.register_buffer("amax", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # tensor ops only (no .item()): a host sync per layer and call would stall a GPU step
        if self.training and self.observing:
            with torch.no_grad():
                cur = x.detach().abs().amax().float()
                self.amax.copy_(torch.where(self.seen == 0, cur, self.momentum * self.amax + (1 - self.momentum) * cur))
                self.seen.add_(1)
        scale = (self.amax.clamp(min=1e-8) / QMAX).reshape(1).float()
        zero = torch.zeros(1, dtype=torch.int32, device=x.device)
        fq = torch.fake_quantize_per_tensor_affine(x.float(), scale, zero, QMIN, QMAX).to(x.dtype)
        return torch.where(self.seen > 0, fq, x)  # never observed (the loss does not reach it): left float


def _input_pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook of a quantised layer: its first input through the layer's activation observer (a module
    function, not a closure, so a deep copy of the model, the EMA, keeps working hooks)."""
    return (getattr(module, OBSERVER)(args[0]), *args[1:])


def float_heads(model: nn.Module) -> set[str]:
    """Names of the layers the INT8 export keeps float (`quantize.output_heads` of the student's merged graph, see
    the module docstring). A model other than the student has none identified: all its layers are simulated."""
    from inference.student import StudentModel

    if not isinstance(model, StudentModel):
        return set()
    dec = model.decoder
    heads = {f"decoder.iou_head.layers.{len(dec.iou_head.layers) - 1}", "decoder.upscale", "decoder.skip"}
    if dec.stride4:
        heads.add("decoder.clicks")
    return heads


def quantised_layers(model: nn.Module, skip: set[str] | None = None) -> dict[str, nn.Module]:
    """The layers the export quantises: every Conv2d / ConvTranspose2d / Linear but the float heads."""
    skip = float_heads(model) if skip is None else skip
    return {n: m for n, m in model.named_modules() if isinstance(m, QUANT_TYPES) and n not in skip}


def is_prepared(model: nn.Module) -> bool:
    return any(isinstance(m, ActivationFakeQuant) for m in model.modules())


def prepare_qat(model: nn.Module, momentum: float = 0.9, skip: set[str] | None = None) -> nn.Module:
    """Fake quantisation on, in place: weight parametrization + input observer on every layer the export quantises.
    State-dict keys change (`x.weight` -> `x.parametrizations.weight.original`, plus `x.qat_input.amax/seen`) until
    `strip_qat`. Returns the model."""
    if is_prepared(model):
        raise ValueError("the model already has fake quantisation")
    for m in quantised_layers(model, skip).values():
        parametrize.register_parametrization(m, "weight", WeightFakeQuant(weight_axis(m)))
        m.add_module(OBSERVER, ActivationFakeQuant(momentum).to(m.parametrizations.weight.original.device))
        m.register_forward_pre_hook(_input_pre_hook)
    return model


def set_observing(model: nn.Module, on: bool) -> None:
    """Turn the activation observers' range updates on (warm-up) or off (frozen ranges)."""
    for m in model.modules():
        if isinstance(m, ActivationFakeQuant):
            m.observing = bool(on)


def strip_qat(model: nn.Module) -> nn.Module:
    """Fake quantisation off, in place: the layers get their latent float weights back as plain parameters, lose
    their observers and hooks, and the state-dict keys are the original ones again. Activation ranges are dropped:
    the export re-calibrates them. Returns the model. Only for a model without live deep copies (the EMA): torch's
    Parametrized* classes are shared with copies, so use `stripped_copy` during training."""
    for m in list(model.modules()):
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
        if isinstance(getattr(m, OBSERVER, None), ActivationFakeQuant):
            delattr(m, OBSERVER)
            for key in [k for k, fn in m._forward_pre_hooks.items() if fn is _input_pre_hook]:
                del m._forward_pre_hooks[key]
    return model


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A fake-quantised model's state under the plain model's keys: the latent float weights as `x.weight`, the
    observers' ranges dropped (detached tensors, shared with the model: copy before changing them)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        if f".{OBSERVER}." in f".{k}":
            continue
        out[k.replace("parametrizations.weight.original", "weight")] = v
    return out


def stripped_copy(model: nn.Module) -> nn.Module:
    """A plain float student holding a fake-quantised student's latent weights (checkpoints are written from it while
    training goes on). Built fresh from the config rather than by deep copy + `strip_qat`: a deep copy shares torch's
    generated Parametrized* classes with the original, and stripping the copy would strip the original's class."""
    from inference.student import StudentModel

    if not isinstance(model, StudentModel):
        raise TypeError(f"stripped_copy rebuilds a StudentModel, not a {type(model).__name__}")
    ref = next(iter(model.parameters()))
    with torch.random.fork_rng(devices=[]):  # its random init must not move the training's global RNG
        plain = StudentModel(model.config).to(device=ref.device)
    plain.load_state_dict(plain_state_dict(model), strict=True)
    return plain.train(model.training)
