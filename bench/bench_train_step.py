"""The student's (or the SAM 2 teacher's) training step on a synthetic batch, eager against torch.compile: where a
training run's step time goes without the data set, validation or checkpoints around it (issue 14's throughput
targets).

    python bench/bench_train_step.py --device cuda                         # eager and compiled, batch 64 at 512 px
    python bench/bench_train_step.py --device cuda --variants eager --profile   # plus a CUDA profile of 3 steps
    python bench/bench_train_step.py --device cuda --variants compiled,compiled-autotune --batch 128
    python bench/bench_train_step.py --device cuda --model teacher --variants eager --channels-last off,on

Two figures per variant, images/s over `--steps` timed steps after `--warmup` untimed ones (which include the
compile): the encoder's forward and backward alone, and the full step as `train --mode distill` runs it with
supervised loss only (encoder, a decode of the initial clicks and one of the follow-up click, the supervised loss at
input resolution, backward, fused AdamW). bf16 autocast and channels_last on CUDA, as the trainer uses them. The
compiled variant compiles encoder and decoder as `training.compile` does (inference.training.loop).

`--model teacher`: SAM 2 with the scratch teacher's ResNet-50-D trunk (`--teacher-config`), its step as
`train --mode finetune-teacher` runs it (image encoder, all four mask outputs decoded for the initial and the
follow-up clicks, their losses at input resolution and the IoU head's, backward, fused AdamW). `--channels-last
off,on` measures both memory layouts (everything contiguous is 1.46x slower on the ResNet-50-D, one H100); the
trainer (and `auto` here) puts a convolutional trunk's weights in channels_last (Sam2Net.convolutional_trunk), not
Hiera's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.sam2_configs import SCRATCH_TEACHER  # noqa: E402
from inference.student import StudentConfig, StudentModel  # noqa: E402
from inference.training.losses import supervised_loss  # noqa: E402

VARIANTS = {"eager": None, "compiled": "default", "eager-cudnn-benchmark": None,
            "compiled-autotune": "max-autotune-no-cudagraphs"}


def synthetic_batch(args: argparse.Namespace, dev: torch.device, channels_last: bool,
                    clicks_per_round: tuple[int, ...]):
    """(images, target masks, click rounds): random images in the model's memory layout, a sparse target and one
    positive-click set per round (the initial clicks, then with a follow-up click)."""
    b, s = args.batch, args.size
    x = torch.randn(b, 3, s, s, device=dev)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    target = (torch.rand(b, 1, s, s, device=dev) > 0.9).float()
    clicks = [(torch.rand(b, n, 2, device=dev) * s, torch.ones(b, n, device=dev)) for n in clicks_per_round]
    return x, target, clicks


def student_step(args: argparse.Namespace, dev: torch.device, compile_mode: str | None, channels_last: bool | None):
    """The student's model, its step(full) closure's loss and the memory layout used (channels_last None: as the
    trainer runs it, channels_last on CUDA)."""
    if channels_last is None:
        channels_last = dev.type == "cuda"
    cfg = StudentConfig(input_size=args.size, mask_stride=args.mask_stride)
    model = StudentModel(cfg).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    if compile_mode:
        model.encoder.compile(mode=None if compile_mode == "default" else compile_mode, dynamic=False)
        model.decoder.compile(mode=None if compile_mode == "default" else compile_mode, dynamic=False)
    s = args.size
    x, target, clicks = synthetic_batch(args, dev, channels_last, (5, 6))

    def loss(full: bool) -> torch.Tensor:
        emb, hi = model.encoder(x)
        if not full:
            return emb.float().mean() + hi.float().mean()
        return sum(supervised_loss(F.interpolate(model.decoder(emb, hi, p, lb)[0][:, :1].float(), size=(s, s),
                                                 mode="bilinear"), target).mean() for p, lb in clicks)

    return model, loss, channels_last


def teacher_step(args: argparse.Namespace, dev: torch.device, compile_mode: str | None, channels_last: bool | None):
    """SAM 2's model (every part trainable, as finetune-teacher trains it), its step(full) closure's loss and the
    memory layout used (channels_last None: as the trainer decides, a convolutional trunk on CUDA)."""
    from inference.sam2_net import build

    net = build(args.teacher_config, args.size, None, device=str(dev)).to(dev).train()
    if channels_last is None:
        channels_last = dev.type == "cuda" and net.convolutional_trunk
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if compile_mode:
        net.model.image_encoder.compile(mode=None if compile_mode == "default" else compile_mode, dynamic=False)
    b, s = args.batch, args.size
    x, target, clicks = synthetic_batch(args, dev, channels_last, (2, 3))

    def loss(full: bool) -> torch.Tensor:
        feats = net.encode_normalised(x)
        if not full:
            return sum(f.float().mean() for f in feats.values())
        total = torch.zeros((), device=dev)
        for p, lb in clicks:
            masks, iou = net.decode_all(feats, p, lb)
            k = masks.shape[1]
            up = F.interpolate(masks.float(), size=(s, s), mode="bilinear")
            total = total + supervised_loss(up.reshape(b * k, 1, s, s), target.repeat_interleave(k, 0)).mean()
            total = total + 0.1 * (iou.float() - 0.5).pow(2).mean()
        return total

    return net, loss, channels_last


def measure(variant: str, channels: str, args: argparse.Namespace) -> dict[str, Any]:
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    torch.backends.cudnn.benchmark = variant == "eager-cudnn-benchmark"
    torch.manual_seed(0)
    build_step = student_step if args.model == "student" else teacher_step
    # auto (None): as the trainer runs each model (Task.channels_last)
    model, compute_loss, channels_last = build_step(args, dev, VARIANTS[variant],
                                                    {"on": True, "off": False, "auto": None}[channels])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-3, fused=cuda)

    def step(full: bool) -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            loss = compute_loss(full)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    out: dict[str, Any] = {"model": args.model, "variant": variant, "channels_last": channels_last}
    for part, full in (("encoder", False), ("step", True)):
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            step(full)
        sync()
        out[f"{part}_warmup_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step(full)
        sync()
        out[f"{part}_images_per_s"] = round(args.batch * args.steps / (time.perf_counter() - t0), 1)
    if cuda:
        out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
        torch.cuda.reset_peak_memory_stats()
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=acts) as prof:
            for _ in range(3):
                step(True)
            sync()
        print(prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total", row_limit=25,
                                        max_name_column_width=60))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--mask-stride", type=int, default=2, choices=[2, 4, 8])
    ap.add_argument("--model", default="student", choices=["student", "teacher"])
    ap.add_argument("--teacher-config", default=SCRATCH_TEACHER, help="SAM 2 config of --model teacher")
    ap.add_argument("--channels-last", default="auto",
                    help="comma-separated of auto (as the trainer: the student on CUDA only, the teacher never), "
                         "on, off")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--variants", default="eager,compiled", help=f"comma-separated of {', '.join(VARIANTS)}")
    ap.add_argument("--profile", action="store_true", help="print a profile of three full steps per variant")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    layouts = [c for c in args.channels_last.split(",") if c]
    bad = [c for c in layouts if c not in ("auto", "on", "off")]
    if bad or not layouts:
        raise SystemExit(f"--channels-last takes auto, on or off (comma-separated), got {args.channels_last!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (use --device cpu)")
    rows = []
    for v in variants:
        for c in layouts:
            row = measure(v, c, args)
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.json is not None:
        args.json.write_text(json.dumps({"batch": args.batch, "size": args.size, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
