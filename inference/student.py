"""The edge student of seed 001: a ~5M-parameter timm encoder, point-only prompt encoder, lite mask decoder.

Why this shape:
* Encoder: a timm backbone (random init, never hub weights) as a feature pyramid, `backbone` one of BACKBONES.
  Seed 001 named TinyViT-5M (MobileSAM's student); trained from random weights on a few hundred crops it does not
  learn (validation IoU 0.007 where EfficientNet-B0 reaches 0.32 in the same time, docs/benchmarks.md), so the
  default is EfficientNet-B0 and TinyViT stays selectable. For TinyViT the window sizes are adapted to the input
  size so every window tiles its feature map exactly (no padded tokens: no wasted compute at 512/1024 and no pad
  branches in the ONNX graph). A small FPN neck fuses 1/32 into 1/16 and projects to 256
  channels: the image embedding has SAM 2's channel count, and `align_embedding` resizes it to the teacher's H x W,
  which is what feature-alignment distillation (the cosine loss of seed 001) compares.
* Prompt encoder: points only (industrial crops get point prompts from saliency or clicks; no boxes, no mask
  input), SAM's random-Fourier positional encoding plus a learned embedding per label.
* Mask decoder: SAM's two-way transformer, narrower (128 channels), then one of three heads (`mask_stride`):
  - 2 (default): a third upsampling step to 1/2 of the input, for 1-2 px scratches (a 1/4 logit is four pixels
    wide). The skip feature is then one tensor at 1/2 with a quarter of the channels: the 1/4 fusion rearranged by
    pixel_shuffle (lossless) plus the backbone's stride-2 feature, so the cached embedding keeps the 1/4 head's
    size; the decoder's 1/4 step reads it back with pixel_unshuffle. Needs a backbone with a stride-2 feature
    (EfficientNet-B0, ResNet-10-T).
  - 4 (issue 14's first head): two 2x upsampling steps to 1/4 of the input, as SAM's own decoder, with a 1/4
    skip feature that the encoder fuses from TinyViT's first two stages (a light FPN) and Gaussian maps of the
    clicks at 1/4. A 1/8 head cannot draw a 2 px crack: at 1/8 the crack is a quarter of a logit wide.
  - 8 (seed 001's "1/4 -> 1/2" reduction): one upsampling step, masks at 1/8, a 1/8 skip from TinyViT's stage 1.
  The skip feature is part of the cached embedding ("high_res"), so a click runs the decoder only.
* Size: 4.5M parameters with EfficientNet-B0 (5.9M with TinyViT-5M), most of them the backbone's; 4.7 MB at INT8
  weight-only at 512 px (6.3 MB with TinyViT), within the seed's budget.

Checkpoints are `{"format": "maskbench.student", "version": 1, "architecture", "config", "state_dict"}`: plain
containers and tensors, so they load with `torch.load(..., weights_only=True)` (no pickled code runs on load).
A config without `mask_stride` / `layout` predates issue 14 and means the 1/8 head on crops resized to a square.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from inference.errors import CheckpointError, ModelMismatchError

ARCHITECTURE = "tinyvit5m_pointdec"  # the checkpoint family's name since seed 001; the backbone is in the config
CHECKPOINT_FORMAT = "maskbench.student"
CHECKPOINT_VERSION = 1
BASE_WINDOWS = (7, 7, 14, 7)  # tiny_vit_5m_224's window sizes per stage
# timm backbones a student may use (random init): TinyViT-5M (MobileSAM's student), RepViT-M0.9 (RepViT-SAM's
# family, a BatchNorm CNN of the same size), ResNet-10-T (a plain ResNet, as NanoSAM's ResNet-18 student but within
# the 6 MB budget) and EfficientNet-B0. Convolutional backbones learn from a few hundred crops far faster than a ViT
# trained from scratch (docs/benchmarks.md, issue 14).
# Value: timm's features_only index of the stride-4 feature (backbones with a stride-2 stem feature list it first).
BACKBONES = {"tiny_vit_5m_224": 0, "repvit_m0_9": 0, "resnet10t": 1, "efficientnet_b0": 1}
# project.yaml (seed 001's template) names the backbone "tinyvit_5m"; timm calls it tiny_vit_5m_224
BACKBONE_ALIASES = {"tinyvit_5m": "tiny_vit_5m_224", "tiny_vit_5m": "tiny_vit_5m_224", "tinyvit-5m": "tiny_vit_5m_224"}
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def adapted_windows(input_size: int, base: tuple[int, ...] = BASE_WINDOWS) -> tuple[int, ...]:
    """Per stage, the smallest window >= the 224 model's window that divides the stage's feature map exactly
    (stage i>0 runs at input/2^(i+2)); the base window (with padding) when no such divisor is close."""
    out = [base[0]]
    for i, w in enumerate(base[1:], start=1):
        side = max(1, input_size // (2 ** (i + 2)))
        cands = [d for d in range(w, min(side, 2 * w) + 1) if side % d == 0]
        out.append(cands[0] if cands else w)
    return tuple(out)


DEFAULT_CONTEXT_BLOCKS = 4  # student.context_blocks of heads 2 and 4 when project.yaml leaves it out


@dataclass
class StudentConfig:
    input_size: int = 512
    backbone: str = "efficientnet_b0"  # chosen on validation IoU among BACKBONES (docs/benchmarks.md, issue 14)
    window_sizes: tuple[int, ...] = field(default_factory=tuple)  # empty: adapted_windows(input_size)
    embed_dim: int = 256  # = SAM 2's image embedding channels (feature alignment)
    high_res_dim: int = 64
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    decoder_mlp_dim: int = 512
    upscale_dim: int = 32
    num_multimask_outputs: int = 0  # 0: one mask per prompt (defects are rarely ambiguous); 3 mimics SAM
    # 2 (default: higher validation IoU than 4 in one GPU run, docs/benchmarks.md): steps to 1/2; 4: to 1/4; 8: 1/8
    mask_stride: int = 2
    click_sigma: float = 1.5  # Gaussian click maps of the 1/2 and 1/4 heads, in mask-grid pixels
    # residual 3x3 conv blocks on the mask grid after the clicks and the skip feature meet (0: SAM's linear read-out)
    refine_blocks: int = 0
    # dilated depthwise residual blocks on the 1/8 grid, which the clicks then enter too (dilations 1, 2, 4, 8,
    # repeating): a click-aware neighbourhood of 15 cells (120 px) either side at four blocks, where the clicks
    # otherwise meet the image only in 1x1 convs at 1/4 and 1/2 and in the 1/16 attention (heads 2 and 4; 0: none).
    # None: DEFAULT_CONTEXT_BLOCKS for heads 2 and 4 (+0.13 validation IoU on magnetic-tile in one H200 run,
    # docs/benchmarks.md "Context blocks"), 0 for the 1/8 head, which has no 1/8 grid before its read-out
    context_blocks: int | None = None
    layout: str = "native"  # native: crops keep their pixel scale on S x S canvases (inference.layout); resize: SAM's
    scale: float = 1.0  # native layout: model pixels per crop pixel

    def __post_init__(self) -> None:
        if self.input_size % 32:
            raise ValueError(f"student input_size must be a multiple of 32, got {self.input_size}")
        if self.mask_stride not in (2, 4, 8):
            raise ValueError(f"student mask_stride must be 2, 4 or 8, got {self.mask_stride}")
        if self.high_res_dim % 4:
            raise ValueError(f"student high_res_dim must be a multiple of 4, got {self.high_res_dim}")
        if self.refine_blocks < 0:
            raise ValueError(f"student refine_blocks must be >= 0, got {self.refine_blocks}")
        if self.context_blocks is None:
            self.context_blocks = 0 if self.mask_stride == 8 else DEFAULT_CONTEXT_BLOCKS
        if self.context_blocks < 0:
            raise ValueError(f"student context_blocks must be >= 0, got {self.context_blocks}")
        if self.context_blocks and self.mask_stride == 8:
            raise ValueError("student context_blocks work on the 1/8 grid of heads 2 and 4: "
                             "they need mask_stride 2 or 4, got 8")
        if self.layout not in ("native", "resize"):
            raise ValueError(f"student layout must be native or resize, got {self.layout!r}")
        if not self.scale > 0:
            raise ValueError(f"student scale must be > 0, got {self.scale}")
        self.backbone = BACKBONE_ALIASES.get(self.backbone, self.backbone)
        if self.backbone not in BACKBONES:
            raise ValueError(f"student backbone must be one of {', '.join(sorted(BACKBONES))}, got {self.backbone!r}")
        if self.mask_stride == 2 and not BACKBONES[self.backbone]:
            raise ValueError(f"mask_stride 2 needs a backbone with a stride-2 feature "
                             f"({', '.join(sorted(b for b, i in BACKBONES.items() if i))}); {self.backbone} has none")
        if self.is_tiny_vit:
            self.window_sizes = tuple(int(w) for w in self.window_sizes) or adapted_windows(self.input_size)
        elif self.window_sizes:
            raise ValueError(f"window_sizes are a TinyViT setting; backbone {self.backbone} has no windows")

    @property
    def is_tiny_vit(self) -> bool:
        return self.backbone.startswith("tiny_vit")

    @property
    def embed_hw(self) -> int:
        return self.input_size // 16

    @property
    def mask_hw(self) -> int:
        return self.input_size // self.mask_stride

    @property
    def high_res_hw(self) -> int:
        """Side of the skip feature ("high_res"): the mask grid."""
        return self.mask_hw

    @property
    def high_res_channels(self) -> int:
        """Channels of the skip feature: high_res_dim, a quarter of it at 1/2 (the same number of values)."""
        return self.high_res_dim // 4 if self.mask_stride == 2 else self.high_res_dim

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["window_sizes"] = list(self.window_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudentConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown student config keys: {sorted(unknown)}")
        # configs written before issue 14 have neither: 1/8 head, crops resized to the square input; configs
        # written before context blocks were the default have none
        return cls(**{"mask_stride": 8, "layout": "resize", "context_blocks": 0, **d})

    @classmethod
    def from_project(cls, student_cfg: dict[str, Any]) -> StudentConfig:
        """From project.yaml's distillation.student (seed 001's template keys are descriptive; only the ones
        that change the network are read)."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in student_cfg.items() if k in names}
        return cls(**kw)


class LayerNorm2d(nn.Module):
    """Channel LayerNorm on NCHW (as SAM's); written with mean/var so it exports to plain ONNX ops."""

    def __init__(self, c: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class RefineBlock(nn.Module):
    """x + conv(gelu(conv(x))), two 3x3 convs: lets the clicks, the skip feature and their neighbours decide a pixel
    together, as a U-Net's decoder level does, where SAM's read-out is one dot product per pixel."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # starts as the identity: the read-out it feeds trains as without it
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(x)))


class ContextBlock(nn.Module):
    """x + pw(gelu(pw(dw(x)))): a dilated depthwise 3x3 and two 1x1 convs. Depthwise, on the 1/8 grid, because the
    blocks run once per click on the whole grid: four full 3x3 blocks on the 1/4 grid nearly doubled the decoder's
    CPU time per click (42 -> 78 ms p95 on one thread at 512 px), four of these there still added 60%; the dilation
    lets a few of them see a wide neighbourhood."""

    def __init__(self, c: int, dilation: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation, groups=c)
        self.pw1 = nn.Conv2d(c, c, 1)
        self.pw2 = nn.Conv2d(c, c, 1)
        nn.init.zeros_(self.pw2.weight)  # starts as the identity, as RefineBlock
        nn.init.zeros_(self.pw2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pw2(F.gelu(self.pw1(self.dw(x))))


CONTEXT_DILATIONS = (1, 2, 4, 8)


def context_stack(c: int, blocks: int) -> nn.Sequential:
    """`blocks` ContextBlocks with dilations 1, 2, 4, 8, repeating (empty: the identity)."""
    return nn.Sequential(*(ContextBlock(c, CONTEXT_DILATIONS[i % len(CONTEXT_DILATIONS)]) for i in range(blocks)))


class MLP(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, layers: int) -> None:
        super().__init__()
        dims = [cin] + [hidden] * (layers - 1) + [cout]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class StudentEncoder(nn.Module):
    """Normalised (B, 3, S, S) -> image_embed (B, 256, S/16, S/16), high_res (B, C, S/k, S/k) where k is the mask
    stride (4: the stride-4 and stride-8 features fused, a light FPN; 2: that fusion pixel-shuffled to 1/2 plus the
    stride-2 feature, C = high_res_dim / 4; 8: the stride-8 feature alone)."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        import timm

        self.stride4 = cfg.mask_stride <= 4  # has a 1/4 stage (heads 2 and 4)
        self.stride2 = cfg.mask_stride == 2
        extra: dict[str, Any] = {"window_sizes": list(cfg.window_sizes)} if cfg.is_tiny_vit else {}
        first = BACKBONES[cfg.backbone] + {2: -1, 4: 0, 8: 1}[cfg.mask_stride]
        indices = tuple(range(first, BACKBONES[cfg.backbone] + 4))  # strides (2), (4), 8, 16, 32
        self.backbone = timm.create_model(
            cfg.backbone, pretrained=False, features_only=True, out_indices=indices, **extra
        )
        chans = self.backbone.feature_info.channels()
        c8, c16, c32 = chans[-3:]
        d = cfg.embed_dim
        self.lat16 = nn.Conv2d(c16, d, 1)
        self.lat32 = nn.Conv2d(c32, d, 1)
        self.norm1 = LayerNorm2d(d)
        self.dw = nn.Conv2d(d, d, 3, padding=1, groups=d)
        self.pw = nn.Conv2d(d, d, 1)
        self.norm2 = LayerNorm2d(d)
        hd = cfg.high_res_dim
        self.high = nn.Conv2d(c8, hd, 1)
        if self.stride4:
            self.high4 = nn.Conv2d(chans[-4], hd, 1)
            self.high_dw = nn.Conv2d(hd, hd, 3, padding=1, groups=hd)
            self.high_pw = nn.Conv2d(hd, hd, 1)
        if self.stride2:
            h2 = hd // 4
            self.high2 = nn.Conv2d(chans[0], h2, 1)
            self.high2_dw = nn.Conv2d(h2, h2, 3, padding=1, groups=h2)
            self.high2_pw = nn.Conv2d(h2, h2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone(x)
        f8, f16, f32 = feats[-3:]
        y = self.lat16(f16) + F.interpolate(self.lat32(f32), scale_factor=2.0, mode="nearest")
        y = self.norm1(y)
        y = self.norm2(y + self.pw(F.gelu(self.dw(y))))
        if not self.stride4:
            return y, self.high(f8)
        hi = self.high4(feats[-4]) + F.interpolate(self.high(f8), scale_factor=2.0, mode="nearest")
        hi = hi + self.high_pw(F.gelu(self.high_dw(hi)))
        if not self.stride2:
            return y, hi
        hi2 = F.pixel_shuffle(hi, 2) + self.high2(feats[0])
        return y, hi2 + self.high2_pw(F.gelu(self.high2_dw(hi2)))


class PointPromptEncoder(nn.Module):
    """Points only. (B, N, 2) input-pixel coords + (B, N) labels (1 pos, 0 neg, -1 padding) -> (B, N, D) tokens."""

    def __init__(self, dim: int, input_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.register_buffer("gaussian", torch.randn(2, dim // 2))  # persistent: part of the checkpoint
        self.pos_embed = nn.Parameter(torch.randn(dim) * 0.02)
        self.neg_embed = nn.Parameter(torch.randn(dim) * 0.02)
        self.pad_embed = nn.Parameter(torch.randn(dim) * 0.02)
        self.no_mask_embed = nn.Parameter(torch.randn(dim) * 0.02)  # the dense embedding (no mask prompts)

    def _pe(self, coords01: torch.Tensor) -> torch.Tensor:
        c = (2 * coords01 - 1) @ self.gaussian
        c = 2 * math.pi * c
        return torch.cat([torch.sin(c), torch.cos(c)], dim=-1)

    def dense_pe(self, h: int, w: int, origin: torch.Tensor | None = None) -> torch.Tensor:
        """(D, h, w) positions of the embedding's cells in units of the input size, as the points'. `origin`
        (B, 2), x and y in input pixels: the cells are a training window's, placed where the window lies on its
        canvas -> (B, D, h, w), so a window's cells and clicks carry the encodings the whole canvas gives them."""
        cells = self.input_size / 16  # the embedding's side at the full input
        ys = (torch.arange(h, dtype=self.gaussian.dtype, device=self.gaussian.device) + 0.5) / cells
        xs = (torch.arange(w, dtype=self.gaussian.dtype, device=self.gaussian.device) + 0.5) / cells
        grid = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1)
        if origin is None:
            return self._pe(grid).permute(2, 0, 1)
        shifted = grid[None] + (origin.to(grid.dtype) / self.input_size)[:, None, None, :]
        return self._pe(shifted).permute(0, 3, 1, 2)

    def forward(self, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        coords = (points + 0.5) / self.input_size
        pe = self._pe(coords.to(self.gaussian.dtype))
        lab = labels.unsqueeze(-1).to(pe.dtype)
        is_pad = (lab == -1).to(pe.dtype)
        is_pos = (lab == 1).to(pe.dtype)
        is_neg = (lab == 0).to(pe.dtype)
        return pe * (1 - is_pad) + is_pad * self.pad_embed + is_pos * self.pos_embed + is_neg * self.neg_embed


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = dim // downsample
        self.heads = heads
        self.q = nn.Linear(dim, inner)
        self.k = nn.Linear(dim, inner)
        self.v = nn.Linear(dim, inner)
        self.out = nn.Linear(inner, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q(q)), self._split(self.k(k)), self._split(self.v(v))
        attn = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
        x = attn.softmax(dim=-1) @ v
        b, h, n, c = x.shape
        return self.out(x.transpose(1, 2).reshape(b, n, h * c))


class TwoWayBlock(nn.Module):
    """SAM's two-way attention block: tokens self-attend, tokens -> image, MLP, image -> tokens."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, skip_first_pe: bool) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.t2i = Attention(dim, heads, downsample=2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, dim))
        self.norm3 = nn.LayerNorm(dim)
        self.i2t = Attention(dim, heads, downsample=2)
        self.norm4 = nn.LayerNorm(dim)
        self.skip_first_pe = skip_first_pe

    def forward(self, q: torch.Tensor, k: torch.Tensor, q_pe: torch.Tensor, k_pe: torch.Tensor):
        if self.skip_first_pe:
            q = self.self_attn(q, q, q)
        else:
            qq = q + q_pe
            q = q + self.self_attn(qq, qq, q)
        q = self.norm1(q)
        q = self.norm2(q + self.t2i(q + q_pe, k + k_pe, k))
        q = self.norm3(q + self.mlp(q))
        k = self.norm4(k + self.i2t(k + k_pe, q + q_pe, q))
        return q, k


def click_maps(points: torch.Tensor, labels: torch.Tensor, hw: int, stride: int, sigma: float) -> torch.Tensor:
    """(B, 2, hw, hw) Gaussian maps of the positive and negative clicks on the mask grid (points in input pixels;
    padding points, label -1, draw nothing)."""
    g = (torch.arange(hw, dtype=points.dtype, device=points.device) + 0.5) * stride
    px = points[..., 0, None, None]
    py = points[..., 1, None, None]
    d2 = (g[None, None, None, :] - px) ** 2 + (g[None, None, :, None] - py) ** 2  # (B, N, hw, hw)
    blob = torch.exp(d2 * (-0.5 / (sigma * stride) ** 2))
    lab = labels[..., None, None]
    pos = (blob * (lab == 1).to(blob.dtype)).amax(dim=1)
    neg = (blob * (lab == 0).to(blob.dtype)).amax(dim=1)
    return torch.stack([pos, neg], dim=1)


class MaskDecoderLite(nn.Module):
    """Image embedding + skip feature + point prompts -> (masks (B, K, S/k, S/k), scores (B, K) in [0, 1]).

    The image side may have batch 1 while the prompts have batch B (many prompts on one image: automatic masks);
    it is broadcast with `expand`, which costs no memory."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        d = cfg.decoder_dim
        self.num_masks = 1 + cfg.num_multimask_outputs
        self.in_proj = nn.Conv2d(cfg.embed_dim, d, 1)
        self.prompt = PointPromptEncoder(d, cfg.input_size)
        self.iou_token = nn.Parameter(torch.randn(1, d) * 0.02)
        self.mask_tokens = nn.Parameter(torch.randn(self.num_masks, d) * 0.02)
        self.blocks = nn.ModuleList(
            TwoWayBlock(d, cfg.decoder_heads, cfg.decoder_mlp_dim, skip_first_pe=(i == 0))
            for i in range(cfg.decoder_depth)
        )
        self.final_attn = Attention(d, cfg.decoder_heads, downsample=2)
        self.final_norm = nn.LayerNorm(d)
        u = cfg.upscale_dim
        self.stride4 = cfg.mask_stride <= 4  # has a 1/4 stage (heads 2 and 4)
        self.stride2 = cfg.mask_stride == 2
        self.mask_stride = cfg.mask_stride
        self.click_sigma = float(cfg.click_sigma)
        # the last step's layers are always upscale / up_norm / skip / clicks (the export keeps them float)
        hd = cfg.high_res_dim
        if self.stride4:  # 1/16 -> 1/8, then (2) 1/8 -> 1/4, then the last step: to 1/4 (head 4) or 1/2 (head 2)
            self.upscale0 = nn.ConvTranspose2d(d, 2 * u, kernel_size=2, stride=2)
            self.up_norm0 = LayerNorm2d(2 * u)
            self.context = context_stack(2 * u, cfg.context_blocks)
            # the clicks enter the 1/8 grid only where context blocks read it (checkpoints without them unchanged)
            self.clicks0 = nn.Conv2d(2, 2 * u, 1) if cfg.context_blocks else None
        if self.stride2:
            self.upscale1 = nn.ConvTranspose2d(2 * u, u, kernel_size=2, stride=2)
            self.up_norm1 = LayerNorm2d(u)
            self.skip1 = nn.Conv2d(hd, u, 1)  # reads the 1/2 skip feature pixel-unshuffled back to 1/4
            self.clicks1 = nn.Conv2d(2, u, 1)
            u_out, hd_out = u // 2, hd // 4
            self.upscale = nn.ConvTranspose2d(u, u_out, kernel_size=2, stride=2)
            self.clicks = nn.Conv2d(2, u_out, 1)
        elif self.stride4:  # 1/16 -> 1/8 -> 1/4, as SAM's decoder
            self.upscale = nn.ConvTranspose2d(2 * u, u, kernel_size=2, stride=2)
            self.clicks = nn.Conv2d(2, u, 1)
            u_out, hd_out = u, hd
        else:
            self.upscale = nn.ConvTranspose2d(d, u, kernel_size=2, stride=2)  # 1/16 -> 1/8: the only step
            u_out, hd_out = u, hd
        self.up_norm = LayerNorm2d(u_out)
        self.skip = nn.Conv2d(hd_out, u_out, 1)
        self.refine = nn.Sequential(*(RefineBlock(u_out) for _ in range(cfg.refine_blocks)))
        self.hyper = nn.ModuleList(MLP(d, d, u_out, 2) for _ in range(self.num_masks))
        self.iou_head = MLP(d, d, self.num_masks, 2)

    def forward(
        self, image_embed: torch.Tensor, high_res: torch.Tensor, points: torch.Tensor, labels: torch.Tensor,
        origin: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`origin` (B, 2), x and y in input pixels: the image side is a training window cut there from its canvas
        (points in the window's pixels); the positional encodings are then the canvas's, so what a window trains is
        what the whole canvas sees at prediction. None (prediction, export): the image side is the whole canvas."""
        b = points.shape[0]
        src = self.in_proj(image_embed) + self.prompt.no_mask_embed[None, :, None, None]
        src = src.expand(b, -1, -1, -1)
        hi = high_res.expand(b, -1, -1, -1)
        _, d, h, w = src.shape
        if origin is None:
            pos = self.prompt.dense_pe(h, w).to(src.dtype)[None].expand(b, -1, -1, -1)
            sparse = self.prompt(points, labels).to(src.dtype)
        else:
            pos = self.prompt.dense_pe(h, w, origin).to(src.dtype)
            sparse = self.prompt(points + origin.to(points.dtype)[:, None, :], labels).to(src.dtype)
        out_tokens = torch.cat([self.iou_token, self.mask_tokens], dim=0)[None].expand(b, -1, -1)
        tokens = torch.cat([out_tokens, sparse], dim=1)
        k = src.flatten(2).transpose(1, 2)
        k_pe = pos.flatten(2).transpose(1, 2)
        q = tokens
        for blk in self.blocks:
            q, k = blk(q, k, tokens, k_pe)
        q = self.final_norm(q + self.final_attn(q + tokens, k + k_pe, k))
        iou_out = q[:, 0]
        mask_out = q[:, 1 : 1 + self.num_masks]
        img = k.transpose(1, 2).reshape(b, d, h, w)
        if self.stride4:
            img = self.up_norm0(self.upscale0(img))
            if self.clicks0 is not None:
                img = img + self.clicks0(click_maps(points.to(img.dtype), labels, h * 2, 8, self.click_sigma))
            img = self.context(F.gelu(img))
        if self.stride2:
            cm = click_maps(points.to(img.dtype), labels, hi.shape[-1] // 2, 4, self.click_sigma)
            img = F.gelu(self.up_norm1(self.upscale1(img)) + self.skip1(F.pixel_unshuffle(hi, 2)) + self.clicks1(cm))
        if self.stride4:
            cm = click_maps(points.to(img.dtype), labels, hi.shape[-1], self.mask_stride, self.click_sigma)
            up = F.gelu(self.up_norm(self.upscale(img)) + self.skip(hi) + self.clicks(cm))
        else:
            up = F.gelu(self.up_norm(self.upscale(img)) + self.skip(hi))
        up = self.refine(up)
        hyper = torch.stack([mlp(mask_out[:, i]) for i, mlp in enumerate(self.hyper)], dim=1)  # (B, K, u)
        bu, cu, hu, wu = up.shape
        masks = (hyper @ up.reshape(bu, cu, hu * wu)).reshape(bu, self.num_masks, hu, wu)
        scores = torch.sigmoid(self.iou_head(iou_out))
        return masks, scores


class StudentModel(nn.Module):
    def __init__(self, cfg: StudentConfig | None = None) -> None:
        super().__init__()
        self.config = cfg or StudentConfig()
        self.encoder = StudentEncoder(self.config)
        self.decoder = MaskDecoderLite(self.config)
        self.register_buffer("pixel_mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    @property
    def input_size(self) -> int:
        return self.config.input_size

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: normalised (B, 3, S, S) (inference.preprocess.image_to_input)."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor, points: torch.Tensor, labels: torch.Tensor):
        """(image_embed, masks (B, K, S/k, S/k), scores (B, K)); points in input pixels."""
        emb, hi = self.encoder(x)
        masks, scores = self.decoder(emb, hi, points, labels)
        return emb, masks, scores


def align_embedding(student_embed: torch.Tensor, teacher_hw: tuple[int, int]) -> torch.Tensor:
    """Resize the student's (B, 256, h, w) embedding to the teacher's H x W (bilinear, align_corners=False) so the
    cosine feature-alignment loss compares the same spatial cells (seed 001 pitfall 2)."""
    if tuple(student_embed.shape[-2:]) == tuple(teacher_hw):
        return student_embed
    return F.interpolate(student_embed, size=tuple(teacher_hw), mode="bilinear", align_corners=False)


class EmbeddingAligner(nn.Module):
    """Projects a student embedding onto the teacher's embedding shape: a 1x1 conv when the channel counts differ
    (identity for the default 256-channel student) and a bilinear resize to the teacher's H x W. Kept as a module so
    a distillation run can train the projection when the student's width is changed."""

    def __init__(self, student_channels: int = 256, teacher_channels: int = 256) -> None:
        super().__init__()
        self.proj = (
            nn.Identity() if student_channels == teacher_channels else nn.Conv2d(student_channels, teacher_channels, 1)
        )

    def forward(self, student_embed: torch.Tensor, teacher_hw: tuple[int, int]) -> torch.Tensor:
        return align_embedding(self.proj(student_embed), teacher_hw)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_summary(model: nn.Module) -> dict[str, Any]:
    """Parameter count and sizes: fp32 bytes and the INT8 weight-only estimate (1 byte per weight), the figure seed
    001 budgets (~6.3 MB)."""
    n = param_count(model)
    parts = {}
    for name in ("encoder", "decoder"):
        sub = getattr(model, name, None)
        if sub is not None:
            parts[name] = param_count(sub)
    enc = getattr(model, "encoder", None)
    if enc is not None and hasattr(enc, "backbone"):
        parts["encoder.backbone"] = param_count(enc.backbone)
    return {"params": n, "fp32_bytes": 4 * n, "fp16_bytes": 2 * n, "int8_bytes": n, "parts": parts}


def save_checkpoint(model: nn.Module, path: Path | str, extra: dict[str, Any] | None = None) -> Path:
    """Write a student checkpoint atomically (temp file + rename)."""
    if not isinstance(model, StudentModel):
        raise TypeError(f"expected a StudentModel, got {type(model).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "architecture": ARCHITECTURE,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "meta": dict(extra or {}),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """torch.load(weights_only=True) with one-line errors for a missing, truncated or garbage file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip/EOF errors all mean "not a usable checkpoint"
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise CheckpointError(f"{path.name} is not a readable PyTorch checkpoint (truncated or corrupt?): {msg[:200]}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name} is not a checkpoint dictionary (found {type(obj).__name__})")
    return obj


def load_checkpoint(path: Path | str) -> StudentModel:
    """Rebuild a student from a checkpoint, refusing files that are not students or do not match their config."""
    obj = read_checkpoint(path)
    name = Path(path).name
    if obj.get("format") != CHECKPOINT_FORMAT:
        if "model" in obj and isinstance(obj["model"], dict) and any(
            str(k).startswith("image_encoder.trunk") for k in obj["model"]
        ):
            raise ModelMismatchError(
                f"{name} is a SAM 2 checkpoint, not a student; add it with 'maskbench models add teacher {name} --config ...'"
            )
        raise ModelMismatchError(f"{name} is not a maskbench student checkpoint (no format={CHECKPOINT_FORMAT!r} entry)")
    if obj.get("architecture") != ARCHITECTURE:
        raise ModelMismatchError(f"{name}: unsupported student architecture {obj.get('architecture')!r}")
    try:
        cfg = StudentConfig.from_dict(dict(obj.get("config") or {}))
    except (TypeError, ValueError) as exc:
        raise ModelMismatchError(f"{name}: bad student config ({exc})") from None
    model = StudentModel(cfg)
    state = obj.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{name}: no state_dict in the student checkpoint")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(s.strip() for s in first[:2])[:240]
        raise ModelMismatchError(f"{name}: weights do not match its student config ({detail})") from None
    return model.eval()
