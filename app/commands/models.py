"""Model commands: `models add|list|download` and the top-level `predict`.

torch, sam2 and timm are imported inside the commands (through inference.*), so `--help` stays instant and
`models list` works on a station without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from app.progress import bar

models_app = typer.Typer(help="Teacher and student models of a project.", no_args_is_help=True,
                         rich_markup_mode=None)


def register(app: typer.Typer) -> None:
    models_app.command("add")(add)
    models_app.command("list")(list_)
    models_app.command("download")(download)
    app.add_typer(models_app, name="models")
    app.command("predict")(predict)


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def add(
    kind: str = typer.Argument(..., help="teacher or student"),
    path: Path = typer.Argument(..., help="Checkpoint: SAM 2 {'model': state_dict} .pt, student .pt, or student encoder .onnx"),
    project: Path = typer.Option(..., "--project", "-p", help="Project folder."),
    config: Optional[str] = typer.Option(None, help="SAM 2 config of a teacher, e.g. sam2.1_hiera_s (default)."),
    name: Optional[str] = typer.Option(None, help="Display name; defaults to the file name."),
    image_size: Optional[int] = typer.Option(None, help="Teacher input size (default 1024, SAM 2's)."),
    decoder: Optional[Path] = typer.Option(None, help="Decoder .onnx of an ONNX student pair."),
    scale: Optional[float] = typer.Option(
        None, help="Teacher trained at native pixel scale (maskbench train --mode finetune-teacher): crops are "
        "predicted at this scale on image-size canvases. Leave out for SA-1B checkpoints (resize to square)."),
) -> None:
    """Verify a checkpoint, copy it into the project and make it the active model of its kind."""
    from inference.errors import ModelError
    from inference.registry import add_model
    from store.project import Project

    if kind not in ("teacher", "student"):
        raise ModelError(f"model kind must be teacher or student, not {kind!r}")
    if kind == "student" and config:
        raise ModelError("--config is for teachers (SAM 2 configs); a student checkpoint carries its own config")
    with Project.open(project) as p:
        info, existed = add_model(p, kind, path, config=config, name=name, image_size=image_size, decoder=decoder,
                                  scale=scale)
    what = "already imported; now active" if existed else "imported and active"
    params = f"{info.params / 1e6:.2f}M params, " if info.params else ""
    typer.echo(f"{kind} #{info.id} '{info.name}' ({info.architecture}, {params}{_human(info.size_bytes)}, "
               f"input {info.input_size}, sha256 {info.sha256[:12]}): {what}")


def list_(project: Path = typer.Option(..., "--project", "-p", help="Project folder.")) -> None:
    """Models of the project; '*' marks the active one of each kind."""
    from inference.registry import list_models
    from store.project import Project

    with Project.open(project) as p:
        rows = list_models(p)
    if not rows:
        typer.echo("no models; add one with 'maskbench models add teacher|student PATH'")
        return
    typer.echo(f"  {'id':>3} {'kind':<8} {'name':<24} {'architecture':<20} {'backend':<7} {'params':>8} "
               f"{'size':>9} {'input':>5}  sha256")
    for m in rows:
        params = f"{m.params / 1e6:.2f}M" if m.params else "-"
        typer.echo(f"{'*' if m.active else ' '} {m.id:>3} {m.kind:<8} {m.name[:24]:<24} {m.architecture[:20]:<20} "
                   f"{m.backend:<7} {params:>8} {_human(m.size_bytes):>9} {m.input_size or '-':>5}  {m.sha256[:12]}")


def download(
    name: str = typer.Argument(..., help="sam2.1_hiera_tiny | sam2.1_hiera_small | sam2.1_hiera_base_plus | sam2.1_hiera_large"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the file (default: user data folder)."),
    project: Optional[Path] = typer.Option(None, "--project", "-p", help="Also import it as the project's teacher."),
    sha256: Optional[str] = typer.Option(None, help="Expected sha256 (overrides the catalogue / server checksum)."),
) -> None:
    """Download an official SAM 2.1 checkpoint (resumable, checksum-verified). Base URL: MASKBENCH_MODEL_BASE_URL."""
    from app.paths import data_dir
    from inference.download import download_model

    dest = out or data_dir() / "models"
    with bar(f"download {name}") as progress:
        got = download_model(name, dest, expected_sha256=sha256, progress=progress)
    how = {"option": "matches --sha256", "catalog": "matches the catalogue", "server": "matches the server's .sha256"}
    check = how.get(got.verified_against or "", "no published checksum to compare with; recorded")
    state = "already present" if got.skipped else "downloaded"
    typer.echo(f"{state}: {got.path} (sha256 {got.sha256}, {check})")
    if project is not None:
        from inference.registry import add_model
        from store.project import Project

        with Project.open(project) as p:
            info, _ = add_model(p, "teacher", got.path, config=got.config)
        typer.echo(f"teacher #{info.id} '{info.name}' ({info.architecture}) imported and active")


def predict(
    project: Path = typer.Option(..., "--project", "-p", help="Project folder."),
    model: str = typer.Option("all", "--model", "-m", help="teacher, student or all."),
    device: str = typer.Option("cpu", help="cpu or cuda (auto: CUDA when present)."),
    precision: str = typer.Option("fp32", help="fp32, fp16 (GPU) or bf16."),
    shard: Optional[str] = typer.Option(None, help="i/n: only samples with id % n == i (parallel processes)."),
    batch: int = typer.Option(8, "--batch", "-b", help="Images per encoder batch."),
    prompts: str = typer.Option("saliency", help="Prompt source: saliency, ground_truth, teacher (the clicks of "
                                "the latest teacher prediction on each crop), or auto (automatic masks: a grid of "
                                "point prompts, score and stability filters, NMS; the best mask is kept with the "
                                "point that produced it)."),
    auto_grid: int = typer.Option(16, help="--prompts auto: grid points per side."),
    auto_min_score: float = typer.Option(0.7, help="--prompts auto: lowest predicted mask quality kept."),
    auto_min_stability: float = typer.Option(0.8, help="--prompts auto: lowest stability score kept."),
    seed: int = typer.Option(0, help="Seed of ground-truth point sampling."),
    limit: Optional[int] = typer.Option(None, help="At most this many new samples (per model)."),
    split: Optional[str] = typer.Option(None, help="Only samples of this split (train, val or test)."),
    flip_views: int = typer.Option(1, "--flip-views", help="1 (off), 2 or 4: average the logits of the crop and "
                                   "its mirrors (left-right; for 4 also top-bottom and both). +0.02-0.03 IoU at one "
                                   "click on magnetic-tile, at 2-4x the compute: for offline teacher passes. Stored "
                                   "apart: a rerun with another value predicts again."),
) -> None:
    """Predict masks for every sample (resumes; skips samples this model already predicted with these prompts)."""
    from inference.batch import AutoOptions, parse_shard, predict_project
    from inference.errors import ModelError, NoActiveModel
    from inference.registry import active_model
    from store.project import Project

    if model not in ("teacher", "student", "all"):
        raise ModelError(f"--model must be teacher, student or all, not {model!r}")
    sh = parse_shard(shard)
    kinds = ["teacher", "student"] if model == "all" else [model]
    with Project.open(project) as p:
        if model == "all":
            available = []
            for k in kinds:
                try:
                    active_model(p, k)
                    available.append(k)
                except NoActiveModel:
                    typer.echo(f"no active {k} model; skipped")
            if not available:
                raise NoActiveModel("no active teacher or student model; add one with 'maskbench models add'")
            kinds = available
        for k in kinds:
            with bar(f"predict {k}") as progress:
                report = predict_project(p, k, device=device, precision=precision, shard=sh, batch_size=batch,
                                         prompt_source=prompts, progress=progress, seed=seed, limit=limit,
                                         split=split, auto=AutoOptions(auto_grid, auto_min_score, auto_min_stability),
                                         flip_views=flip_views)
            typer.echo(report.summary())
            for sid, why in report.failed[:10]:
                typer.echo(f"  sample {sid}: {why}")
