"""`maskbench export`: ONNX (merged graph, split pair, optional teacher pair) in FP32/FP16/INT8/INT8 weight-only,
checked against PyTorch, with model cards; TensorRT engines or the trtexec command for the target device."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from app.progress import bar


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    project: Path = typer.Option(..., "--project", "-p", help="Project folder; exports go to its exports/ folder."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c",
                                              help="Student checkpoint; defaults to the active student."),
    precision: str = typer.Option("fp32,fp16,int8,int8-weight", "--precision",
                                  help="Comma-separated: fp32, fp16, int8, int8-weight."),
    calibration: str = typer.Option("stratified", "--calibration", help="stratified or hard (favours hard crops)."),
    calibration_samples: Optional[int] = typer.Option(None, "--calibration-samples",
                                                      help="INT8 calibration crops (default hardware.calibration_samples)."),
    calibration_method: str = typer.Option("auto", "--calibration-method",
                                           help="auto (tries minmax, entropy, percentile; keeps the best parity), "
                                                "minmax, entropy or percentile."),
    int8_target: float = typer.Option(0.95, "--int8-target",
                                      help="INT8 parity mean IoU to reach by keeping the most sensitive layers in "
                                           "float (a per-layer sensitivity sweep; the card lists it)."),
    latency_runs: int = typer.Option(20, "--latency-runs",
                                     help="CPU latency runs per precision for the model cards (0 skips)."),
    tensorrt: bool = typer.Option(False, "--tensorrt", help="Build TensorRT engines (or print the trtexec commands)."),
    teacher: bool = typer.Option(False, "--teacher", help="Also export the SAM 2 teacher as an encoder/decoder pair."),
    split_pair: bool = typer.Option(True, "--split-pair/--no-split-pair", help="Also write the encoder/decoder pair."),
    val_limit: Optional[int] = typer.Option(None, "--val-limit", help="Validation crops to measure (default all)."),
) -> None:
    """Export a student for stations and edge devices; every file is checked against PyTorch before it ships."""
    from inference.export.pipeline import ExportOptions, parse_precisions, run_export
    from store.project import Project

    opts = ExportOptions(
        precisions=parse_precisions(precision), calibration=calibration, calibration_samples=calibration_samples,
        calibration_method=calibration_method, int8_target=int8_target, latency_runs=latency_runs,
        tensorrt=tensorrt, teacher=teacher, split_pair=split_pair,
        val_limit=val_limit, command="maskbench export " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 2 and sys.argv[1] == "export" else None,
    )
    with Project.open(project) as p:
        with bar("export") as progress:
            summary = run_export(p, checkpoint, opts, progress=progress, log_fn=lambda m: typer.echo(m))
    typer.echo(f"exports in {summary.out_dir}")
    typer.echo(f"  {'file':<34} {'status':<7} {'MB':>7} {'parity IoU':>10} {'max|dl|':>9} {'val IoU':>8}")
    for r in summary.rows:
        fmt = lambda v, f: ("-" if v is None else format(v, f))  # noqa: E731
        typer.echo(f"  {Path(r['path']).name:<34} {r['status']:<7} {r['size_bytes'] / 1e6:>7.2f} "
                   f"{fmt(r['parity_iou'], '.4f'):>10} {fmt(r['parity_max_abs'], '.3g'):>9} {fmt(r['val_iou'], '.4f'):>8}")
    if summary.failed():
        typer.echo(f"{len(summary.failed())} export(s) failed their parity bound (kept under failed/, not shipped)")
