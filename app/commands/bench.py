"""Latency commands: bench (local), bench-remote (trtexec on an SSH target), targets add/list/remove."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

targets_app = typer.Typer(help="Saved SSH benchmark targets (Jetson devices).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
    app.command("bench-remote")(bench_remote)
    targets_app.command("add")(targets_add)
    targets_app.command("list")(targets_list)
    targets_app.command("remove")(targets_remove)
    app.add_typer(targets_app, name="targets")


def _echo(line: str) -> None:
    typer.echo(line)  # click flushes after each line: a GUI reading our stdout sees it at once


def _csv_list(value: Optional[str]) -> Optional[list[str]]:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def _open_project(project: Optional[Path], required: bool) -> Any:
    from store.project import Project

    if project is not None:
        return Project.open(project)
    if (Path.cwd() / "project.yaml").is_file():
        return Project.open(Path.cwd())
    if required:
        from store.errors import UserError

        raise UserError("--project is required (or run the command inside a project folder)")
    return None


def _report(results: list[Any], target_fps: float) -> None:
    from inference.bench.stats import check_target_fps

    _echo("")
    _echo(f"{'backend':<24} {'prec':<6} {'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'img/s':>9} {'peak MB':>8}")
    for r in results:
        s = r.stats
        fmt = lambda v, spec: (format(v, spec) if v is not None else "-")  # noqa: E731
        _echo(f"{r.backend:<24} {r.precision:<6} {r.batch:>5} {s.p50_ms:>9.3f} {fmt(s.p90_ms, '>9.3f'):>9} "
              f"{fmt(s.p99_ms, '>9.3f'):>9} {fmt(s.throughput, '>9.1f'):>9} {fmt(r.peak_mem_mb, '>8.0f'):>8}")
    _echo("")
    for r in results:
        check = check_target_fps(target_fps, throughput=r.stats.throughput, p99_ms=r.stats.p99_ms,
                                 p50_ms=r.stats.p50_ms, batch=r.batch)
        _echo(f"{r.backend} {r.precision} batch {r.batch}: {check.line()}")


def bench(
    model: Path = typer.Argument(..., help="An ONNX export (.onnx) or a torch checkpoint."),
    provider: Optional[str] = typer.Option(
        None, "--provider", help="cpu, cuda or tensorrt (ONNX Runtime, for .onnx) or torch (checkpoints; default)."
    ),
    batch: str = typer.Option("1", "--batch", help="Batch sizes, comma-separated, e.g. 1,8,32."),
    project: Optional[Path] = typer.Option(None, "--project", "-p", help="Project to store the results in."),
    precision: Optional[str] = typer.Option(
        None, "--precision", help="torch: fp32,fp16,bf16 (comma-separated). ONNX: label of the export's precision."
    ),
    mode: Optional[str] = typer.Option(
        None, "--mode", help="torch: eager, compiled, cudagraph (comma-separated; default eager,compiled + cudagraph on CUDA)."
    ),
    device: str = typer.Option("auto", "--device", help="torch: cpu, cuda or auto."),
    compile_mode: Optional[str] = typer.Option(
        None, "--compile-mode",
        help="torch.compile mode: default, reduce-overhead (CUDA graphs), max-autotune (default: reduce-overhead on CUDA).",
    ),
    shapes: Optional[str] = typer.Option(None, "--shapes", help="Input shapes, trtexec syntax: image:1x3x512x512."),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="H=W of dynamic image inputs."),
    warmup: int = typer.Option(10, "--warmup", help="Warm-up iterations."),
    iters: int = typer.Option(100, "--iters", help="Timed iterations."),
    min_time: float = typer.Option(0.0, "--min-time", help="Keep timing at least this many seconds."),
    max_time: float = typer.Option(120.0, "--max-time", help="Stop timing one configuration after this many seconds."),
    io_binding: Optional[bool] = typer.Option(
        None, "--io-binding/--no-io-binding", help="ONNX Runtime IO binding (default: on for cuda/tensorrt, off for cpu)."
    ),
    compare_io_binding: bool = typer.Option(False, "--compare-io-binding", help="Time with and without IO binding."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (ONNX Runtime intra-op / torch)."),
    label: Optional[str] = typer.Option(None, "--label", help="Model label in the history."),
) -> None:
    """Local latency benchmark: warm-up, timed iterations, p50/p90/p99, throughput and peak memory per batch."""
    from inference.bench.core import TimingConfig, parse_batches
    from inference.bench.local import LocalRunOptions, is_onnx, run_local
    from inference.bench.machine import describe_local
    from inference.bench.records import find_model_refs, save_results
    from inference.bench.stats import target_fps_from_config

    batches = parse_batches(batch)
    proj = _open_project(project, required=False)
    try:
        refs: dict[str, Any] = find_model_refs(proj.db, model) if proj is not None else {}
        cfg_size = None
        if proj is not None:
            cfg_size = proj.config.get("distillation", {}).get("student", {}).get("input_size")
        size = input_size or refs.get("input_size") or cfg_size
        onnx = is_onnx(model)
        opts = LocalRunOptions(
            provider=provider,
            batches=batches,
            precisions=None if onnx else _csv_list(precision),
            modes=_csv_list(mode),
            device=device,
            compile_mode=compile_mode,
            shapes=shapes,
            input_size=int(size) if size else None,
            io_binding=io_binding,
            compare_plain=compare_io_binding,
            threads=threads,
            label=label or refs.get("label"),
            onnx_precision=(precision or refs.get("precision")) if onnx else None,
            timing=TimingConfig(warmup=warmup, iterations=iters, min_time_s=min_time, max_time_s=max_time),
            cache_dir=(proj.cache_dir / "trt_ep") if proj is not None else None,
        )
        results = run_local(model, opts, log_fn=_echo)
        target_fps = target_fps_from_config(proj.config if proj is not None else None)
        _report(results, target_fps)
        machine = describe_local()
        if proj is None:
            _echo("not stored: no --project given")
            return
        ids = save_results(proj.db, results, machine, export_id=refs.get("export_id"), model_id=refs.get("model_id"))
        _echo(f"stored {len(ids)} results in {proj.root}")
    finally:
        if proj is not None:
            proj.close()


def bench_remote(
    model: Path = typer.Argument(..., help="An ONNX export or a TensorRT engine (.engine/.plan) to upload."),
    target: str = typer.Option(..., "--target", "-t", help="Name of a saved SSH target (see 'targets list')."),
    project: Optional[Path] = typer.Option(None, "--project", "-p", help="Project holding the target and results."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp16, int8, fp32 or best; default: the export's."),
    shapes: Optional[str] = typer.Option(None, "--shapes", help="trtexec --shapes, e.g. image:1x3x512x512."),
    batch: int = typer.Option(1, "--batch", help="Batch size for dynamic batch dimensions."),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="H=W of dynamic image inputs."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="INT8 calibration cache to upload and use."),
    warmup_ms: int = typer.Option(500, "--warmup-ms", help="trtexec --warmUp (ms)."),
    duration: float = typer.Option(10.0, "--duration", help="trtexec --duration (s)."),
    percentile: Optional[str] = typer.Option(None, "--percentile", help="trtexec --percentile (8.6+: 50,90,99)."),
    cuda_graph: bool = typer.Option(True, "--cuda-graph/--no-cuda-graph", help="trtexec --useCudaGraph."),
    trtexec: Optional[str] = typer.Option(None, "--trtexec", help="trtexec path on the target (default: PATH, /usr/src/tensorrt/bin)."),
    timeout: float = typer.Option(1800.0, "--timeout", help="Seconds for engine build and run together."),
    connect_timeout: float = typer.Option(15.0, "--connect-timeout", help="Seconds to wait for the SSH connection."),
    save_engine: bool = typer.Option(False, "--save-engine", help="Keep the built engine on the target."),
    label: Optional[str] = typer.Option(None, "--label", help="Model label in the history."),
) -> None:
    """Latency on a Jetson over SSH: upload, trtexec with the export's precision and shapes, parse, store."""
    from inference.bench.records import find_model_refs, save_results
    from inference.bench.remote import RemoteRunOptions, run_remote
    from inference.bench.stats import target_fps_from_config
    from inference.bench.targets import get_target
    from inference.bench.trtexec import profile_from_command

    with _open_project(project, required=True) as proj:
        tgt = get_target(proj.db, target)
        refs = find_model_refs(proj.db, model)
        card = refs.get("card") or {}
        card_shapes = card.get("trtexec_shapes") or card.get("shapes")
        size = input_size or refs.get("input_size") or proj.config.get("distillation", {}).get("student", {}).get("input_size")
        opts = RemoteRunOptions(
            precision=precision or refs.get("precision"),
            shapes=shapes or (card_shapes if isinstance(card_shapes, str) else None),
            batch=batch,
            input_size=int(size) if size else None,
            calib=calib,
            warmup_ms=warmup_ms,
            duration_s=duration,
            percentiles=percentile,
            use_cuda_graph=cuda_graph,
            trtexec=trtexec,
            timeout_s=timeout,
            connect_timeout_s=connect_timeout,
            save_engine=save_engine,
            label=label or refs.get("label"),
            profile=profile_from_command(card.get("trtexec") if isinstance(card.get("trtexec"), str) else None),
        )
        result = run_remote(tgt, model, opts, log_fn=_echo)
        _report([result], target_fps_from_config(proj.config))
        ids = save_results(proj.db, [result], {}, export_id=refs.get("export_id"), model_id=refs.get("model_id"))
        _echo(f"stored result {ids[0]} in {proj.root}")


def targets_add(
    name: str = typer.Argument(..., help="Target name, e.g. orin-nano-1."),
    host: str = typer.Option(..., "--host", help="Host name or address."),
    user: str = typer.Option(..., "--user", help="SSH user."),
    key: Path = typer.Option(..., "--key", help="Private key file (a path; the key itself is never stored)."),
    known_hosts: Path = typer.Option(..., "--known-hosts", help="known_hosts file holding the target's host key."),
    port: int = typer.Option(22, "--port", help="SSH port."),
    remote_dir: str = typer.Option("/tmp/maskbench", "--remote-dir", help="Working folder on the target."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite a target of the same name."),
    project: Optional[Path] = typer.Option(None, "--project", "-p", help="Project to save the target in."),
) -> None:
    """Save an SSH target. Its host key must already be in --known-hosts; it is never accepted silently."""
    from inference.bench.targets import add_target

    with _open_project(project, required=True) as proj:
        t = add_target(proj.db, name, host, user, key, known_hosts, port=port, remote_dir=remote_dir, replace=replace)
    _echo(f"target {t.name}: {t.address}, key {t.key_file}, known_hosts {t.known_hosts}")


def targets_list(
    project: Optional[Path] = typer.Option(None, "--project", "-p", help="Project holding the targets."),
) -> None:
    """List the saved SSH targets."""
    from inference.bench.targets import list_targets

    with _open_project(project, required=True) as proj:
        targets = list_targets(proj.db)
    if not targets:
        _echo("no targets; add one with 'maskbench targets add NAME --host H --user U --key K --known-hosts F'")
        return
    for t in targets:
        _echo(f"{t.name:<20} {t.address:<32} key {t.key_file}  known_hosts {t.known_hosts}  dir {t.remote_dir}")


def targets_remove(
    name: str = typer.Argument(..., help="Target name."),
    project: Optional[Path] = typer.Option(None, "--project", "-p", help="Project holding the target."),
) -> None:
    """Remove a saved SSH target."""
    from inference.bench.targets import remove_target

    with _open_project(project, required=True) as proj:
        remove_target(proj.db, name)
    _echo(f"removed target {name}")
