"""Project commands: init, ingest, export-labels, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from app.progress import bar


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("ingest")(ingest)
    app.command("export-labels")(export_labels)
    app.command("demo")(demo)


def init(
    path: Path = typer.Argument(..., help="Folder of the new project (created if missing)."),
    name: Optional[str] = typer.Option(None, help="Display name; defaults to the folder name."),
) -> None:
    """Create a project folder with project.yaml and an empty, migrated store."""
    from store.project import Project

    with Project.create(path, name=name) as p:
        typer.echo(f"project ready: {p.root}")


def ingest(
    dataset: Path = typer.Argument(..., help="Folder (side-by-side X.jpg+X.png, or images/+masks/) or COCO .json."),
    project: Path = typer.Option(..., "--project", "-p", help="Project folder (created if missing)."),
    strict: bool = typer.Option(False, help="Abort with nothing stored if any file is bad."),
    workers: int = typer.Option(4, help="Decoding threads."),
) -> None:
    """Add image/mask pairs to a project; files already stored (same content) are skipped. Images without a mask
    are stored as unlabelled crops (distillation trains on them with the teacher's outputs)."""
    from store.ingest import ingest as run_ingest
    from store.project import Project

    with Project.open(project, create=True) as p:
        training = p.config["distillation"]["training"]
        with bar("ingest") as progress:
            report = run_ingest(
                p.db, dataset, strict=strict, progress=progress, workers=workers,
                split_ratios=tuple(training["split"]), split_seed=int(training["split_seed"]),
            )
    typer.echo(f"layout: {report.layout}; candidates: {report.total_candidates}")
    for cls, n in sorted(report.added.items()):
        typer.echo(f"  {cls:<16} {n:>6}")
    typer.echo(f"added {report.added_total}, without a mask (unlabelled) {report.without_mask_total}, "
               f"already present {report.skipped_existing}, bad {len(report.bad)}")
    if report.bad:
        typer.echo("bad files:")
        for path, reason in report.bad:
            typer.echo(f"  {path}: {reason}")


def export_labels(
    project: Path = typer.Option(..., "--project", "-p"),
    fmt: str = typer.Option("coco", "--format",
                            help="coco (verified masks, RLE), yolo (segmentation polygons, Ultralytics layout), "
                                 "labelme (polygon JSON per crop) or csv (verdict trail)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Output file (coco, csv) or folder (yolo, labelme); defaults inside the "
                                            "project."),
) -> None:
    """Write the verified masks (COCO, YOLO segmentation, labelme) or the verdicts (CSV)."""
    from review.labels import export_coco, export_labelme, export_verdicts_csv, export_yolo
    from store.errors import UserError
    from store.project import Project

    writers = {"coco": (export_coco, "labels_coco.json", "annotations"),
               "yolo": (export_yolo, "labels_yolo", "polygons"),
               "labelme": (export_labelme, "labels_labelme", "polygons"),
               "csv": (export_verdicts_csv, "verdicts.csv", "verdicts")}
    if fmt not in writers:
        raise UserError(f"--format must be one of {', '.join(writers)}, not {fmt!r}")
    write, default_name, what = writers[fmt]
    with Project.open(project) as p:
        target = out or p.root / default_name
        n = write(p.db, target)
    typer.echo(f"wrote {n} {what} to {target}")


def demo(
    project: Path = typer.Option(None, "--project", "-p", help="Where to build it; defaults to the user data folder."),
    count: int = typer.Option(60, help="Number of synthetic crops."),
    seed: int = typer.Option(7, help="Generator seed (same seed, same crops)."),
) -> None:
    """Build the demo project from deterministic synthetic defect crops (and demo model predictions if shipped)."""
    from app.demo import build_demo_project, default_demo_dir

    root = project or default_demo_dir()
    with bar("demo") as progress:
        summary = build_demo_project(root, count=count, seed=seed, progress=progress)
    typer.echo(summary)
