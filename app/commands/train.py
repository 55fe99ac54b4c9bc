"""`maskbench train`: distillation (seed 001), SAM 2 teacher fine-tuning, U-Net baseline and QAT runs.

Prints one JSON object per line on stdout (events: cache, cache_ready, start, step, epoch, end) and a progress bar
on stderr. Multi-GPU: `torchrun --nproc_per_node N -m app.cli train ...` (DDP; rank 0 prints and records).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def train(
    project: Path = typer.Option(..., "--project", "-p", help="Project folder."),
    mode: str = typer.Option("distill", "--mode",
                             help="distill | finetune-teacher | unet (the plain baseline) | qat (INT8-aware "
                                  "fine-tune of a trained student)."),
    no_feature_loss: bool = typer.Option(False, "--no-feature-loss", help="Naive logit baseline (ablation)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML laid over the project's distillation settings."),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda (AMP on CUDA)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Run folder to continue from its last checkpoint."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many optimiser steps in all."),
    log_every: Optional[int] = typer.Option(None, "--log-every", help="Steps between JSON step lines."),
    name: Optional[str] = typer.Option(None, "--name", help="Run folder name (default: time stamp and mode)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar on stderr."),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", help="qat: the trained student checkpoint to fine-tune (default: the active student)."),
) -> None:
    """Train the student by distillation, fine-tune the SAM 2 teacher on verified masks, train the plain U-Net
    baseline, or fine-tune a trained student with fake INT8 quantisation (qat; its best.pt exports as QDQ INT8). Crops are decoded once onto the training device; see inference/training/runner.py for the recipe."""
    from inference.training.runner import TrainOptions
    from inference.training.runner import train as run_train

    summary = run_train(TrainOptions(
        project=project, mode=mode, no_feature_loss=no_feature_loss, config_file=config, epochs=epochs,
        batch_size=batch_size, device=device, resume=resume, max_steps=max_steps, log_every=log_every,
        name=name, progress=not no_progress, checkpoint=checkpoint,
    ))
    if summary.get("status") == "stopped":
        raise typer.Exit(0)
